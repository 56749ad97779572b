import { expect, test } from 'vitest'
import { createTenantSandbox, SandboxError } from '../../sandbox/index.ts'

const MB = 1024 * 1024
const info = { name: 'sketch', version: 1, config: {}, now: 0 }

// The guest makes seeded data (a skewed key distribution), keeps exact counts next to the sketch,
// and returns both, so the test checks each sketch against exact answers and its stated bound.
const COUNT_MIN = `
import { CountMin } from 'taureau:sketch'
export default {
  onMessage({ n, epsilon, delta }) {
    let seed = 12345
    const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296)
    const sketch = CountMin.withError(epsilon, delta)
    const exact = new Map()
    for (let i = 0; i < n; i++) {
      const key = 'k' + Math.floor(1 / (random() + 0.001))
      sketch.add(key)
      exact.set(key, (exact.get(key) ?? 0) + 1)
    }
    const copy = CountMin.fromJSON(JSON.parse(JSON.stringify(sketch)))
    const rows = [...exact].map(([key, count]) => [count, sketch.estimate(key), copy.estimate(key)])
    const merged = CountMin.withError(epsilon, delta).merge(sketch).merge(sketch)
    return { total: sketch.total, rows, mergedTop: merged.estimate('k1'), top: sketch.estimate('k1') }
  },
}`

const HLL = `
import { HyperLogLog } from 'taureau:sketch'
export default {
  onMessage({ distinct }) {
    const a = new HyperLogLog({ precision: 12 })
    const b = new HyperLogLog({ precision: 12 })
    for (let i = 0; i < distinct; i++) {
      a.add('user-' + i)
      a.add('user-' + i) // duplicates do not count
      if (i % 2 === 0) b.add('user-' + i)
    }
    const copy = HyperLogLog.fromJSON(JSON.parse(JSON.stringify(a)))
    return { a: a.count(), copy: copy.count(), half: b.count(), merged: b.merge(a).count() }
  },
}`

test('Count-Min never underestimates and stays within epsilon * total for all but delta of keys', async () => {
  using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 64 * MB })
  sandbox.compile('cm', COUNT_MIN, ['onMessage'])
  const epsilon = 0.001
  const delta = 0.01
  const { value } = sandbox.invoke('cm', 'onMessage', [{ n: 20_000, epsilon, delta }], info, 10_000)
  const result = value as {
    total: number
    rows: Array<[number, number, number]>
    mergedTop: number
    top: number
  }
  expect(result.total).toBe(20_000)
  const bound = epsilon * result.total
  let within = 0
  for (const [exact, estimate, fromJson] of result.rows) {
    expect(estimate).toBeGreaterThanOrEqual(exact)
    expect(fromJson).toBe(estimate)
    if (estimate - exact <= bound) within++
  }
  expect(within / result.rows.length).toBeGreaterThanOrEqual(1 - delta)
  expect(result.mergedTop).toBe(2 * result.top)
})

test('HyperLogLog counts distinct values within 3 standard errors, merges and round-trips', async () => {
  using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 64 * MB })
  sandbox.compile('hll', HLL, ['onMessage'])
  const distinct = 30_000
  const { value } = sandbox.invoke('hll', 'onMessage', [{ distinct }], info, 10_000)
  const result = value as { a: number; copy: number; half: number; merged: number }
  const tolerance = 3 * (1.04 / Math.sqrt(4096))
  expect(Math.abs(result.a - distinct) / distinct).toBeLessThan(tolerance)
  expect(Math.abs(result.half - distinct / 2) / (distinct / 2)).toBeLessThan(tolerance)
  expect(result.copy).toBe(result.a)
  expect(result.merged).toBe(result.a)
})

test('importing a module that is not a guest library fails at deploy with a clear error', async () => {
  using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
  let error: unknown
  try {
    sandbox.compile('fs', "import { readFileSync } from 'node:fs'\nexport default { onMessage() {} }", [
      'onMessage',
    ])
  } catch (caught) {
    error = caught
  }
  expect(error).toBeInstanceOf(SandboxError)
  expect((error as SandboxError).code).toBe('invalid_function')
  expect((error as SandboxError).message).toMatch(/node:fs/)
})

const OTHERS = `
import { BloomFilter, ReservoirSample, Ewma } from 'taureau:sketch'
export default {
  onMessage() {
    const bloom = new BloomFilter({ items: 5000, falsePositiveRate: 0.01 })
    for (let i = 0; i < 5000; i++) bloom.add('in-' + i)
    let missing = 0
    for (let i = 0; i < 5000; i++) if (!bloom.has('in-' + i)) missing++
    let falsePositives = 0
    for (let i = 0; i < 20000; i++) if (bloom.has('out-' + i)) falsePositives++
    const bloomCopy = BloomFilter.fromJSON(JSON.parse(JSON.stringify(bloom)))

    // Each of 10 values appears 1000 times; a uniform sample of 500 should hold each about 50 times.
    const sample = new ReservoirSample({ size: 500, seed: 7 })
    for (let i = 0; i < 10000; i++) sample.add(i % 10)
    const perValue = new Array(10).fill(0)
    for (const item of sample.sample()) perValue[item]++
    const sampleCopy = ReservoirSample.fromJSON(JSON.parse(JSON.stringify(sample)))

    const ewma = new Ewma({ tauMs: 1000 })
    ewma.add(0, 0).add(10, 1000)
    return {
      missing, falsePositives, copyAgrees: bloomCopy.has('in-42') && !bloomCopy.has('out-42') === !bloom.has('out-42'),
      sampleSize: sample.sample().length, seen: sample.seen, perValue, copySize: sampleCopy.sample().length,
      ewma: ewma.value, ewmaJson: Ewma.fromJSON(JSON.parse(JSON.stringify(ewma))).value,
    }
  },
}`

test('Bloom filter, reservoir sample and EWMA meet their stated behaviour', async () => {
  using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 64 * MB })
  sandbox.compile('others', OTHERS, ['onMessage'])
  const { value } = sandbox.invoke('others', 'onMessage', [{}], info, 10_000)
  const result = value as {
    missing: number
    falsePositives: number
    copyAgrees: boolean
    sampleSize: number
    seen: number
    perValue: number[]
    copySize: number
    ewma: number
    ewmaJson: number
  }
  expect(result.missing).toBe(0) // no false negatives
  expect(result.falsePositives / 20_000).toBeLessThan(0.02) // about 1%, with room for chance
  expect(result.copyAgrees).toBe(true)
  expect(result.sampleSize).toBe(500)
  expect(result.seen).toBe(10_000)
  expect(result.copySize).toBe(500)
  // Binomial(500, 0.1): mean 50, sd about 6.7; 5 sd either side.
  for (const count of result.perValue) expect(Math.abs(count - 50)).toBeLessThan(34)
  expect(result.ewma).toBeCloseTo(10 * (1 - Math.exp(-1)), 10)
  expect(result.ewmaJson).toBe(result.ewma)
})
