import { chmodSync } from 'node:fs'
import Database from 'better-sqlite3'
import {
  type CloudGateway,
  type CloudRecord,
  type CloudStore,
  checkBatch,
  checkGatewayName,
  checkHandshake,
  checkPublicKey,
  checkQuery,
  closedError,
  gatewayConflict,
  quote,
  recordWhere,
  storeFailure,
  unknownAfter,
} from './cloud-store.ts'
import { SYNC_ERROR_CODES, SyncError } from './errors.ts'

/** Options of {@link createSqliteCloudStore}. */
export interface SqliteCloudStoreOptions {
  /** SQLite file path; created (mode 0600) when missing. */
  file: string
  /** Clock for `addedAt` (ms since epoch). */
  now?: () => number
}

// Schema steps in order; `cloud_schema_version` holds how many were applied. Never edit a shipped
// step: append a new one.
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE cloud_gateways (
     name TEXT PRIMARY KEY,
     public_key TEXT NOT NULL UNIQUE,
     added_at INTEGER NOT NULL,
     last_handshake_ts INTEGER,
     last_handshake_at INTEGER
   ) STRICT;
   -- No foreign key to cloud_gateways: removing a gateway keeps its records (see CloudStore).
   CREATE TABLE cloud_records (
     gateway TEXT NOT NULL,
     seq INTEGER NOT NULL,
     tenant TEXT NOT NULL,
     function TEXT NOT NULL,
     stream TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     received_at INTEGER NOT NULL,
     body TEXT NOT NULL,
     PRIMARY KEY (gateway, seq)
   ) STRICT;
   CREATE INDEX cloud_records_order ON cloud_records (received_at, gateway, seq);
   CREATE INDEX cloud_records_tenant ON cloud_records (tenant, stream, received_at);
   CREATE INDEX cloud_records_created ON cloud_records (created_at);`,
]

interface GatewayRow {
  name: string
  public_key: string
  added_at: bigint
  last_handshake_ts: bigint | null
  last_handshake_at: bigint | null
}
interface RecordRow {
  gateway: string
  seq: number
  tenant: string
  function: string
  stream: string
  created_at: number
  received_at: number
  body: string
}

/**
 * Opens (creating if needed) the cloud receiver's store on a SQLite file: WAL, and
 * `synchronous=FULL` because the receiver acknowledges a batch as soon as it is stored, so a commit
 * must survive power loss. Fits one receiver; several receivers share `createPostgresCloudStore`.
 */
export async function createSqliteCloudStore(options: SqliteCloudStoreOptions): Promise<CloudStore> {
  const now = options.now ?? Date.now
  const db = new Database(options.file)
  try {
    chmodSync(options.file, 0o600)
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = FULL')
    // Another process (a CLI listing records) may hold the write lock for a moment.
    db.pragma('busy_timeout = 5000')
    _migrate(db)
  } catch (cause) {
    db.close()
    throw new SyncError(
      SYNC_ERROR_CODES.store,
      `Cannot open the cloud store ${quote(options.file, 200)} as ${(cause as Error).message}`,
      { cause },
    )
  }

  const stmt = {
    insertGateway: db.prepare(
      'INSERT INTO cloud_gateways (name, public_key, added_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
    ),
    gatewayByName: db.prepare<[string], GatewayRow>('SELECT * FROM cloud_gateways WHERE name = ?'),
    gatewayByKey: db.prepare<[string], GatewayRow>('SELECT * FROM cloud_gateways WHERE public_key = ?'),
    listGateways: db.prepare<[], GatewayRow>('SELECT * FROM cloud_gateways ORDER BY name'),
    removeGateway: db.prepare('DELETE FROM cloud_gateways WHERE name = ?'),
    acceptHandshake: db.prepare(
      `UPDATE cloud_gateways SET last_handshake_ts = ?, last_handshake_at = ?
       WHERE name = ? AND (last_handshake_ts IS NULL OR last_handshake_ts < ?)`,
    ),
    insertRecord: db.prepare(
      `INSERT INTO cloud_records (gateway, seq, tenant, function, stream, created_at, received_at, body)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gateway, seq) DO NOTHING`,
    ),
    receivedAt: db.prepare<[string, number], { received_at: number }>(
      'SELECT received_at FROM cloud_records WHERE gateway = ? AND seq = ?',
    ),
  }
  // Handshake timestamps can pass 2^53, so gateway rows are read as bigints.
  for (const read of [stmt.gatewayByName, stmt.gatewayByKey, stmt.listGateways]) read.safeIntegers(true)

  const storeBatch = db.transaction(
    (gateway: string, records: ReturnType<typeof checkBatch>, receivedAt: number): number => {
      if (stmt.gatewayByName.get(gateway) === undefined) {
        throw new SyncError(
          SYNC_ERROR_CODES.conflict,
          `Cannot store records of gateway ${quote(gateway)} as no such gateway is registered`,
        )
      }
      let stored = 0
      for (const r of records) {
        stored += stmt.insertRecord.run(
          gateway,
          r.seq,
          r.tenant,
          r.function,
          r.stream,
          r.createdAt,
          receivedAt,
          r.body,
        ).changes
      }
      return stored
    },
  )

  let closed = false
  // Every call is synchronous underneath; the async signature is the one PostgreSQL needs.
  const run = async <T>(action: string, body: () => T): Promise<T> => {
    if (closed) throw closedError(action)
    try {
      return body()
    } catch (cause) {
      throw storeFailure(action, cause)
    }
  }

  const store: CloudStore = {
    addGateway: (name, publicKey) =>
      run(`add gateway ${quote(name)}`, () => {
        checkGatewayName(name, `add gateway ${quote(name)}`)
        checkPublicKey(publicKey, `add gateway ${quote(name)}`)
        if (stmt.insertGateway.run(name, publicKey, now()).changes === 0) {
          throw gatewayConflict(name, stmt.gatewayByName.get(name), stmt.gatewayByKey.get(publicKey))
        }
        return _toGateway(stmt.gatewayByName.get(name) as GatewayRow)
      }),
    removeGateway: (name) =>
      run(`remove gateway ${quote(name)}`, () => stmt.removeGateway.run(name).changes > 0),
    listGateways: () => run('list gateways', () => stmt.listGateways.all().map(_toGateway)),
    gatewayByKey: (publicKey) =>
      run('find a gateway by key', () => {
        const row = stmt.gatewayByKey.get(publicKey)
        return row === undefined ? undefined : _toGateway(row)
      }),
    acceptHandshake: (name, timestamp, at) =>
      run(`accept a handshake of gateway ${quote(name)}`, () => {
        checkHandshake(name, timestamp, at)
        return stmt.acceptHandshake.run(timestamp, at, name, timestamp).changes > 0
      }),
    storeRecords: (gateway, records, receivedAt) =>
      run(`store records of gateway ${quote(gateway)}`, () => {
        const batch = checkBatch(gateway, records, receivedAt)
        // IMMEDIATE takes the write lock up front, so a second writer waits instead of failing
        // with SQLITE_BUSY when it tries to upgrade a read transaction.
        const stored = storeBatch.immediate(gateway, batch, receivedAt)
        return { stored, duplicates: records.length - stored }
      }),
    records: (query = {}) =>
      run('query records', () => {
        const q = checkQuery(query)
        const where = _where(q)
        return db
          .prepare<unknown[], RecordRow>(
            `SELECT * FROM cloud_records ${where.sql} ORDER BY received_at, gateway, seq LIMIT ?`,
          )
          .all(...where.params, q.limit)
          .map(_toRecord)
      }),
    count: (query = {}) =>
      run('count records', () => {
        const where = _where({ ...checkQuery(query), after: undefined })
        return db
          .prepare<unknown[], { n: number }>(`SELECT count(*) AS n FROM cloud_records ${where.sql}`)
          .get(...where.params)?.n as number
      }),
    close: async () => {
      if (closed) return
      closed = true
      db.close()
    },
    [Symbol.asyncDispose]: () => store.close(),
  }

  function _where(q: ReturnType<typeof checkQuery>): { sql: string; params: (string | number)[] } {
    let afterReceivedAt: number | undefined
    if (q.after !== undefined) {
      afterReceivedAt = stmt.receivedAt.get(q.after.gateway, q.after.seq)?.received_at
      if (afterReceivedAt === undefined) throw unknownAfter(q.after)
    }
    const params: (string | number)[] = []
    const sql = recordWhere(q, afterReceivedAt, (value) => {
      params.push(value)
      return '?'
    })
    return { sql, params }
  }

  return store
}

/** Applies the steps the file has not seen, in one IMMEDIATE transaction so two openers cannot race. */
function _migrate(db: Database.Database): void {
  db.transaction(() => {
    db.exec('CREATE TABLE IF NOT EXISTS cloud_schema_version (version INTEGER NOT NULL) STRICT')
    const row = db.prepare<[], { version: number }>('SELECT version FROM cloud_schema_version').get()
    const current = row?.version ?? 0
    if (current > MIGRATIONS.length) {
      throw new Error(
        `its schema version ${current} is newer than this receiver knows (${MIGRATIONS.length}); upgrade the receiver`,
      )
    }
    for (const step of MIGRATIONS.slice(current)) db.exec(step)
    db.exec('DELETE FROM cloud_schema_version')
    db.prepare('INSERT INTO cloud_schema_version (version) VALUES (?)').run(MIGRATIONS.length)
  }).immediate()
}

function _toGateway(row: GatewayRow): CloudGateway {
  return {
    name: row.name,
    publicKey: row.public_key,
    addedAt: Number(row.added_at),
    lastHandshakeAt: row.last_handshake_at === null ? null : Number(row.last_handshake_at),
    lastHandshakeTimestamp: row.last_handshake_ts,
  }
}

function _toRecord(row: RecordRow): CloudRecord {
  return {
    gateway: row.gateway,
    seq: row.seq,
    tenant: row.tenant,
    function: row.function,
    stream: row.stream,
    createdAt: row.created_at,
    receivedAt: row.received_at,
    body: row.body,
  }
}
