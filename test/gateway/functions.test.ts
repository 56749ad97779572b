import { describe, expect, test } from 'vitest'
import { hashToken } from '../../gateway/api.ts'
import { collect, connect, metricsText, startGateway, until } from '../helpers/gateway.ts'

const DOUBLE = `
export default {
  onMessage(msg, ctx) {
    ctx.log('got', msg.payload.v, 'from', msg.device, 'on', msg.topic)
    return { v: msg.payload.v * 2, version: ctx.version }
  },
}`

const TIMES = (factor: number) => `
export default {
  onMessage(msg, ctx) {
    return { v: msg.payload.v * ${factor}, version: ctx.version }
  },
}`

/** A tenant with a sensor device and a watcher device subscribed to `out/#`. */
async function setup(gw: Awaited<ReturnType<typeof startGateway>>, tenant = 'acme') {
  const secrets = await gw.provision(tenant, ['sensor', 'watcher'])
  const sensor = await connect(gw.mqttUrl, {
    username: `sensor@${tenant}`,
    password: secrets.sensor as string,
  })
  const watcher = await connect(gw.mqttUrl, {
    username: `watcher@${tenant}`,
    password: secrets.watcher as string,
  })
  await watcher.subscribeAsync('out/#', { qos: 1 })
  const received = collect(watcher)
  return {
    sensor,
    watcher,
    received,
    async [Symbol.asyncDispose]() {
      await sensor.endAsync()
      await watcher.endAsync()
    },
  }
}

const deploy = (
  gw: Awaited<ReturnType<typeof startGateway>>,
  tenant: string,
  body: Record<string, unknown>,
) => gw.api('POST', `/tenants/${tenant}/functions`, body)

describe('functions', () => {
  test('a deployed function turns device messages into output messages, with logs and figures', async () => {
    await using gw = await startGateway()
    await using site = await setup(gw)
    const deployed = await deploy(gw, 'acme', {
      name: 'double',
      source: DOUBLE,
      triggers: [{ topic: 'sensors/+/temp' }],
      output: 'out/double',
    })
    expect(deployed.status).toBe(201)
    expect(deployed.body.function).toMatchObject({ name: 'double', version: 1, state: 'running' })

    await site.sensor.publishAsync('sensors/s1/temp', JSON.stringify({ v: 21 }), { qos: 1 })
    await site.sensor.publishAsync('sensors/s1/humidity', JSON.stringify({ v: 50 }), { qos: 1 })
    await until(() => site.received.length >= 1, 'the output')
    await gw.functions.idle()
    expect(site.received).toEqual([['out/double', JSON.stringify({ v: 42, version: 1 })]])

    const shown = await gw.api('GET', '/tenants/acme/functions/double')
    expect(shown.body.source).toBe(DOUBLE)
    expect(shown.body.function.stats).toMatchObject({ invocations: 1, errors: 0, queued: 0 })
    const logs = await gw.api('GET', '/tenants/acme/functions/double/logs')
    expect(logs.body.logs.map((line: { message: string }) => line.message)).toContain(
      'got 21 from sensor on sensors/s1/temp',
    )
    expect(await metricsText(gw)).toMatch(
      /taureau_function_invocations_total\{tenant="acme",function="double",outcome="ok"\} 1/,
    )
  })

  test('ctx.publish stays in the tenant, ctx.emit lands in the outbox, and payloads arrive decoded', async () => {
    await using gw = await startGateway()
    await using site = await setup(gw)
    await using other = await setup(gw, 'other')
    const source = `
      export default {
        onMessage(msg, ctx) {
          const kind = msg.payload instanceof Uint8Array ? 'bytes:' + msg.payload.length : typeof msg.payload
          ctx.publish('out/kind', kind, { qos: 1 })
          ctx.emit({ kind, topic: msg.topic }, { stream: 'kinds' })
        },
      }`
    expect((await deploy(gw, 'acme', { name: 'kind', source, triggers: [{ topic: 'in/#' }] })).status).toBe(
      201,
    )
    await site.sensor.publishAsync('in/json', '{"a":1}', { qos: 1 })
    await site.sensor.publishAsync('in/text', 'hello', { qos: 1 })
    await site.sensor.publishAsync('in/bytes', Buffer.from([0xff, 0xfe, 0x00]), { qos: 1 })
    await until(() => site.received.length >= 3, 'three publishes')
    expect(site.received).toEqual([
      ['out/kind', 'object'],
      ['out/kind', 'string'],
      ['out/kind', 'bytes:3'],
    ])
    // The same topic in another tenant sees nothing.
    expect(other.received).toEqual([])
    const outbox = await gw.api('GET', '/tenants/acme/outbox')
    expect(outbox.body.records.map((r: { stream: string; record: unknown }) => [r.stream, r.record])).toEqual(
      [
        ['kinds', { kind: 'object', topic: 'in/json' }],
        ['kinds', { kind: 'string', topic: 'in/text' }],
        ['kinds', { kind: 'bytes:3', topic: 'in/bytes' }],
      ],
    )
    expect((await gw.api('GET', '/tenants/other/outbox')).body.records).toEqual([])
  })

  test('a deploy that does not compile comes back with line and column and changes nothing', async () => {
    await using gw = await startGateway()
    await gw.provision('acme', [])
    const bad = await deploy(gw, 'acme', {
      name: 'bad',
      source: 'export default {\n  onMessage(msg) {\n    return msg.payload *\n  },\n}',
      triggers: [{ topic: 'a' }],
    })
    expect(bad.status).toBe(400)
    expect(bad.body.field).toBe('source')
    expect(bad.body.message).toMatch(/line 4, column \d+/)
    const noHandler = await deploy(gw, 'acme', {
      name: 'bad',
      source: 'export default { onMessage() {} }',
      triggers: [{ every: '10s' }],
    })
    expect(noHandler.status).toBe(400)
    expect(noHandler.body.message).toMatch(/no onSchedule\(\) handler/)
    const badTrigger = await deploy(gw, 'acme', {
      name: 'bad',
      source: DOUBLE,
      triggers: [{ topic: 'a/#/b' }],
    })
    expect(badTrigger.status).toBe(400)
    expect(badTrigger.body.field).toBe('triggers.0.topic')
    const badCron = await deploy(gw, 'acme', {
      name: 'bad',
      source: DOUBLE,
      triggers: [{ cron: '61 * * * *' }],
    })
    expect(badCron.status).toBe(400)
    expect(badCron.body.message).toMatch(/cron/)
    expect((await gw.api('GET', '/tenants/acme/functions')).body.functions).toEqual([])

    // A valid version stays in place when a later deploy fails.
    await deploy(gw, 'acme', { name: 'good', source: DOUBLE, triggers: [{ topic: 'a' }] })
    await deploy(gw, 'acme', { name: 'good', source: 'export default {', triggers: [{ topic: 'a' }] })
    const good = await gw.api('GET', '/tenants/acme/functions/good')
    expect(good.body.function).toMatchObject({ version: 1, latestVersion: 1 })
    expect(good.body.source).toBe(DOUBLE)
  })

  test('limits are checked against the tenant quota, and the function count too', async () => {
    await using gw = await startGateway()
    await gw.provision('acme', [], { maxFunctionMemoryMb: 8, maxFunctionTimeoutMs: 100, maxFunctions: 1 })
    const base = { source: DOUBLE, triggers: [{ topic: 'a' }] }
    const memory = await deploy(gw, 'acme', { ...base, name: 'f', limits: { memoryMb: 9 } })
    expect(memory.status).toBe(400)
    expect(memory.body.message).toMatch(/maxFunctionMemoryMb/)
    const timeout = await deploy(gw, 'acme', { ...base, name: 'f', limits: { timeoutMs: 101 } })
    expect(timeout.body.message).toMatch(/maxFunctionTimeoutMs/)
    const first = await deploy(gw, 'acme', { ...base, name: 'f' })
    expect(first.body.function.limits).toEqual({ memoryMb: 8, timeoutMs: 100 })
    const second = await deploy(gw, 'acme', { ...base, name: 'g' })
    expect(second.status).toBe(429)
    expect(second.body.message).toMatch(/maxFunctions/)
    // A new version of an existing function is not a new function.
    expect((await deploy(gw, 'acme', { ...base, name: 'f' })).status).toBe(201)
    // A version whose limits the tenant's quotas no longer allow cannot come back.
    await gw.api('POST', '/tenants/acme/functions/f/disable')
    await gw.api('PUT', '/tenants/acme/quotas', { maxFunctionTimeoutMs: 50, maxFunctions: 1 })
    const enabled = await gw.api('POST', '/tenants/acme/functions/f/enable')
    expect(enabled.status).toBe(400)
    expect(enabled.body.message).toMatch(/exceed tenant 'acme'.s quotas now/)
    expect((await gw.api('POST', '/tenants/acme/functions/f/rollback', { version: 1 })).status).toBe(400)
    expect(gw.functions.view('acme', 'f').state).toBe('disabled')
  })

  test('versions, rollback, disable and enable take effect on the next message', async () => {
    await using gw = await startGateway()
    await using site = await setup(gw)
    const body = (factor: number) => ({
      name: 'scale',
      source: TIMES(factor),
      triggers: [{ topic: 'in' }],
      output: 'out/scale',
    })
    await deploy(gw, 'acme', body(2))
    await deploy(gw, 'acme', body(3))
    const send = async (v: number) => {
      const before = site.received.length
      await site.sensor.publishAsync('in', JSON.stringify({ v }), { qos: 1 })
      await until(() => site.received.length > before, 'an output')
      return JSON.parse((site.received.at(-1) as [string, string])[1])
    }
    expect(await send(1)).toEqual({ v: 3, version: 2 })
    const versions = await gw.api('GET', '/tenants/acme/functions/scale/versions')
    expect(
      versions.body.versions.map((v: { version: number; current: boolean }) => [v.version, v.current]),
    ).toEqual([
      [2, true],
      [1, false],
    ])
    const rolled = await gw.api('POST', '/tenants/acme/functions/scale/rollback', { version: 1 })
    expect(rolled.body.function).toMatchObject({ version: 1, latestVersion: 2 })
    expect(await send(1)).toEqual({ v: 2, version: 1 })

    expect((await gw.api('POST', '/tenants/acme/functions/scale/disable')).body.function.state).toBe(
      'disabled',
    )
    await site.sensor.publishAsync('in', JSON.stringify({ v: 5 }), { qos: 1 })
    await gw.functions.idle()
    const count = site.received.length
    expect((await gw.api('POST', '/tenants/acme/functions/scale/enable')).body.function.state).toBe('running')
    expect(await send(7)).toEqual({ v: 14, version: 1 })
    expect(site.received.length).toBe(count + 1)

    expect((await gw.api('GET', '/tenants/acme/functions/scale/versions/2')).body.version.source).toBe(
      TIMES(3),
    )
    expect((await gw.api('POST', '/tenants/acme/functions/scale/rollback', { version: 9 })).status).toBe(404)
    expect((await gw.api('DELETE', '/tenants/acme/functions/scale')).status).toBe(204)
    expect((await gw.api('GET', '/tenants/acme/functions/scale')).status).toBe(404)
  })

  test('at least 20 versions are kept, the oldest beyond that are pruned', async () => {
    await using gw = await startGateway()
    await gw.provision('acme', [])
    for (let i = 1; i <= 22; i++) {
      const deployed = await deploy(gw, 'acme', { name: 'f', source: TIMES(i), triggers: [{ topic: 'a' }] })
      expect(deployed.status).toBe(201)
    }
    const versions = (await gw.api('GET', '/tenants/acme/functions/f/versions')).body.versions
    expect(versions.map((v: { version: number }) => v.version)).toEqual(
      Array.from({ length: 20 }, (_, i) => 22 - i),
    )
    expect((await gw.api('POST', '/tenants/acme/functions/f/rollback', { version: 2 })).status).toBe(404)
    expect((await gw.api('POST', '/tenants/acme/functions/f/rollback', { version: 3 })).status).toBe(200)
  })

  test('swapping versions under load loses no message: queued ones finish on the old version', async () => {
    await using gw = await startGateway()
    await using site = await setup(gw)
    // Version 1 is slow (a few ms per message), so messages queue up behind it.
    const slow = `
      export default {
        onMessage(msg, ctx) {
          let spin = 0
          for (let i = 0; i < 300000; i++) spin += i
          return { v: msg.payload.v, version: ctx.version, spin: spin > 0 }
        },
      }`
    await deploy(gw, 'acme', { name: 'swap', source: slow, triggers: [{ topic: 'in' }], output: 'out/swap' })
    const total = 300
    for (let i = 0; i < total; i++) site.sensor.publish('in', JSON.stringify({ v: i }), { qos: 0 })
    await until(() => gw.functions.view('acme', 'swap').stats.queued > 50, 'a queue on version 1')
    const receivedAtSwap = site.received.length
    await deploy(gw, 'acme', {
      name: 'swap',
      source: TIMES(1),
      triggers: [{ topic: 'in' }],
      output: 'out/swap',
    })
    await until(() => site.received.length >= total, 'every output', 30_000)
    await gw.functions.idle()
    const outputs = site.received.map(([, payload]) => JSON.parse(payload) as { v: number; version: number })
    expect(outputs).toHaveLength(total)
    expect(outputs.map((o) => o.v)).toEqual(Array.from({ length: total }, (_, i) => i))
    // Everything queued before the deploy ran on version 1, after the deploy returned.
    const lastOld = outputs.findLastIndex((o) => o.version === 1)
    expect(lastOld).toBeGreaterThan(receivedAtSwap)
    expect(outputs.slice(0, lastOld + 1).every((o) => o.version === 1)).toBe(true)
    // Then, after the swap, the new version.
    await site.sensor.publishAsync('in', JSON.stringify({ v: 7 }), { qos: 1 })
    await until(() => site.received.length > total, 'an output of version 2')
    expect(JSON.parse((site.received.at(-1) as [string, string])[1])).toEqual({ v: 7, version: 2 })
  })

  test('a failing invocation runs again, then is counted, logged with a clean message and kept as a dead letter', async () => {
    await using gw = await startGateway({ functions: { retries: 1, retryBackoffMs: 20 } })
    await using site = await setup(gw)
    const source = `
      export default {
        onMessage(msg) {
          if (msg.payload === 'loop') for (;;) {}
          if (msg.payload === 'throw') throw new TypeError('bad reading')
          return msg.payload
        },
      }`
    await deploy(gw, 'acme', {
      name: 'picky',
      source,
      triggers: [{ topic: 'in' }],
      output: 'out/picky',
      limits: { timeoutMs: 50 },
    })
    await site.sensor.publishAsync('in', 'throw', { qos: 1 })
    await site.sensor.publishAsync('in', 'loop', { qos: 1 })
    await site.sensor.publishAsync('in', 'fine', { qos: 1 })
    await until(() => site.received.length >= 1, 'the good output')
    await gw.functions.idle()
    expect(site.received).toEqual([['out/picky', 'fine']])
    const letters = (await gw.api('GET', '/tenants/acme/dead-letters?function=picky')).body.deadLetters
    expect(letters.map((l: { reason: string }) => l.reason)).toEqual(['deadline', 'handler_threw'])
    expect(letters[1].error).toMatch(/TypeError: bad reading/)
    expect(letters[1].error).not.toMatch(/\/|node:|at /)
    expect(Buffer.from(letters[1].message.message.payloadBase64, 'base64').toString()).toBe('throw')
    const view = (await gw.api('GET', '/tenants/acme/functions/picky')).body.function
    expect(view.stats).toMatchObject({
      invocations: 1,
      errors: 2,
      errorsByReason: { deadline: 1, handler_threw: 1 },
    })
    // Each failure ran twice: the first time is logged as tried again, in order, before 'fine' ran.
    const logs = (await gw.api('GET', '/tenants/acme/functions/picky/logs')).body.logs
    const errors = logs.filter((line: { level: string }) => line.level === 'error')
    expect(errors.map((line: { message: string }) => line.message.replace(/ \(.*\)$/, ''))).toEqual([
      "Function 'picky' threw TypeError: bad reading",
      "Function 'picky' threw TypeError: bad reading",
      "Function 'picky' ran past its 50 ms deadline",
      "Function 'picky' ran past its 50 ms deadline",
    ])
    expect(errors[0].message).toMatch(/\(attempt 1 of 2; it runs again\)$/)
    expect(await metricsText(gw)).toMatch(
      /taureau_function_invocations_total\{tenant="acme",function="picky",outcome="deadline"\} 1/,
    )
    const purged = await gw.api('DELETE', '/tenants/acme/dead-letters?function=picky')
    expect(purged.body.purged).toBe(2)
    expect((await gw.api('GET', '/tenants/acme/dead-letters')).body.deadLetters).toEqual([])
  })

  test('test-invoke returns outputs, logs, duration and memory without any effect', async () => {
    await using gw = await startGateway()
    await using site = await setup(gw)
    const source = `
      let calls = 0
      export default {
        onMessage(msg, ctx) {
          calls++
          ctx.log('calls', calls, 'threshold', ctx.config.threshold)
          ctx.publish('out/side', 'effect')
          ctx.emit({ v: msg.payload.v })
          ctx.state.incr('seen')
          ctx.state.ns('site').lease(60000)
          return msg.payload.v > ctx.config.threshold ? { alert: msg.payload.v, calls } : undefined
        },
      }`
    await deploy(gw, 'acme', {
      name: 'alert',
      source,
      triggers: [{ topic: 'sensors/+/temp' }],
      output: 'out/alert',
      config: { threshold: 30 },
    })
    const invoked = await gw.api('POST', '/tenants/acme/functions/alert/invoke', {
      message: { payload: { v: 35 }, device: 'd1' },
    })
    expect(invoked.status).toBe(200)
    const invocation = invoked.body.invocation
    expect(invocation).toMatchObject({
      ok: true,
      version: 1,
      handler: 'onMessage',
      value: { alert: 35, calls: 1 },
      output: { topic: 'out/alert', payload: '{"alert":35,"calls":1}' },
      publishes: [{ topic: 'out/side', payload: 'effect', qos: 0, retain: false }],
      emits: [{ stream: 'default', record: { v: 35 } }],
      state: [{ namespace: '@alert', key: 'seen', op: 'incr', by: 1 }],
      leases: [{ namespace: 'site', ttlMs: 60000 }],
      logs: ['calls 1 threshold 30'],
    })
    expect(invocation.durationMs).toBeGreaterThan(0)
    expect(invocation.memoryBytes).toBeGreaterThan(1024 * 1024)
    // Again: a fresh copy each time, so module state of the running copy is untouched.
    const again = await gw.api('POST', '/tenants/acme/functions/alert/invoke', {
      message: { payload: { v: 35 } },
    })
    expect(again.body.invocation.value).toEqual({ alert: 35, calls: 1 })
    await gw.functions.idle()
    expect(site.received).toEqual([])
    expect((await gw.api('GET', '/tenants/acme/outbox')).body.records).toEqual([])
    expect((await gw.api('GET', '/tenants/acme/state')).body.namespaces).toEqual([])
    expect(gw.functions.view('acme', 'alert').stats.invocations).toBe(0)

    // A sample that makes the copy run out of memory leaves the running copy's sandbox alone.
    const bomb = `
      let calls = 0
      export default {
        onMessage(msg) {
          calls++
          if (msg.payload === 'bomb') { const parts = []; for (;;) parts.push('x'.repeat(1 << 16) + parts.length) }
          return { calls }
        },
      }`
    await deploy(gw, 'acme', {
      name: 'counter',
      source: bomb,
      triggers: [{ topic: 'count' }],
      output: 'out/count',
    })
    const counts = () =>
      site.received.filter(([topic]) => topic === 'out/count').map(([, p]) => JSON.parse(p).calls)
    await site.sensor.publishAsync('count', '1', { qos: 1 })
    await site.sensor.publishAsync('count', '2', { qos: 1 })
    await until(() => counts().length >= 2, 'two counts')
    const exploded = await gw.api('POST', '/tenants/acme/functions/counter/invoke', {
      message: { payload: 'bomb' },
    })
    expect(exploded.body.invocation).toMatchObject({ ok: false, error: { code: 'memory' } })
    await site.sensor.publishAsync('count', '3', { qos: 1 })
    await until(() => counts().length >= 3, 'a third count')
    expect(counts()).toEqual([1, 2, 3])

    const tenantOf = await deploy(gw, 'acme', {
      name: 'whoami',
      source:
        'export default { onMessage(msg, ctx) { return { tenant: ctx.tenant, big: "x".repeat(msg.payload) } } }',
      triggers: [{ topic: 'who' }],
      output: 'out/who',
    })
    expect(tenantOf.status).toBe(201)
    const who = await gw.api('POST', '/tenants/acme/functions/whoami/invoke', { message: { payload: 1 } })
    expect(who.body.invocation.value).toEqual({ tenant: 'acme', big: 'x' })
    // An output a live run would refuse (over maxPayloadBytes, 256 KiB) fails the test run too.
    const big = await gw.api('POST', '/tenants/acme/functions/whoami/invoke', {
      message: { payload: 300_000 },
    })
    expect(big.body.invocation).toMatchObject({ ok: false, error: { code: 'bad_output' } })
    expect(big.body.invocation.error.message).toMatch(/over the tenant's maxPayloadBytes/)

    const failing = await gw.api('POST', '/tenants/acme/functions/alert/invoke', {
      message: { payload: null },
    })
    expect(failing.body.invocation).toMatchObject({ ok: false, error: { code: 'handler_threw' } })
    const wrongHandler = await gw.api('POST', '/tenants/acme/functions/alert/invoke', {
      handler: 'onSchedule',
    })
    expect(wrongHandler.status).toBe(400)
  })

  test('every and cron triggers call onSchedule on real timers, with the tick time', async () => {
    await using gw = await startGateway()
    await using site = await setup(gw)
    const source = `
      export default {
        onSchedule(ctx) {
          ctx.publish('out/tick', { now: ctx.now(), date: Date.now() })
        },
      }`
    await deploy(gw, 'acme', { name: 'tick', source, triggers: [{ every: '1s' }, { cron: '* * * * * *' }] })
    await until(() => site.received.length >= 3, 'three ticks', 5000)
    const tick = JSON.parse((site.received[0] as [string, string])[1])
    expect(tick.now).toBe(tick.date)
    expect(Math.abs(tick.now - Date.now())).toBeLessThan(5000)
  })

  test('schedules start and stop with the function, and a slow function skips ticks instead of piling them up', async () => {
    const started: Array<{ kind: string; spec: string; fire(): void; stopped: boolean }> = []
    const scheduler = {
      every(intervalMs: number, fire: () => void) {
        const entry = { kind: 'every', spec: String(intervalMs), fire, stopped: false }
        started.push(entry)
        return () => {
          entry.stopped = true
        }
      },
      cron(expression: string, timezone: string, fire: () => void) {
        const entry = { kind: 'cron', spec: `${expression} ${timezone}`, fire, stopped: false }
        started.push(entry)
        return () => {
          entry.stopped = true
        }
      },
    }
    await using gw = await startGateway({}, undefined, { scheduler })
    await using site = await setup(gw)
    const source = `
      let ticks = 0
      export default {
        onSchedule(ctx) {
          let spin = 0
          for (let i = 0; i < 2e5; i++) spin += i
          ticks++
          ctx.publish('out/tick', { ticks })
        },
      }`
    await deploy(gw, 'acme', {
      name: 'tick',
      source,
      triggers: [{ every: '10s' }, { cron: '0 9 * * 1-5', timezone: 'Europe/Paris' }],
    })
    expect(started.map(({ kind, spec, stopped }) => [kind, spec, stopped])).toEqual([
      ['every', '10000', false],
      ['cron', '0 9 * * 1-5 Europe/Paris', false],
    ])
    const [every, cron] = started as [(typeof started)[0], (typeof started)[0]]
    // Ten ticks of one trigger at once: one runs, the rest find it still queued and are skipped.
    for (let i = 0; i < 10; i++) every.fire()
    cron.fire()
    await gw.functions.idle()
    expect(gw.functions.view('acme', 'tick').stats.invocations).toBe(2)
    await until(() => site.received.length >= 2, 'two ticks')
    expect(site.received.map(([, payload]) => JSON.parse(payload).ticks)).toEqual([1, 2])
    await gw.api('POST', '/tenants/acme/functions/tick/disable')
    expect(started.every((entry) => entry.stopped)).toBe(true)
    await gw.api('POST', '/tenants/acme/functions/tick/enable')
    expect(started).toHaveLength(4)
    expect(started.slice(2).every((entry) => !entry.stopped)).toBe(true)
  })

  test('a function whose output triggers itself is stopped at the chain depth', async () => {
    await using gw = await startGateway({ functions: { maxChainDepth: 3 } })
    await using site = await setup(gw)
    await deploy(gw, 'acme', {
      name: 'echo',
      source: 'export default { onMessage(msg) { return msg.payload + 1 } }',
      triggers: [{ topic: 'out/loop' }],
      output: 'out/loop',
    })
    await site.sensor.publishAsync('out/loop', '0', { qos: 1 })
    await until(() => site.received.length >= 4, 'the chain')
    await gw.functions.idle()
    // The device's message passes through three functions; the fourth run is refused.
    expect(site.received.map(([, payload]) => payload)).toEqual(['0', '1', '2', '3'])
    const letters = (await gw.api('GET', '/tenants/acme/dead-letters')).body.deadLetters
    expect(letters.map((l: { reason: string }) => l.reason)).toEqual(['chain_too_deep'])
  })

  test('functions are tenant-scoped through the API, and a removed tenant takes its functions along', async () => {
    await using gw = await startGateway()
    await gw.provision('acme', [])
    await gw.provision('other', [])
    await deploy(gw, 'acme', { name: 'f', source: DOUBLE, triggers: [{ topic: 'a' }] })
    gw.store.createToken(hashToken('tau_other_token'), 'other', 'other token')
    const denied = await gw.api('GET', '/tenants/acme/functions', undefined, 'tau_other_token')
    expect(denied.status).toBe(403)
    expect(
      (await gw.api('GET', '/tenants/other/functions', undefined, 'tau_other_token')).body.functions,
    ).toEqual([])
    expect((await gw.api('DELETE', '/tenants/acme')).status).toBe(204)
    expect(gw.functionStore.listAll()).toEqual([])
    // The tenant is deleted while a deploy compiles (its top level takes a while): not found, not
    // a store error.
    // About 150 ms on this machine alone, well inside the 1000 ms compile deadline when it is busy.
    const slowTopLevel = `let spin = 0; for (let i = 0; i < 1e6; i++) spin += i\n${DOUBLE}`
    const racing = deploy(gw, 'other', { name: 'g', source: slowTopLevel, triggers: [{ topic: 'a' }] })
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect((await gw.api('DELETE', '/tenants/other')).status).toBe(204)
    const raced = await racing
    expect(raced.status).toBe(404)
    expect(raced.body.message).toBe("Cannot find tenant 'other'")
    expect(gw.functionStore.listAll()).toEqual([])
  })

  test('functions come back after a restart on the same data', async () => {
    const first = await startGateway()
    first.keepData()
    await first.provision('acme', ['sensor', 'watcher'])
    await deploy(first, 'acme', {
      name: 'double',
      source: DOUBLE,
      triggers: [{ topic: 'sensors/+/temp' }],
      output: 'out/d',
    })
    await deploy(first, 'acme', {
      name: 'double',
      source: TIMES(5),
      triggers: [{ topic: 'sensors/+/temp' }],
      output: 'out/d',
    })
    await first.api('POST', '/tenants/acme/functions/double/rollback', { version: 1 })
    const rotated = await first.api('POST', '/tenants/acme/devices/sensor/rotate')
    await first.close()

    await using gw = await startGateway({}, first.dataDir)
    const watcherSecret = (await gw.api('POST', '/tenants/acme/devices/watcher/rotate')).body.secret
    const watcher = await connect(gw.mqttUrl, { username: 'watcher@acme', password: watcherSecret })
    await watcher.subscribeAsync('out/#', { qos: 1 })
    const received = collect(watcher)
    const sensor = await connect(gw.mqttUrl, { username: 'sensor@acme', password: rotated.body.secret })
    await sensor.publishAsync('sensors/x/temp', '{"v":4}', { qos: 1 })
    await until(() => received.length >= 1, 'the output after the restart')
    expect(JSON.parse((received[0] as [string, string])[1])).toMatchObject({ v: 8, version: 1 })
    await sensor.endAsync()
    await watcher.endAsync()
  })

  test('live logs stream over server-sent events', async () => {
    await using gw = await startGateway()
    await using site = await setup(gw)
    await deploy(gw, 'acme', { name: 'double', source: DOUBLE, triggers: [{ topic: 'sensors/+/temp' }] })
    const controller = new AbortController()
    const response = await fetch(
      `${gw.addresses.httpUrl}/api/v1/tenants/acme/functions/double/logs?follow=true`,
      {
        headers: { authorization: `Bearer ${gw.adminToken}` },
        signal: controller.signal,
      },
    )
    expect(response.headers.get('content-type')).toMatch(/text\/event-stream/)
    const reader = (response.body as ReadableStream<Uint8Array>).getReader()
    let text = ''
    const reading = (async () => {
      const decoder = new TextDecoder()
      while (!text.includes('got 7')) {
        const { done, value } = await reader.read()
        if (done) break
        text += decoder.decode(value)
      }
    })()
    await site.sensor.publishAsync('sensors/a/temp', '{"v":7}', { qos: 1 })
    await reading
    controller.abort()
    expect(text).toMatch(/event: log\ndata: \{[^\n]*"message":"deployed version 1"/)
    expect(text).toMatch(/data: \{[^\n]*got 7 from sensor on sensors\/a\/temp/)
  })

  test("a device's will triggers functions like any message, with the device's id", async () => {
    await using gw = await startGateway()
    await using site = await setup(gw)
    const secret = (await gw.api('POST', '/tenants/acme/devices', { id: 'mortal' })).body.secret
    await deploy(gw, 'acme', {
      name: 'status',
      source: 'export default { onMessage(msg) { return { device: msg.device, state: msg.payload } } }',
      triggers: [{ topic: 'status/+' }],
      output: 'out/status',
    })
    const mortal = await connect(gw.mqttUrl, {
      username: 'mortal@acme',
      password: secret,
      will: { topic: 'status/mortal', payload: Buffer.from('offline'), qos: 1, retain: false },
    })
    mortal.stream.destroy() // dies without DISCONNECT: the broker publishes the will
    await until(() => site.received.some(([topic]) => topic === 'out/status'), 'the status output')
    expect(site.received.find(([topic]) => topic === 'out/status')?.[1]).toBe(
      JSON.stringify({ device: 'mortal', state: 'offline' }),
    )
    mortal.end(true)
  })

  test('a payload nested too deeply reaches the function as text and harms nothing', async () => {
    await using gw = await startGateway()
    await using site = await setup(gw)
    await deploy(gw, 'acme', {
      name: 'kind',
      source: 'export default { onMessage(msg) { return typeof msg.payload + ":" + msg.payload.length } }',
      triggers: [{ topic: 'in' }],
      output: 'out/kind',
    })
    const deep = `${'['.repeat(20_000)}${']'.repeat(20_000)}`
    await site.sensor.publishAsync('in', deep, { qos: 1 })
    await until(() => site.received.length >= 1, 'the output')
    expect(site.received[0]).toEqual(['out/kind', `string:${deep.length}`])
    // Through the API too: a body nested that deep is refused, not a crash.
    const refused = await gw.api('POST', '/tenants/acme/functions/kind/invoke', {
      message: { payload: JSON.parse(`${'['.repeat(100)}${']'.repeat(100)}`) },
    })
    expect(refused.status).toBe(400)
    expect(refused.body.message).toMatch(/nests more than \d+ levels/)
  })

  test('past the queue bound QoS 0 messages go to the dead letters as queue_full, in one write', async () => {
    await using gw = await startGateway({ functions: { queueLimit: 5 } })
    await using site = await setup(gw)
    await deploy(gw, 'acme', {
      name: 'slow',
      source:
        'export default { onMessage(msg) { let s = 0; for (let i = 0; i < 2e6; i++) s += i; return s } }',
      triggers: [{ topic: 'in' }],
      output: 'out/slow',
      limits: { timeoutMs: 5000 },
    })
    for (let i = 0; i < 40; i++) site.sensor.publish('in', String(i), { qos: 0 })
    await site.sensor.publishAsync('in', 'last', { qos: 1 })
    await until(
      () => (gw.functions.view('acme', 'slow').stats.errorsByReason.queue_full ?? 0) > 0,
      'a refusal',
    )
    await gw.functions.idle()
    const view = gw.functions.view('acme', 'slow')
    expect(view.stats.invocations + (view.stats.errorsByReason.queue_full ?? 0)).toBe(41)
    await until(() => site.received.length === view.stats.invocations, 'the outputs')
    await new Promise((resolve) => setImmediate(resolve))
    const letters = (await gw.api('GET', '/tenants/acme/dead-letters?limit=100')).body.deadLetters
    expect(letters).toHaveLength(view.stats.errorsByReason.queue_full as number)
    expect(letters.every((l: { reason: string }) => l.reason === 'queue_full')).toBe(true)
  })

  test('concurrent deploys of new functions cannot pass maxFunctions', async () => {
    await using gw = await startGateway()
    await gw.provision('acme', [], { maxFunctions: 2 })
    const answers = await Promise.all(
      ['a', 'b', 'c', 'd', 'e'].map((name) =>
        deploy(gw, 'acme', { name, source: DOUBLE, triggers: [{ topic: 'x' }] }),
      ),
    )
    expect(answers.filter((answer) => answer.status === 201)).toHaveLength(2)
    expect(answers.filter((answer) => answer.status === 429)).toHaveLength(3)
    expect(gw.functionStore.list('acme')).toHaveLength(2)
  })

  test('a removed function ends its live log streams and leaves nothing to a new one of that name', async () => {
    await using gw = await startGateway()
    await using site = await setup(gw)
    await deploy(gw, 'acme', {
      name: 'f',
      source: DOUBLE,
      triggers: [{ topic: 'sensors/+/temp' }],
      output: 'out/f',
    })
    await site.sensor.publishAsync('sensors/a/temp', '{"v":1}', { qos: 1 })
    await until(() => site.received.length >= 1, 'an output')
    const response = await fetch(`${gw.addresses.httpUrl}/api/v1/tenants/acme/functions/f/logs`, {
      headers: { authorization: `Bearer ${gw.adminToken}`, accept: 'text/event-stream' },
    })
    const reading = response.text()
    await gw.api('DELETE', '/tenants/acme/functions/f')
    const text = await reading // the stream ends: text() resolves
    expect(text).toMatch(/event: end\ndata: the function was removed/)
    expect(await metricsText(gw)).not.toMatch(/taureau_function_invocations_total\{[^}]*function="f"/)
    await deploy(gw, 'acme', { name: 'f', source: DOUBLE, triggers: [{ topic: 'nothing' }] })
    const fresh = gw.functions.view('acme', 'f')
    expect(fresh.stats).toMatchObject({ invocations: 0, errors: 0 })
    expect(gw.functions.logs('acme', 'f').map((line) => line.message)).toEqual(['deployed version 1'])
  })

  test('a sandbox worker that dies is replaced with its tenants reloaded while the broker keeps serving', async () => {
    await using gw = await startGateway()
    await using site = await setup(gw)
    await deploy(gw, 'acme', {
      name: 'double',
      source: DOUBLE,
      triggers: [{ topic: 'sensors/+/temp' }],
      output: 'out/d',
    })
    await site.sensor.publishAsync('sensors/a/temp', '{"v":1}', { qos: 1 })
    await until(() => site.received.length >= 1, 'the first output')
    const restarts = gw.pool.restarts
    await gw.pool.restartWorkerOf('acme')
    // Device traffic is served meanwhile: a direct subscription still gets its messages.
    await site.watcher.subscribeAsync('sensors/#', { qos: 1 })
    await site.sensor.publishAsync('sensors/a/temp', '{"v":2}', { qos: 1 })
    await until(() => site.received.some(([topic]) => topic === 'sensors/a/temp'), 'the direct delivery')
    await until(
      () => site.received.filter(([topic]) => topic === 'out/d').length >= 2,
      'the output after the restart',
    )
    expect(gw.pool.restarts).toBe(restarts + 1)
    expect(await metricsText(gw)).toMatch(
      new RegExp(`taureau_sandbox_worker_restarts_total ${restarts + 1}\\b`),
    )
    expect(JSON.parse(site.received.filter(([topic]) => topic === 'out/d')[1]?.[1] as string)).toEqual({
      v: 4,
      version: 1,
    })
  })
})
