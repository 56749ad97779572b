import { describe, expect, test } from 'vitest'
import { createTenantSandbox, SandboxError } from '../../sandbox/index.ts'

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
      `Object.prototype.polluted = 'yes'; globalThis.secret = 42; export default { onMessage() { return 1 } }`,
      ['onMessage'],
    )
    b.compile('q', `export default { onMessage() { return [typeof secret, ({}).polluted ?? null] } }`, [
      'onMessage',
    ])
    expect(b.invoke('q', 'onMessage', [{}], info, 100).value).toEqual(['undefined', null])
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
