import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { Hono } from 'hono'
import { afterEach, describe, expect, test } from 'vitest'
import { type Env, hashToken } from '../../gateway/api.ts'
import { mountStateRoutes } from '../../gateway/api-state.ts'
import type { StateChange } from '../../gateway/state-store.ts'
import { createStore } from '../../gateway/store.ts'
import { startGateway, tempDir } from '../helpers/gateway.ts'

const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

const value = (namespace: string, key: string) =>
  `/tenants/acme/state/value?namespace=${encodeURIComponent(namespace)}&key=${encodeURIComponent(key)}`

describe('function state API', () => {
  test('PUT, GET and DELETE a value; namespaces with their usage; keys in pages', async () => {
    await using gw = await startGateway()
    await gw.provision('acme', [], { maxStateKeys: 100 })
    const put = await gw.api('PUT', value('site/line1', 'count'), { value: { n: 1 } })
    expect(put.status).toBe(200)
    expect(put.body).toMatchObject({
      namespace: 'site/line1',
      key: 'count',
      value: { n: 1 },
      bytes: 12,
      expiresAt: null,
    })
    expect((await gw.api('GET', value('site/line1', 'count'))).body.value).toEqual({ n: 1 })
    const leased = await gw.api('PUT', value('@counter', 'n'), { value: 41, ttlMs: 60_000 })
    expect(Date.parse(leased.body.expiresAt) - Date.now()).toBeGreaterThan(50_000)
    for (const key of ['a1', 'a2', 'a3', 'b1']) await gw.api('PUT', value('@counter', key), { value: key })

    const overview = await gw.api('GET', '/tenants/acme/state')
    expect(overview.body).toEqual({
      usage: { keys: 6, bytes: 12 + 3 + 4 * 6, maxKeys: 100, maxBytes: 16 * 1024 * 1024 },
      namespaces: [
        { namespace: '@counter', keys: 5, bytes: 3 + 4 * 6, leaseExpiresAt: null },
        { namespace: 'site/line1', keys: 1, bytes: 12, leaseExpiresAt: null },
      ],
    })
    const page = await gw.api('GET', '/tenants/acme/state/keys?namespace=%40counter&prefix=a&limit=2')
    expect(page.body.keys.map((entry: { key: string }) => entry.key)).toEqual(['a1', 'a2'])
    expect(page.body.next).toBe('a2')
    const rest = await gw.api(
      'GET',
      '/tenants/acme/state/keys?namespace=%40counter&prefix=a&limit=2&after=a2',
    )
    expect(rest.body).toMatchObject({ keys: [{ key: 'a3' }], next: null })

    expect((await gw.api('DELETE', value('@counter', 'n'))).status).toBe(204)
    const missing = await gw.api('GET', value('@counter', 'n'))
    expect(missing.status).toBe(404)
    expect(missing.body.message).toBe("Cannot find state key 'n' in namespace '@counter' of tenant 'acme'")
    expect((await gw.api('DELETE', value('@counter', 'n'))).status).toBe(404)
  })

  test('bad input gets 400 naming the field and changes nothing', async () => {
    await using gw = await startGateway()
    await gw.provision('acme', [])
    const cases: Array<[string, string, unknown, string]> = [
      ['GET', '/tenants/acme/state/value?key=k', undefined, 'namespace'],
      ['GET', value('../up', 'k'), undefined, 'namespace'],
      ['GET', value('@Bad Name', 'k'), undefined, 'namespace'],
      ['GET', value('site', ''), undefined, 'key'],
      ['GET', value('site', 'k'.repeat(257)), undefined, 'key'],
      ['GET', '/tenants/acme/state/keys?namespace=site&limit=0', undefined, 'limit'],
      ['GET', '/tenants/acme/state/keys?namespace=site&limit=1001', undefined, 'limit'],
      ['GET', `/tenants/acme/state/keys?namespace=site&prefix=${'p'.repeat(257)}`, undefined, 'prefix'],
      ['PUT', value('site', 'k'), {}, 'value'],
      ['PUT', value('site', 'k'), { value: 1, ttlMs: 0 }, 'ttlMs'],
      ['PUT', value('site', 'k'), { value: 1, ttlMs: 1.5 }, 'ttlMs'],
      ['PUT', value('site', 'k'), { value: 1, extra: true }, '(body)'],
      ['PUT', value('site', 'k'), { value: 'x'.repeat(300_000) }, 'value'],
      ['PUT', value('site/a/b/c/d/e/f/g/h', 'k'), { value: 1 }, 'namespace'],
    ]
    for (const [method, path, body, field] of cases) {
      const response = await gw.api(method, path, body)
      expect(response.status, `${method} ${path.slice(0, 80)}`).toBe(400)
      expect(response.body).toMatchObject({ code: 'invalid_input', field })
      expect(response.body.message).toMatch(/^Cannot accept the request as/)
    }
    const notJson = await gw.api('PUT', value('site', 'k'), '{"value": ')
    expect(notJson.status).toBe(400)
    expect((await gw.api('GET', '/tenants/acme/state')).body.namespaces).toEqual([])
  })

  test("a write over the tenant's quota gets 429 and writes nothing; other tenants' tokens get 403", async () => {
    await using gw = await startGateway()
    await gw.provision('acme', [], { maxStateKeys: 1 })
    await gw.provision('other', [])
    expect((await gw.api('PUT', value('site', 'a'), { value: 1 })).status).toBe(200)
    const over = await gw.api('PUT', value('site', 'b'), { value: 1 })
    expect(over.status).toBe(429)
    expect(over.body).toEqual({
      code: 'limit_reached',
      message:
        "Cannot write function state as tenant 'acme' would keep 2 keys, over its maxStateKeys quota of 1",
    })
    // Replacing a key does not add one.
    expect((await gw.api('PUT', value('site', 'a'), { value: 2 })).status).toBe(200)
    expect((await gw.api('GET', '/tenants/acme/state')).body.usage.keys).toBe(1)
    expect((await gw.api('GET', '/tenants/other/state')).body.namespaces).toEqual([])
    gw.store.createToken(hashToken('tau_other_token'), 'other', 'other token')
    const forbidden = await gw.api('GET', value('site', 'a'), undefined, 'tau_other_token')
    expect(forbidden.status).toBe(403)
    expect((await gw.api('GET', '/tenants/other/state', undefined, 'tau_other_token')).status).toBe(200)
  })

  test('edits through the API tell onChanges what changed, in their transaction, and run what it returns after', async () => {
    const dir = tempDir()
    dirs.push(dir)
    using store = createStore({ file: join(dir, 'taureau.db') })
    store.createTenant('acme')
    const heard: Array<[string, StateChange[]]> = []
    const app = new Hono<Env>()
    mountStateRoutes(app, {
      db: store.db,
      tenantParam: (c) => c.req.param('tenant') ?? '',
      quotasOf: () => ({ maxStateKeys: 10, maxStateBytes: 1000 }),
      onChanges: (tenantId, changes) => {
        expect(store.db.inTransaction).toBe(true)
        heard.push([tenantId, changes])
        return () => heard.push(['after', []])
      },
    })
    const request = (method: string, body?: unknown) =>
      app.request(value('site', 'k'), {
        method,
        ...(body === undefined
          ? {}
          : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
      })
    expect((await request('PUT', { value: [1, 2] })).status).toBe(200)
    expect((await request('DELETE')).status).toBe(204)
    expect(heard).toEqual([
      ['acme', [{ tenantId: 'acme', namespace: 'site', key: 'k', op: 'set', value: '[1,2]' }]],
      ['after', []],
      ['acme', [{ tenantId: 'acme', namespace: 'site', key: 'k', op: 'delete', value: null }]],
      ['after', []],
    ])
  })
})
