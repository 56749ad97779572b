// Tenant quotas as the API, the config file and the browser UI validate them: imports only zod.
import { z } from 'zod'

const quotaFields = {
  /** Devices of the tenant connected at once; the next CONNECT gets "server unavailable". */
  maxConnections: z.number().int().min(0).max(1_000_000),
  /** Publishes per second accepted from the tenant's devices together (token bucket). */
  maxMessagesPerSec: z.number().int().min(1).max(10_000_000),
  /** Burst above the rate, in messages; defaults to one second's worth. */
  burstMessages: z.number().int().min(1).max(10_000_000),
  /** Retained messages the tenant may store; past it new retained topics are delivered but not kept. */
  maxRetainedMessages: z.number().int().min(0).max(10_000_000),
  /** Persistent sessions (clean session 0, with subscriptions) the tenant may keep. */
  maxPersistentSessions: z.number().int().min(0).max(1_000_000),
  /** Largest PUBLISH payload accepted, in bytes. */
  maxPayloadBytes: z
    .number()
    .int()
    .min(0)
    .max(256 * 1024 * 1024),
  /** Functions the tenant may deploy. */
  maxFunctions: z.number().int().min(0).max(10_000),
  /** Largest memory limit one of the tenant's functions may ask for, in MiB. */
  maxFunctionMemoryMb: z.number().int().min(1).max(4096),
  /** Longest CPU deadline one of the tenant's functions may ask for, in ms. */
  maxFunctionTimeoutMs: z.number().int().min(1).max(600_000),
  /** Keys of function state the tenant may keep, all namespaces together. */
  maxStateKeys: z.number().int().min(0).max(100_000_000),
  /** Bytes of function state (keys and JSON values) the tenant may keep. */
  maxStateBytes: z
    .number()
    .int()
    .min(0)
    .max(64 * 1024 * 1024 * 1024),
  /** Bytes of records the tenant may have waiting in the outbox for the uplink. */
  outboxBytes: z
    .number()
    .int()
    .min(0)
    .max(1024 * 1024 * 1024 * 1024),
  /** How long an outbox record may wait for the uplink before it is dropped (`ttl`), in ms. */
  outboxTtlMs: z
    .number()
    .int()
    .min(1000)
    .max(10 * 365 * 24 * 3600 * 1000),
  /**
   * What happens when a record would take the outbox past `outboxBytes`: `refuse` fails the
   * invocation that emits it (the message is retried, then kept as a dead letter); `drop-oldest`
   * drops the oldest records; `drop-lowest-priority` drops the oldest of the lowest priority
   * first, and refuses a record that could only fit by displacing records of a higher priority
   * than its own.
   */
  outboxPolicy: z.enum(['refuse', 'drop-oldest', 'drop-lowest-priority']),
  /** Priority per outbox stream (higher is kept longer); streams not named have priority 0. */
  outboxStreamPriorities: z.record(
    z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'stream names are 1-64 letters, digits, ., _ or -'),
    z.number().int().min(-1000).max(1000),
  ),
}

/** Per-tenant quotas: the bounds a tenant's devices share. Also the defaults for new tenants. */
export const quotasSchema = z
  .object({
    maxConnections: quotaFields.maxConnections.default(1_000),
    maxMessagesPerSec: quotaFields.maxMessagesPerSec.default(1_000),
    burstMessages: quotaFields.burstMessages.optional(),
    maxPayloadBytes: quotaFields.maxPayloadBytes.default(256 * 1024),
    maxRetainedMessages: quotaFields.maxRetainedMessages.default(10_000),
    maxPersistentSessions: quotaFields.maxPersistentSessions.default(1_000),
    maxFunctions: quotaFields.maxFunctions.default(50),
    maxFunctionMemoryMb: quotaFields.maxFunctionMemoryMb.default(32),
    maxFunctionTimeoutMs: quotaFields.maxFunctionTimeoutMs.default(5_000),
    maxStateKeys: quotaFields.maxStateKeys.default(10_000),
    maxStateBytes: quotaFields.maxStateBytes.default(16 * 1024 * 1024),
    outboxBytes: quotaFields.outboxBytes.default(64 * 1024 * 1024),
    outboxTtlMs: quotaFields.outboxTtlMs.default(7 * 24 * 3600 * 1000),
    outboxPolicy: quotaFields.outboxPolicy.default('refuse'),
    outboxStreamPriorities: quotaFields.outboxStreamPriorities.default({}),
  })
  .strict()

/** A tenant's own quota values; the keys it omits follow the gateway's defaults. */
export const quotaOverridesSchema = z
  .object({
    maxConnections: quotaFields.maxConnections.optional(),
    maxMessagesPerSec: quotaFields.maxMessagesPerSec.optional(),
    burstMessages: quotaFields.burstMessages.optional(),
    maxPayloadBytes: quotaFields.maxPayloadBytes.optional(),
    maxRetainedMessages: quotaFields.maxRetainedMessages.optional(),
    maxPersistentSessions: quotaFields.maxPersistentSessions.optional(),
    maxFunctions: quotaFields.maxFunctions.optional(),
    maxFunctionMemoryMb: quotaFields.maxFunctionMemoryMb.optional(),
    maxFunctionTimeoutMs: quotaFields.maxFunctionTimeoutMs.optional(),
    maxStateKeys: quotaFields.maxStateKeys.optional(),
    maxStateBytes: quotaFields.maxStateBytes.optional(),
    outboxBytes: quotaFields.outboxBytes.optional(),
    outboxTtlMs: quotaFields.outboxTtlMs.optional(),
    outboxPolicy: quotaFields.outboxPolicy.optional(),
    outboxStreamPriorities: quotaFields.outboxStreamPriorities.optional(),
  })
  .strict()

/** Validated tenant quotas. */
export type Quotas = z.output<typeof quotasSchema>
/** A tenant's own quota values, as validated. */
export type QuotaOverrides = z.output<typeof quotaOverridesSchema>
