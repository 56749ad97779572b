// The scale benchmark: `npm run bench:scale` (see docs/benchmark-methods.md#scale). The simulator's
// fleet against a gateway running the demo's sample functions, streaming to a cloud receiver, each
// in its own process; the same fleet against bare aedes in the same run as the peer.
//  1. Fleet: 1,000 devices at 1 reading/s each (all five sensor kinds, QoS 1). Reported: latency
//     from the device's publish to the record's arrival in the cloud store (the temperature readings,
//     which `to-fahrenheit` emits), PUBACK latency, and the gateway's CPU and RSS.
//  2. Maximum throughput: 100 devices stepping up their rate; acknowledged readings per second
//     against the offered rate, gateway and bare aedes alternately at each step.
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import {
  type DeviceCredentials,
  deviceIds,
  type FleetSummary,
  provisionDevices,
  startFleet,
} from '../../firmware-sim/index.ts'
import { type ApiTarget, callApi } from '../../gateway/api-client.ts'
import { buildGateway, CLI_BUNDLE } from '../../gateway/build.ts'
import { DEMO_TENANT, deploySampleFunctions } from '../../gateway/demo.ts'
import { RUNTIME_NODE_FLAGS, runtimeEnvironment } from '../../gateway/runtime-settings.ts'
import { type CloudRecord, createSqliteCloudStore } from '../../sync/index.ts'
import { type GatewayProcess, spawnGateway } from '../helpers/gateway-process.ts'
import { startBareAedes } from './_bare-aedes.ts'
import { stopChild } from './_child.ts'
import { startCloudProcess } from './_cloud.ts'
import { coresUsed, mib, type ProcessSample, sampleProcess } from './_process-stats.ts'
import { byMode } from './_quick.ts'
import { type BenchFigure, type BenchPlot, type BenchTable, cdfPoints, writeSection } from './_section.ts'
import { median } from './_stats.ts'

const { values: flags } = parseArgs({
  options: {
    devices: { type: 'string', default: process.env.BENCH_SCALE_DEVICES ?? '1000' },
    rate: { type: 'string', default: process.env.BENCH_SCALE_RATE ?? '1' },
    'warmup-seconds': {
      type: 'string',
      default: process.env.BENCH_SCALE_WARMUP_SECONDS ?? byMode('15', '5'),
    },
    seconds: { type: 'string', default: process.env.BENCH_SCALE_SECONDS ?? byMode('60', '15') },
    'max-devices': { type: 'string', default: process.env.BENCH_SCALE_MAX_DEVICES ?? '100' },
    'max-rates': {
      type: 'string',
      default: process.env.BENCH_SCALE_MAX_RATES ?? byMode('5,10,20,40,80', '10,40'),
    },
    'step-seconds': { type: 'string', default: process.env.BENCH_SCALE_STEP_SECONDS ?? byMode('10', '4') },
    'results-dir': { type: 'string', default: 'test/bench/results' },
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
})

const USAGE = `npm run bench:scale [-- options]
  --devices N          devices of the fleet run (default 1000)
  --rate HZ            readings per second of each (default 1)
  --warmup-seconds S   after every device is online, before measuring (default 15; quick 5)
  --seconds S          the measured window (default 60; quick 15)
  --max-devices N      devices of the maximum-throughput steps (default 100)
  --max-rates LIST     readings per second of each device, one step each (default 5,10,20,40,80; quick 10,40)
  --step-seconds S     measured time of each step, after 2 s of warm-up (default 10; quick 4)
  --quick              shorter windows and fewer steps, to check the pipeline (also BENCH_QUICK=1)
`

const positive = (name: string, value: string | undefined): number => {
  const number = Number(value)
  if (!Number.isFinite(number) || number <= 0)
    throw new RangeError(`Cannot run the benchmark as --${name} '${value}' is not a positive number`)
  return number
}

const log = (line: string): void => {
  process.stderr.write(`${line}\n`)
}
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Tenant quotas that never throttle this load. */
const QUOTAS = {
  maxConnections: 100_000,
  maxPersistentSessions: 100_000,
  maxMessagesPerSec: 10_000_000,
  burstMessages: 10_000_000,
  outboxBytes: 1024 * 1024 * 1024,
}
/**
 * Everything the fleet's devices and the demo's functions need; the rest is the defaults. The
 * demo's `rollup` sees every reading of the tenant and keeps its window in state: batches of 512
 * (default 64) let its one lane keep up with more (see docs/demo.md).
 */
function gatewayConfig(shaper: { epochMs: number; cellsPerEpoch: number }) {
  return {
    tenantDefaults: { quotas: QUOTAS },
    functions: { maxBatch: 512 },
    uplink: { shaper: { mode: 'epoch', ...shaper } },
  }
}
/**
 * The uplink is sized for each run, as docs/uplink.md says to size it for the busiest hour: the
 * fleet run's temperature records (a fifth of the readings, ~120 bytes framed) take ~25 cells/s.
 */
const FLEET_SHAPER = { epochMs: 1000, cellsPerEpoch: 48 }
const MAX_SHAPER = { epochMs: 100, cellsPerEpoch: 40 }
const CONNECT_TIMEOUT_MS = 300_000

/** Every record of the temperature stream, oldest first. */
async function temperatureRecords(cloudDir: string): Promise<CloudRecord[]> {
  const store = await createSqliteCloudStore({ file: join(cloudDir, 'cloud.db') })
  const records: CloudRecord[] = []
  try {
    for (;;) {
      const last = records.at(-1)
      const page = await store.records({
        tenant: DEMO_TENANT,
        stream: 'temperature',
        limit: 10_000,
        ...(last === undefined ? {} : { after: { gateway: last.gateway, seq: last.seq } }),
      })
      records.push(...page)
      if (page.length < 10_000) return records
    }
  } finally {
    await store.close()
  }
}

/** Waits until the tenant's outbox is empty: everything emitted reached the cloud. */
async function drainOutbox(api: ApiTarget, timeoutMs = 120_000): Promise<boolean> {
  const start = performance.now()
  while (performance.now() - start < timeoutMs) {
    const { usage } = (await callApi(api, 'GET', `/tenants/${DEMO_TENANT}/outbox?limit=1`)) as {
      usage: { records: number }
    }
    if (usage.records === 0) return true
    await sleep(500)
  }
  return false
}

interface FleetRun {
  target: 'gateway' | 'bare'
  devices: number
  ratePerSec: number
  connectSeconds: number
  /** Devices online when the warm-up began. */
  connectedAtStart: number
  windowStartMs: number
  windowEndMs: number
  ackedPerSec: number
  ackLatencyMs: number[]
  cpuCores: number
  rssMiB: { median: number; max: number }
  loadGeneratorCores: number
  summary: FleetSummary
  rssSeries: Array<[number, number]>
}

/**
 * Runs a fleet against one broker: connect, warm up, measure, stop. Only the readings sent in the
 * measured window count; wall-clock `Date.now()` marks it, the clock the cloud's times use too.
 */
async function runFleet(options: {
  target: 'gateway' | 'bare'
  pid: number
  port: number
  devices: DeviceCredentials[]
  ratePerSec: number
  warmupMs: number
  measureMs: number
}): Promise<FleetRun> {
  const { devices, ratePerSec } = options
  let windowStartMs = Number.POSITIVE_INFINITY
  let windowEndMs = Number.POSITIVE_INFINITY
  const ackLatencyMs: number[] = []
  let ackedInWindow = 0
  const connectStart = performance.now()
  const fleet = startFleet({
    url: `mqtt://127.0.0.1:${options.port}`,
    devices,
    ratePerSec,
    qos: 1,
    clockDriftPpm: 0,
    clockOffsetMs: 0,
    rampMs: Math.min(devices.length * 20, 10_000),
    onAck(ack) {
      if (ack.sentAt < windowStartMs || ack.sentAt >= windowEndMs) return
      ackedInWindow++
      ackLatencyMs.push(ack.ackedAt - ack.sentAt)
    },
  })
  try {
    const deadline = performance.now() + CONNECT_TIMEOUT_MS
    while (fleet.stats().connected < devices.length && performance.now() < deadline) await sleep(200)
    // A gateway that cannot keep up refuses readings and closes connections, which reconnect: the
    // run goes on with what is online, and the table shows how many were.
    const connectedAtStart = fleet.stats().connected
    if (connectedAtStart < devices.length) {
      log(
        `  ${options.target}: only ${connectedAtStart} of ${devices.length} devices online after ${CONNECT_TIMEOUT_MS / 1000} s; measuring anyway`,
      )
    }
    const connectSeconds = (performance.now() - connectStart) / 1000
    log(`  ${options.target}: ${devices.length} devices online in ${connectSeconds.toFixed(1)} s; warming up`)
    await sleep(options.warmupMs)
    const loadStart = process.cpuUsage()
    const sampler = sampleProcess(options.pid)
    windowStartMs = Date.now()
    await sleep(options.measureMs)
    windowEndMs = Date.now()
    const samples = sampler.stop()
    const load = process.cpuUsage(loadStart)
    // Acks of readings sent in the window arrive a little after it.
    await sleep(2000)
    const summary = await fleet.stop()
    const rss = samples.map((sample) => mib(sample.rssBytes))
    return {
      target: options.target,
      devices: devices.length,
      ratePerSec,
      connectSeconds,
      connectedAtStart,
      windowStartMs,
      windowEndMs,
      ackedPerSec: ackedInWindow / ((windowEndMs - windowStartMs) / 1000),
      ackLatencyMs: ackLatencyMs.sort((a, b) => a - b),
      cpuCores: coresUsed(samples),
      rssMiB: { median: median(rss), max: Math.max(...rss) },
      loadGeneratorCores: (load.user + load.system) / 1e6 / (options.measureMs / 1000),
      summary,
      rssSeries: rssSeries(samples),
    }
  } catch (error) {
    await fleet.stop()
    throw error
  }
}

const rssSeries = (samples: readonly ProcessSample[]): Array<[number, number]> =>
  samples.map((sample) => [
    Math.round((sample.atMs - (samples[0]?.atMs ?? 0)) / 100) / 10,
    mib(sample.rssBytes),
  ])

const quantile = (sorted: readonly number[], q: number): number =>
  sorted.length === 0
    ? Number.NaN
    : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number)

const round = (value: number, digits = 1): number => Math.round(value * 10 ** digits) / 10 ** digits

async function main(): Promise<void> {
  if (flags.help) {
    process.stdout.write(USAGE)
    return
  }
  const fleetDevices = positive('devices', flags.devices)
  const fleetRate = positive('rate', flags.rate)
  const warmupMs = positive('warmup-seconds', flags['warmup-seconds']) * 1000
  const measureMs = positive('seconds', flags.seconds) * 1000
  const maxDevices = positive('max-devices', flags['max-devices'])
  const maxRates = (flags['max-rates'] as string).split(',').map((rate) => positive('max-rates', rate))
  const stepMs = positive('step-seconds', flags['step-seconds']) * 1000
  const startedAt = new Date()
  const root = mkdtempSync(join(tmpdir(), 'taureau-scale-bench-'))
  const gatewayDir = join(root, 'gateway')
  const cloudDir = join(root, 'cloud')
  const children: ChildProcess[] = []
  process.on('exit', () => {
    for (const child of children) child.kill('SIGKILL')
  })

  // The gateway and the receiver run as on a box: the bundle, no TypeScript compiler loaded, with
  // the Node options, allocator and malloc settings of the package's /usr/bin/taureau. Every child
  // inherits the allocator and its settings, the peer too.
  await buildGateway()
  const runtime = runtimeEnvironment()
  Object.assign(process.env, runtime.env)
  const command: [string, ...string[]] = [process.execPath, ...RUNTIME_NODE_FLAGS, CLI_BUNDLE]
  const cloud = await startCloudProcess({ command, cloudDir, gatewayDir, name: 'bench-site' })
  children.push(cloud.child)
  const configFile = join(root, 'gateway.yaml')
  const startGateway = async (shaper: typeof FLEET_SHAPER): Promise<GatewayProcess> => {
    writeFileSync(configFile, `${JSON.stringify(gatewayConfig(shaper))}\n`)
    const gateway = await spawnGateway({
      command,
      dataDir: gatewayDir,
      args: ['--config', configFile, '--cloud', `127.0.0.1:${cloud.port}`, '--cloud-key', cloud.cloudKey],
      logLevel: 'warn',
      apiTimeoutMs: 30_000,
    })
    children.push(gateway.child)
    return gateway
  }

  log(`Gateway with the demo's functions, cloud receiver on 127.0.0.1:${cloud.port}; data in ${root}`)
  let gateway = await startGateway(FLEET_SHAPER)
  let api: ApiTarget = {
    url: gateway.httpUrl,
    token: readFileSync(join(gatewayDir, 'admin-token'), 'utf8').trim(),
  }
  await callApi(api, 'POST', '/tenants', { id: DEMO_TENANT })
  await deploySampleFunctions(api, DEMO_TENANT)
  const provisionStart = performance.now()
  const devices = await provisionDevices({
    apiUrl: api.url,
    token: api.token,
    tenant: DEMO_TENANT,
    ids: deviceIds(Math.max(fleetDevices, maxDevices)),
  })
  const provisionSeconds = (performance.now() - provisionStart) / 1000
  log(`Provisioned ${devices.length} devices in ${provisionSeconds.toFixed(1)} s`)
  const bare = await startBareAedes()
  children.push(bare.child)

  // 1. The fleet, gateway then bare aedes.
  log(
    `Fleet: ${fleetDevices} devices × ${fleetRate}/s, ${warmupMs / 1000} s warm-up, ${measureMs / 1000} s measured`,
  )
  const fleetDeviceList = devices.slice(0, fleetDevices)
  const fleetGateway = await runFleet({
    target: 'gateway',
    pid: gateway.child.pid as number,
    port: gateway.mqttPort,
    devices: fleetDeviceList,
    ratePerSec: fleetRate,
    warmupMs,
    measureMs,
  })
  const drainedFleet = await drainOutbox(api)
  const fleetBare = await runFleet({
    target: 'bare',
    pid: bare.pid,
    port: bare.port,
    devices: fleetDeviceList,
    ratePerSec: fleetRate,
    warmupMs,
    measureMs,
  })
  await stopChild(gateway.child)

  // 2. Maximum throughput: the uplink sized for it, steps alternating gateway and bare.
  gateway = await startGateway(MAX_SHAPER)
  api = { url: gateway.httpUrl, token: api.token }
  const maxDeviceList = devices.slice(0, maxDevices)
  const steps: FleetRun[] = []
  for (const rate of maxRates) {
    log(`Step: ${maxDevices} devices × ${rate}/s = ${maxDevices * rate} offered/s`)
    for (const target of ['gateway', 'bare'] as const) {
      steps.push(
        await runFleet({
          target,
          pid: target === 'gateway' ? (gateway.child.pid as number) : bare.pid,
          port: target === 'gateway' ? gateway.mqttPort : bare.port,
          devices: maxDeviceList,
          ratePerSec: rate,
          warmupMs: 2000,
          measureMs: stepMs,
        }),
      )
      const step = steps.at(-1) as FleetRun
      log(
        `    ${target}: ${Math.round(step.ackedPerSec)} acked/s, ${round(step.cpuCores, 2)} cores, p99 ack ${round(quantile(step.ackLatencyMs, 0.99))} ms`,
      )
    }
  }
  const drainedMax = await drainOutbox(api)
  await stopChild(gateway.child)
  await stopChild(cloud.child)
  await bare.close()

  // End to end: the temperature records each run's window produced, by the device's time.
  const records = await temperatureRecords(cloudDir)
  const endToEnd = (run: FleetRun) =>
    records
      .map((record) => ({
        receivedAt: record.receivedAt,
        ts: (JSON.parse(record.body) as { ts: number }).ts,
      }))
      .filter(({ ts }) => ts >= run.windowStartMs && ts < run.windowEndMs)
      .map(({ receivedAt, ts }) => receivedAt - ts)
      .sort((a, b) => a - b)
  const fleetE2e = endToEnd(fleetGateway)
  const expectedTemperature = fleetGateway.summary.perKind.temperature?.devices ?? 0

  const figures: BenchFigure[] = [
    {
      name: `fleet ${fleetDevices}×${fleetRate}/s: publish → cloud store p50`,
      value: round(quantile(fleetE2e, 0.5)),
      unit: 'ms',
      note: `${fleetE2e.length} temperature records; uplink epoch ${FLEET_SHAPER.cellsPerEpoch} cells per ${FLEET_SHAPER.epochMs} ms`,
    },
    {
      name: `fleet ${fleetDevices}×${fleetRate}/s: publish → cloud store p99`,
      value: round(quantile(fleetE2e, 0.99)),
      unit: 'ms',
    },
    {
      name: `fleet ${fleetDevices}×${fleetRate}/s: publish → PUBACK p99`,
      value: round(quantile(fleetGateway.ackLatencyMs, 0.99), 2),
      unit: 'ms',
      peer: { name: 'bare aedes', value: round(quantile(fleetBare.ackLatencyMs, 0.99), 2) },
      ratio: round(quantile(fleetGateway.ackLatencyMs, 0.99) / quantile(fleetBare.ackLatencyMs, 0.99), 2),
    },
    {
      name: `fleet ${fleetDevices}×${fleetRate}/s: broker process CPU`,
      value: round(fleetGateway.cpuCores, 3),
      unit: 'cores',
      peer: { name: 'bare aedes (no functions)', value: round(fleetBare.cpuCores, 3) },
      ratio: round(fleetGateway.cpuCores / fleetBare.cpuCores, 2),
    },
    {
      name: `fleet ${fleetDevices}×${fleetRate}/s: broker process RSS (median)`,
      value: fleetGateway.rssMiB.median,
      unit: 'MiB',
      peer: { name: 'bare aedes', value: fleetBare.rssMiB.median },
      ratio: round(fleetGateway.rssMiB.median / fleetBare.rssMiB.median, 2),
    },
  ]
  const gatewaySteps = steps.filter((step) => step.target === 'gateway')
  const bareSteps = steps.filter((step) => step.target === 'bare')
  const best = (list: FleetRun[]) => Math.max(...list.map((step) => step.ackedPerSec))
  figures.push({
    name: `maximum throughput (${maxDevices} devices, QoS 1, demo functions)`,
    value: Math.round(best(gatewaySteps)),
    unit: 'readings/s',
    peer: { name: 'bare aedes (no functions)', value: Math.round(best(bareSteps)) },
    ratio: round(best(gatewaySteps) / best(bareSteps), 2),
    note: `highest acknowledged rate over the steps ${maxRates.join(', ')}/s per device`,
  })

  const tables: BenchTable[] = [
    {
      caption: 'Fleet run',
      columns: [
        'target',
        'devices (online at start)',
        'online after (s)',
        'acked/s',
        'PUBACK p50 (ms)',
        'p99 (ms)',
        'CPU (cores)',
        'RSS median / max (MiB)',
        'load generator (cores)',
        'reconnects',
        'dropped',
      ],
      rows: [fleetGateway, fleetBare].map((run) => [
        run.target,
        `${run.devices} (${run.connectedAtStart})`,
        round(run.connectSeconds),
        Math.round(run.ackedPerSec),
        round(quantile(run.ackLatencyMs, 0.5), 2),
        round(quantile(run.ackLatencyMs, 0.99), 2),
        round(run.cpuCores, 3),
        `${run.rssMiB.median} / ${run.rssMiB.max}`,
        round(run.loadGeneratorCores, 2),
        run.summary.reconnects,
        run.summary.dropped,
      ]),
    },
    {
      caption: 'Publish → cloud store (fleet run, temperature records, by the device clock)',
      columns: [
        'records',
        'expected (devices × rate × window)',
        'p50 (ms)',
        'p90 (ms)',
        'p99 (ms)',
        'max (ms)',
        'outbox drained',
      ],
      rows: [
        [
          fleetE2e.length,
          Math.round(expectedTemperature * fleetRate * (measureMs / 1000)),
          round(quantile(fleetE2e, 0.5)),
          round(quantile(fleetE2e, 0.9)),
          round(quantile(fleetE2e, 0.99)),
          round(fleetE2e.at(-1) ?? Number.NaN),
          drainedFleet ? 'yes' : 'no',
        ],
      ],
    },
    {
      caption: 'Maximum throughput steps',
      columns: [
        'offered/s',
        'target',
        'acked/s',
        'PUBACK p50 (ms)',
        'p99 (ms)',
        'CPU (cores)',
        'RSS max (MiB)',
        'publish → cloud p99 (ms)',
      ],
      rows: steps.map((step) => [
        step.devices * step.ratePerSec,
        step.target,
        Math.round(step.ackedPerSec),
        round(quantile(step.ackLatencyMs, 0.5), 2),
        round(quantile(step.ackLatencyMs, 0.99), 2),
        round(step.cpuCores, 2),
        step.rssMiB.max,
        step.target === 'gateway' ? round(quantile(endToEnd(step), 0.99)) : '',
      ]),
    },
  ]
  const plots: BenchPlot[] = [
    {
      id: 'scale-fleet-latency',
      title: `${fleetDevices} devices × ${fleetRate}/s: latency distribution`,
      kind: 'cdf',
      x: { label: 'latency (ms)', log: true },
      y: { label: 'fraction of readings' },
      series: [
        { name: 'gateway: publish → cloud store', points: cdfPoints(fleetE2e) },
        { name: 'gateway: publish → PUBACK', points: cdfPoints(fleetGateway.ackLatencyMs) },
        { name: 'bare aedes: publish → PUBACK', points: cdfPoints(fleetBare.ackLatencyMs) },
      ],
    },
    {
      id: 'scale-throughput',
      title: `Acknowledged against offered readings/s (${maxDevices} devices, QoS 1)`,
      kind: 'line',
      x: { label: 'offered readings/s' },
      y: { label: 'acknowledged readings/s' },
      series: [
        {
          name: 'gateway (demo functions)',
          points: gatewaySteps.map((step) => [step.devices * step.ratePerSec, Math.round(step.ackedPerSec)]),
        },
        {
          name: 'bare aedes',
          points: bareSteps.map((step) => [step.devices * step.ratePerSec, Math.round(step.ackedPerSec)]),
        },
      ],
    },
    {
      id: 'scale-fleet-rss',
      title: `Broker process RSS during the ${fleetDevices}-device window`,
      kind: 'line',
      x: { label: 'seconds into the window' },
      y: { label: 'RSS (MiB)' },
      series: [
        { name: 'gateway', points: fleetGateway.rssSeries },
        { name: 'bare aedes', points: fleetBare.rssSeries },
      ],
    },
  ]
  const notes = [
    `Provisioning ${devices.length} devices through the API took ${provisionSeconds.toFixed(1)} s (one Argon2id hash each, default cost).`,
    'The fleet runs in the benchmark process (one mqtt.js connection per device); the gateway and the cloud receiver (their bundle, `npm run build`) and bare aedes each run in their own process. CPU and RSS are read from /proc for the whole broker process (all threads).',
    `Every process runs with the package's runtime settings (gateway/runtime-settings.ts): node ${RUNTIME_NODE_FLAGS.join(' ')}, ${
      runtime.jemalloc === undefined
        ? "glibc's malloc (jemalloc is not installed here)"
        : `jemalloc with MALLOC_CONF=${runtime.env.MALLOC_CONF}`
    }.`,
  ]
  if (!drainedFleet || !drainedMax)
    notes.push('The outbox did not drain within 120 s after a run: the cloud latencies miss records.')
  const file = writeSection(
    resolve(flags['results-dir'] as string),
    {
      id: 'scale',
      title: 'Scale: a simulated fleet through the demo functions to the cloud',
      command: 'npm run bench:scale',
      startedAt: startedAt.toISOString(),
      durationSec: Math.round((Date.now() - startedAt.getTime()) / 1000),
      method:
        'The simulator (`firmware-sim/`) runs the fleet; the gateway runs the demo tenant and its four sample functions and streams to a `taureau cloud` receiver, each in its own process. The same fleet then runs against bare aedes, the peer. See [the method](benchmark-methods.md#scale).',
      figures,
      tables,
      plots,
      notes,
    },
    {
      fleet: [fleetGateway, fleetBare].map(withoutSamples),
      steps: steps.map(withoutSamples),
      provisionSeconds,
    },
  )
  log(`Wrote ${file}`)
  rmSync(root, { recursive: true, force: true })
}

const withoutSamples = ({ ackLatencyMs, ...run }: FleetRun) => ({
  ...run,
  ackLatencyMs: {
    count: ackLatencyMs.length,
    p50: quantile(ackLatencyMs, 0.5),
    p99: quantile(ackLatencyMs, 0.99),
  },
})

await main()
process.exit(0)
