/**
 * Ack latencies in logarithmic buckets 1 % wide: constant memory however long a fleet runs, and
 * percentiles within 1 % (the idea of HdrHistogram, without its precision knobs).
 */
export interface LatencyHistogram {
  record(latencyMs: number): void
  /** The latency at quantile `q` in [0, 1] (the upper edge of its bucket), 0 when empty. */
  quantile(q: number): number
  readonly maxMs: number
}

const GROWTH = Math.log(1.01)
/** Bucket i holds latencies up to e^(i × GROWTH) - 1 ms; 2,048 buckets reach about 8 days. */
const BUCKETS = 2048

/** Creates an empty {@link LatencyHistogram}. */
export function createLatencyHistogram(): LatencyHistogram {
  const counts = new Float64Array(BUCKETS)
  let total = 0
  let maxMs = 0
  return {
    record(latencyMs) {
      const ms = Math.max(0, latencyMs)
      const bucket = Math.min(BUCKETS - 1, Math.ceil(Math.log1p(ms) / GROWTH))
      counts[bucket] = (counts[bucket] as number) + 1
      total++
      if (ms > maxMs) maxMs = ms
    },
    quantile(q) {
      if (total === 0) return 0
      const rank = Math.max(1, Math.ceil(q * total))
      let seen = 0
      for (let i = 0; i < BUCKETS; i++) {
        seen += counts[i] as number
        if (seen >= rank) return Math.min(maxMs, Math.expm1(i * GROWTH))
      }
      return maxMs
    },
    get maxMs() {
      return maxMs
    },
  }
}
