import { once } from 'node:events'
import { rmSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { afterEach, beforeAll, expect, test } from 'vitest'
import { CELL_TYPES, createRecordPacker, decodeAcks } from '../../sync/cell-codec.ts'
import { createCellSession } from '../../sync/cell-session.ts'
import {
  type CloudStore,
  createReceiver,
  createSqliteCloudStore,
  encodeKey,
  type Receiver,
  type ReceiverEvent,
  type ReceiverOptions,
} from '../../sync/index.ts'
import { createInitiator, generateKeyPair, type KeyPair, sodiumReady } from '../../sync/noise-ik.ts'
import { encodeRecordContent } from '../../sync/uplink-record.ts'
import { checkMessage2Payload, createUnitReader, encodeMessage1Payload, prologueOf } from '../../sync/wire.ts'
import { until } from '../helpers/gateway.ts'
import { tempDir } from '../helpers/temp.ts'

const CELL = 512
const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})
beforeAll(() => sodiumReady())

interface Cloud {
  receiver: Receiver
  store: CloudStore
  identity: KeyPair
  events: ReceiverEvent[]
}

async function startCloud(options: Partial<ReceiverOptions> = {}): Promise<Cloud> {
  const dir = tempDir()
  const identity = generateKeyPair()
  const store = await createSqliteCloudStore({ file: join(dir, 'cloud.db') })
  const events: ReceiverEvent[] = []
  const receiver = await createReceiver({
    store,
    identity,
    port: 0,
    cellBytes: CELL,
    schedule: { mode: 'clock', intervalMs: 10, poisson: false },
    handshakeTimeoutMs: 2000,
    onEvent: (event) => events.push(event),
    ...options,
  })
  cleanups.push(async () => {
    await receiver.close()
    await store.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return { receiver, store, identity, events }
}

/** A raw connection to the receiver: what it got back, and whether it closed. */
function open(port: number) {
  const socket = connect({ host: '127.0.0.1', port })
  const received: Buffer[] = []
  socket.on('data', (chunk: Buffer) => received.push(chunk))
  socket.on('error', () => {})
  const closed = once(socket, 'close')
  cleanups.push(() => {
    socket.destroy()
  })
  return { socket, received, closed, bytes: () => received.reduce((sum, chunk) => sum + chunk.length, 0) }
}

/** Message 1 of a gateway with `keys`, for the cloud's key. */
function message1(keys: KeyPair, cloudKey: Uint8Array, stampNs: bigint) {
  const initiator = createInitiator({
    staticKeyPair: keys,
    remoteStaticKey: cloudKey,
    prologue: prologueOf(CELL),
  })
  return { initiator, message: initiator.writeMessage1(encodeMessage1Payload(stampNs, CELL)) }
}

/** A gateway's whole handshake; resolves with the session once the cloud's header arrived. */
async function session(port: number, keys: KeyPair, cloudKey: Uint8Array, stampNs: bigint) {
  const link = open(port)
  const { initiator, message } = message1(keys, cloudKey, stampNs)
  await once(link.socket, 'connect')
  link.socket.write(message)
  const reader = createUnitReader(CELL)
  const units: Uint8Array[] = []
  link.socket.on('data', (chunk: Buffer) => units.push(...reader.push(chunk)))
  await until(() => units.length >= 2, 'the reply and the header')
  checkMessage2Payload(initiator.readMessage2(units.shift() as Uint8Array), CELL)
  const result = initiator.result()
  const cells = createCellSession({ sendKey: result.sendKey, receiveKey: result.receiveKey, cellBytes: CELL })
  cells.acceptHeaderUnit(units.shift() as Uint8Array)
  link.socket.write(cells.headerUnit)
  const acked = () =>
    units.flatMap((unit) => {
      const cell = cells.open(unit)
      units.length = 0
      return cell.type === CELL_TYPES.ACK ? decodeAcks(cell.body) : []
    })
  return { ...link, cells, units, acked }
}

function dataCells(plaintextBytes: number, records: Array<{ seq: number; body: Uint8Array }>): Uint8Array[] {
  const packer = createRecordPacker({ plaintextBytes, maxQueuedBytes: 1 << 20 })
  for (const record of records) packer.push(record.seq, record.body)
  const cells: Uint8Array[] = []
  for (let cell = packer.nextCell(); cell !== undefined; cell = packer.nextCell()) cells.push(cell)
  return cells
}

const record = (seq: number, n: number) => ({
  seq,
  body: encodeRecordContent({
    tenant: 'acme',
    function: 'f',
    stream: 's',
    createdAt: 1_700_000_000_000,
    record: { n },
  }),
})

const NOW_NS = BigInt(Date.now()) * 1_000_000n

test('a registered gateway stores records once, even sent twice, and hears them acknowledged', async () => {
  const cloud = await startCloud()
  const gateway = generateKeyPair()
  await cloud.store.addGateway('site-a', encodeKey(gateway.publicKey))
  const link = await session(cloud.receiver.port, gateway, cloud.identity.publicKey, NOW_NS)
  const records = [record(1, 10), record(2, 20), record(3, 30)]
  for (const cell of dataCells(link.cells.plaintextBytes, [
    ...records,
    ...records.map((r) => ({ ...r, seq: r.seq + 10 })),
  ]))
    link.socket.write(link.cells.sealPlaintext(cell))
  // The same seqs again (a resend after a lost ack) are acknowledged and not stored twice.
  for (const cell of dataCells(link.cells.plaintextBytes, records))
    link.socket.write(link.cells.sealPlaintext(cell))
  const acks: Array<[number, number]> = []
  await until(() => {
    acks.push(...link.acked())
    return acks.some(([from, to]) => from <= 11 && to >= 13)
  }, 'the acks')
  expect(await cloud.store.count({ gateway: 'site-a' })).toBe(6)
  expect(
    (await cloud.store.records({ gateway: 'site-a' })).map((r) => [r.seq, JSON.parse(r.body).n]),
  ).toEqual([
    [1, 10],
    [2, 20],
    [3, 30],
    [11, 10],
    [12, 20],
    [13, 30],
  ])
  // Every unit the cloud sent is one cell long.
  expect(link.bytes() % CELL).toBe(0)
})

test('an unknown gateway key gets no answer and the connection closes', async () => {
  const cloud = await startCloud()
  const link = open(cloud.receiver.port)
  link.socket.write(message1(generateKeyPair(), cloud.identity.publicKey, NOW_NS).message)
  await link.closed
  expect(link.bytes()).toBe(0)
  expect(cloud.events).toContainEqual(
    expect.objectContaining({ type: 'refused', reason: expect.stringMatching(/^unknown_peer/) }),
  )
})

test('a replayed first message is refused without an answer; an older timestamp too', async () => {
  const cloud = await startCloud()
  const gateway = generateKeyPair()
  await cloud.store.addGateway('site-a', encodeKey(gateway.publicKey))
  const { message } = message1(gateway, cloud.identity.publicKey, NOW_NS)
  const first = open(cloud.receiver.port)
  first.socket.write(message)
  await until(() => first.bytes() >= 2 * CELL, 'the reply')
  for (const replay of [message, message1(gateway, cloud.identity.publicKey, NOW_NS - 1n).message]) {
    const again = open(cloud.receiver.port)
    again.socket.write(replay)
    await again.closed
    expect(again.bytes()).toBe(0)
  }
  expect(
    cloud.events.filter((e) => e.type === 'refused').map((e) => (e as { reason: string }).reason),
  ).toEqual([expect.stringMatching(/^replayed_handshake/), expect.stringMatching(/^replayed_handshake/)])
})

test('a forged first message, a cell that fails authentication and a unit of the wrong size close the connection; nothing of them is stored', async () => {
  const cloud = await startCloud()
  const gateway = generateKeyPair()
  await cloud.store.addGateway('site-a', encodeKey(gateway.publicKey))
  // Random bytes instead of a handshake.
  const forged = open(cloud.receiver.port)
  forged.socket.write(Buffer.alloc(CELL, 7))
  await forged.closed
  expect(forged.bytes()).toBe(0)

  // A flipped bit in a data cell: the session closes and the record is not stored.
  const flipped = await session(cloud.receiver.port, gateway, cloud.identity.publicKey, NOW_NS)
  const [cell] = dataCells(flipped.cells.plaintextBytes, [record(1, 1)])
  const sealed = flipped.cells.sealPlaintext(cell as Uint8Array)
  sealed[100] = (sealed[100] as number) ^ 1
  flipped.socket.write(sealed)
  await flipped.closed

  // A unit 24 bytes short: the cells after it no longer line up and fail.
  const short = await session(cloud.receiver.port, gateway, cloud.identity.publicKey, NOW_NS + 1n)
  const cells = dataCells(short.cells.plaintextBytes, [record(2, 2)]).map((c) => short.cells.sealPlaintext(c))
  short.socket.write((cells[0] as Uint8Array).subarray(24))
  short.socket.write(short.cells.seal(CELL_TYPES.DUMMY, new Uint8Array(0)))
  await short.closed
  expect(await cloud.store.count({ gateway: 'site-a' })).toBe(0)
  expect(
    cloud.events.filter((e) => e.type === 'closed').map((e) => (e as { reason: string }).reason),
  ).toEqual([expect.stringMatching(/^bad_cell/), expect.stringMatching(/^bad_cell/)])
})

test('a record that is not what a gateway sends closes the session and its batch is not stored', async () => {
  const cloud = await startCloud()
  const gateway = generateKeyPair()
  await cloud.store.addGateway('site-a', encodeKey(gateway.publicKey))
  const link = await session(cloud.receiver.port, gateway, cloud.identity.publicKey, NOW_NS)
  const bad = { seq: 2, body: new TextEncoder().encode('{"tenant":"acme"}') }
  for (const cell of dataCells(link.cells.plaintextBytes, [record(1, 1), bad]))
    link.socket.write(link.cells.sealPlaintext(cell))
  await link.closed
  expect(await cloud.store.count({ gateway: 'site-a' })).toBe(0)
  expect(cloud.events).toContainEqual(
    expect.objectContaining({ type: 'closed', reason: expect.stringMatching(/^bad_record/) }),
  )
})

test('connections that send nothing take at most the handshake slots; a gateway still gets in once they are cut', async () => {
  const { receiver, store, identity, events } = await startCloud({
    maxHandshakes: 2,
    handshakeTimeoutMs: 300,
  })
  const gateway = generateKeyPair()
  await store.addGateway('site-a', encodeKey(gateway.publicKey))
  const idle = [open(receiver.port), open(receiver.port)]
  for (const link of idle) await once(link.socket, 'connect')
  await until(() => receiver.sessions === 2, 'the idle connections')
  const third = open(receiver.port)
  await third.closed
  expect(events).toContainEqual({
    type: 'refused',
    remote: expect.any(String),
    reason: 'too many handshakes at once',
  })
  // The idle ones are cut at the handshake deadline; then a gateway completes its handshake.
  for (const link of idle) await link.closed
  const link = await session(receiver.port, gateway, identity.publicKey, NOW_NS)
  expect(link.bytes()).toBeGreaterThanOrEqual(2 * CELL)
})
