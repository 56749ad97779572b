import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, expect, test, vi } from 'vitest'
import { createStateStore } from '../../gateway/state-store.ts'
import { createStore } from '../../gateway/store.ts'
import { type CallOutcome, createWorkerPool, type InvocationCall } from '../../sandbox/index.ts'
import { tempDir } from '../helpers/temp.ts'

const MB = 1024 * 1024
const ROOMY = { maxStateKeys: 10_000, maxStateBytes: 16 * MB }
const info = { name: 'count', version: 1, config: {}, now: 1_700_000_000_000 }
/** Returns how many calls this copy of the module has run, and the call's increment of `n`. */
const COUNT = `let calls = 0
export default { onMessage(m, ctx) {
  calls++
  return { seq: m.seq, calls, n: ctx.state.incr('n') }
} }`

const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

function openStore() {
  const dir = tempDir()
  dirs.push(dir)
  const file = join(dir, 'taureau.db')
  const store = createStore({ file })
  store.createTenant('acme')
  return { file, state: createStateStore(store.db), [Symbol.dispose]: () => store.close() }
}

const countOf = (outcome: CallOutcome | undefined) => {
  if (outcome?.ok !== true) throw new Error(`the call failed: ${JSON.stringify(outcome)}`)
  return outcome.result.value as { seq: number; calls: number; n: number }
}

test('a tenant evicted after idleEvictMs runs again with its functions and its committed state', async () => {
  using s = openStore()
  await using pool = createWorkerPool({
    size: 1,
    memoryLimitBytes: 32 * MB,
    stateDatabase: s.file,
    idleEvictMs: 50,
  })
  await pool.compile('acme', 'count', COUNT, ['onMessage'])
  const first = await pool.invoke('acme', 'count', 'onMessage', [{ seq: 1 }], info, 1000)
  // On a loaded machine the sandbox the compile built may already have been evicted before this
  // call (which then built it again): what counts is an eviction after it.
  const evictedBefore = pool.evictions
  expect(first.value).toEqual({ seq: 1, calls: 1, n: 1 })
  // The host commits what the call wrote, as the gateway does.
  s.state.apply('acme', 'count', first.state, first.leases, ROOMY)
  await vi.waitFor(() => expect(pool.evictions).toBe(evictedBefore + 1), { timeout: 5_000, interval: 10 })
  // A fresh copy of the module (its calls start again) that reads the committed state.
  const second = await pool.invoke('acme', 'count', 'onMessage', [{ seq: 2 }], info, 1000)
  expect(second.value).toEqual({ seq: 2, calls: 1, n: 2 })
  expect(pool.restarts).toBe(0)
})

test('calls that arrive while idle tenants are evicted are neither lost nor reordered', async () => {
  using s = openStore()
  // Evicted 1 ms after each use, between messages cut to 4 calls: evictions fall between the
  // groups of calls below, and between the pieces of their batches.
  await using pool = createWorkerPool({
    size: 1,
    memoryLimitBytes: 32 * MB,
    stateDatabase: s.file,
    idleEvictMs: 1,
    maxCallsPerMessage: 4,
  })
  await pool.compile('acme', 'count', COUNT, ['onMessage'])
  const results: Array<{ seq: number; calls: number; n: number }> = []
  let seq = 0
  const batches: Array<Promise<CallOutcome[]>> = []
  for (let group = 0; group < 30; group++) {
    // Single calls and a batch of 10 (read-your-writes across its pieces), sent together.
    const singles = Array.from({ length: 3 }, () =>
      pool.invokeBatch('acme', 'count', 'onMessage', [{ args: [{ seq: ++seq }], info }], 1000),
    )
    const batch: InvocationCall[] = Array.from({ length: 10 }, () => ({ args: [{ seq: ++seq }], info }))
    batches.push(...singles, pool.invokeBatch('acme', 'count', 'onMessage', batch, 1000))
    if (group % 10 === 9) {
      const before = pool.evictions
      await vi.waitFor(() => expect(pool.evictions).toBeGreaterThan(before), { timeout: 5_000, interval: 2 })
    } else await new Promise((resolve) => setTimeout(resolve, group % 3))
  }
  for (const outcomes of await Promise.all(batches)) {
    const values = outcomes.map(countOf)
    // No state is committed: a batch's calls read only the batch's own earlier writes.
    expect(values.map((value) => value.n)).toEqual(values.map((_, index) => index + 1))
    results.push(...values)
  }
  expect(results.map((value) => value.seq)).toEqual(Array.from({ length: seq }, (_, index) => index + 1))
  // Each copy of the module ran its calls in order: its count goes up by one, or starts again at 1
  // after an eviction; calls ran in the order they were sent (checked by the pool's order above).
  let resets = 0
  results.forEach((value, index) => {
    if (value.calls === 1) resets++
    else expect(value.calls).toBe((results[index - 1]?.calls ?? 0) + 1)
  })
  expect(resets).toBeGreaterThanOrEqual(3)
  expect(pool.evictions).toBeGreaterThanOrEqual(3)
})

test('createWorkerPool() refuses an idleEvictMs that is negative or not an integer', () => {
  expect(() => createWorkerPool({ memoryLimitBytes: 32 * MB, idleEvictMs: -1 })).toThrow(RangeError)
  expect(() => createWorkerPool({ memoryLimitBytes: 32 * MB, idleEvictMs: 0.5 })).toThrow(RangeError)
})
