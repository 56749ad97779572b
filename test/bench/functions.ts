// The function runtime benchmark (`npm run bench:functions`, also run by `npm run bench`; see
// docs/benchmark-methods.md#functions). Each figure is measured next to a peer in the same run:
// - invocations per second of one pool worker against the same handler as plain host JavaScript;
// - tenant cold start (QuickJS instance, runtime, context, compile) against a Node `vm` context;
// - memory per idle tenant with one function against a Node `vm` context;
// - MQTT-in to output-out latency through a function at a fixed rate, against the same messages
//   delivered straight to a subscriber by the same gateway;
// - the distribution of single invocation times in a sandbox against host JavaScript.
// Progress goes to stderr, the results table to stdout and a section file (see _section.ts) to
// test/bench/results.
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { arch, cpus, loadavg, platform, tmpdir, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import * as vm from 'node:vm'
import mqtt from 'mqtt'
import { GUEST_SKETCH } from '../../sandbox/guest-sketch.ts'
import { createTenantSandbox, createWorkerPool, type TenantSandbox } from '../../sandbox/index.ts'
import { spawnGateway } from '../helpers/gateway-process.ts'
import { plural, sectionSummary } from './_markdown.ts'
import { byMode } from './_quick.ts'
import { type BenchFigure, type BenchSection, cdfPoints, writeSection } from './_section.ts'
import { median, percentiles } from './_stats.ts'

const MB = 1024 * 1024

const TRIVIAL = `export default { onMessage(msg) { return msg.payload.temp * 2 } }`

const COUNT_MIN_ETL = `
import { CountMin } from 'taureau:sketch'
const sketch = new CountMin({ width: 2048, depth: 5 })
export default {
  onMessage(msg, ctx) {
    const reading = msg.payload
    sketch.add(reading.device)
    if (reading.temp > 30) ctx.publish('alerts/' + reading.device, { temp: reading.temp })
    return { device: reading.device, seen: sketch.estimate(reading.device), f: reading.temp * 1.8 + 32 }
  },
}`

// Quick mode (`--quick`, BENCH_QUICK=1) only shortens the defaults; explicit values still win.
const { values: flags } = parseArgs({
  options: {
    seconds: { type: 'string', default: process.env.BENCH_FN_SECONDS ?? byMode('3', '0.5') },
    rounds: { type: 'string', default: process.env.BENCH_FN_ROUNDS ?? byMode('5', '1') },
    tenants: { type: 'string', default: process.env.BENCH_FN_TENANTS ?? byMode('100', '20') },
    rate: { type: 'string', default: process.env.BENCH_FN_RATE ?? '2000' },
    'latency-seconds': {
      type: 'string',
      default: process.env.BENCH_FN_LATENCY_SECONDS ?? byMode('10', '2'),
    },
    'results-dir': { type: 'string', default: 'test/bench/results' },
    quick: { type: 'boolean', default: false },
  },
})
const positive = (name: string, value: string | undefined): number => {
  const number = Number(value)
  if (!Number.isFinite(number) || number <= 0)
    throw new RangeError(`Cannot run the benchmark as --${name} '${value}' is not a positive number`)
  return number
}
const SECONDS = positive('seconds', flags.seconds)
const ROUNDS = positive('rounds', flags.rounds)
const TENANTS = positive('tenants', flags.tenants)
const RATE = positive('rate', flags.rate)
const LATENCY_SECONDS = positive('latency-seconds', flags['latency-seconds'])
/** Unmeasured load before each measurement: JIT, QuickJS's caches, socket buffers. */
const WARMUP_MS = byMode(1000, 200)
/** How long single invocations are timed per handler, path and round. */
const TIMING_MS = Math.min(1000, (SECONDS * 1000) / 3)
/** Invocation times kept per handler and path, all rounds together (each round gets its share). */
const MAX_TIMING_SAMPLES = 400_000
/** Goals of the functions issue. */
const GOALS = {
  trivialPerSec: 20_000,
  idleTenantKiB: 1024,
  coldStartP99Ms: 10,
  latencyP99Ms: 5,
} as const

const log = (line: string) => process.stderr.write(`${line}\n`)

function message(seq: number) {
  const device = `d${seq % 50}`
  return {
    topic: `sensors/${device}/temp`,
    payload: { device, seq, temp: 15 + ((seq * 7919) % 2000) / 100 },
    qos: 0,
    retain: false,
    device,
    ts: 1_700_000_000_000 + seq,
  }
}

/** Invocations per second through one pool worker, batches of 64, two batches in flight. */
async function sandboxRate(source: string): Promise<number> {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 64 * MB })
  await pool.compile('bench', 'f', source, ['onMessage'])
  const info = { name: 'f', version: 1, config: {}, now: 0 }
  const batch = Array.from({ length: 64 }, (_, i) => ({ args: [message(i)], info }))
  const runFor = async (ms: number): Promise<number> => {
    let done = 0
    const until = performance.now() + ms
    const lane = async () => {
      while (performance.now() < until) {
        const outcomes = await pool.invokeBatch('bench', 'f', 'onMessage', batch, 1000)
        const failed = outcomes.find((outcome) => !outcome.ok)
        if (failed !== undefined)
          throw new Error(`an invocation failed in the benchmark: ${JSON.stringify(failed)}`)
        done += outcomes.length
      }
    }
    const started = performance.now()
    await Promise.all([lane(), lane()])
    return done / ((performance.now() - started) / 1000)
  }
  await runFor(WARMUP_MS) // warm-up: JIT of the pool's code, QuickJS's caches
  // Awaited here, before `await using` closes the pool.
  return await runFor(SECONDS * 1000)
}

/** The handler as a host module (its `taureau:sketch` import pointed at the guest's sketch code) and a `ctx`. */
async function hostHandler(source: string) {
  const sketchUrl = `data:text/javascript,${encodeURIComponent(GUEST_SKETCH)}`
  const moduleUrl = `data:text/javascript,${encodeURIComponent(source.replace("'taureau:sketch'", JSON.stringify(sketchUrl)))}`
  const handler = (
    (await import(moduleUrl)) as { default: { onMessage(msg: unknown, ctx: unknown): unknown } }
  ).default
  const ctx = Object.freeze({
    tenant: 'bench',
    name: 'f',
    version: 1,
    config: {},
    now: () => 0,
    publish() {},
    emit() {},
    log() {},
  })
  return { handler, ctx }
}

/** Where single invocations are timed: see {@link invocationTimes}. */
type TimingPath = 'sandbox' | 'hostJson' | 'host'
const TIMING_LABELS: Record<TimingPath, string> = {
  sandbox: 'QuickJS sandbox, invoke()',
  hostJson: 'host JS with JSON in and out',
  host: 'host JS, direct call (batch of 64 ÷ 64)',
}

/**
 * Times single invocations of `source`, `TIMING_MS` per path after a short warm-up, and appends the
 * times (µs per invocation) to `into`: in a tenant sandbox on this thread (`invoke()`: JSON in,
 * QuickJS, JSON out, one call per sample); as host JavaScript with the same JSON in and out (one
 * call per sample); and as a direct host call, timed per batch of 64 and divided by 64, since one
 * direct call is shorter than reading the clock.
 */
async function invocationTimes(source: string, into: Record<TimingPath, number[]>): Promise<void> {
  const sandbox = await createTenantSandbox({ tenantId: 'timing', memoryLimitBytes: 64 * MB })
  try {
    sandbox.compile('f', source, ['onMessage'])
    const { handler, ctx } = await hostHandler(source)
    const info = { name: 'f', version: 1, config: {}, now: 0 }
    const messages = Array.from({ length: 64 }, (_, i) => message(i))
    const texts = messages.map((msg) => JSON.stringify([msg]))
    let sink = 0
    const calls: Record<TimingPath, { perSample: number; call(index: number): void }> = {
      sandbox: {
        perSample: 1,
        call: (index) => {
          if (sandbox.invoke('f', 'onMessage', [messages[index % 64]], info, 1000) !== undefined) sink++
        },
      },
      hostJson: {
        perSample: 1,
        call: (index) => {
          const text = texts[index % 64] as string
          sink += JSON.stringify(handler.onMessage(JSON.parse(text)[0], ctx)).length
        },
      },
      host: {
        perSample: messages.length,
        call: () => {
          for (const msg of messages) if (handler.onMessage(msg, ctx) !== undefined) sink++
        },
      },
    }
    for (const [path, { perSample, call }] of Object.entries(calls) as Array<
      [TimingPath, (typeof calls)[TimingPath]]
    >) {
      const out = into[path]
      // Each round keeps its share of the samples, so that every round is in the distribution.
      const cap = out.length + Math.floor(MAX_TIMING_SAMPLES / ROUNDS)
      for (const [ms, keep] of [
        [WARMUP_MS / 2, false],
        [TIMING_MS, true],
      ] as const) {
        const until = performance.now() + ms
        for (let index = 0; performance.now() < until; index++) {
          const started = performance.now()
          call(index)
          const spentMicros = ((performance.now() - started) * 1000) / perSample
          if (keep && out.length < cap) out.push(spentMicros)
        }
      }
    }
    if (sink === 0) throw new Error('Cannot time invocations as the handler returned nothing')
  } finally {
    sandbox.dispose()
  }
}

/**
 * The same handler as plain JavaScript on the host: imported as a module and called directly
 * (`raw`), and called with the same JSON crossing the sandbox makes, arguments parsed from JSON
 * and the result turned into JSON (`json`), which separates QuickJS's interpretation from the cost
 * of the boundary.
 */
async function hostRates(source: string): Promise<{ raw: number; json: number }> {
  const { handler, ctx } = await hostHandler(source)
  const messages = Array.from({ length: 64 }, (_, i) => message(i))
  const texts = messages.map((msg) => JSON.stringify([msg]))
  let sink = 0
  const runFor = (ms: number, json: boolean): number => {
    let done = 0
    const started = performance.now()
    const until = started + ms
    while (performance.now() < until) {
      if (json) {
        for (const text of texts) sink += JSON.stringify(handler.onMessage(JSON.parse(text)[0], ctx)).length
      } else {
        for (const msg of messages) if (handler.onMessage(msg, ctx) !== undefined) sink++
      }
      done += messages.length
    }
    return done / ((performance.now() - started) / 1000)
  }
  runFor(WARMUP_MS, false)
  runFor(WARMUP_MS, true)
  const raw = runFor(SECONDS * 1000, false)
  const json = runFor(SECONDS * 1000, true)
  if (sink === 0) throw new Error('the host handler returned nothing')
  return { raw, json }
}

/** Cold start and idle memory of `TENANTS` tenant sandboxes with one function each. */
async function tenantsFigures() {
  const gc = (globalThis as { gc?: () => void }).gc
  const settle = async () => {
    gc?.()
    await sleep(50)
    gc?.()
  }
  // The shared WebAssembly.Module is compiled once per thread; that one-off cost is reported apart.
  const firstStarted = performance.now()
  const first = await createTenantSandbox({ tenantId: 'first', memoryLimitBytes: 64 * MB })
  first.compile('f', TRIVIAL, ['onMessage'])
  const firstMs = performance.now() - firstStarted
  first.dispose()

  await settle()
  const rssBefore = process.memoryUsage().rss
  const sandboxes: TenantSandbox[] = []
  const cold = new Float64Array(TENANTS)
  for (let i = 0; i < TENANTS; i++) {
    const started = performance.now()
    const sandbox = await createTenantSandbox({ tenantId: `t${i}`, memoryLimitBytes: 64 * MB })
    sandbox.compile('f', TRIVIAL, ['onMessage'])
    cold[i] = performance.now() - started
    sandboxes.push(sandbox)
  }
  // One invocation each, so each tenant has run once, as an idle tenant in a gateway has.
  for (const sandbox of sandboxes)
    sandbox.invoke('f', 'onMessage', [message(1)], { name: 'f', version: 1, config: {}, now: 0 }, 1000)
  await settle()
  const rssSandboxes = process.memoryUsage().rss
  for (const sandbox of sandboxes) sandbox.dispose()
  sandboxes.length = 0

  await settle()
  const rssVmBefore = process.memoryUsage().rss
  const contexts: vm.Context[] = []
  const vmCold = new Float64Array(TENANTS)
  for (let i = 0; i < TENANTS; i++) {
    const started = performance.now()
    const context = vm.createContext({})
    new vm.Script(`globalThis.handler = { onMessage(msg) { return msg.payload.temp * 2 } }`).runInContext(
      context,
    )
    vmCold[i] = performance.now() - started
    contexts.push(context)
  }
  for (const context of contexts) vm.runInContext('handler.onMessage({ payload: { temp: 1 } })', context)
  await settle()
  const rssVm = process.memoryUsage().rss
  const [p50, p99] = percentiles(cold, TENANTS, [0.5, 0.99])
  const [vmP50, vmP99] = percentiles(vmCold, TENANTS, [0.5, 0.99])
  return {
    firstTenantMs: firstMs,
    coldStartP50Ms: p50 as number,
    coldStartP99Ms: p99 as number,
    vmColdStartP50Ms: vmP50 as number,
    vmColdStartP99Ms: vmP99 as number,
    idleTenantKiB: (rssSandboxes - rssBefore) / TENANTS / 1024,
    vmContextKiB: (rssVm - rssVmBefore) / TENANTS / 1024,
    gcExposed: gc !== undefined,
  }
}

/**
 * Cold start of a new tenant through the pool, as the gateway sees it: `compile()` of its first
 * function, timed from the call to the answer. The worker keeps one QuickJS instance ready for the
 * next new tenant and makes another in idle time; `gapMs` between tenants lets it (tenants of a
 * gateway arrive by deploys, not back to back), and `gapMs` 0 shows the cost without it.
 */
async function poolColdStart(gapMs: number): Promise<{ p50: number; p99: number }> {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 64 * MB })
  await pool.compile('warm', 'f', TRIVIAL, ['onMessage']) // the worker's own start is not a tenant's
  const times = new Float64Array(TENANTS)
  for (let i = 0; i < TENANTS; i++) {
    if (gapMs > 0) await sleep(gapMs)
    const started = performance.now()
    await pool.compile(`t${i}`, 'f', TRIVIAL, ['onMessage'])
    times[i] = performance.now() - started
  }
  const [p50, p99] = percentiles(times, TENANTS, [0.5, 0.99])
  return { p50: p50 as number, p99: p99 as number }
}

/**
 * Latency from a device's publish to the function's output at a fixed rate (QoS 0), and, for the
 * same messages, from the publish to their direct delivery to a subscriber (the peer). Without
 * `withFunction`, only the direct delivery, by a gateway with no function: what the machine, the
 * load generator and the broker alone add.
 */
async function latencyFigures(withFunction: boolean) {
  const dataDir = mkdtempSync(join(tmpdir(), 'taureau-fn-bench-'))
  const gateway = await spawnGateway({ dataDir, logLevel: 'warn' })
  try {
    await gateway.api('POST', '/tenants', {
      id: 'bench',
      quotas: { maxMessagesPerSec: 1_000_000, burstMessages: 1_000_000 },
    })
    const pub = (await gateway.api('POST', '/tenants/bench/devices', { id: 'pub' })) as { secret: string }
    const sub = (await gateway.api('POST', '/tenants/bench/devices', { id: 'sub' })) as { secret: string }
    if (withFunction)
      await gateway.api('POST', '/tenants/bench/functions', {
        name: 'pass',
        source: 'export default { onMessage(msg) { return msg.payload } }',
        triggers: [{ topic: 'sensors/#' }],
        output: 'out/pass',
      })
    const url = `mqtt://127.0.0.1:${gateway.mqttPort}`
    const connect = (username: string, password: string) =>
      mqtt.connectAsync(url, { username, password, reconnectPeriod: 0, protocolVersion: 4 })
    const subscriber = await connect('sub@bench', sub.secret)
    const publisher = await connect('pub@bench', pub.secret)
    await subscriber.subscribeAsync(['sensors/#', 'out/#'], { qos: 0 })
    const total = RATE * LATENCY_SECONDS
    const viaFunction = new Float64Array(total)
    const direct = new Float64Array(total)
    let functionCount = 0
    let directCount = 0
    let measuring = false
    subscriber.on('message', (topic, payload) => {
      if (!measuring) return
      const sent = Number(JSON.parse(payload.toString()).t)
      const latencyMs = Number(process.hrtime.bigint() - BigInt(sent)) / 1e6
      if (topic.startsWith('out/')) {
        if (functionCount < total) viaFunction[functionCount++] = latencyMs
      } else if (directCount < total) direct[directCount++] = latencyMs
    })
    const publishFor = async (seconds: number) => {
      // Paced by the clock: every millisecond, send what the rate owes by now.
      const started = performance.now()
      let sent = 0
      const target = RATE * seconds
      while (sent < target) {
        const owed = Math.min(target, Math.floor(((performance.now() - started) / 1000) * RATE))
        for (; sent < owed; sent++) {
          const t = process.hrtime.bigint().toString()
          publisher.publish('sensors/d1/temp', JSON.stringify({ t, temp: 21.5, seq: sent }), { qos: 0 })
        }
        await sleep(1)
      }
    }
    await publishFor(WARMUP_MS / 500) // warm-up: 2 s, 0.4 s in quick mode
    await sleep(500)
    measuring = true
    await publishFor(LATENCY_SECONDS)
    const deadline = performance.now() + 5000
    const pending = () => (withFunction && functionCount < total) || directCount < total
    while (pending() && performance.now() < deadline) await sleep(20)
    measuring = false
    await publisher.endAsync()
    await subscriber.endAsync()
    const [fnP50, fnP99] = percentiles(viaFunction, functionCount, [0.5, 0.99])
    const [directP50, directP99] = percentiles(direct, directCount, [0.5, 0.99])
    // percentiles() sorted both in place: the sorted samples give the CDFs.
    const samples = {
      viaFunction: Array.from(viaFunction.subarray(0, functionCount)),
      direct: Array.from(direct.subarray(0, directCount)),
    }
    return {
      samples,
      ratePerSec: RATE,
      messages: total,
      functionReceived: functionCount,
      directReceived: directCount,
      functionP50Ms: fnP50 as number,
      functionP99Ms: fnP99 as number,
      directP50Ms: directP50 as number,
      directP99Ms: directP99 as number,
    }
  } finally {
    gateway.child.kill('SIGTERM')
    await once(gateway.child, 'exit')
    rmSync(dataDir, { recursive: true, force: true })
  }
}

async function main() {
  const startedAt = new Date()
  log(
    `function benchmark${byMode('', ' (QUICK MODE)')}: ${ROUNDS} rounds of ${SECONDS} s per handler, ${TENANTS} tenants, ${RATE} msg/s for ${LATENCY_SECONDS} s`,
  )
  const handlers = [
    ['trivial', TRIVIAL],
    ['countMin', COUNT_MIN_ETL],
  ] as const
  const throughput: Record<string, { sandbox: number[]; host: number[]; hostJson: number[] }> = {
    trivial: { sandbox: [], host: [], hostJson: [] },
    countMin: { sandbox: [], host: [], hostJson: [] },
  }
  const timings: Record<string, Record<TimingPath, number[]>> = {
    trivial: { sandbox: [], hostJson: [], host: [] },
    countMin: { sandbox: [], hostJson: [], host: [] },
  }
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, source] of handlers) {
      const sandbox = await sandboxRate(source)
      const host = await hostRates(source)
      await invocationTimes(source, timings[name] as Record<TimingPath, number[]>)
      throughput[name]?.sandbox.push(sandbox)
      throughput[name]?.host.push(host.raw)
      throughput[name]?.hostJson.push(host.json)
      log(
        `round ${round} ${name}: sandbox ${sandbox.toFixed(0)}/s, host ${host.raw.toFixed(0)}/s, host with JSON ${host.json.toFixed(0)}/s`,
      )
    }
  }
  log('tenants: cold start and idle memory')
  const tenants = await tenantsFigures()
  log(JSON.stringify(tenants))
  const poolSpaced = await poolColdStart(50)
  const poolBackToBack = await poolColdStart(0)
  log(JSON.stringify({ poolSpaced, poolBackToBack }))
  log('latency through a gateway child')
  const { samples: latencySamples, ...latency } = await latencyFigures(true)
  log(JSON.stringify(latency))
  const { samples: baselineSamples, ...baseline } = await latencyFigures(false)
  log(JSON.stringify(baseline))

  const rows = Object.entries(throughput).map(([name, { sandbox, host, hostJson }]) => ({
    handler: name,
    sandboxPerSec: median(sandbox),
    hostPerSec: median(host),
    hostJsonPerSec: median(hostJson),
    ratio: median(sandbox.map((value, i) => value / (host[i] as number))),
    ratioJson: median(sandbox.map((value, i) => value / (hostJson[i] as number))),
  }))
  const timingSummary = Object.fromEntries(
    Object.entries(timings).map(([name, paths]) => [
      name,
      Object.fromEntries(
        Object.entries(paths).map(([path, samples]) => {
          samples.sort((a, b) => a - b)
          const [p50, p99] = percentiles(Float64Array.from(samples), samples.length, [0.5, 0.99])
          return [path, { samples: samples.length, p50Micros: p50 as number, p99Micros: p99 as number }]
        }),
      ) as Record<TimingPath, { samples: number; p50Micros: number; p99Micros: number }>,
    ]),
  )
  const machine = {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 1024 ** 3),
    platform: `${platform()} ${arch()}`,
    node: process.version,
    loadAverageAtStart: loadavg(),
  }
  const results = {
    startedAt: startedAt.toISOString(),
    machine,
    rounds: ROUNDS,
    seconds: SECONDS,
    throughput,
    rows,
    invocationTimes: timingSummary,
    tenants,
    poolSpaced,
    poolBackToBack,
    latency,
    baseline,
  }

  const fixed = (value: number, digits: number): number | string =>
    Number.isFinite(value) ? Number(value.toFixed(digits)) : 'n/a'
  const round = (value: number, digits: number): number => Number(value.toFixed(digits))
  const figures: BenchFigure[] = []
  for (const row of rows) {
    figures.push(
      {
        name: `Invocations per second, ${row.handler} handler, one pool worker, against host JS with JSON in and out`,
        value: Math.round(row.sandboxPerSec),
        unit: 'calls/s',
        peer: { name: 'host JS with JSON', value: Math.round(row.hostJsonPerSec) },
        ratio: round(row.sandboxPerSec / row.hostJsonPerSec, 4),
        ...(row.handler === 'trivial' ? { goal: { op: '>=' as const, value: GOALS.trivialPerSec } } : {}),
        note: `medians of ${plural(ROUNDS, 'round')}`,
      },
      {
        name: `Invocations per second, ${row.handler} handler, one pool worker, against a direct host JS call`,
        value: Math.round(row.sandboxPerSec),
        unit: 'calls/s',
        peer: { name: 'host JS', value: Math.round(row.hostPerSec) },
        ratio: round(row.sandboxPerSec / row.hostPerSec, 6),
      },
    )
    const times = timingSummary[row.handler]
    if (times !== undefined) {
      figures.push({
        name: `Time per invocation p50, ${row.handler} handler, sandbox invoke() on this thread`,
        value: round(times.sandbox.p50Micros, 2),
        unit: 'µs',
        peer: { name: 'host JS with JSON', value: round(times.hostJson.p50Micros, 3) },
        ratio: round(times.sandbox.p50Micros / times.hostJson.p50Micros, 2),
      })
    }
  }
  const vmPeer = { name: 'Node vm context, one thread', value: round(tenants.vmColdStartP99Ms, 2) }
  figures.push(
    {
      name: `New tenant through the pool, 50 ms apart, cold start p99 (${TENANTS} tenants)`,
      value: round(poolSpaced.p99, 2),
      unit: 'ms',
      peer: vmPeer,
      ratio: round(poolSpaced.p99 / tenants.vmColdStartP99Ms, 2),
      goal: { op: '<=', value: GOALS.coldStartP99Ms },
    },
    {
      name: 'New tenant through the pool, back to back, cold start p99',
      value: round(poolBackToBack.p99, 2),
      unit: 'ms',
      peer: vmPeer,
      ratio: round(poolBackToBack.p99 / tenants.vmColdStartP99Ms, 2),
    },
    {
      name: 'RSS per idle tenant with one function',
      value: Math.round(tenants.idleTenantKiB),
      unit: 'KiB',
      peer: { name: 'Node vm context', value: Math.round(tenants.vmContextKiB) },
      ratio: round(tenants.idleTenantKiB / tenants.vmContextKiB, 2),
      goal: { op: '<=', value: GOALS.idleTenantKiB },
      ...(tenants.gcExposed ? {} : { note: 'run without --expose-gc: noisy' }),
    },
    {
      name: `Latency p50, MQTT in to function output, ${RATE} msg/s QoS 0`,
      value: round(latency.functionP50Ms, 2),
      unit: 'ms',
      peer: { name: 'delivered directly', value: round(latency.directP50Ms, 2) },
      ratio: round(latency.functionP50Ms / latency.directP50Ms, 2),
    },
    {
      name: `Latency p99, MQTT in to function output, ${RATE} msg/s QoS 0`,
      value: round(latency.functionP99Ms, 2),
      unit: 'ms',
      peer: { name: 'delivered directly', value: round(latency.directP99Ms, 2) },
      ratio: round(latency.functionP99Ms / latency.directP99Ms, 2),
      goal: { op: '<=', value: GOALS.latencyP99Ms },
      note: `a gateway with no function deployed delivered at p99 ${fixed(baseline.directP99Ms, 2)} ms`,
    },
  )
  const section: BenchSection = {
    id: 'functions',
    title: 'Functions: QuickJS sandbox against host JavaScript',
    command: 'npm run bench:functions',
    startedAt: startedAt.toISOString(),
    durationSec: round((Date.now() - startedAt.getTime()) / 1000, 1),
    method:
      `Invocations per second of one pool worker (\`invokeBatch()\`, batches of 64, two in flight; ${ROUNDS} rounds of ${SECONDS} s after a warm-up), ` +
      'each round next to the same handler as host JavaScript, called directly and with the JSON crossing the sandbox makes; ' +
      'single invocation times in a tenant sandbox on this thread against the same host paths; ' +
      `cold start and idle memory of ${TENANTS} tenants against Node \`vm\` contexts; ` +
      `and MQTT-in to function-output latency through a gateway child at ${RATE} msg/s for ${LATENCY_SECONDS} s, against the same messages delivered directly. ` +
      'Long form: [benchmark-methods.md#functions](benchmark-methods.md#functions).',
    figures,
    tables: [
      {
        caption: `Invocations per second, medians of ${plural(ROUNDS, 'round')} of ${SECONDS} s`,
        columns: [
          'handler',
          'sandbox calls/s (1 worker)',
          'host JS calls/s',
          'host JS with JSON in and out, calls/s',
          'sandbox / host',
          'sandbox / host with JSON',
        ],
        rows: rows.map((row) => [
          row.handler,
          fixed(row.sandboxPerSec, 0),
          fixed(row.hostPerSec, 0),
          fixed(row.hostJsonPerSec, 0),
          fixed(row.ratio, 5),
          fixed(row.ratioJson, 4),
        ]),
      },
      {
        caption: 'Time per invocation (µs), all rounds pooled',
        columns: ['handler', 'path', 'samples', 'p50 µs', 'p99 µs'],
        rows: Object.entries(timingSummary).flatMap(([name, paths]) =>
          Object.entries(paths).map(([path, summary]) => [
            name,
            TIMING_LABELS[path as TimingPath],
            summary.samples,
            fixed(summary.p50Micros, 3),
            fixed(summary.p99Micros, 3),
          ]),
        ),
      },
      {
        caption: `New tenant through the pool (${TENANTS} tenants, one function each)`,
        columns: ['tenants', 'p50 ms', 'p99 ms'],
        rows: [
          [
            "50 ms apart (the worker's ready instance refilled)",
            fixed(poolSpaced.p50, 2),
            fixed(poolSpaced.p99, 2),
          ],
          ['back to back', fixed(poolBackToBack.p50, 2), fixed(poolBackToBack.p99, 2)],
        ],
      },
      {
        caption: `Per tenant (${TENANTS} tenants, one function each, on one thread)`,
        columns: ['figure', 'QuickJS sandbox', 'Node vm context'],
        rows: [
          ['cold start p50 (ms)', fixed(tenants.coldStartP50Ms, 2), fixed(tenants.vmColdStartP50Ms, 2)],
          ['cold start p99 (ms)', fixed(tenants.coldStartP99Ms, 2), fixed(tenants.vmColdStartP99Ms, 2)],
          ['RSS per idle tenant (KiB)', fixed(tenants.idleTenantKiB, 0), fixed(tenants.vmContextKiB, 0)],
          [
            'first tenant of a thread, compiles the WebAssembly module (ms)',
            fixed(tenants.firstTenantMs, 1),
            '',
          ],
        ],
      },
      {
        caption: `${RATE} msg/s for ${LATENCY_SECONDS} s, QoS 0`,
        columns: [
          'figure',
          'through a function (in to output)',
          'delivered directly (peer)',
          'delivered directly, no function deployed',
        ],
        rows: [
          [
            'received',
            `${latency.functionReceived} / ${latency.messages}`,
            `${latency.directReceived} / ${latency.messages}`,
            `${baseline.directReceived} / ${baseline.messages}`,
          ],
          [
            'p50 ms',
            fixed(latency.functionP50Ms, 2),
            fixed(latency.directP50Ms, 2),
            fixed(baseline.directP50Ms, 2),
          ],
          [
            'p99 ms',
            fixed(latency.functionP99Ms, 2),
            fixed(latency.directP99Ms, 2),
            fixed(baseline.directP99Ms, 2),
          ],
        ],
      },
    ],
    plots: [
      ...handlers.map(([name]) => ({
        id: `functions-invocation-${name.toLowerCase()}`,
        title: `Time per invocation, ${name} handler (all rounds pooled)`,
        kind: 'cdf' as const,
        x: { label: 'time per invocation (µs)', log: true },
        y: { label: 'fraction of invocations' },
        series: (Object.keys(TIMING_LABELS) as TimingPath[]).map((path) => ({
          name: TIMING_LABELS[path],
          points: cdfPoints(timings[name]?.[path] ?? []),
        })),
      })),
      {
        id: 'functions-mqtt-latency',
        title: `MQTT in to output, ${RATE} msg/s QoS 0, through a gateway child`,
        kind: 'cdf',
        x: { label: 'publish to receipt (ms)', log: true },
        y: { label: 'fraction of messages' },
        series: [
          { name: 'through a function', points: cdfPoints(latencySamples.viaFunction) },
          { name: 'delivered directly (same gateway)', points: cdfPoints(latencySamples.direct) },
          { name: 'delivered directly, no function deployed', points: cdfPoints(baselineSamples.direct) },
        ],
      },
    ],
    ...(tenants.gcExposed
      ? {}
      : { notes: ['Run without --expose-gc: the memory figures include garbage not yet collected.'] }),
  }
  const file = writeSection(resolve(flags['results-dir'] as string), section, results)
  process.stdout.write(
    `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.platform}, Node ${machine.node}\n\n` +
      `${sectionSummary(section)}\n`,
  )
  log(`results in ${file}`)
}

await main()
