/**
 * Latency histograms with logarithmic bins (100 per decade, so a bin is 2.3% wide): a compact,
 * mergeable record of a run's whole latency distribution, kept in the results so that a CDF can be
 * drawn from every round pooled, without keeping millions of samples.
 */

/** Bins per factor of ten: the resolution of the recorded latencies (10^(1/100) ≈ 1.023). */
const BINS_PER_DECADE = 100

/** A latency distribution in milliseconds. */
export interface LatencyHistogram {
  binsPerDecade: number
  /** `[bin, count]` pairs, sorted by bin; bin `b` holds latencies in `[10^(b/k), 10^((b+1)/k))` ms. */
  bins: Array<[number, number]>
  count: number
  /** Exact extremes, so that the CDF starts and ends where the samples do. */
  minMs: number
  maxMs: number
}

/** The histogram of the first `count` latencies (ms) of `samplesMs`; non-positive samples go in the lowest bin. */
export function histogramOf(samplesMs: ArrayLike<number>, count = samplesMs.length): LatencyHistogram {
  const counts = new Map<number, number>()
  let minMs = Number.POSITIVE_INFINITY
  let maxMs = Number.NEGATIVE_INFINITY
  let kept = 0
  for (let index = 0; index < count; index++) {
    const sample = samplesMs[index] as number
    if (!Number.isFinite(sample)) continue
    kept++
    if (sample < minMs) minMs = sample
    if (sample > maxMs) maxMs = sample
    // 1 ns is far below anything measured here; it keeps log10 finite.
    const bin = Math.floor(Math.log10(Math.max(sample, 1e-6)) * BINS_PER_DECADE)
    counts.set(bin, (counts.get(bin) ?? 0) + 1)
  }
  return {
    binsPerDecade: BINS_PER_DECADE,
    bins: [...counts].sort((a, b) => a[0] - b[0]),
    count: kept,
    minMs: kept === 0 ? Number.NaN : minMs,
    maxMs: kept === 0 ? Number.NaN : maxMs,
  }
}

/** The histogram of all the samples of `histograms` together (rounds pooled). */
export function mergeHistograms(histograms: readonly LatencyHistogram[]): LatencyHistogram {
  const counts = new Map<number, number>()
  let minMs = Number.POSITIVE_INFINITY
  let maxMs = Number.NEGATIVE_INFINITY
  let count = 0
  for (const histogram of histograms) {
    if (histogram.binsPerDecade !== BINS_PER_DECADE) {
      throw new RangeError(
        `Cannot merge a histogram with ${histogram.binsPerDecade} bins per decade into one with ${BINS_PER_DECADE}`,
      )
    }
    if (histogram.count === 0) continue
    for (const [bin, binCount] of histogram.bins) counts.set(bin, (counts.get(bin) ?? 0) + binCount)
    count += histogram.count
    minMs = Math.min(minMs, histogram.minMs)
    maxMs = Math.max(maxMs, histogram.maxMs)
  }
  return {
    binsPerDecade: BINS_PER_DECADE,
    bins: [...counts].sort((a, b) => a[0] - b[0]),
    count,
    minMs: count === 0 ? Number.NaN : minMs,
    maxMs: count === 0 ? Number.NaN : maxMs,
  }
}

/**
 * The CDF as `[latencyMs, fraction ≤ latencyMs]` points: one per non-empty bin, at the bin's upper
 * edge (clamped to the extremes), so a point may overstate a latency by one bin width (2.3%).
 */
export function histogramCdf(histogram: LatencyHistogram): Array<[number, number]> {
  if (histogram.count === 0) return []
  const points: Array<[number, number]> = []
  let seen = 0
  for (const [bin, binCount] of histogram.bins) {
    seen += binCount
    const upperMs = 10 ** ((bin + 1) / histogram.binsPerDecade)
    points.push([Math.max(histogram.minMs, Math.min(histogram.maxMs, upperMs)), seen / histogram.count])
  }
  return points
}

/** The latency (ms) at `fraction` (0..1) of the histogram, to one bin width; NaN when empty. */
export function histogramQuantile(histogram: LatencyHistogram, fraction: number): number {
  if (histogram.count === 0) return Number.NaN
  const rank = Math.min(histogram.count, Math.max(1, Math.ceil(fraction * histogram.count)))
  let seen = 0
  for (const [bin, binCount] of histogram.bins) {
    seen += binCount
    if (seen >= rank) {
      const upperMs = 10 ** ((bin + 1) / histogram.binsPerDecade)
      return Math.max(histogram.minMs, Math.min(histogram.maxMs, upperMs))
    }
  }
  return histogram.maxMs
}
