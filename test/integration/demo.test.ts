import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { type ApiTarget, callApi } from '../../gateway/api-client.ts'
import { DEMO_FLEET_FILE, DEMO_GATEWAY_NAME, DEMO_TENANT, type Demo, startDemo } from '../../gateway/demo.ts'
import type { CloudRecord } from '../../sync/index.ts'
import { collect, connect, TEST_HASHER, tempDir, until } from '../helpers/gateway.ts'
import { spawnDemo } from '../helpers/gateway-process.ts'

const opened: Demo[] = []
const clients: MqttClient[] = []

afterEach(async () => {
  for (const client of clients.splice(0)) await client.endAsync(true)
  for (const demo of opened.splice(0)) await demo.close()
})

async function start(dirs: { data: string; cloudData: string }, devices = 0, rate = 1, anomalyRate?: number) {
  const demo = await startDemo({
    ...dirs,
    host: '127.0.0.1',
    mqttPort: 0,
    wsPort: 0,
    httpPort: 0,
    cloudPort: 0,
    devices,
    rate,
    ...(anomalyRate === undefined ? {} : { anomalyRate }),
    logLevel: 'silent',
    hasher: TEST_HASHER,
  })
  opened.push(demo)
  return demo
}

const apiOf = (demo: Demo): ApiTarget => ({
  url: demo.gateway.addresses.httpUrl,
  token: demo.gateway.adminToken,
})

/** Connects as a new device of the demo tenant. */
async function device(
  demo: Demo,
  id: string,
  options: Parameters<typeof connect>[1] = {},
): Promise<MqttClient> {
  const { username, secret } = (await callApi(apiOf(demo), 'POST', `/tenants/${DEMO_TENANT}/devices`, {
    id,
  })) as {
    username: string
    secret: string
  }
  const client = await connect(`mqtt://127.0.0.1:${demo.gateway.addresses.mqttPort}`, {
    username,
    password: secret,
    clientId: id,
    ...options,
  })
  clients.push(client)
  return client
}

const bodyOf = (record: CloudRecord | undefined): unknown =>
  record === undefined ? undefined : JSON.parse(record.body)

async function cloudRecords(demo: Demo, stream: string): Promise<CloudRecord[]> {
  return demo.cloudStore.records({ gateway: DEMO_GATEWAY_NAME, tenant: DEMO_TENANT, stream })
}

/** Waits for at least `count` records of a stream in the cloud store. */
async function awaitRecords(demo: Demo, stream: string, count: number, timeoutMs = 15_000) {
  let records: CloudRecord[] = []
  await until(
    async () => {
      records = await cloudRecords(demo, stream)
      if (records.length >= count) return true
      await new Promise((resolve) => setTimeout(resolve, 100))
      return false
    },
    `${count} ${stream} records in the cloud`,
    timeoutMs,
  )
  return records
}

describe('the demo', () => {
  it('deploys the sample functions, which transform, alert, roll up and track device states into the cloud', async () => {
    const demo = await start({ data: tempDir(), cloudData: tempDir() })
    expect(demo.createdTenant).toBe(true)
    const api = apiOf(demo)
    const { functions } = (await callApi(api, 'GET', `/tenants/${DEMO_TENANT}/functions`)) as {
      functions: Array<{ name: string }>
    }
    expect(functions.map((fn) => fn.name).sort()).toEqual([
      'device-status',
      'rollup',
      'to-fahrenheit',
      'vibration-alert',
    ])
    // One-second windows so that the test need not wait a minute: an ordinary redeploy.
    const rollup = (await callApi(api, 'GET', `/tenants/${DEMO_TENANT}/functions/rollup/versions/1`)) as {
      version: { source: string; triggers: unknown[]; config: Record<string, unknown> }
    }
    await callApi(api, 'POST', `/tenants/${DEMO_TENANT}/functions`, {
      name: 'rollup',
      source: rollup.version.source,
      triggers: rollup.version.triggers,
      config: { ...rollup.version.config, windowMs: 1000 },
    })

    const watcher = await device(demo, 'watcher')
    const seen = collect(watcher)
    await watcher.subscribeAsync(['readings/#', 'alerts/#', 'state/#'], { qos: 1 })
    const probe = await device(demo, 'probe', {
      will: { topic: 'status/probe', payload: Buffer.from('offline'), qos: 1, retain: true },
    })
    await probe.publishAsync('status/probe', 'online', { qos: 1, retain: true })

    // Transformation: Celsius to Fahrenheit; a reading outside the sensor's range is dropped.
    await probe.publishAsync('sensors/probe/temperature', JSON.stringify({ seq: 1, ts: 1000, c: 30 }), {
      qos: 1,
    })
    await probe.publishAsync('sensors/probe/temperature', JSON.stringify({ seq: 2, ts: 2000, c: 900 }), {
      qos: 1,
    })
    await probe.publishAsync('sensors/probe/temperature', JSON.stringify({ seq: 3, ts: 3000, c: -10 }), {
      qos: 1,
    })
    const temperatures = await awaitRecords(demo, 'temperature', 2)
    expect(temperatures.map(bodyOf)).toEqual([
      { device: 'probe', f: 86, ts: 1000 },
      { device: 'probe', f: 14, ts: 3000 },
    ])
    await until(
      () => seen.filter(([topic]) => topic === 'readings/fahrenheit').length === 2,
      'readings/fahrenheit',
    )

    // Event-driven alert: a steady level, then one reading far above it.
    for (let i = 0; i < 40; i++) {
      const rms = 2 + (i % 5) * 0.1
      await probe.publishAsync(
        'sensors/probe/vibration',
        JSON.stringify({ seq: i, ts: i, rms, peak: rms * 3 }),
        { qos: 1 },
      )
    }
    expect(await cloudRecords(demo, 'alerts')).toEqual([])
    await probe.publishAsync(
      'sensors/probe/vibration',
      JSON.stringify({ seq: 40, ts: 40, rms: 20, peak: 55 }),
      { qos: 1 },
    )
    const alert = bodyOf((await awaitRecords(demo, 'alerts', 1))[0]) as { score: number }
    expect(alert).toMatchObject({ device: 'probe', rms: 20, peak: 55 })
    expect(alert.score).toBeGreaterThan(4)
    await until(() => seen.some(([topic]) => topic === 'alerts/probe'), 'the alert on alerts/probe')

    // State machine: online on connect, alarm on the alert, offline from the will.
    await until(
      async () =>
        (await cloudRecords(demo, 'device-status')).some(
          (record) => (bodyOf(record) as { to: string }).to === 'alarm',
        ),
      'the alarm state in the cloud',
      15_000,
    )
    probe.stream.destroy()
    const changes = await awaitRecords(demo, 'device-status', 3)
    expect(changes.map((record) => bodyOf(record) as { from: string; to: string })).toMatchObject([
      { from: 'unknown', to: 'online' },
      { from: 'online', to: 'alarm' },
      { from: 'alarm', to: 'offline' },
    ])
    const state = (await callApi(
      api,
      'GET',
      `/tenants/${DEMO_TENANT}/state/value?namespace=fleet&key=probe`,
    )) as { value: { state: string } }
    expect(state.value.state).toBe('offline')
    await until(
      () => seen.some(([topic, payload]) => topic === 'state/probe' && payload.includes('"offline"')),
      'state/probe',
    )

    // Periodic rollup: readings of three devices in one window; the next message closes it.
    const second = await device(demo, 'second')
    const third = await device(demo, 'third')
    await second.publishAsync('sensors/second/power', JSON.stringify({ seq: 1, w: 10, wh: 1 }), { qos: 1 })
    for (let i = 0; i < 3; i++)
      await third.publishAsync('sensors/third/power', JSON.stringify({ seq: i, w: 10, wh: 1 }), { qos: 1 })
    await new Promise((resolve) => setTimeout(resolve, 1100))
    await second.publishAsync('sensors/second/power', JSON.stringify({ seq: 2, w: 10, wh: 1 }), { qos: 1 })
    const rollups = await awaitRecords(demo, 'rollup', 1)
    const last = bodyOf(rollups.at(-1)) as {
      readings: number
      distinctDevices: number
      heavyHitters: Array<{ device: string; readings: number }>
      start: string
      end: string
    }
    expect(Date.parse(last.end) - Date.parse(last.start)).toBe(1000)
    expect(last.readings).toBeGreaterThan(0)
    expect(last.distinctDevices).toBe(new Set(last.heavyHitters.map((hitter) => hitter.device)).size)
    const counts = last.heavyHitters.map((hitter) => hitter.readings)
    expect(counts).toEqual([...counts].sort((a, b) => b - a))
    expect(await demo.cloudCounts()).toMatchObject({ temperature: 2, alerts: 1 })
  }, 60_000)

  it('runs a simulated fleet whose readings reach the cloud, and a second start keeps what the first made', async () => {
    const dirs = { data: tempDir(), cloudData: tempDir() }
    const first = await start(dirs, 5, 5, 0.05)
    const fleet = first.fleet
    expect(fleet).toBeDefined()
    await until(() => (fleet?.stats().connected ?? 0) === 5, 'five devices online', 15_000)
    // Five devices, one of each kind: temperature readings and the state machine reach the cloud.
    await awaitRecords(first, 'temperature', 5)
    await awaitRecords(first, 'device-status', 5)
    const saved = join(dirs.data, DEMO_FLEET_FILE)
    expect(statSync(saved).mode & 0o777).toBe(0o600)
    const credentials = JSON.parse(readFileSync(saved, 'utf8')) as Array<{ id: string; password: string }>
    expect(credentials).toHaveLength(5)
    // A user change: the transformation is disabled.
    await callApi(apiOf(first), 'POST', `/tenants/${DEMO_TENANT}/functions/to-fahrenheit/disable`)
    // What it emitted before is delivered; after the restart nothing more comes.
    await until(() => first.gateway.outbox.usage(DEMO_TENANT).records === 0, 'an empty outbox', 15_000)
    const stored = (await first.cloudCounts()).temperature
    opened.splice(opened.indexOf(first), 1)
    await first.close()

    const second = await start(dirs, 5, 5)
    expect(second.createdTenant).toBe(false)
    // Same devices, same secrets: nothing was rotated.
    expect(JSON.parse(readFileSync(saved, 'utf8'))).toEqual(credentials)
    const acked = () => second.fleet?.stats().acked ?? 0
    await until(() => acked() >= 25, 'readings acknowledged after the restart', 15_000)
    const fn = (await callApi(apiOf(second), 'GET', `/tenants/${DEMO_TENANT}/functions/to-fahrenheit`)) as {
      function: { enabled: boolean }
    }
    expect(fn.function.enabled).toBe(false)
    expect((await second.cloudCounts()).temperature).toBe(stored)
    expect(existsSync(join(dirs.cloudData, 'cloud.db'))).toBe(true)
  }, 60_000)

  it('`taureau demo` prints how to sign in, and records reach the cloud store soon after', async () => {
    const data = tempDir()
    const demo = spawnDemo({
      args: ['--data', data, '--cloud-data', tempDir(), '--interval', '1', '--devices', '10'],
    })
    const { output } = demo
    try {
      // The first start also makes both identities and runs Argon2id at its real cost.
      await until(
        () => output.some((line) => line.startsWith('The first records reached')),
        'records in the cloud',
        60_000,
      )
      const text = output.join('\n')
      const token = readFileSync(join(data, 'admin-token'), 'utf8').trim()
      expect(text).toContain(`with the admin token: ${token}`)
      const ui = /web UI\s+(http:\/\/127\.0\.0\.1:\d+\/)/.exec(text)?.[1] as string
      expect((await fetch(ui)).status).toBe(200)
      await until(
        () => output.some((line) => /devices 10\/10 online, [1-9]\d* readings/.test(line)),
        'a status line',
        15_000,
      )
      expect(demo.stderr()).toBe('')
    } finally {
      expect(await demo.stop()).toBe(0)
    }
    expect(output.at(-1)).toBe('The demo stopped.')
  }, 90_000)

  it('names the flag to change when a port is taken', async () => {
    const first = await start({ data: tempDir(), cloudData: tempDir() })
    await expect(
      startDemo({
        data: tempDir(),
        cloudData: tempDir(),
        host: '127.0.0.1',
        mqttPort: 0,
        wsPort: 0,
        httpPort: 0,
        cloudPort: first.receiver.port,
        devices: 0,
        logLevel: 'silent',
        hasher: TEST_HASHER,
      }),
    ).rejects.toThrow(/--cloud-port/)
    await expect(
      startDemo({
        data: tempDir(),
        cloudData: tempDir(),
        host: '127.0.0.1',
        mqttPort: first.gateway.addresses.mqttPort,
        wsPort: 0,
        httpPort: 0,
        cloudPort: 0,
        devices: 0,
        logLevel: 'silent',
        hasher: TEST_HASHER,
      }),
    ).rejects.toThrow(/address is in use.*--mqtt-port/)
  })
})
