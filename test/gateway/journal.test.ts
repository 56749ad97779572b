import { join } from 'node:path'
import mqtt from 'mqtt'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { describe, expect, test } from 'vitest'
import { createJournal } from '../../gateway/journal.ts'
import { createStore } from '../../gateway/store.ts'
import { closed, connect, startGateway, tempDir, until } from '../helpers/gateway.ts'

const silent = pino({ level: 'silent' })

function openDb() {
  const store = createStore({ file: join(tempDir(), 'journal.db') })
  store.db.exec('CREATE TABLE t (n INTEGER NOT NULL)')
  return store
}

async function histogram(registry: Registry, name: string) {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name)
  const values = (metric?.values ?? []) as Array<{ metricName?: string; value: number }>
  return {
    count: values.find((v) => v.metricName === `${name}_count`)?.value ?? 0,
    sum: values.find((v) => v.metricName === `${name}_sum`)?.value ?? 0,
  }
}

describe('createJournal()', () => {
  test('writes queued in one turn share one commit; callbacks come after it, in queue order', async () => {
    using store = openDb()
    const registry = new Registry()
    const journal = createJournal({
      db: store.db,
      commitWindowMs: 0,
      maxBatch: 1000,
      logger: silent,
      registry,
    })
    const insert = store.db.prepare('INSERT INTO t (n) VALUES (?)')
    const order: number[] = []
    const rowsSeen: number[] = []
    for (let i = 0; i < 50; i++) {
      journal.write(
        () => insert.run(i),
        (error) => {
          expect(error).toBeNull()
          order.push(i)
          rowsSeen.push((store.db.prepare('SELECT COUNT(*) AS c FROM t').get() as { c: number }).c)
        },
      )
      // A place in the order only: done after the writes before it.
      if (i === 10) journal.write(null, () => order.push(-1))
    }
    expect(journal.pending).toBe(51)
    expect(order).toEqual([])
    await new Promise((resolve) => setImmediate(resolve))
    expect(order).toEqual([
      ...Array.from({ length: 11 }, (_, i) => i),
      -1,
      ...Array.from({ length: 39 }, (_, i) => i + 11),
    ])
    // Every callback saw all 50 rows: nothing is acknowledged before the whole group is durable.
    expect(new Set(rowsSeen)).toEqual(new Set([50]))
    expect(await histogram(registry, 'taureau_journal_commit_writes')).toEqual({ count: 1, sum: 50 })
    // With nothing queued, a place in the order is at once.
    let now = false
    journal.write(null, () => {
      now = true
    })
    expect(now).toBe(true)
  })

  test('a full group commits at once; a commit window holds the first write that long', async () => {
    using store = openDb()
    const journal = createJournal({ db: store.db, commitWindowMs: 30, maxBatch: 3, logger: silent })
    const insert = store.db.prepare('INSERT INTO t (n) VALUES (?)')
    const done: number[] = []
    const started = performance.now()
    for (let i = 0; i < 4; i++) {
      journal.write(
        () => insert.run(i),
        () => done.push(i),
      )
    }
    expect(done).toEqual([0, 1, 2])
    await until(() => done.length === 4, 'the windowed commit')
    // Timers may fire a millisecond early by this clock.
    expect(performance.now() - started).toBeGreaterThanOrEqual(28)
  })

  test('a write that fails keeps the writes before it and fails those after it; a store that refuses writes fails them all', async () => {
    using store = openDb()
    const journal = createJournal({ db: store.db, commitWindowMs: 0, maxBatch: 100, logger: silent })
    const insert = store.db.prepare('INSERT INTO t (n) VALUES (?)')
    const outcomes: Array<string | null> = []
    journal.write(
      () => insert.run(1),
      (error) => outcomes.push(error?.message ?? null),
    )
    journal.write(
      () => insert.run(null),
      (error) => outcomes.push(error?.message ?? null),
    )
    journal.write(
      () => insert.run(3),
      (error) => outcomes.push(error?.message ?? null),
    )
    journal.flush()
    expect(outcomes).toEqual([
      null,
      'NOT NULL constraint failed: t.n',
      'Cannot journal this write as an earlier one of its commit failed: NOT NULL constraint failed: t.n',
    ])
    expect(store.db.prepare('SELECT n FROM t ORDER BY n').pluck().all()).toEqual([1])

    store.db.pragma('query_only = ON')
    const refused: Array<Error | null> = []
    journal.write(
      () => insert.run(4),
      (error) => refused.push(error),
    )
    journal.write(
      () => insert.run(5),
      (error) => refused.push(error),
    )
    journal.flush()
    expect(refused.map((error) => error?.message)).toEqual([
      'attempt to write a readonly database',
      'Cannot journal this write as an earlier one of its commit failed: attempt to write a readonly database',
    ])
    store.db.pragma('query_only = OFF')
    journal.close()
    let error: Error | null = null
    journal.write(
      () => insert.run(6),
      (e) => {
        error = e
      },
    )
    expect(error).toMatchObject({ message: 'Cannot journal the message as the gateway is shutting down' })
    expect(store.db.prepare('SELECT n FROM t ORDER BY n').pluck().all()).toEqual([1])
  })
})

const RECORDER = `export default { onMessage(msg, ctx) { ctx.emit({ n: msg.payload.n, qos: msg.qos }) } }`

async function site(gw: Awaited<ReturnType<typeof startGateway>>, quotas?: Record<string, unknown>) {
  const created = await gw.api('POST', '/tenants', {
    id: 'acme',
    ...(quotas === undefined ? {} : { quotas }),
  })
  expect(created.status).toBe(201)
  const device = await gw.api('POST', '/tenants/acme/devices', { id: 'sensor' })
  return { username: 'sensor@acme', password: device.body.secret as string }
}

/**
 * Connects as client `sensor-1` with a QoS 1 message left in its store under `packetId`, as a
 * device that saw no PUBACK for it; `acked` resolves when the gateway acknowledges the resend.
 */
async function resend(
  url: string,
  credentials: { username: string; password: string },
  packetId: number,
  body: unknown,
  clean = false,
) {
  const outgoingStore = new mqtt.Store()
  await new Promise<void>((resolve, reject) =>
    outgoingStore.put(
      {
        cmd: 'publish',
        topic: 'in',
        payload: JSON.stringify(body),
        qos: 1,
        retain: false,
        dup: false,
        messageId: packetId,
      },
      (error?: Error) => (error ? reject(error) : resolve()),
    ),
  )
  const client = mqtt.connect(url, {
    ...credentials,
    clientId: 'sensor-1',
    clean,
    reconnectPeriod: 0,
    protocolVersion: 4,
    outgoingStore,
  })
  const acked = new Promise<void>((resolve) =>
    client.on('packetreceive', (packet) => {
      if (packet.cmd === 'puback' && packet.messageId === packetId) resolve()
    }),
  )
  await new Promise((resolve) => client.once('connect', resolve))
  return { client, acked }
}

const outboxOf = async (gw: Awaited<ReturnType<typeof startGateway>>) =>
  (await gw.api('GET', '/tenants/acme/outbox?limit=1000')).body.records.map(
    (record: { record: unknown }) => record.record,
  )

describe('the journal in the gateway', () => {
  test('a store that refuses writes gets no acknowledgement; the device resends and the message runs once', async () => {
    await using gw = await startGateway()
    const credentials = await site(gw)
    expect(
      (
        await gw.api('POST', '/tenants/acme/functions', {
          name: 'rec',
          source: RECORDER,
          triggers: [{ topic: 'in' }],
        })
      ).status,
    ).toBe(201)
    const device = mqtt.connect(gw.mqttUrl, {
      ...credentials,
      clientId: 'sensor-1',
      clean: false,
      reconnectPeriod: 50,
      protocolVersion: 4,
    })
    device.on('error', () => {})
    await new Promise((resolve) => device.once('connect', resolve))
    await device.publishAsync('in', JSON.stringify({ n: 1 }), { qos: 1 })
    gw.store.db.pragma('query_only = ON')
    let acked = false
    const second = device.publishAsync('in', JSON.stringify({ n: 2 }), { qos: 1 }).then(() => {
      acked = true
    })
    // The gateway closes the connection instead of acknowledging.
    await closed(device)
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(acked).toBe(false)
    gw.store.db.pragma('query_only = OFF')
    await second
    await until(() => acked, 'the acknowledgement after the resend')
    await gw.functions.idle()
    expect(await outboxOf(gw)).toEqual([
      { n: 1, qos: 1 },
      { n: 2, qos: 1 },
    ])
    await device.endAsync()
  })

  test("a device's resend of a message journaled before is acknowledged and not run again; a new message under that packet id runs", async () => {
    await using gw = await startGateway()
    const credentials = await site(gw)
    await gw.api('POST', '/tenants/acme/functions', {
      name: 'rec',
      source: RECORDER,
      triggers: [{ topic: 'in' }],
    })
    const first = await connect(gw.mqttUrl, { ...credentials, clientId: 'sensor-1', clean: false })
    await first.publishAsync('in', JSON.stringify({ n: 1 }), { qos: 1 })
    const packetId = gw.store.db.prepare('SELECT packet_id FROM publish_ids').pluck().get() as number
    await first.endAsync()
    await gw.functions.idle()
    // The device did not see that PUBACK: after reconnecting it sends the message again, same
    // packet id, from its store, without the DUP flag (as mqtt.js does). It is acknowledged.
    const again = await resend(gw.mqttUrl, credentials, packetId, { n: 1 })
    await again.acked
    // Then a new message: mqtt.js numbers it anew.
    await again.client.publishAsync('in', JSON.stringify({ n: 2 }), { qos: 1 })
    await gw.functions.idle()
    expect(await outboxOf(gw)).toEqual([
      { n: 1, qos: 1 },
      { n: 2, qos: 1 },
    ])
    await again.client.endAsync()
    // A different message under the old packet id, first thing after a reconnect, is new: it runs.
    const other = await resend(gw.mqttUrl, credentials, packetId, { n: 3 })
    await other.acked
    await gw.functions.idle()
    expect(await outboxOf(gw)).toEqual([
      { n: 1, qos: 1 },
      { n: 2, qos: 1 },
      { n: 3, qos: 1 },
    ])
    await other.client.endAsync()
  })

  test('a device with a clean session that numbers its packets from 1 again is not taken for a resend', async () => {
    await using gw = await startGateway()
    const credentials = await site(gw)
    await gw.api('POST', '/tenants/acme/functions', {
      name: 'rec',
      source: RECORDER,
      triggers: [{ topic: 'in' }],
    })
    // The same message under the same packet id after each reboot, as many firmwares send.
    for (let boot = 0; boot < 2; boot++) {
      const device = await resend(gw.mqttUrl, credentials, 1, { n: 0 }, true)
      await device.acked
      await device.client.endAsync()
    }
    await gw.functions.idle()
    expect(await outboxOf(gw)).toEqual([
      { n: 0, qos: 1 },
      { n: 0, qos: 1 },
    ])
  })

  test('QoS 0 and QoS 1 messages of one device reach the function in the order they were sent', async () => {
    await using gw = await startGateway()
    const credentials = await site(gw)
    await gw.api('POST', '/tenants/acme/functions', {
      name: 'rec',
      source: RECORDER,
      triggers: [{ topic: 'in' }],
    })
    const device = await connect(gw.mqttUrl, credentials)
    const sends: Array<Promise<unknown>> = []
    for (let n = 0; n < 60; n++) {
      sends.push(device.publishAsync('in', JSON.stringify({ n }), { qos: n % 3 === 0 ? 0 : 1 }))
    }
    await Promise.all(sends)
    await until(() => gw.functions.list('acme')[0]?.stats.invocations === 60, 'the 60 invocations')
    await gw.functions.idle()
    const records = (await outboxOf(gw)) as Array<{ n: number }>
    expect(records.map((record) => record.n)).toEqual(Array.from({ length: 60 }, (_, n) => n))
    // Only the QoS 1 messages were journaled; nothing is left owed.
    expect(gw.functionStore.pendingWork()).toEqual([])
    await device.endAsync()
  })

  test('a function that cannot keep up holds back acknowledgements instead of dropping what was acknowledged', async () => {
    await using gw = await startGateway({ functions: { queueLimit: 2, backpressureWaitMs: 150 } })
    const credentials = await site(gw)
    await gw.api('POST', '/tenants/acme/functions', {
      name: 'slow',
      source: `export default { onMessage(msg, ctx) { let s = 0; for (let i = 0; i < 1e7; i++) s += i; ctx.emit({ n: msg.payload.n }) } }`,
      triggers: [{ topic: 'in' }],
    })
    const device = mqtt.connect(gw.mqttUrl, {
      ...credentials,
      clientId: 'sensor-1',
      clean: false,
      reconnectPeriod: 50,
      protocolVersion: 4,
    })
    device.on('error', () => {})
    let refusals = 0
    device.on('close', () => refusals++)
    await new Promise((resolve) => device.once('connect', resolve))
    const sends = Array.from({ length: 12 }, (_, n) =>
      device.publishAsync('in', JSON.stringify({ n }), { qos: 1 }),
    )
    await Promise.all(sends)
    await gw.functions.idle()
    // The queue was full: the device was refused and sent again; every message ran once, in order.
    expect(refusals).toBeGreaterThan(0)
    expect(await outboxOf(gw)).toEqual(Array.from({ length: 12 }, (_, n) => ({ n })))
    expect((await gw.api('GET', '/tenants/acme/dead-letters')).body.deadLetters).toEqual([])
    await device.endAsync()
  }, 30_000)

  test('a call that runs again holds back the calls after it, so the function sees its messages in order', async () => {
    await using gw = await startGateway({ functions: { retries: 2, retryBackoffMs: 20 } })
    const credentials = await site(gw)
    await gw.api('POST', '/tenants/acme/functions', {
      name: 'rec',
      source: `let failed = false
        export default { onMessage(msg, ctx) {
          if (msg.payload.slow) for (let i = 0; i < 3e6; i++) {}
          if (msg.payload.n === 2 && !failed) { failed = true; throw new Error('once') }
          ctx.emit({ n: msg.payload.n, before: ctx.state.get('last') ?? null })
          ctx.state.set('last', msg.payload.n)
        } }`,
      triggers: [{ topic: 'in' }],
    })
    const device = await connect(gw.mqttUrl, credentials)
    // The first is slow, so the next four wait and run as one batch, in which n=2 fails once.
    const messages = [{ n: 0, slow: true }, { n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]
    await Promise.all(messages.map((m) => device.publishAsync('in', JSON.stringify(m), { qos: 1 })))
    await until(() => gw.functions.view('acme', 'rec').stats.invocations === 5, 'five calls')
    await gw.functions.idle()
    expect(await outboxOf(gw)).toEqual([
      { n: 0, before: null },
      { n: 1, before: 0 },
      { n: 2, before: 1 },
      { n: 3, before: 2 },
      { n: 4, before: 3 },
    ])
    await device.endAsync()
  })

  test('dead letters are replayed on the current version through the API, once', async () => {
    await using gw = await startGateway({ functions: { retries: 0 } })
    const credentials = await site(gw)
    const picky = (fixed: boolean) =>
      `export default { onMessage(msg, ctx) { if (${!fixed} && msg.payload.n % 2) throw new Error('odd'); ctx.emit({ n: msg.payload.n }) } }`
    await gw.api('POST', '/tenants/acme/functions', {
      name: 'rec',
      source: picky(false),
      triggers: [{ topic: 'in' }],
    })
    const device = await connect(gw.mqttUrl, credentials)
    for (let n = 1; n <= 4; n++) await device.publishAsync('in', JSON.stringify({ n }), { qos: 1 })
    await gw.functions.idle()
    expect(await outboxOf(gw)).toEqual([{ n: 2 }, { n: 4 }])
    const letters = (await gw.api('GET', '/tenants/acme/dead-letters')).body.deadLetters
    expect(letters.map((letter: { reason: string }) => letter.reason)).toEqual([
      'handler_threw',
      'handler_threw',
    ])
    // Bad input first: a clear 400 and nothing changes.
    const bad = await gw.api('POST', '/tenants/acme/dead-letters/replay', { ids: ['x'] })
    expect(bad.status).toBe(400)
    expect((await gw.api('POST', '/tenants/acme/dead-letters/replay', { function: 'nope' })).status).toBe(404)
    await gw.api('POST', '/tenants/acme/functions', {
      name: 'rec',
      source: picky(true),
      triggers: [{ topic: 'in' }],
    })
    const replay = await gw.api('POST', '/tenants/acme/dead-letters/replay', { function: 'rec' })
    expect(replay).toMatchObject({ status: 200, body: { replayed: 2, skipped: 0 } })
    await gw.functions.idle()
    expect(await outboxOf(gw)).toEqual([{ n: 2 }, { n: 4 }, { n: 1 }, { n: 3 }])
    expect((await gw.api('GET', '/tenants/acme/dead-letters')).body.deadLetters).toEqual([])
    expect((await gw.api('POST', '/tenants/acme/dead-letters/replay', {})).body).toEqual({
      replayed: 0,
      skipped: 0,
    })
    await device.endAsync()
  })

  test('a full outbox with the refuse policy fails the invocation as outbox_full after its retries; nothing is lost', async () => {
    await using gw = await startGateway({ functions: { retries: 1, retryBackoffMs: 10 } })
    const credentials = await site(gw, { outboxBytes: 60, outboxPolicy: 'refuse' })
    await gw.api('POST', '/tenants/acme/functions', {
      name: 'rec',
      source: RECORDER,
      triggers: [{ topic: 'in' }],
    })
    const device = await connect(gw.mqttUrl, credentials)
    for (let n = 1; n <= 3; n++) await device.publishAsync('in', JSON.stringify({ n }), { qos: 1 })
    await gw.functions.idle()
    const kept = (await outboxOf(gw)) as unknown[]
    expect(kept.length).toBeGreaterThan(0)
    expect(kept.length).toBeLessThan(3)
    const letters = (await gw.api('GET', '/tenants/acme/dead-letters')).body.deadLetters
    expect(letters).toHaveLength(3 - kept.length)
    expect(letters[0]).toMatchObject({ reason: 'outbox_full' })
    expect(letters[0].error).toMatch(/^Cannot append to the outbox of tenant 'acme' as /)
    await device.endAsync()
  })
})
