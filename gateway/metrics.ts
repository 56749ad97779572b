import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'

/**
 * Why a message was not passed on (or, for `retained_quota`, passed on but not kept as retained).
 * Each reason is a label value of `taureau_messages_dropped_total`.
 */
export type DropReason = 'acl' | 'reserved_topic' | 'rate' | 'payload_size' | 'retained_quota'

/** Why a CONNECT was refused. */
export type ConnectRefusal =
  | 'bad_credentials'
  | 'connection_quota'
  | 'session_quota'
  | 'will_denied'
  | 'client_id'
  | 'busy'

/**
 * Per-tenant traffic counters, kept as plain numbers on the hot path and read by Prometheus at
 * scrape time, so counting a message costs an increment rather than a labelled-metric lookup.
 */
export interface TenantCounters {
  connections: number
  messagesIn: number
  messagesOut: number
  bytesIn: number
  bytesOut: number
  drops: Record<DropReason, number>
  /** Function invocations, and those that failed (any outcome but `ok`). */
  invocations: number
  invocationErrors: number
  /** Durations of successful invocations since the live stats last took them, in ms (bounded). */
  recentDurationsMs: number[]
}

/** Durations kept per tenant between two reads of the live stats; past it, a random one is replaced. */
export const MAX_RECENT_DURATIONS = 2048

/** The gateway's Prometheus metrics (`GET /metrics`). */
export interface Metrics {
  readonly registry: Registry
  /** The counters of a tenant, created on first use. */
  tenant(tenantId: string): TenantCounters
  /** Forgets a deleted tenant's series. */
  removeTenant(tenantId: string): void
  /** The tenants with counters, and their counters. */
  tenants(): IterableIterator<[string, TenantCounters]>
  /** Counts a refused CONNECT; `tenantId` null when the tenant named does not exist. */
  authFailure(reason: ConnectRefusal, tenantId: string | null): void
  protocolViolation(): void
  /**
   * Counts an invocation of a function: `ok`, or the failure's reason (`deadline`, `memory`,
   * `handler_threw`, `bad_output`, `broken`, `queue_full`, `chain_too_deep`). The time of a
   * successful one goes into the tenant's latency histogram.
   */
  functionInvocation(tenantId: string, name: string, outcome: string, durationMs?: number): void
  /** Forgets a deleted function's series: one per outcome it was counted with. */
  removeFunction(tenantId: string, name: string, outcomes: Iterable<string>): void
  /** Where the sandbox pool's figures are read at scrape time. */
  observeSandbox(read: () => SandboxFigures): void
}

/** The sandbox pool's figures, read at scrape time. */
export interface SandboxFigures {
  workers: number
  restarts: number
  isolations: number
  /** Idle tenant sandboxes dropped (functions.idleEvictMs). */
  evictions: number
}

const DROP_REASONS: readonly DropReason[] = [
  'acl',
  'reserved_topic',
  'rate',
  'payload_size',
  'retained_quota',
]
const CONNECT_REFUSALS: readonly ConnectRefusal[] = [
  'bad_credentials',
  'connection_quota',
  'session_quota',
  'will_denied',
  'client_id',
  'busy',
]

/** Creates the registry with process metrics and the gateway's own series. */
export function createMetrics(): Metrics {
  const registry = new Registry()
  // Event-loop delay is sampled every 100 ms rather than 10: the default wakes an idle box 100 times a second.
  collectDefaultMetrics({ register: registry, prefix: 'taureau_', eventLoopMonitoringPrecision: 100 })
  const tenants = new Map<string, TenantCounters>()

  const perTenant = (
    name: string,
    help: string,
    read: (counters: TenantCounters) => number,
    kind: 'counter' | 'gauge',
  ): void => {
    const Metric = kind === 'counter' ? Counter : Gauge
    new Metric({
      name,
      help,
      labelNames: ['tenant'],
      registers: [registry],
      collect(this: Counter | Gauge) {
        this.reset()
        for (const [tenant, counters] of tenants) this.inc({ tenant }, read(counters))
      },
    })
  }
  perTenant('taureau_connections', 'MQTT connections open, per tenant', (c) => c.connections, 'gauge')
  perTenant(
    'taureau_messages_received_total',
    'PUBLISH packets accepted from devices',
    (c) => c.messagesIn,
    'counter',
  )
  perTenant(
    'taureau_messages_sent_total',
    'PUBLISH packets delivered to devices',
    (c) => c.messagesOut,
    'counter',
  )
  perTenant(
    'taureau_bytes_received_total',
    'Payload bytes accepted from devices',
    (c) => c.bytesIn,
    'counter',
  )
  perTenant('taureau_bytes_sent_total', 'Payload bytes delivered to devices', (c) => c.bytesOut, 'counter')
  new Counter({
    name: 'taureau_messages_dropped_total',
    help: 'Messages refused or dropped, per tenant and reason',
    labelNames: ['tenant', 'reason'],
    registers: [registry],
    collect(this: Counter) {
      this.reset()
      for (const [tenant, counters] of tenants) {
        for (const reason of DROP_REASONS) this.inc({ tenant, reason }, counters.drops[reason])
      }
    },
  })
  const authFailures = new Counter({
    name: 'taureau_connect_refused_total',
    help: 'CONNECTs refused, per reason (bad_credentials counts authentication failures)',
    labelNames: ['tenant', 'reason'],
    registers: [registry],
  })
  const violations = new Counter({
    name: 'taureau_protocol_violations_total',
    help: 'Connections closed for breaking MQTT 3.1.1',
    registers: [registry],
  })

  const invocations = new Counter({
    name: 'taureau_function_invocations_total',
    help: 'Function invocations, per tenant, function and outcome (ok or the reason of the failure)',
    labelNames: ['tenant', 'function', 'outcome'],
    registers: [registry],
  })
  const durations = new Histogram({
    name: 'taureau_function_duration_seconds',
    help: 'Time of successful invocations inside the sandbox, per tenant',
    labelNames: ['tenant'],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [registry],
  })
  let sandbox: (() => SandboxFigures) | undefined
  const sandboxFigure = (
    name: string,
    help: string,
    kind: 'counter' | 'gauge',
    read: (f: SandboxFigures) => number,
  ) => {
    const Metric = kind === 'counter' ? Counter : Gauge
    new Metric({
      name,
      help,
      registers: [registry],
      collect(this: Counter | Gauge) {
        this.reset()
        if (sandbox !== undefined) this.inc(read(sandbox()))
      },
    })
  }
  sandboxFigure('taureau_sandbox_workers', 'Sandbox worker threads running', 'gauge', (f) => f.workers)
  sandboxFigure(
    'taureau_sandbox_worker_restarts_total',
    'Sandbox workers replaced after a crash or a watchdog kill',
    'counter',
    (f) => f.restarts,
  )
  sandboxFigure(
    'taureau_sandbox_isolations_total',
    'Tenants moved to an isolation worker for overrunning a deadline or taking too much CPU',
    'counter',
    (f) => f.isolations,
  )
  sandboxFigure(
    'taureau_sandbox_evictions_total',
    'Idle tenant sandboxes dropped after functions.idleEvictMs without work (rebuilt at their next call)',
    'counter',
    (f) => f.evictions,
  )

  const metrics: Metrics = {
    registry,
    tenant(tenantId) {
      let counters = tenants.get(tenantId)
      if (counters === undefined) {
        counters = {
          connections: 0,
          messagesIn: 0,
          messagesOut: 0,
          bytesIn: 0,
          bytesOut: 0,
          drops: { acl: 0, reserved_topic: 0, rate: 0, payload_size: 0, retained_quota: 0 },
          invocations: 0,
          invocationErrors: 0,
          recentDurationsMs: [],
        }
        tenants.set(tenantId, counters)
      }
      return counters
    },
    functionInvocation(tenantId, name, outcome, durationMs) {
      invocations.inc({ tenant: tenantId, function: name, outcome })
      const counters = metrics.tenant(tenantId)
      counters.invocations++
      if (outcome !== 'ok') counters.invocationErrors++
      if (durationMs !== undefined) {
        durations.observe({ tenant: tenantId }, durationMs / 1000)
        const recent = counters.recentDurationsMs
        if (recent.length < MAX_RECENT_DURATIONS) recent.push(durationMs)
        else recent[Math.floor(Math.random() * MAX_RECENT_DURATIONS)] = durationMs
      }
    },
    tenants: () => tenants.entries(),
    observeSandbox(read) {
      sandbox = read
    },
    removeFunction(tenantId, name, outcomes) {
      for (const outcome of outcomes) invocations.remove({ tenant: tenantId, function: name, outcome })
    },
    removeTenant(tenantId) {
      tenants.delete(tenantId)
      durations.remove({ tenant: tenantId })
      for (const reason of CONNECT_REFUSALS) authFailures.remove({ tenant: tenantId, reason })
    },
    authFailure(reason, tenantId) {
      authFailures.inc({ tenant: tenantId ?? 'unknown', reason })
    },
    protocolViolation() {
      violations.inc()
    },
  }
  return metrics
}

// Outbox: figures kept by the outbox in the store, read at scrape time.

/**
 * Why an outbox record was dropped before the uplink took it: `quota_oldest` and `quota_priority`
 * by the tenant's `outboxPolicy` at its byte bound, `ttl` past `outboxTtlMs`. Each reason is a
 * label value of `taureau_outbox_dropped_total`.
 */
export type OutboxDropReason = 'quota_oldest' | 'quota_priority' | 'ttl'

/** One tenant's outbox figures. */
export interface OutboxFigures {
  tenantId: string
  bytes: number
  records: number
  dropped: Readonly<Record<OutboxDropReason, number>>
}

/** The outbox's Prometheus series, registered once per registry by {@link createOutboxMetrics}. */
export interface OutboxMetrics {
  /** Where the figures are read at scrape time; a later call replaces an earlier one. */
  observe(read: () => Iterable<OutboxFigures>): void
}

const OUTBOX_DROP_REASONS: readonly OutboxDropReason[] = ['quota_oldest', 'quota_priority', 'ttl']

/**
 * Registers `taureau_outbox_bytes{tenant}`, `taureau_outbox_records{tenant}` and
 * `taureau_outbox_dropped_total{tenant,reason}` on a registry (the gateway's `metrics.registry`).
 * The outbox keeps these figures in the store, in the transaction that changes its records, so a
 * rolled back append never counts a drop; a deleted tenant's series go with its rows.
 */
export function createOutboxMetrics(registry: Registry): OutboxMetrics {
  let read: (() => Iterable<OutboxFigures>) | undefined
  const perTenant = (name: string, help: string, figure: (f: OutboxFigures) => number): void => {
    new Gauge({
      name,
      help,
      labelNames: ['tenant'],
      registers: [registry],
      collect(this: Gauge) {
        this.reset()
        if (read === undefined) return
        for (const figures of read()) this.set({ tenant: figures.tenantId }, figure(figures))
      },
    })
  }
  perTenant('taureau_outbox_bytes', 'Bytes of records waiting in the outbox, per tenant', (f) => f.bytes)
  perTenant('taureau_outbox_records', 'Records waiting in the outbox, per tenant', (f) => f.records)
  new Counter({
    name: 'taureau_outbox_dropped_total',
    help: 'Outbox records dropped before the uplink took them, per tenant and reason',
    labelNames: ['tenant', 'reason'],
    registers: [registry],
    collect(this: Counter) {
      this.reset()
      if (read === undefined) return
      for (const figures of read()) {
        for (const reason of OUTBOX_DROP_REASONS) {
          this.inc({ tenant: figures.tenantId, reason }, figures.dropped[reason])
        }
      }
    },
  })
  return {
    observe(next) {
      read = next
    },
  }
}
