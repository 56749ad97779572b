import { expect, test } from 'vitest'
import { createAuthThrottle } from '../../gateway/auth-throttle.ts'

function fakeClock() {
  let now = 1_000_000
  return { now: () => now, advance: (ms: number) => (now += ms) }
}

test('failures past the free ones double the delay up to the cap; other addresses are not affected', () => {
  const clock = fakeClock()
  const throttle = createAuthThrottle({ freeFailures: 2, baseDelayMs: 100, maxDelayMs: 1000, now: clock.now })
  const delays: number[] = []
  for (let i = 0; i < 7; i++) {
    expect(throttle.enter('10.0.0.1')).toBe(true)
    delays.push(throttle.delayFor('10.0.0.1'))
    throttle.recordFailure('10.0.0.1')
  }
  expect(delays).toEqual([0, 0, 100, 200, 400, 800, 1000])
  expect(throttle.enter('10.0.0.2')).toBe(true)
  expect(throttle.delayFor('10.0.0.2')).toBe(0)
})

test('parallel attempts count as failures for the delay, and past the in-flight bound are refused', () => {
  const throttle = createAuthThrottle({
    freeFailures: 1,
    baseDelayMs: 100,
    maxDelayMs: 10_000,
    maxInFlight: 3,
  })
  expect(throttle.enter('a')).toBe(true)
  expect(throttle.delayFor('a')).toBe(0)
  expect(throttle.enter('a')).toBe(true)
  expect(throttle.delayFor('a')).toBe(100)
  expect(throttle.enter('a')).toBe(true)
  expect(throttle.delayFor('a')).toBe(200)
  // Refused attempts never entered, so recording them frees no slot.
  for (let i = 0; i < 20; i++) {
    expect(throttle.enter('a')).toBe(false)
    throttle.recordRefused('a')
  }
  throttle.recordSuccess('a')
  expect(throttle.enter('a')).toBe(true)
  expect(throttle.enter('a')).toBe(false)
})

test('a success does not clear failures; they are forgotten after the window', () => {
  const clock = fakeClock()
  const throttle = createAuthThrottle({
    freeFailures: 0,
    maxDelayMs: 10_000,
    forgetAfterMs: 60_000,
    now: clock.now,
  })
  throttle.enter('a')
  throttle.recordFailure('a')
  throttle.enter('a')
  throttle.recordSuccess('a')
  // One valid login must not reset the count an attacker builds up guessing other devices.
  expect(throttle.delayFor('a')).toBeGreaterThan(0)
  clock.advance(60_001)
  expect(throttle.delayFor('a')).toBe(0)
})

test('the number of tracked addresses is bounded: the oldest is forgotten', () => {
  const throttle = createAuthThrottle({ freeFailures: 0, maxDelayMs: 10_000, maxAddresses: 2 })
  for (const address of ['a', 'b', 'c']) {
    throttle.enter(address)
    throttle.recordFailure(address)
  }
  expect(throttle.delayFor('a')).toBe(0)
  expect(throttle.delayFor('b')).toBeGreaterThan(0)
  expect(throttle.delayFor('c')).toBeGreaterThan(0)
})
