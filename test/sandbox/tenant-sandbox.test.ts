import { describe, expect, test } from 'vitest'
import { createTenantSandbox, SandboxError } from '../../sandbox/index.ts'
import { prepareSandboxInstance } from '../../sandbox/tenant-sandbox.ts'

const MB = 1024 * 1024
const info = { name: 'fn', version: 1, config: { factor: 2 }, now: 1_700_000_000_000 }

function errorOf(run: () => unknown): SandboxError {
  try {
    run()
  } catch (error) {
    if (error instanceof SandboxError) return error
    throw error
  }
  throw new Error('expected a SandboxError')
}

describe('createTenantSandbox()', () => {
  test('a function compiles as an ES module and its handler returns outputs and effects', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile(
      'avg',
      `export default {
        onMessage(msg, ctx) {
          ctx.publish('alerts/high', { v: msg.payload.v }, { qos: 1 })
          ctx.emit({ v: msg.payload.v }, { stream: 'raw' })
          ctx.log('seen', msg.topic, ctx.tenant, ctx.config.factor)
          return { doubled: msg.payload.v * ctx.config.factor, at: Date.now(), now: ctx.now() }
        },
      }`,
      ['onMessage'],
    )
    const result = sandbox.invoke('avg', 'onMessage', [{ topic: 'sensors/t', payload: { v: 21 } }], info, 100)
    expect(result.value).toEqual({ doubled: 42, at: info.now, now: info.now })
    expect(result.publishes).toEqual([{ topic: 'alerts/high', value: { v: 21 }, qos: 1, retain: false }])
    expect(result.emits).toEqual([{ record: { v: 21 }, stream: 'raw' }])
    expect(result.logs).toEqual(['seen sensors/t acme 2'])
    expect(result.memoryBytes).toBeGreaterThan(0)
  })

  test('a compile error comes back with line and column, and nothing is registered', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    const error = errorOf(() =>
      sandbox.compile('bad', 'export default {\n  onMessage(msg) {\n    return msg.x +* 2\n  },\n}', [
        'onMessage',
      ]),
    )
    expect(error).toMatchObject({ code: 'invalid_function', line: 3, column: 19 })
    expect(error.message).toMatch(/^Cannot deploy function 'bad' as its source does not compile: SyntaxError/)
    expect(errorOf(() => sandbox.invoke('bad', 'onMessage', [{}], info, 100)).code).toBe('handler_threw')
  })

  test('a module without a default object or without the needed handler is refused', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    expect(errorOf(() => sandbox.compile('a', 'export const x = 1', ['onMessage'])).message).toMatch(
      /does not export a default object/,
    )
    expect(
      errorOf(() => sandbox.compile('b', 'export default { onMessage() {} }', ['onMessage', 'onSchedule']))
        .message,
    ).toMatch(/has no onSchedule\(\) handler/)
  })

  test('effects of a handler that throws are discarded; the error has no host stack', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile(
      't',
      `export default { onMessage(m, ctx) { ctx.publish('x', 1); throw new TypeError('nope') } }`,
      ['onMessage'],
    )
    const error = errorOf(() => sandbox.invoke('t', 'onMessage', [{}], info, 100))
    expect(error.code).toBe('handler_threw')
    expect(error.message).toBe("Function 't' threw TypeError: nope")
    expect(error.message).not.toMatch(/node_modules|\.ts:/)
  })

  test('an infinite loop, even inside try/catch, stops at the deadline and the sandbox keeps working', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile(
      'spin',
      `export default {
        onMessage(m) { if (m.loop) { for (;;) { try { for (;;) {} } catch (e) {} } } return 'ok' },
      }`,
      ['onMessage'],
    )
    expect(errorOf(() => sandbox.invoke('spin', 'onMessage', [{ loop: true }], info, 50)).code).toBe(
      'deadline',
    )
    expect(sandbox.invoke('spin', 'onMessage', [{ loop: false }], info, 50).value).toBe('ok')
  })

  test('a memory bomb is stopped by the cap; the sandbox reports itself broken and refuses further use', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile(
      'bomb',
      `export default { onMessage() { const a = []; for (;;) a.push({ s: 'x'.repeat(100) + a.length }) } }`,
      ['onMessage'],
    )
    const error = errorOf(() => sandbox.invoke('bomb', 'onMessage', [{}], info, 5_000))
    expect(error.code).toBe('memory')
    expect(sandbox.broken).toBe(true)
    expect(errorOf(() => sandbox.invoke('bomb', 'onMessage', [{}], info, 100)).code).toBe('broken')
  })

  test('two tenants never share globals, prototypes or functions', async () => {
    using a = await createTenantSandbox({ tenantId: 'a', memoryLimitBytes: 32 * MB })
    using b = await createTenantSandbox({ tenantId: 'b', memoryLimitBytes: 32 * MB })
    a.compile(
      'p',
      `Object.prototype.toString = () => 'hijacked'; globalThis.secret = 42; export default { onMessage() { return 1 } }`,
      ['onMessage'],
    )
    b.compile('q', `export default { onMessage() { return [typeof secret, String({})] } }`, ['onMessage'])
    expect(b.invoke('q', 'onMessage', [{}], info, 100).value).toEqual(['undefined', '[object Object]'])
    expect(errorOf(() => b.invoke('p', 'onMessage', [{}], info, 100)).code).toBe('handler_threw')
  })

  test('too many publishes in one invocation are refused', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB, maxEffects: 3 })
    sandbox.compile(
      'spam',
      `export default { onMessage(m, ctx) { for (let i = 0; i < 4; i++) ctx.publish('t', i) } }`,
      ['onMessage'],
    )
    expect(errorOf(() => sandbox.invoke('spam', 'onMessage', [{}], info, 100)).code).toBe('bad_output')
  })

  test("the first function takes the instance's booted runtime with its own limits; the next ones boot their own", async () => {
    const instance = await prepareSandboxInstance(32 * MB)
    using sandbox = await createTenantSandbox({
      tenantId: 'acme',
      memoryLimitBytes: 32 * MB,
      compileDeadlineMs: 50,
      instance,
    })
    // The booted runtime had no interrupt handler while the bootstrap ran; the function's has one.
    expect(
      errorOf(() => sandbox.compile('loop', 'for (;;) {}\nexport default { onMessage() {} }', ['onMessage'])),
    ).toMatchObject({
      code: 'invalid_function',
      message: "Cannot deploy function 'loop' as its top level ran past the 50 ms compile deadline",
    })
    const source = `let calls = 0
      export default { onMessage(m, ctx) { calls++; return [calls, ctx.tenant, ctx.name, typeof globalThis.bootstrap] } }`
    sandbox.compile('a', source, ['onMessage'])
    sandbox.compile('b', source, ['onMessage'])
    expect(sandbox.invoke('a', 'onMessage', [{}], info, 100).value).toEqual([1, 'acme', 'fn', 'undefined'])
    expect(sandbox.invoke('a', 'onMessage', [{}], info, 100).value).toEqual([2, 'acme', 'fn', 'undefined'])
    expect(sandbox.invoke('b', 'onMessage', [{}], info, 100).value).toEqual([1, 'acme', 'fn', 'undefined'])
    // An instance serves one tenant only.
    await expect(
      createTenantSandbox({ tenantId: 'other', memoryLimitBytes: 32 * MB, instance }),
    ).rejects.toThrow(/instance is taken/)
  })

  test('a memory limit under 32 MiB is a RangeError', async () => {
    await expect(createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: MB })).rejects.toThrow(RangeError)
  })

  test.each([
    ['$SYS/x', /reserved/],
    ['a/+', /wildcards/],
    ['a/#', /wildcards/],
    ['../other/x', /'\.' and '\.\.'/],
    ['', /empty/],
  ])('a publish to %j is refused with its effects', async (topic, reason) => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile('p', `export default { onMessage(m, ctx) { ctx.publish(m.topic, 1) } }`, ['onMessage'])
    const error = errorOf(() => sandbox.invoke('p', 'onMessage', [{ topic }], info, 100))
    expect(error.code).toBe('bad_output')
    expect(error.message).toMatch(reason)
  })

  test('a publish with a bad QoS is refused', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile('q', `export default { onMessage(m, ctx) { ctx.publish('ok/topic', 1, { qos: 3 }) } }`, [
      'onMessage',
    ])
    expect(errorOf(() => sandbox.invoke('q', 'onMessage', [{}], info, 100)).message).toMatch(/qos must be/)
  })

  test('bytes cross the boundary both ways as Uint8Array', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile(
      'bin',
      `export default {
        onMessage(msg, ctx) {
          const p = msg.payload
          ctx.publish('out', p.subarray(1))
          return { isBytes: p instanceof Uint8Array, length: p.length, sum: p.reduce((a, b) => a + b, 0) }
        },
      }`,
      ['onMessage'],
    )
    const payload = Buffer.from([0, 1, 2, 250, 255])
    const result = sandbox.invoke('bin', 'onMessage', [{ topic: 't', payload }], info, 100)
    expect(result.value).toEqual({ isBytes: true, length: 5, sum: 508 })
    expect(result.publishes[0]?.value).toEqual(new Uint8Array([1, 2, 250, 255]))
  })
})

describe('createTenantSandbox(): functions, batches and limits', () => {
  test("each function has its own runtime: one function never sees another's globals or prototypes", async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile(
      'writer',
      `globalThis.shared = 'from writer'; Array.prototype.join = () => 'hijacked'
      export default { onMessage() { return [typeof shared, [1, 2].join()] } }`,
      ['onMessage'],
    )
    sandbox.compile('reader', `export default { onMessage() { return [typeof shared, [1, 2].join()] } }`, [
      'onMessage',
    ])
    expect(sandbox.invoke('writer', 'onMessage', [{}], info, 100).value).toEqual(['string', 'hijacked'])
    expect(sandbox.invoke('reader', 'onMessage', [{}], info, 100).value).toEqual(['undefined', '1,2'])
  })

  test('invokeBatch() gives every call its own deadline and one outcome, in order', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile(
      'mixed',
      `export default {
        onMessage(m) {
          if (m.kind === 'spin') for (;;) {}
          if (m.kind === 'throw') throw new RangeError('bad ' + m.v)
          // Busy for about 30 ms: three of these exceed one 50 ms deadline, not their own.
          if (m.kind === 'busy') { let x = 0; for (let i = 0; i < 3e5; i++) x += i; return x > 0 }
          return m.v * 2
        },
      }`,
      ['onMessage'],
    )
    const calls = [
      { kind: 'double', v: 1 },
      { kind: 'throw', v: 2 },
      { kind: 'spin' },
      { kind: 'busy' },
      { kind: 'busy' },
      { kind: 'busy' },
      { kind: 'double', v: 3 },
    ].map((m) => ({ args: [m], info }))
    const outcomes = sandbox.invokeBatch('mixed', 'onMessage', calls, 50)
    expect(outcomes.map((outcome) => (outcome.ok ? outcome.result.value : outcome.code))).toEqual([
      2,
      'handler_threw',
      'deadline',
      true,
      true,
      true,
      6,
    ])
    expect(outcomes[1]).toMatchObject({ message: "Function 'mixed' threw RangeError: bad 2" })
  })

  test('a BatchControl sees each call start and end, and can end the batch early', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile('double', `export default { onMessage(m) { return m.v * 2 } }`, ['onMessage'])
    const seen: string[] = []
    const calls = [1, 2, 3, 4].map((v) => ({ args: [{ v }], info }))
    const outcomes = sandbox.invokeBatch('double', 'onMessage', calls, 100, {
      onCallStart: (index, deadlineAt) => {
        seen.push(`start ${index}`)
        expect(deadlineAt).toBeGreaterThan(Date.now())
      },
      onCallEnd: (index, _outcome, spentMs) => {
        seen.push(`end ${index}`)
        expect(spentMs).toBeGreaterThanOrEqual(0)
        return index === 1
      },
    })
    expect(outcomes).toHaveLength(2)
    expect(seen).toEqual(['start 0', 'end 0', 'start 1', 'end 1'])
  })

  test("one allocation larger than a function's memory limit fails the call, and the sandbox stays usable", async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 64 * MB })
    // QuickJS itself refuses one allocation larger than the limit.
    sandbox.compile(
      'buffer',
      `export default { onMessage(m) { return new ArrayBuffer(m.bytes).byteLength } }`,
      ['onMessage'],
      { memoryBytes: 4 * MB },
    )
    expect(sandbox.invoke('buffer', 'onMessage', [{ bytes: 1 * MB }], info, 1000).value).toBe(MB)
    expect(
      errorOf(() => sandbox.invoke('buffer', 'onMessage', [{ bytes: 8 * MB }], info, 1000)),
    ).toMatchObject({
      // Nothing was allocated; the engine's error is the guest's to catch, as any other error.
      code: 'handler_threw',
      message: "Function 'buffer' threw InternalError: out of memory",
    })
    expect(sandbox.broken).toBe(false)
    expect(sandbox.invoke('buffer', 'onMessage', [{ bytes: 2 * MB }], info, 1000).value).toBe(2 * MB)
  })

  test("an allocation past the tenant's cap fails with memory, seen by the host, and the sandbox must be rebuilt", async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile(
      'buffer',
      // The guest catches the engine's error and returns normally: the host saw memory.grow() fail.
      `export default { onMessage(m) { try { return new ArrayBuffer(m.bytes).byteLength } catch (e) { return String(e) } } }`,
      ['onMessage'],
    )
    expect(
      errorOf(() => sandbox.invoke('buffer', 'onMessage', [{ bytes: 64 * MB }], info, 1000)),
    ).toMatchObject({
      code: 'memory',
      message: "Function 'buffer' ran out of memory (its tenant's limit is 32 MiB)",
    })
    expect(sandbox.broken).toBe(true)
  })

  test('a guest that throws an error it names an out-of-memory error fails with handler_threw, and the sandbox is not rebuilt', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile(
      'liar',
      `let calls = 0
      export default { onMessage(m) {
        calls++
        if (m.fake === 'error') throw Object.assign(new Error('out of memory'), { name: 'InternalError' })
        if (m.fake === 'null') throw null
        return calls
      } }`,
      ['onMessage'],
    )
    for (const fake of ['error', 'null']) {
      expect(errorOf(() => sandbox.invoke('liar', 'onMessage', [{ fake }], info, 1000))).toMatchObject({
        code: 'handler_threw',
      })
    }
    expect(sandbox.broken).toBe(false)
    // Module state survived: the runtime was not rebuilt.
    expect(sandbox.invoke('liar', 'onMessage', [{}], info, 1000).value).toBe(3)
  })

  test("many small allocations are stopped once they grow the tenant's memory past the function's limit", async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 64 * MB })
    sandbox.compile(
      'hoard',
      `const kept = []
      export default { onMessage(m) { for (let i = 0; i < m.n; i++) kept.push({ i, s: 'x' + i }); return kept.length } }`,
      ['onMessage'],
      { memoryBytes: 4 * MB },
    )
    expect(sandbox.invoke('hoard', 'onMessage', [{ n: 1000 }], info, 5_000).value).toBe(1000)
    // About 100 bytes per entry: 2 million entries need far more than the 16 MiB the module starts
    // with, and the function may grow it by 4 MiB only.
    const error = errorOf(() => sandbox.invoke('hoard', 'onMessage', [{ n: 2_000_000 }], info, 5_000))
    expect(error).toMatchObject({
      code: 'memory',
      message: "Function 'hoard' ran out of memory (its limit is 4 MiB)",
    })
  })

  test('a function memory limit under 1 MiB is a RangeError', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    expect(() =>
      sandbox.compile('f', 'export default { onMessage() {} }', ['onMessage'], { memoryBytes: 1000 }),
    ).toThrow(RangeError)
  })

  test("Date.now() and new Date() give the invocation's time and cannot be replaced", async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile(
      'clock',
      `export default {
        onMessage(m) {
          if (m.swap) Date.now = () => 0
          return [Date.now(), new Date().getTime(), new Date(5).getTime(), Date(), new Date() instanceof Date]
        },
      }`,
      ['onMessage'],
    )
    const later = { ...info, now: info.now + 1234 }
    expect(sandbox.invoke('clock', 'onMessage', [{}], later, 100).value).toEqual([
      later.now,
      later.now,
      5,
      expect.stringMatching(/^Tue Nov 14 2023 /),
      true,
    ])
    expect(errorOf(() => sandbox.invoke('clock', 'onMessage', [{ swap: true }], info, 100)).message).toMatch(
      /TypeError: 'now' is read-only/,
    )
    expect((sandbox.invoke('clock', 'onMessage', [{}], later, 100).value as number[])[0]).toBe(later.now)
  })

  test('ctx is frozen and its config frozen all the way down', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile(
      'tamper',
      `export default {
        onMessage(m, ctx) {
          const attempts = [
            () => { ctx.publish = null },
            () => { ctx.config.nested.x = 2 },
            () => { delete ctx.log },
            () => { ctx.publish.extra = 1 },
            () => { Object.setPrototypeOf(ctx, null) },
          ]
          return attempts.map((attempt) => { try { attempt(); return 'changed' } catch (e) { return e.name } })
        },
      }`,
      ['onMessage'],
    )
    const withConfig = { ...info, config: { nested: { x: 1 } } }
    expect(sandbox.invoke('tamper', 'onMessage', [{}], withConfig, 100).value).toEqual(
      Array(5).fill('TypeError'),
    )
  })

  test('promise callbacks never run: a function that leaves them pending fails and gets a fresh runtime', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile(
      'jobs',
      `let calls = 0
      export default {
        onMessage(m, ctx) {
          calls++
          if (m.chain) Promise.resolve().then(function again() { ctx.publish('never', 1); return Promise.resolve().then(again) })
          return calls
        },
      }`,
      ['onMessage'],
    )
    expect(sandbox.invoke('jobs', 'onMessage', [{}], info, 100).value).toBe(1)
    const error = errorOf(() => sandbox.invoke('jobs', 'onMessage', [{ chain: true }], info, 100))
    expect(error).toMatchObject({ code: 'handler_threw' })
    expect(error.message).toMatch(/left promise callbacks pending/)
    // The fresh runtime starts its module state again.
    expect(sandbox.invoke('jobs', 'onMessage', [{}], info, 100).value).toBe(1)
  })

  test('a handler that returns a Promise is refused, and async or generator handlers cannot deploy', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    sandbox.compile('thenable', `export default { onMessage() { return Promise.resolve(1) } }`, ['onMessage'])
    expect(errorOf(() => sandbox.invoke('thenable', 'onMessage', [{}], info, 100))).toMatchObject({
      code: 'bad_output',
      message:
        "Function 'thenable' returned a Promise from onMessage(): handlers are synchronous and return their result",
    })
    expect(
      errorOf(() => sandbox.compile('a', `export default { async onMessage() { return 1 } }`, ['onMessage']))
        .message,
    ).toBe(
      "Cannot deploy function 'a' as its onMessage() handler is async: handlers are synchronous and return their result",
    )
    expect(
      errorOf(() => sandbox.compile('g', `export default { *onMessage() { yield 1 } }`, ['onMessage']))
        .message,
    ).toMatch(/handler is a generator/)
    expect(
      errorOf(() => sandbox.compile('t', `await 1; export default { onMessage() {} }`, ['onMessage']))
        .message,
    ).toMatch(/top-level await is not supported/)
  })

  test('only guest libraries can be imported', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
    for (const name of ['fs', 'node:fs', '../sandbox/bytes.ts', 'constructor']) {
      const error = errorOf(() =>
        sandbox.compile('i', `import x from '${name}'; export default { onMessage() { return x } }`, [
          'onMessage',
        ]),
      )
      expect(error.code).toBe('invalid_function')
      expect(error.message).toMatch(
        /as it imports '.*': only taureau:sketch, taureau:window can be imported$/,
      )
    }
    sandbox.compile(
      'ok',
      `import { CountMin } from 'taureau:sketch'; export default { onMessage() { return typeof CountMin } }`,
      ['onMessage'],
    )
    expect(sandbox.invoke('ok', 'onMessage', [{}], info, 100).value).toBe('function')
  })

  test('log lines past the bound are dropped and counted, long lines are clipped', async () => {
    using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB, maxLogLines: 3 })
    sandbox.compile(
      'chatty',
      `export default { onMessage(m, ctx) { ctx.log('x'.repeat(5000)); for (let i = 0; i < 10; i++) ctx.log('line', i) } }`,
      ['onMessage'],
    )
    const { logs } = sandbox.invoke('chatty', 'onMessage', [{}], info, 100)
    expect(logs).toHaveLength(4)
    expect(logs[0]?.length).toBe(1003)
    expect(logs.slice(1)).toEqual([
      'line 0',
      'line 1',
      '(8 more log lines dropped: at most 3 per invocation)',
    ])
  })
})
