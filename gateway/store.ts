import { chmodSync } from 'node:fs'
import Database from 'better-sqlite3'
import type { QuotaOverrides } from './config.ts'
import { GATEWAY_ERROR_CODES, GatewayError, quote } from './errors.ts'
import { MIGRATIONS } from './migrations.ts'

/** A tenant row. `quotaOverrides` are the values set for this tenant; the rest come from defaults. */
export interface TenantRecord {
  id: string
  createdAt: number
  quotaOverrides: QuotaOverrides
}

/** A device row; the secret is kept only as an Argon2id hash. */
export interface DeviceRecord {
  tenantId: string
  deviceId: string
  secretHash: string
  createdAt: number
  rotatedAt: number | null
  lastSeenAt: number | null
}

/** What an ACL rule applies to. */
export type AclAction = 'publish' | 'subscribe' | 'all'

/** One ACL rule, as stored: evaluated in `position` order, device rules before tenant rules. */
export interface AclRuleRecord {
  action: AclAction
  filter: string
  permission: 'allow' | 'deny'
}

/** An API token: stored as a SHA-256 hash; `tenantId` null means admin. */
export interface TokenRecord {
  id: number
  tenantId: string | null
  label: string
  createdAt: number
}

/** Options of {@link createStore}. */
export interface StoreOptions {
  /** SQLite file path. */
  file: string
  /** `power-loss` makes every commit fsync (`synchronous=FULL`); `process-crash` uses `NORMAL`. */
  durability?: 'power-loss' | 'process-crash'
  /** Largest size of the file, in bytes; writes past it fail with SQLITE_FULL. */
  maxBytes?: number | null | undefined
  /** Clock for timestamps (ms since epoch). */
  now?: () => number
}

/**
 * The control-plane store on SQLite (WAL, versioned migrations): tenants, devices, ACL rules,
 * API tokens and gateway metadata. Only the main thread writes it (DESIGN.md, single writer).
 */
export interface Store {
  /** The open database, shared with the broker's persistence (same file, same writer). */
  readonly db: Database.Database
  getMeta(key: string): string | undefined
  setMeta(key: string, value: string): void
  listTenants(): TenantRecord[]
  getTenant(tenantId: string): TenantRecord | undefined
  /** Throws `conflict` when the tenant exists. */
  createTenant(tenantId: string, quotaOverrides?: QuotaOverrides): TenantRecord
  setQuotaOverrides(tenantId: string, quotaOverrides: QuotaOverrides): TenantRecord
  /** Deletes the tenant with its devices and rules; returns false when there was none. */
  deleteTenant(tenantId: string): boolean
  listDevices(tenantId: string): DeviceRecord[]
  getDevice(tenantId: string, deviceId: string): DeviceRecord | undefined
  createDevice(tenantId: string, deviceId: string, secretHash: string): DeviceRecord
  setDeviceSecret(tenantId: string, deviceId: string, secretHash: string): DeviceRecord
  deleteDevice(tenantId: string, deviceId: string): boolean
  markDeviceSeen(tenantId: string, deviceId: string): void
  /** Rules of a tenant (`deviceId` null) or of one device, in evaluation order. */
  listAclRules(tenantId: string, deviceId: string | null): AclRuleRecord[]
  /** Replaces the whole rule list atomically. */
  replaceAclRules(tenantId: string, deviceId: string | null, rules: readonly AclRuleRecord[]): void
  /** Records that a device opened (or took over) the persistent session of a (mounted) client id. */
  recordDeviceSession(tenantId: string, deviceId: string, clientId: string): void
  /** The (mounted) client ids of the persistent sessions a device opened. */
  listDeviceSessions(tenantId: string, deviceId: string): string[]
  createToken(tokenHash: string, tenantId: string | null, label: string): TokenRecord
  findToken(tokenHash: string): TokenRecord | undefined
  close(): void
  [Symbol.dispose](): void
}

interface TenantRow {
  id: string
  created_at: number
  quota_overrides: string
}
interface DeviceRow {
  tenant_id: string
  device_id: string
  secret_hash: string
  created_at: number
  rotated_at: number | null
  last_seen_at: number | null
}

/** Opens (creating if needed) the SQLite store and brings its schema up to date. */
export function createStore(options: StoreOptions): Store {
  const now = options.now ?? Date.now
  const db = new Database(options.file)
  try {
    chmodSync(options.file, 0o600)
    db.pragma('journal_mode = WAL')
    db.pragma(`synchronous = ${options.durability === 'power-loss' ? 'FULL' : 'NORMAL'}`)
    db.pragma('foreign_keys = ON')
    db.pragma('busy_timeout = 5000')
    // Statement journals of savepoints (one per invocation's effects) stay in memory: on disk they
    // cost the main thread thousands of writes a second to a temp file (measured under load).
    db.pragma('temp_store = MEMORY')
    migrate(db)
    if (options.maxBytes != null) {
      const pageSize = db.pragma('page_size', { simple: true }) as number
      db.pragma(`max_page_count = ${Math.max(1, Math.floor(options.maxBytes / pageSize))}`)
    }
  } catch (cause) {
    db.close()
    throw new GatewayError(
      GATEWAY_ERROR_CODES.internal,
      `Cannot open the store ${quote(options.file, 200)} as ${(cause as Error).message}`,
      { cause },
    )
  }

  const stmt = {
    getMeta: db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?'),
    setMeta: db.prepare(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    ),
    listTenants: db.prepare<[], TenantRow>('SELECT * FROM tenants ORDER BY id'),
    getTenant: db.prepare<[string], TenantRow>('SELECT * FROM tenants WHERE id = ?'),
    insertTenant: db.prepare('INSERT INTO tenants (id, created_at, quota_overrides) VALUES (?, ?, ?)'),
    setQuotas: db.prepare('UPDATE tenants SET quota_overrides = ? WHERE id = ?'),
    deleteTenant: db.prepare('DELETE FROM tenants WHERE id = ?'),
    listDevices: db.prepare<[string], DeviceRow>(
      'SELECT * FROM devices WHERE tenant_id = ? ORDER BY device_id',
    ),
    getDevice: db.prepare<[string, string], DeviceRow>(
      'SELECT * FROM devices WHERE tenant_id = ? AND device_id = ?',
    ),
    insertDevice: db.prepare(
      'INSERT INTO devices (tenant_id, device_id, secret_hash, created_at) VALUES (?, ?, ?, ?)',
    ),
    setSecret: db.prepare(
      'UPDATE devices SET secret_hash = ?, rotated_at = ? WHERE tenant_id = ? AND device_id = ?',
    ),
    deleteDevice: db.prepare('DELETE FROM devices WHERE tenant_id = ? AND device_id = ?'),
    seen: db.prepare('UPDATE devices SET last_seen_at = ? WHERE tenant_id = ? AND device_id = ?'),
    listAcl: db.prepare<[string, string], AclRuleRecord>(
      'SELECT action, filter, permission FROM acl_rules WHERE tenant_id = ? AND device_id = ? ORDER BY position',
    ),
    deleteAcl: db.prepare('DELETE FROM acl_rules WHERE tenant_id = ? AND device_id = ?'),
    insertAcl: db.prepare(
      'INSERT INTO acl_rules (tenant_id, device_id, position, action, filter, permission) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    recordSession: db.prepare(
      'INSERT INTO device_sessions (tenant_id, client_id, device_id) VALUES (?, ?, ?) ON CONFLICT (tenant_id, client_id) DO UPDATE SET device_id = excluded.device_id',
    ),
    listSessions: db.prepare<[string, string], { client_id: string }>(
      'SELECT client_id FROM device_sessions WHERE tenant_id = ? AND device_id = ? ORDER BY client_id',
    ),
    deleteSessions: db.prepare('DELETE FROM device_sessions WHERE tenant_id = ? AND device_id = ?'),
    insertToken: db.prepare(
      'INSERT INTO api_tokens (token_hash, tenant_id, label, created_at) VALUES (?, ?, ?, ?)',
    ),
    findToken: db.prepare<
      [string],
      { id: number; tenant_id: string | null; label: string; created_at: number }
    >('SELECT id, tenant_id, label, created_at FROM api_tokens WHERE token_hash = ?'),
  }

  const toTenant = (row: TenantRow): TenantRecord => ({
    id: row.id,
    createdAt: row.created_at,
    quotaOverrides: JSON.parse(row.quota_overrides) as QuotaOverrides,
  })
  const toDevice = (row: DeviceRow): DeviceRecord => ({
    tenantId: row.tenant_id,
    deviceId: row.device_id,
    secretHash: row.secret_hash,
    createdAt: row.created_at,
    rotatedAt: row.rotated_at,
    lastSeenAt: row.last_seen_at,
  })
  const requireTenant = (tenantId: string): TenantRecord => {
    const row = stmt.getTenant.get(tenantId)
    if (row === undefined) {
      throw new GatewayError(GATEWAY_ERROR_CODES.notFound, `Cannot find tenant ${quote(tenantId)}`)
    }
    return toTenant(row)
  }
  const requireDevice = (tenantId: string, deviceId: string): DeviceRecord => {
    requireTenant(tenantId)
    const row = stmt.getDevice.get(tenantId, deviceId)
    if (row === undefined) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.notFound,
        `Cannot find device ${quote(deviceId)} in tenant ${quote(tenantId)}`,
      )
    }
    return toDevice(row)
  }
  // SQLite has no NULL equality in a plain `=`, so tenant-wide rules use '' as their device id.
  const deviceKey = (deviceId: string | null): string => deviceId ?? ''

  const replaceAcl = db.transaction(
    (tenantId: string, deviceId: string | null, rules: readonly AclRuleRecord[]) => {
      stmt.deleteAcl.run(tenantId, deviceKey(deviceId))
      rules.forEach((rule, position) => {
        stmt.insertAcl.run(tenantId, deviceKey(deviceId), position, rule.action, rule.filter, rule.permission)
      })
    },
  )

  let closed = false
  const store: Store = {
    db,
    getMeta: (key) => stmt.getMeta.get(key)?.value,
    setMeta: (key, value) => {
      stmt.setMeta.run(key, value)
    },
    listTenants: () => stmt.listTenants.all().map(toTenant),
    getTenant: (tenantId) => {
      const row = stmt.getTenant.get(tenantId)
      return row === undefined ? undefined : toTenant(row)
    },
    createTenant: (tenantId, quotaOverrides = {}) => {
      if (stmt.getTenant.get(tenantId) !== undefined) {
        throw new GatewayError(
          GATEWAY_ERROR_CODES.conflict,
          `Cannot create tenant ${quote(tenantId)} as it exists`,
        )
      }
      stmt.insertTenant.run(tenantId, now(), JSON.stringify(quotaOverrides))
      return requireTenant(tenantId)
    },
    setQuotaOverrides: (tenantId, quotaOverrides) => {
      requireTenant(tenantId)
      stmt.setQuotas.run(JSON.stringify(quotaOverrides), tenantId)
      return requireTenant(tenantId)
    },
    deleteTenant: (tenantId) => stmt.deleteTenant.run(tenantId).changes > 0,
    listDevices: (tenantId) => {
      requireTenant(tenantId)
      return stmt.listDevices.all(tenantId).map(toDevice)
    },
    getDevice: (tenantId, deviceId) => {
      const row = stmt.getDevice.get(tenantId, deviceId)
      return row === undefined ? undefined : toDevice(row)
    },
    createDevice: (tenantId, deviceId, secretHash) => {
      requireTenant(tenantId)
      if (stmt.getDevice.get(tenantId, deviceId) !== undefined) {
        throw new GatewayError(
          GATEWAY_ERROR_CODES.conflict,
          `Cannot add device ${quote(deviceId)} to tenant ${quote(tenantId)} as it exists`,
        )
      }
      stmt.insertDevice.run(tenantId, deviceId, secretHash, now())
      return requireDevice(tenantId, deviceId)
    },
    setDeviceSecret: (tenantId, deviceId, secretHash) => {
      requireDevice(tenantId, deviceId)
      stmt.setSecret.run(secretHash, now(), tenantId, deviceId)
      return requireDevice(tenantId, deviceId)
    },
    deleteDevice: (tenantId, deviceId) =>
      db.transaction(() => {
        stmt.deleteAcl.run(tenantId, deviceId)
        stmt.deleteSessions.run(tenantId, deviceId)
        return stmt.deleteDevice.run(tenantId, deviceId).changes > 0
      })(),
    markDeviceSeen: (tenantId, deviceId) => {
      stmt.seen.run(now(), tenantId, deviceId)
    },
    listAclRules: (tenantId, deviceId) => stmt.listAcl.all(tenantId, deviceKey(deviceId)),
    replaceAclRules: (tenantId, deviceId, rules) => {
      if (deviceId === null) requireTenant(tenantId)
      else requireDevice(tenantId, deviceId)
      replaceAcl(tenantId, deviceId, rules)
    },
    recordDeviceSession: (tenantId, deviceId, clientId) => {
      stmt.recordSession.run(tenantId, clientId, deviceId)
    },
    listDeviceSessions: (tenantId, deviceId) =>
      stmt.listSessions.all(tenantId, deviceId).map((row) => row.client_id),
    createToken: (tokenHash, tenantId, label) => {
      const createdAt = now()
      const info = stmt.insertToken.run(tokenHash, tenantId, label, createdAt)
      return { id: Number(info.lastInsertRowid), tenantId, label, createdAt }
    },
    findToken: (tokenHash) => {
      const row = stmt.findToken.get(tokenHash)
      return row === undefined
        ? undefined
        : { id: row.id, tenantId: row.tenant_id, label: row.label, createdAt: row.created_at }
    },
    close: () => {
      if (closed) return
      closed = true
      db.close()
    },
    [Symbol.dispose]: () => store.close(),
  }
  return store
}

/** Applies the migrations the database has not seen yet, each in its own transaction. */
function migrate(db: Database.Database): void {
  const current = db.pragma('user_version', { simple: true }) as number
  if (current > MIGRATIONS.length) {
    throw new Error(
      `its schema version ${current} is newer than this gateway knows (${MIGRATIONS.length}); upgrade the gateway`,
    )
  }
  for (let version = current; version < MIGRATIONS.length; version++) {
    const step = MIGRATIONS[version] as (db: Database.Database) => void
    db.transaction(() => {
      step(db)
      db.pragma(`user_version = ${version + 1}`)
    })()
  }
}
