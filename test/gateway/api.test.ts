import { describe, expect, test } from 'vitest'
import { startGateway } from '../helpers/gateway.ts'

describe('management API', () => {
  test('requests without the right bearer token get 401 with a JSON error', async () => {
    await using gw = await startGateway()
    const none = await fetch(`${gw.addresses.httpUrl}/api/v1/tenants`)
    expect(none.status).toBe(401)
    expect(await none.json()).toMatchObject({ code: 'unauthorized' })
    const wrong = await gw.api('GET', '/tenants', undefined, 'tau_admin_wrong')
    expect(wrong.status).toBe(401)
  })

  test('/healthz answers without a token and unknown paths get a JSON 404', async () => {
    await using gw = await startGateway()
    expect(await (await fetch(`${gw.addresses.httpUrl}/healthz`)).json()).toEqual({ status: 'ok' })
    const missing = await fetch(`${gw.addresses.httpUrl}/nope`)
    expect(missing.status).toBe(404)
    expect(await missing.json()).toMatchObject({ code: 'not_found' })
  })

  test('tenants: create, list, show, delete', async () => {
    await using gw = await startGateway()
    const created = await gw.api('POST', '/tenants', { id: 'acme', quotas: { maxConnections: 5 } })
    expect(created.status).toBe(201)
    expect(created.body.tenant).toMatchObject({
      id: 'acme',
      quotas: { maxConnections: 5, maxMessagesPerSec: 1000 },
    })
    expect((await gw.api('POST', '/tenants', { id: 'acme' })).status).toBe(409)
    expect((await gw.api('GET', '/tenants')).body.tenants.map((t: { id: string }) => t.id)).toEqual(['acme'])
    expect((await gw.api('GET', '/tenants/acme')).body.tenant.quotaOverrides).toEqual({ maxConnections: 5 })
    expect((await gw.api('DELETE', '/tenants/acme')).status).toBe(204)
    expect((await gw.api('GET', '/tenants/acme')).status).toBe(404)
    expect((await gw.api('DELETE', '/tenants/acme')).status).toBe(404)
  })

  test('a bad body gets 400 naming the field, and changes nothing', async () => {
    await using gw = await startGateway()
    const cases: Array<[unknown, string]> = [
      [{ id: 'Bad Name' }, 'id'],
      [{}, 'id'],
      [{ id: 'ok', quotas: { maxConnections: -1 } }, 'quotas.maxConnections'],
      [{ id: 'ok', quotas: { nope: 1 } }, 'quotas'],
      [{ id: 'ok', extra: true }, '(body)'],
      [[1, 2], '(body)'],
    ]
    for (const [body, field] of cases) {
      const response = await gw.api('POST', '/tenants', body)
      expect(response.status, JSON.stringify(body)).toBe(400)
      expect(response.body).toMatchObject({ code: 'invalid_input', field })
      expect(response.body.message).toMatch(/^Cannot accept the request as/)
    }
    const notJson = await gw.api('POST', '/tenants', '{"id": ')
    expect(notJson.status).toBe(400)
    expect(notJson.body.message).toMatch(/not valid JSON/)
    expect((await gw.api('GET', '/tenants')).body.tenants).toEqual([])
  })

  test('a body over the limit gets 413', async () => {
    await using gw = await startGateway({ http: { maxBodyBytes: 1024 } })
    const response = await gw.api('POST', '/tenants', { id: 'acme', pad: 'x'.repeat(4096) })
    expect(response.status).toBe(413)
    expect(response.body.code).toBe('limit_reached')
  })

  test('devices: add shows the secret once; list, show, rotate, delete', async () => {
    await using gw = await startGateway()
    await gw.api('POST', '/tenants', { id: 'acme' })
    const added = await gw.api('POST', '/tenants/acme/devices', { id: 'sensor-1' })
    expect(added.status).toBe(201)
    expect(added.body.username).toBe('sensor-1@acme')
    expect(added.body.secret).toMatch(/^[A-Za-z0-9_-]{32}$/)
    expect((await gw.api('POST', '/tenants/acme/devices', { id: 'sensor-1' })).status).toBe(409)
    const listed = await gw.api('GET', '/tenants/acme/devices')
    expect(listed.body.devices).toHaveLength(1)
    expect(JSON.stringify(listed.body)).not.toContain(added.body.secret)
    expect(JSON.stringify(listed.body)).not.toContain('argon2')
    const shown = await gw.api('GET', '/tenants/acme/devices/sensor-1')
    expect(shown.body.device).toMatchObject({ id: 'sensor-1', connections: 0, lastSeenAt: null })
    const rotated = await gw.api('POST', '/tenants/acme/devices/sensor-1/rotate')
    expect(rotated.body.secret).not.toBe(added.body.secret)
    expect(rotated.body.device.rotatedAt).not.toBeNull()
    expect((await gw.api('DELETE', '/tenants/acme/devices/sensor-1')).status).toBe(204)
    expect((await gw.api('GET', '/tenants/acme/devices/sensor-1')).status).toBe(404)
    expect((await gw.api('GET', '/tenants/ghost/devices')).status).toBe(404)
    expect((await gw.api('POST', '/tenants/acme/devices', { id: 'a@b' })).body.field).toBe('id')
  })

  test('the device secret is stored only as an Argon2id hash', async () => {
    await using gw = await startGateway()
    const secrets = await gw.provision('acme', ['d'])
    const row = gw.store.db.prepare('SELECT secret_hash FROM devices').get() as { secret_hash: string }
    expect(row.secret_hash).toMatch(/^\$argon2id\$/)
    expect(row.secret_hash).not.toContain(secrets.d)
  })

  test('quotas: read effective values, set overrides, refuse bad ones', async () => {
    await using gw = await startGateway()
    await gw.api('POST', '/tenants', { id: 'acme' })
    const put = await gw.api('PUT', '/tenants/acme/quotas', { maxPayloadBytes: 1024 })
    expect(put.status).toBe(200)
    expect(put.body.quotas.maxPayloadBytes).toBe(1024)
    expect(put.body.quotaOverrides).toEqual({ maxPayloadBytes: 1024 })
    const bad = await gw.api('PUT', '/tenants/acme/quotas', { maxPayloadBytes: 'big' })
    expect(bad.status).toBe(400)
    expect(bad.body.field).toBe('maxPayloadBytes')
    expect((await gw.api('GET', '/tenants/acme/quotas')).body.quotas.maxPayloadBytes).toBe(1024)
  })

  test('ACL rules: replace and read; an invalid filter is refused naming the rule', async () => {
    await using gw = await startGateway()
    await gw.provision('acme', ['d'])
    const rules = [
      { action: 'publish', filter: 'cmd/#', permission: 'deny' },
      { action: 'all', filter: '+/debug', permission: 'allow' },
    ]
    expect((await gw.api('PUT', '/tenants/acme/acl', { rules })).body.rules).toEqual(rules)
    expect((await gw.api('GET', '/tenants/acme/acl')).body.rules).toEqual(rules)
    const bad = await gw.api('PUT', '/tenants/acme/acl', {
      rules: [{ action: 'publish', filter: 'a/#/b', permission: 'deny' }],
    })
    expect(bad.status).toBe(400)
    expect(bad.body.field).toBe('rules.0.filter')
    const reserved = await gw.api('PUT', '/tenants/acme/devices/d/acl', {
      rules: [{ action: 'all', filter: '$SYS/#', permission: 'allow' }],
    })
    expect(reserved.status).toBe(400)
    expect((await gw.api('GET', '/tenants/acme/acl')).body.rules).toEqual(rules)
    expect((await gw.api('GET', '/tenants/acme/devices/d/acl')).body.rules).toEqual([])
  })

  test('/metrics needs the admin token and exposes per-tenant series in Prometheus text format', async () => {
    await using gw = await startGateway()
    await gw.provision('acme', [])
    expect((await fetch(`${gw.addresses.httpUrl}/metrics`)).status).toBe(401)
    const tenantToken = await fetch(`${gw.addresses.httpUrl}/metrics`, {
      headers: { authorization: 'Bearer nope' },
    })
    expect(tenantToken.status).toBe(401)
    const response = await fetch(`${gw.addresses.httpUrl}/metrics`, {
      headers: { authorization: `Bearer ${gw.adminToken}` },
    })
    expect(response.headers.get('content-type')).toMatch(/text\/plain/)
    const text = await response.text()
    expect(text).toMatch(/taureau_connections\{tenant="acme"\} 0/)
    expect(text).toMatch(/taureau_messages_received_total\{tenant="acme"\} 0/)
    expect(text).toMatch(/taureau_process_cpu_seconds_total/)
  })
})

test('http.publicMetrics serves /metrics without a token', async () => {
  await using gw = await startGateway({ http: { publicMetrics: true } })
  expect((await fetch(`${gw.addresses.httpUrl}/metrics`)).status).toBe(200)
})
