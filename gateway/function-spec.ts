import { Cron } from 'croner'
import { z } from 'zod'
import { namespacePathProblem } from '../sandbox/state-rules.ts'
import { isValidFilter } from './acl.ts'
import { parseDuration } from './duration.ts'
import { TENANT_ID_PATTERN } from './names.ts'

export { parseDuration } from './duration.ts'

/** Function names follow the tenant id rules: they appear in URLs, metrics and log lines. */
export const FUNCTION_NAME_PATTERN = TENANT_ID_PATTERN

/** Largest function source accepted, in bytes (UTF-16 code units, as counted by zod). */
export const MAX_SOURCE_CHARS = 256 * 1024
/** Largest `config` of a deploy, as JSON text. */
export const MAX_CONFIG_CHARS = 64 * 1024
/** Shortest `every` interval: schedules are for periodic work, not a busy loop. */
export const MIN_EVERY_MS = 1_000
/** Longest `every` interval: one week (timers past 2^31 ms do not fire as written anyway). */
export const MAX_EVERY_MS = 7 * 24 * 3600 * 1000

const topicFilter = z
  .string()
  .min(1)
  .max(1024)
  .refine(isValidFilter, { message: 'must be a valid MQTT topic filter (section 4.7.1)' })
  .refine((filter) => !filter.startsWith('$'), { message: "must not start with '$' (reserved topics)" })

const topicName = z
  .string()
  .min(1)
  .max(1024)
  .refine((topic) => !/[+#]/.test(topic) && !topic.includes('\u0000'), {
    message: 'must be a topic name: no wildcards or U+0000',
  })
  .refine((topic) => !topic.startsWith('$'), { message: "must not start with '$' (reserved topics)" })
  .refine((topic) => !topic.split('/').some((level) => level === '.' || level === '..'), {
    message: "must not have '.' or '..' levels",
  })
  .refine((topic) => topic.split('/').length <= 99, { message: 'must have at most 99 levels' })

/**
 * A trigger: MQTT messages on a topic filter (tenant-relative), a fixed interval, a cron schedule,
 * or changes to a shared state namespace (and the namespaces below it).
 */
export const triggerSchema = z.union([
  z.object({ topic: topicFilter }).strict(),
  z
    .object({
      state: z.string().superRefine((path, ctx) => {
        const problem = namespacePathProblem(path)
        if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem })
      }),
    })
    .strict(),
  z
    .object({
      every: z.string().refine(
        (every) => {
          const ms = parseDuration(every)
          return ms !== undefined && ms >= MIN_EVERY_MS && ms <= MAX_EVERY_MS
        },
        { message: `must be a duration like '10s', '5m' or '1h', from ${MIN_EVERY_MS / 1000}s to 7d` },
      ),
    })
    .strict(),
  z
    .object({
      cron: z.string().min(1).max(256),
      /** IANA time zone of the cron expression; default UTC. */
      timezone: z.string().min(1).max(64).optional(),
    })
    .strict()
    .superRefine((trigger, ctx) => {
      const problem = cronProblem(trigger.cron, trigger.timezone)
      if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem, path: ['cron'] })
    }),
])

/** One trigger of a function. */
export type Trigger = z.output<typeof triggerSchema>

/** Why a cron expression (5 fields, or 6 with seconds first) cannot be used; undefined when it can. */
export function cronProblem(expression: string, timezone: string | undefined): string | undefined {
  if (timezone !== undefined) {
    try {
      new Intl.DateTimeFormat('en', { timeZone: timezone })
    } catch {
      return `has timezone ${JSON.stringify(timezone)}, which is not an IANA time zone name (e.g. 'Europe/Paris')`
    }
  }
  try {
    const cron = new Cron(expression, { paused: true, ...(timezone === undefined ? {} : { timezone }) })
    if (cron.nextRun() === null) return 'never fires'
    return undefined
  } catch (error) {
    return `is not a cron expression: ${(error as Error).message.replace(/^Cron\w*: /, '')}`
  }
}

/** Limits of one function's invocations, each within the tenant's quota. */
export const limitsSchema = z
  .object({
    /** Memory the function's QuickJS runtime may allocate, in MiB. */
    memoryMb: z.number().int().min(1).max(4096).optional(),
    /** CPU deadline of one invocation, in ms. */
    timeoutMs: z.number().int().min(1).max(600_000).optional(),
  })
  .strict()

const jsonValue: z.ZodType<unknown> = z.json()

/** Body of a deploy: `POST /api/v1/tenants/:tenant/functions`. */
export const deploySchema = z
  .object({
    name: z.string().regex(FUNCTION_NAME_PATTERN, {
      message: 'must be 1-63 lower-case letters, digits, - or _, starting with a letter or digit',
    }),
    source: z.string().min(1).max(MAX_SOURCE_CHARS),
    triggers: z.array(triggerSchema).min(1).max(32),
    /** Topic the handler's return value is published to (tenant-relative); none when absent or null. */
    output: topicName.nullable().optional(),
    limits: limitsSchema.optional(),
    config: z
      .record(z.string().max(256), jsonValue)
      .refine((config) => JSON.stringify(config).length <= MAX_CONFIG_CHARS, {
        message: `must be at most ${MAX_CONFIG_CHARS} characters as JSON`,
      })
      .optional(),
    enabled: z.boolean().optional(),
  })
  .strict()

/** A validated deploy request. */
export type DeployRequest = z.output<typeof deploySchema>

/** What a version holds besides its source: fixed at deploy, never changed afterwards. */
export interface FunctionSpec {
  triggers: Trigger[]
  output: string | null
  limits: { memoryMb: number; timeoutMs: number }
  config: Record<string, unknown>
}

/** Body of a test invocation: `POST .../functions/:name/invoke`. */
export const invokeSchema = z
  .object({
    /** Which handler to run; default `onMessage` when the function has a topic trigger. */
    handler: z.enum(['onMessage', 'onSchedule', 'onState']).optional(),
    /** The sample message; its payload is a JSON value, or `payloadBase64` gives raw bytes. */
    message: z
      .object({
        topic: topicName.optional(),
        payload: jsonValue.optional(),
        payloadBase64: z.base64().optional(),
        qos: z.union([z.literal(0), z.literal(1), z.literal(2)]).optional(),
        retain: z.boolean().optional(),
        device: z.string().min(1).max(128).optional(),
        ts: z.number().int().min(0).optional(),
      })
      .strict()
      .optional(),
    /** A kept version to run instead of the current one. */
    version: z.number().int().min(1).optional(),
  })
  .strict()

/** Body of a rollback. */
export const rollbackSchema = z.object({ version: z.number().int().min(1) }).strict()
