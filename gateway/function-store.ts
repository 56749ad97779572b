import type Database from 'better-sqlite3'
import type { BrokerMessage } from './broker.ts'
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

/** A journaled message: the device's (or a function's output that triggers functions). */
export interface InboxMessage extends Omit<BrokerMessage, 'source'> {
  /** How many functions produced the message before (0 for a device's message). */
  hops: number
}

/** Work still owed on a journaled message: one function has yet to run on it. */
export interface PendingWork extends InboxMessage {
  seq: number
  function: string
}

/**
 * Functions, their versions, dead letters and the journal of the messages they owe work on, on
 * the gateway's SQLite store. Only the main thread calls it (single writer).
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
  deadLetters(tenantId: string, name: string | undefined, limit: number, beforeId?: number): DeadLetter[]
  /** Deletes dead letters (all of a tenant, or of one function); returns how many. */
  purgeDeadLetters(tenantId: string, name: string | undefined): number
  /**
   * Takes dead letters out for a replay: the given ids of the tenant (of one function, when
   * `name` is given), or all of them with `ids` undefined, oldest first; only those `accept`
   * takes leave the table. Run it in a transaction with the replay's journal rows.
   */
  takeDeadLetters(
    tenantId: string,
    name: string | undefined,
    ids: readonly number[] | undefined,
    accept: (letter: DeadLetter) => boolean,
  ): DeadLetter[]
  /** Runs `work` in one transaction (nested calls become savepoints). */
  transaction<T>(work: () => T): T
  /** Journals a message; returns its sequence number. Inside the journal's transaction. */
  insertInbox(message: InboxMessage): number
  /** Records that a function has yet to run on a journaled message. */
  insertWork(tenantId: string, name: string, seq: number): void
  /** The function ran on the message (or gave up on it); the message goes once no work is left. */
  completeWork(tenantId: string, name: string, seq: number): void
  /** Work owed on journaled messages, in journal order, for a replay after a restart. */
  pendingWork(tenantId?: string, name?: string): PendingWork[]
  /** Inserts dead letters inside the caller's transaction; the tenant's oldest beyond the bound go. */
  insertDeadLetters(deadLetters: readonly Omit<DeadLetter, 'id'>[]): void
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

interface PendingRow {
  seq: number
  tenant_id: string
  function: string
  topic: string
  payload: Buffer
  qos: number
  retain: number
  device_id: string | null
  received_at: number
  hops: number
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
    insertInbox: db.prepare(
      `INSERT INTO inbox (tenant_id, topic, payload, qos, retain, device_id, received_at, hops)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    insertWork: db.prepare('INSERT OR IGNORE INTO inbox_work (seq, tenant_id, function) VALUES (?, ?, ?)'),
    completeWork: db.prepare('DELETE FROM inbox_work WHERE tenant_id = ? AND function = ? AND seq = ?'),
    dropInbox: db.prepare(
      'DELETE FROM inbox WHERE seq = ? AND NOT EXISTS (SELECT 1 FROM inbox_work WHERE seq = ?)',
    ),
    deleteWorkOf: db.prepare('DELETE FROM inbox_work WHERE tenant_id = ? AND function = ?'),
    dropOrphans: db.prepare(
      'DELETE FROM inbox WHERE tenant_id = ? AND NOT EXISTS (SELECT 1 FROM inbox_work w WHERE w.seq = inbox.seq)',
    ),
    pendingWork: db.prepare<[{ tenant: string | null; fn: string | null }], PendingRow>(
      `SELECT w.seq, w.tenant_id, w.function, i.topic, i.payload, i.qos, i.retain, i.device_id,
              i.received_at, i.hops
       FROM inbox_work w JOIN inbox i ON i.seq = w.seq
       WHERE (@tenant IS NULL OR w.tenant_id = @tenant) AND (@fn IS NULL OR w.function = @fn)
       ORDER BY w.seq`,
    ),
    deadLettersOldestFirst: db.prepare<[{ tenant: string; fn: string | null }], DeadLetterRow>(
      'SELECT * FROM dead_letters WHERE tenant_id = @tenant AND (@fn IS NULL OR function = @fn) ORDER BY id',
    ),
    deadLetter: db.prepare<[string, number], DeadLetterRow>(
      'SELECT * FROM dead_letters WHERE tenant_id = ? AND id = ?',
    ),
    deleteDeadLetter: db.prepare('DELETE FROM dead_letters WHERE id = ?'),
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

  const insertDeadLetters = (deadLetters: readonly Omit<DeadLetter, 'id'>[]): void => {
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
  }

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
        // Work the function still owed goes with it, and the messages no other function needs.
        sql.deleteWorkOf.run(tenantId, name)
        sql.dropOrphans.run(tenantId)
        return sql.delete.run(tenantId, name).changes > 0
      })
      return removed()
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
    takeDeadLetters(tenantId, name, ids, accept) {
      const rows =
        ids === undefined
          ? sql.deadLettersOldestFirst.all({ tenant: tenantId, fn: name ?? null })
          : [...new Set(ids)].flatMap((letterId) => {
              const row = sql.deadLetter.get(tenantId, letterId)
              return row === undefined || (name !== undefined && row.function !== name) ? [] : [row]
            })
      // A letter is taken once: only the call that deletes its row replays it.
      return rows
        .map(toDeadLetter)
        .filter(accept)
        .filter((letter) => sql.deleteDeadLetter.run(letter.id).changes === 1)
    },
    transaction: (work) => db.transaction(work)(),
    insertInbox(message) {
      return Number(
        sql.insertInbox.run(
          message.tenantId,
          message.topic,
          message.payload,
          message.qos,
          message.retain ? 1 : 0,
          message.deviceId,
          message.receivedAt,
          message.hops,
        ).lastInsertRowid,
      )
    },
    insertWork(tenantId, name, seq) {
      sql.insertWork.run(seq, tenantId, name)
    },
    completeWork(tenantId, name, seq) {
      if (sql.completeWork.run(tenantId, name, seq).changes > 0) sql.dropInbox.run(seq, seq)
    },
    pendingWork(tenantId, name) {
      return sql.pendingWork.all({ tenant: tenantId ?? null, fn: name ?? null }).map((row) => ({
        seq: row.seq,
        tenantId: row.tenant_id,
        function: row.function,
        topic: row.topic,
        payload: row.payload,
        qos: row.qos as 0 | 1 | 2,
        retain: row.retain === 1,
        deviceId: row.device_id,
        receivedAt: row.received_at,
        hops: row.hops,
      }))
    },
    insertDeadLetters,
  }
}
