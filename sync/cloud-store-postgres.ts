import pg from 'pg'
import {
  type CheckedQuery,
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

/** Options of {@link createPostgresCloudStore}. */
export interface PostgresCloudStoreOptions {
  /** Connection URL, `postgres://user:password@host:port/database`. */
  url: string
  /** Most connections this receiver holds; callers past it wait for one. Default 10. */
  max?: number
  /** Most ms to wait for a connection before a call fails. Default 10 000. */
  connectTimeoutMs?: number
  /** Clock for `addedAt` (ms since epoch). */
  now?: () => number
}

// Held while migrating, so receivers starting together run the schema steps one at a time
// (concurrent CREATE TABLE IF NOT EXISTS can still fail on the catalog's unique indexes).
// Any fixed 64-bit number works; this is 'taureau' in ASCII.
const MIGRATION_LOCK = '32758254356750709'

// Schema steps in order; `cloud_schema_version` holds how many were applied. Never edit a shipped
// step: append a new one. IF NOT EXISTS lets a step finish a database set up by hand.
// Names are COLLATE "C" so that ordering by gateway is bytewise, as in SQLite, whatever the
// database's locale.
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS cloud_gateways (
     name text COLLATE "C" PRIMARY KEY,
     public_key text NOT NULL CONSTRAINT cloud_gateways_public_key_unique UNIQUE,
     added_at bigint NOT NULL,
     last_handshake_ts bigint,
     last_handshake_at bigint
   );
   -- No foreign key to cloud_gateways: removing a gateway keeps its records (see CloudStore).
   CREATE TABLE IF NOT EXISTS cloud_records (
     gateway text COLLATE "C" NOT NULL,
     seq bigint NOT NULL,
     tenant text COLLATE "C" NOT NULL,
     function text COLLATE "C" NOT NULL,
     stream text COLLATE "C" NOT NULL,
     created_at bigint NOT NULL,
     received_at bigint NOT NULL,
     body text NOT NULL,
     PRIMARY KEY (gateway, seq)
   );
   CREATE INDEX IF NOT EXISTS cloud_records_order ON cloud_records (received_at, gateway, seq);
   CREATE INDEX IF NOT EXISTS cloud_records_tenant ON cloud_records (tenant, stream, received_at);
   CREATE INDEX IF NOT EXISTS cloud_records_created ON cloud_records (created_at);`,
]

// bigint columns arrive as strings (node-postgres does not guess at precision).
interface GatewayRow {
  name: string
  public_key: string
  added_at: string
  last_handshake_ts: string | null
  last_handshake_at: string | null
}
interface RecordRow {
  gateway: string
  seq: string
  tenant: string
  function: string
  stream: string
  created_at: string
  received_at: string
  body: string
}

/**
 * Opens the cloud receiver's store on PostgreSQL with a connection pool, creating its tables when
 * missing. Many receivers may share one database: dedup rests on the (gateway, seq) primary key
 * with `INSERT ... ON CONFLICT DO NOTHING`, and handshake replay protection on one conditional
 * UPDATE, both atomic under PostgreSQL's default READ COMMITTED.
 */
export async function createPostgresCloudStore(options: PostgresCloudStoreOptions): Promise<CloudStore> {
  const now = options.now ?? Date.now
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.max ?? 10,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
  })
  // An idle connection that the server drops emits 'error' on the pool; unheard, it would crash the
  // process. The pool discards that connection and the next call opens a fresh one.
  pool.on('error', () => {})
  try {
    await _migrate(pool)
  } catch (cause) {
    await pool.end()
    throw new SyncError(
      SYNC_ERROR_CODES.store,
      `Cannot open the cloud store at ${_describe(options.url)} as ${(cause as Error).message}`,
      { cause },
    )
  }

  let closing: Promise<void> | undefined
  const run = async <T>(action: string, body: () => Promise<T>): Promise<T> => {
    if (closing !== undefined) throw closedError(action)
    try {
      return await body()
    } catch (cause) {
      throw storeFailure(action, cause)
    }
  }
  const gatewayWhere = async (column: 'name' | 'public_key', value: string) =>
    (await pool.query<GatewayRow>(`SELECT * FROM cloud_gateways WHERE ${column} = $1`, [value])).rows[0]

  const where = async (q: Omit<CheckedQuery, 'limit'>): Promise<{ sql: string; params: unknown[] }> => {
    let afterReceivedAt: number | undefined
    if (q.after !== undefined) {
      const { rows } = await pool.query<{ received_at: string }>(
        'SELECT received_at FROM cloud_records WHERE gateway = $1 AND seq = $2',
        [q.after.gateway, q.after.seq],
      )
      if (rows[0] === undefined) throw unknownAfter(q.after)
      afterReceivedAt = Number(rows[0].received_at)
    }
    const params: unknown[] = []
    const sql = recordWhere(q, afterReceivedAt, (value) => {
      params.push(value)
      return `$${params.length}`
    })
    return { sql, params }
  }

  const store: CloudStore = {
    addGateway: (name, publicKey) =>
      run(`add gateway ${quote(name)}`, async () => {
        checkGatewayName(name, `add gateway ${quote(name)}`)
        checkPublicKey(publicKey, `add gateway ${quote(name)}`)
        // DO NOTHING rather than catching the unique violation: the insert is one statement either
        // way, and the look-ups below say which of the two keys was taken.
        const { rows } = await pool.query<GatewayRow>(
          `INSERT INTO cloud_gateways (name, public_key, added_at) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING *`,
          [name, publicKey, now()],
        )
        if (rows[0] === undefined) {
          throw gatewayConflict(
            name,
            await gatewayWhere('name', name),
            await gatewayWhere('public_key', publicKey),
          )
        }
        return _toGateway(rows[0])
      }),
    removeGateway: (name) =>
      run(`remove gateway ${quote(name)}`, async () => {
        const result = await pool.query('DELETE FROM cloud_gateways WHERE name = $1', [name])
        return (result.rowCount ?? 0) > 0
      }),
    listGateways: () =>
      run('list gateways', async () =>
        (await pool.query<GatewayRow>('SELECT * FROM cloud_gateways ORDER BY name')).rows.map(_toGateway),
      ),
    gatewayByKey: (publicKey) =>
      run('find a gateway by key', async () => {
        const row = await gatewayWhere('public_key', publicKey)
        return row === undefined ? undefined : _toGateway(row)
      }),
    acceptHandshake: (name, timestamp, at) =>
      run(`accept a handshake of gateway ${quote(name)}`, async () => {
        checkHandshake(name, timestamp, at)
        // Concurrent updates of the row queue on its lock, and each re-checks the WHERE against the
        // row the previous one committed, so only a strictly newer timestamp ever wins.
        const result = await pool.query(
          `UPDATE cloud_gateways SET last_handshake_ts = $2, last_handshake_at = $3
           WHERE name = $1 AND (last_handshake_ts IS NULL OR last_handshake_ts < $2)`,
          [name, timestamp.toString(), at],
        )
        return (result.rowCount ?? 0) > 0
      }),
    storeRecords: (gateway, records, receivedAt) =>
      run(`store records of gateway ${quote(gateway)}`, async () => {
        const batch = checkBatch(gateway, records, receivedAt)
        const client = await pool.connect()
        let broken: Error | undefined
        try {
          await client.query('BEGIN')
          // KEY SHARE holds off a concurrent removeGateway until this batch commits.
          const known = await client.query('SELECT 1 FROM cloud_gateways WHERE name = $1 FOR KEY SHARE', [
            gateway,
          ])
          if (known.rowCount === 0) {
            throw new SyncError(
              SYNC_ERROR_CODES.conflict,
              `Cannot store records of gateway ${quote(gateway)} as no such gateway is registered`,
            )
          }
          // One statement for the whole batch. The batch is sorted by seq and inserted in that
          // order, so receivers storing overlapping batches wait on each other's rows in the same
          // order and never deadlock; ON CONFLICT DO NOTHING then skips what the other committed.
          const inserted = await client.query(
            `INSERT INTO cloud_records (gateway, seq, tenant, function, stream, created_at, received_at, body)
             SELECT $1, r.seq, r.tenant, r.function, r.stream, r.created_at, $2, r.body
             FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[])
               AS r (seq, tenant, function, stream, created_at, body)
             ORDER BY r.seq
             ON CONFLICT (gateway, seq) DO NOTHING`,
            [
              gateway,
              receivedAt,
              batch.map((r) => r.seq),
              batch.map((r) => r.tenant),
              batch.map((r) => r.function),
              batch.map((r) => r.stream),
              batch.map((r) => r.createdAt),
              batch.map((r) => r.body),
            ],
          )
          await client.query('COMMIT')
          const stored = inserted.rowCount ?? 0
          return { stored, duplicates: records.length - stored }
        } catch (cause) {
          // A failed ROLLBACK means the connection is gone; the pool must not reuse it.
          await client.query('ROLLBACK').catch((error: Error) => {
            broken = error
          })
          throw cause
        } finally {
          client.release(broken)
        }
      }),
    records: (query = {}) =>
      run('query records', async () => {
        const q = checkQuery(query)
        const { sql, params } = await where(q)
        params.push(q.limit)
        const { rows } = await pool.query<RecordRow>(
          `SELECT * FROM cloud_records ${sql} ORDER BY received_at, gateway, seq LIMIT $${params.length}`,
          params,
        )
        return rows.map(_toRecord)
      }),
    count: (query = {}) =>
      run('count records', async () => {
        const { sql, params } = await where({ ...checkQuery(query), after: undefined })
        const { rows } = await pool.query<{ n: string }>(
          `SELECT count(*) AS n FROM cloud_records ${sql}`,
          params,
        )
        return Number(rows[0]?.n ?? 0)
      }),
    close: () => {
      // pool.end() lets queries in flight finish, then closes every connection.
      closing ??= pool.end()
      return closing
    },
    [Symbol.asyncDispose]: () => store.close(),
  }
  return store
}

/** Applies the steps the database has not seen, under a transaction-scoped advisory lock. */
async function _migrate(pool: pg.Pool): Promise<void> {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK])
    await client.query('CREATE TABLE IF NOT EXISTS cloud_schema_version (version integer NOT NULL)')
    const { rows } = await client.query<{ version: number }>('SELECT version FROM cloud_schema_version')
    const current = rows[0]?.version ?? 0
    if (current > MIGRATIONS.length) {
      throw new Error(
        `its schema version ${current} is newer than this receiver knows (${MIGRATIONS.length}); upgrade the receiver`,
      )
    }
    for (const step of MIGRATIONS.slice(current)) await client.query(step)
    if (current < MIGRATIONS.length) {
      await client.query('DELETE FROM cloud_schema_version')
      await client.query('INSERT INTO cloud_schema_version (version) VALUES ($1)', [MIGRATIONS.length])
    }
    await client.query('COMMIT')
  } catch (cause) {
    await client.query('ROLLBACK').catch(() => {})
    throw cause
  } finally {
    client.release()
  }
}

/** The URL for an error message, without its password. */
function _describe(url: string): string {
  try {
    const parsed = new URL(url)
    parsed.password = ''
    return quote(parsed.toString(), 200)
  } catch {
    return 'the given connection string'
  }
}

function _toGateway(row: GatewayRow): CloudGateway {
  return {
    name: row.name,
    publicKey: row.public_key,
    addedAt: Number(row.added_at),
    lastHandshakeAt: row.last_handshake_at === null ? null : Number(row.last_handshake_at),
    lastHandshakeTimestamp: row.last_handshake_ts === null ? null : BigInt(row.last_handshake_ts),
  }
}

function _toRecord(row: RecordRow): CloudRecord {
  return {
    gateway: row.gateway,
    seq: Number(row.seq),
    tenant: row.tenant,
    function: row.function,
    stream: row.stream,
    createdAt: Number(row.created_at),
    receivedAt: Number(row.received_at),
    body: row.body,
  }
}
