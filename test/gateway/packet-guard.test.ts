import { EventEmitter } from 'node:events'
import * as net from 'node:net'
import { PassThrough } from 'node:stream'
import type { Aedes, Client } from 'aedes'
import mqtt, { type MqttClient } from 'mqtt'
import { describe, expect, test } from 'vitest'
import {
  type GuardedPacket,
  installPacketGuard,
  type MqttPacketParser,
  PACKET_VIOLATIONS,
  PacketGuardError,
  type PacketGuardOptions,
  type PacketViolation,
} from '../../gateway/packet-guard.ts'

// Every packet below is written out byte by byte, as a device would put it on the wire, so that a
// test shows exactly what is being sent. `hex()` only joins the commented parts.

/** Bytes from hex parts; spaces are ignored. */
function hex(...parts: string[]): Buffer {
  return Buffer.from(parts.join('').replace(/\s/g, ''), 'hex')
}

/** CONNECT 'MQTT' level 4, clean session, keep alive 60 s, with an ASCII client id of < 116 bytes. */
function connectPacket(clientId: string): Buffer {
  const id = Buffer.from(clientId, 'latin1')
  return Buffer.concat([
    hex('10', (12 + id.length).toString(16).padStart(2, '0')), // CONNECT, remaining length 10 + 2 + id
    hex('00 04 4d 51 54 54'), // protocol name 'MQTT'
    hex('04'), // protocol level 4
    hex('02'), // connect flags: clean session
    hex('00 3c'), // keep alive 60 s
    hex('00', id.length.toString(16).padStart(2, '0')), // client id length
    id, // client id
  ])
}

const CONNACK_ACCEPTED = hex('20 02 00 00') // CONNACK, session present 0, return code 0
const CONNACK_UNACCEPTABLE_PROTOCOL_LEVEL = hex('20 02 00 01') // CONNACK, return code 0x01
const PINGREQ = hex('c0 00')
const PINGRESP = hex('d0 00')

/** A raw TCP client that records what the server sends and when it closes. */
class RawClient {
  received = Buffer.alloc(0)
  closed = false
  readonly #changed = new EventEmitter()

  constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true)
    socket.on('data', (data: Buffer) => {
      this.received = Buffer.concat([this.received, data])
      this.#changed.emit('change')
    })
    socket.on('close', () => {
      this.closed = true
      this.#changed.emit('change')
    })
    // The server may reset a connection it rejects while bytes are still in flight.
    socket.on('error', () => {})
  }

  /** Resolves once `condition` holds, checking it whenever bytes arrive or the socket closes. */
  until(condition: () => boolean): Promise<void> {
    if (condition()) return Promise.resolve()
    return new Promise((resolve) => {
      const check = () => {
        if (!condition()) return
        this.#changed.off('change', check)
        resolve()
      }
      this.#changed.on('change', check)
    })
  }

  write(...chunks: Buffer[]): void {
    this.socket.write(Buffer.concat(chunks))
  }
}

/** The server side of one guarded connection. */
interface ServerConnection {
  readonly client: Client & { _parser: MqttPacketParser; subscriptions: Record<string, unknown> }
  /** Bytes aedes has fed to the guarded parser so far. */
  fedBytes: number
  readonly fed: EventEmitter
}

/** A real aedes broker on 127.0.0.1 port 0 whose connections are guarded. */
interface Harness extends AsyncDisposable {
  readonly port: number
  readonly broker: Aedes
  /** Every reason passed to onViolation, in order. */
  readonly violations: PacketViolation[]
  /** Every error aedes reported for a connection. */
  readonly errors: Error[]
  raw(): Promise<RawClient>
  /** A raw client that has sent CONNECT and received CONNACK 0. */
  connected(clientId: string): Promise<RawClient>
  /** Writes each chunk in its own read of the server: waits until aedes has parsed it. */
  writeSeparately(raw: RawClient, chunks: Buffer[]): Promise<void>
  mqtt(clientId: string): Promise<MqttClient>
  serverSide(raw: RawClient): ServerConnection
}

async function startBroker(guard: Partial<PacketGuardOptions> = {}): Promise<Harness> {
  const { Aedes } = await import('aedes')
  const broker = await Aedes.createBroker()
  const violations: PacketViolation[] = []
  const errors: Error[] = []
  broker.on('connectionError', (_client, error) => errors.push(error))
  broker.on('clientError', (_client, error) => errors.push(error))
  const serverSockets = new Set<net.Socket>()
  const connections = new Map<number, ServerConnection>()
  const server = net.createServer((socket) => {
    serverSockets.add(socket)
    socket.on('close', () => serverSockets.delete(socket))
    const client = broker.handle(socket) as ServerConnection['client']
    installPacketGuard(client._parser, {
      onUnsupportedProtocolLevel: () => socket.write(CONNACK_UNACCEPTABLE_PROTOCOL_LEVEL),
      ...guard,
      onViolation: (reason) => {
        violations.push(reason)
        guard.onViolation?.(reason)
      },
    })
    const connection: ServerConnection = { client, fedBytes: 0, fed: new EventEmitter() }
    const guardedParse = client._parser.parse
    client._parser.parse = (buf) => {
      connection.fedBytes += buf.length
      const left = guardedParse.call(client._parser, buf)
      connection.fed.emit('fed')
      return left
    }
    connections.set(socket.remotePort ?? 0, connection)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  const raws: RawClient[] = []
  const mqttClients: MqttClient[] = []

  const harness: Harness = {
    port,
    broker,
    violations,
    errors,
    async raw() {
      const socket = net.connect(port, '127.0.0.1')
      const raw = new RawClient(socket)
      raws.push(raw)
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve)
        socket.once('error', reject)
      })
      return raw
    },
    async connected(clientId) {
      const raw = await harness.raw()
      raw.write(connectPacket(clientId))
      await raw.until(() => raw.received.length >= 4 || raw.closed)
      expect(raw.received.toString('hex')).toBe(CONNACK_ACCEPTED.toString('hex'))
      return raw
    },
    async writeSeparately(raw, chunks) {
      const connection = harness.serverSide(raw)
      let written = connection.fedBytes
      for (const chunk of chunks) {
        written += chunk.length
        raw.socket.write(chunk)
        await new Promise<void>((resolve) => {
          const check = () => {
            if (connection.fedBytes < written && !raw.closed) return
            connection.fed.off('fed', check)
            raw.socket.off('close', check)
            resolve()
          }
          connection.fed.on('fed', check)
          raw.socket.on('close', check)
          check()
        })
      }
    },
    async mqtt(clientId) {
      const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId, reconnectPeriod: 0 })
      mqttClients.push(client)
      return client
    },
    serverSide(raw) {
      const connection = connections.get(raw.socket.localPort ?? -1)
      if (connection === undefined) throw new Error('Cannot find the server side of a raw client')
      return connection
    },
    async [Symbol.asyncDispose]() {
      // Children before parents: clients, then the broker, then the listening server.
      await Promise.all(mqttClients.map((client) => client.endAsync(true)))
      for (const raw of raws) raw.socket.destroy()
      await new Promise<void>((resolve) => broker.close(() => resolve()))
      for (const socket of serverSockets) socket.destroy()
      await new Promise<void>((resolve, reject) =>
        server.close((error) => (error ? reject(error) : resolve())),
      )
    },
  }
  return harness
}

/**
 * Expects the server to close `raw` after sending exactly `reply` (what it had sent before the bad
 * bytes, or a CONNACK it owes), with `reason` as the only violation. Returns as soon as the server
 * sends anything more, so a packet the guard wrongly let through fails fast.
 */
async function expectClosed(
  harness: Harness,
  raw: RawClient,
  reply: Buffer,
  reason: PacketViolation,
): Promise<void> {
  await raw.until(() => raw.closed || raw.received.length > reply.length)
  expect(raw.received.toString('hex')).toBe(reply.toString('hex'))
  await raw.until(() => raw.closed)
  expect(harness.violations).toEqual([reason])
  expect(harness.errors).toHaveLength(1)
  expect(harness.errors[0]).toBeInstanceOf(PacketGuardError)
  expect((harness.errors[0] as PacketGuardError).reason).toBe(reason)
}

/** Resolves with the first message `client` receives that `match` accepts. */
function nextMessage(
  client: MqttClient,
  match: (topic: string, payload: Buffer) => boolean,
): Promise<{ topic: string; payload: Buffer }> {
  return new Promise((resolve) => {
    const onMessage = (topic: string, payload: Buffer) => {
      if (!match(topic, payload)) return
      client.off('message', onMessage)
      resolve({ topic, payload })
    }
    client.on('message', onMessage)
  })
}

/** Every message `client` receives, as [topic, payload as UTF-8], and a wait for the count to reach n. */
function collect(client: MqttClient): { messages: Array<[string, string]>; count(n: number): Promise<void> } {
  const messages: Array<[string, string]> = []
  const changed = new EventEmitter()
  client.on('message', (topic, payload) => {
    messages.push([topic, payload.toString()])
    changed.emit('change')
  })
  return {
    messages,
    count: (n) =>
      new Promise((resolve) => {
        const check = () => {
          if (messages.length < n) return
          changed.off('change', check)
          resolve()
        }
        changed.on('change', check)
        check()
      }),
  }
}

// Bad packets sent after a successful CONNECT, each followed by a PINGREQ in the same write: had the
// guard let the bad packet through, the PINGRESP would arrive and fail the test at once.
const AFTER_CONNECT: Array<[string, Buffer, PacketViolation]> = [
  // 1.5.3: UTF-8 strings
  [
    'a topic name with an overlong encoding of "/" [MQTT-1.5.3-1]',
    hex('30 06', '00 04 61 2f c0 af'), // PUBLISH QoS 0, topic 'a/' + C0 AF (overlong U+002F)
    PACKET_VIOLATIONS.malformedUtf8,
  ],
  [
    'a topic name with a UTF-16 surrogate encoded in UTF-8 [MQTT-1.5.3-1]',
    hex('30 06', '00 04 61 ed a0 80'), // PUBLISH QoS 0, topic 'a' + ED A0 80 (U+D800)
    PACKET_VIOLATIONS.malformedUtf8,
  ],
  [
    'a topic name with a code point past U+10FFFF [MQTT-1.5.3-1]',
    hex('30 06', '00 04 f4 90 80 80'), // PUBLISH QoS 0, topic F4 90 80 80 (U+110000)
    PACKET_VIOLATIONS.malformedUtf8,
  ],
  [
    'a topic name with U+0000 [MQTT-1.5.3-2]',
    hex('30 05', '00 03 61 00 62'), // PUBLISH QoS 0, topic 'a\u0000b'
    PACKET_VIOLATIONS.nullCharacter,
  ],
  [
    'a topic filter with a truncated UTF-8 sequence [MQTT-1.5.3-1]',
    hex('82 07', '00 01', '00 02 e2 82', '00'), // SUBSCRIBE id 1, filter E2 82 (cut '€'), QoS 0
    PACKET_VIOLATIONS.malformedUtf8,
  ],
  [
    'an UNSUBSCRIBE topic filter with U+0000 [MQTT-1.5.3-2]',
    hex('a2 06', '00 01', '00 02 61 00'), // UNSUBSCRIBE id 1, filter 'a\u0000'
    PACKET_VIOLATIONS.nullCharacter,
  ],
  // 3.3.2 and 4.7: topic names
  [
    'a PUBLISH topic name with "+" [MQTT-3.3.2-2]',
    hex('30 05', '00 03 61 2f 2b'), // PUBLISH QoS 0, topic 'a/+'
    PACKET_VIOLATIONS.topicName,
  ],
  [
    'a PUBLISH topic name with "#" [MQTT-3.3.2-2]',
    hex('32 05', '00 01 23', '00 01'), // PUBLISH QoS 1, topic '#', id 1
    PACKET_VIOLATIONS.topicName,
  ],
  [
    'an empty PUBLISH topic name [MQTT-4.7.3-1]',
    hex('30 03', '00 00', '78'), // PUBLISH QoS 0, topic '', payload 'x'
    PACKET_VIOLATIONS.topicName,
  ],
  // 4.7.1 and 3.8.3: topic filters
  [
    'a topic filter with "#" before its end [MQTT-4.7.1-2]',
    hex('82 0a', '00 01', '00 05 61 2f 23 2f 62', '00'), // SUBSCRIBE id 1, 'a/#/b', QoS 0
    PACKET_VIOLATIONS.topicFilter,
  ],
  [
    'a topic filter with "#" that is not a whole level, which aedes misses [MQTT-4.7.1-2]',
    hex('82 07', '00 01', '00 02 61 23', '00'), // SUBSCRIBE id 1, 'a#', QoS 0
    PACKET_VIOLATIONS.topicFilter,
  ],
  [
    'a topic filter with "+" glued before a name, which aedes misses [MQTT-4.7.1-3]',
    hex('82 07', '00 01', '00 02 2b 61', '00'), // SUBSCRIBE id 1, '+a', QoS 0
    PACKET_VIOLATIONS.topicFilter,
  ],
  [
    'a topic filter with "+" glued after a name, which aedes misses [MQTT-4.7.1-3]',
    hex('82 07', '00 01', '00 02 61 2b', '00'), // SUBSCRIBE id 1, 'a+', QoS 0
    PACKET_VIOLATIONS.topicFilter,
  ],
  [
    'an empty topic filter [MQTT-4.7.3-1]',
    hex('82 05', '00 01', '00 00', '00'), // SUBSCRIBE id 1, filter '', QoS 0
    PACKET_VIOLATIONS.topicFilter,
  ],
  [
    'an UNSUBSCRIBE topic filter with "#" before its end [MQTT-4.7.1-2]',
    hex('a2 09', '00 01', '00 05 61 2f 23 2f 62'), // UNSUBSCRIBE id 1, 'a/#/b'
    PACKET_VIOLATIONS.topicFilter,
  ],
  [
    'an empty UNSUBSCRIBE topic filter [MQTT-4.7.3-1]',
    hex('a2 04', '00 01', '00 00'), // UNSUBSCRIBE id 1, filter ''
    PACKET_VIOLATIONS.topicFilter,
  ],
  [
    'a SUBSCRIBE without topic filters [MQTT-3.8.3-3]',
    hex('82 02', '00 01'), // SUBSCRIBE id 1, no payload
    PACKET_VIOLATIONS.noTopicFilter,
  ],
  [
    'an UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]',
    hex('a2 02', '00 01'), // UNSUBSCRIBE id 1, no payload
    PACKET_VIOLATIONS.noTopicFilter,
  ],
  [
    'a SUBSCRIBE requesting QoS 3, caught by mqtt-packet [MQTT-3.8.3-4]',
    hex('82 06', '00 01', '00 01 61', '03'), // SUBSCRIBE id 1, 'a', options 0x03
    PACKET_VIOLATIONS.malformedPacket,
  ],
  [
    'a SUBSCRIBE with a reserved option bit, caught by mqtt-packet [MQTT-3.8.3-4]',
    hex('82 06', '00 01', '00 01 61', '04'), // SUBSCRIBE id 1, 'a', options 0x04
    PACKET_VIOLATIONS.malformedPacket,
  ],
  // 2.3.1: packet identifiers
  [
    'a QoS 1 PUBLISH with packet id 0 [MQTT-2.3.1-1]',
    hex('32 05', '00 01 61', '00 00'),
    PACKET_VIOLATIONS.packetIdentifier,
  ],
  [
    'a QoS 2 PUBLISH with packet id 0 [MQTT-2.3.1-1]',
    hex('34 05', '00 01 61', '00 00'),
    PACKET_VIOLATIONS.packetIdentifier,
  ],
  ['a PUBACK with packet id 0 [MQTT-2.3.1-1]', hex('40 02', '00 00'), PACKET_VIOLATIONS.packetIdentifier],
  ['a PUBREC with packet id 0 [MQTT-2.3.1-1]', hex('50 02', '00 00'), PACKET_VIOLATIONS.packetIdentifier],
  ['a PUBREL with packet id 0 [MQTT-2.3.1-1]', hex('62 02', '00 00'), PACKET_VIOLATIONS.packetIdentifier],
  ['a PUBCOMP with packet id 0 [MQTT-2.3.1-1]', hex('70 02', '00 00'), PACKET_VIOLATIONS.packetIdentifier],
  [
    'a SUBSCRIBE with packet id 0 [MQTT-2.3.1-1]',
    hex('82 06', '00 00', '00 01 61', '00'), // SUBSCRIBE id 0, 'a', QoS 0
    PACKET_VIOLATIONS.packetIdentifier,
  ],
  [
    'an UNSUBSCRIBE with packet id 0 [MQTT-2.3.1-1]',
    hex('a2 05', '00 00', '00 01 61'), // UNSUBSCRIBE id 0, 'a'
    PACKET_VIOLATIONS.packetIdentifier,
  ],
  // 2.2.2: fixed-header flags
  ['a PUBLISH with DUP set at QoS 0 [MQTT-3.3.1-2]', hex('38 03', '00 01 61'), PACKET_VIOLATIONS.headerFlags],
  [
    'a PUBLISH with both QoS bits set, caught by mqtt-packet [MQTT-3.3.1-4]',
    hex('36 05', '00 01 61', '00 01'), // PUBLISH QoS 3
    PACKET_VIOLATIONS.malformedPacket,
  ],
  [
    'a PUBREL with flags 0000, caught by mqtt-packet [MQTT-3.6.1-1]',
    hex('60 02', '00 01'),
    PACKET_VIOLATIONS.malformedPacket,
  ],
  [
    'a SUBSCRIBE with flags 0000, caught by mqtt-packet [MQTT-3.8.1-1]',
    hex('80 06', '00 01', '00 01 61', '00'),
    PACKET_VIOLATIONS.malformedPacket,
  ],
  [
    'an UNSUBSCRIBE with flags 0000, caught by mqtt-packet [MQTT-3.10.1-1]',
    hex('a0 05', '00 01', '00 01 61'),
    PACKET_VIOLATIONS.malformedPacket,
  ],
  [
    'a PINGREQ with flags 0001, caught by mqtt-packet [MQTT-2.2.2-2]',
    hex('c1 00'),
    PACKET_VIOLATIONS.malformedPacket,
  ],
  [
    'a DISCONNECT with flags 1000, caught by mqtt-packet [MQTT-3.14.1-1]',
    hex('e8 00'),
    PACKET_VIOLATIONS.malformedPacket,
  ],
  // 2.2.3 and 4.8: remaining lengths
  [
    'a Remaining Length of five bytes, caught by mqtt-packet (2.2.3)',
    hex('30 ff ff ff ff 7f'), // PUBLISH, remaining length bytes FF FF FF FF 7F
    PACKET_VIOLATIONS.malformedPacket,
  ],
  ['a PUBACK of remaining length 3 (3.4.1)', hex('40 03', '00 01 00'), PACKET_VIOLATIONS.remainingLength],
  ['a PUBACK of remaining length 1 (3.4.1)', hex('40 01', '00'), PACKET_VIOLATIONS.remainingLength],
  ['a PUBREL of remaining length 0 (3.6.1)', hex('62 00'), PACKET_VIOLATIONS.remainingLength],
  ['a PINGREQ of remaining length 1 (3.12.1)', hex('c0 01', '00'), PACKET_VIOLATIONS.remainingLength],
  ['a DISCONNECT of remaining length 2 (3.14.1)', hex('e0 02', '00 00'), PACKET_VIOLATIONS.remainingLength],
  [
    'a QoS 1 PUBLISH whose remaining length ends before its packet id [MQTT-4.8.0-1]',
    hex('32 03', '00 01 61'), // PUBLISH QoS 1, topic 'a', remaining length 3: the id lies outside
    PACKET_VIOLATIONS.remainingLength,
  ],
  [
    'a SUBSCRIBE with a byte after its last filter, caught by mqtt-packet [MQTT-4.8.0-1]',
    hex('82 07', '00 01', '00 01 61', '00', 'ff'), // SUBSCRIBE id 1, 'a' QoS 0, then 1 stray byte
    PACKET_VIOLATIONS.malformedPacket,
  ],
  // 2.2.1: packet types a client never sends
  ['a CONNACK from a client (2.2.1)', hex('20 02', '00 00'), PACKET_VIOLATIONS.packetType],
  ['a SUBACK from a client (2.2.1)', hex('90 03', '00 01 00'), PACKET_VIOLATIONS.packetType],
  ['an UNSUBACK from a client (2.2.1)', hex('b0 02', '00 01'), PACKET_VIOLATIONS.packetType],
  ['a PINGRESP from a client (2.2.1)', hex('d0 00'), PACKET_VIOLATIONS.packetType],
  ['reserved packet type 0 (2.2.1)', hex('00 00'), PACKET_VIOLATIONS.packetType],
  ['reserved packet type 15, AUTH in MQTT 5 (2.2.1)', hex('f0 00'), PACKET_VIOLATIONS.packetType],
  // 3.1.0
  ['a second CONNECT [MQTT-3.1.0-2]', connectPacket('again'), PACKET_VIOLATIONS.protocolSequence],
]

describe('installPacketGuard() closes the connection on', () => {
  test.each(AFTER_CONNECT)('%s', async (_name, bad, reason) => {
    await using harness = await startBroker()
    const raw = await harness.connected('c1')
    raw.write(bad, PINGREQ)
    await expectClosed(harness, raw, CONNACK_ACCEPTED, reason)
  })
})

// Bad first packets: no CONNACK may precede the close [MQTT-3.1.4-1], except for the protocol
// level, which gets CONNACK 0x01 [MQTT-3.1.2-2].
const FIRST_PACKET: Array<[string, Buffer, PacketViolation, Buffer]> = [
  [
    'a PUBLISH before CONNECT [MQTT-3.1.0-1]',
    hex('30 03', '00 01 61'), // PUBLISH QoS 0, topic 'a'
    PACKET_VIOLATIONS.protocolSequence,
    Buffer.alloc(0),
  ],
  ['a PINGREQ before CONNECT [MQTT-3.1.0-1]', PINGREQ, PACKET_VIOLATIONS.protocolSequence, Buffer.alloc(0)],
  [
    "a protocol name other than 'MQTT' or 'MQIsdp' [MQTT-3.1.2-1]",
    hex('10 0e', '00 04 4d 51 54 58', '04', '02', '00 3c', '00 02 63 31'), // 'MQTX' level 4, id 'c1'
    PACKET_VIOLATIONS.protocolName,
    Buffer.alloc(0),
  ],
  [
    "protocol level 5 with 'MQTT', which aedes would answer itself [MQTT-3.1.2-2]",
    hex('10 0e', '00 04 4d 51 54 54', '05', '02', '00 3c', '00 02 63 31'), // 'MQTT' level 5, id 'c1'
    PACKET_VIOLATIONS.protocolLevel,
    CONNACK_UNACCEPTABLE_PROTOCOL_LEVEL,
  ],
  [
    "protocol level 6 with 'MQTT', which mqtt-packet closes without CONNACK [MQTT-3.1.2-2]",
    hex('10 0e', '00 04 4d 51 54 54', '06', '02', '00 3c', '00 02 63 31'), // 'MQTT' level 6
    PACKET_VIOLATIONS.protocolLevel,
    CONNACK_UNACCEPTABLE_PROTOCOL_LEVEL,
  ],
  [
    "protocol level 0 with 'MQTT' [MQTT-3.1.2-2]",
    hex('10 0e', '00 04 4d 51 54 54', '00', '02', '00 3c', '00 02 63 31'), // 'MQTT' level 0
    PACKET_VIOLATIONS.protocolLevel,
    CONNACK_UNACCEPTABLE_PROTOCOL_LEVEL,
  ],
  [
    "protocol level 3 with 'MQTT' [MQTT-3.1.2-2]",
    hex('10 0e', '00 04 4d 51 54 54', '03', '02', '00 3c', '00 02 63 31'), // 'MQTT' level 3
    PACKET_VIOLATIONS.protocolLevel,
    CONNACK_UNACCEPTABLE_PROTOCOL_LEVEL,
  ],
  [
    "the bridge protocol level 0x84 with 'MQTT' [MQTT-3.1.2-2]",
    hex('10 0e', '00 04 4d 51 54 54', '84', '02', '00 3c', '00 02 63 31'), // 'MQTT' level 0x84
    PACKET_VIOLATIONS.protocolLevel,
    CONNACK_UNACCEPTABLE_PROTOCOL_LEVEL,
  ],
  [
    "protocol level 4 with 'MQIsdp' (MQTT 3.1 is level 3) [MQTT-3.1.2-2]",
    hex('10 10', '00 06 4d 51 49 73 64 70', '04', '02', '00 3c', '00 02 63 31'), // 'MQIsdp' level 4
    PACKET_VIOLATIONS.protocolLevel,
    CONNACK_UNACCEPTABLE_PROTOCOL_LEVEL,
  ],
  [
    'the reserved connect flag [MQTT-3.1.2-3]',
    hex('10 0e', '00 04 4d 51 54 54', '04', '03', '00 3c', '00 02 63 31'), // flags: clean + reserved
    PACKET_VIOLATIONS.connectFlags,
    Buffer.alloc(0),
  ],
  [
    'will QoS 3 [MQTT-3.1.2-14]',
    // flags 0x1E: will QoS 3, will flag, clean; id 'c1', will topic 'w', will message ''
    hex('10 13', '00 04 4d 51 54 54', '04', '1e', '00 3c', '00 02 63 31', '00 01 77', '00 00'),
    PACKET_VIOLATIONS.connectFlags,
    Buffer.alloc(0),
  ],
  [
    'will QoS 1 without the will flag [MQTT-3.1.2-13]',
    hex('10 0e', '00 04 4d 51 54 54', '04', '0a', '00 3c', '00 02 63 31'), // flags 0x0A: will QoS 1, clean
    PACKET_VIOLATIONS.connectFlags,
    Buffer.alloc(0),
  ],
  [
    'will retain without the will flag [MQTT-3.1.2-15]',
    hex('10 0e', '00 04 4d 51 54 54', '04', '22', '00 3c', '00 02 63 31'), // flags 0x22: will retain, clean
    PACKET_VIOLATIONS.connectFlags,
    Buffer.alloc(0),
  ],
  [
    'the password flag without the user name flag [MQTT-3.1.2-22]',
    // flags 0x42: password, clean; id 'c1', password 'p'
    hex('10 11', '00 04 4d 51 54 54', '04', '42', '00 3c', '00 02 63 31', '00 01 70'),
    PACKET_VIOLATIONS.connectFlags,
    Buffer.alloc(0),
  ],
  [
    'a CONNECT with a byte after its last field [MQTT-3.1.4-1]',
    hex('10 0f', '00 04 4d 51 54 54', '04', '02', '00 3c', '00 02 63 31', 'ff'), // id 'c1', then 0xFF
    PACKET_VIOLATIONS.remainingLength,
    Buffer.alloc(0),
  ],
  [
    'a CONNECT whose remaining length ends inside its keep alive (3.1.2.10)',
    hex('10 09', '00 04 4d 51 54 54', '04', '02', '00'), // keep alive cut after one byte
    PACKET_VIOLATIONS.remainingLength,
    Buffer.alloc(0),
  ],
  [
    'a CONNECT with the user name flag but no user name, caught by mqtt-packet [MQTT-3.1.2-19]',
    hex('10 0e', '00 04 4d 51 54 54', '04', '82', '00 3c', '00 02 63 31'), // flags 0x82: user name, clean
    PACKET_VIOLATIONS.malformedPacket,
    Buffer.alloc(0),
  ],
  [
    'a CONNECT longer than any CONNECT can be, before its body arrives (3.1)',
    hex('10 ff ff 7f'), // CONNECT, remaining length 2,097,151, and no body
    PACKET_VIOLATIONS.remainingLength,
    Buffer.alloc(0),
  ],
  [
    'a client id that is not UTF-8 [MQTT-3.1.3-4]',
    hex('10 0e', '00 04 4d 51 54 54', '04', '02', '00 3c', '00 02 63 ff'), // id 'c' + FF
    PACKET_VIOLATIONS.malformedUtf8,
    Buffer.alloc(0),
  ],
  [
    'a client id with U+0000 [MQTT-1.5.3-2]',
    hex('10 0e', '00 04 4d 51 54 54', '04', '02', '00 3c', '00 02 63 00'), // id 'c\u0000'
    PACKET_VIOLATIONS.nullCharacter,
    Buffer.alloc(0),
  ],
  [
    'a will topic that is not UTF-8 [MQTT-3.1.3-10]',
    // flags 0x06: will, clean; id 'c1', will topic 'w' + FF, will message ''
    hex('10 14', '00 04 4d 51 54 54', '04', '06', '00 3c', '00 02 63 31', '00 02 77 ff', '00 00'),
    PACKET_VIOLATIONS.malformedUtf8,
    Buffer.alloc(0),
  ],
  [
    'a will topic with a wildcard [MQTT-4.7.1-1]',
    // flags 0x06: will, clean; id 'c1', will topic 'w/#', will message ''
    hex('10 15', '00 04 4d 51 54 54', '04', '06', '00 3c', '00 02 63 31', '00 03 77 2f 23', '00 00'),
    PACKET_VIOLATIONS.topicName,
    Buffer.alloc(0),
  ],
  [
    'a user name with a UTF-16 surrogate encoded in UTF-8 [MQTT-3.1.3-11]',
    // flags 0x82: user name, clean; id 'c1', user name ED B0 80 (U+DC00)
    hex('10 13', '00 04 4d 51 54 54', '04', '82', '00 3c', '00 02 63 31', '00 03 ed b0 80'),
    PACKET_VIOLATIONS.malformedUtf8,
    Buffer.alloc(0),
  ],
  ['a CONNACK as first packet (2.2.1)', hex('20 02', '00 00'), PACKET_VIOLATIONS.packetType, Buffer.alloc(0)],
]

describe('installPacketGuard() closes a connection whose first packet is', () => {
  test.each(FIRST_PACKET)('%s', async (_name, bad, reason, reply) => {
    await using harness = await startBroker()
    const raw = await harness.raw()
    raw.write(bad)
    await expectClosed(harness, raw, reply, reason)
  })
})

describe('installPacketGuard()', () => {
  test('names the rule and quotes the offending value in its error', async () => {
    await using harness = await startBroker()
    const wildcard = await harness.connected('c1')
    wildcard.write(hex('30 05', '00 03 61 2f 2b')) // PUBLISH QoS 0, topic 'a/+'
    await wildcard.until(() => wildcard.closed)
    const utf8 = await harness.connected('c2')
    utf8.write(hex('30 06', '00 04 61 2f c0 af')) // PUBLISH QoS 0, topic 'a/' + C0 AF
    await utf8.until(() => utf8.closed)
    const control = await harness.connected('c3')
    control.write(hex('82 08', '00 01', '00 03 23 0a 2b', '00')) // SUBSCRIBE id 1, '#\n+', QoS 0
    await control.until(() => control.closed)
    expect(harness.errors.map((error) => error.message)).toEqual([
      "Cannot accept PUBLISH as its topic name contains a wildcard: 'a/+'",
      "Cannot accept PUBLISH as its topic name is not well-formed UTF-8: 'a/\uFFFD\uFFFD' (bytes 61 2f c0 af)",
      "Cannot accept SUBSCRIBE as its topic filter has '#' before its last character: '#\\u000a+'",
    ])
  })

  test('writes CONNACK 0x01 through onUnsupportedProtocolLevel, which learns the name and level', async () => {
    const refused: unknown[] = []
    await using harness = await startBroker({
      onUnsupportedProtocolLevel: (connect) => refused.push(connect),
    })
    const raw = await harness.raw()
    raw.write(hex('10 0e', '00 04 4d 51 54 54', '05', '02', '00 3c', '00 02 63 31')) // 'MQTT' level 5
    await raw.until(() => raw.closed)
    expect(refused).toEqual([{ protocolName: 'MQTT', protocolLevel: 5 }])
    expect(harness.violations).toEqual([PACKET_VIOLATIONS.protocolLevel])
  })

  test('closes only the offending connection', async () => {
    await using harness = await startBroker()
    const good = await harness.connected('good')
    const bad = await harness.connected('bad')
    bad.write(hex('30 05', '00 03 61 2f 2b')) // PUBLISH QoS 0, topic 'a/+'
    await bad.until(() => bad.closed)
    good.write(PINGREQ)
    await good.until(() => good.received.length >= 6)
    expect(good.received.subarray(4).toString('hex')).toBe(PINGRESP.toString('hex'))
    expect(good.closed).toBe(false)
    expect(harness.violations).toEqual([PACKET_VIOLATIONS.topicName])
  })

  test('delivers a valid PUBLISH and rejects an invalid one that follows it in the same write', async () => {
    await using harness = await startBroker()
    const subscriber = await harness.mqtt('subscriber')
    await subscriber.subscribeAsync('multi/#')
    const received = collect(subscriber)
    const raw = await harness.connected('c1')
    raw.write(
      hex('30 0f', '00 08 6d 75 6c 74 69 2f 6f 6b', '66 69 72 73 74'), // PUBLISH QoS 0 'multi/ok', 'first'
      hex('30 09', '00 07 6d 75 6c 74 69 2f 2b'), // PUBLISH QoS 0 'multi/+'
    )
    await expectClosed(harness, raw, CONNACK_ACCEPTED, PACKET_VIOLATIONS.topicName)
    const publisher = await harness.mqtt('publisher')
    const marker = nextMessage(subscriber, (topic) => topic === 'multi/marker')
    await publisher.publishAsync('multi/marker', 'm')
    await marker
    expect(received.messages).toEqual([
      ['multi/ok', 'first'],
      ['multi/marker', 'm'],
    ])
  })

  test('lets no packet that follows a rejected one in the same write reach aedes', async () => {
    await using harness = await startBroker()
    const subscriber = await harness.mqtt('subscriber')
    await subscriber.subscribeAsync('later/#')
    const received = collect(subscriber)
    const badTopic = await harness.connected('c1')
    badTopic.write(
      hex('30 05', '00 03 61 2f 2b'), // PUBLISH QoS 0 'a/+': rejected
      hex('30 0c', '00 08 6c 61 74 65 72 2f 6f 6b', '31 32'), // PUBLISH QoS 0 'later/ok', '12'
    )
    await badTopic.until(() => badTopic.closed)
    // aedes handles packets queued behind a second CONNECT even after it closes the connection for
    // it; the guard stops at the second CONNECT.
    const secondConnect = await harness.raw()
    secondConnect.write(
      connectPacket('c2'),
      connectPacket('c2'),
      hex('30 0c', '00 08 6c 61 74 65 72 2f 6f 6b', '33 34'), // PUBLISH QoS 0 'later/ok', '34'
    )
    await secondConnect.until(() => secondConnect.closed)
    const publisher = await harness.mqtt('publisher')
    const marker = nextMessage(subscriber, (topic) => topic === 'later/marker')
    await publisher.publishAsync('later/marker', 'm')
    await marker
    expect(received.messages).toEqual([['later/marker', 'm']])
    expect(harness.violations).toEqual([PACKET_VIOLATIONS.topicName, PACKET_VIOLATIONS.protocolSequence])
  })

  test('accepts a CONNECT written one byte per read', async () => {
    await using harness = await startBroker()
    const raw = await harness.raw()
    const connect = connectPacket('split')
    await harness.writeSeparately(
      raw,
      [...connect].map((byte) => Buffer.from([byte])),
    )
    await raw.until(() => raw.received.length >= 4 || raw.closed)
    expect(raw.received.toString('hex')).toBe(CONNACK_ACCEPTED.toString('hex'))
    expect(harness.serverSide(raw).fedBytes).toBe(connect.length)
  })

  test('accepts a PUBLISH split inside its remaining length and inside a multi-byte character', async () => {
    await using harness = await startBroker()
    const subscriber = await harness.mqtt('subscriber')
    await subscriber.subscribeAsync('#')
    const message = nextMessage(subscriber, () => true)
    const raw = await harness.connected('c1')
    await harness.writeSeparately(raw, [
      hex('30 da'), // PUBLISH QoS 0, first byte of remaining length 218 (DA 01)
      hex('01', '00'), // last byte of remaining length, first byte of topic length
      hex('10', '74 65 6d 70 c3'), // topic length 16, 'temp' and the first byte of 'é' (C3 A9)
      hex('a9 72 61 74 75 72 65 2f c2 b0 43'), // rest of 'température/°C'
      Buffer.alloc(200, 'x'), // payload: 200 × 'x'
    ])
    const { topic, payload } = await message
    expect(topic).toBe('température/°C')
    expect(payload.toString()).toBe('x'.repeat(200))
    expect(harness.violations).toEqual([])
  })

  test('rejects ill-formed UTF-8 split across reads', async () => {
    await using harness = await startBroker()
    const raw = await harness.connected('c1')
    await harness.writeSeparately(raw, [
      hex('30 06', '00 04 61 2f c0'), // PUBLISH QoS 0, topic 'a/' and the first byte of C0 AF
      hex('af'), // rest of the overlong '/'
    ])
    await expectClosed(harness, raw, CONNACK_ACCEPTED, PACKET_VIOLATIONS.malformedUtf8)
  })

  test('rejects an oversized packet from its header, before its body arrives', async () => {
    await using harness = await startBroker({ maxRemainingLengthBytes: 1024 })
    const raw = await harness.connected('c1')
    raw.write(hex('30 81 08')) // PUBLISH QoS 0, remaining length 1025, no body sent
    await expectClosed(harness, raw, CONNACK_ACCEPTED, PACKET_VIOLATIONS.packetTooLarge)
  })

  test('leaves an empty client id with clean session 0 to the connect hook [MQTT-3.1.3-8]', async () => {
    await using harness = await startBroker()
    const raw = await harness.raw()
    raw.write(hex('10 0c', '00 04 4d 51 54 54', '04', '00', '00 3c', '00 00')) // flags 0, client id ''
    await raw.until(() => raw.received.length >= 4 || raw.closed)
    // No hook here, so aedes accepts it; the gateway's connect hook answers 0x02.
    expect(raw.received.toString('hex')).toBe(CONNACK_ACCEPTED.toString('hex'))
    expect(harness.violations).toEqual([])
  })
})

describe('installPacketGuard() accepts', () => {
  test('multi-byte topics, a well-formed U+FFFD and a byte order mark that it does not strip [MQTT-1.5.3-3]', async () => {
    await using harness = await startBroker()
    const subscriber = await harness.mqtt('subscriber')
    await subscriber.subscribeAsync('#')
    const received = collect(subscriber)
    const raw = await harness.connected('c1')
    raw.write(
      // PUBLISH QoS 0 'température/°C', payload '21.5'
      hex('30 16', '00 10 74 65 6d 70 c3 a9 72 61 74 75 72 65 2f c2 b0 43', '32 31 2e 35'),
      // PUBLISH QoS 0 '🌡️/温度' (F09F8CA1 EFB88F 2F E6B8A9 E5BAA6), payload 'ok'
      hex('30 12', '00 0e f0 9f 8c a1 ef b8 8f 2f e6 b8 a9 e5 ba a6', '6f 6b'),
      // PUBLISH QoS 0 'x/' + EF BF BD (U+FFFD, well-formed), payload 'ok'
      hex('30 09', '00 05 78 2f ef bf bd', '6f 6b'),
      // PUBLISH QoS 0 EF BB BF 'a' (U+FEFF then 'a'), payload 'ok'
      hex('30 08', '00 04 ef bb bf 61', '6f 6b'),
    )
    await received.count(4)
    expect(received.messages).toEqual([
      ['température/°C', '21.5'],
      ['\u{1F321}\uFE0F/温度', 'ok'],
      ['x/\uFFFD', 'ok'],
      ['\uFEFFa', 'ok'],
    ])
    expect(harness.violations).toEqual([])
  })

  test('a zero-length payload and a QoS 1 PUBLISH, acknowledged with PUBACK', async () => {
    await using harness = await startBroker()
    const subscriber = await harness.mqtt('subscriber')
    await subscriber.subscribeAsync('empty')
    const message = nextMessage(subscriber, () => true)
    const raw = await harness.connected('c1')
    raw.write(hex('32 09', '00 05 65 6d 70 74 79', '00 07')) // PUBLISH QoS 1 'empty', id 7, no payload
    await raw.until(() => raw.received.length >= 8 || raw.closed)
    expect(raw.received.subarray(4).toString('hex')).toBe(hex('40 02 00 07').toString('hex')) // PUBACK id 7
    expect((await message).payload.length).toBe(0)
    expect(harness.violations).toEqual([])
  })

  test('the QoS 2 flows in both directions', async () => {
    await using harness = await startBroker()
    const subscriber = await harness.mqtt('subscriber')
    await subscriber.subscribeAsync('q2/in', { qos: 2 })
    const inbound = nextMessage(subscriber, () => true)
    const raw = await harness.connected('c1')
    // Device to broker: PUBLISH QoS 2 'q2/in' id 0x0102 payload 'hi', PUBREC, PUBREL, PUBCOMP.
    raw.write(hex('34 0b', '00 05 71 32 2f 69 6e', '01 02', '68 69'))
    await raw.until(() => raw.received.length >= 8 || raw.closed)
    expect(raw.received.subarray(4).toString('hex')).toBe(hex('50 02 01 02').toString('hex')) // PUBREC
    raw.write(hex('62 02', '01 02')) // PUBREL id 0x0102
    await raw.until(() => raw.received.length >= 12 || raw.closed)
    expect(raw.received.subarray(8).toString('hex')).toBe(hex('70 02 01 02').toString('hex')) // PUBCOMP
    expect((await inbound).payload.toString()).toBe('hi')
    // Broker to device: SUBSCRIBE 'q2/out' at QoS 2, then the device answers PUBREC and PUBCOMP.
    raw.write(hex('82 0b', '00 07', '00 06 71 32 2f 6f 75 74', '02')) // SUBSCRIBE id 7, 'q2/out', QoS 2
    await raw.until(() => raw.received.length >= 17 || raw.closed)
    expect(raw.received.subarray(12).toString('hex')).toBe(hex('90 03 00 07 02').toString('hex')) // SUBACK
    const published = subscriber.publishAsync('q2/out', 'yo', { qos: 2 })
    // PUBLISH QoS 2: 34, remaining length 0C, topic 'q2/out' (2 + 6), packet id (2), 'yo' (2)
    await raw.until(() => raw.received.length >= 17 + 14 || raw.closed)
    const publish = raw.received.subarray(17)
    expect(publish.subarray(0, 10).toString('hex')).toBe(hex('34 0c 00 06 71 32 2f 6f 75 74').toString('hex'))
    expect(publish.subarray(12, 14).toString()).toBe('yo')
    const packetId = publish.subarray(10, 12)
    raw.write(hex('50 02'), packetId) // PUBREC
    await raw.until(() => raw.received.length >= 31 + 4 || raw.closed)
    expect(raw.received.subarray(31).toString('hex')).toBe(
      Buffer.concat([hex('62 02'), packetId]).toString('hex'),
    )
    raw.write(hex('70 02'), packetId) // PUBCOMP
    await published
    raw.write(PINGREQ)
    await raw.until(() => raw.received.length >= 37 || raw.closed)
    expect(raw.received.subarray(35).toString('hex')).toBe(PINGRESP.toString('hex'))
    expect(harness.violations).toEqual([])
  })

  test("wildcard filters such as 'sport/#', '+', '#', '+/+', 'sport/+/player1' and '/+'", async () => {
    await using harness = await startBroker()
    const raw = await harness.connected('c1')
    raw.write(
      hex(
        '82 31', // SUBSCRIBE, remaining length 49
        '00 03', // packet id 3
        '00 07 73 70 6f 72 74 2f 23 00', // 'sport/#' QoS 0
        '00 01 2b 01', // '+' QoS 1
        '00 01 23 00', // '#' QoS 0
        '00 03 2b 2f 2b 00', // '+/+' QoS 0
        '00 0f 73 70 6f 72 74 2f 2b 2f 70 6c 61 79 65 72 31 00', // 'sport/+/player1' QoS 0
        '00 02 2f 2b 00', // '/+' QoS 0
      ),
    )
    await raw.until(() => raw.received.length >= 14 || raw.closed)
    // SUBACK id 3, granted QoS 0 1 0 0 0 0
    expect(raw.received.subarray(4).toString('hex')).toBe(
      hex('90 08 00 03 00 01 00 00 00 00').toString('hex'),
    )
    raw.write(hex('a2 05', '00 04', '00 01 2b')) // UNSUBSCRIBE id 4, '+'
    await raw.until(() => raw.received.length >= 18 || raw.closed)
    expect(raw.received.subarray(14).toString('hex')).toBe(hex('b0 02 00 04').toString('hex')) // UNSUBACK
    expect(harness.violations).toEqual([])
  })

  test('a 2,100,000-byte PUBLISH whose remaining length takes all four bytes', async () => {
    await using harness = await startBroker()
    const subscriber = await harness.mqtt('subscriber')
    await subscriber.subscribeAsync('big')
    const message = nextMessage(subscriber, () => true)
    const raw = await harness.connected('c1')
    const payload = Buffer.alloc(2_100_000)
    for (let i = 0; i < payload.length; i++) payload[i] = i % 251
    // Remaining length 2 + 3 + 2,100,000 = 2,100,005 = 0x200B25: 7-bit groups 0x25, 0x16, 0x00, 0x01
    raw.write(hex('30', 'a5 96 80 01', '00 03 62 69 67'), payload) // PUBLISH QoS 0 'big'
    expect((await message).payload.equals(payload)).toBe(true)
    expect(harness.violations).toEqual([])
  })

  test('a remaining length in more bytes than needed, which 3.1.1 does not forbid (2.2.3)', async () => {
    await using harness = await startBroker()
    const raw = await harness.connected('c1')
    raw.write(hex('c0 80 00')) // PINGREQ, remaining length 0 written as 80 00
    await raw.until(() => raw.received.length >= 6 || raw.closed)
    expect(raw.received.subarray(4).toString('hex')).toBe(PINGRESP.toString('hex'))
    expect(harness.violations).toEqual([])
  })

  test("an MQTT 3.1 CONNECT ('MQIsdp' level 3) and a DISCONNECT", async () => {
    await using harness = await startBroker()
    const raw = await harness.raw()
    raw.write(hex('10 10', '00 06 4d 51 49 73 64 70', '03', '02', '00 3c', '00 02 63 31')) // 'MQIsdp' level 3
    await raw.until(() => raw.received.length >= 4 || raw.closed)
    expect(raw.received.toString('hex')).toBe(CONNACK_ACCEPTED.toString('hex'))
    raw.write(hex('e0 00')) // DISCONNECT
    await raw.until(() => raw.closed)
    expect(harness.violations).toEqual([])
    expect(harness.errors).toEqual([])
  })
})

describe('installPacketGuard() onPacket', () => {
  test('sees every accepted packet before aedes, which unsubscribes the filters it sets', async () => {
    const seen: string[] = []
    await using harness = await startBroker({
      onPacket: (packet: GuardedPacket) => {
        seen.push(packet.cmd)
        // As the gateway mounts tenant topics: a device-relative filter becomes a broker filter.
        if (packet.cmd === 'unsubscribe')
          packet.unsubscriptions = packet.unsubscriptions.map((f) => `sport/${f}`)
      },
    })
    const raw = await harness.connected('c1')
    raw.write(hex('82 0c', '00 01', '00 07 73 70 6f 72 74 2f 23', '00')) // SUBSCRIBE id 1 'sport/#' QoS 0
    await raw.until(() => raw.received.length >= 9 || raw.closed)
    const client = harness.serverSide(raw).client
    expect(Object.keys(client.subscriptions)).toEqual(['sport/#'])
    raw.write(hex('a2 05', '00 02', '00 01 23')) // UNSUBSCRIBE id 2 '#', mounted to 'sport/#'
    await raw.until(() => raw.received.length >= 13 || raw.closed)
    expect(raw.received.subarray(9).toString('hex')).toBe(hex('b0 02 00 02').toString('hex')) // UNSUBACK
    expect(Object.keys(client.subscriptions)).toEqual([])
    raw.write(hex('30 05', '00 03 61 2f 2b')) // PUBLISH 'a/+': rejected, so onPacket never sees it
    await raw.until(() => raw.closed)
    expect(seen).toEqual(['connect', 'subscribe', 'unsubscribe'])
  })

  test('that throws closes only that connection, with the exception as cause', async () => {
    const boom = new Error('boom')
    await using harness = await startBroker({
      onPacket: (packet) => {
        if (packet.cmd === 'subscribe') throw boom
      },
    })
    const other = await harness.connected('other')
    const raw = await harness.connected('c1')
    raw.write(hex('82 06', '00 01', '00 01 61', '00')) // SUBSCRIBE id 1 'a' QoS 0
    await raw.until(() => raw.closed)
    expect(harness.errors.map((error) => [error.message, error.cause])).toEqual([
      ['Cannot accept SUBSCRIBE as the onPacket hook threw', boom],
    ])
    expect(harness.violations).toEqual([])
    other.write(PINGREQ)
    await other.until(() => other.received.length >= 6 || other.closed)
    expect(other.received.subarray(4).toString('hex')).toBe(PINGRESP.toString('hex'))
  })
})

describe('installPacketGuard() refuses', () => {
  test('a parser without the mqtt-packet 9.0 internals', () => {
    expect(() =>
      installPacketGuard({} as MqttPacketParser, { onUnsupportedProtocolLevel: () => {} }),
    ).toThrow(TypeError)
  })

  test('a parser that is guarded already or has read bytes, and a bad bound', async () => {
    const { Aedes } = await import('aedes')
    const broker = await Aedes.createBroker()
    // aedes reads from any duplex stream; nothing is written to these.
    const streams = [new PassThrough(), new PassThrough()]
    try {
      const [fresh, used] = streams.map(
        (stream) => (broker.handle(stream) as unknown as { _parser: MqttPacketParser })._parser,
      ) as [MqttPacketParser, MqttPacketParser]
      const options = { onUnsupportedProtocolLevel: () => {} }
      expect(() => installPacketGuard(fresh, { ...options, maxRemainingLengthBytes: -1 })).toThrow(RangeError)
      installPacketGuard(fresh, options)
      expect(() => installPacketGuard(fresh, options)).toThrow(/has one already/)
      used.parse(hex('10 0e')) // the start of a CONNECT
      expect(() => installPacketGuard(used, options)).toThrow(/received bytes already/)
    } finally {
      for (const stream of streams) stream.destroy()
      await new Promise<void>((resolve) => broker.close(() => resolve()))
    }
  })
})

// Property-style fuzzing: deterministic (seeded) random and mutated packets. Unlike the tests above,
// these packets are built by code, as there are thousands of them.

/** mulberry32: a small seeded PRNG, so that a failing run replays exactly. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

/** A packet: first byte, Remaining Length (2.2.3), body. */
function encodePacket(firstByte: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([firstByte]), encodeLength(body.length), body])
}

function encodeLength(length: number): Buffer {
  const bytes: number[] = []
  let rest = length
  do {
    const digit = rest % 128
    rest = Math.floor(rest / 128)
    bytes.push(rest > 0 ? digit | 0x80 : digit)
  } while (rest > 0)
  return Buffer.from(bytes)
}

/** A length-prefixed string (1.5.3) or binary field. */
function field(value: string | Buffer): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value) : value
  return Buffer.concat([u16(bytes.length), bytes])
}

function u16(value: number): Buffer {
  return Buffer.from([(value >> 8) & 0xff, value & 0xff])
}

// Topic levels, wildcards in the wrong places included; none spells the health check's topic.
const FUZZ_LEVELS = [
  'sport',
  'tennis',
  'température',
  '°C',
  '\u{1F321}\uFE0F',
  '温度',
  '',
  '+',
  '#',
  'a',
  '$SYS',
  'x'.repeat(40),
]

class FuzzSource {
  readonly #random: () => number

  constructor(seed: number) {
    this.#random = mulberry32(seed)
  }

  int(below: number): number {
    return Math.floor(this.#random() * below)
  }

  chance(probability: number): boolean {
    return this.#random() < probability
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T
  }

  bytes(count: number): Buffer {
    return Buffer.from(Array.from({ length: count }, () => this.int(256)))
  }

  topic(): string {
    return Array.from({ length: 1 + this.int(4) }, () => this.pick(FUZZ_LEVELS)).join('/')
  }

  connect(): Buffer {
    const will = this.chance(0.3)
    const username = this.chance(0.3)
    const password = username && this.chance(0.5)
    const flags =
      (username ? 0x80 : 0) |
      (password ? 0x40 : 0) |
      (will ? (this.int(3) << 3) | (this.chance(0.5) ? 0x20 : 0) | 0x04 : 0) |
      (this.chance(0.8) ? 0x02 : 0)
    const parts = [
      field('MQTT'),
      Buffer.from([4, flags]),
      u16(this.int(120)),
      field(`fuzz-${this.int(100_000)}`),
    ]
    if (will) parts.push(field(this.topic()), field(this.bytes(this.int(16))))
    if (username) parts.push(field(this.topic()))
    if (password) parts.push(field(this.bytes(this.int(8))))
    return encodePacket(0x10, Buffer.concat(parts))
  }

  packet(): Buffer {
    const id = u16(this.int(65_536))
    switch (this.int(10)) {
      case 0:
      case 1:
      case 2: {
        const qos = this.int(3)
        const first = 0x30 | (this.chance(0.1) ? 0x08 : 0) | (qos << 1) | (this.chance(0.1) ? 1 : 0)
        return encodePacket(
          first,
          Buffer.concat([field(this.topic()), qos > 0 ? id : Buffer.alloc(0), this.bytes(this.int(64))]),
        )
      }
      case 3: {
        const filters = Array.from({ length: 1 + this.int(3) }, () =>
          Buffer.concat([field(this.topic()), Buffer.from([this.int(3)])]),
        )
        return encodePacket(0x82, Buffer.concat([id, ...filters]))
      }
      case 4:
        return encodePacket(0xa2, Buffer.concat([id, field(this.topic())]))
      case 5:
        return encodePacket(this.pick([0x40, 0x50, 0x62, 0x70]), id)
      case 6:
        return encodePacket(0xc0, Buffer.alloc(0))
      case 7:
        return this.chance(0.2) ? encodePacket(0xe0, Buffer.alloc(0)) : encodePacket(0xc0, Buffer.alloc(0))
      case 8:
        return encodePacket(this.int(16) << 4, this.bytes(this.int(12)))
      default:
        return this.bytes(1 + this.int(24))
    }
  }

  mutate(packet: Buffer): Buffer {
    let bytes = Buffer.from(packet)
    for (let round = 1 + this.int(3); round > 0; round--) {
      const at = this.int(bytes.length + 1)
      switch (this.int(7)) {
        case 0: // flip one bit
          if (bytes.length > 0)
            bytes[at % bytes.length] = (bytes[at % bytes.length] ?? 0) ^ (1 << this.int(8))
          break
        case 1: // overwrite one byte
          if (bytes.length > 0) bytes[at % bytes.length] = this.int(256)
          break
        case 2: // truncate
          bytes = bytes.subarray(0, at)
          break
        case 3: // insert random bytes
          bytes = Buffer.concat([bytes.subarray(0, at), this.bytes(1 + this.int(8)), bytes.subarray(at)])
          break
        case 4: // delete a range
          bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1 + this.int(8))])
          break
        case 5: // insert a byte that is invalid in UTF-8, or U+0000
          bytes = Buffer.concat([
            bytes.subarray(0, at),
            Buffer.from([this.pick([0xc0, 0xed, 0xff, 0x00])]),
            bytes.subarray(at),
          ])
          break
        default: // replace the Remaining Length by a random one of one to five bytes
          if (bytes.length > 1) {
            const size = 1 + this.int(5)
            const length = Buffer.from(
              Array.from({ length: size }, (_, i) => (i < size - 1 ? 0x80 : 0) | this.int(128)),
            )
            bytes = Buffer.concat([bytes.subarray(0, 1), length, bytes.subarray(2)])
          }
      }
    }
    return bytes
  }

  /** What one fuzz connection writes: its CONNECT, then the rest, in chunks; and the packet count. */
  connection(): { connect: Buffer[]; answered: boolean; rest: Buffer[]; packets: number } {
    const mutated = this.chance(0.1)
    const connect = mutated ? this.mutate(this.connect()) : this.connect()
    const packets: Buffer[] = []
    for (let count = 1 + this.int(10); count > 0; count--) {
      const packet = this.packet()
      packets.push(this.chance(0.3) ? this.mutate(packet) : packet)
    }
    return {
      connect: this.chunks(connect),
      // A whole CONNECT gets an answer, a CONNACK or the close; a mutated one may wait for more bytes.
      answered: !mutated,
      rest: this.chunks(Buffer.concat(packets)),
      packets: packets.length + 1,
    }
  }

  chunks(stream: Buffer): Buffer[] {
    const chunks: Buffer[] = []
    for (let at = 0; at < stream.length; ) {
      const size = this.chance(0.5) ? 1 + this.int(8) : 1 + this.int(256)
      chunks.push(stream.subarray(at, at + size))
      at += size
    }
    return chunks
  }
}

/**
 * Writes a fuzz connection's CONNECT, waits for the server's answer if one is due (a CONNACK or the
 * close), writes the rest, ends the connection, and resolves once it is closed.
 */
async function fuzzConnection(
  port: number,
  plan: { connect: Buffer[]; answered: boolean; rest: Buffer[] },
): Promise<void> {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => {}) // resets are expected: the server closes on the first violation
  const answered = new Promise<void>((resolve) => {
    socket.once('data', () => resolve())
    socket.once('close', () => resolve())
  })
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  for (const chunk of plan.connect) socket.write(chunk)
  if (plan.answered) await answered
  for (const chunk of plan.rest) socket.write(chunk)
  socket.end()
  await closed
}

describe('installPacketGuard() under fuzzing', () => {
  test('random and mutated packets never crash the broker nor starve a well-behaved client', async () => {
    const uncaught: unknown[] = []
    const onUncaught = (error: unknown) => uncaught.push(error)
    process.on('uncaughtException', onUncaught)
    process.on('unhandledRejection', onUncaught)
    try {
      await using harness = await startBroker()
      let fuzzPublishes = 0
      harness.broker.on('publish', (_packet, client) => {
        if (client?.id.startsWith('fuzz-')) fuzzPublishes++
      })
      const health = await harness.mqtt('health-check-9f3c2a1b7d')
      await health.subscribeAsync('health/ping', { qos: 1 })
      const source = new FuzzSource(0x7a0e_2024)
      let packets = 0
      for (let round = 0; round < 30; round++) {
        // Generated before any I/O, so the sequence of bytes depends on the seed alone.
        const plans = Array.from({ length: 20 }, () => source.connection())
        for (const plan of plans) packets += plan.packets
        await Promise.all(plans.map((plan) => fuzzConnection(harness.port, plan)))
        // The well-behaved client still gets its own message through after every round.
        const echo = nextMessage(health, (_topic, payload) => payload.toString() === `round ${round}`)
        await health.publishAsync('health/ping', `round ${round}`, { qos: 1 })
        await echo
      }
      expect(packets).toBeGreaterThanOrEqual(3000)
      // The fuzz reached both sides of the guard: rejections and packets that aedes acted on.
      expect(harness.violations.length).toBeGreaterThan(100)
      expect(fuzzPublishes).toBeGreaterThan(100)
      expect(health.connected).toBe(true)
    } finally {
      process.off('uncaughtException', onUncaught)
      process.off('unhandledRejection', onUncaught)
    }
    expect(uncaught).toEqual([])
  })
})
