import { expect, test } from 'vitest'
import { createLatencyHistogram } from '../../firmware-sim/_latency-histogram.ts'

test('latency quantiles are within 1 % of the exact ones, and the max is exact', () => {
  const histogram = createLatencyHistogram()
  expect(histogram.quantile(0.5)).toBe(0)
  const values = Array.from({ length: 10_000 }, (_, i) => 0.5 + i * 0.37)
  for (const value of values) histogram.record(value)
  const exact = (q: number) => values[Math.ceil(q * values.length) - 1] as number
  for (const q of [0.5, 0.9, 0.99]) {
    expect(Math.abs(histogram.quantile(q) - exact(q)) / exact(q)).toBeLessThan(0.011)
  }
  expect(histogram.maxMs).toBe(values.at(-1))
  expect(histogram.quantile(1)).toBe(values.at(-1))
})

test('latencies beyond the last bucket still count, and negative ones count as 0', () => {
  const histogram = createLatencyHistogram()
  histogram.record(-5)
  histogram.record(30 * 86_400_000)
  expect(histogram.quantile(0.5)).toBe(0)
  expect(histogram.maxMs).toBe(30 * 86_400_000)
  expect(histogram.quantile(1)).toBeGreaterThan(86_400_000)
})
