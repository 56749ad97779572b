import { expect, test } from 'vitest'
import { createAckRate } from '../../firmware-sim/_ack-rate.ts'

test('the ack rate averages the last five whole seconds, and the first second as it fills', () => {
  const rate = createAckRate(1000)
  expect(rate.perSec(1000)).toBe(0)
  for (let i = 0; i < 50; i++) rate.record(1000 + i * 10)
  expect(rate.perSec(1500)).toBeCloseTo(100, 0)
  // 20 acks a second in seconds 1-7 of the run, then none.
  for (let second = 1; second < 8; second++)
    for (let i = 0; i < 20; i++) rate.record(1000 + second * 1000 + i * 50)
  expect(rate.perSec(9500)).toBe(20)
  expect(rate.perSec(11_500)).toBe((20 * 3) / 5)
  expect(rate.perSec(20_000)).toBe(0)
})
