import { createHash, randomBytes } from 'node:crypto'
import type Database from 'better-sqlite3'
import { GATEWAY_ERROR_CODES, GatewayError, quote } from './errors.ts'
import type { TokenRecord } from './store.ts'

/** A person who signs in to the UI; `tenantId` null means an administrator of the whole gateway. */
export interface UserRecord {
  name: string
  tenantId: string | null
  createdAt: number
  passwordChangedAt: number
}

/** A browser session, made from a user's password or from an API token. */
export interface SessionRecord {
  csrfToken: string
  userName: string | null
  tokenId: number | null
  tenantId: string | null
  createdAt: number
  lastSeenAt: number
  expiresAt: number
}

/** Options of {@link createAccounts}. */
export interface AccountsOptions {
  /** A session ends after this long without a request, in ms. */
  sessionIdleMs: number
  /** A session ends this long after sign-in whatever its use, in ms. */
  sessionMaxMs: number
  now?: () => number
}

/**
 * Users, API tokens as listed and revoked, and browser sessions, on the control-plane store.
 * Session ids are 256-bit random values kept only as SHA-256 hashes, like API tokens; each session
 * has its own CSRF token. Deleting a user, token or tenant deletes its sessions (foreign keys).
 */
export interface Accounts {
  listUsers(): UserRecord[]
  getUser(name: string): UserRecord | undefined
  /** The user's Argon2id hash, for verifying a password; undefined when there is no such user. */
  passwordHash(name: string): string | undefined
  /** Throws `conflict` when the name is taken. */
  createUser(name: string, passwordHash: string, tenantId: string | null): UserRecord
  /** Sets a new password; the user's sessions end. Throws `not_found`. */
  setPassword(name: string, passwordHash: string): UserRecord
  deleteUser(name: string): boolean
  /** API tokens, all or those of one tenant, oldest first. */
  listTokens(tenantId?: string): TokenRecord[]
  getToken(id: number): TokenRecord | undefined
  deleteToken(id: number): boolean
  /** Starts a session; returns its id (the cookie's value, never stored) and its record. */
  createSession(
    owner: { userName: string; tenantId: string | null } | { tokenId: number; tenantId: string | null },
  ): { id: string; session: SessionRecord }
  /** The live session of a cookie value; an expired one is removed. Use is recorded (coarsely). */
  findSession(id: string): SessionRecord | undefined
  deleteSession(id: string): void
  /** Removes expired sessions; returns how many. */
  sweepSessions(): number
}

interface UserRow {
  name: string
  tenant_id: string | null
  created_at: number
  password_changed_at: number
}
interface SessionRow {
  csrf_token: string
  user_name: string | null
  token_id: number | null
  tenant_id: string | null
  created_at: number
  last_seen_at: number
  expires_at: number
}

/** Sessions one user or token may have at once; signing in again ends the oldest. */
export const MAX_SESSIONS_PER_OWNER = 32

/** Last use is written at most this often per session: a page polls every few seconds. */
const TOUCH_EVERY_MS = 60_000

export function createAccounts(db: Database.Database, options: AccountsOptions): Accounts {
  const now = options.now ?? Date.now
  const stmt = {
    listUsers: db.prepare<[], UserRow>(
      'SELECT name, tenant_id, created_at, password_changed_at FROM users ORDER BY name',
    ),
    getUser: db.prepare<[string], UserRow>(
      'SELECT name, tenant_id, created_at, password_changed_at FROM users WHERE name = ?',
    ),
    passwordHash: db.prepare<[string], { password_hash: string }>(
      'SELECT password_hash FROM users WHERE name = ?',
    ),
    insertUser: db.prepare(
      'INSERT INTO users (name, password_hash, tenant_id, created_at, password_changed_at) VALUES (?, ?, ?, ?, ?)',
    ),
    setPassword: db.prepare('UPDATE users SET password_hash = ?, password_changed_at = ? WHERE name = ?'),
    deleteUserSessions: db.prepare('DELETE FROM ui_sessions WHERE user_name = ?'),
    deleteUser: db.prepare('DELETE FROM users WHERE name = ?'),
    tenantExists: db.prepare<[string], { id: string }>('SELECT id FROM tenants WHERE id = ?'),
    listTokens: db.prepare<[], TokenRow>(
      'SELECT id, tenant_id, label, created_at FROM api_tokens ORDER BY id',
    ),
    listTenantTokens: db.prepare<[string], TokenRow>(
      'SELECT id, tenant_id, label, created_at FROM api_tokens WHERE tenant_id = ? ORDER BY id',
    ),
    getToken: db.prepare<[number], TokenRow>(
      'SELECT id, tenant_id, label, created_at FROM api_tokens WHERE id = ?',
    ),
    deleteToken: db.prepare('DELETE FROM api_tokens WHERE id = ?'),
    insertSession: db.prepare(
      `INSERT INTO ui_sessions (id_hash, csrf_token, user_name, token_id, tenant_id, created_at, last_seen_at, expires_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    findSession: db.prepare<[string], SessionRow>(
      'SELECT csrf_token, user_name, token_id, tenant_id, created_at, last_seen_at, expires_at FROM ui_sessions WHERE id_hash = ?',
    ),
    touchSession: db.prepare('UPDATE ui_sessions SET last_seen_at = ? WHERE id_hash = ?'),
    deleteSession: db.prepare('DELETE FROM ui_sessions WHERE id_hash = ?'),
    // Keeps an owner's newest sessions: a script that signs in on every call cannot fill the store.
    trimUserSessions: db.prepare(
      'DELETE FROM ui_sessions WHERE user_name = ? AND id_hash NOT IN (SELECT id_hash FROM ui_sessions WHERE user_name = ? ORDER BY created_at DESC LIMIT ?)',
    ),
    trimTokenSessions: db.prepare(
      'DELETE FROM ui_sessions WHERE token_id = ? AND id_hash NOT IN (SELECT id_hash FROM ui_sessions WHERE token_id = ? ORDER BY created_at DESC LIMIT ?)',
    ),
    sweep: db.prepare('DELETE FROM ui_sessions WHERE expires_at <= ? OR last_seen_at <= ?'),
  }

  const toUser = (row: UserRow): UserRecord => ({
    name: row.name,
    tenantId: row.tenant_id,
    createdAt: row.created_at,
    passwordChangedAt: row.password_changed_at,
  })
  const toSession = (row: SessionRow): SessionRecord => ({
    csrfToken: row.csrf_token,
    userName: row.user_name,
    tokenId: row.token_id,
    tenantId: row.tenant_id,
    createdAt: row.created_at,
    lastSeenAt: row.last_seen_at,
    expiresAt: row.expires_at,
  })
  const requireUser = (name: string): UserRow => {
    const row = stmt.getUser.get(name)
    if (row === undefined)
      throw new GatewayError(GATEWAY_ERROR_CODES.notFound, `Cannot find user ${quote(name)}`)
    return row
  }
  const setPassword = db.transaction((name: string, hash: string) => {
    requireUser(name)
    stmt.setPassword.run(hash, now(), name)
    stmt.deleteUserSessions.run(name)
    return toUser(requireUser(name))
  })

  /** Stores a session, first removing the owner's oldest beyond {@link MAX_SESSIONS_PER_OWNER} - 1. */
  const insertSession = db.transaction((id: string, session: SessionRecord) => {
    if (session.userName !== null) {
      stmt.trimUserSessions.run(session.userName, session.userName, MAX_SESSIONS_PER_OWNER - 1)
    } else {
      stmt.trimTokenSessions.run(session.tokenId, session.tokenId, MAX_SESSIONS_PER_OWNER - 1)
    }
    stmt.insertSession.run(
      hashSessionId(id),
      session.csrfToken,
      session.userName,
      session.tokenId,
      session.tenantId,
      session.createdAt,
      session.lastSeenAt,
      session.expiresAt,
    )
  })

  return {
    listUsers: () => stmt.listUsers.all().map(toUser),
    getUser: (name) => {
      const row = stmt.getUser.get(name)
      return row === undefined ? undefined : toUser(row)
    },
    passwordHash: (name) => stmt.passwordHash.get(name)?.password_hash,
    createUser: (name, passwordHash, tenantId) => {
      if (tenantId !== null && stmt.tenantExists.get(tenantId) === undefined) {
        throw new GatewayError(GATEWAY_ERROR_CODES.notFound, `Cannot find tenant ${quote(tenantId)}`, {
          field: 'tenant',
        })
      }
      if (stmt.getUser.get(name) !== undefined) {
        throw new GatewayError(GATEWAY_ERROR_CODES.conflict, `Cannot add user ${quote(name)} as it exists`, {
          field: 'name',
        })
      }
      const at = now()
      stmt.insertUser.run(name, passwordHash, tenantId, at, at)
      return { name, tenantId, createdAt: at, passwordChangedAt: at }
    },
    setPassword: (name, passwordHash) => setPassword(name, passwordHash),
    deleteUser: (name) => stmt.deleteUser.run(name).changes > 0,
    listTokens: (tenantId) =>
      (tenantId === undefined ? stmt.listTokens.all() : stmt.listTenantTokens.all(tenantId)).map(toToken),
    getToken: (id) => {
      const row = stmt.getToken.get(id)
      return row === undefined ? undefined : toToken(row)
    },
    deleteToken: (id) => stmt.deleteToken.run(id).changes > 0,
    createSession: (owner) => {
      const id = randomBytes(32).toString('base64url')
      const at = now()
      const session: SessionRecord = {
        csrfToken: randomBytes(32).toString('base64url'),
        userName: 'userName' in owner ? owner.userName : null,
        tokenId: 'tokenId' in owner ? owner.tokenId : null,
        tenantId: owner.tenantId,
        createdAt: at,
        lastSeenAt: at,
        expiresAt: at + options.sessionMaxMs,
      }
      insertSession(id, session)
      return { id, session }
    },
    findSession: (id) => {
      const idHash = hashSessionId(id)
      const row = stmt.findSession.get(idHash)
      if (row === undefined) return undefined
      const at = now()
      if (row.expires_at <= at || row.last_seen_at + options.sessionIdleMs <= at) {
        stmt.deleteSession.run(idHash)
        return undefined
      }
      if (at - row.last_seen_at >= TOUCH_EVERY_MS) {
        stmt.touchSession.run(at, idHash)
        row.last_seen_at = at
      }
      return toSession(row)
    },
    deleteSession: (id) => {
      stmt.deleteSession.run(hashSessionId(id))
    },
    sweepSessions: () => {
      const at = now()
      return stmt.sweep.run(at, at - options.sessionIdleMs).changes
    },
  }
}

interface TokenRow {
  id: number
  tenant_id: string | null
  label: string
  created_at: number
}

const toToken = (row: TokenRow): TokenRecord => ({
  id: row.id,
  tenantId: row.tenant_id,
  label: row.label,
  createdAt: row.created_at,
})

function hashSessionId(id: string): string {
  return createHash('sha256').update(id).digest('hex')
}
