import { randomBytes } from 'node:crypto'
import { rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import pg from 'pg'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest'
import type { CloudRecord, CloudStore, IncomingRecord } from '../../sync/cloud-store.ts'
import { createPostgresCloudStore } from '../../sync/cloud-store-postgres.ts'
import { createSqliteCloudStore } from '../../sync/cloud-store-sqlite.ts'
import { type PostgresServer, startPostgres } from '../helpers/postgres.ts'
import { tempDir } from '../helpers/temp.ts'

/** Opens a store on the current test's database; each call is another receiver on the same one. */
type Open = (options?: { now?: () => number }) => Promise<CloudStore>

interface Backend {
  /** A fresh, empty database for one test. */
  fresh(): Promise<Open>
  /**
   * Whether concurrent calls run one after another in call order (one synchronous SQLite
   * connection), so the exact outcome of a race is known in advance.
   */
  callsRunInOrder: boolean
}

const key = (): string => randomBytes(32).toString('base64')
const record = (seq: number, fields: Partial<IncomingRecord> = {}): IncomingRecord => ({
  seq,
  tenant: 'acme',
  function: 'avg',
  stream: 'temps',
  createdAt: 1_000 + seq,
  body: JSON.stringify({ seq }),
  ...fields,
})
const seqs = (records: CloudRecord[]): string[] => records.map((r) => `${r.gateway}#${r.seq}`)
const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i)
const syncError = (code: string, message: RegExp) =>
  expect.objectContaining({ name: 'SyncError', code, message: expect.stringMatching(message) })

/** The behaviour both stores promise, run against each. */
function contract(backend: () => Backend): void {
  let open: Open
  beforeEach(async () => {
    open = await backend().fresh()
  })

  test('addGateway() registers a gateway that listGateways() and gatewayByKey() find, and removeGateway() unregisters it', async () => {
    await using store = await open({ now: () => 1_700_000_000_000 })
    const k1 = key()
    const k2 = key()
    const added = await store.addGateway('gw-b', k1)
    expect(added).toEqual({
      name: 'gw-b',
      publicKey: k1,
      addedAt: 1_700_000_000_000,
      lastHandshakeAt: null,
      lastHandshakeTimestamp: null,
    })
    await store.addGateway('gw-a', k2)
    expect((await store.listGateways()).map((g) => g.name)).toEqual(['gw-a', 'gw-b'])
    expect(await store.gatewayByKey(k1)).toEqual(added)
    expect(await store.gatewayByKey(key())).toBeUndefined()
    expect(await store.removeGateway('gw-b')).toBe(true)
    expect(await store.removeGateway('gw-b')).toBe(false)
    expect(await store.gatewayByKey(k1)).toBeUndefined()
    expect((await store.listGateways()).map((g) => g.name)).toEqual(['gw-a'])
  })

  test('addGateway() refuses a taken name or a taken key with a conflict and changes nothing', async () => {
    await using store = await open()
    const k1 = key()
    await store.addGateway('gw1', k1)
    await expect(store.addGateway('gw1', key())).rejects.toEqual(
      syncError('conflict', /^Cannot add gateway 'gw1' as it exists$/),
    )
    await expect(store.addGateway('gw2', k1)).rejects.toEqual(
      syncError('conflict', /^Cannot add gateway 'gw2' as its public key belongs to gateway 'gw1'$/),
    )
    expect(await store.listGateways()).toEqual([expect.objectContaining({ name: 'gw1', publicKey: k1 })])
  })

  test('addGateway() rejects a bad name or a key that is not base64 of 32 bytes', async () => {
    await using store = await open()
    for (const name of ['', 'Gw', '-gw', '_gw', 'g/w', 'g w', 'a'.repeat(64), 7 as unknown as string]) {
      await expect(store.addGateway(name, key())).rejects.toThrow(RangeError)
    }
    // The same 32 bytes with an unused low bit of the last character set: decodes, but not canonical.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
    const canonical = key()
    const nonCanonical = `${canonical.slice(0, 42)}${alphabet[alphabet.indexOf(canonical[42]!) + 1]}=`
    expect(Buffer.from(nonCanonical, 'base64')).toEqual(Buffer.from(canonical, 'base64'))
    for (const bad of [
      randomBytes(31).toString('base64'),
      randomBytes(33).toString('base64'),
      randomBytes(32).toString('base64').slice(0, -1),
      randomBytes(32).toString('base64url'),
      randomBytes(32).toString('hex'),
      nonCanonical,
      null as unknown as string,
    ]) {
      await expect(store.addGateway('gw1', bad)).rejects.toThrow(
        /^Cannot add gateway 'gw1' as its public key/,
      )
    }
    expect(await store.listGateways()).toEqual([])
  })

  test('acceptHandshake() moves only forward: an equal or older timestamp is refused', async () => {
    await using store = await open()
    const k = key()
    await store.addGateway('gw1', k)
    // Nanoseconds since 1970 are past 2^53: the store must keep every bit.
    const t = 1_700_000_000_123_456_789n
    expect(await store.acceptHandshake('gw1', t, 5_000)).toBe(true)
    expect(await store.acceptHandshake('gw1', t, 6_000)).toBe(false)
    expect(await store.acceptHandshake('gw1', t - 1n, 6_000)).toBe(false)
    expect(await store.gatewayByKey(k)).toMatchObject({ lastHandshakeTimestamp: t, lastHandshakeAt: 5_000 })
    expect(await store.acceptHandshake('gw1', t + 1n, 7_000)).toBe(true)
    expect(await store.gatewayByKey(k)).toMatchObject({
      lastHandshakeTimestamp: t + 1n,
      lastHandshakeAt: 7_000,
    })
    expect(await store.acceptHandshake('nobody', t + 9n, 7_000)).toBe(false)
    await expect(store.acceptHandshake('gw1', -1n, 7_000)).rejects.toThrow(RangeError)
    await expect(store.acceptHandshake('gw1', 2n ** 63n, 7_000)).rejects.toThrow(RangeError)
    await expect(store.acceptHandshake('gw1', 5 as unknown as bigint, 7_000)).rejects.toThrow(RangeError)
  })

  test('acceptHandshake() lets exactly one of 20 concurrent calls with one timestamp through, across two receivers', async () => {
    await using a = await open()
    await using b = await open()
    await a.addGateway('gw1', key())
    const results = await Promise.all(range(1, 20).map((i) => (i % 2 ? a : b).acceptHandshake('gw1', 42n, i)))
    expect(results.filter(Boolean)).toHaveLength(1)
  })

  test('acceptHandshake() under 20 concurrent calls keeps the greatest timestamp, and only rises', async () => {
    await using a = await open()
    await using b = await open()
    const k = key()
    await a.addGateway('gw1', k)
    const timestamps = [17, 3, 19, 8, 1, 20, 12, 5, 14, 2, 11, 18, 6, 15, 9, 4, 16, 10, 13, 7].map(
      (n) => 1_000_000_000n * BigInt(n),
    )
    const results = await Promise.all(timestamps.map((t, i) => (i % 2 ? a : b).acceptHandshake('gw1', t, i)))
    const max = 20_000_000_000n
    expect((await a.gatewayByKey(k))?.lastHandshakeTimestamp).toBe(max)
    expect(results[timestamps.indexOf(max)]).toBe(true)
    if (backend().callsRunInOrder) {
      // In call order, exactly the calls that raised the running maximum succeed.
      const raised = timestamps.map((t, i) => timestamps.slice(0, i).every((earlier) => earlier < t))
      expect(results).toEqual(raised)
    }
  })

  test('storeRecords() skips seqs repeated within a batch and seqs stored by an earlier batch', async () => {
    await using store = await open()
    await store.addGateway('gw1', key())
    const first = await store.storeRecords(
      'gw1',
      [record(1), record(2), record(2, { body: '"second"' }), record(3)],
      10,
    )
    expect(first).toEqual({ stored: 3, duplicates: 1 })
    expect(await store.storeRecords('gw1', [record(3), record(4), record(1)], 20)).toEqual({
      stored: 1,
      duplicates: 2,
    })
    expect(await store.storeRecords('gw1', [], 30)).toEqual({ stored: 0, duplicates: 0 })
    const stored = await store.records()
    expect(seqs(stored)).toEqual(['gw1#1', 'gw1#2', 'gw1#3', 'gw1#4'])
    // The first of two copies in a batch wins, and a later copy never overwrites.
    expect(stored[1]?.body).toBe(JSON.stringify({ seq: 2 }))
    expect(stored.map((r) => r.receivedAt)).toEqual([10, 10, 10, 20])
  })

  test('storeRecords() keeps every field, and the body exactly as received', async () => {
    await using store = await open()
    await store.addGateway('gw1', key())
    const body = '{ "temp" : 21.50,\n "unit":"°C", "note": "😀 \\u0000", "n": [1,2 ,3] }'
    const incoming = record(9_007_199_254_740_991, {
      tenant: 't-1',
      function: 'fn',
      stream: 's/x',
      createdAt: 1_700_000_000_000,
      body,
    })
    await store.storeRecords('gw1', [incoming], 1_700_000_000_500)
    expect(await store.records()).toEqual([{ ...incoming, gateway: 'gw1', receivedAt: 1_700_000_000_500 }])
  })

  test('two receivers storing overlapping batches concurrently store each seq once', async () => {
    await using a = await open()
    await using b = await open()
    await a.addGateway('gw1', key())
    const batches = [
      range(1, 60),
      range(30, 100).reverse(),
      range(50, 120),
      range(1, 10),
      range(90, 120).reverse(),
    ]
    const results = await Promise.all(
      batches.map((batch, i) =>
        (i % 2 ? a : b).storeRecords(
          'gw1',
          batch.map((seq) => record(seq)),
          100 + i,
        ),
      ),
    )
    const submitted = batches.reduce((sum, batch) => sum + batch.length, 0)
    expect(results.reduce((sum, r) => sum + r.stored, 0)).toBe(120)
    expect(results.reduce((sum, r) => sum + r.duplicates, 0)).toBe(submitted - 120)
    expect(await b.count()).toBe(120)
    const stored = await a.records({ limit: 10_000 })
    expect(stored.map((r) => r.seq).sort((x, y) => x - y)).toEqual(range(1, 120))
  })

  test('storeRecords() stores nothing of a batch with one invalid record', async () => {
    await using store = await open()
    await store.addGateway('gw1', key())
    const invalid: [Partial<IncomingRecord>, RegExp][] = [
      [{ seq: 0 }, /seq that is not a positive safe integer: '0'/],
      [{ seq: 1.5 }, /seq that is not a positive safe integer/],
      [{ seq: 2 ** 53 }, /seq that is not a positive safe integer/],
      [{ tenant: '' }, /tenant that is not a string of 1 to 256 characters/],
      [{ stream: 's'.repeat(257) }, /stream that is not a string/],
      [{ function: 'a\u0000b' }, /control character in its function/],
      [{ createdAt: -1 }, /createdAt that is not a non-negative safe integer/],
      [{ body: '{"a":' }, /body that is not JSON/],
      [{ body: 5 as unknown as string }, /body that is not a string/],
      [{ body: JSON.stringify('x'.repeat(1024 * 1024)) }, /body of 1048578 bytes, more than 1048576/],
    ]
    for (const [fields, why] of invalid) {
      const batch = [record(1), record(2), { ...record(3), ...fields }, record(4)]
      await expect(store.storeRecords('gw1', batch, 10)).rejects.toEqual(
        syncError(
          'bad_record',
          new RegExp(`^Cannot store records of gateway 'gw1' as record 2 has a ${why.source}`),
        ),
      )
    }
    await expect(
      store.storeRecords('gw1', [record(1), null as unknown as IncomingRecord], 10),
    ).rejects.toThrow(/as record 1 is not an object/)
    await expect(store.storeRecords('gw1', [record(1)], -5)).rejects.toThrow(/as the receive time is not/)
    await expect(
      store.storeRecords(
        'gw1',
        range(1, 10_001).map((seq) => record(seq)),
        10,
      ),
    ).rejects.toThrow(RangeError)
    expect(await store.count()).toBe(0)
  })

  test('storeRecords() refuses the records of an unregistered gateway with a conflict', async () => {
    await using store = await open()
    await expect(store.storeRecords('ghost', [record(1)], 10)).rejects.toEqual(
      syncError('conflict', /^Cannot store records of gateway 'ghost' as no such gateway is registered$/),
    )
    expect(await store.count()).toBe(0)
  })

  test('removeGateway() keeps its records, and a gateway re-added under its name dedups against them', async () => {
    await using store = await open()
    await store.addGateway('gw1', key())
    await store.storeRecords('gw1', [record(1), record(2)], 10)
    expect(await store.removeGateway('gw1')).toBe(true)
    expect(await store.count({ gateway: 'gw1' })).toBe(2)
    await expect(store.storeRecords('gw1', [record(3)], 20)).rejects.toThrow(/no such gateway is registered/)
    // Say, the same box with a rotated key: its outbox sequence goes on.
    await store.addGateway('gw1', key())
    expect(await store.storeRecords('gw1', [record(2), record(3)], 30)).toEqual({ stored: 1, duplicates: 1 })
  })

  test('records() orders by receivedAt, then gateway, then seq, and filters by gateway, tenant, stream and since', async () => {
    await using store = await open()
    await store.addGateway('gw-b', key())
    await store.addGateway('gw-a', key())
    await store.addGateway('gw_a', key())
    await store.storeRecords('gw-b', [record(2, { tenant: 'beta' }), record(1, { stream: 'hums' })], 20)
    await store.storeRecords('gw_a', [record(1)], 20)
    await store.storeRecords(
      'gw-a',
      [record(7, { createdAt: 5 }), record(3, { tenant: 'beta', stream: 'hums' })],
      20,
    )
    await store.storeRecords('gw-b', [record(3)], 10)
    // '-' sorts before '_' bytewise, whatever the database's locale.
    expect(seqs(await store.records())).toEqual(['gw-b#3', 'gw-a#3', 'gw-a#7', 'gw-b#1', 'gw-b#2', 'gw_a#1'])
    expect(seqs(await store.records({ gateway: 'gw-a' }))).toEqual(['gw-a#3', 'gw-a#7'])
    expect(seqs(await store.records({ tenant: 'beta' }))).toEqual(['gw-a#3', 'gw-b#2'])
    expect(seqs(await store.records({ stream: 'hums' }))).toEqual(['gw-a#3', 'gw-b#1'])
    expect(seqs(await store.records({ tenant: 'beta', stream: 'hums' }))).toEqual(['gw-a#3'])
    expect(seqs(await store.records({ since: 1_002 }))).toEqual(['gw-b#3', 'gw-a#3', 'gw-b#2'])
    expect(seqs(await store.records({ gateway: 'gw-a', since: 1_002 }))).toEqual(['gw-a#3'])
    expect(await store.records({ tenant: 'nobody' })).toEqual([])
  })

  test('records() pages with after and limit through every record exactly once', async () => {
    await using store = await open()
    await store.addGateway('gw1', key())
    await store.addGateway('gw2', key())
    await store.storeRecords(
      'gw1',
      range(1, 1_001).map((seq) => record(seq)),
      10,
    )
    await store.storeRecords(
      'gw2',
      range(1, 30).map((seq) => record(seq, { tenant: 'beta' })),
      10,
    )
    await store.storeRecords(
      'gw1',
      range(1_002, 1_010).map((seq) => record(seq)),
      5,
    )
    expect(await store.records()).toHaveLength(1_000)
    const seen: string[] = []
    let after: { gateway: string; seq: number } | undefined
    for (let page = 0; page < 20; page++) {
      const rows = await store.records({ limit: 300, after })
      seen.push(...seqs(rows))
      const last = rows.at(-1)
      if (last === undefined) break
      after = { gateway: last.gateway, seq: last.seq }
    }
    expect(seen).toEqual(seqs(await store.records({ limit: 10_000 })))
    expect(new Set(seen).size).toBe(1_040)
    // Paging composes with filters.
    const beta = await store.records({ tenant: 'beta', limit: 20 })
    const rest = await store.records({ tenant: 'beta', after: { gateway: 'gw1', seq: 5 } })
    expect(seqs([...beta, ...(await store.records({ tenant: 'beta', after: beta.at(-1) }))])).toEqual(
      seqs(rest),
    )
    await expect(store.records({ after: { gateway: 'gw1', seq: 5_000 } })).rejects.toThrow(
      /^Cannot query records after seq 5000 of gateway 'gw1' as that record is not stored$/,
    )
    for (const limit of [0, -1, 1.5, 10_001]) {
      await expect(store.records({ limit })).rejects.toThrow(RangeError)
    }
  })

  test('count() counts the records matching the filters', async () => {
    await using store = await open()
    await store.addGateway('gw1', key())
    await store.addGateway('gw2', key())
    expect(await store.count()).toBe(0)
    await store.storeRecords(
      'gw1',
      range(1, 5).map((seq) => record(seq)),
      10,
    )
    await store.storeRecords(
      'gw2',
      range(1, 3).map((seq) => record(seq, { tenant: 'beta', stream: 'hums' })),
      10,
    )
    expect(await store.count()).toBe(8)
    expect(await store.count({ gateway: 'gw2' })).toBe(3)
    expect(await store.count({ tenant: 'acme' })).toBe(5)
    expect(await store.count({ stream: 'hums' })).toBe(3)
    expect(await store.count({ since: 1_003 })).toBe(4)
    expect(await store.count({ gateway: 'gw1', tenant: 'beta' })).toBe(0)
  })

  test('stores opened at once on one fresh database set up the schema once, and a reopened one keeps everything', async () => {
    const stores = await Promise.all(range(1, 4).map(() => open()))
    await stores[0]!.addGateway('gw1', key())
    await stores[1]!.storeRecords('gw1', [record(1)], 10)
    await Promise.all(stores.map((s) => s.close()))
    await using reopened = await open()
    expect((await reopened.listGateways()).map((g) => g.name)).toEqual(['gw1'])
    expect(await reopened.count()).toBe(1)
  })

  test('close() is idempotent, and a call after close fails with a closed error', async () => {
    const store = await open()
    await store.addGateway('gw1', key())
    await Promise.all([store.close(), store.close()])
    await store.close()
    await expect(store.listGateways()).rejects.toEqual(
      syncError('closed', /^Cannot list gateways as the cloud store is closed$/),
    )
    await expect(store.storeRecords('gw1', [record(1)], 10)).rejects.toEqual(
      syncError('closed', /^Cannot store records of gateway 'gw1' as the cloud store is closed$/),
    )
  })
}

describe('SQLite cloud store', () => {
  const dirs: string[] = []
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
  })
  const sqliteFile = (): string => {
    const dir = tempDir()
    dirs.push(dir)
    return join(dir, 'cloud.db')
  }
  const sqlite: Backend = {
    callsRunInOrder: true,
    fresh: async () => {
      const file = sqliteFile()
      return (options = {}) => createSqliteCloudStore({ file, ...options })
    },
  }
  contract(() => sqlite)

  test('the file is in WAL mode and readable only by its owner', async () => {
    const file = sqliteFile()
    await using _store = await createSqliteCloudStore({ file })
    expect(statSync(file).mode & 0o777).toBe(0o600)
    const db = new Database(file, { readonly: true })
    try {
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal')
    } finally {
      db.close()
    }
  })

  test('a file from a newer receiver is refused rather than damaged', async () => {
    const file = sqliteFile()
    await (await createSqliteCloudStore({ file })).close()
    const db = new Database(file)
    db.exec('UPDATE cloud_schema_version SET version = 99')
    db.close()
    await expect(createSqliteCloudStore({ file })).rejects.toEqual(
      syncError('store', /newer than this receiver knows/),
    )
  })
})

describe('PostgreSQL cloud store', () => {
  let server: PostgresServer | undefined
  let admin: pg.Client | undefined
  beforeAll(async () => {
    // No skip: a machine without PostgreSQL fails here (.ci/prepare installs it).
    server = await startPostgres()
    admin = new pg.Client(server.url)
    await admin.connect()
  })
  afterAll(async () => {
    await admin?.end()
    await server?.stop()
  })
  const postgres: Backend = {
    callsRunInOrder: false,
    fresh: async () => {
      const database = `t_${randomBytes(6).toString('hex')}`
      await admin!.query(`CREATE DATABASE ${database}`)
      const url = new URL(server!.url)
      url.pathname = `/${database}`
      return (options = {}) => createPostgresCloudStore({ url: url.toString(), ...options })
    },
  }
  contract(() => postgres)

  test('an unreachable server fails to open with a store error that hides the password', async () => {
    const url = new URL(server!.url)
    url.password = 'hunter2'
    url.port = '1'
    const failure = createPostgresCloudStore({ url: url.toString(), connectTimeoutMs: 2_000 })
    await expect(failure).rejects.toEqual(
      syncError(
        'store',
        /^Cannot open the cloud store at 'postgres:\/\/postgres@127\.0\.0\.1:1\/postgres' as /,
      ),
    )
    await expect(failure).rejects.not.toThrow(/hunter2/)
  })
})
