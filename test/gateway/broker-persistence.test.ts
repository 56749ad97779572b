import {
  deepEqual,
  deepStrictEqual,
  doesNotMatch,
  doesNotReject,
  doesNotThrow,
  equal,
  fail,
  ifError,
  match,
  notDeepEqual,
  notDeepStrictEqual,
  notEqual,
  notStrictEqual,
  ok,
  rejects,
  strictEqual,
  throws,
} from 'node:assert'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { type AddressInfo, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import Database from 'better-sqlite3'
import {
  connect,
  connectAsync,
  type IClientOptions,
  type IConnackPacket,
  type IPublishPacket,
  type MqttClient,
} from 'mqtt'
import { expect, onTestFinished, test } from 'vitest'
import {
  createSqlitePersistence,
  migrateBrokerPersistence,
  type PersistedPacket,
  type PersistenceBroker,
  type SqlitePersistence,
  type SqlitePersistenceOptions,
} from '../../gateway/broker-persistence.ts'
import { GatewayError } from '../../gateway/errors.ts'

const require = createRequire(import.meta.url)

// ---------------------------------------------------------------------------------------------
// aedes-persistence's conformance suite, run under vitest.
//
// abstract.js is written for node:test: it calls `test(name, fn)` and uses `t.plan`, `t.assert.*`
// and `t.diagnostic`. The adapter registers each call as a vitest test and gives `fn` that `t`:
// `t.assert` is node:assert's functions as node:test exposes them (the loose ones, as node:test
// does: the suite compares `structuredClone`d packets, whose Buffers become Uint8Arrays, with
// Buffers, which only loose deepEqual accepts), counted, and `t.plan(n)` fails the test unless
// exactly n assertions ran. Any other use of `t` is a TypeError, so nothing is silently skipped.
// ---------------------------------------------------------------------------------------------

// The functions node:test puts on `t.assert`: node:assert's, not node:assert/strict's.
const NODE_TEST_ASSERTIONS = {
  deepEqual,
  deepStrictEqual,
  doesNotMatch,
  doesNotReject,
  doesNotThrow,
  equal,
  fail,
  ifError,
  match,
  notDeepEqual,
  notDeepStrictEqual,
  notEqual,
  notStrictEqual,
  ok,
  rejects,
  strictEqual,
  throws,
}

interface _NodeTestContext {
  assert: typeof NODE_TEST_ASSERTIONS
  plan(count: number): void
  diagnostic(message: string): void
}

const abstractTestNames: string[] = []

function _nodeTest(name: string, fn: (t: _NodeTestContext) => unknown): void {
  abstractTestNames.push(name)
  test(`aedes-persistence: ${name}`, async () => {
    let planned: number | undefined
    let asserted = 0
    const counted: Record<string, unknown> = {}
    for (const [method, original] of Object.entries(NODE_TEST_ASSERTIONS)) {
      counted[method] = (...args: unknown[]) => {
        asserted++
        return (original as (...args: unknown[]) => unknown)(...args)
      }
    }
    const t: _NodeTestContext = {
      assert: counted as typeof NODE_TEST_ASSERTIONS,
      plan: (count) => {
        planned = count
      },
      // Progress notes ("instance created"); a failure's stack says more.
      diagnostic: () => {},
    }
    await fn(t)
    if (planned !== undefined) {
      strictEqual(asserted, planned, `the test planned ${planned} assertions but ran ${asserted}`)
    }
  })
}

const abstractPersistence = require('aedes-persistence/abstract.js') as (options: {
  test: typeof _nodeTest
  persistence: () => SqlitePersistence
  testAsync: boolean
}) => void

abstractPersistence({
  test: _nodeTest,
  // A fresh SQLite file per instance; the suite destroys the persistence, the test closes the file.
  persistence: () => createSqlitePersistence({ db: _openDatabase(join(_tempDir(), 'broker.db')) }),
  testAsync: true,
})

test('the adapter registered every test of the aedes-persistence suite', () => {
  const source = readFileSync(require.resolve('aedes-persistence/abstract.js'), 'utf8')
  const declared = source.match(/^\s*test\(/gm)?.length ?? 0
  expect(declared).toBeGreaterThanOrEqual(50)
  expect(abstractTestNames).toHaveLength(declared)
  expect(new Set(abstractTestNames).size).toBe(declared)
})

// ---------------------------------------------------------------------------------------------
// What the suite cannot check: restarts, the tenant wipe, the queue bound, the lifecycle.
// ---------------------------------------------------------------------------------------------

const CLIENT = { id: 't1/sensor' }

function _tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'taureau-broker-persistence-'))
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Opens a database file as the gateway does (WAL); closed when the test ends, if still open. */
function _openDatabase(file: string): Database.Database {
  const db = new Database(file)
  db.pragma('journal_mode = WAL')
  onTestFinished(() => {
    if (db.open) db.close()
  })
  return db
}

/** A database and a set-up persistence over it; disposing destroys the persistence, then closes the file. */
async function _open(
  file: string,
  broker: PersistenceBroker,
  options: Omit<SqlitePersistenceOptions, 'db'> = {},
): Promise<{ db: Database.Database; persistence: SqlitePersistence } & AsyncDisposable> {
  const db = _openDatabase(file)
  const persistence = createSqlitePersistence({ ...options, db })
  await persistence.setup(broker)
  return {
    db,
    persistence,
    async [Symbol.asyncDispose]() {
      await persistence.destroy()
      db.close()
    },
  }
}

async function _collect(stream: Readable): Promise<PersistedPacket[]> {
  const items: PersistedPacket[] = []
  for await (const item of stream) items.push(item as PersistedPacket)
  return items
}

function _publish(
  topic: string,
  payload: string,
  brokerCounter: number,
  brokerId = 'broker-1',
): PersistedPacket {
  return {
    cmd: 'publish',
    topic,
    payload: Buffer.from(payload),
    qos: 1,
    retain: false,
    dup: false,
    brokerId,
    brokerCounter,
  }
}

test('retained messages, a persistent session with its queue, incoming QoS 2 packets and wills survive reopening the database', async () => {
  const file = join(_tempDir(), 'broker.db')
  {
    await using first = await _open(file, { id: 'broker-1', counter: 0 })
    const p = first.persistence
    await p.storeRetained({ ..._publish('t1/state', 'on', 1), retain: true })
    await p.addSubscriptions(CLIENT, [
      { topic: 't1/data', qos: 1 },
      { topic: 't1/cmd/#', qos: 2 },
      { topic: 't1/log', qos: 0 },
    ])
    const subs = await p.subscriptionsByTopic('t1/data')
    await p.outgoingEnqueueCombi(subs, _publish('t1/data', 'first', 2))
    await p.outgoingEnqueueCombi(subs, _publish('t1/data', 'second', 3))
    // The first one is in flight: aedes gave it messageId 7 before writing it.
    await p.outgoingUpdate(CLIENT, { ..._publish('t1/data', 'first', 2), messageId: 7 })
    // As parsed from the device's PUBLISH: no broker id or counter yet.
    await p.incomingStorePacket(CLIENT, {
      cmd: 'publish',
      topic: 't1/up',
      payload: Buffer.from('qos2'),
      qos: 2,
      messageId: 9,
    })
    await p.putWill(CLIENT, { topic: 't1/status', payload: Buffer.from('offline'), qos: 1, retain: true })
  }

  await using second = await _open(file, { id: 'broker-2', counter: 0 })
  const p = second.persistence
  expect(await _collect(p.createRetainedStream('t1/#'))).toStrictEqual([
    { ..._publish('t1/state', 'on', 1), retain: true },
  ])
  expect(await p.subscriptionsByClient(CLIENT)).toStrictEqual([
    { topic: 't1/data', qos: 1, rh: undefined, rap: undefined, nl: undefined },
    { topic: 't1/cmd/#', qos: 2, rh: undefined, rap: undefined, nl: undefined },
    { topic: 't1/log', qos: 0, rh: undefined, rap: undefined, nl: undefined },
  ])
  expect(await p.subscriptionsByTopic('t1/cmd/reboot')).toStrictEqual([
    { clientId: CLIENT.id, topic: 't1/cmd/#', qos: 2, rh: undefined, rap: undefined, nl: undefined },
  ])
  expect(await p.subscriptionsByTopic('t1/log')).toStrictEqual([])
  expect(await p.countOffline()).toStrictEqual({ subsCount: 2, clientsCount: 1 })

  const queued = await _collect(p.outgoingStream(CLIENT))
  expect(queued).toStrictEqual([
    { ..._publish('t1/data', 'first', 2), messageId: 7 },
    { ..._publish('t1/data', 'second', 3), messageId: undefined },
  ])
  expect(await p.outgoingClearMessageId(CLIENT, { messageId: 7 })).toStrictEqual(queued[0])
  expect(await _collect(p.outgoingStream(CLIENT))).toStrictEqual([queued[1]])

  expect(await p.incomingGetPacket(CLIENT, { messageId: 9 })).toStrictEqual({
    cmd: 'publish',
    topic: 't1/up',
    payload: Buffer.from('qos2'),
    qos: 2,
    retain: false,
    dup: false,
    brokerId: undefined,
    brokerCounter: 0,
    messageId: 9,
  })

  const will = {
    topic: 't1/status',
    payload: Buffer.from('offline'),
    qos: 1,
    retain: true,
    brokerId: 'broker-1',
    clientId: CLIENT.id,
  }
  expect(await p.getWill(CLIENT)).toStrictEqual(will)
  // The will of the broker that ran before the restart is streamed, so aedes publishes it.
  expect(await _collect(p.streamWill({ 'broker-2': Date.now() }))).toStrictEqual([will])
})

test('a queued PUBREL that replaced its PUBLISH survives reopening the database', async () => {
  const file = join(_tempDir(), 'broker.db')
  {
    await using first = await _open(file, { id: 'broker-1', counter: 0 })
    const p = first.persistence
    await p.outgoingEnqueue({ clientId: CLIENT.id }, { ..._publish('t1/data', 'x', 1), qos: 2 })
    await p.outgoingUpdate(CLIENT, { ..._publish('t1/data', 'x', 1), qos: 2, messageId: 3 })
    await p.outgoingUpdate(CLIENT, { cmd: 'pubrel', messageId: 3 })
  }
  await using second = await _open(file, { id: 'broker-2', counter: 0 })
  expect(await _collect(second.persistence.outgoingStream(CLIENT))).toStrictEqual([
    { cmd: 'pubrel', messageId: 3 },
  ])
  expect(
    await second.persistence.outgoingClearMessageId(CLIENT, { cmd: 'pubcomp', messageId: 3 }),
  ).toStrictEqual({
    cmd: 'pubrel',
    messageId: 3,
  })
})

test('setup() moves the broker counter past the counters queued under the same broker id', async () => {
  const file = join(_tempDir(), 'broker.db')
  {
    await using first = await _open(file, { id: 'broker-1', counter: 0 })
    await first.persistence.outgoingEnqueue({ clientId: CLIENT.id }, _publish('t1/data', 'old', 41))
  }
  // Without it a restarted broker with a fixed id would number a new message 41 as well, and the
  // queue, keyed by (client, broker id, counter), would take it for the old one.
  const sameId = { id: 'broker-1', counter: 0 }
  await using second = await _open(file, sameId)
  expect(sameId.counter).toBe(41)
  const otherId = { id: 'broker-2', counter: 0 }
  await second.persistence.setup(otherId)
  expect(otherId.counter).toBe(0)
})

test('a message that matches two subscriptions of one client is queued once', async () => {
  await using opened = await _open(join(_tempDir(), 'broker.db'), { id: 'broker-1', counter: 0 })
  const p = opened.persistence
  await p.addSubscriptions(CLIENT, [
    { topic: 't1/data', qos: 1 },
    { topic: 't1/#', qos: 1 },
  ])
  const subs = await p.subscriptionsByTopic('t1/data')
  expect(subs).toHaveLength(2)
  await p.outgoingEnqueueCombi(subs, _publish('t1/data', 'once', 1))
  expect(await _collect(p.outgoingStream(CLIENT))).toHaveLength(1)
})

test('subscriptionsByTopic() answers from memory, without reading SQLite', async () => {
  await using opened = await _open(join(_tempDir(), 'broker.db'), { id: 'broker-1', counter: 0 })
  await opened.persistence.addSubscriptions(CLIENT, [{ topic: 't1/+', qos: 1 }])
  opened.db.exec('DELETE FROM mqtt_subscriptions')
  expect(await opened.persistence.subscriptionsByTopic('t1/data')).toHaveLength(1)
})

test('createRetainedStreamCombi() matches stored topics by pattern, across pages and beyond U+FFFF', async () => {
  await using opened = await _open(join(_tempDir(), 'broker.db'), { id: 'broker-1', counter: 0 })
  const p = opened.persistence
  const topics = ['a', 'a/b', 'a/b/c', 'a/bc', 'a0', 'ab/c', 'b/b', 'é/x', '\u{1F600}/y', '\uFFFD/z']
  for (const topic of topics) await p.storeRetained({ ..._publish(topic, topic, 1), retain: true })
  // More rows than one page, so the keyset paging runs.
  for (let i = 0; i < 600; i++) await p.storeRetained({ ..._publish(`many/${i}`, 'x', 1), retain: true })

  const matching = async (...patterns: string[]): Promise<string[]> =>
    (await _collect(p.createRetainedStreamCombi(patterns))).map((packet) => packet.topic ?? '')
  expect(await matching('a/b')).toStrictEqual(['a/b'])
  expect(await matching('a/b/#')).toStrictEqual(['a/b', 'a/b/c'])
  expect(await matching('a/+')).toStrictEqual(['a/b', 'a/bc'])
  expect(await matching('+/b')).toStrictEqual(['a/b', 'b/b'])
  expect(await matching('é/#', '\u{1F600}/+', '\uFFFD/z')).toStrictEqual(['é/x', '\u{1F600}/y', '\uFFFD/z'])
  expect(await matching('a/b', 'a/+')).toStrictEqual(['a/b', 'a/b', 'a/bc'])
  expect(await matching('many/#')).toHaveLength(600)
  expect(await matching('#')).toHaveLength(600 + topics.length)
})

test('outgoingStream() streams a long queue in order, without messages queued after it was opened', async () => {
  await using opened = await _open(join(_tempDir(), 'broker.db'), { id: 'broker-1', counter: 0 })
  const p = opened.persistence
  for (let i = 1; i <= 600; i++)
    await p.outgoingEnqueue({ clientId: CLIENT.id }, _publish('t1/data', `${i}`, i))
  const stream = p.outgoingStream(CLIENT)
  await p.outgoingEnqueue({ clientId: CLIENT.id }, _publish('t1/data', 'late', 601))
  const counters = (await _collect(stream)).map((packet) => packet.brokerCounter)
  expect(counters).toStrictEqual(Array.from({ length: 600 }, (_, i) => i + 1))
})

test('deleteClientsWithPrefix() erases the sessions and retained messages of one tenant only', async () => {
  const file = join(_tempDir(), 'broker.db')
  const doomed = [{ id: 't1/a' }, { id: 't1/b' }]
  const kept = [{ id: 't10/a' }, { id: 'T1/a' }, { id: 't1' }, { id: 't2/x' }]
  const retainedKept = ['t10/x', 'T1/x', 't1', 't2/t1/x']
  {
    await using opened = await _open(file, { id: 'broker-1', counter: 0 })
    const p = opened.persistence
    let counter = 0
    for (const client of [...doomed, ...kept]) {
      await p.addSubscriptions(client, [{ topic: `${client.id}/in`, qos: 1 }])
      await p.outgoingEnqueue({ clientId: client.id }, _publish(`${client.id}/in`, 'q', ++counter))
      await p.incomingStorePacket(client, { ..._publish(`${client.id}/out`, 'i', 0), qos: 2, messageId: 1 })
      await p.putWill(client, {
        topic: `${client.id}/will`,
        payload: Buffer.from('w'),
        qos: 0,
        retain: false,
      })
    }
    for (const topic of ['t1/x', 't1/y/z', ...retainedKept]) {
      await p.storeRetained({ ..._publish(topic, 'r', ++counter), retain: true })
    }

    p.deleteClientsWithPrefix('t1/')

    const check = async (): Promise<void> => {
      for (const client of doomed) {
        expect(await p.subscriptionsByClient(client)).toStrictEqual([])
        expect(await p.subscriptionsByTopic(`${client.id}/in`)).toStrictEqual([])
        expect(await _collect(p.outgoingStream(client))).toStrictEqual([])
        await expect(p.incomingGetPacket(client, { messageId: 1 })).rejects.toThrow(GatewayError)
        expect(await p.getWill(client)).toBeUndefined()
      }
      for (const client of kept) {
        expect(await p.subscriptionsByClient(client)).toHaveLength(1)
        expect(await p.subscriptionsByTopic(`${client.id}/in`)).toHaveLength(1)
        expect(await _collect(p.outgoingStream(client))).toHaveLength(1)
        expect((await p.incomingGetPacket(client, { messageId: 1 })).messageId).toBe(1)
        expect(await p.getWill(client)).toBeDefined()
      }
      expect(await p.countOffline()).toStrictEqual({ subsCount: kept.length, clientsCount: kept.length })
      const retained = (await _collect(p.createRetainedStream('#'))).map((packet) => packet.topic)
      expect(retained.sort()).toStrictEqual([...retainedKept].sort())
    }
    await check()
    expect(() => p.deleteClientsWithPrefix('')).toThrow(TypeError)
  }
  // Gone from the file too, not just from memory.
  await using reopened = await _open(file, { id: 'broker-2', counter: 0 })
  for (const table of ['mqtt_subscriptions', 'mqtt_outgoing', 'mqtt_incoming', 'mqtt_wills']) {
    const rows = reopened.db
      .prepare(`SELECT COUNT(*) AS n FROM ${table} WHERE substr(client_id, 1, 3) = 't1/'`)
      .get()
    expect(rows).toStrictEqual({ n: 0 })
  }
  expect(await reopened.persistence.countOffline()).toStrictEqual({
    subsCount: kept.length,
    clientsCount: kept.length,
  })
  const retained = (await _collect(reopened.persistence.createRetainedStream('#'))).map(
    (packet) => packet.topic,
  )
  expect(retained.sort()).toStrictEqual([...retainedKept].sort())
})

test('at maxQueuedPerClient the oldest queued message of that client is dropped and counted, across a restart', async () => {
  const file = join(_tempDir(), 'broker.db')
  const other = { id: 't1/other' }
  const counters = async (p: SqlitePersistence, client: { id: string }): Promise<unknown[]> =>
    (await _collect(p.outgoingStream(client))).map((packet) => packet.brokerCounter)
  {
    await using opened = await _open(file, { id: 'broker-1', counter: 0 }, { maxQueuedPerClient: 3 })
    const p = opened.persistence
    for (let i = 1; i <= 5; i++)
      await p.outgoingEnqueueCombi([{ clientId: CLIENT.id }], _publish('t1/data', 'm', i))
    await p.outgoingEnqueue({ clientId: other.id }, _publish('t1/data', 'm', 6))
    expect(await counters(p, CLIENT)).toStrictEqual([3, 4, 5])
    expect(await counters(p, other)).toStrictEqual([6])
    expect(p.droppedQueued).toBe(2)
    // A cleared message makes room again.
    await p.outgoingUpdate(CLIENT, { ..._publish('t1/data', 'm', 3), messageId: 1 })
    await p.outgoingClearMessageId(CLIENT, { messageId: 1 })
    await p.outgoingEnqueue({ clientId: CLIENT.id }, _publish('t1/data', 'm', 7))
    expect(await counters(p, CLIENT)).toStrictEqual([4, 5, 7])
    expect(p.droppedQueued).toBe(2)
  }
  // The counts are read back from the file, so the bound holds after a restart.
  await using reopened = await _open(file, { id: 'broker-1', counter: 0 }, { maxQueuedPerClient: 3 })
  await reopened.persistence.outgoingEnqueue({ clientId: CLIENT.id }, _publish('t1/data', 'm', 8))
  expect(await counters(reopened.persistence, CLIENT)).toStrictEqual([5, 7, 8])
  expect(reopened.persistence.droppedQueued).toBe(1)
})

test('createSqlitePersistence() refuses a queue bound that is not a positive integer', () => {
  const db = _openDatabase(join(_tempDir(), 'broker.db'))
  for (const maxQueuedPerClient of [0, -1, 1.5, Number.NaN]) {
    expect(() => createSqlitePersistence({ db, maxQueuedPerClient })).toThrow(RangeError)
  }
})

test('migrateBrokerPersistence() can run again on a database that has the tables', () => {
  const db = _openDatabase(join(_tempDir(), 'broker.db'))
  migrateBrokerPersistence(db)
  migrateBrokerPersistence(db)
  const tables = db
    .prepare<[], { name: string }>("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
    .all()
    .map((row) => row.name)
  expect(tables).toStrictEqual([
    'mqtt_incoming',
    'mqtt_outgoing',
    'mqtt_retained',
    'mqtt_subscriptions',
    'mqtt_wills',
  ])
})

test('destroy() leaves the database open, can be called twice, and later calls reject', async () => {
  const db = _openDatabase(join(_tempDir(), 'broker.db'))
  const persistence = createSqlitePersistence({ db })
  await persistence.setup({ id: 'broker-1', counter: 0 })
  await persistence.destroy()
  await persistence[Symbol.asyncDispose]()
  expect(db.open).toBe(true)
  await expect(persistence.storeRetained(_publish('t1/x', 'y', 1))).rejects.toThrow(
    'Cannot store a retained message as the broker persistence is destroyed',
  )
  await expect(_collect(persistence.outgoingStream(CLIENT))).rejects.toThrow(GatewayError)
  expect(() => persistence.deleteClientsWithPrefix('t1/')).toThrow(GatewayError)
})

// ---------------------------------------------------------------------------------------------
// A real aedes 1.2 broker and real mqtt.js clients, restarted over the same SQLite file.
// ---------------------------------------------------------------------------------------------

interface _RunningBroker extends AsyncDisposable {
  broker: import('aedes').Aedes
  persistence: SqlitePersistence
  url: string
}

async function _startBroker(file: string): Promise<_RunningBroker> {
  const db = _openDatabase(file)
  const persistence = createSqlitePersistence({ db })
  const { Aedes } = await import('aedes')
  const broker = await Aedes.createBroker({ persistence })
  const server = createServer(broker.handle)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    broker,
    persistence,
    url: `mqtt://127.0.0.1:${port}`,
    // Children before parents: the broker (and its clients), the listener, the persistence, the file.
    async [Symbol.asyncDispose]() {
      await new Promise<void>((resolve) => broker.close(() => resolve()))
      await new Promise<void>((resolve, reject) =>
        server.close((error) => (error ? reject(error) : resolve())),
      )
      await persistence.destroy()
      db.close()
    },
  }
}

/** Resolves when the broker has handled a PUBLISH on `topic`: stored, queued and delivered. */
function _published(broker: import('aedes').Aedes, topic: string): Promise<void> {
  return new Promise((resolve) => {
    const onPublish = (packet: { topic: string }): void => {
      if (packet.topic !== topic) return
      broker.off('publish', onPublish)
      resolve()
    }
    broker.on('publish', onPublish)
  })
}

/** The next message `client` receives. */
function _nextMessage(
  client: MqttClient,
): Promise<{ topic: string; payload: string; packet: IPublishPacket }> {
  return new Promise((resolve) => {
    client.once('message', (topic, payload, packet) =>
      resolve({ topic, payload: payload.toString(), packet }),
    )
  })
}

async function _connect(url: string, options: IClientOptions): Promise<MqttClient & AsyncDisposable> {
  const client = await connectAsync(url, { reconnectPeriod: 0, ...options })
  return Object.assign(client, { [Symbol.asyncDispose]: () => client.endAsync() })
}

test('a real aedes broker restarted over the same file delivers the queued QoS 1 message and the retained one', async () => {
  const file = join(_tempDir(), 'broker.db')
  const options = { clientId: 't1/subscriber', clean: false }
  {
    await using first = await _startBroker(file)
    {
      await using subscriber = await _connect(first.url, options)
      await subscriber.subscribeAsync('t1/data', { qos: 1 })
    }
    await using publisher = await _connect(first.url, { clientId: 't1/publisher' })
    // aedes sends PUBACK before it queues the message, so wait for the broker, not the PUBACK.
    const queued = _published(first.broker, 't1/data')
    await publisher.publishAsync('t1/data', 'while you were away', { qos: 1 })
    await queued
    const retained = _published(first.broker, 't1/state')
    await publisher.publishAsync('t1/state', 'on', { qos: 1, retain: true })
    await retained
  }

  await using second = await _startBroker(file)
  const subscriber = connect(second.url, { ...options, reconnectPeriod: 0 })
  onTestFinished(() => subscriber.endAsync())
  // Listening before the CONNACK arrives: aedes sends the queue right after it.
  const message = _nextMessage(subscriber)
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    subscriber.once('connect', resolve)
    subscriber.once('error', reject)
  })
  expect(connack.sessionPresent).toBe(true)
  const acked = once(second.broker, 'ack')
  const { topic, payload, packet } = await message
  expect([topic, payload, packet.qos]).toStrictEqual(['t1/data', 'while you were away', 1])
  // mqtt.js acknowledged it, so the queue is empty again.
  await acked
  expect(await _collect(second.persistence.outgoingStream({ id: options.clientId }))).toStrictEqual([])
  await subscriber.endAsync()

  await using late = await _connect(second.url, { clientId: 't1/late' })
  const retained = _nextMessage(late)
  await late.subscribeAsync('t1/state', { qos: 1 })
  const { topic: retainedTopic, payload: retainedPayload, packet: retainedPacket } = await retained
  expect([retainedTopic, retainedPayload, retainedPacket.retain]).toStrictEqual(['t1/state', 'on', true])
})
