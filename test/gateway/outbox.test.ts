import { randomBytes } from 'node:crypto'
import { chmodSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, test } from 'vitest'
import { type Quotas, quotasSchema } from '../../gateway/config.ts'
import { GatewayError } from '../../gateway/errors.ts'
import { createOutboxMetrics } from '../../gateway/metrics.ts'
import {
  createOutbox,
  loadOutboxKey,
  OUTBOX_KEY_FILE,
  type Outbox,
  type OutboxDrop,
  OutboxFullError,
  type OutboxOptions,
  OutboxSealError,
} from '../../gateway/outbox.ts'
import { createStore, type Store } from '../../gateway/store.ts'
import { tempDir } from '../helpers/temp.ts'

const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})
function freshDir(): string {
  const dir = tempDir()
  dirs.push(dir)
  return dir
}

const KEY = new Uint8Array(32).fill(7)

function quotas(overrides: Partial<Quotas> = {}): Quotas {
  return { ...quotasSchema.parse({}), ...overrides }
}

/** A store with tenants `acme` and `other`, and an outbox on it; both closed by `using`. */
async function setup(options: Partial<OutboxOptions> & { tenantQuotas?: Quotas } = {}) {
  const store: Store = createStore({ file: join(freshDir(), 'taureau.db') })
  store.createTenant('acme')
  store.createTenant('other')
  let clock = 1_000_000
  const tenantQuotas = options.tenantQuotas ?? quotas()
  const outbox: Outbox = await createOutbox({
    db: store.db,
    key: KEY,
    now: () => clock,
    quotasOf: (tenantId) => (store.getTenant(tenantId) === undefined ? undefined : tenantQuotas),
    ...options,
  })
  return {
    store,
    outbox,
    db: store.db,
    advance(ms: number) {
      clock += ms
    },
    get now() {
      return clock
    },
    [Symbol.dispose]() {
      outbox.close()
      store.close()
    },
  }
}

/** A record whose JSON is exactly `bytes - 1` long, so with the one-letter stream it counts `bytes`. */
function recordOf(bytes: number, tag = ''): string {
  const body = `${tag}${'x'.repeat(Math.max(0, bytes - 3 - tag.length))}`
  expect(JSON.stringify(body).length + 1).toBe(bytes)
  return body
}
const row = (bytes: number, tag: string, stream = 's', fn = 'f') => ({
  function: fn,
  stream,
  record: recordOf(bytes, tag),
})

function tags(outbox: Outbox, tenantId = 'acme'): string[] {
  return outbox.list(tenantId, 0, 1000).map((r) => (r.record as string).replace(/x+$/, ''))
}
function dropSummary(drops: OutboxDrop[]) {
  return drops.map((d) => ({ seq: d.seq, stream: d.stream, bytes: d.bytes, reason: d.reason })).reverse()
}
/** What `fn` throws; fails the test when it returns. */
function thrownBy(fn: () => unknown): unknown {
  try {
    fn()
  } catch (error) {
    return error
  }
  throw new Error('expected a throw')
}
function truth(db: Store['db'], tenantId: string) {
  return db
    .prepare('SELECT COALESCE(SUM(bytes), 0) AS bytes, COUNT(*) AS records FROM outbox WHERE tenant_id = ?')
    .get(tenantId) as { bytes: number; records: number }
}

describe('createOutbox() sealing', () => {
  test('append() then list() gives the records back in seq order with their metadata', async () => {
    using t = await setup()
    const result = t.outbox.append('acme', quotas({ outboxTtlMs: 60_000 }), [
      { function: 'avg', stream: 'temps', record: { celsius: 21.5, at: 'é' } },
      { function: 'avg', stream: 'temps', record: undefined },
    ])
    expect(result.seqs).toHaveLength(2)
    const listed = t.outbox.list('acme', 0, 10)
    expect(listed).toEqual([
      {
        seq: result.seqs[0],
        tenantId: 'acme',
        function: 'avg',
        stream: 'temps',
        priority: 0,
        record: { celsius: 21.5, at: 'é' },
        // UTF-8 bytes of the JSON (é is two) plus the stream name.
        bytes: Buffer.byteLength(JSON.stringify({ celsius: 21.5, at: 'é' })) + 'temps'.length,
        createdAt: t.now,
        expiresAt: t.now + 60_000,
      },
      expect.objectContaining({ record: null, bytes: 4 + 5 }),
    ])
    expect(t.outbox.list('acme', result.seqs[0] as number, 10).map((r) => r.seq)).toEqual([result.seqs[1]])
    expect(t.outbox.list('other', 0, 10)).toEqual([])
  })

  test('the stored blob is nonce and ciphertext: it does not contain the plaintext, and nonces differ', async () => {
    using t = await setup()
    const secret = 'the-secret-reading-4242'
    t.outbox.append('acme', quotas(), [
      { function: 'f', stream: 's', record: { secret } },
      { function: 'f', stream: 's', record: { secret } },
    ])
    const blobs = t.db.prepare('SELECT sealed FROM outbox ORDER BY seq').pluck().all() as Buffer[]
    expect(blobs).toHaveLength(2)
    for (const blob of blobs) {
      expect(blob.includes(Buffer.from(secret))).toBe(false)
      // 24-byte nonce, 16-byte tag.
      expect(blob.length).toBe(24 + JSON.stringify({ secret }).length + 16)
    }
    expect(blobs[0]?.subarray(0, 24).equals(blobs[1]?.subarray(0, 24) as Buffer)).toBe(false)
    expect(blobs[0]?.equals(blobs[1] as Buffer)).toBe(false)
  })

  test('list() refuses a record whose sealed bytes were changed, naming it', async () => {
    using t = await setup()
    const { seqs } = t.outbox.append('acme', quotas(), [row(40, 'a')])
    const blob = t.db.prepare('SELECT sealed FROM outbox WHERE seq = ?').pluck().get(seqs[0]) as Buffer
    blob[30] = (blob[30] as number) ^ 1
    t.db.prepare('UPDATE outbox SET sealed = ? WHERE seq = ?').run(blob, seqs[0])
    const error = thrownBy(() => t.outbox.list('acme', 0, 10)) as OutboxSealError
    expect(error).toBeInstanceOf(OutboxSealError)
    expect(error).toBeInstanceOf(GatewayError)
    expect(error.name).toBe('OutboxSealError')
    expect(error.seq).toBe(seqs[0])
    expect(error.message).toBe(
      `Cannot open outbox record ${seqs[0]} of tenant 'acme' as its seal does not verify: it was altered, moved to another tenant, stream or function, or sealed with another key`,
    )
  })

  test("listAll() gives every tenant's records in seq order, an unreadable one as its error in its place", async () => {
    using t = await setup()
    const first = t.outbox.append('acme', quotas(), [row(10, 'a'), row(10, 'b')]).seqs
    const second = t.outbox.append('other', quotas(), [row(10, 'c')]).seqs
    const third = t.outbox.append('acme', quotas(), [row(10, 'd')]).seqs
    t.db.prepare('UPDATE outbox SET sealed = ? WHERE seq = ?').run(Buffer.alloc(10), first[1])
    const all = t.outbox.listAll(0, 10)
    expect(all.map((entry) => entry.seq)).toEqual([first[0], first[1], second[0], third[0]])
    expect(all.map((entry) => (entry instanceof OutboxSealError ? 'sealed' : entry.tenantId))).toEqual([
      'acme',
      'sealed',
      'other',
      'acme',
    ])
    expect(all[1]).toMatchObject({ tenantId: 'acme', seq: first[1] })
    expect(t.outbox.listAll(second[0] as number, 10).map((entry) => entry.seq)).toEqual([third[0]])
    expect(t.outbox.listAll(0, 2)).toHaveLength(2)
  })

  test('onAppend is told once per turn, after the transaction that appended has committed', async () => {
    const seen: number[] = []
    let db: Store['db'] | undefined
    using t = await setup({
      onAppend: () => seen.push((db?.prepare('SELECT COUNT(*) FROM outbox').pluck().get() as number) ?? -1),
    })
    db = t.db
    t.db.transaction(() => {
      t.outbox.append('acme', quotas(), [row(10, 'a')])
      t.outbox.append('other', quotas(), [row(10, 'b')])
    })()
    // A rolled back append tells too, and the reader finds nothing new.
    try {
      t.db.transaction(() => {
        t.outbox.append('acme', quotas(), [row(10, 'c')])
        throw new Error('roll back')
      })()
    } catch {}
    expect(seen).toEqual([])
    await Promise.resolve()
    expect(seen).toEqual([2])
  })

  test('list() refuses a truncated blob with a clear error', async () => {
    using t = await setup()
    const { seqs } = t.outbox.append('acme', quotas(), [row(40, 'a')])
    t.db.prepare('UPDATE outbox SET sealed = ? WHERE seq = ?').run(Buffer.alloc(10), seqs[0])
    expect(() => t.outbox.list('acme', 0, 10)).toThrow(/as its sealed bytes are too short/)
  })

  test('a record moved to another tenant, stream or function does not open', async () => {
    using t = await setup()
    t.outbox.append('acme', quotas(), [row(40, 'a')])
    const moves = [
      'UPDATE outbox SET tenant_id = ?',
      "UPDATE outbox SET tenant_id = 'acme', stream = ?",
      "UPDATE outbox SET stream = 's', function = ?",
    ]
    const values = ['other', 'other-stream', 'other-function']
    for (const [i, move] of moves.entries()) {
      t.db.prepare(move).run(values[i])
      const tenantId = i === 0 ? 'other' : 'acme'
      expect(() => t.outbox.list(tenantId, 0, 10)).toThrow(OutboxSealError)
    }
    t.db.prepare("UPDATE outbox SET function = 'f'").run()
    expect(tags(t.outbox)).toEqual(['a'])
  })

  test('records sealed with another key do not open', async () => {
    using t = await setup()
    t.outbox.append('acme', quotas(), [row(40, 'a')])
    using other = await createOutbox({ db: t.db, key: new Uint8Array(32).fill(8), quotasOf: () => quotas() })
    expect(() => other.list('acme', 0, 10)).toThrow(/sealed with another key/)
  })

  test('createOutbox() refuses a key that is not 32 bytes; a closed outbox refuses calls', async () => {
    using t = await setup()
    await expect(
      createOutbox({ db: t.db, key: new Uint8Array(16), quotasOf: () => quotas() }),
    ).rejects.toThrow(RangeError)
    t.outbox.close()
    t.outbox.close()
    expect(() => t.outbox.list('acme', 0, 1)).toThrow(/as it is closed/)
  })
})

describe('append() at the byte bound', () => {
  test("'refuse' throws OutboxFullError, writes nothing of the batch and keeps the caller's earlier writes", async () => {
    using t = await setup()
    const q = quotas({ outboxBytes: 100, outboxPolicy: 'refuse' })
    t.outbox.append('acme', q, [row(60, 'a')])
    let error: OutboxFullError | undefined
    t.db.transaction(() => {
      t.db.prepare("INSERT INTO meta (key, value) VALUES ('caller', 'wrote')").run()
      // The first row fits, the second does not: neither stays.
      error = thrownBy(() => t.outbox.append('acme', q, [row(30, 'b'), row(20, 'c')])) as OutboxFullError
    })()
    if (error === undefined) throw new Error('append() did not throw')
    expect(error).toBeInstanceOf(OutboxFullError)
    expect(error.code).toBe('limit_reached')
    expect(error.name).toBe('OutboxFullError')
    expect(error.message).toBe(
      "Cannot append to the outbox of tenant 'acme' as it is full: 90 bytes used + 20 new > quota 100 bytes (policy 'refuse')",
    )
    expect({ used: error.usedBytes, quota: error.quotaBytes, record: error.recordBytes }).toEqual({
      used: 90,
      quota: 100,
      record: 20,
    })
    expect(tags(t.outbox)).toEqual(['a'])
    expect(t.outbox.usage('acme')).toMatchObject({ bytes: 60, records: 1 })
    expect(t.store.getMeta('caller')).toBe('wrote')
    expect(t.outbox.drops('acme', 10)).toEqual([])
    // Exactly at the bound is allowed.
    t.outbox.append('acme', q, [row(40, 'd')])
    expect(t.outbox.usage('acme').bytes).toBe(100)
  })

  test("'drop-oldest' drops the oldest records until the new one fits, and audits each", async () => {
    using t = await setup()
    const q = quotas({ outboxBytes: 100, outboxPolicy: 'drop-oldest' })
    const first = t.outbox.append('acme', q, [row(30, 'a'), row(30, 'b', 'h'), row(30, 'c')])
    t.outbox.append('other', q, [row(90, 'z')])
    t.advance(5)
    const result = t.outbox.append('acme', q, [row(45, 'd')])
    expect(result).toMatchObject({ droppedRecords: 2, droppedBytes: 60, bytes: 45 })
    expect(tags(t.outbox)).toEqual(['c', 'd'])
    expect(tags(t.outbox, 'other')).toEqual(['z'])
    const drops = t.outbox.drops('acme', 10)
    expect(dropSummary(drops)).toEqual([
      { seq: first.seqs[0], stream: 's', bytes: 30, reason: 'quota_oldest' },
      { seq: first.seqs[1], stream: 'h', bytes: 30, reason: 'quota_oldest' },
    ])
    expect(drops[0]).toMatchObject({ tenantId: 'acme', function: 'f', at: t.now })
    expect(t.outbox.usage('acme')).toEqual({ bytes: 75, records: 2, quotaBytes: quotas().outboxBytes })
    expect(t.outbox.drops('other', 10)).toEqual([])
  })

  test("'drop-oldest' may drop a record appended earlier in the same batch", async () => {
    using t = await setup()
    const q = quotas({ outboxBytes: 100, outboxPolicy: 'drop-oldest' })
    const { seqs } = t.outbox.append('acme', q, [row(60, 'a'), row(60, 'b')])
    expect(tags(t.outbox)).toEqual(['b'])
    expect(dropSummary(t.outbox.drops('acme', 10))).toEqual([
      { seq: seqs[0], stream: 's', bytes: 60, reason: 'quota_oldest' },
    ])
  })

  test("'drop-lowest-priority' drops the oldest of the lowest priority first", async () => {
    using t = await setup()
    const q = quotas({
      outboxBytes: 100,
      outboxPolicy: 'drop-lowest-priority',
      outboxStreamPriorities: { h: 5, l: -1 },
    })
    const { seqs } = t.outbox.append('acme', q, [
      row(20, 'h1', 'h'),
      row(20, 'm1', 'm'),
      row(20, 'l1', 'l'),
      row(20, 'm2', 'm'),
      row(20, 'l2', 'l'),
    ])
    expect(t.outbox.list('acme', 0, 10).map((r) => r.priority)).toEqual([5, 0, -1, 0, -1])
    // Needs 30 bytes: both priority -1 records (40 bytes), oldest first.
    t.outbox.append('acme', q, [row(30, 'm3', 'm')])
    expect(tags(t.outbox)).toEqual(['h1', 'm1', 'm2', 'm3'])
    // Needs 40 more: m1 and m2 (priority 0, oldest first), not h1.
    t.outbox.append('acme', q, [row(40, 'h2', 'h')])
    expect(tags(t.outbox)).toEqual(['h1', 'm3', 'h2'])
    expect(dropSummary(t.outbox.drops('acme', 10))).toEqual([
      { seq: seqs[2], stream: 'l', bytes: 20, reason: 'quota_priority' },
      { seq: seqs[4], stream: 'l', bytes: 20, reason: 'quota_priority' },
      { seq: seqs[1], stream: 'm', bytes: 20, reason: 'quota_priority' },
      { seq: seqs[3], stream: 'm', bytes: 20, reason: 'quota_priority' },
    ])
    expect(t.outbox.usage('acme').bytes).toBe(90)
  })

  test("'drop-lowest-priority' refuses a record that would displace a record of higher priority", async () => {
    using t = await setup()
    const q = quotas({
      outboxBytes: 100,
      outboxPolicy: 'drop-lowest-priority',
      outboxStreamPriorities: { h: 5, l: -1 },
    })
    t.outbox.append('acme', q, [row(50, 'h1', 'h'), row(40, 'm1', 'm')])
    // Priority -1 is lower than all it would displace.
    expect(() => t.outbox.append('acme', q, [row(20, 'l1', 'l')])).toThrow(OutboxFullError)
    // Priority 0 may displace m1 (40 bytes) but needs 50: it would have to displace h1 too.
    expect(() => t.outbox.append('acme', q, [row(60, 'm2', 'm')])).toThrow(
      "Cannot append to the outbox of tenant 'acme' as only records of a higher priority than the record's (0, stream 'm') could make room: 90 bytes used + 60 new > quota 100 bytes (policy 'drop-lowest-priority')",
    )
    expect(tags(t.outbox)).toEqual(['h1', 'm1'])
    expect(t.outbox.drops('acme', 10)).toEqual([])
    // Equal priority displaces the older record.
    t.outbox.append('acme', q, [row(50, 'm2', 'm')])
    expect(tags(t.outbox)).toEqual(['h1', 'm2'])
    expect(t.outbox.drops('acme', 10).map((d) => d.reason)).toEqual(['quota_priority'])
  })

  test('a stream named like an Object member has the default priority', async () => {
    using t = await setup()
    const q = quotas({ outboxStreamPriorities: { h: 5 } })
    t.outbox.append('acme', q, [{ function: 'f', stream: 'constructor', record: 1 }])
    expect(t.outbox.list('acme', 0, 1)[0]?.priority).toBe(0)
  })

  test('a record larger than the whole quota is refused under every policy', async () => {
    for (const outboxPolicy of ['refuse', 'drop-oldest', 'drop-lowest-priority'] as const) {
      using t = await setup()
      const q = quotas({ outboxBytes: 100, outboxPolicy })
      t.outbox.append('acme', q, [row(50, 'a')])
      expect(() => t.outbox.append('acme', q, [row(101, 'big')])).toThrow(
        "Cannot append to the outbox of tenant 'acme' as a record of 101 bytes on stream 's' is larger than its whole quota of 100 bytes",
      )
      expect(tags(t.outbox)).toEqual(['a'])
      expect(t.outbox.drops('acme', 10)).toEqual([])
    }
  })

  test('a record that is not JSON is refused with a clear error', async () => {
    using t = await setup()
    expect(() => t.outbox.append('acme', quotas(), [{ function: 'f', stream: 's', record: 10n }])).toThrow(
      /as a record of stream 's' is not JSON/,
    )
  })
})

describe('sweep()', () => {
  test('drops records past their TTL, in bounded batches, with reason ttl', async () => {
    using t = await setup()
    const short = quotas({ outboxTtlMs: 1_000 })
    const long = quotas({ outboxTtlMs: 10_000 })
    const a = t.outbox.append('acme', short, [row(20, 'a1'), row(20, 'a2'), row(20, 'a3')])
    t.outbox.append('other', short, [row(20, 'o1')])
    t.outbox.append('acme', long, [row(20, 'keep')])
    t.advance(999)
    expect(t.outbox.sweep()).toBe(0)
    t.advance(1)
    expect(t.outbox.sweep(undefined, 3)).toBe(3)
    expect(t.outbox.sweep(undefined, 3)).toBe(1)
    expect(t.outbox.sweep(undefined, 3)).toBe(0)
    expect(tags(t.outbox)).toEqual(['keep'])
    expect(tags(t.outbox, 'other')).toEqual([])
    expect(dropSummary(t.outbox.drops('acme', 10))).toEqual(
      a.seqs.map((seq) => ({ seq, stream: 's', bytes: 20, reason: 'ttl' })),
    )
    expect(t.outbox.drops('other', 10).map((d) => d.reason)).toEqual(['ttl'])
    expect(t.outbox.usage('acme')).toMatchObject({ bytes: 20, records: 1 })
    expect(t.outbox.sweep(t.now + 9_000)).toBe(1)
    expect(t.outbox.usage('acme')).toMatchObject({ bytes: 0, records: 0 })
  })
})

describe('remove(), usage(), drops()', () => {
  test('remove() deletes acked records by seq or up to a seq, without auditing them', async () => {
    using t = await setup()
    const { seqs } = t.outbox.append('acme', quotas(), [
      row(10, 'a'),
      row(10, 'b'),
      row(10, 'c'),
      row(10, 'd'),
    ])
    t.outbox.append('other', quotas(), [row(10, 'o')])
    const [a, b, c, d] = seqs as [number, number, number, number]
    expect(t.outbox.remove('acme', { seqs: [b, 999_999] })).toBe(1)
    expect(t.outbox.remove('acme', { upToSeq: c })).toBe(2)
    // Another tenant's seqs are not touched.
    expect(t.outbox.remove('other', { upToSeq: d })).toBe(0)
    expect(t.outbox.remove('acme', { seqs: [a] })).toBe(0)
    expect(tags(t.outbox)).toEqual(['d'])
    expect(tags(t.outbox, 'other')).toEqual(['o'])
    expect(t.outbox.usage('acme')).toMatchObject({ bytes: 10, records: 1 })
    expect(t.outbox.drops('acme', 10)).toEqual([])
  })

  test('usage() stays equal to the recomputed truth through many appends, drops, sweeps and removes', async () => {
    using t = await setup()
    let seed = 42
    const random = (n: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31
      return Math.floor((seed / 2 ** 31) * n)
    }
    const policies = ['refuse', 'drop-oldest', 'drop-lowest-priority'] as const
    for (let i = 0; i < 600; i++) {
      const tenantId = random(2) === 0 ? 'acme' : 'other'
      const q = quotas({
        outboxBytes: 2_000,
        outboxTtlMs: 1_000 + random(5_000),
        outboxPolicy: policies[random(3)] as Quotas['outboxPolicy'],
        outboxStreamPriorities: { a: 1, b: -1 },
      })
      const op = random(10)
      if (op < 7) {
        const rows = Array.from({ length: 1 + random(4) }, () => ({
          function: 'f',
          stream: ['a', 'b', 'c'][random(3)] as string,
          record: 'x'.repeat(random(300)),
        }))
        try {
          t.outbox.append(tenantId, q, rows)
        } catch (error) {
          expect(error).toBeInstanceOf(OutboxFullError)
        }
      } else if (op < 8) {
        t.outbox.remove(tenantId, { upToSeq: t.outbox.list(tenantId, 0, 5).at(-1)?.seq ?? 0 })
      } else if (op < 9) {
        t.outbox.remove(tenantId, {
          seqs: t.outbox
            .list(tenantId, 0, 6)
            .map((r) => r.seq)
            .filter((_, j) => j % 2),
        })
      } else {
        t.advance(random(2_000))
        t.outbox.sweep(undefined, 5)
      }
      for (const id of ['acme', 'other']) {
        const usage = t.outbox.usage(id)
        expect({ bytes: usage.bytes, records: usage.records }).toEqual(truth(t.db, id))
        expect(usage.bytes).toBeLessThanOrEqual(2_000)
      }
    }
    const drops = t.db.prepare('SELECT reason, COUNT(*) AS n FROM outbox_drops GROUP BY reason').all()
    // The run exercised every reason.
    expect(drops).toHaveLength(3)
  })

  test('drops() pages newest first; the audit keeps the newest rows per tenant', async () => {
    using t = await setup({ auditRecords: 20 })
    const q = quotas({ outboxBytes: 10, outboxPolicy: 'drop-oldest' })
    const seqs: number[] = []
    for (let i = 0; i < 50; i++) seqs.push(...t.outbox.append('acme', q, [row(10, 'r')]).seqs)
    t.outbox.append('other', q, [row(10, 'o'), row(10, 'o')])
    // 49 drops; trimmed every 2 drops to the newest 20, so 20 or 21 rows stay.
    const all = t.outbox.drops('acme', 100)
    expect(all.length).toBeGreaterThanOrEqual(20)
    expect(all.length).toBeLessThanOrEqual(21)
    expect(all.map((d) => d.seq)).toEqual(seqs.slice(49 - all.length, 49).reverse())
    const page1 = t.outbox.drops('acme', 5)
    const page2 = t.outbox.drops('acme', 5, page1.at(-1)?.id)
    expect([...page1, ...page2]).toEqual(all.slice(0, 10))
    expect(t.outbox.drops('other', 100)).toHaveLength(1)
    expect(() => t.outbox.drops('acme', 0)).toThrow(RangeError)
  })

  test('usage() names the quota and refuses an unknown tenant', async () => {
    using t = await setup({ tenantQuotas: quotas({ outboxBytes: 1234 }) })
    expect(t.outbox.usage('acme')).toEqual({ bytes: 0, records: 0, quotaBytes: 1234 })
    expect(() => t.outbox.usage('nobody')).toThrow("Cannot find tenant 'nobody'")
  })

  test("deleting a tenant removes its records, audit and usage (ON DELETE CASCADE), not others'", async () => {
    using t = await setup()
    const q = quotas({ outboxBytes: 10, outboxPolicy: 'drop-oldest' })
    t.outbox.append('acme', q, [row(10, 'a'), row(10, 'b')])
    t.outbox.append('other', q, [row(10, 'o')])
    expect(t.store.deleteTenant('acme')).toBe(true)
    const count = (table: string) =>
      t.db.prepare(`SELECT COUNT(*) FROM ${table} WHERE tenant_id = 'acme'`).pluck().get()
    expect([count('outbox'), count('outbox_drops'), count('outbox_usage')]).toEqual([0, 0, 0])
    expect(tags(t.outbox, 'other')).toEqual(['o'])
  })
})

describe('outbox metrics', () => {
  test('taureau_outbox_bytes and taureau_outbox_dropped_total follow the store, rolled back appends uncounted', async () => {
    const registry = new Registry()
    using t = await setup({ metrics: createOutboxMetrics(registry) })
    const q = quotas({ outboxBytes: 100, outboxPolicy: 'drop-oldest', outboxTtlMs: 1_000 })
    t.outbox.append('acme', q, [row(60, 'a'), row(60, 'b')])
    t.outbox.append('other', q, [row(30, 'o')])
    // A drop inside a transaction that rolls back leaves no count.
    expect(() =>
      t.db.transaction(() => {
        t.outbox.append('acme', q, [row(60, 'c')])
        throw new Error('caller failed later')
      })(),
    ).toThrow('caller failed later')
    t.advance(1_000)
    t.outbox.append('other', q, [row(10, 'p')])
    t.outbox.sweep()
    const value = async (name: string, labels: Record<string, string>) => {
      const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name)
      const found = metric?.values.find((v) =>
        Object.entries(labels).every(([k, l]) => (v.labels as Record<string, unknown>)[k] === l),
      )
      return found?.value
    }
    expect(await value('taureau_outbox_bytes', { tenant: 'acme' })).toBe(0)
    expect(await value('taureau_outbox_bytes', { tenant: 'other' })).toBe(10)
    expect(await value('taureau_outbox_records', { tenant: 'other' })).toBe(1)
    expect(await value('taureau_outbox_dropped_total', { tenant: 'acme', reason: 'quota_oldest' })).toBe(1)
    expect(await value('taureau_outbox_dropped_total', { tenant: 'acme', reason: 'ttl' })).toBe(1)
    expect(await value('taureau_outbox_dropped_total', { tenant: 'other', reason: 'ttl' })).toBe(1)
    expect(await value('taureau_outbox_dropped_total', { tenant: 'other', reason: 'quota_priority' })).toBe(0)
    t.store.deleteTenant('acme')
    expect(await value('taureau_outbox_bytes', { tenant: 'acme' })).toBeUndefined()
    t.outbox.close()
    expect(await value('taureau_outbox_bytes', { tenant: 'other' })).toBeUndefined()
  })
})

describe('loadOutboxKey()', () => {
  test('creates DATA/outbox.key with 32 random bytes and mode 0600, then reads the same key', () => {
    const dir = freshDir()
    const key = loadOutboxKey(dir, {})
    const file = join(dir, OUTBOX_KEY_FILE)
    expect(key).toHaveLength(32)
    expect(statSync(file).mode & 0o777).toBe(0o600)
    expect(Buffer.from(readFileSync(file)).equals(Buffer.from(key))).toBe(true)
    expect(Buffer.from(loadOutboxKey(dir, {})).equals(Buffer.from(key))).toBe(true)
    expect(Buffer.from(loadOutboxKey(freshDir(), {})).equals(Buffer.from(key))).toBe(false)
  })

  test('sets a key file that group or others may read back to 0600', () => {
    const dir = freshDir()
    const file = join(dir, OUTBOX_KEY_FILE)
    writeFileSync(file, randomBytes(32))
    chmodSync(file, 0o644)
    loadOutboxKey(dir, {})
    expect(statSync(file).mode & 0o777).toBe(0o600)
  })

  test('refuses a key file of the wrong size', () => {
    const dir = freshDir()
    writeFileSync(join(dir, OUTBOX_KEY_FILE), randomBytes(31), { mode: 0o600 })
    expect(() => loadOutboxKey(dir, {})).toThrow(
      /Cannot load the outbox key '.*outbox\.key' as it holds 31 bytes, not 32/,
    )
  })

  test('TAUREAU_OUTBOX_KEY (base64 or base64url of 32 bytes) wins over the file, which is not created', () => {
    const dir = freshDir()
    const bytes = randomBytes(32)
    expect(
      Buffer.from(loadOutboxKey(dir, { TAUREAU_OUTBOX_KEY: bytes.toString('base64') })).equals(bytes),
    ).toBe(true)
    expect(
      Buffer.from(loadOutboxKey(dir, { TAUREAU_OUTBOX_KEY: bytes.toString('base64url') })).equals(bytes),
    ).toBe(true)
    expect(() => statSync(join(dir, OUTBOX_KEY_FILE))).toThrow(/ENOENT/)
  })

  test('refuses a TAUREAU_OUTBOX_KEY that is not base64 of exactly 32 bytes, without quoting it', () => {
    const dir = freshDir()
    const cases: Array<[string, RegExp]> = [
      ['', /as it is empty/],
      ['not base64 at all!!', /as it is not valid base64/],
      [`${randomBytes(32).toString('base64').slice(0, -2)}#=`, /as it is not valid base64/],
      [randomBytes(16).toString('base64'), /as it decodes to 16 bytes, not 32/],
      [randomBytes(33).toString('base64'), /as it decodes to 33 bytes, not 32/],
    ]
    for (const [value, message] of cases) {
      const error = thrownBy(() => loadOutboxKey(dir, { TAUREAU_OUTBOX_KEY: value }))
      expect(error).toBeInstanceOf(GatewayError)
      expect((error as GatewayError).code).toBe('invalid_config')
      expect((error as Error).message).toMatch(message)
      if (value !== '') expect((error as Error).message).not.toContain(value)
    }
  })
})
