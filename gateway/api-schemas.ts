// The bodies the API takes, as zod schemas. The browser UI validates its forms with these same
// schemas, so this module and what it imports stay free of Node APIs.
import { z } from 'zod'
import { STATE_LIMITS } from '../sandbox/state-rules.ts'
import { aclRulesSchema } from './acl.ts'
import { deploySchema, invokeSchema, rollbackSchema } from './function-spec.ts'
import { DEVICE_ID_PATTERN, TENANT_ID_PATTERN } from './names.ts'
import { quotaOverridesSchema } from './quotas.ts'

export { deploySchema, invokeSchema, quotaOverridesSchema, rollbackSchema }

const TENANT_ID_MESSAGE = 'must be 1-63 lower-case letters, digits, - or _, starting with a letter or digit'

/** Body of `POST /api/v1/tenants`. */
export const createTenantSchema = z
  .object({
    id: z.string().regex(TENANT_ID_PATTERN, { message: TENANT_ID_MESSAGE }),
    quotas: quotaOverridesSchema.optional(),
  })
  .strict()

/** Body of `POST /api/v1/tenants/:tenant/devices`. */
export const createDeviceSchema = z
  .object({
    id: z.string().regex(DEVICE_ID_PATTERN, {
      message: 'must be 1-128 letters, digits, ., :, - or _, starting with a letter or digit',
    }),
  })
  .strict()

/** Body of the ACL endpoints. */
export const aclBodySchema = z.object({ rules: aclRulesSchema }).strict()

/** What `POST .../dead-letters/replay` takes: ids, or all of one function's, or all of the tenant's. */
export const replaySchema = z
  .object({
    ids: z.array(z.number().int().min(1)).min(1).max(10_000).optional(),
    function: z.string().min(1).max(128).optional(),
  })
  .strict()

/** Body of `PUT /api/v1/tenants/:tenant/state/value`. */
export const putStateSchema = z
  .object({
    value: z.unknown(),
    ttlMs: z.number().int().min(1).max(STATE_LIMITS.maxTtlMs).optional(),
  })
  .strict()
  .refine((body) => body.value !== undefined, { message: 'is required (any JSON value)', path: ['value'] })

/** User names: what people type at sign-in, so letters, digits, `.`, `_`, `-` and `@`. */
export const USER_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/

/** Shortest password accepted for a user (NIST SP 800-63B asks for at least 8). */
export const MIN_PASSWORD_CHARS = 8

const password = z
  .string()
  .min(MIN_PASSWORD_CHARS, { message: `must be at least ${MIN_PASSWORD_CHARS} characters` })
  .max(1024, { message: 'must be at most 1024 characters' })

const tenantScope = z.string().regex(TENANT_ID_PATTERN, { message: TENANT_ID_MESSAGE }).nullable().optional()

/** Body of `POST /api/v1/session`: an API token (the admin token included), or a user and password. */
export const signInSchema = z.union([
  z.object({ token: z.string().min(1, { message: 'is required' }).max(256) }).strict(),
  z
    .object({
      username: z.string().min(1, { message: 'is required' }).max(64),
      password: z.string().min(1, { message: 'is required' }).max(1024),
    })
    .strict(),
])

/** Body of `POST /api/v1/users`: a tenant user when `tenant` is set, else an administrator. */
export const createUserSchema = z
  .object({
    name: z.string().regex(USER_NAME_PATTERN, {
      message: 'must be 1-64 letters, digits, ., _, - or @, starting with a letter or digit',
    }),
    password,
    tenant: tenantScope,
  })
  .strict()

/** Body of `PUT /api/v1/users/:name/password`. */
export const setPasswordSchema = z.object({ password }).strict()

/** Body of `POST /api/v1/tokens`: a tenant token when `tenant` is set, else an admin token. */
export const createTokenSchema = z
  .object({
    label: z.string().trim().min(1, { message: 'is required' }).max(128),
    tenant: tenantScope,
  })
  .strict()

/** Body of `POST /api/v1/tenants/:tenant/publish`: one message into the tenant's topics. */
export const publishSchema = z
  .object({
    topic: z
      .string()
      .min(1, { message: 'is required' })
      .max(1024)
      .refine((topic) => !/[+#]/.test(topic) && !topic.includes('\u0000'), {
        message: 'must be a topic name: no wildcards or U+0000',
      })
      .refine((topic) => !topic.startsWith('$'), { message: "must not start with '$' (reserved topics)" }),
    /** The payload as text (UTF-8 on the wire); `payloadBase64` gives raw bytes instead. */
    payload: z
      .string()
      .max(1024 * 1024)
      .optional(),
    payloadBase64: z
      .base64()
      .max(1.4 * 1024 * 1024)
      .optional(),
    qos: z.union([z.literal(0), z.literal(1), z.literal(2)]).optional(),
    retain: z.boolean().optional(),
  })
  .strict()
  .refine((body) => body.payload === undefined || body.payloadBase64 === undefined, {
    message: 'give payload or payloadBase64, not both',
    path: ['payloadBase64'],
  })
