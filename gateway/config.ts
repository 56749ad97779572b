import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { GATEWAY_ERROR_CODES, GatewayError, quote } from './errors.ts'
import { TENANT_ID_PATTERN } from './names.ts'
import { quotasSchema } from './quotas.ts'

export { type QuotaOverrides, type Quotas, quotaOverridesSchema, quotasSchema } from './quotas.ts'

const port = z.number().int().min(0).max(65_535)

/** The gateway's configuration schema: one schema for the YAML file, env variables and flags. */
export const configSchema = z
  .object({
    /** Data directory: SQLite store, admin token, keys. */
    data: z.string().min(1).default('.taureau'),
    /** Address every listener binds to. */
    host: z.string().min(1).default('0.0.0.0'),
    mqtt: z
      .object({
        /** MQTT over TCP. 0 picks any free port. */
        port: port.default(1883),
        /** MQTT over WebSocket (path `/mqtt` or `/`). 0 picks any free port. */
        wsPort: port.default(8083),
        /** Clients without credentials join this tenant; off unless set. For development only. */
        anonymousTenant: z.string().regex(TENANT_ID_PATTERN).nullable().default(null),
        /** Seconds a connection may take to send CONNECT. */
        connectTimeoutSec: z.number().int().min(1).max(600).default(30),
        /**
         * Largest MQTT packet accepted, in bytes, checked from the packet's header before its body is
         * buffered, so no connection can make the gateway hold more. Tenant payload quotas apply below it.
         */
        maxPacketBytes: z
          .number()
          .int()
          .min(1024)
          .max(268_435_455)
          .default(16 * 1024 * 1024),
        /** Topic filters in one SUBSCRIBE or UNSUBSCRIBE; more close the connection. */
        maxFiltersPerSubscribe: z.number().int().min(1).max(10_000).default(100),
        /** Subscriptions one client may hold; more are refused with SUBACK 0x80. */
        maxSubscriptionsPerClient: z.number().int().min(1).max(100_000).default(1_000),
        /** Outgoing messages queued per connection before it is treated as stalled (aedes `queueLimit`). */
        queueLimit: z.number().int().min(1).max(100_000).default(42),
      })
      .strict()
      .prefault({}),
    http: z
      .object({
        /** The API and the web UI. 0 picks any free port. */
        port: port.default(8080),
        /**
         * Path the API and UI are served under, e.g. `/taureau` behind a proxy that does not strip
         * its prefix; empty at the root.
         */
        basePath: z
          .string()
          .regex(/^(\/[A-Za-z0-9._~-]+)*$/, { message: "must be empty or like '/taureau' (no trailing '/')" })
          .default(''),
        /** Serve the web UI at `/` (from `ui/dist`). */
        ui: z.boolean().default(true),
        /**
         * Serve HTTPS with this certificate and key (PEM files); session cookies are then `Secure`.
         * Null serves plain HTTP (put a TLS proxy in front on a shared network).
         */
        tls: z
          .object({ certFile: z.string().min(1), keyFile: z.string().min(1) })
          .strict()
          .nullable()
          .default(null),
        /** Trust `X-Forwarded-Proto` and `X-Forwarded-Host` from a TLS-terminating proxy in front. */
        trustProxy: z.boolean().default(false),
        /** A UI session ends after this many minutes without a request. */
        sessionIdleMinutes: z
          .number()
          .int()
          .min(1)
          .max(30 * 24 * 60)
          .default(12 * 60),
        /** A UI session ends this many hours after sign-in, however it is used. */
        sessionMaxHours: z
          .number()
          .int()
          .min(1)
          .max(365 * 24)
          .default(7 * 24),
        /**
         * Serve `/metrics` without a token. Off by default: the series name every tenant and its
         * traffic, which is for the operator; Prometheus sends the admin token as a bearer token.
         */
        publicMetrics: z.boolean().default(false),
        /** Largest request body accepted, in bytes. */
        maxBodyBytes: z
          .number()
          .int()
          .min(1024)
          .max(64 * 1024 * 1024)
          .default(1024 * 1024),
      })
      .strict()
      .prefault({}),
    auth: z
      .object({
        /** Failed CONNECTs from one address answered at once before the slowdown starts. */
        freeFailures: z.number().int().min(0).max(1000).default(3),
        /** Longest delay a failing address waits for its CONNACK, in ms. */
        maxDelayMs: z.number().int().min(0).max(600_000).default(30_000),
      })
      .strict()
      .prefault({}),
    functions: z
      .object({
        /** Worker threads that run tenant functions; default cores - 1, at least 1. */
        workers: z.number().int().min(1).max(256).nullable().default(null),
        /**
         * Hard cap of each tenant's QuickJS WebAssembly memory, in MiB: the functions of one tenant
         * share it, each within its own limit. At least 32 (QuickJS starts with 16).
         */
        tenantMemoryMb: z.number().int().min(32).max(4096).default(64),
        /** A function's memory limit when its deploy sets none, in MiB. */
        defaultMemoryMb: z.number().int().min(1).max(4096).default(16),
        /** A function's CPU deadline per invocation when its deploy sets none, in ms. */
        defaultTimeoutMs: z.number().int().min(1).max(600_000).default(1_000),
        /** Versions kept per function (at least 20); older ones are pruned, never the one that runs. */
        keepVersions: z.number().int().min(20).max(10_000).default(20),
        /** Most messages sent to a worker in one batch. */
        maxBatch: z.number().int().min(1).max(10_000).default(64),
        /** Messages waiting per function; past it new ones go to the dead letters as `queue_full`. */
        queueLimit: z.number().int().min(1).max(1_000_000).default(10_000),
        /** Payload bytes waiting per function; past it new messages go to the dead letters as `queue_full`. */
        queueBytes: z
          .number()
          .int()
          .min(1024)
          .max(4 * 1024 * 1024 * 1024)
          .default(16 * 1024 * 1024),
        /** Dead letters kept per tenant; the oldest go first. */
        deadLetterLimit: z.number().int().min(1).max(1_000_000).default(1_000),
        /** Log lines kept in memory per function for `fn logs`. */
        logLines: z.number().int().min(1).max(100_000).default(500),
        /**
         * How many functions a message's output may pass through (a function's output triggering
         * another): bounds loops such as a function triggered by its own output.
         */
        maxChainDepth: z.number().int().min(1).max(64).default(8),
        /**
         * How many times a failed invocation runs again before its message becomes a dead letter.
         * Failures the function's output causes (`bad_output`) are not tried again.
         */
        retries: z.number().int().min(0).max(100).default(2),
        /**
         * How long a device's QoS 1/2 message waits for room when a function it triggers has a
         * full queue, in ms; then it is refused unacknowledged (the device sends it again later).
         * Acknowledged messages are never dropped for a full queue.
         */
        backpressureWaitMs: z.number().int().min(0).max(60_000).default(1000),
        /** Wait before the first retry, in ms; it doubles with each further one. The function's queue waits too, so order is kept. */
        retryBackoffMs: z.number().int().min(0).max(3_600_000).default(100),
        /**
         * A tenant whose functions have not run for this long, in ms, has its sandbox dropped
         * (about 0.45 MB of memory with one small function) and rebuilt, its functions compiled
         * again, at its next invocation (a cold start of a few ms); module-level variables start
         * again then. 0 keeps sandboxes.
         */
        idleEvictMs: z.number().int().min(0).max(86_400_000).default(60_000),
      })
      .strict()
      .prefault({}),
    /**
     * How messages and results are journaled before they are acknowledged (see docs/durability.md).
     */
    durability: z
      .object({
        /**
         * `power-loss`: every commit waits for the disk (fsync, SQLite `synchronous=FULL`), so an
         * acknowledged message survives a power cut. `process-crash`: commits reach the OS only
         * (`synchronous=NORMAL`): an acknowledged message survives the process being killed, not
         * the box losing power; faster, and less wear on SD cards.
         */
        mode: z.enum(['power-loss', 'process-crash']).default('power-loss'),
        /**
         * How long the first message of a group commit waits for others, in ms. 0 (the default)
         * commits at the end of each event-loop turn: what arrived meanwhile, including while the
         * previous commit waited for the disk, shares one commit.
         */
        commitWindowMs: z.number().int().min(0).max(1000).default(0),
        /** Most writes in one group commit. */
        maxBatch: z.number().int().min(1).max(100_000).default(1024),
        /** Journal QoS 0 messages too; by default only QoS 1 and 2 messages are (QoS 0 promises nothing). */
        journalQos0: z.boolean().default(false),
        /**
         * false acknowledges messages before anything is stored, as most brokers do: a crash
         * loses what was queued for functions. For benchmarks and data that may be lost.
         */
        journal: z.boolean().default(true),
        /**
         * Largest size of the store file, in bytes (SQLite `max_page_count`); null for no bound.
         * At the bound writes fail: the gateway stops acknowledging messages instead of
         * acknowledging what it cannot store, and starts again once space is freed.
         */
        maxStoreBytes: z
          .number()
          .int()
          .min(1024 * 1024)
          .nullable()
          .default(null),
      })
      .strict()
      .prefault({}),
    /**
     * The private uplink to a cloud receiver (see docs/uplink.md). Off until `cloud` and `cloudKey`
     * are set; the outbox keeps records meanwhile, within each tenant's quota.
     */
    uplink: z
      .object({
        /** The receiver, `HOST:PORT`. */
        cloud: z
          .string()
          .regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:.]+\]:\d{1,5}$/, 'must be HOST:PORT')
          .nullable()
          .default(null),
        /** The receiver's public key (`taureau keys` on its data dir), base64. */
        cloudKey: z.string().nullable().default(null),
        /** Bytes of every unit on the wire. Must match the receiver's. */
        cellBytes: z.union([z.literal(512), z.literal(1024), z.literal(1200)]).default(1024),
        /**
         * When cells leave, whatever the data: `epoch` (K cells every T ms after a random start),
         * `clock` (one cell per interval, constant or Poisson), `tiered` (K from a small set,
         * changed at most once per dwell), `off` (as data comes: for tests only, it hides nothing).
         */
        shaper: z
          .discriminatedUnion('mode', [
            z
              .object({
                mode: z.literal('epoch'),
                epochMs: z.number().int().min(10).max(60_000).default(1000),
                cellsPerEpoch: z.number().int().min(1).max(10_000).default(8),
              })
              .strict(),
            z
              .object({
                mode: z.literal('clock'),
                intervalMs: z.number().min(1).max(60_000).default(125),
                poisson: z.boolean().default(false),
              })
              .strict(),
            z
              .object({
                mode: z.literal('tiered'),
                epochMs: z.number().int().min(10).max(60_000).default(1000),
                tiers: z.array(z.number().int().min(1).max(10_000)).min(1).max(8).default([2, 8, 32]),
                dwellMs: z.number().int().min(1000).max(86_400_000).default(600_000),
              })
              .strict(),
            z.object({ mode: z.literal('off') }).strict(),
          ])
          .default({ mode: 'epoch', epochMs: 1000, cellsPerEpoch: 8 }),
        /** Secretstream rekey period. */
        rekeyMs: z.number().int().min(1000).max(86_400_000).default(60_000),
        /** A full new handshake after this, give or take 20%. */
        sessionMs: z.number().int().min(10_000).max(86_400_000).default(3_600_000),
        /** Bytes of records sent and not yet acknowledged. */
        windowBytes: z
          .number()
          .int()
          .min(4096)
          .max(64 * 1024 * 1024)
          .default(1024 * 1024),
        /** Reconnect backoff bounds, in ms (full jitter, doubling). */
        backoffMinMs: z.number().int().min(10).max(3_600_000).default(500),
        backoffMaxMs: z.number().int().min(10).max(3_600_000).default(60_000),
        /** Cells of records waiting in the shaper past which `taureau_uplink_backlog_alarm` is raised. */
        alarmCells: z.number().int().min(1).default(512),
      })
      .strict()
      .prefault({}),
    /** Quotas given to tenants created without explicit ones. */
    tenantDefaults: z
      .object({ quotas: quotasSchema.prefault({}) })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .strict()
      .prefault({}),
  })
  .strict()

/** A complete, validated configuration. */
export type GatewayConfig = z.output<typeof configSchema>

/** What can be given as a configuration layer: any part of the schema's input. */
export type ConfigLayer = Record<string, unknown>

/** Where each configuration layer comes from: an env variable name per key path. */
export const CONFIG_ENV: Readonly<Record<string, readonly string[]>> = {
  TAUREAU_DATA: ['data'],
  TAUREAU_HOST: ['host'],
  TAUREAU_MQTT_PORT: ['mqtt', 'port'],
  TAUREAU_WS_PORT: ['mqtt', 'wsPort'],
  TAUREAU_HTTP_PORT: ['http', 'port'],
  TAUREAU_ANONYMOUS_TENANT: ['mqtt', 'anonymousTenant'],
  TAUREAU_LOG_LEVEL: ['log', 'level'],
  TAUREAU_DURABILITY: ['durability', 'mode'],
  TAUREAU_CLOUD: ['uplink', 'cloud'],
  TAUREAU_CLOUD_KEY: ['uplink', 'cloudKey'],
}

const NUMERIC_ENV = new Set(['TAUREAU_MQTT_PORT', 'TAUREAU_WS_PORT', 'TAUREAU_HTTP_PORT'])

/** Options of {@link loadConfig}. */
export interface LoadConfigOptions {
  /** YAML file to read, if any (`--config` or `TAUREAU_CONFIG`). */
  file?: string | undefined
  /** The process environment (injected for tests). */
  env?: Readonly<Record<string, string | undefined>>
  /** Values from command-line flags, as a partial config. */
  flags?: ConfigLayer
}

interface Layer {
  source: string
  value: ConfigLayer
}

/**
 * Builds the configuration from defaults < file < env < flags and validates it with one schema.
 * Throws a {@link GatewayError} `invalid_config` naming the key, the reason and the layer it came from.
 */
export function loadConfig(options: LoadConfigOptions = {}): GatewayConfig {
  const env = options.env ?? process.env
  const layers: Layer[] = []
  const file = options.file ?? env.TAUREAU_CONFIG
  if (file !== undefined && file !== '') layers.push({ source: `file ${file}`, value: readConfigFile(file) })
  layers.push({ source: 'env', value: envLayer(env) })
  if (options.flags !== undefined) layers.push({ source: 'flag', value: options.flags })

  let merged: ConfigLayer = {}
  for (const layer of layers) merged = mergeLayers(merged, layer.value)
  const result = configSchema.safeParse(merged)
  if (result.success) return result.data
  const issue = result.error.issues[0]
  const path = issue?.path.map(String) ?? []
  const key = path.length > 0 ? path.join('.') : '(root)'
  const source = [...layers].reverse().find((layer) => hasPath(layer.value, path))?.source
  throw new GatewayError(
    GATEWAY_ERROR_CODES.invalidConfig,
    `Cannot load configuration as '${key}' is invalid: ${issue?.message ?? 'unknown problem'}${source === undefined ? '' : ` (from ${source})`}`,
    { field: key },
  )
}

function readConfigFile(file: string): ConfigLayer {
  let text: string
  try {
    text = readFileSync(resolve(file), 'utf8')
  } catch (cause) {
    throw new GatewayError(
      GATEWAY_ERROR_CODES.invalidConfig,
      `Cannot load configuration as the file ${quote(file, 200)} cannot be read: ${(cause as Error).message}`,
      { cause },
    )
  }
  let value: unknown
  try {
    value = parseYaml(text)
  } catch (cause) {
    throw new GatewayError(
      GATEWAY_ERROR_CODES.invalidConfig,
      `Cannot load configuration as the file ${quote(file, 200)} is not valid YAML: ${(cause as Error).message}`,
      { cause },
    )
  }
  if (value === null || value === undefined) return {}
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new GatewayError(
      GATEWAY_ERROR_CODES.invalidConfig,
      `Cannot load configuration as the file ${quote(file, 200)} does not hold a mapping of keys`,
    )
  }
  return value as ConfigLayer
}

function envLayer(env: Readonly<Record<string, string | undefined>>): ConfigLayer {
  let layer: ConfigLayer = {}
  for (const [name, path] of Object.entries(CONFIG_ENV)) {
    const raw = env[name]
    if (raw === undefined || raw === '') continue
    // A number that does not parse stays a string, so the schema reports it against the key.
    const value = NUMERIC_ENV.has(name) && /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : raw
    layer = mergeLayers(layer, nest(path, value))
  }
  return layer
}

function nest(path: readonly string[], value: unknown): ConfigLayer {
  let out: unknown = value
  for (let i = path.length - 1; i >= 0; i--) out = { [path[i] as string]: out }
  return out as ConfigLayer
}

function isPlainObject(value: unknown): value is ConfigLayer {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Deep-merges `over` onto `base`; values of `over` win, objects merge key by key. */
export function mergeLayers(base: ConfigLayer, over: ConfigLayer): ConfigLayer {
  const out: ConfigLayer = { ...base }
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined) continue
    const current = out[key]
    out[key] = isPlainObject(current) && isPlainObject(value) ? mergeLayers(current, value) : value
  }
  return out
}

function hasPath(value: ConfigLayer, path: readonly string[]): boolean {
  let node: unknown = value
  for (const key of path) {
    if (!isPlainObject(node) || node[key] === undefined) return false
    node = node[key]
  }
  return true
}
