import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, test } from 'vitest'
import { createStateStore, StateQuotaError, StateWriteError } from '../../gateway/state-store.ts'
import { createStore } from '../../gateway/store.ts'
import type { StateWrite } from '../../sandbox/index.ts'
import { tempDir } from '../helpers/temp.ts'

const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

const ROOMY = { maxStateKeys: 1000, maxStateBytes: 1024 * 1024 }
const set = (namespace: string, key: string, value: unknown, ttlMs?: number): StateWrite =>
  ttlMs === undefined
    ? { namespace, key, op: 'set', value: JSON.stringify(value) }
    : { namespace, key, op: 'set', value: JSON.stringify(value), ttlMs }
const incr = (namespace: string, key: string, by: number): StateWrite => ({ namespace, key, op: 'incr', by })
const del = (namespace: string, key: string): StateWrite => ({ namespace, key, op: 'delete' })

/** A store on a fresh database with tenants acme and other, and a clock the test moves. */
function open() {
  const dir = tempDir()
  dirs.push(dir)
  const store = createStore({ file: join(dir, 'taureau.db') })
  store.createTenant('acme')
  store.createTenant('other')
  const clock = { at: 1_700_000_000_000 }
  const state = createStateStore(store.db, { now: () => clock.at })
  const value = (tenantId: string, namespace: string, key: string) => {
    const entry = state.get(tenantId, namespace, key)
    return entry === undefined ? undefined : JSON.parse(entry.value)
  }
  const keys = (tenantId: string, namespace: string, prefix = '') =>
    state.list(tenantId, namespace, prefix, 1000).map((entry) => entry.key)
  /** The usage by a full count, to check the running totals against. */
  const counted = (tenantId: string) =>
    store.db
      .prepare('SELECT count(*) AS keys, coalesce(sum(bytes), 0) AS bytes FROM state WHERE tenant_id = ?')
      .get(tenantId)
  return { store, state, clock, value, keys, counted, [Symbol.dispose]: () => store.close() }
}

describe('createStateStore()', () => {
  test('apply() sets, increments and deletes keys and returns the changes for triggers', () => {
    using s = open()
    const changes = s.state.apply(
      'acme',
      'counter',
      [set('@counter', 'a', { x: 1 }), incr('@counter', 'n', 2), incr('site/line1', 'count', 1)],
      [],
      ROOMY,
    )
    expect(changes).toEqual([
      { tenantId: 'acme', namespace: '@counter', key: 'a', op: 'set', value: '{"x":1}' },
      { tenantId: 'acme', namespace: '@counter', key: 'n', op: 'set', value: '2' },
      { tenantId: 'acme', namespace: 'site/line1', key: 'count', op: 'set', value: '1' },
    ])
    s.state.apply(
      'acme',
      'counter',
      [incr('@counter', 'n', 3), del('@counter', 'a'), del('@counter', 'none')],
      [],
      ROOMY,
    )
    expect(s.value('acme', '@counter', 'n')).toBe(5)
    expect(s.value('acme', '@counter', 'a')).toBeUndefined()
    expect(s.keys('acme', '@counter')).toEqual(['n'])
    expect(s.state.namespaces('acme')).toEqual([
      { namespace: '@counter', keys: 1, bytes: 2, leaseExpiresAt: null },
      { namespace: 'site/line1', keys: 1, bytes: 6, leaseExpiresAt: null },
    ])
    expect(s.state.get('other', '@counter', 'n')).toBeUndefined()
    expect(s.state.namespaces('other')).toEqual([])
  })

  test('increments of two functions on a shared key both count', () => {
    using s = open()
    s.state.apply('acme', 'a', [incr('site/line1', 'count', 1)], [], ROOMY)
    s.state.apply('acme', 'b', [incr('site/line1', 'count', 1)], [], ROOMY)
    expect(s.value('acme', 'site/line1', 'count')).toBe(2)
  })

  test('an increment of a value that is no longer a number is refused and writes nothing of the call', () => {
    using s = open()
    s.state.apply('acme', 'a', [set('site', 'k', 'text')], [], ROOMY)
    let error: unknown
    try {
      s.state.apply('acme', 'b', [set('site', 'other', 1), incr('site', 'k', 1)], [], ROOMY)
    } catch (caught) {
      error = caught
    }
    expect(error).toBeInstanceOf(StateWriteError)
    expect(error).toMatchObject({ code: 'conflict', message: expect.stringMatching(/no longer a number/) })
    expect(s.keys('acme', 'site')).toEqual(['k'])
  })

  test('list() pages through a prefix in code point order, above `after`', () => {
    using s = open()
    const names = ['a/1', 'a/2', 'a/3', 'b/1', 'a\uffff', 'a\u{1F600}', 'a']
    s.state.apply(
      'acme',
      null,
      names.map((key) => set('ns', key, 0)),
      [],
      ROOMY,
    )
    // SQLite orders UTF-8 bytes: U+1F600 after U+FFFF, unlike JavaScript's sort().
    expect(s.keys('acme', 'ns')).toEqual(['a', 'a/1', 'a/2', 'a/3', 'a\uffff', 'a\u{1F600}', 'b/1'])
    expect(s.keys('acme', 'ns', 'a/')).toEqual(['a/1', 'a/2', 'a/3'])
    expect(s.state.list('acme', 'ns', 'a/', 2).map((entry) => entry.key)).toEqual(['a/1', 'a/2'])
    expect(s.state.list('acme', 'ns', 'a/', 2, 'a/2').map((entry) => entry.key)).toEqual(['a/3'])
    expect(s.keys('acme', 'ns', 'a\uffff')).toEqual(['a\uffff'])
  })

  test("a key's ttlMs runs from the commit; expired keys are invisible, then swept with a change each", () => {
    using s = open()
    s.state.apply(
      'acme',
      'f',
      [set('@f', 'short', 1, 1000), set('@f', 'long', 2, 60_000), set('@f', 'kept', 3)],
      [],
      ROOMY,
    )
    s.clock.at += 999
    expect(s.keys('acme', '@f')).toEqual(['kept', 'long', 'short'])
    s.clock.at += 1
    expect(s.value('acme', '@f', 'short')).toBeUndefined()
    expect(s.keys('acme', '@f')).toEqual(['kept', 'long'])
    // An increment keeps the key's lease.
    s.state.apply('acme', 'f', [incr('@f', 'long', 1)], [], ROOMY)
    expect(s.state.get('acme', '@f', 'long')?.expiresAt).toBe(1_700_000_060_000)
    expect(s.state.usage('acme').keys).toBe(3)
    expect(s.state.sweep()).toEqual([
      { tenantId: 'acme', namespace: '@f', key: 'short', op: 'delete', value: null },
    ])
    expect(s.state.usage('acme')).toEqual(s.counted('acme'))
    s.clock.at += 60_000
    expect(s.state.sweep(s.clock.at, 10).map((change) => change.key)).toEqual(['long'])
    expect(s.state.sweep()).toEqual([])
  })

  test('a namespace lease: renewed by lease(), removed by lease(null); when it lapses all its keys go', () => {
    using s = open()
    s.state.apply(
      'acme',
      'f',
      [set('site/a', 'x', 1), set('site/a', 'y', 2), set('site/b', 'z', 3)],
      [{ namespace: 'site/a', ttlMs: 1000 }],
      ROOMY,
    )
    s.clock.at += 900
    s.state.apply('acme', 'f', [], [{ namespace: 'site/a', ttlMs: 1000 }], ROOMY)
    s.clock.at += 900
    expect(s.keys('acme', 'site/a')).toEqual(['x', 'y'])
    expect(s.state.namespaces('acme')[0]).toMatchObject({
      namespace: 'site/a',
      leaseExpiresAt: 1_700_000_001_900,
    })
    s.clock.at += 100
    expect(s.keys('acme', 'site/a')).toEqual([])
    expect(s.value('acme', 'site/a', 'x')).toBeUndefined()
    expect(s.value('acme', 'site/b', 'z')).toBe(3)
    // A bounded sweep: one key now, the rest and the lease next time.
    expect(s.state.sweep(s.clock.at, 1).map((change) => change.key)).toEqual(['x'])
    expect(s.state.sweep().map((change) => change.key)).toEqual(['y'])
    expect(s.state.namespaces('acme').map((namespace) => namespace.namespace)).toEqual(['site/b'])

    s.state.apply('acme', 'f', [set('site/c', 'k', 1)], [{ namespace: 'site/c', ttlMs: 1000 }], ROOMY)
    s.state.apply('acme', 'f', [], [{ namespace: 'site/c', ttlMs: null }], ROOMY)
    s.clock.at += 5000
    expect(s.value('acme', 'site/c', 'k')).toBe(1)
  })

  test('a write to a namespace whose lease lapsed first clears it, with a delete change per key', () => {
    using s = open()
    s.state.apply('acme', 'f', [set('site', 'old', 1)], [{ namespace: 'site', ttlMs: 10 }], ROOMY)
    s.clock.at += 10
    const changes = s.state.apply('acme', 'f', [set('site', 'new', 2)], [], ROOMY)
    expect(changes.map((change) => [change.key, change.op])).toEqual([
      ['old', 'delete'],
      ['new', 'set'],
    ])
    s.clock.at += 1_000_000
    expect(s.keys('acme', 'site')).toEqual(['new'])
  })

  test('quotas: a call that goes over refuses all its writes, inside the caller transaction; freeing space passes', () => {
    using s = open()
    const quotas = { maxStateKeys: 2, maxStateBytes: 100 }
    s.state.apply('acme', 'f', [set('@f', 'a', 1)], [], quotas)
    let error: unknown
    s.store.db.transaction(() => {
      s.store.createDevice('acme', 'd1', 'hash')
      try {
        s.state.apply('acme', 'f', [set('@f', 'b', 1), set('@f', 'c', 1)], [], quotas)
      } catch (caught) {
        error = caught
      }
    })()
    expect(error).toBeInstanceOf(StateQuotaError)
    expect((error as StateQuotaError).message).toBe(
      "Cannot write function state as tenant 'acme' would keep 3 keys, over its maxStateKeys quota of 2",
    )
    expect((error as StateQuotaError).code).toBe('limit_reached')
    // The caller's own writes in its transaction stand; the call's do not.
    expect(s.store.getDevice('acme', 'd1')).toBeDefined()
    expect(s.keys('acme', '@f')).toEqual(['a'])
    expect(() => s.state.apply('acme', 'f', [set('@f', 'big', 'x'.repeat(200))], [], quotas)).toThrow(
      /would keep \d+ bytes, over its maxStateBytes quota of 100/,
    )
    // Over a quota lowered below what is stored, writes that free space still pass.
    s.state.apply('acme', 'f', [set('@f', 'b', 1)], [], quotas)
    const lowered = { maxStateKeys: 1, maxStateBytes: 100 }
    expect(() => s.state.apply('acme', 'f', [set('@f', 'c', 1)], [], lowered)).toThrow(StateQuotaError)
    s.state.apply('acme', 'f', [del('@f', 'a')], [], lowered)
    expect(s.state.usage('acme')).toEqual({ keys: 1, bytes: 2 })
  })

  test('the running usage equals a full count through rollbacks, sweeps and a deleted tenant', () => {
    using s = open()
    s.state.apply('acme', 'f', [set('@f', 'a', 'x'.repeat(50)), set('site', 'b', 1, 10)], [], ROOMY)
    try {
      s.store.db.transaction(() => {
        s.state.apply('acme', 'f', [set('@f', 'a', 1), set('@f', 'c', 2)], [], ROOMY)
        throw new Error('the caller rolls back')
      })()
    } catch {}
    expect(s.state.usage('acme')).toEqual(s.counted('acme'))
    s.clock.at += 10
    s.state.sweep()
    s.state.apply('acme', 'f', [set('@f', 'a', 'short')], [], ROOMY)
    expect(s.state.usage('acme')).toEqual(s.counted('acme'))
    s.store.deleteTenant('acme')
    s.store.createTenant('acme')
    expect(s.state.usage('acme')).toEqual({ keys: 0, bytes: 0 })
    expect(s.state.namespaces('acme')).toEqual([])
  })

  test('apply() refuses writes a function may not make, naming why, and writes nothing', () => {
    using s = open()
    const refusals: Array<[string | null, StateWrite, RegExp]> = [
      ['f', set('@g', 'k', 1), /may only write its own private namespace/],
      [null, set('@Not A Name', 'k', 1), /a private namespace is '@' and a function's name/],
      ['f', set('../etc', 'k', 1), /'\.' and '\.\.' levels are refused/],
      ['f', set('a//b', 'k', 1), /each level is one or more letters/],
      ['f', set('a/b/c/d/e/f/g/h/i', 'k', 1), /more than 8 levels/],
      ['f', set('@f', '', 1), /the key is empty/],
      ['f', set('@f', 'k'.repeat(257), 1), /longer than 256 characters/],
      ['f', set('@f', '\ud800', 1), /lone surrogate/],
      ['f', { namespace: '@f', key: 'k', op: 'set', value: '{not json' }, /not JSON text/],
      ['f', set('@f', 'k', 'x'.repeat(300_000)), /bytes of JSON, more than 262144/],
      ['f', set('@f', 'k', 1, 0), /ttlMs must be a whole number/],
      ['f', { namespace: '@f', key: 'k', op: 'incr', by: Number.NaN }, /not a finite number/],
      [
        'f',
        { namespace: '@f', key: 'k', op: 'drop' } as unknown as StateWrite,
        /not 'set', 'delete' or 'incr'/,
      ],
    ]
    for (const [functionName, write, reason] of refusals) {
      expect(() => s.state.apply('acme', functionName, [write], [], ROOMY), JSON.stringify(write)).toThrow(
        reason,
      )
    }
    expect(() => s.state.apply('acme', 'f', [], [{ namespace: 'site', ttlMs: -1 }], ROOMY)).toThrow(/ttlMs/)
    const many = Array.from({ length: 1001 }, (_, i) => set('@f', `k${i}`, i))
    expect(() => s.state.apply('acme', 'f', many, [], ROOMY)).toThrow(/at most 1000 writes/)
    expect(s.state.namespaces('acme')).toEqual([])
  })

  test('put() and delete() are API edits: any private namespace, changes returned', () => {
    using s = open()
    expect(s.state.put('acme', '@counter', 'n', '41', undefined, ROOMY)).toEqual([
      { tenantId: 'acme', namespace: '@counter', key: 'n', op: 'set', value: '41' },
    ])
    s.state.put('acme', '@counter', 't', '1', 5, ROOMY)
    expect(s.state.get('acme', '@counter', 't')).toMatchObject({ expiresAt: 1_700_000_000_005, bytes: 2 })
    expect(s.state.delete('acme', '@counter', 'n')).toHaveLength(1)
    expect(s.state.delete('acme', '@counter', 'n')).toEqual([])
  })
})
