import { describe, expect, test } from 'vitest'
import { connect, startGateway, until } from '../helpers/gateway.ts'

// ctx.state through the whole gateway: writes commit with the invocation's other effects, shared
// namespaces reach other functions, and changes trigger onState (from functions and the API).

type TestGateway = Awaited<ReturnType<typeof startGateway>>

const value = (namespace: string, key: string) =>
  `/tenants/acme/state/value?namespace=${encodeURIComponent(namespace)}&key=${encodeURIComponent(key)}`

async function device(gw: TestGateway, quotas?: Record<string, unknown>) {
  const created = await gw.api('POST', '/tenants', {
    id: 'acme',
    ...(quotas === undefined ? {} : { quotas }),
  })
  expect(created.status).toBe(201)
  const added = await gw.api('POST', '/tenants/acme/devices', { id: 'sensor' })
  return connect(gw.mqttUrl, { username: 'sensor@acme', password: added.body.secret })
}

const deploy = async (gw: TestGateway, body: Record<string, unknown>) => {
  const deployed = await gw.api('POST', '/tenants/acme/functions', body)
  expect(deployed.status, JSON.stringify(deployed.body)).toBe(201)
}

const outbox = async (gw: TestGateway) =>
  (await gw.api('GET', '/tenants/acme/outbox?limit=1000')).body.records.map(
    (record: { function: string; record: unknown }) => [record.function, record.record],
  )

describe('function state in the gateway', () => {
  test('a private counter counts every message once; a shared namespace triggers another function', async () => {
    await using gw = await startGateway()
    const sensor = await device(gw)
    await deploy(gw, {
      name: 'counter',
      source: `export default {
        onMessage(msg, ctx) {
          const n = ctx.state.incr('seen')
          if (msg.payload.alarm) ctx.state.ns('site/line1').set('alarm', { by: msg.device, n })
        },
      }`,
      triggers: [{ topic: 'in' }],
    })
    await deploy(gw, {
      name: 'watch',
      source: `export default {
        onState(change, ctx) { ctx.emit({ ...change, alarms: ctx.state.incr('alarms') }) },
      }`,
      triggers: [{ state: 'site' }],
    })
    for (let i = 1; i <= 5; i++) {
      await sensor.publishAsync('in', JSON.stringify({ alarm: i === 3 }), { qos: 1 })
    }
    await until(() => gw.functions.list('acme').every((fn) => fn.stats.invocations > 0), 'both functions')
    await gw.functions.idle()
    expect((await gw.api('GET', value('@counter', 'seen'))).body.value).toBe(5)
    expect((await gw.api('GET', value('site/line1', 'alarm'))).body.value).toEqual({ by: 'sensor', n: 3 })
    expect(await outbox(gw)).toEqual([
      [
        'watch',
        { namespace: 'site/line1', key: 'alarm', op: 'set', value: { by: 'sensor', n: 3 }, alarms: 1 },
      ],
    ])
    // An edit through the API triggers it too; a namespace outside the trigger does not.
    await gw.api('DELETE', value('site/line1', 'alarm'))
    await gw.api('PUT', value('plant', 'x'), { value: 1 })
    await until(() => gw.functions.view('acme', 'watch').stats.invocations === 2, 'the API change')
    await gw.functions.idle()
    expect((await outbox(gw)).slice(1)).toEqual([
      ['watch', { namespace: 'site/line1', key: 'alarm', op: 'delete', value: null, alarms: 2 }],
    ])
    await sensor.endAsync()
  })

  test('over the state quota the invocation fails as state_quota and none of its effects happen', async () => {
    await using gw = await startGateway({ functions: { retries: 0 } })
    const sensor = await device(gw, { maxStateKeys: 2 })
    await deploy(gw, {
      name: 'keeper',
      source: `export default {
        onMessage(msg, ctx) {
          ctx.state.set('k' + msg.payload.n, msg.payload.n)
          ctx.emit({ n: msg.payload.n })
        },
      }`,
      triggers: [{ topic: 'in' }],
    })
    for (let n = 1; n <= 3; n++) await sensor.publishAsync('in', JSON.stringify({ n }), { qos: 1 })
    await gw.functions.idle()
    expect(await outbox(gw)).toEqual([
      ['keeper', { n: 1 }],
      ['keeper', { n: 2 }],
    ])
    const letters = (await gw.api('GET', '/tenants/acme/dead-letters')).body.deadLetters
    expect(letters).toHaveLength(1)
    expect(letters[0]).toMatchObject({ reason: 'state_quota' })
    expect(letters[0].error).toMatch(/maxStateKeys/)
    expect((await gw.api('GET', value('@keeper', 'k3'))).status).toBe(404)
    await sensor.endAsync()
  })

  test('calls after a refused call that wrote state run again, so none of them built on its writes', async () => {
    await using gw = await startGateway({ functions: { retries: 0 } })
    const sensor = await device(gw, { maxStateBytes: 200 })
    await deploy(gw, {
      name: 'sum',
      source: `export default {
        onMessage(msg, ctx) {
          if (msg.payload.slow) for (let i = 0; i < 3e6; i++) {}
          const total = (ctx.state.get('total') ?? 0) + msg.payload.n
          ctx.state.set('total', total)
          if (msg.payload.big) ctx.state.set('big', 'x'.repeat(400))
          ctx.emit({ n: msg.payload.n, total })
        },
      }`,
      triggers: [{ topic: 'in' }],
    })
    // The first call is slow, so the next three wait and run as one batch.
    const messages = [{ n: 0, slow: true }, { n: 1 }, { n: 2, big: true }, { n: 3 }]
    await Promise.all(messages.map((m) => sensor.publishAsync('in', JSON.stringify(m), { qos: 1 })))
    await until(() => gw.functions.view('acme', 'sum').stats.invocations === 3, 'three calls committed')
    await gw.functions.idle()
    expect((await outbox(gw)).map(([, record]: [string, unknown]) => record)).toEqual([
      { n: 0, total: 0 },
      { n: 1, total: 1 },
      { n: 3, total: 4 },
    ])
    expect((await gw.api('GET', value('@sum', 'total'))).body.value).toBe(4)
    const letters = (await gw.api('GET', '/tenants/acme/dead-letters')).body.deadLetters
    expect(letters.map((letter: { reason: string }) => letter.reason)).toEqual(['state_quota'])
    await sensor.endAsync()
  })

  test('a function that triggers itself through its own state stops at the chain depth', async () => {
    await using gw = await startGateway({ functions: { maxChainDepth: 3, retries: 0 } })
    await device(gw)
    await deploy(gw, {
      name: 'loop',
      source: `export default { onState(change, ctx) { ctx.state.ns('loop').set('n', change.value + 1) } }`,
      triggers: [{ state: 'loop' }],
    })
    await gw.api('PUT', value('loop', 'n'), { value: 0 })
    await until(() => gw.functions.view('acme', 'loop').stats.errors === 1, 'the refusal')
    await gw.functions.idle()
    expect((await gw.api('GET', value('loop', 'n'))).body.value).toBe(3)
    const letters = (await gw.api('GET', '/tenants/acme/dead-letters')).body.deadLetters
    expect(letters.map((letter: { reason: string }) => letter.reason)).toEqual(['chain_too_deep'])
  })

  test('a key whose lease runs out is swept, and functions watching its namespace hear of it', async () => {
    await using gw = await startGateway()
    await device(gw)
    await deploy(gw, {
      name: 'watch',
      source: `export default { onState(change, ctx) { ctx.emit(change) } }`,
      triggers: [{ state: 'site' }],
    })
    await gw.api('PUT', value('site/door', 'open'), { value: true, ttlMs: 1000 })
    await until(() => gw.functions.view('acme', 'watch').stats.invocations === 2, 'the sweep', 10_000)
    await gw.functions.idle()
    expect((await outbox(gw)).map(([, record]: [string, unknown]) => record)).toEqual([
      { namespace: 'site/door', key: 'open', op: 'set', value: true },
      { namespace: 'site/door', key: 'open', op: 'delete', value: null },
    ])
    expect((await gw.api('GET', value('site/door', 'open'))).status).toBe(404)
  })

  test('a state trigger must name a valid shared namespace', async () => {
    await using gw = await startGateway()
    await device(gw)
    const refused = await gw.api('POST', '/tenants/acme/functions', {
      name: 'bad',
      source: 'export default { onState() {} }',
      triggers: [{ state: '../x' }],
    })
    expect(refused.status).toBe(400)
    expect(refused.body.message).toMatch(/triggers/)
    const missing = await gw.api('POST', '/tenants/acme/functions', {
      name: 'bad',
      source: 'export default { onMessage() {} }',
      triggers: [{ state: 'site' }],
    })
    expect(missing.status).toBe(400)
    expect(missing.body.message).toMatch(/onState/)
  })
})
