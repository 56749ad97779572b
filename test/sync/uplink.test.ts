import { createServer } from 'node:net'
import { afterEach, expect, test } from 'vitest'
import {
  type CloudStore,
  createPostgresCloudStore,
  createReceiver,
  createSqliteCloudStore,
  createUplink,
  encodeKey,
  encodeRecordContent,
  type Receiver,
  type Uplink,
  type UplinkLogEvent,
  type UplinkOptions,
  type UplinkRecord,
} from '../../sync/index.ts'
import { generateKeyPair, type KeyPair, sodiumReady } from '../../sync/noise-ik.ts'
import { until } from '../helpers/gateway.ts'
import { startPostgres } from '../helpers/postgres.ts'
import { startTcpProxy } from '../helpers/tcp-proxy.ts'
import { tempDir } from '../helpers/temp.ts'

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** An outbox in memory: records in seq order, removed when delivered. */
function memorySource() {
  const records = new Map<number, UplinkRecord>()
  let next = 1
  return {
    records,
    add(count: number) {
      for (let i = 0; i < count; i++) {
        const seq = next++
        records.set(seq, {
          seq,
          body: encodeRecordContent({
            tenant: 'acme',
            function: 'f',
            stream: 's',
            createdAt: Date.now(),
            record: { seq },
          }),
        })
      }
    },
    read: (afterSeq: number, limit: number) =>
      [...records.values()].filter((record) => record.seq > afterSeq).slice(0, limit),
    delivered(seqs: number[]) {
      for (const seq of seqs) records.delete(seq)
    },
  }
}

async function cloud(
  port = 0,
): Promise<{ receiver: Receiver; store: CloudStore; identity: KeyPair; gateway: KeyPair }> {
  await sodiumReady()
  const identity = generateKeyPair()
  const gateway = generateKeyPair()
  const store = await createSqliteCloudStore({ file: `${tempDir()}/cloud.db` })
  await store.addGateway('gw', encodeKey(gateway.publicKey))
  const receiver = await createReceiver({
    store,
    identity,
    port,
    cellBytes: 512,
    schedule: { mode: 'clock', intervalMs: 10, poisson: false },
    // The receiver's stream rekeys too, many times in every test here.
    rekeyMs: 100,
  })
  cleanups.push(async () => {
    await receiver.close()
    await store.close()
  })
  return { receiver, store, identity, gateway }
}

function uplinkTo(
  port: number,
  keys: { identity: KeyPair; gateway: KeyPair },
  source: ReturnType<typeof memorySource>,
  options: Partial<UplinkOptions> = {},
): Uplink {
  const uplink = createUplink({
    source,
    cloud: { host: '127.0.0.1', port, publicKey: keys.identity.publicKey },
    identity: keys.gateway,
    cellBytes: 512,
    schedule: { mode: 'clock', intervalMs: 2 },
    pollMs: 20,
    backoff: { minMs: 20, maxMs: 100 },
    ...options,
  })
  cleanups.push(() => uplink.close())
  return uplink
}

test('sessions end and start again on schedule and streams rekey, and every record is stored once', async () => {
  const keys = await cloud()
  const source = memorySource()
  const uplink = uplinkTo(keys.receiver.port, keys, source, {
    rekeyMs: 50,
    sessionMs: 300,
    sessionJitter: 0.2,
  })
  for (let round = 0; round < 20; round++) {
    source.add(25)
    await new Promise((resolve) => setTimeout(resolve, 60))
  }
  await until(() => source.records.size === 0 && uplink.status().sessions >= 3, 'delivery across sessions')
  expect(await keys.store.count({ gateway: 'gw' })).toBe(500)
  const seqs = (await keys.store.records({ gateway: 'gw', limit: 1000 })).map((r) => r.seq)
  expect(new Set(seqs).size).toBe(500)
  await until(() => uplink.status().wire.cellsControl > 3, 'rekey and close cells')
  expect(uplink.status().delivered).toBe(500)
})

test('a gateway that starts before its receiver connects once the receiver is up, backing off meanwhile', async () => {
  // A port that nothing listens on yet.
  const probe = createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const port = (probe.address() as { port: number }).port
  await new Promise<void>((resolve) => probe.close(() => resolve()))
  const keys = { identity: generateKeyPair(), gateway: generateKeyPair() }
  await sodiumReady()
  const source = memorySource()
  source.add(10)
  const events: UplinkLogEvent[] = []
  const uplink = uplinkTo(port, keys, source, { onEvent: (event) => events.push(event) })
  await new Promise((resolve) => setTimeout(resolve, 300))
  expect(uplink.status().state).toBe('connecting')
  const store = await createSqliteCloudStore({ file: `${tempDir()}/cloud.db` })
  await store.addGateway('gw', encodeKey(keys.gateway.publicKey))
  const receiver = await createReceiver({ store, identity: keys.identity, port, cellBytes: 512 })
  cleanups.push(async () => {
    await receiver.close()
    await store.close()
  })
  await until(() => source.records.size === 0, 'delivery once the receiver is up')
  expect(events.filter((event) => event.type === 'connected')).toHaveLength(1)
})

test('a backlog past the alarm bound raises the alarm and the rate stays as configured', async () => {
  const keys = await cloud()
  const source = memorySource()
  const events: UplinkLogEvent[] = []
  const uplink = uplinkTo(keys.receiver.port, keys, source, {
    schedule: { mode: 'epoch', epochMs: 100, cellsPerEpoch: 1 },
    alarmCells: 3,
    onEvent: (event) => events.push(event),
  })
  await until(() => uplink.status().state === 'connected', 'the session')
  source.add(200)
  await until(() => uplink.status().alarm, 'the alarm')
  expect(events).toContainEqual(expect.objectContaining({ type: 'alarm' }))
  // The worker reports its counters once a second: compare two reports two apart.
  const nextReport = async () => {
    const last = uplink.status().wire
    await until(() => uplink.status().wire !== last, 'a report of the counters', 3000)
    const { cellsData, cellsDummy, cellsControl } = uplink.status().wire
    return cellsData + cellsDummy + cellsControl
  }
  const before = await nextReport()
  await nextReport()
  const sent = (await nextReport()) - before
  // One cell every 100 ms whatever waits: about 20 in 2 s, never a burst to drain the backlog.
  expect(sent).toBeGreaterThanOrEqual(16)
  expect(sent).toBeLessThanOrEqual(24)
})

test('a schedule the shaper refuses is refused when the uplink is made', async () => {
  await sodiumReady()
  expect(() =>
    createUplink({
      source: memorySource(),
      cloud: { host: '127.0.0.1', port: 1, publicKey: generateKeyPair().publicKey },
      identity: generateKeyPair(),
      schedule: { mode: 'tiered', epochMs: 300, tiers: [1, 4], dwellMs: 1000 },
    }),
  ).toThrow(/dwellMs is not a multiple of epochMs/)
})

test('with the shaper off, cells go only when records wait: no cover cells', async () => {
  const keys = await cloud()
  const source = memorySource()
  const uplink = uplinkTo(keys.receiver.port, keys, source, { schedule: { mode: 'off' } })
  await until(() => uplink.status().state === 'connected', 'the session')
  source.add(30)
  uplink.poke()
  await until(() => source.records.size === 0, 'delivery')
  const last = uplink.status().wire
  await until(() => uplink.status().wire !== last, 'a report of the counters', 3000)
  expect(uplink.status().wire).toMatchObject({ cellsDummy: 0 })
  expect(uplink.status().wire.cellsData).toBeGreaterThan(0)
})

test('receivers sharing one PostgreSQL store each record once while the gateway moves between them', async () => {
  await using postgres = await startPostgres()
  await sodiumReady()
  const identity = generateKeyPair()
  const gateway = generateKeyPair()
  // Two receivers, as behind a load balancer: one store each, one database.
  const stores = [
    await createPostgresCloudStore({ url: postgres.url }),
    await createPostgresCloudStore({ url: postgres.url }),
  ]
  await (stores[0] as CloudStore).addGateway('gw', encodeKey(gateway.publicKey))
  const receivers = await Promise.all(
    stores.map((store) =>
      createReceiver({
        store,
        identity,
        port: 0,
        cellBytes: 512,
        schedule: { mode: 'clock', intervalMs: 10, poisson: false },
      }),
    ),
  )
  cleanups.push(async () => {
    for (const receiver of receivers) await receiver.close()
    for (const store of stores) await store.close()
  })
  const proxy = await startTcpProxy((receivers[0] as Receiver).port)
  cleanups.push(() => proxy.close())
  const source = memorySource()
  const uplink = uplinkTo(proxy.port, { identity, gateway }, source)
  await until(() => uplink.status().state === 'connected', 'the first session')
  for (let round = 0; round < 6; round++) {
    source.add(40)
    uplink.poke()
    await new Promise((resolve) => setTimeout(resolve, 50))
    // Every other round the link drops mid-stream and comes back to the other receiver.
    if (round % 2 === 1) {
      const sessions = uplink.status().sessions
      proxy.retarget((receivers[(round + 1) % 2] as Receiver).port)
      proxy.cut()
      proxy.restore()
      await until(() => uplink.status().sessions > sessions, 'a session with the other receiver')
    }
  }
  await until(() => source.records.size === 0, 'delivery through both receivers', 20_000)
  expect(uplink.status().sessions).toBe(4)
  expect(await (stores[1] as CloudStore).count({ gateway: 'gw' })).toBe(240)
  const seqs = (await (stores[0] as CloudStore).records({ gateway: 'gw', limit: 1000 })).map((r) => r.seq)
  expect(seqs.sort((a, b) => a - b)).toEqual(Array.from({ length: 240 }, (_, i) => i + 1))
}, 60_000)
