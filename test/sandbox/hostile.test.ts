import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { type CallOutcome, createWorkerPool, SandboxError, type WorkerPool } from '../../sandbox/index.ts'

// Hostile functions, through the worker pool (real QuickJS, real worker threads). Every case runs
// while another tenant's function keeps being served, and must come back as a clean SandboxError
// with the right code: no host stack, no host path.

const MB = 1024 * 1024
const info = { name: 'fn', version: 1, config: { nested: { x: 1 } }, now: 1_700_000_000_000 }
const DOUBLE = 'export default { onMessage(msg) { return msg.v * 2 } }'
/** A built-in that runs for seconds with no interrupt point: a naive substring search. */
const STUCK = `'a'.repeat(1e6).indexOf('a'.repeat(1e4) + 'b')`

let pool: WorkerPool
let tenants = 0

beforeAll(async () => {
  pool = createWorkerPool({ size: 1, memoryLimitBytes: 48 * MB, watchdogGraceMs: 150 })
  await pool.compile('good', 'double', DOUBLE, ['onMessage'])
})

afterAll(async () => {
  await pool.close()
})

/** No host path or stack in a message; `guestText` (the guest's own words, quoted back) is left out. */
function expectClean(message: string, guestText = ''): void {
  expect(message.replace(guestText, '')).not.toMatch(
    /\/work\/|node_modules|file:|\.ts\b|\.mjs\b|wasm:|\n\s*at /,
  )
  expect(message.length).toBeLessThan(1200)
}

/** Checks that the good tenant is served, while the hostile work runs and after it. */
async function whileServed<T>(hostile: Promise<T>): Promise<T> {
  const during = Promise.all(
    [1, 2, 3].map((v) => pool.invoke('good', 'double', 'onMessage', [{ v }], info, 1000)),
  )
  const outcome = await hostile
  expect((await during).map((result) => result.value)).toEqual([2, 4, 6])
  expect((await pool.invoke('good', 'double', 'onMessage', [{ v: 21 }], info, 1000)).value).toBe(42)
  return outcome
}

/** Deploys a hostile handler body for a new tenant and runs it once beside the good tenant. */
async function run(
  body: string,
  options: { deadlineMs?: number; memoryBytes?: number; args?: unknown[]; prelude?: string } = {},
): Promise<CallOutcome & { tenantId: string }> {
  const tenantId = `hostile-${++tenants}`
  await pool.compile(
    tenantId,
    'f',
    `${options.prelude ?? ''}\nexport default { onMessage(msg, ctx) { ${body} } }`,
    ['onMessage'],
    options.memoryBytes === undefined ? {} : { memoryBytes: options.memoryBytes },
  )
  const [outcome] = await whileServed(
    pool.invokeBatch(
      tenantId,
      'f',
      'onMessage',
      [{ args: options.args ?? [{}], info }],
      options.deadlineMs ?? 100,
    ),
  )
  if (outcome === undefined) throw new Error('no outcome')
  if (!outcome.ok) expectClean(outcome.message)
  return { ...outcome, tenantId }
}

/** The error of a deploy that must fail, checked for cleanliness. */
async function refused(source: string, guestText = ''): Promise<SandboxError> {
  const tenantId = `hostile-${++tenants}`
  try {
    await whileServed(pool.compile(tenantId, 'f', source, ['onMessage']))
  } catch (error) {
    if (!(error instanceof SandboxError)) throw error
    expectClean(error.message, guestText)
    return error
  }
  throw new Error('expected the deploy to fail')
}

describe('endless code', () => {
  test.each([
    ['a plain loop', 'for (;;) {}'],
    ['a loop inside try/catch', 'for (;;) { try { for (;;) {} } catch (e) {} }'],
    ['a loop in finally', 'try { for (;;) {} } finally { for (;;) {} }'],
    [
      'a loop that catches what it throws',
      'for (;;) { try { throw new Error("again") } catch (e) { continue } }',
    ],
    ['a catastrophic regular expression', `return /^(a+)+$/.test('a'.repeat(40) + '!')`],
    ['an error whose name getter loops', 'throw { get name() { for (;;) {} }, __proto__: Error.prototype }'],
  ])('%s stops at the deadline', async (_name, body) => {
    const outcome = await run(body)
    expect(outcome).toMatchObject({
      ok: false,
      code: 'deadline',
      message: "Function 'f' ran past its 100 ms deadline",
    })
  })

  test('a built-in with no interrupt point is stopped by the watchdog, which replaces the worker', async () => {
    const restarts = pool.restarts
    const outcome = await run(`return ${STUCK}`)
    expect(outcome).toMatchObject({ ok: false, code: 'deadline' })
    expect(outcome.ok || outcome.message).toMatch(
      /built-in that cannot be interrupted; its worker was replaced$/,
    )
    expect(pool.restarts).toBe(restarts + 1)
    expect(pool.placementOf(outcome.tenantId)?.isolated).toBe(true)
  })

  test('top-level code that never ends cannot deploy', async () => {
    expect(await refused('for (;;) {}\nexport default { onMessage() {} }')).toMatchObject({
      code: 'invalid_function',
      message: "Cannot deploy function 'f' as its top level ran past the 1000 ms compile deadline",
    })
  })

  test('top-level code stuck in a built-in cannot deploy, and the watchdog replaces the worker', async () => {
    const restarts = pool.restarts
    expect(await refused(`${STUCK}\nexport default { onMessage() {} }`)).toMatchObject({
      code: 'invalid_function',
      message: "Cannot deploy function 'f' as its top level ran past the 1000 ms compile deadline",
    })
    expect(pool.restarts).toBe(restarts + 1)
  })
})

describe('memory bombs', () => {
  test.each([
    ['one large ArrayBuffer', 'return new ArrayBuffer(1024 * 1024 * 1024).byteLength'],
    ['many small objects', 'const kept = []; for (;;) kept.push({ n: kept.length })'],
    ['a growing string', "let s = 'x'; for (;;) s = s.repeat(2)"],
    ['an exponential array', 'let a = [1]; for (;;) a = a.concat(a)'],
    ['a Map of arrays', 'const m = new Map(); for (let i = 0; ; i++) m.set(i, [i, i, i])'],
  ])("%s fails with memory and the tenant's sandbox is rebuilt", async (_name, body) => {
    const outcome = await run(`if (msg.bomb) { ${body} } return 'alive'`, {
      args: [{ bomb: true }],
      deadlineMs: 10_000,
    })
    expect(outcome).toMatchObject({
      ok: false,
      code: 'memory',
      message: "Function 'f' ran out of memory (its tenant's limit is 48 MiB)",
    })
    const after = await pool.invoke(outcome.tenantId, 'f', 'onMessage', [{}], info, 1000)
    expect(after.value).toBe('alive')
  })

  test("a function's own memory limit stops it before the tenant's cap", async () => {
    const outcome = await run('const kept = []; for (;;) kept.push({ n: kept.length })', {
      memoryBytes: 4 * MB,
      deadlineMs: 10_000,
    })
    expect(outcome).toMatchObject({
      ok: false,
      code: 'memory',
      message: "Function 'f' ran out of memory (its limit is 4 MiB)",
    })
  })
})

describe('deep recursion', () => {
  // Each function counts its calls: the count after a failure shows its runtime carried on.
  const COUNTED = 'let calls = 0'
  test.each([
    [
      'a function calling itself',
      'function f() { return f() + 1 } return f()',
      /InternalError: stack overflow/,
    ],
    [
      'a deeply nested expression',
      'return (0, eval)("(".repeat(50000) + "1" + ")".repeat(50000))',
      /SyntaxError: stack overflow/,
    ],
    [
      'a deeply nested JSON text',
      'return JSON.parse("[".repeat(100000) + "]".repeat(100000))',
      /SyntaxError: stack overflow/,
    ],
    [
      'a deeply nested regular expression',
      'return new RegExp("(?:".repeat(30000) + "a" + ")".repeat(30000)).test("a")',
      /stack overflow/,
    ],
    [
      'a getter that reads itself',
      'const o = { get x() { return this.x } }; return o.x',
      /InternalError: stack overflow/,
    ],
  ])('%s is a clean error and the function keeps its state', async (_name, body, reason) => {
    const outcome = await run(`calls++; if (msg.deep) { ${body} } return calls`, {
      prelude: COUNTED,
      args: [{ deep: true }],
      deadlineMs: 2000,
    })
    expect(outcome).toMatchObject({ ok: false, code: 'handler_threw' })
    expect(outcome.ok || outcome.message).toMatch(reason)
    expect((await pool.invoke(outcome.tenantId, 'f', 'onMessage', [{}], info, 1000)).value).toBe(2)
  })

  test('a result nested too deeply to serialize is refused as bad output', async () => {
    const outcome = await run('let a = []; for (let i = 0; i < 100000; i++) a = [a]; return a', {
      deadlineMs: 5000,
    })
    expect(outcome).toMatchObject({ ok: false, code: 'bad_output' })
    expect(outcome.ok || outcome.message).toMatch(
      /returned a result that cannot be serialized as JSON: .*stack overflow/,
    )
  })
})

describe('reaching for the host', () => {
  test('the global object holds the standard built-ins only', async () => {
    const outcome = await run('return Object.getOwnPropertyNames(globalThis)')
    const STANDARD = new Set(
      `Object Function Array Number parseFloat parseInt Infinity NaN undefined Boolean String Symbol Date
      Promise RegExp Error AggregateError EvalError RangeError ReferenceError SyntaxError TypeError URIError
      InternalError globalThis JSON Math Reflect Proxy Map Set WeakMap WeakSet ArrayBuffer SharedArrayBuffer
      DataView Int8Array Uint8Array Uint8ClampedArray Int16Array Uint16Array Int32Array Uint32Array
      Float16Array Float32Array Float64Array BigInt64Array BigUint64Array BigInt Iterator isNaN isFinite
      decodeURI decodeURIComponent encodeURI encodeURIComponent escape unescape eval`.split(/\s+/),
    )
    expect(outcome.ok).toBe(true)
    const names = outcome.ok ? (outcome.result.value as string[]) : []
    expect(names.filter((name) => !STANDARD.has(name))).toEqual([])
    expect(names).not.toContain('WeakRef')
    expect(names).not.toContain('FinalizationRegistry')
  })

  test('this, the Function constructor, eval and import.meta lead nowhere', async () => {
    const outcome = await run(
      `const probe = "typeof process + typeof require + typeof __taureau + typeof globalThis.__taureau + typeof print + typeof std + typeof os"
      return [
        Object.keys(this),
        Function('return ' + probe)(),
        (0, eval)(probe),
        Function('return this')() === globalThis,
        JSON.stringify(import.meta),
        typeof new Error().stack,
      ]`,
    )
    expect(outcome.ok && outcome.result.value).toEqual([
      ['onMessage'],
      'undefined'.repeat(7),
      'undefined'.repeat(7),
      true,
      '{}',
      'string',
    ])
  })

  test('an error stack names guest code only', async () => {
    const outcome = await run('return new Error("where").stack')
    expect(outcome.ok).toBe(true)
    expectClean(String(outcome.ok && outcome.result.value).replace(/\n\s*at /g, ' '))
  })

  test('prototype pollution stays inside the function: its next ctx, other functions and tenants are untouched', async () => {
    const tenantId = `hostile-${++tenants}`
    await pool.compile(
      tenantId,
      'polluter',
      `let round = 0
      const attempt = (name, change) => { try { change(); return name + ': done' } catch (e) { return name + ': ' + e.name } }
      export default {
        onMessage(msg, ctx) {
          round++
          if (round === 1) {
            const planted = { __proto__: null, get() { throw new Error('planted') }, set() { throw new Error('planted') } }
            return [
              // New properties on the shared prototypes are refused...
              attempt('Object.prototype.value', () => Object.defineProperty(Object.prototype, 'value', planted)),
              attempt('Object.prototype.toJSON', () => { Object.prototype.toJSON = () => 'planted' }),
              attempt('Object.prototype.then', () => { Object.prototype.then = (resolve) => resolve('planted') }),
              attempt('Array.prototype[0]', () => Object.defineProperty(Array.prototype, '0', planted)),
              // ...while replacing their methods and the globals works, for the function's own code.
              attempt('Array.prototype.push', () => { Array.prototype.push = () => { throw new Error('planted') } }),
              attempt('Array.prototype[Symbol.iterator]', () => { Array.prototype[Symbol.iterator] = function* () { yield 'planted' } }),
              attempt('Object.prototype.hasOwnProperty', () => { Object.prototype.hasOwnProperty = () => true }),
              attempt('JSON.parse', () => { JSON.parse = () => ({ planted: true }) }),
              attempt('JSON.stringify', () => { JSON.stringify = () => '"planted"' }),
              attempt('Object.freeze', () => { Object.freeze = (o) => o }),
              attempt('Reflect.apply', () => { Reflect.apply = () => 'planted' }),
              attempt('String', () => { globalThis.String = () => 'planted' }),
            ]
          }
          ctx.publish('after/pollution', { round }, { qos: 1 })
          ctx.log('still', 'logging')
          let frozen = true
          try { ctx.config.nested.x = 2; frozen = false } catch {}
          return [round, Object.isFrozen(ctx), frozen, ctx.config.nested.x, ctx.now(), Date.now(), msg.v]
        },
      }`,
      ['onMessage'],
    )
    await pool.compile(
      tenantId,
      'neighbour',
      'export default { onMessage() { return [[].push.name, JSON.stringify([1]), typeof String(1)] } }',
      ['onMessage'],
    )
    const first = await whileServed(pool.invoke(tenantId, 'polluter', 'onMessage', [{ v: 1 }], info, 1000))
    expect(first.value).toEqual([
      'Object.prototype.value: TypeError',
      'Object.prototype.toJSON: TypeError',
      'Object.prototype.then: TypeError',
      'Array.prototype[0]: TypeError',
      'Array.prototype.push: done',
      'Array.prototype[Symbol.iterator]: done',
      'Object.prototype.hasOwnProperty: done',
      'JSON.parse: done',
      'JSON.stringify: done',
      'Object.freeze: done',
      'Reflect.apply: done',
      'String: done',
    ])
    // The bootstrap captured the intrinsics before the function ran: ctx and the outcome are intact.
    const second = await whileServed(pool.invoke(tenantId, 'polluter', 'onMessage', [{ v: 7 }], info, 1000))
    expect(second.value).toEqual([2, true, true, 1, info.now, info.now, 7])
    expect(second.publishes).toEqual([
      { topic: 'after/pollution', value: { round: 2 }, qos: 1, retain: false },
    ])
    expect(second.logs).toEqual(['still logging'])
    const neighbour = await pool.invoke(tenantId, 'neighbour', 'onMessage', [{}], info, 1000)
    expect(neighbour.value).toEqual(['push', '[1]', 'string'])
  })

  test('Date.now and the Date constructor cannot be replaced for later calls', async () => {
    const outcome = await run(
      `const attempts = [() => { Date.now = () => 0 }, () => { globalThis.Date = function () {} }, () => { Object.defineProperty(Date, 'now', { value: () => 0 }) }]
      return [attempts.map((attempt) => { try { attempt(); return 'replaced' } catch (e) { return e.name } }), Date.now(), new Date().getTime()]`,
    )
    expect(outcome.ok && outcome.result.value).toEqual([
      ['TypeError', 'TypeError', 'TypeError'],
      info.now,
      info.now,
    ])
  })

  test("Math.random is a locked generator seeded by the host: its outputs do not give away the host's clock", async () => {
    // QuickJS seeds its own xorshift64* generator with gettimeofday() in µs when a context is made;
    // two outputs give the seed back (the recovery below finds it in 4096 tries).
    const recover = `const M = 0x2545F4914F6CDD1Dn, MASK = (1n << 64n) - 1n
      const inv = (a) => { let x = a; for (let i = 0; i < 6; i++) x = (x * (2n - a * x)) & MASK; return x }
      const MINV = inv(M)
      const step = (x) => { x ^= x >> 12n; x = (x ^ (x << 25n)) & MASK; x ^= x >> 27n; return x }
      const unR = (y, s) => { let x = y; for (let i = 0; i < 64; i += s) x = y ^ (x >> BigInt(s)); return x }
      const unL = (y, s) => { let x = y; for (let i = 0; i < 64; i += s) x = (y ^ (x << BigInt(s))) & MASK; return x }
      const top = (r) => { const b = new DataView(new ArrayBuffer(8)); b.setFloat64(0, r + 1); return b.getBigUint64(0) & ((1n << 52n) - 1n) }
      const first = [Math.random(), Math.random()]
      function seedMs() {
        const a = top(first[0]), b = top(first[1])
        for (let lo = 0n; lo < 4096n; lo++) {
          const x1 = (((a << 12n) | lo) * MINV) & MASK
          if (((step(x1) * M) & MASK) >> 12n !== b) continue
          let s = unR(x1, 27); s = unL(s, 25); s = unR(s, 12)
          return Number(s / 1000n)
        }
        return -1
      }
      const learnedMs = seedMs()`
    const body = `const d = Object.getOwnPropertyDescriptor(Math, 'random')
      let replaced = 'no'
      try { Math.random = () => 0.5; replaced = 'yes' } catch (e) { replaced = e.name }
      return { learnedMs, first, writable: d.writable, configurable: d.configurable, replaced }`
    const before = Date.now()
    const [one, two] = await Promise.all([run(body, { prelude: recover }), run(body, { prelude: recover })])
    for (const outcome of [one, two]) {
      if (!outcome.ok) throw new Error(outcome.message)
      const value = outcome.result.value as {
        learnedMs: number
        writable: boolean
        configurable: boolean
        replaced: string
      }
      // On QuickJS's own generator this is the time the context was made, within a second of before.
      expect(Math.abs(value.learnedMs - before)).toBeGreaterThan(24 * 3600_000)
      expect(value).toMatchObject({ writable: false, configurable: false, replaced: 'TypeError' })
    }
    // Two runtimes made in the same few ms draw different sequences.
    expect(one.ok && one.result.value).not.toEqual(two.ok && two.result.value)
  })

  test("a guest throwing its own 'out of memory' error gets handler_threw: its sandbox is not rebuilt nor the tenant isolated", async () => {
    const outcome = await run(
      `calls++
      if (msg.fake) throw Object.assign(new Error('out of memory'), { name: 'InternalError' })
      return calls`,
      { prelude: 'let calls = 0', args: [{ fake: true }] },
    )
    expect(outcome).toMatchObject({
      ok: false,
      code: 'handler_threw',
      message: "Function 'f' threw InternalError: out of memory",
    })
    // The module's state survived: its runtime was not built again.
    expect((await pool.invoke(outcome.tenantId, 'f', 'onMessage', [{}], info, 1000)).value).toBe(2)
    expect(pool.placementOf(outcome.tenantId)?.isolated).toBe(false)
  })

  test('ctx cannot be tampered with, and the next call gets an intact ctx', async () => {
    const outcome = await run(
      `const attempts = [
        () => { ctx.publish = () => {} },
        () => { ctx.tenant = 'other' },
        () => { ctx.config.nested.x = 2 },
        () => { ctx.publish.call = null },
        () => { Object.defineProperty(ctx, 'emit', { value: 1 }) },
        () => { Object.setPrototypeOf(ctx, null) },
      ]
      const results = attempts.map((attempt) => { try { attempt(); return 'changed' } catch (e) { return e.name } })
      ctx.publish('ok', 1)
      return [results, ctx.tenant]`,
    )
    expect(outcome.ok && outcome.result.value).toEqual([Array(6).fill('TypeError'), outcome.tenantId])
  })
})

describe('effects', () => {
  test.each([
    ['$SYS/broker/x', /reserved/],
    ['+/#', /wildcards/],
    ['a/+/b', /wildcards/],
    ['../other/x', /'\.' and '\.\.'/],
    ['a/./b', /'\.' and '\.\.'/],
    ['', /empty/],
    ['x'.repeat(2000), /longer than 1024/],
  ])('a publish to %j is refused', async (topic, reason) => {
    const outcome = await run('ctx.publish(msg.topic, 1); return 1', { args: [{ topic }] })
    expect(outcome).toMatchObject({ ok: false, code: 'bad_output' })
    expect(outcome.ok || outcome.message).toMatch(reason)
  })

  test.each(['tenants/other/sensors', '/other/sensors', 'other-tenant/x'])(
    'a publish to %j stays tenant-relative',
    async (topic) => {
      const outcome = await run('ctx.publish(msg.topic, 1); return 1', { args: [{ topic }] })
      expect(outcome.ok && outcome.result.publishes).toEqual([{ topic, value: 1, qos: 0, retain: false }])
    },
  )

  test.each([
    [
      'a huge result',
      "return 'x'.repeat(2 * 1024 * 1024)",
      /produced \d+ bytes of output, more than 1048576/,
    ],
    ['a huge publish', "ctx.publish('t', 'x'.repeat(2 * 1024 * 1024))", /produced \d+ bytes of output/],
    [
      'too many publishes',
      "for (let i = 0; i < 101; i++) ctx.publish('t', i)",
      /made more than 100 publishes/,
    ],
    ['too many emits', 'for (let i = 0; i < 101; i++) ctx.emit({ i })', /made more than 100 emits/],
    [
      'too many publishes, the error caught',
      "for (let i = 0; i < 200; i++) { try { ctx.publish('t', i) } catch {} } return 'fine'",
      /made more than 100 publishes/,
    ],
    ['a result that is not JSON', 'const a = {}; a.self = a; return a', /cannot be serialized as JSON/],
    ['a BigInt result', 'return 10n', /cannot be serialized as JSON/],
  ])('%s is refused as bad output', async (_name, body, reason) => {
    const outcome = await run(body, { deadlineMs: 2000 })
    expect(outcome).toMatchObject({ ok: false, code: 'bad_output' })
    expect(outcome.ok || outcome.message).toMatch(reason)
  })

  test('a flood of log lines is cut and counted', async () => {
    const outcome = await run("for (let i = 0; i < 100000; i++) ctx.log('line', i); return 1", {
      deadlineMs: 2000,
    })
    expect(outcome.ok && outcome.result.logs.length).toBe(101)
    expect(outcome.ok && outcome.result.logs[100]).toBe(
      '(99900 more log lines dropped: at most 100 per invocation)',
    )
  })

  test.each([
    ['a Symbol', "throw Symbol('s')", "Function 'f' threw a non-Error value: Symbol(s)"],
    [
      'an object whose toString throws',
      'throw { toString() { throw new Error() } }',
      "Function 'f' threw a value that cannot be described",
    ],
  ])('throwing %s gives a clean message', async (_name, body, message) => {
    expect(await run(body)).toMatchObject({ ok: false, code: 'handler_threw', message })
  })

  test('a huge error message is clipped', async () => {
    const outcome = await run("throw new Error('x'.repeat(100000))")
    expect(outcome).toMatchObject({ ok: false, code: 'handler_threw' })
  })
})

describe('promises and async code', () => {
  test('an endless chain of promise jobs never runs: the call fails at once and the function gets a fresh runtime', async () => {
    const outcome = await run(
      'calls++; if (msg.chain) Promise.resolve().then(function f() { return Promise.resolve().then(f) }); return calls',
      { prelude: 'let calls = 0', args: [{ chain: true }], deadlineMs: 5000 },
    )
    expect(outcome).toMatchObject({ ok: false, code: 'handler_threw' })
    expect(outcome.ok || outcome.message).toMatch(/left promise callbacks pending: handlers are synchronous/)
    expect((await pool.invoke(outcome.tenantId, 'f', 'onMessage', [{}], info, 1000)).value).toBe(1)
  })

  test('a dynamic import is a promise job and fails the same way', async () => {
    const outcome = await run("import('taureau:sketch'); return 1")
    expect(outcome.ok || outcome.message).toMatch(/left promise callbacks pending/)
  })

  test('a handler that returns a Promise is refused', async () => {
    expect(await run('return Promise.resolve(1)')).toMatchObject({
      ok: false,
      code: 'bad_output',
      message:
        "Function 'f' returned a Promise from onMessage(): handlers are synchronous and return their result",
    })
  })

  test.each([
    ['an async handler', 'export default { async onMessage() {} }', /handler is async/],
    ['a generator handler', 'export default { *onMessage() {} }', /handler is a generator/],
    ['top-level await', 'await null\nexport default { onMessage() {} }', /top-level await is not supported/],
    [
      'pending top-level jobs',
      'Promise.resolve().then(() => {})\nexport default { onMessage() {} }',
      /leaves promise callbacks pending/,
    ],
  ])('%s cannot deploy', async (_name, source, reason) => {
    const error = await refused(source)
    expect(error.code).toBe('invalid_function')
    expect(error.message).toMatch(reason)
  })
})

describe('imports', () => {
  test.each([
    'fs',
    'node:fs',
    'node:worker_threads',
    '../../sandbox/bytes.ts',
    '/etc/passwd',
    'https://example.com/x.js',
    'constructor',
    '__proto__',
  ])('importing %j cannot deploy', async (name) => {
    const error = await refused(
      `import x from ${JSON.stringify(name)}\nexport default { onMessage() { return x } }`,
      name,
    )
    expect(error.code).toBe('invalid_function')
    expect(error.message).toMatch(/as it imports '.*': only taureau:sketch, taureau:window can be imported$/)
  })

  test('the guest libraries can be imported', async () => {
    const outcome = await run('return [typeof HyperLogLog, Object.keys(windows).length > 0]', {
      prelude: "import { HyperLogLog } from 'taureau:sketch'\nimport * as windows from 'taureau:window'",
    })
    expect(outcome.ok && outcome.result.value).toEqual(['function', true])
  })
})
