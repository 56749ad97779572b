/** Median of the finite values; `NaN` when there are none. */
export function median(values: readonly number[]): number {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b)
  if (sorted.length === 0) return Number.NaN
  const middle = Math.floor(sorted.length / 2)
  const upper = sorted[middle] as number
  return sorted.length % 2 === 1 ? upper : ((sorted[middle - 1] as number) + upper) / 2
}

/**
 * Nearest-rank percentiles (`fractions` in 0..1) of the first `count` values of `samples`, which
 * is sorted in place.
 */
export function percentiles(samples: Float64Array, count: number, fractions: readonly number[]): number[] {
  if (count === 0) return fractions.map(() => Number.NaN)
  const sorted = samples.subarray(0, count).sort()
  return fractions.map((fraction) => {
    const rank = Math.min(count, Math.max(1, Math.ceil(fraction * count)))
    return sorted[rank - 1] as number
  })
}
