import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import mqtt from 'mqtt'
import { describe, expect, test } from 'vitest'
import { startGateway, type TestGateway, tempDir, until } from '../helpers/gateway.ts'

/** A browser-like client: keeps the session cookie, sends the CSRF token on changes. */
function browser(gw: TestGateway, base = `${gw.addresses.httpUrl}`) {
  let cookie: string | undefined
  let csrf: string | undefined
  const call = async (
    method: string,
    path: string,
    body?: unknown,
    options: { csrf?: boolean; headers?: Record<string, string> } = {},
  ) => {
    const headers: Record<string, string> = { ...options.headers }
    if (body !== undefined) headers['content-type'] ??= 'application/json'
    if (cookie !== undefined) headers.cookie = cookie
    if (csrf !== undefined && options.csrf !== false && method !== 'GET') headers['x-csrf-token'] = csrf
    const response = await fetch(`${base}${path}`, {
      method,
      headers,
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    })
    const setCookie = response.headers.get('set-cookie')
    if (setCookie !== null) {
      const value = /^taureau_session=([^;]*)/.exec(setCookie)?.[1]
      cookie = value === undefined || value === '' ? undefined : `taureau_session=${value}`
    }
    const text = await response.text()
    const parsed =
      text !== '' && (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text
    if (parsed?.csrfToken !== undefined) csrf = parsed.csrfToken
    return { status: response.status, body: parsed, headers: response.headers }
  }
  return {
    call,
    signIn: (body: unknown) => call('POST', '/api/v1/session', body),
    get cookie() {
      return cookie
    },
    forgetCsrf() {
      csrf = undefined
    },
  }
}

describe('sessions, users and tokens', () => {
  test('signing in with the admin token sets an HttpOnly SameSite=Strict cookie; changes need the CSRF token', async () => {
    await using gw = await startGateway()
    const b = browser(gw)
    expect((await b.call('GET', '/api/v1/session')).body).toEqual({ session: null })
    const signedIn = await b.signIn({ token: gw.adminToken })
    expect(signedIn.status).toBe(200)
    expect(signedIn.body.session).toMatchObject({ user: 'admin', kind: 'admin', tenant: null, via: 'token' })
    expect(signedIn.body.gateway).toMatchObject({
      mqttPort: gw.addresses.mqttPort,
      wsPort: gw.addresses.wsPort,
    })
    const setCookie = signedIn.headers.get('set-cookie') ?? ''
    expect(setCookie).toMatch(/HttpOnly/)
    expect(setCookie).toMatch(/SameSite=Strict/)
    expect(setCookie).toMatch(/Path=\//)
    expect(setCookie).not.toMatch(/Secure/)
    expect(signedIn.headers.get('cache-control')).toBe('no-store')

    expect((await b.call('GET', '/api/v1/session')).body.session.user).toBe('admin')
    expect((await b.call('GET', '/api/v1/tenants')).status).toBe(200)
    // A change with the cookie but without the CSRF token is refused and changes nothing.
    const forged = await b.call('POST', '/api/v1/tenants', { id: 'acme' }, { csrf: false })
    expect(forged.status).toBe(403)
    expect(forged.body.message).toMatch(/CSRF/)
    expect((await gw.api('GET', '/tenants')).body.tenants).toEqual([])
    expect(
      (
        await b.call(
          'POST',
          '/api/v1/tenants',
          { id: 'acme' },
          { csrf: false, headers: { 'x-csrf-token': 'x' } },
        )
      ).status,
    ).toBe(403)
    expect((await b.call('POST', '/api/v1/tenants', { id: 'acme' })).status).toBe(201)
    // Bearer tokens are not ambient credentials: no CSRF token needed.
    expect((await gw.api('POST', '/tenants', { id: 'beta' })).status).toBe(201)

    expect((await b.call('DELETE', '/api/v1/session', undefined, { csrf: false })).status).toBe(403)
    expect((await b.call('DELETE', '/api/v1/session')).status).toBe(204)
    expect((await b.call('GET', '/api/v1/tenants')).status).toBe(401)
  })

  test('users sign in with their password; a tenant user sees and changes only their tenant', async () => {
    await using gw = await startGateway()
    await gw.api('POST', '/tenants', { id: 'acme' })
    await gw.api('POST', '/tenants', { id: 'other' })
    const short = await gw.api('POST', '/users', { name: 'ann', password: 'short', tenant: 'acme' })
    expect(short.status).toBe(400)
    expect(short.body.field).toBe('password')
    expect(
      (await gw.api('POST', '/users', { name: 'ann', password: 'correct horse', tenant: 'nope' })).status,
    ).toBe(404)
    const created = await gw.api('POST', '/users', { name: 'ann', password: 'correct horse', tenant: 'acme' })
    expect(created.status).toBe(201)
    expect(created.body.user).toMatchObject({ name: 'ann', tenant: 'acme' })
    expect((await gw.api('POST', '/users', { name: 'ann', password: 'correct horse' })).status).toBe(409)

    const wrong = await browser(gw).signIn({ username: 'ann', password: 'wrong horse' })
    expect(wrong.status).toBe(401)
    expect(wrong.body.message).toMatch(/user name or password is wrong/)
    expect((await browser(gw).signIn({ username: 'nobody', password: 'correct horse' })).status).toBe(401)

    const ann = browser(gw)
    const session = await ann.signIn({ username: 'ann', password: 'correct horse' })
    expect(session.body.session).toMatchObject({
      user: 'ann',
      kind: 'tenant',
      tenant: 'acme',
      via: 'password',
    })
    expect((await ann.call('GET', '/api/v1/tenants')).body.tenants.map((t: { id: string }) => t.id)).toEqual([
      'acme',
    ])
    expect((await ann.call('GET', '/api/v1/tenants/other/devices')).status).toBe(403)
    expect((await ann.call('POST', '/api/v1/tenants/other/devices', { id: 'd1' })).status).toBe(403)
    expect((await ann.call('POST', '/api/v1/tenants', { id: 'mine' })).status).toBe(403)
    expect((await ann.call('GET', '/api/v1/users')).status).toBe(403)
    expect((await ann.call('GET', '/api/v1/uplink')).status).toBe(403)
    expect((await ann.call('GET', '/api/v1/stats')).status).toBe(403)
    expect((await ann.call('POST', '/api/v1/tenants/acme/devices', { id: 'd1' })).status).toBe(201)
    expect((await gw.api('GET', '/tenants/other/devices')).body.devices).toEqual([])

    // A new password ends the user's sessions; deleting the user ends them too.
    expect((await ann.call('PUT', '/api/v1/users/ann/password', { password: 'battery staple' })).status).toBe(
      200,
    )
    expect((await ann.call('GET', '/api/v1/tenants')).status).toBe(401)
    const again = browser(gw)
    expect((await again.signIn({ username: 'ann', password: 'battery staple' })).status).toBe(200)
    expect((await gw.api('DELETE', '/users/ann')).status).toBe(204)
    expect((await again.call('GET', '/api/v1/session')).body.session).toBeNull()
    expect((await gw.api('GET', '/users')).body.users).toEqual([])
  })

  test('sign-in takes only JSON from this origin, and a session cookie is Secure behind a trusted TLS proxy', async () => {
    await using gw = await startGateway({ http: { trustProxy: true } })
    const url = `${gw.addresses.httpUrl}/api/v1/session`
    const form = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `token=${gw.adminToken}`,
    })
    expect(form.status).toBe(400)
    expect(form.headers.get('set-cookie')).toBeNull()
    const crossSite = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: 'https://evil.example' },
      body: JSON.stringify({ token: gw.adminToken }),
    })
    expect(crossSite.status).toBe(403)
    const proxied = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-proto': 'https' },
      body: JSON.stringify({ token: gw.adminToken }),
    })
    expect(proxied.status).toBe(200)
    expect(proxied.headers.get('set-cookie')).toMatch(/; Secure/)
  })

  test('API tokens: made once, scoped to a tenant, listed, revoked; the admin token cannot be revoked here', async () => {
    await using gw = await startGateway()
    await gw.api('POST', '/tenants', { id: 'acme' })
    await gw.api('POST', '/tenants', { id: 'other' })
    const made = await gw.api('POST', '/tokens', { label: 'ci', tenant: 'acme' })
    expect(made.status).toBe(201)
    expect(made.body.secret).toMatch(/^tau_/)
    const secret = made.body.secret as string
    expect(
      (await gw.api('GET', '/tenants', undefined, secret)).body.tenants.map((t: { id: string }) => t.id),
    ).toEqual(['acme'])
    // A tenant token lists and makes only its tenant's tokens.
    expect((await gw.api('POST', '/tokens', { label: 'x' }, secret)).status).toBe(403)
    expect((await gw.api('POST', '/tokens', { label: 'x', tenant: 'other' }, secret)).status).toBe(403)
    const own = await gw.api('POST', '/tokens', { label: 'own', tenant: 'acme' }, secret)
    expect(own.status).toBe(201)
    const listed = (await gw.api('GET', '/tokens', undefined, secret)).body.tokens
    expect(listed.map((t: { label: string }) => t.label)).toEqual(['ci', 'own'])
    const all = (await gw.api('GET', '/tokens')).body.tokens as Array<{ id: number; label: string }>
    expect(all.map((t) => t.label)).toEqual(['admin', 'ci', 'own'])
    const adminId = all.find((t) => t.label === 'admin')?.id
    expect((await gw.api('DELETE', `/tokens/${adminId}`)).status).toBe(409)
    expect((await gw.api('DELETE', `/tokens/${adminId}`, undefined, secret)).status).toBe(404)

    // A session made from a token ends when the token is revoked.
    const b = browser(gw)
    expect((await b.signIn({ token: secret })).body.session).toMatchObject({ kind: 'tenant', tenant: 'acme' })
    expect((await gw.api('DELETE', `/tokens/${made.body.token.id}`)).status).toBe(204)
    expect((await gw.api('GET', '/tenants', undefined, secret)).status).toBe(401)
    expect((await b.call('GET', '/api/v1/session')).body.session).toBeNull()
    expect((await browser(gw).signIn({ token: secret })).status).toBe(401)
  })

  test('live stats count messages and invocations per tenant and for the gateway', async () => {
    await using gw = await startGateway()
    const secrets = await gw.provision('acme', ['d1'])
    const deployed = await gw.api('POST', '/tenants/acme/functions', {
      name: 'double',
      source: 'export default { onMessage(msg) { return { v: msg.payload.v * 2 } } }',
      triggers: [{ topic: 'in/#' }],
      output: 'out/double',
    })
    expect(deployed.status).toBe(201)
    const device = await mqtt.connectAsync(gw.mqttUrl, {
      username: 'd1@acme',
      password: secrets.d1 as string,
      reconnectPeriod: 0,
    })
    try {
      const since = Date.now()
      for (let i = 0; i < 5; i++) await device.publishAsync('in/x', JSON.stringify({ v: i }), { qos: 1 })
      await until(async () => {
        const samples = (await gw.api('GET', `/tenants/acme/stats?since=${since}`)).body.samples as Array<{
          invocations: number
        }>
        return samples.reduce((sum, s) => sum + s.invocations, 0) > 0
      })
      const tenant = (await gw.api('GET', `/tenants/acme/stats?since=${since}`)).body
      expect(tenant.intervalMs).toBe(1000)
      const sum = (key: string, list: Array<Record<string, number>>) =>
        list.reduce((total, s) => total + (s[key] ?? 0), 0)
      await until(
        async () =>
          sum('invocations', (await gw.api('GET', `/tenants/acme/stats?since=${since}`)).body.samples) >= 4.5,
      )
      const samples = (await gw.api('GET', `/tenants/acme/stats?since=${since}`)).body.samples
      // Rates per second over ~1 s intervals: the 5 messages add up to about 5.
      expect(sum('messagesIn', samples)).toBeGreaterThanOrEqual(4.5)
      expect(samples.some((s: { p50Ms: number | null }) => s.p50Ms !== null && s.p50Ms >= 0)).toBe(true)
      expect(samples.at(-1).connections).toBe(1)
      const gateway = (await gw.api('GET', `/stats?since=${since}`)).body.samples
      expect(sum('invocations', gateway)).toBeGreaterThanOrEqual(4.5)
      const bad = await gw.api('GET', '/stats?since=yesterday')
      expect(bad.status).toBe(400)
      expect(bad.body.field).toBe('since')
    } finally {
      await device.endAsync()
    }
  })

  test('the topics view streams a tenant’s messages, and its publish box reaches devices and functions', async () => {
    await using gw = await startGateway()
    const secrets = await gw.provision('acme', ['d1'])
    await gw.provision('other', ['o1'])
    await gw.api('POST', '/tenants/acme/functions', {
      name: 'echo',
      source: 'export default { onMessage(msg) { return { got: msg.payload } } }',
      triggers: [{ topic: 'cmd/#' }],
      output: 'out/echo',
    })
    const device = await mqtt.connectAsync(gw.mqttUrl, {
      username: 'd1@acme',
      password: secrets.d1 as string,
      reconnectPeriod: 0,
    })
    const received: string[] = []
    device.on('message', (topic, payload) => received.push(`${topic} ${payload}`))
    await device.subscribeAsync('#')
    const controller = new AbortController()
    const stream = await fetch(`${gw.addresses.httpUrl}/api/v1/tenants/acme/messages?filter=%23`, {
      headers: { authorization: `Bearer ${gw.adminToken}` },
      signal: controller.signal,
    })
    expect(stream.headers.get('content-type')).toMatch(/text\/event-stream/)
    const events: string[] = []
    const reading = (async () => {
      const decoder = new TextDecoder()
      try {
        for await (const chunk of stream.body as unknown as AsyncIterable<Uint8Array>)
          events.push(decoder.decode(chunk))
      } catch {
        // aborted
      }
    })()
    try {
      await until(() => events.join('').includes('event: ready'))
      const published = await gw.api('POST', '/tenants/acme/publish', {
        topic: 'cmd/x',
        payload: '{"a":1}',
        qos: 1,
      })
      expect(published.status).toBe(202)
      await until(() => received.includes('out/echo {"got":{"a":1}}'))
      expect(received).toContain('cmd/x {"a":1}')
      await until(() => events.join('').includes('"topic":"out/echo"'))
      expect(events.join('')).toContain('"topic":"cmd/x","payload":"{\\"a\\":1}"')
      // Another tenant's traffic never shows up here.
      await gw.api('POST', '/tenants/other/publish', { topic: 'cmd/x', payload: 'secret' })
      await gw.api('POST', '/tenants/acme/publish', { topic: 'mark', payload: 'end' })
      await until(() => events.join('').includes('"topic":"mark"'))
      expect(events.join('')).not.toContain('secret')

      const bad = await gw.api('POST', '/tenants/acme/publish', { topic: 'a/+', payload: 'x' })
      expect(bad.status).toBe(400)
      expect(bad.body.field).toBe('topic')
      expect((await gw.api('GET', '/tenants/acme/messages?filter=a/%23/b')).status).toBe(400)
    } finally {
      controller.abort()
      await reading
      await device.endAsync()
    }
  })

  test('a compile check reports the line and column and deploys nothing', async () => {
    await using gw = await startGateway()
    await gw.provision('acme', [])
    const body = {
      name: 'broken',
      source: 'export default {\n  onMessage(msg) {\n    return msg..payload\n  },\n}\n',
      triggers: [{ topic: 'in/#' }],
    }
    // The verdict is the answer (200); a deploy of the same body is refused with the same error.
    const checked = await gw.api('POST', '/tenants/acme/functions/check', body)
    expect(checked.status).toBe(200)
    expect(checked.body).toMatchObject({
      ok: false,
      error: { code: 'invalid_input', field: 'source', line: 3 },
    })
    expect(typeof checked.body.error.column).toBe('number')
    const deploy = await gw.api('POST', '/tenants/acme/functions', body)
    expect(deploy.status).toBe(400)
    expect(deploy.body).toMatchObject({ field: 'source', line: 3, column: checked.body.error.column })
    const badName = await gw.api('POST', '/tenants/acme/functions/check', { ...body, name: 'Bad Name' })
    expect(badName.status).toBe(400)
    expect(badName.body.field).toBe('name')
    const fixed = await gw.api('POST', '/tenants/acme/functions/check', {
      ...body,
      source: body.source.replace('..', '.'),
    })
    expect(fixed).toMatchObject({ status: 200, body: { ok: true } })
    expect((await gw.api('GET', '/tenants/acme/functions')).body.functions).toEqual([])
  })

  test('OpenAPI is generated from the request schemas', async () => {
    await using gw = await startGateway()
    const response = await fetch(`${gw.addresses.httpUrl}/api/openapi.json`)
    expect(response.status).toBe(200)
    const doc = await response.json()
    expect(doc.openapi).toBe('3.1.0')
    const deploy = doc.paths['/tenants/{tenant}/functions'].post
    expect(deploy.requestBody.content['application/json'].schema.properties.name.pattern).toBe(
      '^[a-z0-9][a-z0-9_-]{0,62}$',
    )
    expect(doc.paths['/session'].post.security).toEqual([])
    expect(Object.keys(doc.paths).length).toBeGreaterThan(30)
  })
})

describe('serving the UI', () => {
  const fakeBuild = () => {
    const dir = tempDir()
    mkdirSync(join(dir, 'assets'))
    const html =
      '<!doctype html><title>Taureau</title><script type="module" src="./assets/app-1.js"></script>'
    writeFileSync(join(dir, 'index.html'), html)
    writeFileSync(join(dir, 'index.html.gz'), gzipSync(html))
    writeFileSync(join(dir, 'assets', 'app-1.js'), 'console.log(1)')
    return dir
  }

  test('the built UI is served precompressed with security headers, also under a path prefix', async () => {
    const uiDir = fakeBuild()
    for (const basePath of ['', '/gw']) {
      await using gw = await startGateway({ http: { basePath } }, tempDir(), { uiDir })
      expect(gw.addresses.httpUrl.endsWith(basePath)).toBe(true)
      const index = await fetch(`${gw.addresses.httpUrl}/`, { headers: { 'accept-encoding': 'gzip' } })
      expect(index.status).toBe(200)
      expect(index.headers.get('content-type')).toMatch(/text\/html/)
      expect(index.headers.get('content-encoding')).toBe('gzip')
      expect(await index.text()).toContain('<title>Taureau</title>')
      // Held gzipped only: a client that takes no encoding gets it decompressed.
      const plain = await fetch(`${gw.addresses.httpUrl}/`, { headers: { 'accept-encoding': 'identity' } })
      expect(plain.headers.get('content-encoding')).toBeNull()
      expect(await plain.text()).toBe(
        '<!doctype html><title>Taureau</title><script type="module" src="./assets/app-1.js"></script>',
      )
      const csp = index.headers.get('content-security-policy') ?? ''
      expect(csp).toContain("script-src 'self'")
      expect(csp).not.toContain('unsafe-eval')
      expect(csp).not.toContain('unsafe-inline')
      expect(index.headers.get('x-frame-options')).toBe('DENY')
      expect(index.headers.get('x-content-type-options')).toBe('nosniff')
      const script = await fetch(`${gw.addresses.httpUrl}/assets/app-1.js`)
      expect(script.headers.get('cache-control')).toMatch(/immutable/)
      expect(await script.text()).toBe('console.log(1)')
      expect((await fetch(`${gw.addresses.httpUrl}/assets/../../etc/passwd`)).status).toBe(404)
      expect((await fetch(`${gw.addresses.httpUrl}/assets/nope.js`)).status).toBe(404)
      // The API answers under the same prefix, with the same headers.
      const api = await fetch(`${gw.addresses.httpUrl}/api/v1/tenants`)
      expect(api.status).toBe(401)
      expect(api.headers.get('content-security-policy')).toBe(csp)
      const session = await fetch(`${gw.addresses.httpUrl}/api/v1/session`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: gw.adminToken }),
      })
      expect(session.headers.get('set-cookie')).toContain(`Path=${basePath === '' ? '/' : basePath}`)
    }
  })

  test('without a build, / says how to make one', async () => {
    await using gw = await startGateway({}, tempDir(), { uiDir: join(tempDir(), 'missing') })
    const index = await fetch(`${gw.addresses.httpUrl}/`)
    expect(index.status).toBe(503)
    expect(await index.text()).toContain('npm run build:ui')
  })
})
