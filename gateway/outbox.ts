import { randomBytes, randomFillSync } from 'node:crypto'
import { chmodSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type Database from 'better-sqlite3'
import { createSecretFile, fileExists } from '../sync/identity.ts'
import type { Quotas } from './config.ts'
import { GATEWAY_ERROR_CODES, GatewayError, quote } from './errors.ts'
import type { OutboxDropReason, OutboxFigures, OutboxMetrics } from './metrics.ts'
import { XCHACHA_NONCE_BYTES, XCHACHA_TAG_BYTES, xchachaOpen, xchachaSeal } from './xchacha.ts'

/** Name of the outbox key file inside the data dir (32 raw bytes, mode 0600). */
export const OUTBOX_KEY_FILE = 'outbox.key'
/** Env variable that gives the outbox key (base64 of 32 bytes) instead of the key file. */
export const OUTBOX_KEY_ENV = 'TAUREAU_OUTBOX_KEY'
/** Bytes of an outbox key (XChaCha20-Poly1305). */
export const OUTBOX_KEY_BYTES = 32
/** Audit rows kept per tenant by default; trimmed every tenth of this many drops. */
export const OUTBOX_AUDIT_RECORDS = 10_000
/** Records one {@link Outbox.sweep} drops at most by default, so one call is one short transaction. */
export const OUTBOX_SWEEP_RECORDS = 1_000
/** Most records one {@link Outbox.list} or {@link Outbox.drops} returns. */
export const OUTBOX_LIST_LIMIT = 10_000

/** One record handed to {@link Outbox.append}: what a function gave `ctx.emit`. */
export interface OutboxRow {
  function: string
  stream: string
  record: unknown
}

/** What {@link Outbox.append} did. */
export interface OutboxAppendResult {
  /** Sequence numbers of the appended records, in the order of the rows. */
  seqs: number[]
  /** Bytes appended (see {@link OutboxRecord.bytes}). */
  bytes: number
  /** Records dropped to make room (each audited and counted). */
  droppedRecords: number
  droppedBytes: number
}

/** A record waiting for the uplink, opened. */
export interface OutboxRecord {
  seq: number
  tenantId: string
  function: string
  stream: string
  /** From the tenant's `outboxStreamPriorities` when the record was appended. */
  priority: number
  record: unknown
  /** What the record counts against `outboxBytes`: UTF-8 bytes of its JSON plus of its stream name. */
  bytes: number
  createdAt: number
  expiresAt: number
}

/** A tenant's outbox usage, from running totals kept in the same transactions as the records. */
export interface OutboxUsage {
  bytes: number
  records: number
  quotaBytes: number
}

/** An audit row: a record dropped before the uplink took it, and why. */
export interface OutboxDrop {
  id: number
  tenantId: string
  function: string
  stream: string
  seq: number
  bytes: number
  reason: OutboxDropReason
  at: number
}

/** Which records {@link Outbox.remove} deletes: these sequence numbers, or all up to one. */
export type OutboxRemoval = { seqs: readonly number[] } | { upToSeq: number }

/** Options of {@link createOutbox}. */
export interface OutboxOptions {
  /** The store's database (migration 5 applied). The outbox does not own it. */
  db: Database.Database
  /** 32 bytes, from {@link loadOutboxKey}. Copied; the copy is wiped on close. */
  key: Uint8Array
  /** The effective quotas of a tenant (for {@link Outbox.usage}); undefined for an unknown tenant. */
  quotasOf: (tenantId: string) => Quotas | undefined
  /** Where the outbox figures are published; see `createOutboxMetrics`. */
  metrics?: OutboxMetrics
  /** Clock, ms since epoch. */
  now?: () => number
  /** Audit rows kept per tenant (default {@link OUTBOX_AUDIT_RECORDS}). */
  auditRecords?: number
  /**
   * Told that records were appended (the uplink reads them at once). Called in a microtask, so
   * after the caller's transaction has committed or rolled back: never with rows still uncommitted.
   */
  onAppend?: () => void
}

/**
 * The outbox: records from `ctx.emit` waiting for the uplink, sealed at rest, bounded per tenant by
 * `outboxBytes` with the tenant's `outboxPolicy` at the bound, dropped after `outboxTtlMs`. Every
 * drop is audited in `outbox_drops` and counted, in the same transaction as the drop. Only the
 * main thread calls it (DESIGN.md, single writer).
 */
export interface Outbox {
  /**
   * Appends a batch of one tenant's records, making room by the tenant's policy. Meant to run
   * inside the caller's transaction (it nests as a savepoint): on {@link OutboxFullError} nothing of
   * the batch is written and the caller's earlier writes stay. Rows are taken in order, so with a
   * drop policy a later row of a batch may displace an earlier one.
   */
  append(tenantId: string, quotas: Quotas, rows: readonly OutboxRow[]): OutboxAppendResult
  /** Opened records of a tenant with `seq > afterSeq`, in seq order. Throws {@link OutboxSealError}. */
  list(tenantId: string, afterSeq: number, limit: number): OutboxRecord[]
  /**
   * The uplink's read: records of every tenant with `seq > afterSeq`, in seq order. A record that
   * cannot be opened comes back as its {@link OutboxSealError} in its place, so one bad row never
   * holds up the others; the caller removes it and says so.
   */
  listAll(afterSeq: number, limit: number): Array<OutboxRecord | OutboxSealError>
  /** Deletes delivered records (the uplink's acks); not audited. Returns how many were deleted. */
  remove(tenantId: string, which: OutboxRemoval): number
  /** Bytes and records a tenant has waiting, and its quota. */
  usage(tenantId: string): OutboxUsage
  /** Audit rows of a tenant, newest first, with `id < beforeId` when given. */
  drops(tenantId: string, limit: number, beforeId?: number): OutboxDrop[]
  /**
   * Drops up to `maxRecords` records whose TTL has passed (`expiresAt <= now`), reason `ttl`, in one
   * transaction, and returns how many. Call again while it returns `maxRecords`.
   */
  sweep(now?: number, maxRecords?: number): number
  /** Wipes the key copy; idempotent. The database stays open (its owner closes it). */
  close(): void
  [Symbol.dispose](): void
}

/**
 * A record does not fit the tenant's outbox: the policy is `refuse`, the record alone is larger
 * than the quota, or (`drop-lowest-priority`) only records of a higher priority could make room.
 */
export class OutboxFullError extends GatewayError {
  readonly tenantId: string
  readonly usedBytes: number
  readonly quotaBytes: number
  readonly recordBytes: number

  constructor(tenantId: string, usedBytes: number, recordBytes: number, quotaBytes: number, why: string) {
    super(
      GATEWAY_ERROR_CODES.limitReached,
      `Cannot append to the outbox of tenant ${quote(tenantId)} as ${why}`,
    )
    // GatewayError types `name` as its own literal, so a subclass sets its name at run time.
    ;(this as { name: string }).name = 'OutboxFullError'
    this.tenantId = tenantId
    this.usedBytes = usedBytes
    this.quotaBytes = quotaBytes
    this.recordBytes = recordBytes
  }
}

/**
 * A stored record does not open: its bytes were changed, it was moved to another tenant, stream or
 * function, or it was sealed with another key. `seq` names it, so an operator can remove it.
 */
export class OutboxSealError extends GatewayError {
  readonly tenantId: string
  readonly seq: number

  constructor(tenantId: string, seq: number, why: string, cause?: unknown) {
    super(
      GATEWAY_ERROR_CODES.internal,
      `Cannot open outbox record ${seq} of tenant ${quote(tenantId)} as ${why}`,
      cause === undefined ? {} : { cause },
    )
    ;(this as { name: string }).name = 'OutboxSealError'
    this.tenantId = tenantId
    this.seq = seq
  }
}

interface RecordRow {
  seq: number
  tenant_id: string
  function: string
  stream: string
  priority: number
  sealed: Buffer
  bytes: number
  created_at: number
  expires_at: number
}
interface VictimRow {
  seq: number
  tenant_id: string
  function: string
  stream: string
  priority: number
  bytes: number
}
interface UsageRow {
  bytes: number
  records: number
  dropped_quota_oldest: number
  dropped_quota_priority: number
  dropped_ttl: number
}
interface DropRow {
  id: number
  tenant_id: string
  function: string
  stream: string
  seq: number
  bytes: number
  reason: OutboxDropReason
  at: number
}

const NONCE_BYTES = XCHACHA_NONCE_BYTES
const TAG_BYTES = XCHACHA_TAG_BYTES
const NONCE_POOL = 256
const EMPTY_USAGE: UsageRow = {
  bytes: 0,
  records: 0,
  dropped_quota_oldest: 0,
  dropped_quota_priority: 0,
  dropped_ttl: 0,
}
const DROP_COLUMN = {
  quota_oldest: 'dropped_quota_oldest',
  quota_priority: 'dropped_quota_priority',
  ttl: 'dropped_ttl',
} as const satisfies Record<OutboxDropReason, keyof UsageRow>

/** Creates the outbox on the store's database. */
export async function createOutbox(options: OutboxOptions): Promise<Outbox> {
  if (options.key.length !== OUTBOX_KEY_BYTES) {
    throw new RangeError(`Cannot create the outbox as its key has ${options.key.length} bytes, not 32`)
  }
  const { db, quotasOf } = options
  const now = options.now ?? Date.now
  const auditRecords = options.auditRecords ?? OUTBOX_AUDIT_RECORDS
  // Trimming the audit costs a walk over the rows kept, so it runs once per tenth of them.
  const trimEvery = Math.max(1, Math.floor(auditRecords / 10))
  const key = Uint8Array.from(options.key)
  let closed = false

  const sql = {
    insert: db.prepare<[string, string, string, number, Buffer, number, number, number]>(
      `INSERT INTO outbox (tenant_id, function, stream, priority, sealed, bytes, created_at, expires_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    list: db.prepare<[string, number, number], RecordRow>(
      'SELECT * FROM outbox WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?',
    ),
    listAll: db.prepare<[number, number], RecordRow>(
      'SELECT * FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?',
    ),
    oldest: db.prepare<[string], VictimRow>(
      'SELECT seq, tenant_id, function, stream, priority, bytes FROM outbox WHERE tenant_id = ? ORDER BY seq',
    ),
    lowest: db.prepare<[string], VictimRow>(
      `SELECT seq, tenant_id, function, stream, priority, bytes FROM outbox
       WHERE tenant_id = ? ORDER BY priority, seq`,
    ),
    expired: db.prepare<[number, number], VictimRow>(
      `SELECT seq, tenant_id, function, stream, priority, bytes FROM outbox
       WHERE expires_at <= ? ORDER BY expires_at LIMIT ?`,
    ),
    deleteSeq: db.prepare<[number]>('DELETE FROM outbox WHERE seq = ?'),
    removeSeq: db.prepare<[string, number], { bytes: number }>(
      'DELETE FROM outbox WHERE tenant_id = ? AND seq = ? RETURNING bytes',
    ),
    removeUpTo: db.prepare<[string, number], { bytes: number }>(
      'DELETE FROM outbox WHERE tenant_id = ? AND seq <= ? RETURNING bytes',
    ),
    usage: db.prepare<[string], UsageRow>(
      `SELECT bytes, records, dropped_quota_oldest, dropped_quota_priority, dropped_ttl
       FROM outbox_usage WHERE tenant_id = ?`,
    ),
    setUsage: db.prepare<[string, number, number, number, number, number]>(
      `INSERT INTO outbox_usage
         (tenant_id, bytes, records, dropped_quota_oldest, dropped_quota_priority, dropped_ttl)
       VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (tenant_id) DO UPDATE SET bytes = excluded.bytes, records = excluded.records,
         dropped_quota_oldest = excluded.dropped_quota_oldest,
         dropped_quota_priority = excluded.dropped_quota_priority, dropped_ttl = excluded.dropped_ttl`,
    ),
    figures: db.prepare<[], UsageRow & { tenant_id: string }>(
      'SELECT * FROM outbox_usage ORDER BY tenant_id',
    ),
    audit: db.prepare<[string, string, string, number, number, OutboxDropReason, number]>(
      'INSERT INTO outbox_drops (tenant_id, function, stream, seq, bytes, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?)',
    ),
    trimAudit: db.prepare<{ tenantId: string; keep: number }>(
      `DELETE FROM outbox_drops WHERE tenant_id = @tenantId AND id <= (
         SELECT id FROM outbox_drops WHERE tenant_id = @tenantId ORDER BY id DESC LIMIT 1 OFFSET @keep)`,
    ),
    drops: db.prepare<[string, number, number], DropRow>(
      'SELECT * FROM outbox_drops WHERE tenant_id = ? AND id < ? ORDER BY id DESC LIMIT ?',
    ),
  }

  const requireOpen = (): void => {
    if (closed) throw new Error('Cannot use the outbox as it is closed')
  }
  const readUsage = (tenantId: string): UsageRow => ({ ...(sql.usage.get(tenantId) ?? EMPTY_USAGE) })
  const writeUsage = (tenantId: string, usage: UsageRow): void => {
    sql.setUsage.run(
      tenantId,
      usage.bytes,
      usage.records,
      usage.dropped_quota_oldest,
      usage.dropped_quota_priority,
      usage.dropped_ttl,
    )
  }
  const droppedTotal = (usage: UsageRow): number =>
    usage.dropped_quota_oldest + usage.dropped_quota_priority + usage.dropped_ttl

  /** Deletes, audits and counts dropped records of one tenant; trims the audit when due. */
  const drop = (
    tenantId: string,
    usage: UsageRow,
    victims: readonly VictimRow[],
    reason: OutboxDropReason,
    at: number,
  ): void => {
    const before = droppedTotal(usage)
    for (const victim of victims) {
      sql.deleteSeq.run(victim.seq)
      sql.audit.run(tenantId, victim.function, victim.stream, victim.seq, victim.bytes, reason, at)
      usage.bytes -= victim.bytes
      usage.records -= 1
      usage[DROP_COLUMN[reason]] += 1
    }
    if (Math.floor(before / trimEvery) !== Math.floor(droppedTotal(usage) / trimEvery)) {
      sql.trimAudit.run({ tenantId, keep: auditRecords })
    }
  }

  /** Adds a record's AD: what the seal binds it to, unambiguously encoded. */
  const additionalData = (tenantId: string, stream: string, fn: string): string =>
    JSON.stringify(['taureau-outbox-v1', tenantId, stream, fn])

  // Nonces come from the OS CSPRNG a pool at a time, not a system call per record.
  const noncePool = Buffer.alloc(NONCE_BYTES * NONCE_POOL)
  let nonceAt = noncePool.length
  const seal = (plaintext: Uint8Array, ad: string): Buffer => {
    if (nonceAt === noncePool.length) {
      randomFillSync(noncePool)
      nonceAt = 0
    }
    const nonce = noncePool.subarray(nonceAt, nonceAt + NONCE_BYTES)
    nonceAt += NONCE_BYTES
    const ciphertext = xchachaSeal(plaintext, Buffer.from(ad), nonce, key)
    const sealed = Buffer.allocUnsafe(NONCE_BYTES + ciphertext.length)
    sealed.set(nonce, 0)
    sealed.set(ciphertext, NONCE_BYTES)
    return sealed
  }

  const decoder = new TextDecoder('utf-8', { fatal: true })
  const open = (row: RecordRow): unknown => {
    if (!(row.sealed instanceof Uint8Array) || row.sealed.length < NONCE_BYTES + TAG_BYTES) {
      throw new OutboxSealError(row.tenant_id, row.seq, 'its sealed bytes are too short to hold a record')
    }
    let plaintext: Uint8Array
    try {
      plaintext = xchachaOpen(
        row.sealed.subarray(NONCE_BYTES),
        Buffer.from(additionalData(row.tenant_id, row.stream, row.function)),
        row.sealed.subarray(0, NONCE_BYTES),
        key,
      )
    } catch (cause) {
      throw new OutboxSealError(
        row.tenant_id,
        row.seq,
        'its seal does not verify: it was altered, moved to another tenant, stream or function, or sealed with another key',
        cause,
      )
    }
    try {
      return JSON.parse(decoder.decode(plaintext))
    } catch (cause) {
      throw new OutboxSealError(row.tenant_id, row.seq, 'its opened bytes are not JSON', cause)
    }
  }

  const encoder = new TextEncoder()
  const append = db.transaction(
    (tenantId: string, quotas: Quotas, rows: readonly OutboxRow[]): OutboxAppendResult => {
      const at = now()
      const quotaBytes = quotas.outboxBytes
      const usage = readUsage(tenantId)
      const result: OutboxAppendResult = { seqs: [], bytes: 0, droppedRecords: 0, droppedBytes: 0 }
      for (const row of rows) {
        let json: string
        try {
          json = JSON.stringify(row.record) ?? 'null'
        } catch (cause) {
          throw new GatewayError(
            GATEWAY_ERROR_CODES.invalidInput,
            `Cannot append to the outbox of tenant ${quote(tenantId)} as a record of stream ${quote(row.stream)} is not JSON: ${(cause as Error).message}`,
            { cause },
          )
        }
        const plaintext = encoder.encode(json)
        const bytes = plaintext.length + Buffer.byteLength(row.stream)
        const priority = Object.hasOwn(quotas.outboxStreamPriorities, row.stream)
          ? (quotas.outboxStreamPriorities[row.stream] as number)
          : 0
        const needBytes = usage.bytes + bytes - quotaBytes
        if (bytes > quotaBytes) {
          throw new OutboxFullError(
            tenantId,
            usage.bytes,
            bytes,
            quotaBytes,
            `a record of ${bytes} bytes on stream ${quote(row.stream)} is larger than its whole quota of ${quotaBytes} bytes`,
          )
        }
        if (needBytes > 0) {
          const bound = `${usage.bytes} bytes used + ${bytes} new > quota ${quotaBytes} bytes (policy '${quotas.outboxPolicy}')`
          if (quotas.outboxPolicy === 'refuse') {
            throw new OutboxFullError(tenantId, usage.bytes, bytes, quotaBytes, `it is full: ${bound}`)
          }
          const victims: VictimRow[] = []
          let freedBytes = 0
          const lowestFirst = quotas.outboxPolicy === 'drop-lowest-priority'
          for (const victim of (lowestFirst ? sql.lowest : sql.oldest).iterate(tenantId)) {
            // A record displaces only records of its own priority or lower ("higher is kept longer").
            if (lowestFirst && victim.priority > priority) break
            victims.push(victim)
            freedBytes += victim.bytes
            if (freedBytes >= needBytes) break
          }
          if (freedBytes < needBytes) {
            throw new OutboxFullError(
              tenantId,
              usage.bytes,
              bytes,
              quotaBytes,
              `only records of a higher priority than the record's (${priority}, stream ${quote(row.stream)}) could make room: ${bound}`,
            )
          }
          drop(tenantId, usage, victims, lowestFirst ? 'quota_priority' : 'quota_oldest', at)
          result.droppedRecords += victims.length
          result.droppedBytes += freedBytes
        }
        const sealed = seal(plaintext, additionalData(tenantId, row.stream, row.function))
        const inserted = sql.insert.run(
          tenantId,
          row.function,
          row.stream,
          priority,
          sealed,
          bytes,
          at,
          at + quotas.outboxTtlMs,
        )
        result.seqs.push(Number(inserted.lastInsertRowid))
        result.bytes += bytes
        usage.bytes += bytes
        usage.records += 1
      }
      writeUsage(tenantId, usage)
      return result
    },
  )

  const remove = db.transaction((tenantId: string, which: OutboxRemoval): number => {
    let removed: Array<{ bytes: number }>
    if ('upToSeq' in which) removed = sql.removeUpTo.all(tenantId, which.upToSeq)
    else {
      removed = []
      for (const seq of which.seqs) {
        const row = sql.removeSeq.get(tenantId, seq)
        if (row !== undefined) removed.push(row)
      }
    }
    if (removed.length === 0) return 0
    const usage = readUsage(tenantId)
    for (const row of removed) usage.bytes -= row.bytes
    usage.records -= removed.length
    writeUsage(tenantId, usage)
    return removed.length
  })

  const sweep = db.transaction((at: number, maxRecords: number): number => {
    const expired = sql.expired.all(at, maxRecords)
    const byTenant = new Map<string, VictimRow[]>()
    for (const row of expired) {
      const victims = byTenant.get(row.tenant_id)
      if (victims === undefined) byTenant.set(row.tenant_id, [row])
      else victims.push(row)
    }
    for (const [tenantId, victims] of byTenant) {
      const usage = readUsage(tenantId)
      drop(
        tenantId,
        usage,
        victims.sort((a, b) => a.seq - b.seq),
        'ttl',
        at,
      )
      writeUsage(tenantId, usage)
    }
    return expired.length
  })

  const checkLimit = (limit: number): void => {
    if (!Number.isInteger(limit) || limit < 1 || limit > OUTBOX_LIST_LIMIT) {
      throw new RangeError(
        `Cannot read the outbox as limit ${limit} is not an integer in 1..${OUTBOX_LIST_LIMIT}`,
      )
    }
  }

  // Figures are read from the store at scrape time: they were written with the records, so a
  // rolled back append is never counted and counts survive a restart.
  options.metrics?.observe(function* (): Iterable<OutboxFigures> {
    if (closed || !db.open) return
    for (const row of sql.figures.iterate()) {
      yield {
        tenantId: row.tenant_id,
        bytes: row.bytes,
        records: row.records,
        dropped: {
          quota_oldest: row.dropped_quota_oldest,
          quota_priority: row.dropped_quota_priority,
          ttl: row.dropped_ttl,
        },
      }
    }
  })

  let appendNoticed = false
  const recordOf = (row: RecordRow): OutboxRecord => ({
    seq: row.seq,
    tenantId: row.tenant_id,
    function: row.function,
    stream: row.stream,
    priority: row.priority,
    record: open(row),
    bytes: row.bytes,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
  })

  const close = (): void => {
    if (closed) return
    closed = true
    key.fill(0)
    noncePool.fill(0)
  }

  return {
    append(tenantId, quotas, rows) {
      requireOpen()
      if (rows.length === 0) return { seqs: [], bytes: 0, droppedRecords: 0, droppedBytes: 0 }
      const result = append(tenantId, quotas, rows)
      if (options.onAppend !== undefined && !appendNoticed) {
        appendNoticed = true
        queueMicrotask(() => {
          appendNoticed = false
          options.onAppend?.()
        })
      }
      return result
    },
    list(tenantId, afterSeq, limit) {
      requireOpen()
      checkLimit(limit)
      return sql.list.all(tenantId, afterSeq, limit).map(recordOf)
    },
    listAll(afterSeq, limit) {
      requireOpen()
      checkLimit(limit)
      return sql.listAll.all(afterSeq, limit).map((row) => {
        try {
          return recordOf(row)
        } catch (error) {
          if (error instanceof OutboxSealError) return error
          throw error
        }
      })
    },
    remove(tenantId, which) {
      requireOpen()
      return remove(tenantId, which)
    },
    usage(tenantId) {
      requireOpen()
      const quotas = quotasOf(tenantId)
      if (quotas === undefined) {
        throw new GatewayError(GATEWAY_ERROR_CODES.notFound, `Cannot find tenant ${quote(tenantId)}`)
      }
      const usage = sql.usage.get(tenantId) ?? EMPTY_USAGE
      return { bytes: usage.bytes, records: usage.records, quotaBytes: quotas.outboxBytes }
    },
    drops(tenantId, limit, beforeId) {
      requireOpen()
      checkLimit(limit)
      return sql.drops.all(tenantId, beforeId ?? Number.MAX_SAFE_INTEGER, limit).map((row) => ({
        id: row.id,
        tenantId: row.tenant_id,
        function: row.function,
        stream: row.stream,
        seq: row.seq,
        bytes: row.bytes,
        reason: row.reason,
        at: row.at,
      }))
    },
    sweep(at = now(), maxRecords = OUTBOX_SWEEP_RECORDS) {
      requireOpen()
      if (!Number.isInteger(maxRecords) || maxRecords < 1) {
        throw new RangeError(`Cannot sweep the outbox as maxRecords ${maxRecords} is not a positive integer`)
      }
      return sweep(at, maxRecords)
    },
    close,
    [Symbol.dispose]: close,
  }
}

/**
 * Loads the key that seals outbox records at rest: from `TAUREAU_OUTBOX_KEY` (base64 or base64url
 * of exactly 32 bytes) when set, else from `DATA/outbox.key` (32 raw bytes), which is created
 * atomically with mode 0600 on first start. A key file that group or others may read is set back
 * to 0600, as the store and the admin token are; a key file of another size is refused.
 */
export function loadOutboxKey(dataDir: string, env: NodeJS.ProcessEnv = process.env): Uint8Array {
  const fromEnv = env[OUTBOX_KEY_ENV]
  if (fromEnv !== undefined) return _decodeKey(fromEnv)
  const file = join(dataDir, OUTBOX_KEY_FILE)
  try {
    if (!fileExists(file)) createSecretFile(file, randomBytes(OUTBOX_KEY_BYTES))
    const stat = statSync(file)
    if (!stat.isFile()) throw new Error('it is not a regular file')
    if ((stat.mode & 0o077) !== 0) chmodSync(file, 0o600)
    const key = readFileSync(file)
    if (key.length !== OUTBOX_KEY_BYTES) {
      throw new Error(`it holds ${key.length} bytes, not ${OUTBOX_KEY_BYTES}`)
    }
    return new Uint8Array(key)
  } catch (cause) {
    throw new GatewayError(
      GATEWAY_ERROR_CODES.invalidConfig,
      `Cannot load the outbox key ${quote(file, 200)} as ${(cause as Error).message}`,
      { cause, field: OUTBOX_KEY_FILE },
    )
  }
}

function _decodeKey(value: string): Uint8Array {
  const fail = (why: string): never => {
    // The value is a secret: the message never quotes it.
    throw new GatewayError(GATEWAY_ERROR_CODES.invalidConfig, `Cannot use ${OUTBOX_KEY_ENV} as ${why}`, {
      field: OUTBOX_KEY_ENV,
    })
  }
  const text = value.trim()
  if (text === '') fail('it is empty (unset it to use the key file)')
  const standard = text.replace(/-/g, '+').replace(/_/g, '/')
  const padded = standard.padEnd(Math.ceil(standard.length / 4) * 4, '=')
  const key = Buffer.from(padded, 'base64')
  // Node's decoder skips what it cannot read; re-encoding catches that and stray bits.
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(padded) || key.toString('base64') !== padded) {
    fail('it is not valid base64')
  }
  if (key.length !== OUTBOX_KEY_BYTES) {
    fail(
      `it decodes to ${key.length} bytes, not ${OUTBOX_KEY_BYTES} (make one with: openssl rand -base64 32)`,
    )
  }
  return new Uint8Array(key)
}
