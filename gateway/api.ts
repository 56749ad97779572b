import { createHash } from 'node:crypto'
import type { Context } from 'hono'
import { Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { HTTPException } from 'hono/http-exception'
import type { z } from 'zod'
import { type Accounts, createAccounts } from './accounts.ts'
import {
  type AuthRouteOptions,
  type Caller,
  createAuthenticator,
  mountAccountRoutes,
  mountSessionRoutes,
} from './api-auth.ts'
import { mountFunctionRoutes } from './api-functions.ts'
import { mountLiveRoutes } from './api-live.ts'
import { aclBodySchema, createDeviceSchema, createTenantSchema } from './api-schemas.ts'
import { mountStateRoutes, type StateApiOptions } from './api-state.ts'
import { createAuthThrottle } from './auth-throttle.ts'
import type { Broker } from './broker.ts'
import { type QuotaOverrides, type Quotas, quotaOverridesSchema } from './config.ts'
import { GATEWAY_ERROR_CODES, GatewayError, type GatewayErrorCode, quote } from './errors.ts'
import type { FunctionStore } from './function-store.ts'
import type { Functions } from './functions.ts'
import { createLiveStats, type LiveStats } from './live-stats.ts'
import type { Metrics } from './metrics.ts'
import { buildOpenApi } from './openapi.ts'
import type { Outbox } from './outbox.ts'
import type { PasswordHasher } from './password-hasher.ts'
import { generateSecret } from './password-hasher.ts'
import { MAX_JSON_DEPTH, valueDepth } from './payload.ts'
import type { DeviceRecord, Store, TenantRecord } from './store.ts'
import { mountUi, SECURITY_HEADERS } from './ui-assets.ts'

/** What the API needs from the rest of the gateway. */
export interface ApiOptions {
  store: Store
  broker: Broker
  hasher: PasswordHasher
  metrics: Metrics
  /** Quotas of tenants that set none. */
  defaultQuotas: Quotas
  maxBodyBytes: number
  /** Serve `/metrics` without a token. */
  publicMetrics?: boolean
  /** Function state: its routes are always served, on this store unless the functions share theirs. */
  state?: StateApiOptions
  /** Tenant functions; their routes are served when given. */
  functions?: { runtime: Functions; store: FunctionStore; outbox: Outbox }
  /** The private uplink's state (`GET /uplink`, admin only); `{ state: 'off' }` without one. */
  uplink?: () => unknown
  /** Users and sessions; made on the store's database when not given. */
  accounts?: Accounts
  /** The series of the live charts; made here when not given. */
  liveStats?: LiveStats
  /** Sign-in throttling per address (`auth` config). */
  signIn?: { freeFailures: number; maxDelayMs: number }
  /** Path prefix the gateway is served under (`http.basePath`), `''` at the root. */
  basePath?: string
  /** Trust `X-Forwarded-Proto` (a TLS proxy in front). */
  trustProxy?: boolean
  /** Session lengths: idle and absolute, in ms. */
  sessionIdleMs?: number
  sessionMaxMs?: number
  /** What the signed-in UI is told about the gateway. */
  gatewayInfo?: AuthRouteOptions['gatewayInfo']
  /** The id of the token of `DATA/admin-token`, which the API does not revoke. */
  adminTokenId?: () => number | undefined
  /** Directory of the built UI (`ui/dist`); the UI is served at `/` when given. */
  uiDir?: string
}

/** The Hono environment of the API: who is calling. */
export type Env = { Variables: { caller: Caller } }

const STATUS: Record<GatewayErrorCode, 400 | 401 | 403 | 404 | 409 | 413 | 429 | 500> = {
  invalid_input: 400,
  invalid_config: 500,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  limit_reached: 429,
  internal: 500,
}

/**
 * The management API (`/api/v1`, bearer tokens), `/healthz` and `/metrics`, as a Hono app that
 * tests call with `app.request()` and the gateway serves with `@hono/node-server`.
 */
export function createApi(options: ApiOptions): Hono<Env> {
  const { store, broker, hasher, metrics } = options
  const app = new Hono<Env>()
  const sessionMaxMs = options.sessionMaxMs ?? 7 * 24 * 3600 * 1000
  const accounts =
    options.accounts ??
    createAccounts(store.db, { sessionIdleMs: options.sessionIdleMs ?? 12 * 3600 * 1000, sessionMaxMs })
  const liveStats = options.liveStats ?? createLiveStats({ metrics })
  const auth = createAuthenticator(store, accounts)
  const authOptions: AuthRouteOptions = {
    store,
    accounts,
    hasher,
    throttle: createAuthThrottle(options.signIn ?? { freeFailures: 3, maxDelayMs: 30_000 }),
    basePath: options.basePath ?? '',
    trustProxy: options.trustProxy ?? false,
    maxBodyBytes: options.maxBodyBytes,
    sessionMaxMs,
    gatewayInfo: options.gatewayInfo ?? (() => ({ version: '0.0.0', mqttPort: 1883, wsPort: 8083 })),
    adminTokenId: options.adminTokenId ?? (() => undefined),
  }
  app.use('*', async (c, next) => {
    await next()
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) c.res.headers.set(name, value)
  })

  // The one place where errors become HTTP responses.
  app.onError((error, c) => {
    if (error instanceof GatewayError) {
      const body: Record<string, string | number> = { code: error.code, message: error.message }
      if (error.field !== undefined) body.field = error.field
      if (error.line !== undefined) body.line = error.line
      if (error.column !== undefined) body.column = error.column
      return c.json(body, STATUS[error.code])
    }
    if (error instanceof HTTPException && error.status === 413) {
      return c.json(
        {
          code: GATEWAY_ERROR_CODES.limitReached,
          message: `Cannot accept the request as its body exceeds ${options.maxBodyBytes} bytes`,
        },
        413,
      )
    }
    return c.json(
      { code: GATEWAY_ERROR_CODES.internal, message: 'Cannot complete the request as the gateway failed' },
      500,
    )
  })
  app.notFound((c) =>
    c.json(
      {
        code: GATEWAY_ERROR_CODES.notFound,
        message: `Cannot find ${c.req.method} ${quote(c.req.path, 200)}`,
      },
      404,
    ),
  )

  app.get('/healthz', (c) => c.json({ status: 'ok' }))
  app.get('/metrics', async (c) => {
    if (!options.publicMetrics) {
      const caller = auth.authenticate(c)
      if (caller?.tenantId !== null) {
        throw new GatewayError(
          GATEWAY_ERROR_CODES.unauthorized,
          'Cannot serve metrics as the admin bearer token is missing or wrong (or set http.publicMetrics)',
        )
      }
    }
    return c.body(await metrics.registry.metrics(), 200, { 'content-type': metrics.registry.contentType })
  })

  // Built on first request: most gateways never serve it, and it takes a walk over every schema.
  let openApi: ReturnType<typeof buildOpenApi> | undefined
  app.get('/api/openapi.json', (c) => {
    openApi ??= buildOpenApi()
    return c.json(openApi)
  })
  mountSessionRoutes(app, auth, authOptions)

  const api = new Hono<Env>()
  api.use('*', bodyLimit({ maxSize: options.maxBodyBytes }))
  api.use('*', async (c, next) => {
    const caller = auth.authenticate(c)
    if (caller === undefined) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.unauthorized,
        'Cannot authorize the request: its bearer token is missing or wrong, or it has no session (sign in)',
      )
    }
    c.set('caller', caller)
    await next()
    c.header('cache-control', 'no-store')
  })

  const tenantParam = (c: Context<Env>): string => {
    const tenantId = c.req.param('tenant') ?? ''
    const caller = c.get('caller')
    if (caller.tenantId !== null && caller.tenantId !== tenantId) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.forbidden,
        `Cannot access tenant ${quote(tenantId)} with a token of another tenant`,
      )
    }
    if (store.getTenant(tenantId) === undefined) {
      throw new GatewayError(GATEWAY_ERROR_CODES.notFound, `Cannot find tenant ${quote(tenantId)}`)
    }
    return tenantId
  }
  const requireAdmin = (c: Context<Env>): void => {
    if (c.get('caller').tenantId !== null) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.forbidden,
        'Cannot do this with a tenant token: it needs the admin token',
      )
    }
  }
  const deviceParam = (c: Context<Env>, tenantId: string): DeviceRecord => {
    const deviceId = c.req.param('device') ?? ''
    const device = store.getDevice(tenantId, deviceId)
    if (device === undefined) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.notFound,
        `Cannot find device ${quote(deviceId)} in tenant ${quote(tenantId)}`,
      )
    }
    return device
  }

  const effectiveQuotas = (tenant: TenantRecord): Quotas =>
    ({ ...options.defaultQuotas, ...tenant.quotaOverrides }) as Quotas
  const tenantView = (tenant: TenantRecord) => ({
    id: tenant.id,
    createdAt: new Date(tenant.createdAt).toISOString(),
    quotas: effectiveQuotas(tenant),
    quotaOverrides: tenant.quotaOverrides,
    connections: broker.connections(tenant.id),
  })
  const deviceView = (device: DeviceRecord, online: Map<string, number>) => ({
    id: device.deviceId,
    tenant: device.tenantId,
    username: `${device.deviceId}@${device.tenantId}`,
    createdAt: new Date(device.createdAt).toISOString(),
    rotatedAt: device.rotatedAt === null ? null : new Date(device.rotatedAt).toISOString(),
    lastSeenAt: device.lastSeenAt === null ? null : new Date(device.lastSeenAt).toISOString(),
    connections: online.get(device.deviceId) ?? 0,
  })

  api.get('/uplink', (c) => {
    requireAdmin(c)
    return c.json(options.uplink?.() ?? { state: 'off' })
  })

  api.get('/tenants', (c) => {
    const caller = c.get('caller')
    const tenants = store
      .listTenants()
      .filter((tenant) => caller.tenantId === null || tenant.id === caller.tenantId)
    return c.json({ tenants: tenants.map(tenantView) })
  })
  api.post('/tenants', async (c) => {
    requireAdmin(c)
    const body = await parseBody(c, createTenantSchema)
    const tenant = store.createTenant(body.id, definedOnly(body.quotas ?? {}))
    broker.reloadTenant(tenant.id)
    return c.json({ tenant: tenantView(tenant) }, 201)
  })
  api.get('/tenants/:tenant', (c) => {
    const tenantId = tenantParam(c)
    return c.json({ tenant: tenantView(store.getTenant(tenantId) as TenantRecord) })
  })
  api.delete('/tenants/:tenant', async (c) => {
    requireAdmin(c)
    const tenantId = tenantParam(c)
    store.deleteTenant(tenantId)
    broker.removeTenant(tenantId)
    liveStats.removeTenant(tenantId)
    await options.functions?.runtime.removeTenant(tenantId)
    return c.body(null, 204)
  })

  api.get('/tenants/:tenant/quotas', (c) => {
    const tenant = store.getTenant(tenantParam(c)) as TenantRecord
    return c.json({ quotas: effectiveQuotas(tenant), quotaOverrides: tenant.quotaOverrides })
  })
  api.put('/tenants/:tenant/quotas', async (c) => {
    requireAdmin(c)
    const tenantId = tenantParam(c)
    const overrides = definedOnly(await parseBody(c, quotaOverridesSchema))
    const tenant = store.setQuotaOverrides(tenantId, overrides)
    broker.reloadTenant(tenantId)
    return c.json({ quotas: effectiveQuotas(tenant), quotaOverrides: tenant.quotaOverrides })
  })

  api.get('/tenants/:tenant/acl', (c) => c.json({ rules: store.listAclRules(tenantParam(c), null) }))
  api.put('/tenants/:tenant/acl', async (c) => {
    const tenantId = tenantParam(c)
    const body = await parseBody(c, aclBodySchema)
    store.replaceAclRules(tenantId, null, body.rules)
    broker.reloadTenant(tenantId)
    return c.json({ rules: store.listAclRules(tenantId, null) })
  })

  api.get('/tenants/:tenant/devices', (c) => {
    const tenantId = tenantParam(c)
    const online = broker.onlineDevices(tenantId)
    return c.json({ devices: store.listDevices(tenantId).map((device) => deviceView(device, online)) })
  })
  api.post('/tenants/:tenant/devices', async (c) => {
    const tenantId = tenantParam(c)
    const body = await parseBody(c, createDeviceSchema)
    if (store.getDevice(tenantId, body.id) !== undefined) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.conflict,
        `Cannot add device ${quote(body.id)} to tenant ${quote(tenantId)} as it exists`,
      )
    }
    const secret = generateSecret()
    const device = store.createDevice(tenantId, body.id, await hasher.hash(secret))
    return c.json(
      { device: deviceView(device, new Map()), username: `${device.deviceId}@${tenantId}`, secret },
      201,
    )
  })
  api.get('/tenants/:tenant/devices/:device', (c) => {
    const tenantId = tenantParam(c)
    return c.json({ device: deviceView(deviceParam(c, tenantId), broker.onlineDevices(tenantId)) })
  })
  api.delete('/tenants/:tenant/devices/:device', (c) => {
    const tenantId = tenantParam(c)
    const device = deviceParam(c, tenantId)
    const sessions = store.listDeviceSessions(tenantId, device.deviceId)
    store.deleteDevice(tenantId, device.deviceId)
    // The device's persistent sessions go with it: subscriptions, queued messages, wills.
    broker.removeDevice(tenantId, device.deviceId, sessions)
    return c.body(null, 204)
  })
  api.post('/tenants/:tenant/devices/:device/rotate', async (c) => {
    const tenantId = tenantParam(c)
    const device = deviceParam(c, tenantId)
    const secret = generateSecret()
    const updated = store.setDeviceSecret(tenantId, device.deviceId, await hasher.hash(secret))
    // Sessions signed in with the old secret end now; the device reconnects with the new one.
    broker.disconnectDevice(tenantId, device.deviceId)
    return c.json({
      device: deviceView(updated, new Map()),
      username: `${device.deviceId}@${tenantId}`,
      secret,
    })
  })
  api.get('/tenants/:tenant/devices/:device/acl', (c) => {
    const tenantId = tenantParam(c)
    const device = deviceParam(c, tenantId)
    return c.json({ rules: store.listAclRules(tenantId, device.deviceId) })
  })
  api.put('/tenants/:tenant/devices/:device/acl', async (c) => {
    const tenantId = tenantParam(c)
    const device = deviceParam(c, tenantId)
    const body = await parseBody(c, aclBodySchema)
    store.replaceAclRules(tenantId, device.deviceId, body.rules)
    broker.reloadTenant(tenantId)
    return c.json({ rules: store.listAclRules(tenantId, device.deviceId) })
  })

  mountStateRoutes(api, {
    ...options.state,
    db: store.db,
    tenantParam,
    quotasOf: (tenantId) => effectiveQuotas(store.getTenant(tenantId) as TenantRecord),
  })
  if (options.functions !== undefined) {
    mountFunctionRoutes(api, { ...options.functions, tenantParam })
  }
  mountAccountRoutes(api, authOptions)
  mountLiveRoutes(api, {
    broker,
    liveStats,
    tenantParam,
    requireAdmin,
    maxPayloadBytes: (tenantId) => effectiveQuotas(store.getTenant(tenantId) as TenantRecord).maxPayloadBytes,
  })

  app.route('/api/v1', api)
  if (options.uiDir !== undefined) mountUi(app, options.uiDir, options.basePath ?? '')
  return app
}

/** Deepest nesting of a request body: room for a function's config or sample payload at their own bound. */
const MAX_BODY_DEPTH = MAX_JSON_DEPTH + 4

/** Parses a JSON body with `schema`; a bad body becomes `invalid_input` naming the field. */
export async function parseBody<T extends z.ZodType>(c: Context<Env>, schema: T): Promise<z.output<T>> {
  let value: unknown
  try {
    value = await c.req.json()
  } catch (cause) {
    throw new GatewayError(
      GATEWAY_ERROR_CODES.invalidInput,
      'Cannot read the request body as it is not valid JSON',
      { cause },
    )
  }
  // Bounded before validation: a schema (and later a worker's structured clone) recurses per level.
  if (valueDepth(value, MAX_BODY_DEPTH) > MAX_BODY_DEPTH) {
    throw new GatewayError(
      GATEWAY_ERROR_CODES.invalidInput,
      `Cannot accept the request as its body nests more than ${MAX_BODY_DEPTH} levels deep`,
    )
  }
  const result = schema.safeParse(value)
  if (!result.success) {
    const issue = result.error.issues[0]
    const field = issue === undefined || issue.path.length === 0 ? '(body)' : issue.path.map(String).join('.')
    const reason =
      issue?.code === 'unrecognized_keys'
        ? `unknown key ${issue.keys.map((key) => quote(key)).join(', ')}`
        : (issue?.message ?? 'invalid')
    throw new GatewayError(
      GATEWAY_ERROR_CODES.invalidInput,
      `Cannot accept the request as '${field}' is invalid: ${reason}`,
      {
        field,
      },
    )
  }
  return result.data
}

function definedOnly(values: QuotaOverrides): QuotaOverrides {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined))
}

/** The SHA-256 of an API token as stored: tokens are random, so a fast hash is enough. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex')
}
