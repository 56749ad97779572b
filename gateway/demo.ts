// The demo: a gateway, a cloud receiver paired with it, a demo tenant with sample functions and a
// simulated fleet, all in one process on embedded defaults. What it creates is ordinary data: the
// tenant, devices and functions can be changed or deleted from the UI like any other.
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { Logger } from 'pino'
import {
  type DeviceCredentials,
  deviceIds,
  type Fleet,
  provisionDevices,
  SENSOR_KINDS,
  startFleet,
} from '../firmware-sim/index.ts'
import type { CloudStore, Receiver } from '../sync/index.ts'
import { ApiError, type ApiTarget, callApi } from './api-client.ts'
import { type ConfigLayer, loadConfig } from './config.ts'
import { GATEWAY_ERROR_CODES, GatewayError } from './errors.ts'
import { createGateway, type Gateway } from './gateway.ts'
import type { PasswordHasherOptions } from './password-hasher.ts'

/** The tenant the demo creates. */
export const DEMO_TENANT = 'demo'
/** The name the cloud receiver knows the demo gateway by. */
export const DEMO_GATEWAY_NAME = 'demo-site'
/** The devices' credentials, kept so that a restarted demo signs in as the same devices. */
export const DEMO_FLEET_FILE = 'demo-fleet.json'
/** The cloud streams the sample functions emit to. */
export const DEMO_STREAMS = ['temperature', 'alerts', 'rollup', 'device-status'] as const

const SAMPLE_DIR = join(import.meta.dirname, '../firmware-sim/demo')
const CLOUD_STORE_FILE = 'cloud.db'

/** One sample function: its source file in `firmware-sim/demo/` and how it is deployed. */
export interface SampleFunction {
  name: string
  file: string
  triggers: Array<{ topic: string } | { every: string }>
  output?: string
  config: Record<string, unknown>
}

/** The sample functions, one per serverless pattern. */
export const SAMPLE_FUNCTIONS: readonly SampleFunction[] = [
  {
    name: 'to-fahrenheit',
    file: 'to-fahrenheit.js',
    triggers: [{ topic: 'sensors/+/temperature' }],
    output: 'readings/fahrenheit',
    config: { minC: -40, maxC: 85 },
  },
  {
    name: 'vibration-alert',
    file: 'vibration-alert.js',
    triggers: [{ topic: 'sensors/+/vibration' }],
    config: { alpha: 0.05, threshold: 4, warmup: 30 },
  },
  {
    name: 'rollup',
    file: 'rollup.js',
    triggers: [{ topic: 'sensors/#' }, { every: '15s' }],
    config: { windowMs: 60_000, topN: 5, countMinWidth: 128, countMinDepth: 4, hllPrecision: 8 },
  },
  {
    name: 'device-status',
    file: 'device-status.js',
    triggers: [{ topic: 'status/+' }, { topic: 'alerts/+' }, { every: '30s' }],
    config: { clearAfterMs: 120_000 },
  },
]

/** Options of {@link startDemo}. */
export interface DemoOptions {
  /** The gateway's data dir (default `.taureau`). */
  data?: string | undefined
  /** The cloud receiver's data dir (default `.taureau-cloud`). */
  cloudData?: string | undefined
  /** The gateway's listening address and ports; config file, env and defaults fill the rest. */
  host?: string | undefined
  mqttPort?: number | undefined
  wsPort?: number | undefined
  httpPort?: number | undefined
  /** The receiver's port on 127.0.0.1 (default 7070; 0 for any). */
  cloudPort?: number | undefined
  /** A YAML config file for the gateway, as for `taureau gateway`. */
  configFile?: string | undefined
  /** Simulated devices (default 20; 0 for none) and readings per second each (default 1). */
  devices?: number | undefined
  rate?: number | undefined
  /** Probability that a vibration reading is an anomaly (the simulator's default when absent). */
  anomalyRate?: number | undefined
  logger?: Logger | undefined
  logLevel?: string | undefined
  /** Argon2id cost of the gateway's secrets; tests lower it. */
  hasher?: PasswordHasherOptions | undefined
}

/** Counts of records the cloud receiver stored, by stream. */
export type CloudCounts = Record<string, number>

/** A running demo. */
export interface Demo {
  readonly gateway: Gateway
  readonly receiver: Receiver
  readonly cloudStore: CloudStore
  /** The simulated fleet; undefined with `devices: 0`. */
  readonly fleet: Fleet | undefined
  /** What this start created: false when the tenant was there from an earlier run. */
  readonly createdTenant: boolean
  readonly cloudDataDir: string
  /** Records stored in the cloud from the demo gateway, by the sample functions' streams. */
  cloudCounts(): Promise<CloudCounts>
  /** Stops the fleet, then the gateway, then the receiver and its store. */
  close(): Promise<void>
}

/**
 * Starts the demo. The first start creates the cloud identity and store, pairs the gateway with
 * the receiver, creates the tenant `demo` with the sample functions and provisions the devices;
 * later starts reuse all of it and change nothing a user may have edited (a deleted tenant is
 * created again).
 */
export async function startDemo(options: DemoOptions = {}): Promise<Demo> {
  const { createReceiver, createThreadedSqliteCloudStore, encodeKey, loadIdentity } = await import(
    '../sync/index.ts'
  )
  const layer: ConfigLayer = {
    data: options.data,
    host: options.host,
    mqtt: { port: options.mqttPort, wsPort: options.wsPort },
    http: { port: options.httpPort },
    log: { level: options.logLevel },
  }
  // Read once without the uplink to learn the data dir, whose identity the receiver must accept.
  const dataDir = resolve(loadConfig({ file: options.configFile, flags: layer }).data)
  const cloudDataDir = resolve(options.cloudData ?? '.taureau-cloud')
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  mkdirSync(cloudDataDir, { recursive: true, mode: 0o700 })

  const closers: Array<() => Promise<void>> = []
  const closeAll = async (): Promise<void> => {
    for (const close of closers.reverse()) await close()
  }
  try {
    const cloudIdentity = await loadIdentity(cloudDataDir)
    let storeFailure: Error | undefined
    const cloudStore = await createThreadedSqliteCloudStore({
      file: join(cloudDataDir, CLOUD_STORE_FILE),
      onFailure(error) {
        storeFailure = error
        options.logger?.error({ err: error }, 'the demo cloud store failed')
      },
    })
    closers.push(() => cloudStore.close())
    await pairGateway(cloudStore, encodeKey((await loadIdentity(dataDir)).publicKey))
    const receiver = await createReceiver({
      store: cloudStore,
      identity: cloudIdentity,
      host: '127.0.0.1',
      port: options.cloudPort ?? 7070,
    }).catch((error: unknown) => {
      throw listenError(error, 'cloud receiver', options.cloudPort ?? 7070, '--cloud-port')
    })
    closers.push(() => receiver.close())

    const config = loadConfig({
      file: options.configFile,
      flags: {
        ...layer,
        uplink: { cloud: `127.0.0.1:${receiver.port}`, cloudKey: encodeKey(cloudIdentity.publicKey) },
      },
    })
    const gateway = await createGateway({
      config,
      ...(options.logger === undefined ? {} : { logger: options.logger }),
      ...(options.hasher === undefined ? {} : { hasher: options.hasher }),
    }).catch((error: unknown) => {
      throw listenError(error, 'gateway', undefined, '--mqtt-port, --ws-port or --http-port')
    })
    closers.push(() => gateway.close())

    const api: ApiTarget = { url: gateway.addresses.httpUrl, token: gateway.adminToken }
    const createdTenant = await ensureTenant(api)
    const devices = await ensureDevices(api, dataDir, options.devices ?? 20)

    let fleet: Fleet | undefined
    if (devices.length > 0) {
      const started = startFleet({
        url: `mqtt://127.0.0.1:${gateway.addresses.mqttPort}`,
        devices,
        ratePerSec: options.rate ?? 1,
        kinds: [...SENSOR_KINDS],
        ...(options.anomalyRate === undefined ? {} : { anomalyRate: options.anomalyRate }),
      })
      fleet = started
      closers.push(async () => {
        await started.stop()
      })
    }

    return {
      gateway,
      receiver,
      cloudStore,
      fleet,
      createdTenant,
      cloudDataDir,
      async cloudCounts() {
        if (storeFailure !== undefined) throw storeFailure
        const counts: CloudCounts = {}
        for (const stream of DEMO_STREAMS) {
          counts[stream] = await cloudStore.count({ gateway: DEMO_GATEWAY_NAME, tenant: DEMO_TENANT, stream })
        }
        return counts
      },
      close: closeAll,
    }
  } catch (error) {
    await closeAll()
    throw error
  }
}

/** Registers the gateway's key with the receiver under {@link DEMO_GATEWAY_NAME} unless it is there. */
async function pairGateway(store: CloudStore, publicKey: string): Promise<void> {
  const known = await store.gatewayByKey(publicKey)
  if (known !== undefined) return
  const taken = (await store.listGateways()).find((gateway) => gateway.name === DEMO_GATEWAY_NAME)
  if (taken !== undefined) {
    throw new GatewayError(
      GATEWAY_ERROR_CODES.conflict,
      `Cannot pair the demo gateway with the cloud receiver as the name '${DEMO_GATEWAY_NAME}' is taken by another key; remove it with \`taureau cloud gateway remove ${DEMO_GATEWAY_NAME} --data DIR\` or use another --cloud-data`,
    )
  }
  await store.addGateway(DEMO_GATEWAY_NAME, publicKey)
}

/** Creates the demo tenant and deploys the sample functions; false when the tenant was there. */
async function ensureTenant(api: ApiTarget): Promise<boolean> {
  try {
    await callApi(api, 'POST', '/tenants', { id: DEMO_TENANT })
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) return false
    throw error
  }
  await deploySampleFunctions(api, DEMO_TENANT)
  return true
}

/** Deploys the sample functions to a tenant through the API (a new version of each). */
export async function deploySampleFunctions(
  api: ApiTarget,
  tenant: string,
  samples: readonly SampleFunction[] = SAMPLE_FUNCTIONS,
): Promise<void> {
  for (const sample of samples) {
    await callApi(api, 'POST', `/tenants/${tenant}/functions`, {
      name: sample.name,
      source: readFileSync(join(SAMPLE_DIR, sample.file), 'utf8'),
      triggers: sample.triggers,
      ...(sample.output === undefined ? {} : { output: sample.output }),
      config: sample.config,
    })
  }
}

/**
 * The fleet's credentials: those saved by an earlier run for devices that still exist, and new
 * ones (a device is created, or its secret rotated) for the rest. Saved to the data dir, mode 0600.
 */
async function ensureDevices(api: ApiTarget, dataDir: string, count: number): Promise<DeviceCredentials[]> {
  if (count === 0) return []
  const file = join(dataDir, DEMO_FLEET_FILE)
  const saved = new Map<string, DeviceCredentials>()
  if (existsSync(file)) {
    try {
      for (const device of JSON.parse(readFileSync(file, 'utf8')) as DeviceCredentials[])
        saved.set(device.id, device)
    } catch {
      // A damaged file only costs new secrets: every device below is provisioned again.
    }
  }
  const listed = (await callApi(api, 'GET', `/tenants/${DEMO_TENANT}/devices`)) as {
    devices: Array<{ id: string }>
  }
  const existing = new Set(listed.devices.map((device) => device.id))
  const ids = deviceIds(count)
  const missing = ids.filter((id) => !existing.has(id) || !saved.has(id))
  const provisioned = await provisionDevices({
    apiUrl: api.url,
    token: api.token,
    tenant: DEMO_TENANT,
    ids: missing,
  })
  for (const device of provisioned) saved.set(device.id, device)
  writeFileSync(file, `${JSON.stringify([...saved.values()], null, 2)}\n`, { mode: 0o600 })
  chmodSync(file, 0o600)
  return ids.map((id) => saved.get(id) as DeviceCredentials)
}

/** An address in use becomes an error that says which flag picks another port. */
function listenError(error: unknown, what: string, port: number | undefined, flag: string): Error {
  if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') return error as Error
  const where = port === undefined ? '' : ` on port ${port}`
  return new GatewayError(
    GATEWAY_ERROR_CODES.invalidConfig,
    `Cannot start the ${what}${where} as the address is in use (another Taureau or MQTT broker?); pass ${flag} to pick another port, 0 for any`,
  )
}
