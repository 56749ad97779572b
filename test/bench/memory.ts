// The memory benchmark: `npm run bench:memory` (see docs/benchmark-methods.md#memory). Resident
// memory of whole processes, read from /proc, against the goals of the simulator issue:
//  1. The demo (`taureau demo`: gateway, cloud receiver, the four sample functions) idle, after a
//     period of traffic from 20 devices, with the devices still connected: at most 100 MB.
//  2. A gateway with 100 tenants, one function each, every function run at least once, one device
//     per tenant connected: at most 200 MB.
// The peer is bare aedes in its own process with as many idle clients connected.
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import mqtt, { type MqttClient } from 'mqtt'
import { deviceIds, provisionDevices, startFleet } from '../../firmware-sim/index.ts'
import { type ApiTarget, callApi } from '../../gateway/api-client.ts'
import { buildGateway, CLI_BUNDLE } from '../../gateway/build.ts'
import { DEMO_TENANT, deploySampleFunctions, SAMPLE_FUNCTIONS } from '../../gateway/demo.ts'
import { PACKAGED_NODE_VERSION } from '../../gateway/package.ts'
import {
  JEMALLOC_PACKAGE,
  RUNTIME_ENV,
  RUNTIME_NODE_FLAGS,
  runtimeEnvironment,
} from '../../gateway/runtime-settings.ts'
import { spawnDemo, spawnGateway } from '../helpers/gateway-process.ts'
import { startBareAedes } from './_bare-aedes.ts'
import { stopChild } from './_child.ts'
import { startCloudProcess } from './_cloud.ts'
import { mib, processRssBytes, sampleProcess } from './_process-stats.ts'
import { byMode } from './_quick.ts'
import type { BenchFigure, BenchPlot, BenchTable } from './_section.ts'
import { writeSection } from './_section.ts'
import { median } from './_stats.ts'

const { values: flags } = parseArgs({
  options: {
    'demo-devices': { type: 'string', default: '20' },
    'traffic-seconds': { type: 'string', default: byMode('30', '10') },
    'idle-seconds': { type: 'string', default: byMode('60', '8') },
    tenants: { type: 'string', default: '100' },
    'results-dir': { type: 'string', default: 'test/bench/results' },
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
})

const USAGE = `npm run bench:memory [-- options]
  --demo-devices N     devices sending to the demo (default 20)
  --traffic-seconds S  traffic before the demo's idle reading (default 30; quick 10)
  --idle-seconds S     idle time; RSS is the median over its second half (default 60; quick 8)
  --tenants N          tenants of the multi-tenant run (default 100)
  --quick              shorter phases (also BENCH_QUICK=1)
`

const DEMO_GOAL_MB = 100
const TENANTS_GOAL_MB = 200
const MB = 1_000_000

const log = (line: string): void => {
  process.stderr.write(`${line}\n`)
}
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const positive = (name: string, value: string | undefined): number => {
  const number = Number(value)
  if (!Number.isInteger(number) || number <= 0)
    throw new RangeError(`Cannot run the benchmark as --${name} '${value}' is not a positive whole number`)
  return number
}

/** RSS readings every 500 ms for `ms`; the median of the second half (the first settles). */
async function idleRss(
  pid: number,
  ms: number,
): Promise<{ medianBytes: number; series: Array<[number, number]> }> {
  const sampler = sampleProcess(pid, 500)
  await sleep(ms)
  const samples = sampler.stop()
  const settled = samples.slice(Math.floor(samples.length / 2))
  return {
    medianBytes: median(settled.map((sample) => sample.rssBytes)),
    series: samples.map((sample) => [
      Math.round((sample.atMs - (samples[0]?.atMs ?? 0)) / 100) / 10,
      mib(sample.rssBytes),
    ]),
  }
}

/** `taureau demo` with no fleet of its own, every port picked by the system. */
async function startDemoProcess(root: string, command: [string, ...string[]]) {
  const data = join(root, 'demo-data')
  const demo = spawnDemo({
    command,
    args: ['--devices', '0', '--data', data, '--cloud-data', join(root, 'demo-cloud'), '--interval', '3600'],
  })
  const { httpUrl, mqttPort } = await demo.ready()
  const child = demo.child
  const api: ApiTarget = { url: httpUrl, token: readFileSync(join(data, 'admin-token'), 'utf8').trim() }
  return { pid: child.pid as number, children: [child], mqttPort, api }
}

/** The demo's gateway as `taureau gateway`, paired with a `taureau cloud` in its own process. */
async function startDemoGateway(root: string, command: [string, ...string[]]) {
  const gatewayDir = join(root, 'gateway-data')
  const cloud = await startCloudProcess({
    command,
    cloudDir: join(root, 'gateway-cloud'),
    gatewayDir,
    name: 'demo-site',
  })
  const gateway = await spawnGateway({
    command,
    dataDir: gatewayDir,
    args: ['--cloud', `127.0.0.1:${cloud.port}`, '--cloud-key', cloud.cloudKey],
    logLevel: 'warn',
    apiTimeoutMs: 30_000,
  })
  const api: ApiTarget = {
    url: gateway.httpUrl,
    token: readFileSync(join(gatewayDir, 'admin-token'), 'utf8').trim(),
  }
  await callApi(api, 'POST', '/tenants', { id: DEMO_TENANT })
  await deploySampleFunctions(api, DEMO_TENANT)
  return {
    pid: gateway.child.pid as number,
    children: [gateway.child, cloud.child],
    mqttPort: gateway.mqttPort,
    api,
  }
}

/**
 * Connects idle mqtt.js clients (no publishing) to a broker, one after another: the gateway checks
 * at most a few sign-ins from one address at once and refuses the rest.
 */
async function idleClients(
  port: number,
  credentials: Array<{ username: string; password: string; id: string }>,
) {
  const clients: MqttClient[] = []
  for (const device of credentials) {
    const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
      username: device.username,
      password: device.password,
      clientId: device.id,
      reconnectPeriod: 0,
      protocolVersion: 4,
    })
    clients.push(client)
    await new Promise<void>((resolveClient, reject) => {
      client.once('connect', () => resolveClient())
      client.once('error', reject)
    })
  }
  return clients
}

async function main(): Promise<void> {
  if (flags.help) {
    process.stdout.write(USAGE)
    return
  }
  const demoDevices = positive('demo-devices', flags['demo-devices'])
  const trafficMs = positive('traffic-seconds', flags['traffic-seconds']) * 1000
  const idleMs = positive('idle-seconds', flags['idle-seconds']) * 1000
  const tenants = positive('tenants', flags.tenants)
  const startedAt = new Date()
  const root = mkdtempSync(join(tmpdir(), 'taureau-memory-bench-'))
  const children: ChildProcess[] = []
  process.on('exit', () => {
    for (const child of children) child.kill('SIGKILL')
  })

  // The gateway runs as it does on a box: the bundle, no TypeScript compiler loaded, with the
  // Node options, jemalloc and malloc settings of the package's /usr/bin/taureau. Every child
  // inherits the allocator and its settings, the peer too.
  await buildGateway()
  const { env, jemalloc } = runtimeEnvironment()
  Object.assign(process.env, env)
  if (jemalloc === undefined) {
    log(`${JEMALLOC_PACKAGE} is not installed: the processes run on glibc's malloc, unlike on a box`)
  }
  const command: [string, ...string[]] = [process.execPath, ...RUNTIME_NODE_FLAGS, CLI_BUNDLE]

  // 1. The demo's gateway (the receiver apart, in its own process: the cloud), then the whole
  // `taureau demo` process: traffic, then idle with the devices connected.
  const measureDemo = async (kind: 'gateway' | 'all-in-one') => {
    log(`Demo ${kind}: ${demoDevices} devices at 1/s for ${trafficMs / 1000} s, then ${idleMs / 1000} s idle`)
    const target =
      kind === 'gateway' ? await startDemoGateway(root, command) : await startDemoProcess(root, command)
    children.push(...target.children)
    const pid = target.pid
    const startRss = processRssBytes(pid)
    const devices = await provisionDevices({
      apiUrl: target.api.url,
      token: target.api.token,
      tenant: DEMO_TENANT,
      ids: deviceIds(demoDevices),
    })
    const url = `mqtt://127.0.0.1:${target.mqttPort}`
    const traffic = startFleet({ url, devices, ratePerSec: 1 })
    const active = sampleProcess(pid, 500)
    await sleep(trafficMs)
    const activeRss = active.stop().map((entry) => entry.rssBytes)
    const summary = await traffic.stop()
    // Connected and silent: one reading an hour.
    const quiet = startFleet({ url, devices, ratePerSec: 1 / 3600, arrivals: 'steady' })
    await sleep(2000)
    const idle = await idleRss(pid, idleMs)
    await quiet.stop()
    for (const child of target.children) await stopChild(child)
    return { startRss, activeRss, idle, acked: summary.acked }
  }
  const demoGateway = await measureDemo('gateway')
  const demoAll = await measureDemo('all-in-one')

  // 2. Many tenants, one function each.
  log(`Gateway with ${tenants} tenants, one function each`)
  const gateway = await spawnGateway({
    command,
    dataDir: join(root, 'tenants-data'),
    logLevel: 'warn',
    apiTimeoutMs: 30_000,
  })
  children.push(gateway.child)
  const gatewayPid = gateway.child.pid as number
  await sleep(2000)
  const emptyRss = (await idleRss(gatewayPid, Math.min(idleMs, 6000))).medianBytes
  const api: ApiTarget = {
    url: gateway.httpUrl,
    token: readFileSync(join(root, 'tenants-data', 'admin-token'), 'utf8').trim(),
  }
  const sample = SAMPLE_FUNCTIONS.filter((fn) => fn.name === 'to-fahrenheit')
  const tenantDevices: Array<{ username: string; password: string; id: string; tenant: string }> = []
  for (let index = 1; index <= tenants; index++) {
    const tenant = `tenant-${String(index).padStart(3, '0')}`
    await callApi(api, 'POST', '/tenants', { id: tenant })
    await deploySampleFunctions(api, tenant, sample)
    const [device] = await provisionDevices({ apiUrl: api.url, token: api.token, tenant, ids: ['probe'] })
    if (device !== undefined) tenantDevices.push({ ...device, tenant })
  }
  const clients = await idleClients(gateway.mqttPort, tenantDevices)
  // Every tenant's function runs once: its sandbox is made and its module loaded.
  await Promise.all(
    clients.map(async (client) => {
      const output = new Promise<void>((resolveOutput) => client.once('message', () => resolveOutput()))
      await client.subscribeAsync('readings/fahrenheit', { qos: 1 })
      await client.publishAsync(
        'sensors/probe/temperature',
        JSON.stringify({ seq: 1, ts: Date.now(), c: 20 }),
        {
          qos: 1,
        },
      )
      await output
    }),
  )
  const tenantsIdle = await idleRss(gatewayPid, idleMs)
  for (const client of clients) client.end(true)
  await stopChild(gateway.child)

  // The peer: bare aedes, idle with the same number of clients.
  const bare = await startBareAedes()
  const bareEmpty = (await idleRss(bare.pid, Math.min(idleMs, 6000))).medianBytes
  const bareClients = await idleClients(
    bare.port,
    tenantDevices.map((device) => ({ ...device, id: `${device.tenant}-${device.id}` })),
  )
  const bareIdle = await idleRss(bare.pid, idleMs)
  for (const client of bareClients) client.end(true)
  await bare.close()

  const mb = (bytes: number) => Math.round(bytes / 100_000) / 10
  const demoIdleMb = mb(demoGateway.idle.medianBytes)
  const tenantsIdleMb = mb(tenantsIdle.medianBytes)
  const figures: BenchFigure[] = [
    {
      name: `the demo's gateway, idle (4 functions, uplink on, ${demoDevices} devices connected)`,
      value: demoIdleMb,
      unit: 'MB RSS',
      peer: { name: 'bare aedes, idle', value: mb(bareEmpty) },
      ratio: Math.round((demoGateway.idle.medianBytes / bareEmpty) * 100) / 100,
      goal: { op: '<=', value: DEMO_GOAL_MB },
    },
    {
      name: `${tenants} tenants, one function each, one device each connected`,
      value: tenantsIdleMb,
      unit: 'MB RSS',
      peer: { name: `bare aedes, ${tenants} clients`, value: mb(bareIdle.medianBytes) },
      ratio: Math.round((tenantsIdle.medianBytes / bareIdle.medianBytes) * 100) / 100,
      goal: { op: '<=', value: TENANTS_GOAL_MB },
    },
    {
      name: 'memory per tenant with one function',
      value: Math.round(((tenantsIdle.medianBytes - emptyRss) / tenants / MB) * 100) / 100,
      unit: 'MB',
      note: `(RSS with ${tenants} tenants − RSS of the empty gateway) / ${tenants}`,
    },
  ]
  const tables: BenchTable[] = [
    {
      caption: 'Resident memory (MB = 10^6 bytes)',
      columns: ['process', 'state', 'RSS (MB)'],
      rows: [
        ...(
          [
            ["the demo's gateway", demoGateway],
            ['`taureau demo` (gateway and receiver)', demoAll],
          ] as const
        ).flatMap(([name, run]) => [
          [name, 'just started', mb(run.startRss)],
          [name, `${demoDevices} devices at 1/s (median)`, mb(median(run.activeRss))],
          [name, `${demoDevices} devices at 1/s (max)`, mb(Math.max(...run.activeRss))],
          [name, 'idle, devices connected', mb(run.idle.medianBytes)],
        ]),
        ['gateway', 'no tenants, idle', mb(emptyRss)],
        ['gateway', `${tenants} tenants, functions run, idle`, tenantsIdleMb],
        ['bare aedes', 'no clients, idle', mb(bareEmpty)],
        ['bare aedes', `${tenants} clients, idle`, mb(bareIdle.medianBytes)],
      ],
    },
  ]
  const plots: BenchPlot[] = [
    {
      id: 'memory-idle',
      title: 'RSS while idle (the median of the second half is the figure)',
      kind: 'line',
      x: { label: 'seconds' },
      y: { label: 'RSS (MiB)' },
      series: [
        { name: "the demo's gateway", points: demoGateway.idle.series },
        { name: '`taureau demo`', points: demoAll.idle.series },
        { name: `gateway, ${tenants} tenants`, points: tenantsIdle.series },
        { name: `bare aedes, ${tenants} clients`, points: bareIdle.series },
      ],
    },
  ]
  const file = writeSection(
    resolve(flags['results-dir'] as string),
    {
      id: 'memory',
      title: 'Memory: the demo idle, and 100 tenants',
      command: 'npm run bench:memory',
      startedAt: startedAt.toISOString(),
      durationSec: Math.round((Date.now() - startedAt.getTime()) / 1000),
      method:
        'RSS of whole processes (all threads) from /proc: the `taureau demo` process after traffic from simulated devices, and a `taureau gateway` with many tenants whose functions have all run; bare aedes with as many clients is the peer. See [the method](benchmark-methods.md#memory).',
      figures,
      tables,
      plots,
      notes: [
        `Idle is ${idleMs / 1000} s with the devices connected, and its figure the median of the second half: the password hasher's worker (Argon2id, about 25 MB) starts with the devices' sign-ins and exits 30 s after the last one, so a box is at the figure from then on until devices sign in again. The plot shows the whole window.`,
        `The demo's traffic phases acknowledged ${demoGateway.acked} and ${demoAll.acked} readings. Its functions' schedules (rollup every 15 s, device states every 30 s) keep running while idle.`,
        'Every process runs the bundle (`npm run build`), as on an edge box: run from the TypeScript sources, each thread also loads tsx.',
        `The gateway runs with the package's settings (gateway/runtime-settings.ts): node ${RUNTIME_NODE_FLAGS.join(' ')}, ${Object.entries(
          RUNTIME_ENV,
        )
          .map(([name, value]) => `${name}=${value}`)
          .join(', ')}, ${
          jemalloc === undefined
            ? `on glibc's malloc as ${JEMALLOC_PACKAGE} is not installed here (a box preloads jemalloc, which holds about 15 MB less)`
            : `on jemalloc (${jemalloc}) with MALLOC_CONF=${env.MALLOC_CONF}, preloaded as /usr/bin/taureau does`
        }; the peer runs the same way. On this machine's Node 20; the package ships Node ${PACKAGED_NODE_VERSION}.`,
      ],
    },
    { demoGateway, demoAll, tenantsIdle, bareIdle, emptyRss, bareEmpty },
  )
  log(`Wrote ${file}`)
  rmSync(root, { recursive: true, force: true })
}

await main()
process.exit(0)
