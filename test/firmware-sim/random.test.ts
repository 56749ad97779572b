import { expect, test } from 'vitest'
import { createDeviceClock } from '../../firmware-sim/_device-clock.ts'
import { createRandom, hashInts, hashString } from '../../firmware-sim/_random.ts'

const draws = (seed: number, stream = 0) => {
  const random = createRandom(seed, stream)
  return Array.from({ length: 5 }, () => random.next())
}

test('a seed and stream replay the same draws; other seeds and streams differ', () => {
  expect(draws(1)).toEqual(draws(1))
  expect(draws(1)).not.toEqual(draws(2))
  expect(draws(1, 0)).not.toEqual(draws(1, 1))
  expect(hashInts(1, hashString('sim-0001'))).not.toBe(hashInts(1, hashString('sim-0002')))
  expect(hashInts(-1)).not.toBe(hashInts(1))
})

test('draws have the distributions they claim', () => {
  const random = createRandom(9)
  const n = 100_000
  let uniformSum = 0
  let normalSum = 0
  let normalSquares = 0
  let exponentialSum = 0
  let outOfRange = 0
  for (let i = 0; i < n; i++) {
    const u = random.next()
    if (u < 0 || u >= 1) outOfRange++
    uniformSum += u
    const z = random.normal()
    normalSum += z
    normalSquares += z * z
    exponentialSum += random.exponential(250)
  }
  expect(outOfRange).toBe(0)
  expect(uniformSum / n).toBeCloseTo(0.5, 2)
  expect(normalSum / n).toBeCloseTo(0, 1)
  expect(normalSquares / n).toBeCloseTo(1, 1)
  expect(exponentialSum / n / 250).toBeCloseTo(1, 1)
})

test('a device clock is off by its offset at the start and drifts at its rate', () => {
  const startWallMs = Date.UTC(2024, 0, 1)
  const clock = createDeviceClock({ offsetMs: -1500, driftPpm: 50, startWallMs })
  expect(clock(startWallMs)).toBe(startWallMs - 1500)
  // 50 ppm is 4.32 s a day.
  expect(clock(startWallMs + 86_400_000) - (startWallMs + 86_400_000)).toBeCloseTo(-1500 + 4320, 6)
})
