import { rmSync } from 'node:fs'
import { createServer } from 'node:net'
import mqtt, { type MqttClient } from 'mqtt'
import { describe, expect, test } from 'vitest'
import type { DeviceCredentials } from '../../firmware-sim/credentials.ts'
import { startFleet } from '../../firmware-sim/fleet.ts'
import { deviceIds, provisionDevices } from '../../firmware-sim/provision.ts'
import { decodeReading } from '../../firmware-sim/reading-codec.ts'
import { SENSOR_KINDS } from '../../firmware-sim/sensor-models.ts'
import { connect, startGateway, type TestGateway, tempDir, until } from '../helpers/gateway.ts'
import { startTcpProxy } from '../helpers/tcp-proxy.ts'

interface Received {
  topic: string
  payload: Buffer
  retain: boolean
  atMs: number
}

/** Every message a client receives, with its payload bytes. */
function record(client: MqttClient): Received[] {
  const received: Received[] = []
  client.on('message', (topic, payload, packet) =>
    received.push({ topic, payload, retain: packet.retain, atMs: Date.now() }),
  )
  return received
}

/** Tenant `acme` with a `watcher` device (a subscriber of the same tenant) and the fleet's devices. */
async function provisionAcme(gw: TestGateway, ids: string[]) {
  const secrets = await gw.provision('acme', ['watcher'])
  const devices = await provisionDevices({
    apiUrl: gw.addresses.httpUrl,
    token: gw.adminToken,
    tenant: 'acme',
    ids,
  })
  return { devices, watcherPassword: secrets.watcher as string }
}

/** `device/seq` of each reading a subscriber received on `sensors/DEVICE/KIND`. */
const readingKeys = (received: Received[]): string[] =>
  received
    .filter((message) => message.topic.startsWith('sensors/'))
    .map((message) => `${message.topic.split('/')[1]}/${JSON.parse(message.payload.toString()).seq}`)

/** The seqs received per device, sorted, without duplicates. */
function seqsByDevice(received: Received[]): Map<string, number[]> {
  const seqs = new Map<string, Set<number>>()
  for (const key of readingKeys(received)) {
    const [device, seq] = key.split('/') as [string, string]
    const set = seqs.get(device) ?? new Set()
    set.add(Number(seq))
    seqs.set(device, set)
  }
  return new Map([...seqs].map(([device, set]) => [device, [...set].sort((a, b) => a - b)]))
}

/** Seqs from 1 to the highest received that did not arrive. */
const missingSeqs = (seqs: number[]): number[] => {
  const present = new Set(seqs)
  return Array.from({ length: seqs.at(-1) ?? 0 }, (_, i) => i + 1).filter((seq) => !present.has(seq))
}

const statusOf = (received: Received[], device: string): string[] =>
  received
    .filter((message) => message.topic === `status/${device}`)
    .map((message) => message.payload.toString())

describe('startFleet()', () => {
  test('every device publishes each reading once to sensors/ID/KIND, in seq order, stamped by its own clock', async () => {
    await using gw = await startGateway()
    const { devices, watcherPassword } = await provisionAcme(gw, deviceIds(5))
    const watcher = await connect(gw.mqttUrl, { username: 'watcher@acme', password: watcherPassword })
    const received = record(watcher)
    await watcher.subscribeAsync(['sensors/#', 'status/#'], { qos: 1 })
    const acked: string[] = []
    const fleet = startFleet({
      url: gw.mqttUrl,
      devices,
      ratePerSec: 20,
      rampMs: 50,
      seed: 3,
      onAck: (ack) => acked.push(`${ack.device}/${ack.seq}`),
    })
    await until(() => fleet.stats().acked >= 100, '100 acked readings')
    const summary = await fleet.stop()
    await until(() => readingKeys(received).length >= acked.length, 'every acked reading at the watcher')

    expect(summary).toMatchObject({ devices: 5, connected: 0, dropped: 0, queued: 0, connectFailures: 0 })
    expect(summary.acked).toBe(summary.sent)
    expect(summary.acked).toBe(acked.length)
    expect(Object.keys(summary.perKind).sort()).toEqual([...SENSOR_KINDS].sort())
    for (const kind of SENSOR_KINDS) expect(summary.perKind[kind]?.devices).toBe(1)
    expect(summary.ackLatencyMs.p50).toBeGreaterThan(0)
    expect(summary.ackLatencyMs.max).toBeGreaterThanOrEqual(summary.ackLatencyMs.p99)
    expect(summary.ackLatencyMs.p99).toBeGreaterThanOrEqual(summary.ackLatencyMs.p50)

    // Each reading exactly once, seqs 1..n per device, on the device's kind's topic with its fields.
    expect(readingKeys(received).sort()).toEqual([...acked].sort())
    const fields: Record<string, string[]> = {
      temperature: ['c'],
      humidity: ['rh'],
      vibration: ['peak', 'rms'],
      power: ['w', 'wh'],
      gps: ['heading', 'lat', 'lon', 'speed'],
    }
    const offsets: number[] = []
    devices.forEach((device, index) => {
      const kind = SENSOR_KINDS[index] as string
      const readings = received
        .filter((message) => message.topic.startsWith(`sensors/${device.id}/`))
        .map((message) => ({
          topic: message.topic,
          atMs: message.atMs,
          ...JSON.parse(message.payload.toString()),
        }))
      expect(readings.every((reading) => reading.topic === `sensors/${device.id}/${kind}`)).toBe(true)
      expect(readings.map((reading) => reading.seq)).toEqual(readings.map((_, i) => i + 1))
      expect(Object.keys(readings[0]).sort()).toEqual(['atMs', 'seq', 'topic', 'ts', ...fields[kind]!].sort())
      // The device's clock: within the default ±2 s offset (plus 50 ppm and the delivery time).
      for (const reading of readings) expect(Math.abs(reading.ts - reading.atMs)).toBeLessThan(3000)
      offsets.push(readings[0].ts - readings[0].atMs)
      // Online while it ran, and a retained offline sent before its clean DISCONNECT.
      expect(statusOf(received, device.id)).toEqual(['online', 'offline'])
    })
    expect(Math.max(...offsets) - Math.min(...offsets)).toBeGreaterThan(100)
    const late = await connect(gw.mqttUrl, { username: 'watcher@acme', password: watcherPassword })
    const retained = record(late)
    await late.subscribeAsync('status/#', { qos: 1 })
    await until(() => retained.length === 5, 'five retained statuses')
    expect(retained.every((message) => message.retain && message.payload.toString() === 'offline')).toBe(true)
    await late.endAsync()
    await watcher.endAsync()
  })

  test('binary payloads at QoS 0 over WebSocket, in Poisson bursts, decode to their readings at the mean rate', async () => {
    await using gw = await startGateway()
    const { devices, watcherPassword } = await provisionAcme(gw, deviceIds(4))
    const watcher = await connect(gw.mqttUrl, { username: 'watcher@acme', password: watcherPassword })
    const received = record(watcher)
    await watcher.subscribeAsync('sensors/#', { qos: 0 })
    const fleet = startFleet({
      url: gw.wsUrl,
      devices,
      ratePerSec: 40,
      qos: 0,
      format: 'binary',
      burst: 5,
      arrivals: 'poisson',
      kinds: ['vibration', 'power'],
      anomalyRate: 0.2,
      rampMs: 20,
      durationMs: 2000,
    })
    const summary = await fleet.done
    await until(() => received.length >= summary.acked, 'every written reading at the watcher')
    expect(summary.acked).toBe(summary.sent)
    // 4 devices × 40/s × 2 s = 320 expected: Poisson bursts of 5 vary by about ±10 %.
    expect(summary.sent).toBeGreaterThan(200)
    expect(summary.sent).toBeLessThan(440)
    expect(summary.sent % 5).toBe(0)
    expect(summary.anomalies).toBeGreaterThan(0)
    expect(summary.anomalies).toBeLessThanOrEqual(summary.perKind.vibration!.sent)
    const readings = received.map((message) => ({ topic: message.topic, ...decodeReading(message.payload) }))
    expect(readings.every((reading) => reading.topic.endsWith(`/${reading.kind}`))).toBe(true)
    expect(new Set(readings.map((reading) => reading.kind))).toEqual(new Set(['vibration', 'power']))
    // A burst is five readings back to back: consecutive seqs within a few ms of device time.
    const first = readings.filter((reading) => reading.topic === `sensors/${devices[0]!.id}/vibration`)
    for (let i = 0; i + 5 <= first.length; i += 5) {
      expect(first[i + 4]!.seq - first[i]!.seq).toBe(4)
      expect(first[i + 4]!.ts - first[i]!.ts).toBeLessThan(20)
    }
    await watcher.endAsync()
  })

  test('a device whose connection is cut gets its will (retained offline), keeps the newest readings and resends them', async () => {
    await using gw = await startGateway()
    const proxy = await startTcpProxy(gw.addresses.mqttPort)
    try {
      const { devices, watcherPassword } = await provisionAcme(gw, deviceIds(3))
      const watcher = await connect(gw.mqttUrl, { username: 'watcher@acme', password: watcherPassword })
      const received = record(watcher)
      await watcher.subscribeAsync(['sensors/#', 'status/#'], { qos: 1 })
      const acked = new Set<string>()
      await using fleet = startFleet({
        url: `mqtt://127.0.0.1:${proxy.port}`,
        devices,
        ratePerSec: 20,
        rampMs: 30,
        offlineQueueLimit: 5,
        reconnect: { minMs: 50, maxMs: 200 },
        onAck: (ack) => acked.add(`${ack.device}/${ack.seq}`),
      })
      await until(() => fleet.stats().acked >= 30, '30 acked readings')
      proxy.cut()
      await until(
        () => devices.every((device) => statusOf(received, device.id).at(-1) === 'offline'),
        'the wills of the three devices',
      )
      const late = await connect(gw.mqttUrl, { username: 'watcher@acme', password: watcherPassword })
      const retained = record(late)
      await late.subscribeAsync('status/#', { qos: 1 })
      await until(() => retained.length === 3, 'three retained statuses')
      expect(retained.map((message) => [message.payload.toString(), message.retain])).toEqual([
        ['offline', true],
        ['offline', true],
        ['offline', true],
      ])
      await late.endAsync()
      // Offline, each device keeps its 5 newest readings and drops (and counts) the older ones.
      await until(() => fleet.stats().dropped >= 30, 'readings dropped from full queues')
      expect(fleet.stats()).toMatchObject({ connected: 0, queued: 15 })
      expect(fleet.stats().connectFailures).toBeGreaterThan(0)
      proxy.restore()
      await until(() => fleet.stats().connected === 3 && fleet.stats().queued === 0, 'the devices back')
      await until(
        () => devices.every((device) => statusOf(received, device.id).at(-1) === 'online'),
        'online again',
      )
      const summary = await fleet.stop()
      expect(summary.reconnects).toBe(3)
      await until(() => [...acked].every((key) => readingKeys(received).includes(key)), 'every acked reading')
      // What did not arrive is exactly what was dropped: per device one run of its oldest offline readings.
      let missingTotal = 0
      for (const [device, seqs] of seqsByDevice(received)) {
        const missing = missingSeqs(seqs)
        missingTotal += missing.length
        expect(missing.length, device).toBeGreaterThan(0)
        expect((missing.at(-1) as number) - (missing[0] as number) + 1, device).toBe(missing.length)
      }
      expect(missingTotal).toBe(summary.dropped)
      expect(summary.sent).toBe(summary.acked)
      await watcher.endAsync()
    } finally {
      await proxy.close()
    }
  })

  test('readings taken while the gateway restarts are sent after it and reach a persistent subscriber at least once', async () => {
    const dataDir = tempDir()
    let watcher: MqttClient | undefined
    try {
      let gw = await startGateway({}, dataDir)
      gw.keepData()
      const port = gw.addresses.mqttPort
      const { devices, watcherPassword } = await provisionAcme(gw, deviceIds(4))
      // A persistent session: what is published while it is away waits for it at the gateway.
      watcher = mqtt.connect(gw.mqttUrl, {
        username: 'watcher@acme',
        password: watcherPassword,
        clientId: 'watcher',
        clean: false,
        protocolVersion: 4,
        reconnectPeriod: 100,
      })
      const received = record(watcher)
      await until(() => watcher?.connected === true, 'the watcher connected')
      await watcher.subscribeAsync('sensors/#', { qos: 1 })
      const acked = new Set<string>()
      await using fleet = startFleet({
        url: gw.mqttUrl,
        devices,
        ratePerSec: 10,
        kinds: ['power', 'temperature'],
        rampMs: 20,
        reconnect: { minMs: 50, maxMs: 300 },
        onAck: (ack) => acked.add(`${ack.device}/${ack.seq}`),
      })
      await until(() => fleet.stats().acked >= 20, '20 acked readings')
      await gw.close()
      await until(() => fleet.stats().connected === 0, 'the fleet offline')
      await until(() => fleet.stats().queued >= 20, 'readings queued during the outage')
      gw = await startGateway({ mqtt: { port } }, dataDir)
      try {
        await until(
          () => fleet.stats().connected === 4 && fleet.stats().queued === 0,
          'the fleet back',
          10_000,
        )
        const summary = await fleet.stop()
        expect(summary).toMatchObject({ dropped: 0, queued: 0, reconnects: 4 })
        expect(summary.acked).toBe(summary.sent)
        expect(acked.size).toBe(summary.acked)
        await until(
          () => [...acked].every((key) => readingKeys(received).includes(key)),
          'every acked reading',
        )
      } finally {
        await gw.close()
      }
      // At least once: no reading is missing. Not exactly once: a reading the gateway had routed when
      // it stopped, but whose PUBACK was lost with the connection, is sent again by its device
      // (MQTT 3.1.1 QoS 1, [MQTT-4.3.2]); the broker does not remove duplicates at QoS 1.
      for (const [device, seqs] of seqsByDevice(received)) expect(missingSeqs(seqs), device).toEqual([])
      // The energy counter of the power meters never went back, across the outage either.
      for (const device of devices.filter((_, index) => index % 2 === 0)) {
        const wh = received
          .filter((message) => message.topic === `sensors/${device.id}/power`)
          .map((message) => JSON.parse(message.payload.toString()))
          .sort((a, b) => a.seq - b.seq)
          .map((reading) => reading.wh)
        expect(wh.length).toBeGreaterThan(5)
        expect(wh).toEqual([...wh].sort((a, b) => a - b))
      }
    } finally {
      await watcher?.endAsync(true)
      rmSync(dataDir, { recursive: true, force: true })
    }
  })

  test('connection attempts back off with jitter: refused CONNACKs and a closed port never loop tightly', async () => {
    await using gw = await startGateway()
    await gw.provision('acme', ['sim-0001'])
    const failures: string[] = []
    await using refused = startFleet({
      url: gw.mqttUrl,
      devices: [{ id: 'sim-0001', username: 'sim-0001@acme', password: 'wrong' }],
      ratePerSec: 10,
      offlineQueueLimit: 4,
      reconnect: { minMs: 50, maxMs: 200 },
      onConnectFailure: (failure) => failures.push(`${failure.device}: ${failure.reason}`),
    })
    await until(() => failures.length >= 2, 'two refusals')
    expect(failures[0]).toBe('sim-0001: Connection refused: Not authorized')

    const closedPort = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const address = server.address() as { port: number }
        server.close(() => resolve(address.port))
      })
    })
    const devices: DeviceCredentials[] = deviceIds(3).map((id) => ({
      id,
      username: `${id}@acme`,
      password: 'p',
    }))
    const unreachable = startFleet({
      url: `mqtt://127.0.0.1:${closedPort}`,
      devices,
      ratePerSec: 10,
      offlineQueueLimit: 4,
      reconnect: { minMs: 50, maxMs: 200 },
    })
    // 1.5 s of readings at 10/s: 15 per device, 4 kept.
    await until(() => unreachable.stats().dropped >= 3 * 11, 'a second and a half of readings', 5000)
    const stats = unreachable.stats()
    expect(stats).toMatchObject({ connected: 0, sent: 0, queued: 12 })
    // Backoff up to 200 ms with full jitter averages ~100 ms: about 15 attempts per device; a
    // reconnect loop without backoff would make thousands.
    expect(stats.connectFailures).toBeGreaterThanOrEqual(3 * 3)
    expect(stats.connectFailures).toBeLessThan(3 * 40)
    const summary = await unreachable.stop()
    expect(summary).toMatchObject({ sent: 0, acked: 0, queued: 12 })
    expect((await refused.stop()).connectFailures).toBe(failures.length)
  })

  test('impossible options are refused before anything connects', () => {
    const devices = [{ id: 'd1', username: 'd1@t', password: 'p' }]
    const base = { url: 'mqtt://127.0.0.1:1883', devices, ratePerSec: 1 }
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ url: 'http://x' }, /its url "http:\/\/x" is not an mqtt:\/\/, mqtts:\/\/, ws:\/\/ or wss:\/\/ URL/],
      [{ devices: [] }, /its devices \[\] is empty/],
      [{ devices: [devices[0], devices[0]] }, /device id "d1" appears twice/],
      [{ devices: [{ id: 'a/b', username: 'u', password: 'p' }] }, /device id "a\/b" is not/],
      [{ ratePerSec: 0 }, /ratePerSec 0 is not a number above 0/],
      [{ burst: 1.5 }, /burst 1.5 is not a whole number >= 1/],
      [{ kinds: ['pressure'] }, /kind "pressure" is not one of/],
      [{ qos: 2 }, /qos 2 is not 0 or 1/],
      [{ topicPrefix: 'a/#' }, /topicPrefix "a\/#" is not a topic/],
      [{ reconnect: { minMs: 500, maxMs: 100 } }, /reconnect.maxMs 100 is not a number >= 500/],
      [{ anomalyRate: -1 }, /anomalyRate -1 is not in \[0, 1\]/],
    ]
    for (const [override, message] of cases) {
      expect(() => startFleet({ ...base, ...override } as never), JSON.stringify(override)).toThrow(
        RangeError,
      )
      expect(() => startFleet({ ...base, ...override } as never)).toThrow(message)
    }
  })
})
