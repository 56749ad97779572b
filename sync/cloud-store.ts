import { SYNC_ERROR_CODES, SyncError } from './errors.ts'

/** A gateway registered with the cloud receiver, identified on the link by its static public key. */
export interface CloudGateway {
  name: string
  /** Base64 of the gateway's 32-byte static public key (canonical padding, so one key has one spelling). */
  publicKey: string
  addedAt: number
  /** When (ms since epoch, receiver's clock) the last handshake was accepted; null before the first. */
  lastHandshakeAt: number | null
  /** The timestamp (nanoseconds) carried by the last accepted handshake; null before the first. */
  lastHandshakeTimestamp: bigint | null
}

/** One record as decrypted from a gateway's cells. */
export interface IncomingRecord {
  /** The gateway's outbox sequence number: a positive safe integer, unique per gateway. */
  seq: number
  tenant: string
  function: string
  stream: string
  /** When the gateway created the record, ms since epoch on the gateway's clock. */
  createdAt: number
  /** The record as JSON text; stored and returned exactly as received. */
  body: string
}

/** A stored record: what the gateway sent, who sent it and when it arrived. */
export interface CloudRecord extends IncomingRecord {
  gateway: string
  receivedAt: number
}

/** Filters of {@link CloudStore.records} and {@link CloudStore.count}; all of them must match. */
export interface RecordQuery {
  gateway?: string | undefined
  tenant?: string | undefined
  stream?: string | undefined
  /** Only records with `createdAt >= since`. */
  since?: number | undefined
  /**
   * Keyset paging: only records after this one in the store's order (receivedAt, gateway, seq).
   * Pass the last record of the previous page; it must be stored.
   */
  after?: { gateway: string; seq: number } | undefined
  /** At most this many records, 1 to {@link MAX_RECORD_QUERY_LIMIT}; default {@link DEFAULT_RECORD_QUERY_LIMIT}. */
  limit?: number | undefined
}

/**
 * The cloud receiver's store: registered gateways, handshake replay protection and the records the
 * gateways sent, deduplicated by (gateway, seq). Implemented on SQLite (one receiver) and on
 * PostgreSQL (many receivers sharing one database); both pass the same contract tests.
 *
 * Removing a gateway keeps its records: they are the tenants' data, and the key is what is
 * revoked. Records are keyed by gateway name, so a gateway re-added under the same name (say,
 * with a rotated key) continues its outbox sequence and its already-stored seqs stay duplicates;
 * a different box (a fresh outbox starting at seq 1) must therefore get a new name.
 */
export interface CloudStore {
  /** Registers a gateway. Throws `RangeError` for a bad name or key, `SyncError` `conflict` when the name or key exists. */
  addGateway(name: string, publicKey: string): Promise<CloudGateway>
  /** Unregisters a gateway (its records stay); false when there was none. */
  removeGateway(name: string): Promise<boolean>
  /** All gateways, by name. */
  listGateways(): Promise<CloudGateway[]>
  /** The gateway holding this static key, if any: how the receiver identifies a peer. */
  gatewayByKey(publicKey: string): Promise<CloudGateway | undefined>
  /**
   * Replay protection for handshakes: atomically sets the gateway's last handshake timestamp
   * (bigint nanoseconds, TAI64N-like) to `timestamp` and its time to `at` only when `timestamp` is
   * greater than the stored one, and says whether it did. False also when the gateway is unknown.
   * One conditional UPDATE, so it holds across many receivers sharing one database.
   */
  acceptHandshake(name: string, timestamp: bigint, at: number): Promise<boolean>
  /**
   * Stores a batch in one transaction, skipping (gateway, seq) pairs already stored or repeated in
   * the batch (the first wins). Either the whole batch is stored or nothing: a bad record throws
   * `SyncError` `bad_record`, an unknown gateway `conflict`, a failing store `store`.
   */
  storeRecords(
    gateway: string,
    records: readonly IncomingRecord[],
    receivedAt: number,
  ): Promise<{ stored: number; duplicates: number }>
  /** Records matching the query, ordered by receivedAt, then gateway, then seq. */
  records(query?: RecordQuery): Promise<CloudRecord[]>
  /** How many records match the filters. */
  count(query?: Omit<RecordQuery, 'limit' | 'after'>): Promise<number>
  /** Closes the store after in-flight calls finish; idempotent. Later calls throw `SyncError` `closed`. */
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** Gateway names: the same rule as tenant ids (lower-case letters, digits, `-`, `_`; at most 63). */
export const GATEWAY_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/
/** Records per {@link CloudStore.storeRecords} call; the receiver acknowledges in batches below this. */
export const MAX_RECORD_BATCH = 10_000
/** Characters of a record's tenant, function and stream names. */
export const MAX_RECORD_NAME_CHARS = 256
/** What record names may not hold: PostgreSQL text cannot hold NUL, and SQLite must not differ from it. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
export const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/
/** UTF-8 bytes of a record's JSON body. */
export const MAX_RECORD_BODY_BYTES = 1024 * 1024
/** Records returned by one {@link CloudStore.records} call when the query sets no limit. */
export const DEFAULT_RECORD_QUERY_LIMIT = 1000
/** Most records one {@link CloudStore.records} call may return. */
export const MAX_RECORD_QUERY_LIMIT = 10_000

const PUBLIC_KEY_BYTES = 32
// Timestamps are stored in signed 64-bit columns (SQLite INTEGER, PostgreSQL bigint).
const MAX_TIMESTAMP = 2n ** 63n - 1n

/** Quotes a value from outside for an error message: clipped, control characters escaped. */
export function quote(value: unknown, maxChars = 64): string {
  const text = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value))
  const clipped = text.length > maxChars ? `${text.slice(0, maxChars)}…` : text
  // biome-ignore lint/suspicious/noControlCharactersInRegex: escaping control characters is the point
  return `'${clipped.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}'`
}

/** Throws `RangeError` unless `name` is a valid gateway name. */
export function checkGatewayName(name: unknown, action: string): asserts name is string {
  if (typeof name !== 'string' || !GATEWAY_NAME_PATTERN.test(name)) {
    throw new RangeError(
      `Cannot ${action} as the gateway name is not 1 to 63 lower-case letters, digits, '-' or '_': ${quote(name)}`,
    )
  }
}

/** Throws `RangeError` unless `publicKey` is the canonical base64 of 32 bytes. */
export function checkPublicKey(publicKey: unknown, action: string): asserts publicKey is string {
  // Canonical only (padded, unused bits zero): two spellings of one key would dodge the unique index.
  const ok =
    typeof publicKey === 'string' &&
    /^[A-Za-z0-9+/]{43}=$/.test(publicKey) &&
    Buffer.from(publicKey, 'base64').toString('base64') === publicKey &&
    Buffer.from(publicKey, 'base64').length === PUBLIC_KEY_BYTES
  if (!ok) {
    throw new RangeError(`Cannot ${action} as its public key is not base64 of 32 bytes: ${quote(publicKey)}`)
  }
}

/** Throws `RangeError` unless the handshake's timestamp and time fit the store. */
export function checkHandshake(name: string, timestamp: unknown, at: unknown): void {
  if (typeof timestamp !== 'bigint' || timestamp < 0n || timestamp > MAX_TIMESTAMP) {
    throw new RangeError(
      `Cannot accept a handshake of gateway ${quote(name)} as its timestamp is not a bigint from 0 to 2^63-1: ${quote(String(timestamp))}`,
    )
  }
  if (!_isTime(at)) {
    throw new RangeError(
      `Cannot accept a handshake of gateway ${quote(name)} as its time is not a non-negative safe integer: ${quote(at)}`,
    )
  }
}

/**
 * Validates a batch at the store's boundary and returns its records deduplicated by seq (first
 * wins) and sorted by seq. Sorting matters on PostgreSQL: two receivers inserting overlapping
 * batches take the unique index's locks in the same order, so they wait for each other instead of
 * deadlocking.
 */
export function checkBatch(gateway: string, records: unknown, receivedAt: unknown): IncomingRecord[] {
  const bad = (why: string) =>
    new SyncError(SYNC_ERROR_CODES.badRecord, `Cannot store records of gateway ${quote(gateway)} as ${why}`)
  checkGatewayName(gateway, `store records of gateway ${quote(gateway)}`)
  if (!Array.isArray(records)) throw bad('the batch is not an array')
  if (records.length > MAX_RECORD_BATCH) {
    throw new RangeError(
      `Cannot store records of gateway ${quote(gateway)} as the batch has ${records.length} records, more than ${MAX_RECORD_BATCH}`,
    )
  }
  if (!_isTime(receivedAt)) {
    // The receiver's own clock, not the gateway's data: misuse, not a bad record.
    throw new RangeError(
      `Cannot store records of gateway ${quote(gateway)} as the receive time is not a non-negative safe integer: ${quote(receivedAt)}`,
    )
  }
  const bySeq = new Map<number, IncomingRecord>()
  for (const [index, record] of (records as (Partial<IncomingRecord> | null)[]).entries()) {
    const what = `record ${index}`
    if (typeof record !== 'object' || record === null) throw bad(`${what} is not an object`)
    const { seq, tenant, function: fn, stream, createdAt, body } = record
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) {
      throw bad(`${what} has a seq that is not a positive safe integer: ${quote(seq)}`)
    }
    for (const [field, value] of [
      ['tenant', tenant],
      ['function', fn],
      ['stream', stream],
    ] as const) {
      if (typeof value !== 'string' || value.length === 0 || value.length > MAX_RECORD_NAME_CHARS) {
        throw bad(
          `${what} has a ${field} that is not a string of 1 to ${MAX_RECORD_NAME_CHARS} characters: ${quote(value)}`,
        )
      }
      if (CONTROL_CHARACTERS.test(value))
        throw bad(`${what} has a control character in its ${field}: ${quote(value)}`)
    }
    if (!_isTime(createdAt)) {
      throw bad(`${what} has a createdAt that is not a non-negative safe integer: ${quote(createdAt)}`)
    }
    if (typeof body !== 'string') throw bad(`${what} has a body that is not a string: ${quote(body)}`)
    const bodyBytes = Buffer.byteLength(body)
    if (bodyBytes > MAX_RECORD_BODY_BYTES) {
      throw bad(`${what} has a body of ${bodyBytes} bytes, more than ${MAX_RECORD_BODY_BYTES}`)
    }
    try {
      JSON.parse(body)
    } catch (cause) {
      throw bad(`${what} has a body that is not JSON: ${(cause as Error).message}`)
    }
    if (!bySeq.has(seq))
      bySeq.set(seq, { seq, tenant, function: fn, stream, createdAt, body } as IncomingRecord)
  }
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq)
}

/** A query with its limits checked and its default applied. */
export interface CheckedQuery {
  gateway: string | undefined
  tenant: string | undefined
  stream: string | undefined
  since: number | undefined
  after: { gateway: string; seq: number } | undefined
  limit: number
}

/** Throws `RangeError` for a malformed query; returns it with the default limit applied. */
export function checkQuery(query: RecordQuery): CheckedQuery {
  const fail = (why: string): never => {
    throw new RangeError(`Cannot query records as ${why}`)
  }
  for (const field of ['gateway', 'tenant', 'stream'] as const) {
    const value = query[field]
    if (value !== undefined && (typeof value !== 'string' || value.length > MAX_RECORD_NAME_CHARS)) {
      fail(`its ${field} is not a string of at most ${MAX_RECORD_NAME_CHARS} characters: ${quote(value)}`)
    }
  }
  if (query.since !== undefined && !Number.isSafeInteger(query.since)) {
    fail(`its since is not a safe integer: ${quote(query.since)}`)
  }
  const { after } = query
  if (
    after !== undefined &&
    (typeof after?.gateway !== 'string' || !Number.isSafeInteger(after.seq) || after.seq < 1)
  ) {
    fail(`its after is not a gateway name and a positive seq: ${quote(after)}`)
  }
  const limit = query.limit ?? DEFAULT_RECORD_QUERY_LIMIT
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_RECORD_QUERY_LIMIT) {
    fail(`its limit is not an integer from 1 to ${MAX_RECORD_QUERY_LIMIT}: ${quote(query.limit)}`)
  }
  return {
    gateway: query.gateway,
    tenant: query.tenant,
    stream: query.stream,
    since: query.since,
    after,
    limit,
  }
}

/**
 * The WHERE clause of a record query, shared by both dialects: `param(value)` adds a bound
 * parameter and returns its placeholder. `after` needs the receive time of the record it names,
 * which the caller looks up first (`afterReceivedAt`).
 */
export function recordWhere(
  query: Omit<CheckedQuery, 'limit'>,
  afterReceivedAt: number | undefined,
  param: (value: string | number) => string,
): string {
  const clauses: string[] = []
  if (query.gateway !== undefined) clauses.push(`gateway = ${param(query.gateway)}`)
  if (query.tenant !== undefined) clauses.push(`tenant = ${param(query.tenant)}`)
  if (query.stream !== undefined) clauses.push(`stream = ${param(query.stream)}`)
  if (query.since !== undefined) clauses.push(`created_at >= ${param(query.since)}`)
  if (query.after !== undefined && afterReceivedAt !== undefined) {
    // A row-value comparison matches the ORDER BY exactly and can walk its index.
    clauses.push(
      `(received_at, gateway, seq) > (${param(afterReceivedAt)}, ${param(query.after.gateway)}, ${param(query.after.seq)})`,
    )
  }
  return clauses.length === 0 ? '' : `WHERE ${clauses.join(' AND ')}`
}

/** The error for paging after a record that is not stored. */
export function unknownAfter(after: { gateway: string; seq: number }): RangeError {
  return new RangeError(
    `Cannot query records after seq ${after.seq} of gateway ${quote(after.gateway)} as that record is not stored`,
  )
}

/** The conflict error for a new gateway whose insert was skipped: its name or its key is taken. */
export function gatewayConflict(
  name: string,
  sameName: { name: string } | undefined,
  sameKey: { name: string } | undefined,
): SyncError {
  const why =
    sameName !== undefined
      ? 'it exists'
      : sameKey !== undefined
        ? `its public key belongs to gateway ${quote(sameKey.name)}`
        : // Taken and released again between the insert and the look-ups (another receiver).
          'its name or public key was taken'
  return new SyncError(SYNC_ERROR_CODES.conflict, `Cannot add gateway ${quote(name)} as ${why}`)
}

/** The error for a call on a closed store. */
export function closedError(action: string): SyncError {
  return new SyncError(SYNC_ERROR_CODES.closed, `Cannot ${action} as the cloud store is closed`)
}

/**
 * Passes our own errors through and wraps anything else (disk, server, driver) in `SyncError`
 * `store`, so callers know nothing was stored or acknowledged.
 */
export function storeFailure(action: string, cause: unknown): Error {
  if (cause instanceof SyncError || cause instanceof RangeError || cause instanceof TypeError) return cause
  return new SyncError(
    SYNC_ERROR_CODES.store,
    `Cannot ${action} as the store failed: ${(cause as Error)?.message ?? String(cause)}`,
    { cause },
  )
}

function _isTime(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}
