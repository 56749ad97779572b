import { z } from 'zod'
import { createDocument, type ZodOpenApiOperationObject, type ZodOpenApiPathsObject } from 'zod-openapi'
import packageJson from '../package.json' with { type: 'json' }
import {
  aclBodySchema,
  createDeviceSchema,
  createTenantSchema,
  createTokenSchema,
  createUserSchema,
  deploySchema,
  invokeSchema,
  publishSchema,
  putStateSchema,
  quotaOverridesSchema,
  replaySchema,
  rollbackSchema,
  setPasswordSchema,
  signInSchema,
} from './api-schemas.ts'
import { GATEWAY_ERROR_CODES } from './errors.ts'

const errorSchema = z
  .object({
    code: z.enum(Object.values(GATEWAY_ERROR_CODES) as [string, ...string[]]),
    message: z.string().meta({ description: 'What failed and why, for people' }),
    field: z.string().optional().meta({ description: 'The request field at fault (dotted path)' }),
    line: z.number().int().optional().meta({ description: 'Line of a compile error in a function source' }),
    column: z
      .number()
      .int()
      .optional()
      .meta({ description: 'Column of a compile error in a function source' }),
  })
  .meta({ id: 'Error' })

const tenant = z.string().meta({ description: 'Tenant id' })
const device = z.string().meta({ description: 'Device id' })
const name = z.string().meta({ description: 'Function name' })

type Method = 'get' | 'post' | 'put' | 'delete'
interface Route {
  method: Method
  path: string
  summary: string
  tag: string
  body?: z.ZodType
  query?: Record<string, z.ZodType>
  /** Status of success and what it returns. */
  status?: 200 | 201 | 202 | 204
  /** A Server-Sent Events stream. */
  sse?: boolean
  /** Served without authentication. */
  public?: boolean
}

const ROUTES: Route[] = [
  {
    method: 'post',
    path: '/session',
    tag: 'Sessions',
    summary: 'Sign in (API token, or user and password); sets the session cookie',
    body: signInSchema,
    public: true,
  },
  {
    method: 'get',
    path: '/session',
    tag: 'Sessions',
    summary: 'The signed-in session, its CSRF token and the gateway ports',
  },
  { method: 'delete', path: '/session', tag: 'Sessions', summary: 'Sign out', status: 204 },
  { method: 'get', path: '/users', tag: 'Users', summary: 'List users (administrators)' },
  {
    method: 'post',
    path: '/users',
    tag: 'Users',
    summary: 'Add a user, scoped to a tenant or an administrator',
    body: createUserSchema,
    status: 201,
  },
  {
    method: 'put',
    path: '/users/{name}/password',
    tag: 'Users',
    summary: "Set a user's password; ends their sessions",
    body: setPasswordSchema,
  },
  { method: 'delete', path: '/users/{name}', tag: 'Users', summary: 'Remove a user', status: 204 },
  {
    method: 'get',
    path: '/tokens',
    tag: 'Tokens',
    summary: 'List API tokens (a tenant caller sees its own)',
  },
  {
    method: 'post',
    path: '/tokens',
    tag: 'Tokens',
    summary: 'Make an API token; the secret is shown once',
    body: createTokenSchema,
    status: 201,
  },
  { method: 'delete', path: '/tokens/{id}', tag: 'Tokens', summary: 'Revoke an API token', status: 204 },
  { method: 'get', path: '/uplink', tag: 'Gateway', summary: "The private uplink's state (administrators)" },
  {
    method: 'get',
    path: '/stats',
    tag: 'Gateway',
    summary: 'Live series of the whole gateway: rates per second, latency, connections',
    query: { since: z.string().optional() },
  },
  { method: 'get', path: '/tenants', tag: 'Tenants', summary: 'List tenants (a tenant caller sees its own)' },
  {
    method: 'post',
    path: '/tenants',
    tag: 'Tenants',
    summary: 'Create a tenant',
    body: createTenantSchema,
    status: 201,
  },
  { method: 'get', path: '/tenants/{tenant}', tag: 'Tenants', summary: 'Show a tenant' },
  {
    method: 'delete',
    path: '/tenants/{tenant}',
    tag: 'Tenants',
    summary: 'Delete a tenant with everything it has',
    status: 204,
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/quotas',
    tag: 'Tenants',
    summary: "A tenant's quotas and its own overrides",
  },
  {
    method: 'put',
    path: '/tenants/{tenant}/quotas',
    tag: 'Tenants',
    summary: "Replace a tenant's quota overrides",
    body: quotaOverridesSchema,
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/stats',
    tag: 'Tenants',
    summary: 'Live series of one tenant',
    query: { since: z.string().optional() },
  },
  { method: 'get', path: '/tenants/{tenant}/acl', tag: 'ACL', summary: "The tenant's ACL rules" },
  {
    method: 'put',
    path: '/tenants/{tenant}/acl',
    tag: 'ACL',
    summary: "Replace the tenant's ACL rules",
    body: aclBodySchema,
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/devices',
    tag: 'Devices',
    summary: 'List devices with last seen and online state',
  },
  {
    method: 'post',
    path: '/tenants/{tenant}/devices',
    tag: 'Devices',
    summary: 'Add a device; its secret is shown once',
    body: createDeviceSchema,
    status: 201,
  },
  { method: 'get', path: '/tenants/{tenant}/devices/{device}', tag: 'Devices', summary: 'Show a device' },
  {
    method: 'delete',
    path: '/tenants/{tenant}/devices/{device}',
    tag: 'Devices',
    summary: 'Remove a device and its sessions',
    status: 204,
  },
  {
    method: 'post',
    path: '/tenants/{tenant}/devices/{device}/rotate',
    tag: 'Devices',
    summary: "Rotate a device's secret",
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/devices/{device}/acl',
    tag: 'ACL',
    summary: "A device's ACL rules",
  },
  {
    method: 'put',
    path: '/tenants/{tenant}/devices/{device}/acl',
    tag: 'ACL',
    summary: "Replace a device's ACL rules",
    body: aclBodySchema,
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/messages',
    tag: 'Topics',
    summary: "Live stream of the tenant's messages on a topic filter",
    query: { filter: z.string().optional() },
    sse: true,
  },
  {
    method: 'post',
    path: '/tenants/{tenant}/publish',
    tag: 'Topics',
    summary: 'Publish a message as the tenant (functions see it like a device message)',
    body: publishSchema,
    status: 202,
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/functions',
    tag: 'Functions',
    summary: 'List functions with status and counts',
  },
  {
    method: 'post',
    path: '/tenants/{tenant}/functions',
    tag: 'Functions',
    summary: 'Deploy a function (a new version)',
    body: deploySchema,
    status: 201,
  },
  {
    method: 'post',
    path: '/tenants/{tenant}/functions/check',
    tag: 'Functions',
    summary: 'Validate and compile a deploy without making it',
    body: deploySchema,
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/functions/{name}',
    tag: 'Functions',
    summary: 'Show a function and its current source',
  },
  {
    method: 'delete',
    path: '/tenants/{tenant}/functions/{name}',
    tag: 'Functions',
    summary: 'Delete a function',
    status: 204,
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/functions/{name}/versions',
    tag: 'Functions',
    summary: 'Kept versions',
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/functions/{name}/versions/{version}',
    tag: 'Functions',
    summary: 'One version with its source',
  },
  {
    method: 'post',
    path: '/tenants/{tenant}/functions/{name}/rollback',
    tag: 'Functions',
    summary: 'Make a kept version current',
    body: rollbackSchema,
  },
  {
    method: 'post',
    path: '/tenants/{tenant}/functions/{name}/enable',
    tag: 'Functions',
    summary: 'Enable a function',
  },
  {
    method: 'post',
    path: '/tenants/{tenant}/functions/{name}/disable',
    tag: 'Functions',
    summary: 'Disable a function',
  },
  {
    method: 'post',
    path: '/tenants/{tenant}/functions/{name}/invoke',
    tag: 'Functions',
    summary: 'Test-invoke with a sample message: value, outputs, logs, time, memory',
    body: invokeSchema,
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/functions/{name}/logs',
    tag: 'Functions',
    summary: 'Recent log lines; a live SSE stream with ?follow=true',
    query: { follow: z.enum(['true', 'false']).optional() },
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/dead-letters',
    tag: 'Dead letters',
    summary: 'Dead letters, newest first',
    query: { function: z.string().optional(), limit: z.string().optional(), before: z.string().optional() },
  },
  {
    method: 'post',
    path: '/tenants/{tenant}/dead-letters/replay',
    tag: 'Dead letters',
    summary: 'Replay dead letters',
    body: replaySchema,
  },
  {
    method: 'delete',
    path: '/tenants/{tenant}/dead-letters',
    tag: 'Dead letters',
    summary: 'Purge dead letters',
    query: { function: z.string().optional() },
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/outbox',
    tag: 'Outbox',
    summary: 'Records waiting for the uplink, and usage',
    query: { after: z.string().optional(), limit: z.string().optional() },
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/outbox/drops',
    tag: 'Outbox',
    summary: 'Records dropped before the uplink took them',
    query: { before: z.string().optional(), limit: z.string().optional() },
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/state',
    tag: 'State',
    summary: 'State namespaces with their usage',
  },
  {
    method: 'get',
    path: '/tenants/{tenant}/state/keys',
    tag: 'State',
    summary: 'Keys of a namespace, by prefix, in pages',
  },
  { method: 'get', path: '/tenants/{tenant}/state/value', tag: 'State', summary: "One key's value" },
  {
    method: 'put',
    path: '/tenants/{tenant}/state/value',
    tag: 'State',
    summary: "Set one key's value",
    body: putStateSchema,
  },
  {
    method: 'delete',
    path: '/tenants/{tenant}/state/value',
    tag: 'State',
    summary: 'Delete one key',
    status: 204,
  },
]

const PATH_PARAMS: Record<string, z.ZodType> = {
  tenant,
  device,
  name,
  version: z.string().meta({ description: 'Version number' }),
  id: z.string().meta({ description: 'Token id' }),
}

/**
 * The OpenAPI 3.1 document of `/api/v1`, generated from the zod schemas that validate each request
 * (the same ones the UI's forms use). Served at `GET /api/openapi.json`.
 */
export function buildOpenApi(): ReturnType<typeof createDocument> {
  const paths: ZodOpenApiPathsObject = {}
  for (const route of ROUTES) {
    const params = [...route.path.matchAll(/\{(\w+)\}/g)].map((match) => match[1] as string)
    const operation: ZodOpenApiOperationObject = {
      summary: route.summary,
      tags: [route.tag],
      ...(route.public ? { security: [] } : {}),
      requestParams: {
        ...(params.length === 0
          ? {}
          : {
              path: z.object(
                Object.fromEntries(params.map((param) => [param, PATH_PARAMS[param] as z.ZodType])),
              ),
            }),
        ...(route.query === undefined ? {} : { query: z.object(route.query) }),
      },
      ...(route.body === undefined
        ? {}
        : { requestBody: { required: true, content: { 'application/json': { schema: route.body } } } }),
      responses: {
        [String(route.status ?? 200)]: {
          description: route.status === 204 ? 'Done; no body' : 'Success',
          ...(route.status === 204
            ? {}
            : {
                content: {
                  [route.sse ? 'text/event-stream' : 'application/json']: { schema: z.object({}).loose() },
                },
              }),
        },
        default: { description: 'An error', content: { 'application/json': { schema: errorSchema } } },
      },
    }
    paths[route.path] = { ...paths[route.path], [route.method]: operation }
  }
  return createDocument(
    {
      openapi: '3.1.0',
      info: {
        title: 'Taureau management API',
        version: packageJson.version,
        description:
          'Tenants, devices, functions, state, dead letters, the outbox and the uplink of one Taureau gateway. ' +
          'Authenticate with `Authorization: Bearer <token>` (the admin token in DATA/admin-token, or a token ' +
          'from POST /tokens), or with the session cookie of POST /session plus its CSRF token in ' +
          '`X-CSRF-Token` on every change.',
      },
      servers: [{ url: 'v1', description: 'Relative to this document' }],
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer' },
          session: { type: 'apiKey', in: 'cookie', name: 'taureau_session' },
        },
      },
      security: [{ bearer: [] }, { session: [] }],
      paths,
    },
    { allowEmptySchema: { unknown: true, custom: true } },
  )
}
