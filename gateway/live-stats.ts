import type { Metrics, TenantCounters } from './metrics.ts'

/** One interval of the live charts: rates per second over the interval, latency of its invocations. */
export interface StatsSample {
  /** End of the interval, ms since the epoch. */
  t: number
  messagesIn: number
  messagesOut: number
  invocations: number
  errors: number
  /** Percentiles of the interval's successful invocations, in ms; null when there were none. */
  p50Ms: number | null
  p99Ms: number | null
  /** MQTT connections open at the end of the interval. */
  connections: number
}

/** Options of {@link createLiveStats}. */
export interface LiveStatsOptions {
  metrics: Metrics
  /** Length of one sample, in ms. Default 1000. */
  intervalMs?: number
  /** Samples kept per series. Default 600 (ten minutes at 1 s). */
  keep?: number
  now?: () => number
}

/**
 * The series behind the UI's live charts, sampled from the metrics' per-tenant counters: one
 * series for the whole gateway and one per tenant, each a ring of the last `keep` samples. The
 * counters are read, never reset, so Prometheus sees the same totals.
 */
export interface LiveStats {
  readonly intervalMs: number
  /** Samples newer than `since` (ms since the epoch) of one tenant, or of the gateway (`null`). */
  samples(tenantId: string | null, since?: number): StatsSample[]
  /** Takes a sample now (the timer does this every interval). */
  sample(): void
  /** Forgets a deleted tenant's series. */
  removeTenant(tenantId: string): void
  close(): void
}

interface Series {
  ring: StatsSample[]
  /** Totals at the last sample. */
  last: { messagesIn: number; messagesOut: number; invocations: number; errors: number } | undefined
}

export function createLiveStats(options: LiveStatsOptions): LiveStats {
  const intervalMs = options.intervalMs ?? 1000
  const keep = options.keep ?? 600
  const now = options.now ?? Date.now
  const series = new Map<string | null, Series>()
  let lastAt = now()

  const push = (key: string | null, sample: StatsSample): void => {
    const entry = series.get(key)
    if (entry === undefined) return
    entry.ring.push(sample)
    if (entry.ring.length > keep) entry.ring.splice(0, entry.ring.length - keep)
  }
  const rates = (
    key: string | null,
    totals: NonNullable<Series['last']>,
    seconds: number,
  ): Pick<StatsSample, 'messagesIn' | 'messagesOut' | 'invocations' | 'errors'> => {
    let entry = series.get(key)
    if (entry === undefined) {
      entry = { ring: [], last: undefined }
      series.set(key, entry)
    }
    // A tenant's first sample counts from zero: its counters were made within this interval.
    const last = entry.last ?? { messagesIn: 0, messagesOut: 0, invocations: 0, errors: 0 }
    entry.last = totals
    const rate = (value: number, before: number) => round(Math.max(0, value - before) / seconds)
    return {
      messagesIn: rate(totals.messagesIn, last.messagesIn),
      messagesOut: rate(totals.messagesOut, last.messagesOut),
      invocations: rate(totals.invocations, last.invocations),
      errors: rate(totals.errors, last.errors),
    }
  }

  const stats: LiveStats = {
    intervalMs,
    samples(tenantId, since = 0) {
      const ring = series.get(tenantId)?.ring ?? []
      let start = ring.length
      while (start > 0 && (ring[start - 1] as StatsSample).t > since) start--
      return ring.slice(start)
    },
    sample() {
      const t = now()
      const seconds = Math.max(0.001, (t - lastAt) / 1000)
      lastAt = t
      const all = { messagesIn: 0, messagesOut: 0, invocations: 0, errors: 0 }
      let connections = 0
      const durations: number[] = []
      for (const [tenantId, counters] of options.metrics.tenants()) {
        const totals = totalsOf(counters)
        all.messagesIn += totals.messagesIn
        all.messagesOut += totals.messagesOut
        all.invocations += totals.invocations
        all.errors += totals.errors
        connections += counters.connections
        const taken = counters.recentDurationsMs
        counters.recentDurationsMs = []
        for (const ms of taken) durations.push(ms)
        push(tenantId, {
          t,
          ...rates(tenantId, totals, seconds),
          ...percentiles(taken),
          connections: counters.connections,
        })
      }
      push(null, { t, ...rates(null, all, seconds), ...percentiles(durations), connections })
    },
    removeTenant(tenantId) {
      series.delete(tenantId)
    },
    close() {
      clearInterval(timer)
    },
  }
  // The gateway-wide series goes on from the totals of tenants still there: a deleted tenant's
  // counts leave the sum, which the clamp at zero keeps from showing as a negative rate.
  const timer = setInterval(() => stats.sample(), intervalMs)
  timer.unref()
  return stats
}

function totalsOf(counters: TenantCounters) {
  return {
    messagesIn: counters.messagesIn,
    messagesOut: counters.messagesOut,
    invocations: counters.invocations,
    errors: counters.invocationErrors,
  }
}

function percentiles(values: number[]): { p50Ms: number | null; p99Ms: number | null } {
  if (values.length === 0) return { p50Ms: null, p99Ms: null }
  const sorted = Float64Array.from(values).sort()
  const at = (q: number) =>
    round(sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number)
  return { p50Ms: at(0.5), p99Ms: at(0.99) }
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000
}
