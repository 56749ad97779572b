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

// Exponential values rounded to whole numbers (a long tail and many repeats), 1% to 99%. The exact
// ranks of a value v are the interval [values < v, values <= v] / n, which is what repeats need.
const QUANTILES = `
import { Quantiles } from 'taureau:sketch'
export default {
  onMessage({ n, k }) {
    let seed = 2024
    const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296)
    const whole = new Quantiles({ k, seed: 1 })
    const first = new Quantiles({ k, seed: 2 })
    const second = new Quantiles({ k, seed: 3 })
    const values = []
    let halfway = ''
    for (let i = 0; i < n; i++) {
      const value = Math.round(-Math.log(1 - random()) * 1000)
      values.push(value)
      whole.add(value)
      ;(i < n / 2 ? first : second).add(value)
      if (i === n / 2 - 1) halfway = JSON.stringify(whole)
    }
    // Saved halfway and fed the rest: the seeded coins must make it the same sketch as 'whole'.
    const resumed = Quantiles.fromJSON(JSON.parse(halfway))
    for (const value of values.slice(n / 2)) resumed.add(value)
    const copy = Quantiles.fromJSON(JSON.parse(JSON.stringify(whole)))
    const merged = first.merge(second)

    values.sort((a, b) => a - b)
    const countWhere = (test) => {
      let low = 0
      let high = n
      while (low < high) {
        const middle = (low + high) >>> 1
        if (test(values[middle])) low = middle + 1
        else high = middle
      }
      return low
    }
    const qs = Array.from({ length: 99 }, (_, i) => (i + 1) / 100)
    const measure = (sketch) => {
      let quantileError = 0
      let rankError = 0
      for (const q of qs) {
        const estimate = sketch.quantile(q)
        const below = countWhere((v) => v < estimate) / n
        const atOrBelow = countWhere((v) => v <= estimate) / n
        quantileError = Math.max(quantileError, below - q, q - atOrBelow)
        const exactValue = values[Math.ceil(q * n) - 1]
        rankError = Math.max(rankError, Math.abs(sketch.rank(exactValue) - countWhere((v) => v <= exactValue) / n))
      }
      return { count: sketch.count, quantileError, rankError, quantiles: qs.map((q) => sketch.quantile(q)) }
    }
    return {
      bound: whole.rankError, min: values[0], max: values[n - 1],
      ends: [whole.min, whole.max, whole.quantile(0), whole.quantile(1), whole.rank(values[0] - 1), whole.rank(values[n - 1])],
      retained: whole.levels.reduce((sum, items) => sum + items.length, 0),
      whole: measure(whole), copy: measure(copy), merged: measure(merged),
      resumedIsSame: JSON.stringify(resumed) === JSON.stringify(whole),
    }
  },
}`

interface QuantilesMeasure {
  count: number
  quantileError: number
  rankError: number
  quantiles: number[]
}

test('KLL quantiles stay within the stated rank error, after a JSON round trip and after a merge', async () => {
  using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 64 * MB })
  sandbox.compile('kll', QUANTILES, ['onMessage'])
  const n = 100_000
  const { value } = sandbox.invoke('kll', 'onMessage', [{ n, k: 200 }], info, 30_000)
  const result = value as {
    bound: number
    min: number
    max: number
    ends: number[]
    retained: number
    whole: QuantilesMeasure
    copy: QuantilesMeasure
    merged: QuantilesMeasure
    resumedIsSame: boolean
  }
  expect(result.bound).toBeCloseTo(0.0133, 4) // 2.296 / 200^0.9723
  for (const measured of [result.whole, result.copy, result.merged]) {
    expect(measured.count).toBe(n)
    expect(measured.quantileError).toBeLessThanOrEqual(result.bound)
    expect(measured.rankError).toBeLessThanOrEqual(result.bound)
  }
  // A sketch, not a copy of the data: it forgot values, hence some error, in about 3 k numbers.
  expect(result.whole.rankError).toBeGreaterThan(0)
  expect(result.retained).toBeLessThan(4 * 200)
  expect(result.ends).toEqual([result.min, result.max, result.min, result.max, 0, 1])
  expect(result.copy.quantiles).toEqual(result.whole.quantiles)
  expect(result.resumedIsSame).toBe(true)
})

// Keys 'k' + floor(1 / (r + 0.001)): key j has probability about 1 / j^2, so a few heavy keys and a
// tail of about a thousand, more than the table holds. The second stream shifts the keys by 4 and
// adds weights of 1 to 3, so the merge has keys from both sides, some only on one.
const TOP_K = `
import { TopK } from 'taureau:sketch'
export default {
  onMessage({ n, capacity }) {
    let seed = 99
    const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296)
    const draw = () => Math.floor(1 / (random() + 0.001))
    const whole = new TopK({ capacity })
    const other = new TopK({ capacity })
    const exact = new Map()
    const exactUnion = new Map()
    const count = (map, key, weight) => map.set(key, (map.get(key) ?? 0) + weight)
    let halfway = ''
    for (let i = 0; i < n; i++) {
      const key = 'k' + draw()
      whole.add(key)
      count(exact, key, 1)
      count(exactUnion, key, 1)
      if (i === n / 2 - 1) halfway = JSON.stringify(whole)
    }
    const resumed = TopK.fromJSON(JSON.parse(halfway))
    seed = 99
    for (let i = 0; i < n; i++) {
      const key = 'k' + draw()
      if (i >= n / 2) resumed.add(key)
    }
    for (let i = 0; i < n; i++) {
      const key = 'k' + (draw() + 4)
      const weight = 1 + Math.floor(random() * 3)
      other.add(key, weight)
      count(exactUnion, key, weight)
    }
    const copy = TopK.fromJSON(JSON.parse(JSON.stringify(whole)))
    const merged = TopK.fromJSON(JSON.parse(JSON.stringify(whole))).merge(other)
    const report = (table, truth) => ({
      total: table.total,
      top: table.top(),
      keys: [...truth].map(([key, count]) => [key, count, table.estimate(key)]),
    })
    return {
      whole: report(whole, exact), copy: report(copy, exact), merged: report(merged, exactUnion),
      top5: whole.top(5).map((entry) => entry.key), exactTop5: [...exact].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([key]) => key),
      resumedIsSame: JSON.stringify(resumed) === JSON.stringify(whole),
    }
  },
}`

interface TopKReport {
  total: number
  top: Array<{ key: string; count: number; error: number }>
  keys: Array<[key: string, exact: number, estimate: number]>
}

// Checks Space-Saving's guarantees against exact counts; returns the largest error seen.
function expectSpaceSaving(report: TopKReport, capacity: number): number {
  const limit = report.total / capacity
  const table = new Map(report.top.map((entry) => [entry.key, entry]))
  expect(report.top.length).toBe(capacity)
  expect(report.top.map((entry) => entry.count)).toEqual(
    report.top.map((entry) => entry.count).sort((a, b) => b - a),
  )
  let heavy = 0
  for (const [key, exact, estimate] of report.keys) {
    const entry = table.get(key)
    expect(estimate).toBeGreaterThanOrEqual(exact)
    if (exact > limit) {
      heavy++
      expect(entry).toBeDefined()
    }
    if (entry === undefined) expect(estimate).toBeLessThanOrEqual(limit)
    else {
      expect(entry.count).toBe(estimate)
      expect(entry.count - entry.error).toBeLessThanOrEqual(exact)
    }
  }
  expect(heavy).toBeGreaterThan(0)
  const largestError = Math.max(...report.top.map((entry) => entry.error))
  expect(largestError).toBeLessThanOrEqual(limit)
  return largestError
}

test('TopK keeps every key above N / capacity with bounded error, after a JSON round trip and a merge', async () => {
  using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 64 * MB })
  sandbox.compile('topk', TOP_K, ['onMessage'])
  const n = 100_000
  const capacity = 50
  const { value } = sandbox.invoke('topk', 'onMessage', [{ n, capacity }], info, 30_000)
  const result = value as {
    whole: TopKReport
    copy: TopKReport
    merged: TopKReport
    top5: string[]
    exactTop5: string[]
    resumedIsSame: boolean
  }
  expect(result.whole.total).toBe(n)
  // The tail is longer than the table, so keys were evicted and some counters carry an error.
  expect(result.whole.keys.length).toBeGreaterThan(capacity)
  expect(expectSpaceSaving(result.whole, capacity)).toBeGreaterThan(0)
  expectSpaceSaving(result.copy, capacity)
  expect(result.copy.top).toEqual(result.whole.top)
  expect(result.resumedIsSame).toBe(true)
  expect(result.top5).toEqual(result.exactTop5)
  expect(result.merged.total).toBeGreaterThan(2 * n)
  expectSpaceSaving(result.merged, capacity)
})
