import { expect, test } from 'vitest'
import { type CallOutcome, createWorkerPool, SandboxError } from '../../sandbox/index.ts'

const MB = 1024 * 1024
const info = { name: 'fn', version: 1, config: {}, now: 1_700_000_000_000 }
const DOUBLE = 'export default { onMessage(msg) { return msg.v * 2 } }'

async function errorOf(run: () => Promise<unknown>): Promise<SandboxError> {
  try {
    await run()
  } catch (error) {
    if (error instanceof SandboxError) return error
    throw error
  }
  throw new Error('expected a SandboxError')
}

test('functions of several tenants compile and run in worker threads', async () => {
  await using pool = createWorkerPool({ size: 2, memoryLimitBytes: 32 * MB })
  for (const tenant of ['a', 'b', 'c']) await pool.compile(tenant, 'double', DOUBLE, ['onMessage'])
  const values = await Promise.all(
    ['a', 'b', 'c'].map((tenant, i) => pool.invoke(tenant, 'double', 'onMessage', [{ v: i + 1 }], info, 100)),
  )
  expect(values.map((result) => result.value)).toEqual([2, 4, 6])
})

test('compile errors and deadlines come back as SandboxErrors with their codes', async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB })
  const compile = await errorOf(() =>
    pool.compile('a', 'bad', 'export default {\n  onMessage(msg) {\n    return msg.x +* 2\n  },\n}', [
      'onMessage',
    ]),
  )
  expect(compile).toMatchObject({ code: 'invalid_function', line: 3, column: 19 })
  await pool.compile('a', 'spin', 'export default { onMessage() { for (;;) {} } }', ['onMessage'])
  expect((await errorOf(() => pool.invoke('a', 'spin', 'onMessage', [{}], info, 20))).code).toBe('deadline')
})

test('a replaced worker gets its tenants back; invocations in flight fail, later ones succeed', async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB })
  await pool.compile('a', 'double', DOUBLE, ['onMessage'])
  await pool.compile('a', 'slow', 'export default { onMessage() { for (;;) {} } }', ['onMessage'])
  const inFlight = errorOf(() => pool.invoke('a', 'slow', 'onMessage', [{}], info, 5_000))
  await pool.restartWorkerOf('a')
  expect((await inFlight).code).toBe('broken')
  expect(pool.restarts).toBe(1)
  expect((await pool.invoke('a', 'double', 'onMessage', [{ v: 21 }], info, 1_000)).value).toBe(42)
})

test('a removed function is forgotten by the worker and not compiled again after a restart', async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB })
  await pool.compile('a', 'double', DOUBLE, ['onMessage'])
  await pool.remove('a', 'double')
  expect((await errorOf(() => pool.invoke('a', 'double', 'onMessage', [{ v: 1 }], info, 100))).code).toBe(
    'handler_threw',
  )
  await pool.restartWorkerOf('a')
  expect((await errorOf(() => pool.invoke('a', 'double', 'onMessage', [{ v: 1 }], info, 100))).code).toBe(
    'handler_threw',
  )
})

const valueOrCode = (outcome: CallOutcome) => (outcome.ok ? outcome.result.value : outcome.code)
const call = (v: unknown) => ({ args: [v], info })
// Each call returns how many calls this function's runtime has run: the order they ran in.
const COUNTER = `let runs = 0
export default {
  onMessage(m) {
    runs++
    if (m === 'spin') for (;;) {}
    if (m === 'throw') throw new TypeError('refused')
    if (m === 'stuck') return 'a'.repeat(1e6).indexOf('a'.repeat(1e4) + 'b')
    return runs
  },
}`

test('invokeBatch() sends many calls in few messages and returns their outcomes in order', async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB })
  await pool.compile('a', 'double', DOUBLE, ['onMessage'])
  const before = pool.messages
  const outcomes = await pool.invokeBatch(
    'a',
    'double',
    'onMessage',
    Array.from({ length: 500 }, (_, v) => call({ v })),
    1000,
  )
  expect(outcomes.map(valueOrCode)).toEqual(Array.from({ length: 500 }, (_, v) => v * 2))
  expect(pool.messages - before).toBeLessThanOrEqual(10)
  // Single invocations made in the same tick travel together too.
  const singles = await Promise.all(
    [1, 2, 3, 4].map((v) => pool.invoke('a', 'double', 'onMessage', [{ v }], info, 100)),
  )
  expect(singles.map((result) => result.value)).toEqual([2, 4, 6, 8])
})

test("one call's failure does not fail the others; calls after an overrun run later, in order, on an isolation worker", async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB })
  await pool.compile('a', 'count', COUNTER, ['onMessage'])
  const outcomes = await pool.invokeBatch(
    'a',
    'count',
    'onMessage',
    ['x', 'throw', 'x', 'spin', 'x', 'x'].map(call),
    50,
  )
  // The overrun moves the tenant: the calls after it start again in a fresh runtime, in order.
  expect(outcomes.map(valueOrCode)).toEqual([1, 'handler_threw', 3, 'deadline', 1, 2])
  expect(pool.placementOf('a')).toEqual({ worker: 1, isolated: true })
  expect(pool.isolations).toBe(1)
})

test('the watchdog replaces a worker stuck in a built-in; the stuck call fails and the others run again once', async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB, watchdogGraceMs: 100 })
  await pool.compile('a', 'count', COUNTER, ['onMessage'])
  await pool.compile('b', 'double', DOUBLE, ['onMessage'])
  const stuck = pool.invokeBatch('a', 'count', 'onMessage', ['x', 'stuck', 'x', 'x'].map(call), 100)
  const other = pool.invokeBatch('b', 'double', 'onMessage', [call({ v: 1 }), call({ v: 2 })], 100)
  const outcomes = await stuck
  // 'x' ran before the worker was lost and again, with the calls after 'stuck', on the isolation worker.
  expect(outcomes.map(valueOrCode)).toEqual([1, 'deadline', 2, 3])
  expect(outcomes[1]).toMatchObject({
    message: expect.stringMatching(/cannot be interrupted; its worker was replaced/),
  })
  expect((await other).map(valueOrCode)).toEqual([2, 4])
  expect(pool.restarts).toBe(1)
  expect(pool.placementOf('a')?.isolated).toBe(true)
})

test('an isolated tenant goes home after a quiet period and the empty isolation worker stops', async () => {
  let now = 1_000_000
  await using pool = createWorkerPool({
    size: 1,
    memoryLimitBytes: 32 * MB,
    isolation: { quietMs: 10_000 },
    clock: { now: () => now },
  })
  await pool.compile('a', 'count', COUNTER, ['onMessage'])
  expect(
    valueOrCode((await pool.invokeBatch('a', 'count', 'onMessage', [call('spin')], 20))[0] as CallOutcome),
  ).toBe('deadline')
  expect(pool.placementOf('a')).toEqual({ worker: 1, isolated: true })
  now += 5_000
  await pool.invoke('a', 'count', 'onMessage', ['x'], info, 100)
  expect(pool.placementOf('a')?.isolated).toBe(true)
  expect(pool.workers).toBe(2) // the isolation worker started with the tenant's first call there
  now += 10_000
  expect(await pool.invoke('a', 'count', 'onMessage', ['x'], info, 100)).toMatchObject({ value: 1 })
  expect(pool.placementOf('a')).toEqual({ worker: 0, isolated: false })
  expect(pool.workers).toBe(1)
})

test("a tenant taking most of a worker's CPU while another tenant waits is moved to an isolation worker", async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB, isolation: { cpuShare: 0.3 } })
  await pool.compile(
    'heavy',
    'busy',
    'export default { onMessage() { let x = 0; for (let i = 0; i < 2e5; i++) x += i; return x > 0 } }',
    ['onMessage'],
  )
  await pool.compile('light', 'double', DOUBLE, ['onMessage'])
  let rounds = 0
  while (!pool.placementOf('heavy')?.isolated && rounds++ < 50) {
    await Promise.all([
      pool.invokeBatch(
        'heavy',
        'busy',
        'onMessage',
        Array.from({ length: 20 }, () => call({})),
        1000,
      ),
      pool.invoke('light', 'double', 'onMessage', [{ v: 1 }], info, 1000),
    ])
  }
  expect(pool.placementOf('heavy')?.isolated).toBe(true)
  expect(pool.placementOf('light')?.isolated).toBe(false)
})

test('removeTenant() drops the tenant and its functions, after the work it queued', async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB })
  await pool.compile('a', 'double', DOUBLE, ['onMessage'])
  const queued = pool.invoke('a', 'double', 'onMessage', [{ v: 4 }], info, 100)
  await pool.removeTenant('a')
  expect((await queued).value).toBe(8)
  expect(pool.placementOf('a')).toBeUndefined()
  expect(await errorOf(() => pool.invoke('a', 'double', 'onMessage', [{ v: 1 }], info, 100))).toMatchObject({
    code: 'handler_threw',
    message: "Cannot run function 'double' as it is not deployed",
  })
})

test("calls past a tenant's queue bound come back overloaded without running", async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB, maxQueuedPerTenant: 10 })
  await pool.compile('a', 'double', DOUBLE, ['onMessage'])
  const outcomes = await pool.invokeBatch(
    'a',
    'double',
    'onMessage',
    Array.from({ length: 25 }, (_, v) => call({ v })),
    100,
  )
  expect(outcomes.slice(0, 10).map(valueOrCode)).toEqual(Array.from({ length: 10 }, (_, v) => v * 2))
  expect(new Set(outcomes.slice(10).map(valueOrCode))).toEqual(new Set(['overloaded']))
  expect(outcomes[10]).toMatchObject({
    message: "Cannot run function 'double' as its tenant has 10 invocations waiting",
  })
})

test("compile() passes the function's memory limit to its sandbox", async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 64 * MB })
  const BUFFER = 'export default { onMessage(m) { return new ArrayBuffer(m.bytes).byteLength } }'
  await pool.compile('a', 'small', BUFFER, ['onMessage'], { memoryBytes: 2 * MB })
  await pool.compile('a', 'large', BUFFER, ['onMessage'])
  // QuickJS refuses the allocation: nothing was allocated, so the sandbox stays as it is.
  expect(
    await errorOf(() => pool.invoke('a', 'small', 'onMessage', [{ bytes: 4 * MB }], info, 1000)),
  ).toMatchObject({
    code: 'handler_threw',
    message: "Function 'small' threw InternalError: out of memory",
  })
  expect((await pool.invoke('a', 'small', 'onMessage', [{ bytes: MB }], info, 1000)).value).toBe(MB)
  expect((await pool.invoke('a', 'large', 'onMessage', [{ bytes: 4 * MB }], info, 1000)).value).toBe(4 * MB)
  await expect(pool.compile('a', 'tiny', BUFFER, ['onMessage'], { memoryBytes: 10 })).rejects.toThrow(
    RangeError,
  )
})

test('a closed pool refuses work with broken', async () => {
  const pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB })
  await pool.compile('a', 'double', DOUBLE, ['onMessage'])
  await pool.close()
  expect(await pool.invokeBatch('a', 'double', 'onMessage', [call({ v: 1 })], 100)).toEqual([
    { ok: false, code: 'broken', message: 'The worker pool is closed' },
  ])
})

test('a call whose arguments cannot be copied to a worker fails alone', async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB })
  await pool.compile('a', 'double', DOUBLE, ['onMessage'])
  const outcomes = await pool.invokeBatch(
    'a',
    'double',
    'onMessage',
    [call({ v: 1 }), call({ v: () => 2 }), call({ v: 3 })],
    100,
  )
  expect(outcomes.map(valueOrCode)).toEqual([2, 'handler_threw', 6])
  expect(outcomes[1]).toMatchObject({
    message: "Cannot run function 'double' as its arguments cannot be copied to a worker",
  })
})

test('a pool starts its workers only when it is first sent work', async () => {
  await using pool = createWorkerPool({ size: 2, memoryLimitBytes: 32 * MB })
  expect(pool.workers).toBe(0)
  await pool.restartWorkerOf('a') // nothing to restart yet
  expect(pool.restarts).toBe(0)
  await pool.compile('a', 'double', DOUBLE, ['onMessage'])
  expect(pool.workers).toBe(1)
  expect((await pool.invoke('a', 'double', 'onMessage', [{ v: 2 }], info, 1_000)).value).toBe(4)
})

test('a tenant whose sandbox keeps running out of memory is isolated, and its sandbox is not rebuilt more than once a second', async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB })
  await pool.compile('b', 'double', DOUBLE, ['onMessage'])
  // Each call asks for more than the tenant's cap: the host sees memory.grow() fail.
  await pool.compile(
    'a',
    'bomb',
    'export default { onMessage() { return new ArrayBuffer(64 * 1024 * 1024).byteLength } }',
    ['onMessage'],
  )
  const codes: Record<string, number> = {}
  const started = performance.now()
  while (performance.now() - started < 1500) {
    const [outcome] = await pool.invokeBatch('a', 'bomb', 'onMessage', [{ args: [{}], info }], 100)
    const code = outcome?.ok === false ? outcome.code : 'ok'
    codes[code] = (codes[code] ?? 0) + 1
    expect((await pool.invoke('b', 'double', 'onMessage', [{ v: 2 }], info, 1000)).value).toBe(4)
  }
  expect(pool.placementOf('a')?.isolated).toBe(true)
  expect(pool.placementOf('b')?.isolated).toBe(false)
  // On each worker (the shared one, then the isolation worker): a break, at most one rebuild at
  // once, then one a second; the calls between fail fast with broken.
  expect(codes.memory).toBeGreaterThanOrEqual(1)
  expect(codes.memory).toBeLessThanOrEqual(4)
  expect(codes.broken).toBeGreaterThan(5)
  expect(codes.ok).toBeUndefined()
})

test('a function that leaves promise jobs pending gets a fresh runtime before its next call, under the compile deadline', async () => {
  // A top level that takes far longer than a call's deadline plus the watchdog's grace.
  await using pool = createWorkerPool({
    size: 1,
    memoryLimitBytes: 32 * MB,
    watchdogGraceMs: 50,
    compileDeadlineMs: 30_000,
  })
  await pool.compile(
    'a',
    'f',
    `let calls = 0
    let i = 0; while (i < 1e7) i++
    export default { onMessage(m) { calls++; if (m.leave) Promise.resolve().then(() => {}); return calls } }`,
    ['onMessage'],
  )
  const restarts = pool.restarts
  const [left] = await pool.invokeBatch('a', 'f', 'onMessage', [{ args: [{ leave: true }], info }], 20)
  expect(left).toMatchObject({ ok: false, code: 'handler_threw' })
  expect(left?.ok || left?.message).toMatch(/left promise callbacks pending/)
  // The reload runs before this call, with the compile deadline in the watchdog's record.
  const next = await pool.invoke('a', 'f', 'onMessage', [{}], info, 20)
  expect(next.value).toBe(1)
  expect(pool.restarts).toBe(restarts)
})

test('close() settles every promise, including calls a worker handed back', async () => {
  const pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB })
  const spin = (n: number) => `export default { onMessage() { let i = 0; while (i < ${n}) i++; return i } }`
  await pool.compile('a', 'f', spin(1e5), ['onMessage'])
  await pool.compile('b', 'f', spin(2e7), ['onMessage'])
  await pool.compile('c', 'f', spin(1), ['onMessage'])
  const calls = (n: number) => Array.from({ length: n }, () => ({ args: [{}], info }))
  const tick = () => new Promise((resolve) => setImmediate(resolve))
  const pending: Array<Promise<CallOutcome[]>> = []
  // Message 1: a's first 100 calls; message 2: a's other 100, then b's slow call. c waits, so
  // message 1 is cut at its budget and its calls come back unrun while message 2 runs b.
  pending.push(pool.invokeBatch('a', 'f', 'onMessage', calls(100), 5000))
  await tick()
  pending.push(pool.invokeBatch('a', 'f', 'onMessage', calls(100), 5000))
  pending.push(pool.invokeBatch('b', 'f', 'onMessage', calls(1), 5000))
  await tick()
  pending.push(pool.invokeBatch('c', 'f', 'onMessage', calls(1), 5000))
  await new Promise((resolve) => setTimeout(resolve, 150))
  await pool.close()
  const timeout = new Promise<'unsettled'>((resolve) => setTimeout(() => resolve('unsettled'), 1000).unref())
  const settled = await Promise.race([Promise.all(pending).then(() => 'settled'), timeout])
  expect(settled).toBe('settled')
  const outcomes = (await Promise.all(pending)).flat()
  expect(outcomes).toHaveLength(202)
  for (const outcome of outcomes) expect(String(outcome?.ok || outcome?.code)).toMatch(/^(true|broken)$/)
})

test('workers of several pools starting at once all come up (V8 flags are shared by the process)', async () => {
  const errors: string[] = []
  for (let round = 0; round < 3; round++) {
    const pools = Array.from({ length: 8 }, () =>
      createWorkerPool({
        size: 2,
        memoryLimitBytes: 32 * MB,
        onWorkerError: (error) => errors.push(String(error)),
      }),
    )
    try {
      const values = await Promise.all(
        pools.map(async (pool, p) => {
          await pool.compile('a', 'double', DOUBLE, ['onMessage'])
          await pool.compile('b', 'double', DOUBLE, ['onMessage'])
          const a = await pool.invoke('a', 'double', 'onMessage', [{ v: p }], info, 1000)
          const b = await pool.invoke('b', 'double', 'onMessage', [{ v: p }], info, 1000)
          return [a.value, b.value]
        }),
      )
      expect(values).toEqual(pools.map((_, p) => [2 * p, 2 * p]))
    } finally {
      for (const pool of pools) await pool.close()
    }
  }
  expect(errors).toEqual([])
})
