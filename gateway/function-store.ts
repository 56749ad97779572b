import type Database from 'better-sqlite3'
import { GATEWAY_ERROR_CODES, GatewayError, quote } from './errors.ts'
import type { FunctionSpec } from './function-spec.ts'

/** A tenant's function: which version runs and whether it runs at all. */
export interface FunctionRecord {
  tenantId: string
  name: string
  currentVersion: number
  latestVersion: number
  enabled: boolean
  createdAt: number
  updatedAt: number
}

/** One immutable version of a function. */
export interface FunctionVersion {
  version: number
  source: string
  spec: FunctionSpec
  createdAt: number
}

/** A message (or schedule tick) a function failed on, kept with the reason. */
export interface DeadLetter {
  id: number
  tenantId: string
  function: string
  version: number
  /** The invocation's input: `{ handler, message? }`, payload bytes as base64. */
  message: unknown
  /** The sandbox's error code (`deadline`, `memory`, `handler_threw`, ...) or `queue_full`. */
  reason: string
  error: string
  createdAt: number
}

/** One record for the uplink, from `ctx.emit`. */
export interface OutboxInsert {
  tenantId: string
  function: string
  stream: string
  record: unknown
}

/**
 * Functions, their versions, dead letters and the outbox, on the gateway's SQLite store. Only the
 * main thread calls it (single writer).
 */
export interface FunctionStore {
  list(tenantId: string): FunctionRecord[]
  /** Every function of every tenant, for loading them on start. */
  listAll(): FunctionRecord[]
  get(tenantId: string, name: string): FunctionRecord | undefined
  versions(tenantId: string, name: string): FunctionVersion[]
  version(tenantId: string, name: string, version: number): FunctionVersion | undefined
  /**
   * Stores a new version and makes it current, creating the function on its first deploy. Versions
   * older than the newest `keep` are pruned, except the one that runs.
   */
  deploy(
    tenantId: string,
    name: string,
    source: string,
    spec: FunctionSpec,
    enabled: boolean,
    keep: number,
  ): { fn: FunctionRecord; version: FunctionVersion }
  setCurrent(tenantId: string, name: string, version: number): FunctionRecord
  setEnabled(tenantId: string, name: string, enabled: boolean): FunctionRecord
  delete(tenantId: string, name: string): boolean
  /**
   * Writes the effects of a batch of invocations in one transaction: outbox records and dead
   * letters. A tenant keeps at most `deadLetterLimit` dead letters; the oldest go first.
   */
  commitResults(outbox: readonly OutboxInsert[], deadLetters: readonly Omit<DeadLetter, 'id'>[]): void
  deadLetters(tenantId: string, name: string | undefined, limit: number, beforeId?: number): DeadLetter[]
  /** Deletes dead letters (all of a tenant, or of one function); returns how many. */
  purgeDeadLetters(tenantId: string, name: string | undefined): number
  /** Outbox records of a tenant in order, for the uplink and for inspection. */
  outbox(
    tenantId: string,
    afterSeq: number,
    limit: number,
  ): Array<OutboxInsert & { seq: number; createdAt: number }>
}

interface FunctionRow {
  tenant_id: string
  name: string
  current_version: number
  latest_version: number
  enabled: number
  created_at: number
  updated_at: number
}

interface VersionRow {
  version: number
  source: string
  spec: string
  created_at: number
}

interface DeadLetterRow {
  id: number
  tenant_id: string
  function: string
  version: number
  message: string
  reason: string
  error: string
  created_at: number
}

const toFunction = (row: FunctionRow): FunctionRecord => ({
  tenantId: row.tenant_id,
  name: row.name,
  currentVersion: row.current_version,
  latestVersion: row.latest_version,
  enabled: row.enabled === 1,
  createdAt: row.created_at,
  updatedAt: row.updated_at,
})

const toVersion = (row: VersionRow): FunctionVersion => ({
  version: row.version,
  source: row.source,
  spec: JSON.parse(row.spec) as FunctionSpec,
  createdAt: row.created_at,
})

/** Creates the function store on an open (migrated) database. */
export function createFunctionStore(
  db: Database.Database,
  options: { now?: () => number; deadLetterLimit?: number } = {},
): FunctionStore {
  const now = options.now ?? Date.now
  const deadLetterLimit = options.deadLetterLimit ?? 1000
  const sql = {
    list: db.prepare<[string], FunctionRow>('SELECT * FROM functions WHERE tenant_id = ? ORDER BY name'),
    listAll: db.prepare<[], FunctionRow>('SELECT * FROM functions ORDER BY tenant_id, name'),
    get: db.prepare<[string, string], FunctionRow>(
      'SELECT * FROM functions WHERE tenant_id = ? AND name = ?',
    ),
    insert: db.prepare(
      `INSERT INTO functions (tenant_id, name, current_version, latest_version, enabled, created_at, updated_at)
       VALUES (?, ?, 1, 1, ?, ?, ?)`,
    ),
    bump: db.prepare(
      `UPDATE functions SET current_version = ?, latest_version = ?, enabled = ?, updated_at = ?
       WHERE tenant_id = ? AND name = ?`,
    ),
    setCurrent: db.prepare(
      'UPDATE functions SET current_version = ?, updated_at = ? WHERE tenant_id = ? AND name = ?',
    ),
    setEnabled: db.prepare(
      'UPDATE functions SET enabled = ?, updated_at = ? WHERE tenant_id = ? AND name = ?',
    ),
    delete: db.prepare('DELETE FROM functions WHERE tenant_id = ? AND name = ?'),
    deleteDeadLettersOf: db.prepare('DELETE FROM dead_letters WHERE tenant_id = ? AND function = ?'),
    versions: db.prepare<[string, string], VersionRow>(
      'SELECT version, source, spec, created_at FROM function_versions WHERE tenant_id = ? AND name = ? ORDER BY version DESC',
    ),
    version: db.prepare<[string, string, number], VersionRow>(
      'SELECT version, source, spec, created_at FROM function_versions WHERE tenant_id = ? AND name = ? AND version = ?',
    ),
    insertVersion: db.prepare(
      'INSERT INTO function_versions (tenant_id, name, version, source, spec, created_at) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    prune: db.prepare(
      `DELETE FROM function_versions WHERE tenant_id = ? AND name = ? AND version <= ? AND version != ?`,
    ),
    insertOutbox: db.prepare(
      'INSERT INTO outbox (tenant_id, function, stream, record, created_at) VALUES (?, ?, ?, ?, ?)',
    ),
    insertDeadLetter: db.prepare(
      `INSERT INTO dead_letters (tenant_id, function, version, message, reason, error, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ),
    trimDeadLetters: db.prepare(
      `DELETE FROM dead_letters WHERE tenant_id = ? AND id <= (
         SELECT id FROM dead_letters WHERE tenant_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`,
    ),
    deadLetters: db.prepare<[string, number, number], DeadLetterRow>(
      'SELECT * FROM dead_letters WHERE tenant_id = ? AND id < ? ORDER BY id DESC LIMIT ?',
    ),
    deadLettersOf: db.prepare<[string, string, number, number], DeadLetterRow>(
      'SELECT * FROM dead_letters WHERE tenant_id = ? AND function = ? AND id < ? ORDER BY id DESC LIMIT ?',
    ),
    purge: db.prepare('DELETE FROM dead_letters WHERE tenant_id = ?'),
    purgeOf: db.prepare('DELETE FROM dead_letters WHERE tenant_id = ? AND function = ?'),
    outbox: db.prepare<
      [string, number, number],
      { seq: number; tenant_id: string; function: string; stream: string; record: string; created_at: number }
    >('SELECT * FROM outbox WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?'),
  }

  const require = (tenantId: string, name: string): FunctionRow => {
    const row = sql.get.get(tenantId, name)
    if (row === undefined) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.notFound,
        `Cannot find function ${quote(name)} of tenant ${quote(tenantId)}`,
      )
    }
    return row
  }

  const deploy = db.transaction(
    (tenantId: string, name: string, source: string, spec: FunctionSpec, enabled: boolean, keep: number) => {
      const at = now()
      const existing = sql.get.get(tenantId, name)
      let version = 1
      if (existing === undefined) {
        sql.insert.run(tenantId, name, enabled ? 1 : 0, at, at)
      } else {
        version = existing.latest_version + 1
        sql.bump.run(version, version, enabled ? 1 : 0, at, tenantId, name)
      }
      sql.insertVersion.run(tenantId, name, version, source, JSON.stringify(spec), at)
      sql.prune.run(tenantId, name, version - keep, version)
      return {
        fn: toFunction(sql.get.get(tenantId, name) as FunctionRow),
        version: { version, source, spec, createdAt: at },
      }
    },
  )

  const commitResults = db.transaction(
    (outbox: readonly OutboxInsert[], deadLetters: readonly Omit<DeadLetter, 'id'>[]) => {
      const at = now()
      for (const row of outbox) {
        sql.insertOutbox.run(row.tenantId, row.function, row.stream, JSON.stringify(row.record) ?? 'null', at)
      }
      const trimmed = new Set<string>()
      for (const letter of deadLetters) {
        sql.insertDeadLetter.run(
          letter.tenantId,
          letter.function,
          letter.version,
          JSON.stringify(letter.message),
          letter.reason,
          letter.error,
          letter.createdAt,
        )
        trimmed.add(letter.tenantId)
      }
      for (const tenantId of trimmed) sql.trimDeadLetters.run(tenantId, tenantId, deadLetterLimit)
    },
  )

  const toDeadLetter = (row: DeadLetterRow): DeadLetter => ({
    id: row.id,
    tenantId: row.tenant_id,
    function: row.function,
    version: row.version,
    message: JSON.parse(row.message),
    reason: row.reason,
    error: row.error,
    createdAt: row.created_at,
  })

  return {
    list: (tenantId) => sql.list.all(tenantId).map(toFunction),
    listAll: () => sql.listAll.all().map(toFunction),
    get(tenantId, name) {
      const row = sql.get.get(tenantId, name)
      return row === undefined ? undefined : toFunction(row)
    },
    versions(tenantId, name) {
      require(tenantId, name)
      return sql.versions.all(tenantId, name).map(toVersion)
    },
    version(tenantId, name, version) {
      const row = sql.version.get(tenantId, name, version)
      return row === undefined ? undefined : toVersion(row)
    },
    deploy: (tenantId, name, source, spec, enabled, keep) =>
      deploy(tenantId, name, source, spec, enabled, keep),
    setCurrent(tenantId, name, version) {
      require(tenantId, name)
      if (sql.version.get(tenantId, name, version) === undefined) {
        throw new GatewayError(
          GATEWAY_ERROR_CODES.notFound,
          `Cannot roll function ${quote(name)} back to version ${version} as that version is not kept`,
        )
      }
      sql.setCurrent.run(version, now(), tenantId, name)
      return toFunction(require(tenantId, name))
    },
    setEnabled(tenantId, name, enabled) {
      require(tenantId, name)
      sql.setEnabled.run(enabled ? 1 : 0, now(), tenantId, name)
      return toFunction(require(tenantId, name))
    },
    delete(tenantId, name) {
      const removed = db.transaction(() => {
        sql.deleteDeadLettersOf.run(tenantId, name)
        return sql.delete.run(tenantId, name).changes > 0
      })
      return removed()
    },
    commitResults: (outbox, deadLetters) => {
      if (outbox.length === 0 && deadLetters.length === 0) return
      commitResults(outbox, deadLetters)
    },
    deadLetters(tenantId, name, limit, beforeId = Number.MAX_SAFE_INTEGER) {
      const rows =
        name === undefined
          ? sql.deadLetters.all(tenantId, beforeId, limit)
          : sql.deadLettersOf.all(tenantId, name, beforeId, limit)
      return rows.map(toDeadLetter)
    },
    purgeDeadLetters(tenantId, name) {
      return (name === undefined ? sql.purge.run(tenantId) : sql.purgeOf.run(tenantId, name)).changes
    },
    outbox(tenantId, afterSeq, limit) {
      return sql.outbox.all(tenantId, afterSeq, limit).map((row) => ({
        seq: row.seq,
        tenantId: row.tenant_id,
        function: row.function,
        stream: row.stream,
        record: JSON.parse(row.record),
        createdAt: row.created_at,
      }))
    },
  }
}
