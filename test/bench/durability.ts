// The durability benchmark (`npm run bench:durability`, also run by `npm run bench`; see
// docs/benchmark-methods.md#durability). Acknowledged QoS 1 messages per second through the journal, a function
// (`ctx.emit`) and the outbox, in both durability modes, against the same load with journaling
// off (the peer); the effect of the group-commit window; bytes written to disk per message.
// Every run is a fresh gateway child (`taureau gateway --config FILE`) on a fresh temp data dir;
// a run whose outbox does not hold one record per acknowledged message fails the benchmark.
// Progress goes to stderr, the results tables to stdout and a section file (see _section.ts) to
// test/bench/results.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import type { Socket } from 'node:net'
import { arch, cpus, loadavg, platform, tmpdir, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import mqtt, { type MqttClient } from 'mqtt'
import { histogramCdf, histogramOf, type LatencyHistogram, mergeHistograms } from './_histogram.ts'
import { formatNumber, plural, sectionSummary } from './_markdown.ts'
import { byMode } from './_quick.ts'
import { type BenchFigure, type BenchPlot, type BenchSection, writeSection } from './_section.ts'
import { median, percentiles } from './_stats.ts'

const BIN = resolve(import.meta.dirname, '../../bin/taureau')
const TENANT = 'bench'
const FUNCTION_SOURCE = 'export default { onMessage(msg, ctx) { ctx.emit({ id: msg.payload.id }) } }'
/** Bytes of each payload: a JSON reading padded with spaces, as in the broker benchmark. */
const PAYLOAD_BYTES = 64
/** Latencies kept per phase (16 MiB of float64); more are not recorded. */
const MAX_LATENCY_SAMPLES = 1 << 21
/** The rate phase schedules every millisecond and never catches up more than 50 ms of backlog. */
const RATE_TICK_MS = 1
const RATE_MAX_BACKLOG_SEC = 0.05
/** How long the outbox may take to catch up with the acknowledged messages after the load stops. */
const OUTBOX_DRAIN_TIMEOUT_MS = 60_000
const ACK_DRAIN_TIMEOUT_MS = 10_000
const API_TIMEOUT_MS = 15_000
/** Unmeasured load before the fixed-rate window (the saturating phase has `--warmup-seconds`). */
const RATE_WARMUP_MS = 500

/**
 * Merged into every configuration's file; empty by default, so the gateway runs with its own
 * defaults. At saturation a function's queue fills and the gateway holds back acknowledgements
 * (back-pressure), so acknowledged messages per second measure what the whole pipeline sustains.
 */
const DEFAULT_GATEWAY_CONFIG = '{}'

/** Goal of the durability issue: power-loss mode sustains this many msg/s with an ack p99 under the bound. */
const GOAL = { ackedPerSec: 5000, ackP99Ms: 20 } as const

// Quick mode (`--quick`, BENCH_QUICK=1) only shortens the defaults; explicit values still win.
const { values: flags } = parseArgs({
  options: {
    seconds: { type: 'string', default: process.env.BENCH_DUR_SECONDS ?? byMode('2', '1') },
    'warmup-seconds': {
      type: 'string',
      default: process.env.BENCH_DUR_WARMUP_SECONDS ?? byMode('1', '0.5'),
    },
    rounds: { type: 'string', default: process.env.BENCH_DUR_ROUNDS ?? byMode('3', '1') },
    publishers: { type: 'string', default: process.env.BENCH_DUR_PUBLISHERS ?? '8' },
    window: { type: 'string', default: process.env.BENCH_DUR_WINDOW ?? '32' },
    rate: { type: 'string', default: process.env.BENCH_DUR_RATE ?? '5000' },
    'rate-seconds': { type: 'string', default: process.env.BENCH_DUR_RATE_SECONDS ?? byMode('2', '1') },
    configs: { type: 'string', default: process.env.BENCH_DUR_CONFIGS ?? 'all' },
    'gateway-config': {
      type: 'string',
      default: process.env.BENCH_DUR_GATEWAY_CONFIG ?? DEFAULT_GATEWAY_CONFIG,
    },
    'results-dir': { type: 'string', default: 'test/bench/results' },
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
})

const positive = (name: string, value: string | undefined, allowZero = false): number => {
  const number = Number(value)
  if (!Number.isFinite(number) || number < 0 || (!allowZero && number === 0))
    throw new RangeError(`Cannot run the benchmark as --${name} '${value}' is not a positive number`)
  return number
}
const SECONDS = positive('seconds', flags.seconds)
const WARMUP_SECONDS = positive('warmup-seconds', flags['warmup-seconds'], true)
const ROUNDS = positive('rounds', flags.rounds)
const PUBLISHERS = positive('publishers', flags.publishers)
const WINDOW = positive('window', flags.window)
const RATE = positive('rate', flags.rate, true)
const RATE_SECONDS = positive('rate-seconds', flags['rate-seconds'])
const GATEWAY_CONFIG = JSON.parse(flags['gateway-config'] as string) as Record<string, unknown>

/** One gateway configuration under test: its `durability` section, and `functions` settings. */
interface BenchConfig {
  name: string
  durability: Record<string, unknown>
  functions?: Record<string, unknown>
  /** The journal-off peer the others are divided by. */
  peer?: true
}

const CONFIGS: readonly BenchConfig[] = [
  // Without the journal nothing holds acknowledgements back: past the function's queue bound
  // messages would become dead letters. The peer gets a queue large enough that none do, so it
  // measures acknowledging and processing without durability, and loses nothing in the run.
  {
    name: 'journal-off',
    durability: { journal: false },
    functions: { queueLimit: 1_000_000, queueBytes: 1024 ** 3 },
    peer: true,
  },
  { name: 'power-loss', durability: { mode: 'power-loss', commitWindowMs: 0 } },
  { name: 'process-crash', durability: { mode: 'process-crash', commitWindowMs: 0 } },
  { name: 'power-loss-1ms', durability: { mode: 'power-loss', commitWindowMs: 1 } },
  { name: 'power-loss-2ms', durability: { mode: 'power-loss', commitWindowMs: 2 } },
  { name: 'power-loss-5ms', durability: { mode: 'power-loss', commitWindowMs: 5 } },
]
function CONFIG_NAMES(): string {
  return CONFIGS.map((config) => config.name).join(', ')
}
const selected =
  flags.configs === 'all'
    ? CONFIGS
    : (flags.configs as string).split(',').map((name) => {
        const config = CONFIGS.find((candidate) => candidate.name === name.trim())
        if (config === undefined)
          throw new RangeError(`Cannot run the benchmark as '${name}' is not one of: ${CONFIG_NAMES()}`)
        return config
      })

const log = (line: string) => process.stderr.write(`${line}\n`)

const CLOCK_TICKS_PER_SEC = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
})()

/** User + system CPU seconds from a `/proc/.../stat` line (fields 14 and 15, after the command). */
function statCpuSeconds(path: string): number {
  const text = readFileSync(path, 'utf8')
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SEC
}

/** `/proc/<pid>/io`: bytes the process wrote with any write call, and caused to be written to storage. */
function processIo(pid: number): { wchar: number; writeBytes: number } {
  const text = readFileSync(`/proc/${pid}/io`, 'utf8')
  const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)`, 'm').exec(text)?.[1])
  return { wchar: field('wchar'), writeBytes: field('write_bytes') }
}

/**
 * Microseconds in which some task waited for a CPU (`cpu`) or for I/O (`io`), machine-wide, from
 * Linux pressure stall information; NaN where the kernel does not provide it. The share of a
 * window shows how noisy the machine was.
 */
function pressureMicros(resource: 'cpu' | 'io'): number {
  try {
    return Number(/^some .* total=(\d+)$/m.exec(readFileSync(`/proc/pressure/${resource}`, 'utf8'))?.[1])
  } catch {
    return Number.NaN
  }
}

/** The sums and counts of the journal's histograms, from the Prometheus text. */
function journalFigures(text: string) {
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN)
  return {
    commitSecondsSum: value('taureau_journal_commit_seconds_sum'),
    commits: value('taureau_journal_commit_seconds_count'),
    writesSum: value('taureau_journal_commit_writes_sum'),
    failedWrites: value('taureau_journal_failed_writes_total'),
    over10Ms:
      value('taureau_journal_commit_seconds_count') -
      value('taureau_journal_commit_seconds_bucket\\{le="0.01"\\}'),
  }
}

/** A gateway child started with the CLI, a YAML config and every port 0, with the tenant and function provisioned. */
async function startGateway(config: BenchConfig) {
  const root = mkdtempSync(join(tmpdir(), 'taureau-durability-bench-'))
  const dataDir = join(root, 'data')
  const configFile = join(root, 'gateway.yaml')
  // JSON is YAML.
  const file = {
    ...GATEWAY_CONFIG,
    durability: { ...(GATEWAY_CONFIG.durability as object), ...config.durability },
    functions: { ...(GATEWAY_CONFIG.functions as object), ...config.functions },
  }
  writeFileSync(configFile, `${JSON.stringify(file)}\n`)
  const child: ChildProcess = spawn(
    BIN,
    [
      'gateway',
      '--config',
      configFile,
      '--data',
      dataDir,
      '--host',
      '127.0.0.1',
      '--mqtt-port',
      '0',
      '--ws-port',
      '0',
      '--http-port',
      '0',
    ],
    { env: { ...process.env, TAUREAU_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  // The gateway's warnings and errors are passed on and counted: a run that logs errors is suspect.
  const logLines: string[] = []
  const logCounts = { errors: 0, warnings: 0 }
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (line) => {
    const level = Number(/"level":(\d+)/.exec(line)?.[1] ?? 50)
    if (level >= 50) logCounts.errors++
    else if (level >= 40) logCounts.warnings++
    if (logLines.length < 20) {
      logLines.push(line)
      process.stderr.write(`  [gateway] ${line}\n`)
    }
  })
  const exited = once(child, 'exit')
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
  const [line] = (await Promise.race([
    once(lines, 'line'),
    exited.then(() => {
      throw new Error(`Cannot start the gateway child: it exited (${logLines.join(' | ')})`)
    }),
  ])) as [string]
  const mqttPort = Number(/mqtt:\/\/127\.0\.0\.1:(\d+)/.exec(line)?.[1])
  const httpUrl = /API and UI at (http:\/\/\S+)/.exec(line)?.[1] as string
  const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()
  const request = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${httpUrl}${path}`, {
      method,
      signal: AbortSignal.timeout(API_TIMEOUT_MS),
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`)
    return response
  }
  const api = async (method: string, path: string, body?: unknown) =>
    (await (await request(method, `/api/v1${path}`, body)).json()) as Record<string, unknown>

  await api('POST', '/tenants', {
    id: TENANT,
    quotas: {
      maxMessagesPerSec: 10_000_000,
      burstMessages: 10_000_000,
      outboxBytes: 1024 * 1024 * 1024,
    },
  })
  const secrets = await Promise.all(
    Array.from({ length: PUBLISHERS }, async (_, i) => {
      const device = (await api('POST', `/tenants/${TENANT}/devices`, { id: `pub-${i + 1}` })) as {
        secret: string
      }
      return device.secret
    }),
  )
  await api('POST', `/tenants/${TENANT}/functions`, {
    name: 'emit',
    source: FUNCTION_SOURCE,
    triggers: [{ topic: 'readings/#' }],
  })
  const pid = child.pid as number
  return {
    child,
    pid,
    root,
    dataDir,
    mqttPort,
    secrets,
    logLines,
    logCounts,
    api,
    metrics: async () => journalFigures(await (await request('GET', '/metrics')).text()),
    outboxRecords: async () =>
      ((await api('GET', `/tenants/${TENANT}/outbox?limit=1`)) as { usage: { records: number } }).usage
        .records,
    functionStats: async () =>
      (
        (await api('GET', `/tenants/${TENANT}/functions/emit`)) as {
          function: {
            stats: {
              invocations: number
              errors: number
              errorsByReason: Record<string, number>
              queued: number
            }
          }
        }
      ).function.stats,
    storeFiles: (): Record<string, number> =>
      Object.fromEntries(
        readdirSync(dataDir)
          .filter((name) => statSync(join(dataDir, name)).isFile())
          .map((name) => [name, statSync(join(dataDir, name)).size]),
      ),
    async stop(): Promise<number | null> {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      const [code] = (await exited) as [number | null]
      rmSync(root, { recursive: true, force: true })
      return code
    },
  }
}
type GatewayChild = Awaited<ReturnType<typeof startGateway>>

interface Publisher {
  index: number
  client: MqttClient
  topic: string
  seq: number
  sent: number
  acked: number
}

/** A 64-byte JSON reading with an id unique in the run, padded with spaces. */
function reading(publisher: Publisher): Buffer {
  const id = publisher.index * 1_000_000_000 + publisher.seq
  return Buffer.from(
    `{"id":${id},"dev":"pub-${publisher.index}","temp":${(18 + (publisher.seq % 80) / 10).toFixed(1)}}`.padEnd(
      PAYLOAD_BYTES,
    ),
  )
}

/** Everything sampled at both ends of a measured window. */
interface Sample {
  at: number
  acked: number
  outboxRecords: number
  io: { wchar: number; writeBytes: number }
  childCpuSec: number
  mainThreadCpuSec: number
  loadGenCpu: NodeJS.CpuUsage
  cpuPressureUs: number
  ioPressureUs: number
  journal: ReturnType<typeof journalFigures>
}

/** What one phase of a run measured, over its measured window. */
interface PhaseResult {
  shape: 'saturating' | 'rate'
  measuredMs: number
  acked: number
  ackedPerSec: number
  /** Outbox records written in the window, per second: how fast the function kept up. */
  processedPerSec: number
  /** Acknowledged messages without their outbox record yet at the end of the window. */
  backlogAtEnd: number
  ackP50Ms: number
  ackP99Ms: number
  ackMaxMs: number
  /** Every ack latency of the window, in log bins: for CDFs over pooled rounds. */
  ackLatencyHistogram: LatencyHistogram
  writeBytesPerMsg: number
  wcharPerMsg: number
  commits: number
  writesPerCommit: number
  commitMeanMs: number
  /** Commits that took longer than 10 ms (from the histogram's buckets). */
  commitsOver10Ms: number
  /** Time in commits over wall time: commits run on the gateway's main thread and block it. */
  commitShare: number
  /** Share of the window in which some task on the machine waited for a CPU, or for I/O. */
  cpuPressureShare: number
  ioPressureShare: number
  /** CPU time over wall time: the whole gateway child, its main thread, and this load generator. */
  childCpuCores: number
  mainThreadCpuCores: number
  loadGenCpuCores: number
  /** Rate phase: messages due in the window that could not be sent (every window full, or the generator late). */
  rateShortfall: number
}

/**
 * Connects the publishers, then runs the phases: saturating (warm-up, measured window) and, with
 * `RATE` > 0, a fixed rate. Between phases it waits for every outstanding PUBACK.
 */
async function runLoad(gateway: GatewayChild, runId: string) {
  const publishers: Publisher[] = []
  let failure: Error | undefined
  let stopping = false
  let totalAcked = 0
  let totalSent = 0
  let running = false
  let shape: 'saturating' | 'rate' = 'saturating'
  let measuring = false
  const latencies = new Float64Array(MAX_LATENCY_SAMPLES)
  let latencyCount = 0

  const publishOne = (publisher: Publisher): void => {
    publisher.seq++
    publisher.sent++
    totalSent++
    const started = performance.now()
    publisher.client.publish(publisher.topic, reading(publisher), { qos: 1 }, (error?: Error) => {
      if (error) {
        failure ??= new Error(
          `Cannot continue as a publish of pub-${publisher.index} failed: ${error.message}`,
        )
        return
      }
      publisher.acked++
      totalAcked++
      if (measuring && latencyCount < MAX_LATENCY_SAMPLES)
        latencies[latencyCount++] = performance.now() - started
      if (running && shape === 'saturating') refill(publisher)
    })
  }
  const refill = (publisher: Publisher): void => {
    while (running && publisher.sent - publisher.acked < WINDOW) publishOne(publisher)
  }

  for (let i = 1; i <= PUBLISHERS; i++) {
    const client = await mqtt.connectAsync(
      `mqtt://127.0.0.1:${gateway.mqttPort}`,
      {
        clientId: `bench-pub-${i}-${runId}`,
        username: `pub-${i}@${TENANT}`,
        password: gateway.secrets[i - 1] as string,
        clean: true,
        reconnectPeriod: 0,
        protocolVersion: 4,
        keepalive: 60,
      },
      false,
    )
    // As in the broker benchmark: no Nagle delay on the load generator's sockets.
    ;(client.stream as unknown as Socket).setNoDelay(true)
    client.on('error', (error) => {
      failure ??= new Error(`Cannot continue as pub-${i} got an error: ${error.message}`)
    })
    client.on('close', () => {
      if (!stopping) failure ??= new Error(`Cannot continue as the gateway closed the connection of pub-${i}`)
    })
    publishers.push({ index: i, client, topic: `readings/pub-${i}`, seq: 0, sent: 0, acked: 0 })
  }

  const sample = async (): Promise<Sample> => {
    const [journal, outboxRecords] = await Promise.all([gateway.metrics(), gateway.outboxRecords()])
    return {
      at: performance.now(),
      acked: totalAcked,
      outboxRecords,
      io: processIo(gateway.pid),
      childCpuSec: statCpuSeconds(`/proc/${gateway.pid}/stat`),
      mainThreadCpuSec: statCpuSeconds(`/proc/${gateway.pid}/task/${gateway.pid}/stat`),
      loadGenCpu: process.cpuUsage(),
      cpuPressureUs: pressureMicros('cpu'),
      ioPressureUs: pressureMicros('io'),
      journal,
    }
  }
  const check = (): void => {
    if (failure !== undefined) throw failure
  }
  const waitForAcks = async (): Promise<void> => {
    const deadline = performance.now() + ACK_DRAIN_TIMEOUT_MS
    while (totalAcked < totalSent && performance.now() < deadline) {
      check()
      await sleep(5)
    }
    if (totalAcked < totalSent)
      throw new Error(
        `Cannot finish the phase as ${totalSent - totalAcked} messages got no PUBACK in ${ACK_DRAIN_TIMEOUT_MS} ms`,
      )
  }

  /** One phase: load for `warmupMs` unmeasured, then `measureMs` measured, then wait for every PUBACK. */
  const phase = async (phaseShape: 'saturating' | 'rate', warmupMs: number, measureMs: number) => {
    shape = phaseShape
    running = true
    latencyCount = 0
    let shortfall = 0
    let rateTimer: NodeJS.Timeout | undefined
    if (phaseShape === 'saturating') {
      for (const publisher of publishers) refill(publisher)
    } else {
      // Paced by the clock, round-robin over the publishers, each within its window.
      const startedAt = performance.now()
      let scheduled = 0
      let next = 0
      const maxBacklog = Math.max(1, Math.ceil(RATE * RATE_MAX_BACKLOG_SEC))
      const tick = (): void => {
        if (!running) return
        let toSend = Math.floor(((performance.now() - startedAt) * RATE) / 1000) - scheduled
        if (toSend > maxBacklog) {
          if (measuring) shortfall += toSend - maxBacklog
          scheduled += toSend - maxBacklog
          toSend = maxBacklog
        }
        for (; toSend > 0; toSend--) {
          scheduled++
          let sentOne = false
          for (let tries = 0; tries < publishers.length && !sentOne; tries++) {
            const publisher = publishers[next] as Publisher
            next = (next + 1) % publishers.length
            if (publisher.sent - publisher.acked < WINDOW) {
              publishOne(publisher)
              sentOne = true
            }
          }
          if (!sentOne && measuring) shortfall++
        }
        rateTimer = setTimeout(tick, RATE_TICK_MS)
      }
      tick()
    }
    await sleep(warmupMs)
    check()
    const start = await sample()
    measuring = true
    await sleep(measureMs)
    measuring = false
    const end = await sample()
    running = false
    clearTimeout(rateTimer)
    check()
    await waitForAcks()

    const measuredMs = end.at - start.at
    const acked = end.acked - start.acked
    const seconds = measuredMs / 1000
    const commits = end.journal.commits - start.journal.commits
    const loadGenCpu =
      (end.loadGenCpu.user + end.loadGenCpu.system - start.loadGenCpu.user - start.loadGenCpu.system) / 1e6
    const ackLatencyHistogram = histogramOf(latencies, latencyCount)
    const [p50, p99, max] = percentiles(latencies, latencyCount, [0.5, 0.99, 1])
    const result: PhaseResult = {
      shape: phaseShape,
      measuredMs,
      acked,
      ackedPerSec: acked / seconds,
      processedPerSec: (end.outboxRecords - start.outboxRecords) / seconds,
      backlogAtEnd: end.acked - end.outboxRecords,
      ackP50Ms: p50 as number,
      ackP99Ms: p99 as number,
      ackMaxMs: max as number,
      ackLatencyHistogram,
      writeBytesPerMsg: (end.io.writeBytes - start.io.writeBytes) / acked,
      wcharPerMsg: (end.io.wchar - start.io.wchar) / acked,
      commits,
      writesPerCommit: (end.journal.writesSum - start.journal.writesSum) / commits,
      commitMeanMs: ((end.journal.commitSecondsSum - start.journal.commitSecondsSum) * 1000) / commits,
      commitsOver10Ms: end.journal.over10Ms - start.journal.over10Ms,
      commitShare: (end.journal.commitSecondsSum - start.journal.commitSecondsSum) / seconds,
      cpuPressureShare: (end.cpuPressureUs - start.cpuPressureUs) / 1e6 / seconds,
      ioPressureShare: (end.ioPressureUs - start.ioPressureUs) / 1e6 / seconds,
      childCpuCores: (end.childCpuSec - start.childCpuSec) / seconds,
      mainThreadCpuCores: (end.mainThreadCpuSec - start.mainThreadCpuSec) / seconds,
      loadGenCpuCores: loadGenCpu / seconds,
      rateShortfall: shortfall,
    }
    return result
  }

  try {
    // The fixed rate first, on an empty function queue: the saturating phase leaves a backlog,
    // which the last catch-up in runOnce() waits for.
    const rate = RATE > 0 ? await phase('rate', RATE_WARMUP_MS, RATE_SECONDS * 1000) : null
    const saturating = await phase('saturating', WARMUP_SECONDS * 1000, SECONDS * 1000)
    return { saturating, rate, totalAcked, totalSent }
  } finally {
    stopping = true
    // Forced when PUBACKs are missing: a graceful end would wait for them.
    await Promise.all(
      publishers.map((publisher) =>
        publisher.client.endAsync(publisher.acked < publisher.sent).catch(() => {}),
      ),
    )
  }
}

/**
 * Waits (bounded) until every acknowledged message has its outbox record or, visibly, has failed.
 * Failed invocations (dead letters) are counted from the function's stats: the dead letters kept
 * are bounded (`functions.deadLetterLimit`), the count is not.
 */
async function catchUp(gateway: GatewayChild, acked: number) {
  const started = performance.now()
  let outboxRecords = await gateway.outboxRecords()
  let stats = await gateway.functionStats()
  while (outboxRecords + stats.errors < acked && performance.now() - started < OUTBOX_DRAIN_TIMEOUT_MS) {
    await sleep(50)
    outboxRecords = await gateway.outboxRecords()
    stats = await gateway.functionStats()
  }
  return { outboxRecords, stats, ms: performance.now() - started }
}

/** One run: a fresh gateway child with `config`, loaded, checked, stopped. */
async function runOnce(config: BenchConfig, round: number) {
  const gateway = await startGateway(config)
  try {
    const load = await runLoad(gateway, `${round}-${config.name}`)
    const caughtUp = await catchUp(gateway, load.totalAcked)
    const journal = await gateway.metrics()
    const { outboxRecords, stats } = caughtUp
    const deadLetters = stats.errors
    const storeFiles = gateway.storeFiles()
    return {
      config: config.name,
      round,
      ...load,
      outboxRecords,
      deadLetters,
      outboxDrainMs: caughtUp.ms,
      journalFailedWrites: journal.failedWrites,
      functionStats: stats,
      storeFiles,
      gatewayLogLines: gateway.logLines,
      gatewayLogCounts: { ...gateway.logCounts },
    }
  } finally {
    const code = await gateway.stop()
    if (code !== 0) log(`  the gateway child of ${config.name} round ${round} exited with ${code}`)
  }
}
type Run = Awaited<ReturnType<typeof runOnce>>

function filesystemOf(path: string): string {
  try {
    const lines = execFileSync('df', ['-T', path], { encoding: 'utf8' }).trim().split('\n')
    const [device, type] = (lines[1] ?? '').split(/\s+/)
    return `${type} (${device})`
  } catch {
    return 'unknown'
  }
}

const fixed = (value: number, digits = 0) =>
  Number.isFinite(value)
    ? value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : 'n/a'

/** Medians over the rounds of one configuration, and its per-round ratio to the peer. */
function durabilityRow(config: BenchConfig, runs: readonly Run[], peerName: string | undefined) {
  const mine = runs.filter((run) => run.config === config.name)
  const sat = mine.map((run) => run.saturating)
  const rate = mine.flatMap((run) => (run.rate === null ? [] : [run.rate]))
  const med = (values: number[]) => median(values)
  // Per-round ratio to the peer of the same round: the two runs are seconds apart.
  const ratios = mine.flatMap((run) => {
    const peer = runs.find((other) => other.config === peerName && other.round === run.round)
    return peer === undefined ? [] : [run.saturating.ackedPerSec / peer.saturating.ackedPerSec]
  })
  const files = mine.at(-1)?.storeFiles ?? {}
  return {
    config: config.name,
    durability: config.durability,
    ackedPerSec: med(sat.map((r) => r.ackedPerSec)),
    ackedPerSecRounds: sat.map((r) => Math.round(r.ackedPerSec)),
    processedPerSec: med(sat.map((r) => r.processedPerSec)),
    backlogAtEnd: med(sat.map((r) => r.backlogAtEnd)),
    ackP50Ms: med(sat.map((r) => r.ackP50Ms)),
    ackP99Ms: med(sat.map((r) => r.ackP99Ms)),
    ratioToPeer: med(ratios),
    ratioToPeerRounds: ratios,
    writesPerCommit: med(sat.map((r) => r.writesPerCommit)),
    commitMeanMs: med(sat.map((r) => r.commitMeanMs)),
    commitsPerSec: med(sat.map((r) => r.commits / (r.measuredMs / 1000))),
    commitsOver10MsShare: med(sat.map((r) => r.commitsOver10Ms / r.commits)),
    commitShare: med(sat.map((r) => r.commitShare)),
    cpuPressureShare: med(sat.map((r) => r.cpuPressureShare)),
    rateProcessedPerSec: med(rate.map((r) => r.processedPerSec)),
    rateBacklogAtEnd: med(rate.map((r) => r.backlogAtEnd)),
    rateCommitMeanMs: med(rate.map((r) => r.commitMeanMs)),
    writeBytesPerMsg: med(sat.map((r) => r.writeBytesPerMsg)),
    wcharPerMsg: med(sat.map((r) => r.wcharPerMsg)),
    childCpuCores: med(sat.map((r) => r.childCpuCores)),
    mainThreadCpuCores: med(sat.map((r) => r.mainThreadCpuCores)),
    loadGenCpuCores: med(sat.map((r) => r.loadGenCpuCores)),
    rateAckedPerSec: med(rate.map((r) => r.ackedPerSec)),
    rateAckP50Ms: med(rate.map((r) => r.ackP50Ms)),
    rateAckP99Ms: med(rate.map((r) => r.ackP99Ms)),
    rateAckP99MsRounds: rate.map((r) => Number(r.ackP99Ms.toFixed(2))),
    rateShortfall: med(rate.map((r) => r.rateShortfall)),
    rateWriteBytesPerMsg: med(rate.map((r) => r.writeBytesPerMsg)),
    rateWritesPerCommit: med(rate.map((r) => r.writesPerCommit)),
    storeFilesLastRound: files,
    storeBytesLastRound: Object.values(files).reduce((sum, size) => sum + size, 0),
    messagesLastRound: mine.at(-1)?.totalAcked ?? 0,
  }
}

async function main() {
  const startedAt = new Date()
  const machine = {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 1024 ** 3),
    platform: `${platform()} ${arch()}`,
    node: process.version,
    loadAverageAtStart: loadavg(),
    tmpdir: tmpdir(),
    filesystem: filesystemOf(tmpdir()),
  }
  log(
    `durability benchmark: ${ROUNDS} rounds of ${selected.map((config) => config.name).join(', ')}; ` +
      `${PUBLISHERS} publishers x ${WINDOW} in flight, ${WARMUP_SECONDS} s warm-up + ${SECONDS} s` +
      (RATE > 0 ? `, then ${RATE} msg/s for ${RATE_SECONDS} s` : '') +
      `; data dirs in ${machine.tmpdir} on ${machine.filesystem}`,
  )
  const runs: Run[] = []
  const problems: string[] = []
  for (let round = 1; round <= ROUNDS; round++) {
    for (const config of selected) {
      const run = await runOnce(config, round)
      runs.push(run)
      const s = run.saturating
      log(
        `round ${round} ${config.name}: ${fixed(s.ackedPerSec)} acked/s (${fixed(s.processedPerSec)} processed/s), ` +
          `ack p50 ${fixed(s.ackP50Ms, 2)} p99 ${fixed(s.ackP99Ms, 2)} ms, ${fixed(s.writesPerCommit, 1)} writes/commit, ` +
          `${fixed(s.commitMeanMs, 2)} ms/commit, ${fixed(s.writeBytesPerMsg)} B written/msg, ` +
          `CPU child ${fixed(s.childCpuCores, 2)} main ${fixed(s.mainThreadCpuCores, 2)} load-gen ${fixed(s.loadGenCpuCores, 2)}, ` +
          `CPU pressure ${fixed(s.cpuPressureShare * 100)}%` +
          (run.rate === null
            ? ''
            : `; at ${RATE}/s: ${fixed(run.rate.ackedPerSec)} acked/s (${fixed(run.rate.processedPerSec)} processed/s), p50 ${fixed(run.rate.ackP50Ms, 2)} p99 ${fixed(run.rate.ackP99Ms, 2)} ms, shortfall ${run.rate.rateShortfall}`) +
          `; outbox ${run.outboxRecords} + ${run.deadLetters} dead letters for ${run.totalAcked} acked (${fixed(run.outboxDrainMs)} ms to catch up)`,
      )
      if (
        run.outboxRecords !== run.totalAcked ||
        run.deadLetters > 0 ||
        run.journalFailedWrites > 0 ||
        run.gatewayLogCounts.errors > 0
      )
        problems.push(
          `${config.name} round ${round}: ${run.totalAcked} acknowledged, ${run.outboxRecords} outbox records, ` +
            `${run.deadLetters} dead letters, ${run.journalFailedWrites} failed journal writes, ` +
            `${run.gatewayLogCounts.errors} error lines in the gateway's log`,
        )
    }
  }

  const peerName = selected.find((config) => config.peer)?.name
  const rows = selected.map((config) => durabilityRow(config, runs, peerName))

  const results = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine,
    settings: {
      rounds: ROUNDS,
      seconds: SECONDS,
      warmupSeconds: WARMUP_SECONDS,
      publishers: PUBLISHERS,
      window: WINDOW,
      rate: RATE,
      rateSeconds: RATE_SECONDS,
      payloadBytes: PAYLOAD_BYTES,
      function: FUNCTION_SOURCE,
    },
    rows,
    problems,
    runs,
  }
  const section = durabilitySection(startedAt, machine.filesystem, runs, rows, peerName, problems)
  const file = writeSection(resolve(flags['results-dir'] as string), section, results)
  process.stdout.write(
    `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.platform}, Node ${machine.node}; ` +
      `data dirs on ${machine.filesystem}; load average at start ${machine.loadAverageAtStart.map((v) => v.toFixed(2)).join(' ')}\n\n` +
      `${sectionSummary(section)}\n\n` +
      (problems.length === 0
        ? 'Outbox check: every acknowledged message has its outbox record; no dead letters, no failed journal writes.\n'
        : `Problems:\n${problems.map((problem) => `- ${problem}`).join('\n')}\n`),
  )
  log(`results in ${file}`)
  if (problems.length > 0) process.exitCode = 1
}

type Row = ReturnType<typeof durabilityRow>

/** The durability benchmark's results as a report section: each configuration against the journal-off peer. */
function durabilitySection(
  startedAt: Date,
  filesystem: string,
  runs: readonly Run[],
  rows: readonly Row[],
  peerName: string | undefined,
  problems: readonly string[],
): BenchSection {
  const fixed = (value: number, digits = 0): number | string =>
    Number.isFinite(value) ? Number(value.toFixed(digits)) : 'n/a'
  const round = (value: number, digits: number): number => Number(value.toFixed(digits))
  const peer = rows.find((row) => row.config === peerName)
  const figures: BenchFigure[] = []
  for (const row of rows) {
    if (row.config === peerName) continue
    const isDefault = row.config === 'power-loss'
    const peerOf = (value: number) =>
      peer === undefined ? {} : { peer: { name: `${peer.config} (peer)`, value } }
    figures.push({
      name: `Acknowledged msg/s at saturation, ${row.config}`,
      value: Math.round(row.ackedPerSec),
      unit: 'msg/s',
      ...peerOf(Math.round(peer?.ackedPerSec ?? Number.NaN)),
      ...(peer === undefined ? {} : { ratio: round(row.ackedPerSec / peer.ackedPerSec, 3) }),
      ...(isDefault ? { goal: { op: '>=' as const, value: GOAL.ackedPerSec } } : {}),
      note: `processed ${formatNumber(row.processedPerSec)} msg/s; per-round ratio median ${formatNumber(row.ratioToPeer)}`,
    })
    if (RATE > 0) {
      figures.push({
        name: `Ack latency p99 at ${RATE} msg/s offered, ${row.config}`,
        value: round(row.rateAckP99Ms, 2),
        unit: 'ms',
        ...peerOf(round(peer?.rateAckP99Ms ?? Number.NaN, 2)),
        ...(peer === undefined ? {} : { ratio: round(row.rateAckP99Ms / peer.rateAckP99Ms, 3) }),
        ...(isDefault ? { goal: { op: '<=' as const, value: GOAL.ackP99Ms } } : {}),
        note: `median of the rounds' p99s: ${row.rateAckP99MsRounds.join(', ')}`,
      })
      figures.push({
        name: `Bytes written to disk per message at ${RATE} msg/s, ${row.config}`,
        value: Math.round(row.rateWriteBytesPerMsg),
        unit: 'B/msg',
        ...peerOf(Math.round(peer?.rateWriteBytesPerMsg ?? Number.NaN)),
        ...(peer === undefined
          ? {}
          : { ratio: round(row.rateWriteBytesPerMsg / peer.rateWriteBytesPerMsg, 2) }),
      })
    }
  }

  const pooled = (config: string, shape: 'saturating' | 'rate') =>
    mergeHistograms(
      runs.flatMap((run) => {
        if (run.config !== config) return []
        const phase = shape === 'saturating' ? run.saturating : run.rate
        return phase === null ? [] : [phase.ackLatencyHistogram]
      }),
    )
  const plots: BenchPlot[] = [
    ...(RATE > 0
      ? [
          {
            id: 'durability-ack-latency-rate',
            title: `Publish to PUBACK at ${RATE} msg/s offered, QoS 1 (all rounds pooled)`,
            kind: 'cdf' as const,
            x: { label: 'ack latency (ms)', log: true },
            y: { label: 'fraction of messages' },
            series: rows.map((row) => ({
              name: row.config,
              points: histogramCdf(pooled(row.config, 'rate')),
            })),
          },
        ]
      : []),
    {
      id: 'durability-ack-latency-saturating',
      title: `Publish to PUBACK at saturation, ${PUBLISHERS} × ${WINDOW} in flight (all rounds pooled)`,
      kind: 'cdf',
      x: { label: 'ack latency (ms)', log: true },
      y: { label: 'fraction of messages' },
      series: rows.map((row) => ({
        name: row.config,
        points: histogramCdf(pooled(row.config, 'saturating')),
      })),
    },
  ]
  // Throughput against the group-commit window, for the power-loss configurations.
  const windowOf = (row: Row) => Number((row.durability as { commitWindowMs?: unknown }).commitWindowMs ?? 0)
  const powerLoss = rows
    .filter((row) => (row.durability as { mode?: unknown }).mode === 'power-loss')
    .sort((a, b) => windowOf(a) - windowOf(b))
  if (powerLoss.length > 1) {
    const widest = windowOf(powerLoss.at(-1) as Row)
    const flat = (value: number): Array<[number, number]> => [
      [0, value],
      [widest, value],
    ]
    plots.push({
      id: 'durability-commit-window',
      title: 'Saturating throughput of power-loss mode against the group-commit window',
      kind: 'line',
      x: { label: 'group-commit window, durability.commitWindowMs (ms)' },
      y: { label: 'messages per second' },
      series: [
        { name: 'acknowledged', points: powerLoss.map((row) => [windowOf(row), row.ackedPerSec]) },
        {
          name: 'processed (outbox records)',
          points: powerLoss.map((row) => [windowOf(row), row.processedPerSec]),
        },
        ...(peer === undefined
          ? []
          : [
              { name: `${peer.config} acknowledged (peer)`, points: flat(peer.ackedPerSec) },
              { name: `${peer.config} processed (peer)`, points: flat(peer.processedPerSec) },
            ]),
      ],
    })
  }

  const peerLabel = peerName ?? 'peer'
  return {
    id: 'durability',
    title: 'Durability: the journal against no journal',
    command: 'npm run bench:durability',
    startedAt: startedAt.toISOString(),
    durationSec: round((Date.now() - startedAt.getTime()) / 1000, 1),
    method:
      `Each run is a fresh gateway child on a fresh data dir on ${filesystem} with one function (\`ctx.emit\`) on the load's topic; ` +
      `${PUBLISHERS} mqtt.js publishers send 64-byte QoS 1 messages with up to ${WINDOW} in flight each, first at ${RATE} msg/s for ${RATE_SECONDS} s, ` +
      `then saturating for ${SECONDS} s after ${WARMUP_SECONDS} s of warm-up. Configurations alternate within each of ${plural(ROUNDS, 'round')}; ` +
      `the peer is the same load with the journal off. Every acknowledged message must reach the outbox, or the run is a problem. ` +
      'Long form: [benchmark-methods.md#durability](benchmark-methods.md#durability).',
    figures,
    tables: [
      {
        caption: `Saturating: ${PUBLISHERS} publishers × ${WINDOW} QoS 1 messages in flight, ${SECONDS} s measured; medians of ${plural(ROUNDS, 'round')}`,
        columns: [
          'configuration',
          'acked msg/s',
          `/ ${peerLabel}`,
          'processed msg/s',
          'ack p50 ms',
          'ack p99 ms',
          'writes/commit',
          'ms/commit',
          'time in commits',
          'gateway CPU (main thread)',
          'load-gen CPU',
          'CPU pressure',
        ],
        rows: rows.map((row) => [
          row.config,
          fixed(row.ackedPerSec),
          fixed(row.ratioToPeer, 2),
          fixed(row.processedPerSec),
          fixed(row.ackP50Ms, 1),
          fixed(row.ackP99Ms, 1),
          fixed(row.writesPerCommit, 1),
          fixed(row.commitMeanMs, 2),
          `${formatNumber(row.commitShare * 100)}%`,
          `${formatNumber(row.childCpuCores)} (${formatNumber(row.mainThreadCpuCores)})`,
          fixed(row.loadGenCpuCores, 2),
          `${formatNumber(row.cpuPressureShare * 100)}%`,
        ]),
      },
      ...(RATE > 0
        ? [
            {
              caption: `Fixed rate: ${RATE} msg/s offered for ${RATE_SECONDS} s (same publishers and windows); medians of ${plural(ROUNDS, 'round')}`,
              columns: [
                'configuration',
                'acked msg/s',
                'not sent (windows full)',
                'processed msg/s',
                'ack p50 ms',
                'ack p99 ms (each round)',
                'writes/commit',
                'ms/commit',
              ],
              rows: rows.map((row) => [
                row.config,
                fixed(row.rateAckedPerSec),
                fixed(row.rateShortfall),
                fixed(row.rateProcessedPerSec),
                fixed(row.rateAckP50Ms, 1),
                `${formatNumber(row.rateAckP99Ms)} (${row.rateAckP99MsRounds.join(', ')})`,
                fixed(row.rateWritesPerCommit, 1),
                fixed(row.rateCommitMeanMs, 2),
              ]),
            },
          ]
        : []),
      {
        caption: 'Bytes written per message, and the store files after the last round',
        columns: [
          'configuration',
          'bytes to disk/msg, saturating (write_bytes)',
          'at the fixed rate',
          'bytes of write calls/msg (wchar)',
          'store files after the last round (messages acked)',
        ],
        rows: rows.map((row) => {
          const files = Object.entries(row.storeFilesLastRound)
            .filter(([, size]) => size >= 4096)
            .map(([name, size]) => `${name} ${formatNumber(size / 1024 / 1024)} MiB`)
            .join(', ')
          return [
            row.config,
            fixed(row.writeBytesPerMsg),
            fixed(row.rateWriteBytesPerMsg),
            fixed(row.wcharPerMsg),
            `${files} (${row.messagesLastRound})`,
          ]
        }),
      },
    ],
    plots,
    notes:
      problems.length === 0
        ? [
            'Outbox check: every acknowledged message had its outbox record; no dead letters, no failed journal writes.',
          ]
        : problems.map((problem) => `Problem: ${problem}`),
  }
}

function printHelp(): void {
  process.stdout.write(`npm run bench:durability -- [flags]
  --seconds N          measured window of the saturating phase (BENCH_DUR_SECONDS, 2)
  --warmup-seconds N   unmeasured load before it (BENCH_DUR_WARMUP_SECONDS, 1)
  --rounds N           rounds; each runs every configuration once (BENCH_DUR_ROUNDS, 3)
  --publishers N       publisher connections (BENCH_DUR_PUBLISHERS, 8)
  --window N           QoS 1 messages in flight per publisher (BENCH_DUR_WINDOW, 32)
  --rate N             offered msg/s of the fixed-rate phase, 0 to skip it (BENCH_DUR_RATE, 5000)
  --rate-seconds N     measured window of the fixed-rate phase (BENCH_DUR_RATE_SECONDS, 2)
  --configs a,b        subset of: ${CONFIG_NAMES()} (BENCH_DUR_CONFIGS, all)
  --gateway-config J   JSON merged into every configuration's file (BENCH_DUR_GATEWAY_CONFIG,
                       ${DEFAULT_GATEWAY_CONFIG})
  --results-dir DIR    where the section file goes (test/bench/results)
  --quick              shorter defaults, to check the pipeline (also BENCH_QUICK=1)
`)
}

if (flags.help) printHelp()
else await main()
