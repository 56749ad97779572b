import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, test } from 'vitest'
import { createStateStore, type StateStore } from '../../gateway/state-store.ts'
import { createStore } from '../../gateway/store.ts'
import {
  type CallOutcome,
  createTenantSandbox,
  createWorkerPool,
  type HandlerName,
  type StateSource,
} from '../../sandbox/index.ts'
import { tempDir } from '../helpers/temp.ts'

const MB = 1024 * 1024
const info = (name = 'fn') => ({ name, version: 1, config: {}, now: 1_700_000_000_000 })
const ROOMY = { maxStateKeys: 10_000, maxStateBytes: 16 * MB }
const valueOrCode = (outcome: CallOutcome) => (outcome.ok ? outcome.result.value : outcome.code)

const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

/** A gateway store in a temp dir with tenants acme and other, its state store and its file. */
function openStore(now?: () => number) {
  const dir = tempDir()
  dirs.push(dir)
  const file = join(dir, 'taureau.db')
  const store = createStore({ file })
  store.createTenant('acme')
  store.createTenant('other')
  const state = createStateStore(store.db, now === undefined ? {} : { now })
  return { file, store, state, [Symbol.dispose]: () => store.close() }
}

/** Committed state as a sandbox reads it, from the real store (the pool's workers read SQLite). */
const sourceOf = (state: StateStore): StateSource => ({
  get: (tenantId, namespace, key) => state.get(tenantId, namespace, key)?.value,
  keys: (tenantId, namespace, prefix, after, limit) =>
    state.list(tenantId, namespace, prefix, limit, after).map((entry) => entry.key),
})

async function sandboxOf(source: string, options: { state?: StateSource; handlers?: HandlerName[] } = {}) {
  const sandbox = await createTenantSandbox({
    tenantId: 'acme',
    memoryLimitBytes: 32 * MB,
    ...(options.state === undefined ? {} : { state: options.state }),
  })
  sandbox.compile('f', source, options.handlers ?? ['onMessage'])
  return sandbox
}

const run = (sandbox: Awaited<ReturnType<typeof sandboxOf>>, args: unknown[] = [{}], name = 'fn') =>
  sandbox.invoke('f', 'onMessage', args, info(name), 1000)

describe('ctx.state in a sandbox', () => {
  test('a call reads its own writes; the outcome has one write per key, increments as increments', async () => {
    using sandbox = await sandboxOf(`export default { onMessage(m, ctx) {
      const s = ctx.state
      const seen = [s.get('a') === undefined]
      s.set('a', { v: 1 })
      const copy = s.get('a')
      copy.v = 99
      seen.push(s.get('a'))
      seen.push(s.incr('n'), s.incr('n', 2.5), s.incr('n', -1))
      s.set('b', 'x')
      s.delete('b')
      seen.push(s.get('b') === undefined)
      s.set('t', 1, { ttlMs: 5000 })
      seen.push(s.incr('t'))
      s.set('bytes', new Uint8Array([1, 2, 3]))
      seen.push(Array.from(s.get('bytes')))
      seen.push(s.keys(), s.keys('', { limit: 1 }), s.keys('', { after: 'b' }), s.keys('by'))
      const line = s.ns('site/line1')
      line.set('k', 'shared')
      line.lease(60000)
      s.lease(null)
      seen.push(line.namespace, line.get('k'), s.get('k') === undefined)
      return seen
    } }`)
    const result = run(sandbox)
    expect(result.value).toEqual([
      true,
      { v: 1 },
      1,
      3.5,
      2.5,
      true,
      2,
      [1, 2, 3],
      ['a', 'b', 'bytes', 'n', 't'].filter((key) => key !== 'b'),
      ['a'],
      ['bytes', 'n', 't'],
      ['bytes'],
      'site/line1',
      'shared',
      true,
    ])
    expect(result.state).toEqual([
      { namespace: '@fn', key: 'a', op: 'set', value: '{"v":1}' },
      { namespace: '@fn', key: 'n', op: 'incr', by: 2.5 },
      { namespace: '@fn', key: 'b', op: 'delete' },
      { namespace: '@fn', key: 't', op: 'set', value: '2', ttlMs: 5000 },
      { namespace: '@fn', key: 'bytes', op: 'set', value: '{"$taureau:bytes":"AQID"}' },
      { namespace: 'site/line1', key: 'k', op: 'set', value: '"shared"' },
    ])
    expect(result.leases).toEqual([
      { namespace: 'site/line1', ttlMs: 60000 },
      { namespace: '@fn', ttlMs: null },
    ])
  })

  test("each function has its own private namespace, named after ctx.name: '@' and the name", async () => {
    using sandbox = await sandboxOf(`export default { onMessage(m, ctx) { ctx.state.set('k', ctx.name) } }`)
    expect(run(sandbox, [{}], 'alpha').state).toEqual([
      { namespace: '@alpha', key: 'k', op: 'set', value: '"alpha"' },
    ])
  })

  test("a call that throws leaves no writes, and the batch's later calls do not see them", async () => {
    using sandbox = await sandboxOf(`export default { onMessage(m, ctx) {
      const n = ctx.state.incr('n')
      ctx.state.set('last', m)
      if (m === 'throw') throw new Error('no')
      return [n, ctx.state.get('last')]
    } }`)
    const outcomes = sandbox.invokeBatch(
      'f',
      'onMessage',
      ['a', 'throw', 'b'].map((m) => ({ args: [m], info: info() })),
      1000,
    )
    expect(outcomes.map(valueOrCode)).toEqual([[1, 'a'], 'handler_threw', [2, 'b']])
    expect(outcomes[2]?.ok && outcomes[2].result.state).toEqual([
      { namespace: '@fn', key: 'n', op: 'incr', by: 1 },
      { namespace: '@fn', key: 'last', op: 'set', value: '"b"' },
    ])
  })

  test("a batch's calls read committed state under the writes of its earlier successful calls", async () => {
    using s = openStore()
    s.state.apply(
      'acme',
      'fn',
      Array.from({ length: 10 }, (_, i) => ({
        namespace: '@fn',
        key: `k${i}`,
        op: 'set' as const,
        value: String(i),
      })),
      [],
      ROOMY,
    )
    s.state.apply('acme', 'fn', [{ namespace: '@fn', key: 'n', op: 'set', value: '10' }], [], ROOMY)
    using sandbox = await sandboxOf(
      `export default { onMessage(m, ctx) {
        const s = ctx.state
        if (m === 'edit') { s.delete('k1'); s.delete('k2'); s.set('k5b', 'new'); s.incr('k3', 100); return s.incr('n') }
        return [s.incr('n'), s.keys('k', { limit: 5 }), s.keys('k', { after: 'k5' }), s.get('k3'), s.get('k1') ?? 'none']
      } }`,
      { state: sourceOf(s.state) },
    )
    const outcomes = sandbox.invokeBatch(
      'f',
      'onMessage',
      ['edit', 'read'].map((m) => ({ args: [m], info: info() })),
      1000,
    )
    expect(outcomes.map(valueOrCode)).toEqual([
      11,
      [12, ['k0', 'k3', 'k4', 'k5', 'k5b'], ['k5b', 'k6', 'k7', 'k8', 'k9'], 103, 'none'],
    ])
    // Nothing was committed: the next batch sees committed state only.
    expect(run(sandbox, ['read']).value).toEqual([
      11,
      ['k0', 'k1', 'k2', 'k3', 'k4'],
      ['k6', 'k7', 'k8', 'k9'],
      3,
      1,
    ])
  })

  test('a function triggered by state changes exports onState(change, ctx)', async () => {
    using sandbox = await sandboxOf(
      `export default { onState(change, ctx) { ctx.state.incr(change.namespace + ':' + change.key); return change.value * 2 } }`,
      { handlers: ['onState'] },
    )
    const change = { namespace: 'site/line1', key: 'count', op: 'set', value: 21 }
    const result = sandbox.invoke('f', 'onState', [change], info(), 1000)
    expect(result.value).toBe(42)
    expect(result.state).toEqual([{ namespace: '@fn', key: 'site/line1:count', op: 'incr', by: 1 }])
    await expect(sandboxOf('export default { onMessage() {} }', { handlers: ['onState'] })).rejects.toThrow(
      /has no onState\(\) handler/,
    )
  })
})

describe('hostile functions and ctx.state', () => {
  test("tampering with JSON, String, Reflect and Function prototypes breaks only the function's own code", async () => {
    using sandbox = await sandboxOf(`export default { onMessage(m, ctx) {
      JSON.parse = () => ({ forged: true })
      JSON.stringify = () => '"forged"'
      String.prototype.slice = function () { return 'vforged' }
      String.prototype.charCodeAt = () => 118
      String.prototype.includes = () => true
      Reflect.apply = () => 'forged'
      Function.prototype.call = () => 'forged'
      Function.prototype.apply = () => 'forged'
      Object.freeze = (x) => x
      Object.defineProperty = () => { throw new Error('no') }
      const shared = ctx.state.ns('site')
      const attempts = []
      for (const attempt of [
        () => { shared.namespace = '@victim' },
        () => { shared.set = () => {} },
        () => { ctx.state.ns = () => shared },
        () => { delete ctx.state.get },
      ]) {
        try { attempt(); attempts.push('changed') } catch (e) { attempts.push(e.name) }
      }
      shared.set('k', { real: 1 })
      ctx.state.set('own', [1, 2])
      return [ctx.state.get('own'), shared.get('k'), shared.namespace, attempts]
    } }`)
    const result = run(sandbox)
    expect(result.value).toEqual([
      [1, 2],
      { real: 1 },
      'site',
      ['TypeError', 'TypeError', 'TypeError', 'TypeError'],
    ])
    expect(result.state).toEqual([
      { namespace: 'site', key: 'k', op: 'set', value: '{"real":1}' },
      { namespace: '@fn', key: 'own', op: 'set', value: '[1,2]' },
    ])
  })

  test('the host state function is reachable from neither the global object nor ctx', async () => {
    using sandbox = await sandboxOf(`export default { onMessage(m, ctx) {
      const found = []
      const seen = new Set()
      const visit = (value, path, depth) => {
        if (depth > 6 || value === null || (typeof value !== 'object' && typeof value !== 'function') || seen.has(value)) return
        seen.add(value)
        if (typeof value === 'function' && value.name === 'state') found.push(path)
        for (const key of Reflect.ownKeys(value)) {
          let descriptor
          try { descriptor = Object.getOwnPropertyDescriptor(value, key) } catch { continue }
          if (descriptor !== undefined && 'value' in descriptor) visit(descriptor.value, path + '.' + String(key), depth + 1)
        }
        visit(Object.getPrototypeOf(value), path + '.[[Prototype]]', depth + 1)
      }
      visit(globalThis, 'globalThis', 0)
      visit(ctx, 'ctx', 0)
      const reach = []
      for (const probe of [() => ctx.state.get.caller, () => ctx.state.get.arguments, () => ctx.state.ns('@other'), () => ctx.state.ns('site').ns]) {
        try { reach.push(String(probe())) } catch (e) { reach.push(e.name) }
      }
      return { found, reach }
    } }`)
    expect(run(sandbox).value).toEqual({
      found: [],
      reach: ['TypeError', 'TypeError', 'TypeError', 'undefined'],
    })
  })

  test('bad keys, values, increments and options are clear TypeErrors that write nothing', async () => {
    using sandbox = await sandboxOf(`export default { onMessage(m, ctx) {
      const s = ctx.state
      const errors = []
      for (const attempt of [
        () => s.set('k', 'x'.repeat(300000)),
        () => s.set('k', '€'.repeat(100000)),
        () => s.set('k'.repeat(257), 1),
        () => s.set('', 1),
        () => s.get(42),
        () => s.get({ toString() { return 'k' } }),
        () => s.set('k', undefined),
        () => s.set('k', () => 1),
        () => s.set('k', 1, { ttlMs: 0 }),
        () => s.incr('k', 'one'),
        () => s.lease(),
        () => s.keys('', { limit: 1001 }),
        () => s.ns('a'.repeat(300)),
        () => s.ns('a/b/c/d/e/f/g/h/i'),
        () => s.ns('site/*'),
      ]) {
        try { attempt(); errors.push('passed') } catch (e) { errors.push(e.name + ': ' + e.message) }
      }
      return errors
    } }`)
    const result = run(sandbox)
    expect(result.value).toEqual([
      'TypeError: Cannot set state key "k" as its value has 300002 characters of JSON, more than 262144 bytes',
      'TypeError: Cannot set state key "k" as its value has 300002 bytes of JSON, more than 262144',
      expect.stringMatching(
        /^TypeError: Cannot set state key "k{64}\.\.\." as the key is longer than 256 characters$/,
      ),
      'TypeError: Cannot set state key "" as the key is empty',
      'TypeError: Cannot read state key 42 as a key must be a string, not a number',
      'TypeError: Cannot read state key an object as a key must be a string, not an object',
      'TypeError: Cannot set state key "k" as its value is not JSON (undefined, a function or a symbol): use delete() to remove a key',
      'TypeError: Cannot set state key "k" as its value is not JSON (undefined, a function or a symbol): use delete() to remove a key',
      'TypeError: Cannot set state key "k" as ttlMs must be a whole number of ms from 1 to 315360000000, not 0',
      'TypeError: Cannot increment state key "k" by "one" as the increment must be a finite number',
      'TypeError: Cannot lease state namespace "@fn" as ttlMs must be a whole number of ms from 1 to 315360000000, not undefined (null removes the lease)',
      'TypeError: Cannot list the keys of state namespace "@fn" as \'limit\' must be a whole number from 1 to 1000, not 1001',
      expect.stringMatching(/as the path is longer than 256 characters$/),
      'TypeError: Cannot open state namespace "a/b/c/d/e/f/g/h/i" as the path has more than 8 levels',
      `TypeError: Cannot open state namespace "site/*" as each level is one or more letters, digits, '.', '_' or '-'`,
    ])
    expect(result.state).toEqual([])
  })

  test('writes past the bounds of one call fail it, even when the function catches the error', async () => {
    using sandbox = await sandboxOf(`export default { onMessage(m, ctx) {
      try {
        if (m === 'keys') for (let i = 0; i < 101; i++) ctx.state.set('k' + i, i)
        if (m === 'bytes') for (let i = 0; i < 5; i++) ctx.state.set('k' + i, 'x'.repeat(250000))
        if (m === 'leases') for (let i = 0; i < 101; i++) ctx.state.ns('n' + i).lease(1000)
        if (m === 'same') for (let i = 0; i < 10000; i++) ctx.state.incr('n')
      } catch {}
      return ctx.state.get('n')
    } }`)
    const outcomes = sandbox.invokeBatch(
      'f',
      'onMessage',
      ['keys', 'bytes', 'leases', 'same'].map((m) => ({ args: [m], info: info() })),
      5000,
    )
    expect(outcomes.map((outcome) => (outcome.ok ? outcome.result.value : outcome.message))).toEqual([
      "Function 'f' wrote more than 100 state keys in one invocation",
      "Function 'f' wrote more than 1048576 bytes of state values in one invocation",
      "Function 'f' leased more than 100 state namespaces in one invocation",
      10000,
    ])
    expect(outcomes.map((outcome) => (outcome.ok ? 'ok' : outcome.code))).toEqual([
      'bad_output',
      'bad_output',
      'bad_output',
      'ok',
    ])
  })
})

describe('ctx.state through the worker pool', () => {
  test('workers read committed state from the database file: private namespaces apart, shared ones seen by all', async () => {
    using s = openStore()
    s.state.apply('acme', 'counter', [{ namespace: '@counter', key: 'n', op: 'set', value: '5' }], [], ROOMY)
    s.state.apply(
      'acme',
      'other',
      [{ namespace: '@other', key: 'secret', op: 'set', value: '"s"' }],
      [],
      ROOMY,
    )
    s.state.apply(
      'acme',
      'other',
      [{ namespace: 'site/line1', key: 'shared', op: 'set', value: '7' }],
      [],
      ROOMY,
    )
    s.state.apply(
      'other',
      'counter',
      [{ namespace: 'site/line1', key: 'shared', op: 'set', value: '1000' }],
      [],
      ROOMY,
    )
    await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB, stateDatabase: s.file })
    const READ = `export default { onMessage(m, ctx) {
      return [ctx.state.keys(), ctx.state.get('n') ?? 'none', ctx.state.ns('site/line1').get('shared')]
    } }`
    for (const tenant of ['acme', 'other']) await pool.compile(tenant, 'read', READ, ['onMessage'])
    const read = async (tenant: string, name: string) =>
      (await pool.invoke(tenant, 'read', 'onMessage', [{}], info(name), 1000)).value
    expect(await read('acme', 'counter')).toEqual([['n'], 5, 7])
    expect(await read('acme', 'other')).toEqual([['secret'], 'none', 7])
    expect(await read('other', 'counter')).toEqual([[], 'none', 1000])
    // What the host commits is what the next batch reads.
    s.state.apply('acme', 'counter', [{ namespace: '@counter', key: 'n', op: 'incr', by: 1 }], [], ROOMY)
    expect(await read('acme', 'counter')).toEqual([['n'], 6, 7])
  })

  test("workers honour key and namespace leases against the host's clock", async () => {
    const hourAgo = Date.now() - 3_600_000
    using s = openStore(() => hourAgo)
    const write = (namespace: string, key: string, ttlMs?: number) => ({
      namespace,
      key,
      op: 'set' as const,
      value: '1',
      ...(ttlMs === undefined ? {} : { ttlMs }),
    })
    s.state.apply(
      'acme',
      'fn',
      [
        write('@fn', 'gone', 60_000),
        write('@fn', 'kept', 7_200_000),
        write('site', 'x'),
        write('lapsed', 'x'),
      ],
      [
        { namespace: 'site', ttlMs: 7_200_000 },
        { namespace: 'lapsed', ttlMs: 60_000 },
      ],
      ROOMY,
    )
    await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB, stateDatabase: s.file })
    await pool.compile(
      'acme',
      'read',
      `export default { onMessage(m, ctx) {
        const lapsed = ctx.state.ns('lapsed')
        return [ctx.state.keys(), ctx.state.get('gone') ?? 'none', ctx.state.ns('site').keys(), lapsed.keys(), lapsed.get('x') ?? 'none']
      } }`,
      ['onMessage'],
    )
    expect((await pool.invoke('acme', 'read', 'onMessage', [{}], info(), 1000)).value).toEqual([
      ['kept'],
      'none',
      ['x'],
      [],
      'none',
    ])
  })

  const COUNT = `export default { onMessage(m, ctx) {
    if (m === 'spin') for (;;) {}
    let x = 0
    for (let i = 0; i < 2000; i++) x += i
    return ctx.state.incr('n')
  } }`

  test("a batch cut across messages keeps its calls' reads of each other's writes", async () => {
    using s = openStore()
    await using pool = createWorkerPool({
      size: 1,
      memoryLimitBytes: 32 * MB,
      stateDatabase: s.file,
      maxCallsPerMessage: 4,
    })
    await pool.compile('acme', 'count', COUNT, ['onMessage'])
    const before = pool.messages
    const outcomes = await pool.invokeBatch(
      'acme',
      'count',
      'onMessage',
      Array.from({ length: 50 }, () => ({ args: ['go'], info: info() })),
      1000,
    )
    expect(pool.messages - before).toBeGreaterThanOrEqual(13)
    expect(outcomes.map(valueOrCode)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1))
  })

  test('batches that travel in one message read only their own writes; single invocations none', async () => {
    using s = openStore()
    await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB, stateDatabase: s.file })
    await pool.compile('acme', 'count', COUNT, ['onMessage'])
    const calls = Array.from({ length: 3 }, () => ({ args: ['go'], info: info() }))
    const batches = await Promise.all([
      pool.invokeBatch('acme', 'count', 'onMessage', calls, 1000),
      pool.invokeBatch('acme', 'count', 'onMessage', calls, 1000),
    ])
    expect(batches.map((outcomes) => outcomes.map(valueOrCode))).toEqual([
      [1, 2, 3],
      [1, 2, 3],
    ])
    const singles = await Promise.all(
      Array.from({ length: 4 }, () => pool.invoke('acme', 'count', 'onMessage', ['go'], info(), 1000)),
    )
    expect(singles.map((result) => result.value)).toEqual([1, 1, 1, 1])
  })

  test("a batch whose tenant moves to another worker midway carries its earlier calls' writes along", async () => {
    using s = openStore()
    await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB, stateDatabase: s.file })
    await pool.compile('acme', 'count', COUNT, ['onMessage'])
    const calls = ['go', 'go', 'go', 'spin', 'go', 'go'].map((m) => ({ args: [m], info: info() }))
    const outcomes = await pool.invokeBatch('acme', 'count', 'onMessage', calls, 100)
    // The overrun moved the tenant to an isolation worker, which ran the last two calls.
    expect(pool.placementOf('acme')).toMatchObject({ isolated: true })
    expect(outcomes.map(valueOrCode)).toEqual([1, 2, 3, 'deadline', 4, 5])
  })

  test('a state store that cannot be read fails the call as broken, not as the function', async () => {
    const dir = tempDir()
    dirs.push(dir)
    await using pool = createWorkerPool({
      size: 1,
      memoryLimitBytes: 32 * MB,
      stateDatabase: join(dir, 'missing.db'),
    })
    await pool.compile(
      'acme',
      'read',
      `export default { onMessage(m, ctx) { try { ctx.state.get('k') } catch {} return 1 } }`,
      ['onMessage'],
    )
    const [outcome] = await pool.invokeBatch(
      'acme',
      'read',
      'onMessage',
      [{ args: [{}], info: info() }],
      1000,
    )
    expect(outcome).toEqual({
      ok: false,
      code: 'broken',
      message: "Cannot run function 'read' as the state store could not be read",
    })
  })
})
