import { timingSafeEqual } from 'node:crypto'
import { getConnInfo } from '@hono/node-server/conninfo'
import type { Context, Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { deleteCookie, getCookie, setCookie } from 'hono/cookie'
import type { Accounts, SessionRecord, UserRecord } from './accounts.ts'
import { type Env, hashToken, parseBody } from './api.ts'
import { createTokenSchema, createUserSchema, setPasswordSchema, signInSchema } from './api-schemas.ts'
import type { AuthThrottle } from './auth-throttle.ts'
import { GATEWAY_ERROR_CODES, GatewayError, quote } from './errors.ts'
import type { PasswordHasher } from './password-hasher.ts'
import { generateSecret } from './password-hasher.ts'
import type { Store, TokenRecord } from './store.ts'

/** The name of the session cookie. */
export const SESSION_COOKIE = 'taureau_session'
/** The request header that carries a session's CSRF token on every mutation. */
export const CSRF_HEADER = 'x-csrf-token'

/** Who makes a request: an API token, or a browser session made from a user or a token. */
export interface Caller {
  /** The one tenant the caller may see; null for an administrator. */
  tenantId: string | null
  /** A user's name, or a token's label. */
  name: string
  via: 'token' | 'session'
  /** The API token behind the request (directly, or the one the session was made from). */
  tokenId: number | null
  /** The user behind a session made from a password. */
  userName: string | null
}

/** What the session, user and token routes need. */
export interface AuthRouteOptions {
  store: Store
  accounts: Accounts
  hasher: PasswordHasher
  throttle: AuthThrottle
  /** Path under which the gateway is served (`''` at the root): the session cookie's path. */
  basePath: string
  /** Trust `X-Forwarded-Proto` from a TLS-terminating proxy in front of the gateway. */
  trustProxy: boolean
  maxBodyBytes: number
  sessionMaxMs: number
  /** Shown to a signed-in UI: the gateway's version and MQTT ports (for device commands). */
  gatewayInfo: () => { version: string; mqttPort: number; wsPort: number }
  /** The id of the token in `DATA/admin-token`, which cannot be revoked through the API. */
  adminTokenId: () => number | undefined
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

/**
 * Authentication of the API: a bearer token, else the session cookie. A request with the cookie
 * that changes something must carry the session's CSRF token in `X-CSRF-Token`; the cookie is
 * SameSite=Strict as well, so a cross-site page can neither send it nor read the token.
 */
export function createAuthenticator(store: Store, accounts: Accounts) {
  const bearer = (c: Context<Env>): TokenRecord | null | undefined => {
    const header = c.req.header('authorization')
    if (header === undefined) return null
    const match = /^Bearer\s+(\S+)$/i.exec(header)
    return match?.[1] === undefined ? undefined : store.findToken(hashToken(match[1]))
  }
  const session = (c: Context<Env>): { id: string; record: SessionRecord } | undefined => {
    const id = getCookie(c, SESSION_COOKIE)
    if (id === undefined || id.length > 128) return undefined
    const record = accounts.findSession(id)
    return record === undefined ? undefined : { id, record }
  }
  const callerOfSession = (record: SessionRecord): Caller | undefined => {
    if (record.userName !== null) {
      const user = accounts.getUser(record.userName)
      return user === undefined
        ? undefined
        : { tenantId: user.tenantId, name: user.name, via: 'session', tokenId: null, userName: user.name }
    }
    const token = record.tokenId === null ? undefined : accounts.getToken(record.tokenId)
    return token === undefined
      ? undefined
      : { tenantId: token.tenantId, name: token.label, via: 'session', tokenId: token.id, userName: null }
  }

  return {
    session,
    callerOfSession,
    /** The caller of a request, or undefined (a wrong token, no session); throws on a missing CSRF token. */
    authenticate(c: Context<Env>): Caller | undefined {
      const token = bearer(c)
      if (token !== null) {
        return token === undefined
          ? undefined
          : { tenantId: token.tenantId, name: token.label, via: 'token', tokenId: token.id, userName: null }
      }
      const found = session(c)
      if (found === undefined) return undefined
      if (!SAFE_METHODS.has(c.req.method) && !sameSecret(c.req.header(CSRF_HEADER), found.record.csrfToken)) {
        throw new GatewayError(
          GATEWAY_ERROR_CODES.forbidden,
          `Cannot accept a change made with a session cookie without its CSRF token in ${CSRF_HEADER}`,
        )
      }
      return callerOfSession(found.record)
    },
  }
}

/** The authenticator of {@link createAuthenticator}. */
export type Authenticator = ReturnType<typeof createAuthenticator>

/**
 * `POST|GET|DELETE /session` (sign in, who am I, sign out), on the outer app before the API's
 * authentication, and the user and token routes on the API.
 */
export function mountSessionRoutes(app: Hono<Env>, auth: Authenticator, options: AuthRouteOptions): void {
  const { accounts, hasher, throttle } = options
  const path = '/api/v1/session'
  let dummyHash: Promise<string> | undefined

  const secure = (c: Context<Env>): boolean =>
    new URL(c.req.url).protocol === 'https:' ||
    (options.trustProxy && (c.req.header('x-forwarded-proto') ?? '').split(',')[0]?.trim() === 'https')
  const cookiePath = options.basePath === '' ? '/' : options.basePath
  const sessionView = (caller: Caller, record: SessionRecord) => ({
    session: {
      user: caller.name,
      kind: caller.tenantId === null ? 'admin' : 'tenant',
      tenant: caller.tenantId,
      via: caller.userName === null ? 'token' : 'password',
      expiresAt: new Date(Math.min(record.expiresAt, Number.MAX_SAFE_INTEGER)).toISOString(),
    },
    csrfToken: record.csrfToken,
    gateway: options.gatewayInfo(),
  })
  const addressOf = (c: Context<Env>): string => {
    try {
      return getConnInfo(c).remote.address ?? 'unknown'
    } catch {
      return 'unknown'
    }
  }

  app.post(path, bodyLimit({ maxSize: options.maxBodyBytes }), async (c) => {
    c.header('cache-control', 'no-store')
    // A form on another site could post here (SameSite does not cover sign-in): only JSON from
    // this origin is taken, which a cross-site page cannot send without CORS allowing it.
    if (!(c.req.header('content-type') ?? '').toLowerCase().startsWith('application/json')) {
      throw new GatewayError(GATEWAY_ERROR_CODES.invalidInput, 'Cannot sign in without a JSON body')
    }
    const origin = c.req.header('origin')
    if (origin !== undefined && origin !== 'null') {
      let host: string | undefined
      try {
        host = new URL(origin).host
      } catch {
        host = undefined
      }
      const forwarded = options.trustProxy ? c.req.header('x-forwarded-host') : undefined
      if (host !== (forwarded ?? c.req.header('host'))) {
        throw new GatewayError(GATEWAY_ERROR_CODES.forbidden, 'Cannot sign in from a page of another origin')
      }
    }
    const body = await parseBody(c, signInSchema)
    const address = addressOf(c)
    if (!throttle.enter(address)) {
      throttle.recordRefused(address)
      throw new GatewayError(
        GATEWAY_ERROR_CODES.limitReached,
        'Cannot sign in now: too many attempts from this address are being checked',
      )
    }
    const delayMs = throttle.delayFor(address)
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs))
    let owner: Parameters<Accounts['createSession']>[0] | undefined
    try {
      if ('token' in body) {
        const token = options.store.findToken(hashToken(body.token))
        if (token !== undefined) owner = { tokenId: token.id, tenantId: token.tenantId }
      } else {
        const hash = accounts.passwordHash(body.username)
        // An unknown name costs the same Argon2id check as a wrong password.
        dummyHash ??= hasher.hash(generateSecret())
        const ok = await hasher.verify(hash ?? (await dummyHash), body.password)
        const user = ok ? accounts.getUser(body.username) : undefined
        if (user !== undefined) owner = { userName: user.name, tenantId: user.tenantId }
      }
    } catch (error) {
      throttle.recordFailure(address)
      throw error
    }
    if (owner === undefined) {
      throttle.recordFailure(address)
      throw new GatewayError(
        GATEWAY_ERROR_CODES.unauthorized,
        'token' in body
          ? 'Cannot sign in: the token is wrong or revoked'
          : 'Cannot sign in: the user name or password is wrong',
      )
    }
    throttle.recordSuccess(address)
    const { id, session } = accounts.createSession(owner)
    setCookie(c, SESSION_COOKIE, id, {
      httpOnly: true,
      sameSite: 'Strict',
      secure: secure(c),
      path: cookiePath,
      maxAge: Math.floor(options.sessionMaxMs / 1000),
    })
    const caller = auth.callerOfSession(session) as Caller
    return c.json(sessionView(caller, session))
  })
  app.get(path, (c) => {
    c.header('cache-control', 'no-store')
    const found = auth.session(c)
    const caller = found === undefined ? undefined : auth.callerOfSession(found.record)
    // Not signed in is an answer here, not an error: the UI asks this on every load.
    if (found === undefined || caller === undefined) return c.json({ session: null })
    return c.json(sessionView(caller, found.record))
  })
  app.delete(path, (c) => {
    const found = auth.session(c)
    if (found !== undefined) {
      // Signing out is a change: a cross-site request must not end a session either.
      if (!sameSecret(c.req.header(CSRF_HEADER), found.record.csrfToken)) {
        throw new GatewayError(
          GATEWAY_ERROR_CODES.forbidden,
          `Cannot sign out with a session cookie without its CSRF token in ${CSRF_HEADER}`,
        )
      }
      accounts.deleteSession(found.id)
    }
    deleteCookie(c, SESSION_COOKIE, { path: cookiePath, secure: secure(c) })
    return c.body(null, 204)
  })
}

/** `GET|POST /users`, `PUT /users/:name/password`, `DELETE /users/:name`; `GET|POST /tokens`, `DELETE /tokens/:id`. */
export function mountAccountRoutes(api: Hono<Env>, options: AuthRouteOptions): void {
  const { accounts, hasher, store } = options
  const requireAdmin = (c: Context<Env>, what: string): void => {
    if (c.get('caller').tenantId !== null) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.forbidden,
        `Cannot ${what} as a tenant: it needs an administrator`,
      )
    }
  }
  const userView = (user: UserRecord) => ({
    name: user.name,
    tenant: user.tenantId,
    createdAt: new Date(user.createdAt).toISOString(),
    passwordChangedAt: new Date(user.passwordChangedAt).toISOString(),
  })
  const tokenView = (token: TokenRecord) => ({
    id: token.id,
    label: token.label,
    tenant: token.tenantId,
    createdAt: new Date(token.createdAt).toISOString(),
  })
  const userParam = (c: Context<Env>): UserRecord => {
    const name = c.req.param('name') ?? ''
    const user = accounts.getUser(name)
    if (user === undefined)
      throw new GatewayError(GATEWAY_ERROR_CODES.notFound, `Cannot find user ${quote(name)}`)
    return user
  }

  api.get('/users', (c) => {
    requireAdmin(c, 'list users')
    return c.json({ users: accounts.listUsers().map(userView) })
  })
  api.post('/users', async (c) => {
    requireAdmin(c, 'add users')
    const body = await parseBody(c, createUserSchema)
    if (accounts.getUser(body.name) !== undefined) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.conflict,
        `Cannot add user ${quote(body.name)} as it exists`,
        {
          field: 'name',
        },
      )
    }
    const user = accounts.createUser(body.name, await hasher.hash(body.password), body.tenant ?? null)
    return c.json({ user: userView(user) }, 201)
  })
  api.put('/users/:name/password', async (c) => {
    const caller = c.get('caller')
    const user = userParam(c)
    // Administrators set anyone's password; a user sets their own.
    if (caller.tenantId !== null && caller.userName !== user.name)
      requireAdmin(c, "set another user's password")
    const body = await parseBody(c, setPasswordSchema)
    return c.json({ user: userView(accounts.setPassword(user.name, await hasher.hash(body.password))) })
  })
  api.delete('/users/:name', (c) => {
    requireAdmin(c, 'remove users')
    accounts.deleteUser(userParam(c).name)
    return c.body(null, 204)
  })

  api.get('/tokens', (c) => {
    const { tenantId } = c.get('caller')
    return c.json({ tokens: accounts.listTokens(tenantId ?? undefined).map(tokenView) })
  })
  api.post('/tokens', async (c) => {
    const caller = c.get('caller')
    const body = await parseBody(c, createTokenSchema)
    const tenantId = body.tenant ?? null
    if (caller.tenantId !== null && tenantId !== caller.tenantId) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.forbidden,
        `Cannot make a token for ${tenantId === null ? 'the whole gateway' : `tenant ${quote(tenantId)}`} as a tenant caller`,
        { field: 'tenant' },
      )
    }
    if (tenantId !== null && store.getTenant(tenantId) === undefined) {
      throw new GatewayError(GATEWAY_ERROR_CODES.notFound, `Cannot find tenant ${quote(tenantId)}`, {
        field: 'tenant',
      })
    }
    const secret = `tau_${generateSecret()}`
    const token = store.createToken(hashToken(secret), tenantId, body.label)
    return c.json({ token: tokenView(token), secret }, 201)
  })
  api.delete('/tokens/:id', (c) => {
    const caller = c.get('caller')
    const raw = c.req.param('id') ?? ''
    const token = /^\d{1,15}$/.test(raw) ? accounts.getToken(Number(raw)) : undefined
    if (token === undefined || (caller.tenantId !== null && token.tenantId !== caller.tenantId)) {
      throw new GatewayError(GATEWAY_ERROR_CODES.notFound, `Cannot find token ${quote(raw)}`)
    }
    if (token.id === options.adminTokenId()) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.conflict,
        'Cannot revoke the admin token of DATA/admin-token: replace that file and restart the gateway instead',
      )
    }
    accounts.deleteToken(token.id)
    return c.body(null, 204)
  })
}

/** Compares two secrets in constant time; a missing one never matches. */
function sameSecret(given: string | undefined, expected: string): boolean {
  if (given === undefined) return false
  const a = Buffer.from(given)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}
