import type Database from 'better-sqlite3'
import {
  STATE_LIMITS,
  type StateLease,
  type StateWrite,
  stateKeyProblem,
  stateNamespaceProblem,
  statePrefixEnd,
  stateTtlProblem,
} from '../sandbox/index.ts'
import type { Quotas } from './config.ts'
import { GATEWAY_ERROR_CODES, type GatewayErrorCode, quote } from './errors.ts'
import { FUNCTION_NAME_PATTERN } from './function-spec.ts'

/** A change of one key, for the functions triggered by changes in its namespace (`onState`). */
export interface StateChange {
  tenantId: string
  namespace: string
  key: string
  op: 'set' | 'delete'
  /** The value's JSON text after a set (an increment is a set of the sum); null after a delete. */
  value: string | null
}

/** A stored key. `bytes` is what it counts against the tenant's quota: key and JSON value, in UTF-8. */
export interface StateEntry {
  namespace: string
  key: string
  /** JSON text. */
  value: string
  bytes: number
  expiresAt: number | null
  updatedAt: number
}

/** What a tenant's state takes: keys and bytes stored (expired keys count until swept). */
export interface StateUsage {
  keys: number
  bytes: number
}

/** A namespace of a tenant, with what it stores and its lease, if it has one. */
export interface StateNamespace extends StateUsage {
  namespace: string
  leaseExpiresAt: number | null
}

/** The quotas `apply()` enforces. */
export type StateQuotas = Pick<Quotas, 'maxStateKeys' | 'maxStateBytes'>

/**
 * Why `apply()` refused one call's writes; none of them was written and the call fails with this
 * message. `code` is the gateway error code the API answers with.
 */
export class StateWriteError extends Error {
  override readonly name: string = 'StateWriteError'
  readonly code: GatewayErrorCode

  constructor(code: GatewayErrorCode, message: string) {
    super(message)
    this.code = code
  }
}

/** The writes would take the tenant over its `maxStateKeys` or `maxStateBytes` quota. */
export class StateQuotaError extends StateWriteError {
  override readonly name = 'StateQuotaError'
  /** What the tenant would store with the writes. */
  readonly usage: StateUsage

  constructor(message: string, usage: StateUsage) {
    super(GATEWAY_ERROR_CODES.limitReached, message)
    this.usage = usage
  }
}

/** Options of {@link createStateStore}. */
export interface StateStoreOptions {
  /** The wall clock leases are set and checked against, in ms since the epoch. */
  now?: () => number
}

/**
 * Function state in the gateway's SQLite database (tables `state` and `state_leases`), on the
 * main thread's connection: the only writer. A function's private namespace is `@` and its name
 * (function names never hold `@`); a shared namespace is its path.
 */
export interface StateStore {
  /**
   * Applies one call's writes and namespace leases, all or nothing (a savepoint inside the
   * caller's transaction), and returns the changes for triggers. A namespace whose lease lapsed
   * loses its keys (and the lease) before anything is written to it. `functionName` is the writing
   * function, whose private namespace is the only one it may name; null for an edit through the
   * API. Throws {@link StateWriteError} (quota: {@link StateQuotaError}) for writes it refuses.
   */
  apply(
    tenantId: string,
    functionName: string | null,
    writes: readonly StateWrite[],
    leases: readonly StateLease[],
    quotas: StateQuotas,
  ): StateChange[]
  /** A live key: undefined when there is none, it expired, or its namespace's lease lapsed. */
  get(tenantId: string, namespace: string, key: string): StateEntry | undefined
  /** Up to `limit` live keys above `after` starting with `prefix`, in order, without their values. */
  list(
    tenantId: string,
    namespace: string,
    prefix: string,
    limit: number,
    after?: string,
  ): Array<Omit<StateEntry, 'value'>>
  /** The tenant's namespaces that hold keys or a lease, in order. */
  namespaces(tenantId: string): StateNamespace[]
  /** Sets a key from the API (`valueJson` is JSON text): apply() with one write. */
  put(
    tenantId: string,
    namespace: string,
    key: string,
    valueJson: string,
    ttlMs: number | undefined,
    quotas: StateQuotas,
  ): StateChange[]
  /** Deletes a key from the API; no change when there was none. */
  delete(tenantId: string, namespace: string, key: string): StateChange[]
  /**
   * Deletes up to `limit` expired keys, then the keys of namespaces whose lease lapsed (and the
   * lease once its namespace is empty), and returns the deletes; a full answer means there may be
   * more. In a transaction of its own, or a savepoint of the caller's.
   */
  sweep(now?: number, limit?: number): StateChange[]
  /** Keys and bytes the tenant stores: a running total, not a scan. */
  usage(tenantId: string): StateUsage
}

/** Most writes one apply() takes: the sandbox sends at most `maxEffects` (100) per call. */
const MAX_WRITES_PER_APPLY = 1000
const SWEEP_BATCH = 1000

/**
 * Running totals per tenant and namespace, kept by triggers in the connection's temp schema: they
 * cost one indexed update per row written and roll back with the writes, where counting a tenant's
 * rows would read all its values (the state table has no rowid, so its rows are its index). A
 * tenant's totals are counted once, when first needed; the triggers keep only counted tenants'.
 * So they see this connection's writes only: the gateway's single writer.
 */
const USAGE_SCHEMA = `
  CREATE TEMP TABLE IF NOT EXISTS state_usage_tenants (
    tenant_id TEXT PRIMARY KEY, keys INTEGER NOT NULL, bytes INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TEMP TABLE IF NOT EXISTS state_usage (
    tenant_id TEXT NOT NULL, namespace TEXT NOT NULL, keys INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, namespace)
  ) WITHOUT ROWID;
  CREATE TEMP TRIGGER IF NOT EXISTS state_usage_insert AFTER INSERT ON main.state
  WHEN EXISTS (SELECT 1 FROM state_usage_tenants WHERE tenant_id = NEW.tenant_id)
  BEGIN
    UPDATE state_usage_tenants SET keys = keys + 1, bytes = bytes + NEW.bytes WHERE tenant_id = NEW.tenant_id;
    INSERT INTO state_usage (tenant_id, namespace, keys, bytes) VALUES (NEW.tenant_id, NEW.namespace, 1, NEW.bytes)
      ON CONFLICT (tenant_id, namespace) DO UPDATE SET keys = keys + 1, bytes = bytes + excluded.bytes;
  END;
  CREATE TEMP TRIGGER IF NOT EXISTS state_usage_delete AFTER DELETE ON main.state
  WHEN EXISTS (SELECT 1 FROM state_usage_tenants WHERE tenant_id = OLD.tenant_id)
  BEGIN
    UPDATE state_usage_tenants SET keys = keys - 1, bytes = bytes - OLD.bytes WHERE tenant_id = OLD.tenant_id;
    UPDATE state_usage SET keys = keys - 1, bytes = bytes - OLD.bytes
      WHERE tenant_id = OLD.tenant_id AND namespace = OLD.namespace;
    DELETE FROM state_usage WHERE tenant_id = OLD.tenant_id AND namespace = OLD.namespace AND keys = 0;
  END;
  CREATE TEMP TRIGGER IF NOT EXISTS state_usage_update AFTER UPDATE OF bytes ON main.state
  WHEN NEW.bytes <> OLD.bytes AND EXISTS (SELECT 1 FROM state_usage_tenants WHERE tenant_id = NEW.tenant_id)
  BEGIN
    UPDATE state_usage_tenants SET bytes = bytes + NEW.bytes - OLD.bytes WHERE tenant_id = NEW.tenant_id;
    UPDATE state_usage SET bytes = bytes + NEW.bytes - OLD.bytes
      WHERE tenant_id = NEW.tenant_id AND namespace = NEW.namespace;
  END;
`

interface StateRow {
  namespace: string
  key: string
  value: string
  bytes: number
  expires_at: number | null
  updated_at: number
}

/** Creates the state store on the gateway's open database (migration 4 made its tables). */
export function createStateStore(db: Database.Database, options: StateStoreOptions = {}): StateStore {
  const clock = options.now ?? Date.now
  db.exec(USAGE_SCHEMA)
  // A key is live while it has not expired and its namespace's lease has not lapsed.
  const live = `(expires_at IS NULL OR expires_at > :now) AND NOT EXISTS (
    SELECT 1 FROM state_leases WHERE tenant_id = :tenant AND namespace = :namespace AND expires_at <= :now)`
  const keyColumns = 'namespace, key, bytes, expires_at, updated_at'
  const range = 'tenant_id = :tenant AND namespace = :namespace AND key >= :prefix AND key > :after'
  const sql = {
    counted: db.prepare('SELECT 1 FROM state_usage_tenants WHERE tenant_id = ?').pluck(),
    countTenant: db.prepare(
      'INSERT INTO state_usage_tenants SELECT :tenant, count(*), coalesce(sum(bytes), 0) FROM state WHERE tenant_id = :tenant',
    ),
    countNamespaces: db.prepare(
      'INSERT INTO state_usage SELECT tenant_id, namespace, count(*), sum(bytes) FROM state WHERE tenant_id = ? GROUP BY namespace',
    ),
    usage: db.prepare('SELECT keys, bytes FROM state_usage_tenants WHERE tenant_id = ?'),
    usageByNamespace: db.prepare(
      'SELECT namespace, keys, bytes FROM state_usage WHERE tenant_id = ? ORDER BY namespace',
    ),
    leases: db.prepare('SELECT namespace, expires_at FROM state_leases WHERE tenant_id = ?'),
    get: db.prepare(
      `SELECT namespace, key, value, bytes, expires_at, updated_at FROM state
       WHERE tenant_id = :tenant AND namespace = :namespace AND key = :key AND ${live}`,
    ),
    list: db.prepare(`SELECT ${keyColumns} FROM state WHERE ${range} AND ${live} ORDER BY key LIMIT :limit`),
    listBelow: db.prepare(
      `SELECT ${keyColumns} FROM state WHERE ${range} AND key < :end AND ${live} ORDER BY key LIMIT :limit`,
    ),
    current: db.prepare(
      'SELECT value, expires_at FROM state WHERE tenant_id = ? AND namespace = ? AND key = ?',
    ),
    upsert: db.prepare(
      `INSERT INTO state (tenant_id, namespace, key, value, bytes, expires_at, updated_at)
       VALUES (:tenant, :namespace, :key, :value, :bytes, :expiresAt, :now)
       ON CONFLICT (tenant_id, namespace, key) DO UPDATE SET value = excluded.value,
         bytes = excluded.bytes, expires_at = excluded.expires_at, updated_at = excluded.updated_at`,
    ),
    // An increment keeps the key's lease.
    increment: db.prepare(
      'UPDATE state SET value = ?, bytes = ?, updated_at = ? WHERE tenant_id = ? AND namespace = ? AND key = ?',
    ),
    deleteKey: db.prepare('DELETE FROM state WHERE tenant_id = ? AND namespace = ? AND key = ?'),
    lease: db.prepare('SELECT expires_at FROM state_leases WHERE tenant_id = ? AND namespace = ?').pluck(),
    setLease: db.prepare(
      `INSERT INTO state_leases (tenant_id, namespace, expires_at) VALUES (?, ?, ?)
       ON CONFLICT (tenant_id, namespace) DO UPDATE SET expires_at = excluded.expires_at`,
    ),
    deleteLease: db.prepare('DELETE FROM state_leases WHERE tenant_id = ? AND namespace = ?'),
    purge: db
      .prepare(
        `DELETE FROM state WHERE tenant_id = :tenant AND namespace = :namespace AND key IN (
           SELECT key FROM state WHERE tenant_id = :tenant AND namespace = :namespace ORDER BY key LIMIT :limit)
         RETURNING key`,
      )
      .pluck(),
    expired: db.prepare(
      'SELECT tenant_id, namespace, key FROM state WHERE expires_at <= ? ORDER BY expires_at LIMIT ?',
    ),
    lapsed: db.prepare('SELECT tenant_id, namespace FROM state_leases WHERE expires_at <= ? LIMIT ?'),
  }

  /** Counts a tenant's usage the first time it is needed on this connection. */
  const countUsage = db.transaction((tenantId: string) => {
    if (sql.counted.get(tenantId) !== undefined) return
    sql.countTenant.run({ tenant: tenantId })
    sql.countNamespaces.run(tenantId)
  })
  const usage = (tenantId: string): StateUsage => {
    countUsage(tenantId)
    return sql.usage.get(tenantId) as StateUsage
  }

  /** Deletes the keys of a namespace whose lease lapsed, and the lease, before it is written to. */
  const purgeIfLapsed = (tenantId: string, namespace: string, at: number, changes: StateChange[]) => {
    const expiresAt = sql.lease.get(tenantId, namespace) as number | undefined
    if (expiresAt === undefined || expiresAt > at) return
    const keys = sql.purge.all({ tenant: tenantId, namespace, limit: -1 }) as string[]
    for (const key of keys) changes.push({ tenantId, namespace, key, op: 'delete', value: null })
    sql.deleteLease.run(tenantId, namespace)
  }

  const write = (tenantId: string, change: StateWrite, at: number, changes: StateChange[]): void => {
    const { namespace, key } = change
    if (change.op === 'delete') {
      if (sql.deleteKey.run(tenantId, namespace, key).changes > 0) {
        changes.push({ tenantId, namespace, key, op: 'delete', value: null })
      }
      return
    }
    if (change.op === 'set') {
      const value = change.value as string
      sql.upsert.run({
        tenant: tenantId,
        namespace,
        key,
        value,
        bytes: Buffer.byteLength(key) + Buffer.byteLength(value),
        expiresAt: change.ttlMs === undefined ? null : at + change.ttlMs,
        now: at,
      })
      changes.push({ tenantId, namespace, key, op: 'set', value })
      return
    }
    // incr: read-modify-write, in this transaction, by the only writer.
    const by = change.by as number
    const row = sql.current.get(tenantId, namespace, key) as
      | { value: string; expires_at: number | null }
      | undefined
    const alive = row !== undefined && (row.expires_at === null || row.expires_at > at)
    const current: unknown = alive ? JSON.parse(row.value) : 0
    if (typeof current !== 'number') {
      throw new StateWriteError(
        GATEWAY_ERROR_CODES.conflict,
        `Cannot increment state key ${quote(key)} in namespace ${quote(namespace)} as its value is no longer a number`,
      )
    }
    const next = current + by
    if (!Number.isFinite(next)) {
      throw new StateWriteError(
        GATEWAY_ERROR_CODES.conflict,
        `Cannot increment state key ${quote(key)} in namespace ${quote(namespace)} as the result would not be a finite number`,
      )
    }
    const value = JSON.stringify(next)
    const bytes = Buffer.byteLength(key) + value.length
    if (alive) sql.increment.run(value, bytes, at, tenantId, namespace, key)
    else sql.upsert.run({ tenant: tenantId, namespace, key, value, bytes, expiresAt: null, now: at })
    changes.push({ tenantId, namespace, key, op: 'set', value })
  }

  const applyWrites = db.transaction(
    (
      tenantId: string,
      writes: readonly StateWrite[],
      leases: readonly StateLease[],
      quotas: StateQuotas,
      at: number,
    ): StateChange[] => {
      const before = usage(tenantId)
      const changes: StateChange[] = []
      const touched = new Set([...writes, ...leases].map((item) => item.namespace))
      for (const namespace of touched) purgeIfLapsed(tenantId, namespace, at, changes)
      for (const change of writes) write(tenantId, change, at, changes)
      for (const lease of leases) {
        if (lease.ttlMs === null) sql.deleteLease.run(tenantId, lease.namespace)
        else sql.setLease.run(tenantId, lease.namespace, at + lease.ttlMs)
      }
      const after = usage(tenantId)
      // Writes that free space pass even over a quota (one lowered below what is stored).
      const overKeys = after.keys > quotas.maxStateKeys && after.keys > before.keys
      const overBytes = after.bytes > quotas.maxStateBytes && after.bytes > before.bytes
      if (overKeys || overBytes) {
        throw new StateQuotaError(
          overKeys
            ? `Cannot write function state as tenant ${quote(tenantId)} would keep ${after.keys} keys, over its maxStateKeys quota of ${quotas.maxStateKeys}`
            : `Cannot write function state as tenant ${quote(tenantId)} would keep ${after.bytes} bytes, over its maxStateBytes quota of ${quotas.maxStateBytes}`,
          after,
        )
      }
      return changes
    },
  )

  const sweep = db.transaction((at: number, limit: number): StateChange[] => {
    const changes: StateChange[] = []
    const expired = sql.expired.all(at, limit) as Array<{ tenant_id: string; namespace: string; key: string }>
    for (const { tenant_id: tenantId, namespace, key } of expired) {
      sql.deleteKey.run(tenantId, namespace, key)
      changes.push({ tenantId, namespace, key, op: 'delete', value: null })
    }
    const lapsed = sql.lapsed.all(at, limit) as Array<{ tenant_id: string; namespace: string }>
    for (const { tenant_id: tenantId, namespace } of lapsed) {
      const room = limit - changes.length
      if (room <= 0) break
      const keys = sql.purge.all({ tenant: tenantId, namespace, limit: room }) as string[]
      for (const key of keys) changes.push({ tenantId, namespace, key, op: 'delete', value: null })
      if (keys.length < room) sql.deleteLease.run(tenantId, namespace)
    }
    return changes
  })

  const store: StateStore = {
    apply(tenantId, functionName, writes, leases, quotas) {
      checkWrites(functionName, writes, leases)
      return applyWrites(tenantId, writes, leases, quotas, clock())
    },
    get(tenantId, namespace, key) {
      const row = sql.get.get({ tenant: tenantId, namespace, key, now: clock() }) as StateRow | undefined
      return row === undefined ? undefined : { ...entryOf(row), value: row.value }
    },
    list(tenantId, namespace, prefix, limit, after = '') {
      const end = statePrefixEnd(prefix)
      const query = { tenant: tenantId, namespace, prefix, after, limit, now: clock() }
      const rows = (
        end === undefined ? sql.list.all(query) : sql.listBelow.all({ ...query, end })
      ) as StateRow[]
      return rows.map(entryOf)
    },
    namespaces(tenantId) {
      countUsage(tenantId)
      const byName = new Map<string, StateNamespace>()
      for (const row of sql.usageByNamespace.all(tenantId) as Array<StateUsage & { namespace: string }>) {
        byName.set(row.namespace, { ...row, leaseExpiresAt: null })
      }
      for (const lease of sql.leases.all(tenantId) as Array<{ namespace: string; expires_at: number }>) {
        const found = byName.get(lease.namespace)
        if (found === undefined) {
          byName.set(lease.namespace, {
            namespace: lease.namespace,
            keys: 0,
            bytes: 0,
            leaseExpiresAt: lease.expires_at,
          })
        } else found.leaseExpiresAt = lease.expires_at
      }
      return [...byName.values()].sort((a, b) => (a.namespace < b.namespace ? -1 : 1))
    },
    put: (tenantId, namespace, key, valueJson, ttlMs, quotas) =>
      store.apply(
        tenantId,
        null,
        [
          ttlMs === undefined
            ? { namespace, key, op: 'set', value: valueJson }
            : { namespace, key, op: 'set', value: valueJson, ttlMs },
        ],
        [],
        quotas,
      ),
    delete: (tenantId, namespace, key) =>
      store.apply(tenantId, null, [{ namespace, key, op: 'delete' }], [], {
        maxStateKeys: Number.POSITIVE_INFINITY,
        maxStateBytes: Number.POSITIVE_INFINITY,
      }),
    sweep: (now = clock(), limit = SWEEP_BATCH) => sweep(now, limit),
    usage,
  }
  return store
}

function entryOf(row: StateRow): Omit<StateEntry, 'value'> {
  return {
    namespace: row.namespace,
    key: row.key,
    bytes: row.bytes,
    expiresAt: row.expires_at,
    updatedAt: row.updated_at,
  }
}

/**
 * Why `namespace` cannot be written by `functionName` (null: the API, which may name any function's
 * private namespace), or undefined.
 */
export function stateNamespaceRefusal(namespace: unknown, functionName: string | null): string | undefined {
  if (typeof namespace === 'string' && namespace.startsWith('@')) {
    const name = namespace.slice(1)
    if (!FUNCTION_NAME_PATTERN.test(name)) return "a private namespace is '@' and a function's name"
    if (functionName !== null && name !== functionName)
      return 'a function may only write its own private namespace'
    return undefined
  }
  return stateNamespaceProblem(namespace)
}

/** Checks every write: the sandbox builds them, but nothing from a worker is taken on trust. */
function checkWrites(
  functionName: string | null,
  writes: readonly StateWrite[],
  leases: readonly StateLease[],
): void {
  const refuse = (why: string): never => {
    throw new StateWriteError(GATEWAY_ERROR_CODES.invalidInput, `Cannot write function state as ${why}`)
  }
  if (!Array.isArray(writes) || !Array.isArray(leases)) refuse('writes and leases come as arrays')
  if (writes.length > MAX_WRITES_PER_APPLY || leases.length > MAX_WRITES_PER_APPLY) {
    refuse(`one call may make at most ${MAX_WRITES_PER_APPLY} writes and leases`)
  }
  for (const item of [...writes, ...leases] as Array<Partial<StateWrite & StateLease>>) {
    const problem = stateNamespaceRefusal(item?.namespace, functionName)
    if (problem !== undefined) refuse(`namespace ${quote(item?.namespace)} is refused: ${problem}`)
  }
  for (const lease of leases) {
    const problem = lease.ttlMs === null ? undefined : stateTtlProblem(lease.ttlMs)
    if (problem !== undefined)
      refuse(`the lease of namespace ${quote(lease.namespace)} is refused: ${problem}`)
  }
  for (const change of writes) {
    const problem = writeProblem(change)
    if (problem !== undefined)
      refuse(`key ${quote(change.key)} of namespace ${quote(change.namespace)} is refused: ${problem}`)
  }
}

function writeProblem(change: StateWrite): string | undefined {
  const keyProblem = stateKeyProblem(change.key)
  if (keyProblem !== undefined) return keyProblem
  switch (change.op) {
    case 'delete':
      return undefined
    case 'incr':
      return typeof change.by === 'number' && Number.isFinite(change.by)
        ? undefined
        : 'the increment is not a finite number'
    case 'set': {
      if (change.ttlMs !== undefined) {
        const problem = stateTtlProblem(change.ttlMs)
        if (problem !== undefined) return problem
      }
      if (typeof change.value !== 'string') return 'the value is not JSON text'
      const bytes = Buffer.byteLength(change.value)
      if (bytes > STATE_LIMITS.maxValueBytes) {
        return `the value has ${bytes} bytes of JSON, more than ${STATE_LIMITS.maxValueBytes}`
      }
      try {
        JSON.parse(change.value)
        return undefined
      } catch {
        return 'the value is not JSON text'
      }
    }
    default:
      return "the operation is not 'set', 'delete' or 'incr'"
  }
}
