// The JSON the gateway's API answers, as the UI reads it. Times are ISO strings unless the name
// says `Ms` or the field is an epoch number (`t`, `ts`, `lastAckAt`).
import type { z } from 'zod'
import type { aclBodySchema, quotaOverridesSchema } from '../../../gateway/api-schemas.ts'

/** Who is signed in, as `GET /session` tells it. */
export interface SessionInfo {
  user: string
  kind: 'admin' | 'tenant'
  tenant: string | null
  via: 'token' | 'password'
  expiresAt: string
}

/** What a signed-in UI is told about the gateway. */
export interface GatewayInfo {
  version: string
  mqttPort: number
  wsPort: number
}

/** Body of `GET|POST /session`. */
export interface SessionResponse {
  session: SessionInfo
  csrfToken: string
  gateway: GatewayInfo
}

/** A tenant's own quota values. */
export type QuotaOverrides = z.output<typeof quotaOverridesSchema>
/** A tenant's effective quotas: its overrides over the gateway's defaults. */
export type Quotas = {
  [K in Exclude<keyof QuotaOverrides, 'burstMessages'>]-?: NonNullable<QuotaOverrides[K]>
} & Pick<QuotaOverrides, 'burstMessages'>

export interface Tenant {
  id: string
  createdAt: string
  quotas: Quotas
  quotaOverrides: QuotaOverrides
  connections: number
}

export interface Device {
  id: string
  tenant: string
  username: string
  createdAt: string
  rotatedAt: string | null
  lastSeenAt: string | null
  connections: number
}

/** Answer of adding a device or rotating its secret: the secret is shown this once. */
export interface DeviceSecret {
  device: Device
  username: string
  secret: string
}

export type AclRule = z.output<typeof aclBodySchema>['rules'][number]

export type Trigger =
  | { topic: string }
  | { state: string }
  | { every: string }
  | { cron: string; timezone?: string }

export interface FunctionStats {
  invocations: number
  errors: number
  errorsByReason: Record<string, number>
  lastError: { at: string; message: string } | null
  queued: number
  p50Ms: number | null
  p99Ms: number | null
}

export interface FunctionView {
  name: string
  version: number
  latestVersion: number
  enabled: boolean
  state: 'running' | 'disabled' | 'failed'
  problem: string | null
  triggers: Trigger[]
  output: string | null
  limits: { memoryMb: number; timeoutMs: number }
  config: Record<string, unknown>
  createdAt: string
  updatedAt: string
  stats: FunctionStats
}

export interface FunctionVersion {
  version: number
  current: boolean
  createdAt: string
  triggers: Trigger[]
  output: string | null
  limits: { memoryMb: number; timeoutMs: number }
  config: Record<string, unknown>
  source?: string
}

export type TestInvocation =
  | {
      ok: true
      version: number
      handler: string
      value: unknown
      output: { topic: string; payload: string } | null
      publishes: Array<{ topic: string; payload: string; qos: number; retain: boolean }>
      emits: Array<{ stream: string; record: unknown }>
      state: Array<{ namespace: string; key: string; op: string; value?: unknown }>
      leases: Array<{ namespace: string; ttlMs: number | null }>
      logs: string[]
      durationMs: number
      memoryBytes: number
    }
  | { ok: false; version: number; handler: string; error: { code: string; message: string } }

export interface LogLine {
  ts: number
  version: number
  level: 'log' | 'error'
  message: string
}

/** One second of the live charts; rates are per second. */
export interface StatsSample {
  t: number
  messagesIn: number
  messagesOut: number
  invocations: number
  errors: number
  p50Ms: number | null
  p99Ms: number | null
  connections: number
}

export interface StatsResponse {
  intervalMs: number
  samples: StatsSample[]
}

export interface UplinkWire {
  cellsData: number
  cellsDummy: number
  cellsControl: number
  recordBytes: number
  wireBytes: number
  slotsSkipped: number
  backlogCells: number
}

export type UplinkStatus =
  | { state: 'off' }
  | {
      state: 'connecting' | 'connected' | 'closed'
      sessions: number
      inFlight: number
      delivered: number
      lastAckAt: number | null
      alarm: boolean
      schedule: { mode: 'epoch' | 'clock' | 'tiered' | 'off'; [setting: string]: unknown }
      cellBytes: number
      wire: UplinkWire
    }

export interface DeadLetter {
  id: number
  function: string
  version: number
  message: unknown
  reason: string
  error: string
  createdAt: string
}

export interface OutboxRecord {
  seq: number
  function: string
  stream: string
  priority: number
  record: unknown
  bytes: number
  createdAt: string
  expiresAt: string
}

export interface OutboxUsage {
  bytes: number
  records: number
  quotaBytes: number
}

export interface OutboxDrop {
  id: number
  function: string
  stream: string
  seq: number
  bytes: number
  reason: string
  at: string
}

export interface StateNamespace {
  namespace: string
  keys: number
  bytes: number
  leaseExpiresAt: string | null
}

export interface StateOverview {
  usage: { keys: number; bytes: number; maxKeys: number; maxBytes: number }
  namespaces: StateNamespace[]
}

export interface StateKey {
  key: string
  bytes: number
  expiresAt: string | null
  updatedAt: string | null
}

export interface StateValue extends StateKey {
  namespace: string
  value: unknown
}

export interface User {
  name: string
  tenant: string | null
  createdAt: string
  passwordChangedAt?: string
}

export interface ApiToken {
  id: number
  label: string
  tenant: string | null
  createdAt: string
}

/** A message of the topics live view. */
export interface WatchedMessage {
  topic: string
  payload: string | null
  payloadBase64: string
  bytes?: number
  truncated?: boolean
  qos: number
  retain: boolean
  ts: number
  skipped?: number
}
