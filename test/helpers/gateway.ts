import { rmSync } from 'node:fs'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { type ConfigLayer, mergeLayers } from '../../gateway/config.ts'
import type { Scheduler } from '../../gateway/functions.ts'
import { createGateway, type Gateway, loadConfig } from '../../gateway/index.ts'
import { tempDir } from './temp.ts'

export { tempDir }

/** A gateway on 127.0.0.1 with every port 0, in a temp data dir removed on dispose. */
export interface TestGateway extends Gateway {
  readonly dataDir: string
  /** Calls the API with the admin token (or `token`); returns status and parsed body. */
  api(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; body: any }>
  /** Creates a tenant and devices; returns each device's secret. */
  provision(
    tenantId: string,
    deviceIds: string[],
    quotas?: Record<string, number>,
  ): Promise<Record<string, string>>
  mqttUrl: string
  wsUrl: string
  /** Keeps the data dir on dispose, for a restart on the same data. */
  keepData(): void
}

/** Lowest Argon2id cost libsodium allows, so tests sign in fast; production uses the defaults. */
export const TEST_HASHER = {
  opsLimit: 1,
  memLimitBytes: 8192,
  // The worker stays for the gateway's life, as it did before it exited when idle: its exit 30 s
  // after the last sign-in would be an event in the middle of timing-sensitive tests (the uplink's
  // leakage test captures phases that start after the devices sign in). Idle exit has its own test.
  idleExitMs: 3_600_000,
}

/** Starts a gateway for a test; `await using gw = await startGateway()`. */
export async function startGateway(
  layer: ConfigLayer = {},
  dataDir = tempDir(),
  options: { scheduler?: Scheduler; uiDir?: string } = {},
): Promise<TestGateway & AsyncDisposable> {
  const config = loadConfig({
    env: {},
    flags: mergeLayers(
      {
        data: dataDir,
        host: '127.0.0.1',
        mqtt: { port: 0, wsPort: 0 },
        http: { port: 0 },
        log: { level: 'silent' },
        functions: { workers: 1 },
      },
      layer,
    ),
  })
  const gateway = await createGateway({ config, hasher: TEST_HASHER, ...options })
  const api: TestGateway['api'] = async (method, path, body, token = gateway.adminToken) => {
    const response = await fetch(`${gateway.addresses.httpUrl}/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    })
    const text = await response.text()
    return { status: response.status, body: text === '' ? undefined : JSON.parse(text) }
  }
  let removeDir = true
  const test = Object.create(gateway) as TestGateway & AsyncDisposable
  Object.assign(test, {
    dataDir,
    api,
    mqttUrl: `mqtt://127.0.0.1:${gateway.addresses.mqttPort}`,
    wsUrl: `ws://127.0.0.1:${gateway.addresses.wsPort}/mqtt`,
    async provision(tenantId: string, deviceIds: string[], quotas?: Record<string, number>) {
      const created = await api('POST', '/tenants', { id: tenantId, ...(quotas ? { quotas } : {}) })
      if (created.status !== 201) throw new Error(`provision failed: ${JSON.stringify(created.body)}`)
      const secrets: Record<string, string> = {}
      for (const deviceId of deviceIds) {
        const device = await api('POST', `/tenants/${tenantId}/devices`, { id: deviceId })
        secrets[deviceId] = device.body.secret
      }
      return secrets
    },
    keepData() {
      removeDir = false
    },
    async [Symbol.asyncDispose]() {
      await gateway.close()
      if (removeDir) rmSync(dataDir, { recursive: true, force: true })
    },
  })
  return test
}

/** Connects an mqtt.js client and waits for CONNACK; rejects with the refusal. */
export function connect(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, {
      reconnectPeriod: 0,
      connectTimeout: 5000,
      protocolVersion: 4,
      ...options,
    })
    const fail = (error: Error) => {
      client.end(true)
      reject(error)
    }
    client.once('connect', () => {
      client.off('error', fail)
      resolve(client)
    })
    client.once('error', fail)
    client.once('close', () => fail(new Error('connection closed before CONNACK')))
  })
}

/** The CONNACK return code a refused CONNECT got (mqtt.js puts it on the error as `code`). */
export async function connackCode(url: string, options: IClientOptions = {}): Promise<number> {
  try {
    const client = await connect(url, options)
    await client.endAsync()
    return 0
  } catch (error) {
    const code = (error as { code?: number }).code
    if (typeof code !== 'number') throw error
    return code
  }
}

/** Collects messages a client receives: `[topic, payload as string]`. */
export function collect(client: MqttClient): Array<[string, string]> {
  const received: Array<[string, string]> = []
  client.on('message', (topic, payload) => received.push([topic, payload.toString()]))
  return received
}

/** Waits until `condition()` holds, polling every few ms (bounded); no fixed sleeps. */
export async function until(
  condition: () => boolean | Promise<boolean>,
  what = 'condition',
  timeoutMs = 5000,
): Promise<void> {
  const start = Date.now()
  while (!(await condition())) {
    if (Date.now() - start > timeoutMs) throw new Error(`Timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** Resolves when the client's connection closes. */
export function closed(client: MqttClient): Promise<void> {
  return new Promise((resolve) => client.once('close', () => resolve()))
}

/** Subscribes and resolves with the raw SUBACK return codes (0x80 for a refused filter). */
export function subscribeGranted(
  client: MqttClient,
  filters: Record<string, { qos: 0 | 1 | 2 }>,
): Promise<number[]> {
  return new Promise((resolve) => {
    const onPacket = (packet: { cmd: string; granted?: number[] }) => {
      if (packet.cmd !== 'suback') return
      client.off('packetreceive', onPacket as never)
      resolve(packet.granted ?? [])
    }
    client.on('packetreceive', onPacket as never)
    client.subscribe(filters, () => {})
  })
}

/** The gateway's Prometheus text, fetched with the admin token. */
export async function metricsText(gw: Gateway): Promise<string> {
  const response = await fetch(`${gw.addresses.httpUrl}/metrics`, {
    headers: { authorization: `Bearer ${gw.adminToken}` },
  })
  if (response.status !== 200) throw new Error(`GET /metrics answered ${response.status}`)
  return response.text()
}
