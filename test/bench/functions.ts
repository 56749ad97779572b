// The function runtime benchmark (`npm run bench`, after the broker benchmark; see
// docs/BENCHMARKS.md). Each figure is measured next to a peer in the same run:
// - invocations per second of one pool worker against the same handler as plain host JavaScript;
// - tenant cold start (QuickJS instance, runtime, context, compile) against a Node `vm` context;
// - memory per idle tenant with one function against a Node `vm` context;
// - MQTT-in to output-out latency through a function at a fixed rate, against the same messages
//   delivered straight to a subscriber by the same gateway.
// Progress goes to stderr, the results table to stdout and a JSON file in test/bench/results.
import { once } from 'node:events'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
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

const { values: flags } = parseArgs({
  options: {
    seconds: { type: 'string', default: process.env.BENCH_FN_SECONDS ?? '3' },
    rounds: { type: 'string', default: process.env.BENCH_FN_ROUNDS ?? '5' },
    tenants: { type: 'string', default: process.env.BENCH_FN_TENANTS ?? '100' },
    rate: { type: 'string', default: process.env.BENCH_FN_RATE ?? '2000' },
    'latency-seconds': { type: 'string', default: process.env.BENCH_FN_LATENCY_SECONDS ?? '10' },
    'results-dir': { type: 'string', default: 'test/bench/results' },
  },
})
const SECONDS = Number(flags.seconds)
const ROUNDS = Number(flags.rounds)
const TENANTS = Number(flags.tenants)
const RATE = Number(flags.rate)
const LATENCY_SECONDS = Number(flags['latency-seconds'])

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
  await runFor(1000) // warm-up: JIT of the pool's code, QuickJS's caches
  // Awaited here, before `await using` closes the pool.
  return await runFor(SECONDS * 1000)
}

/**
 * The same handler as plain JavaScript on the host: imported as a module and called directly
 * (`raw`), and called with the same JSON crossing the sandbox makes, arguments parsed from JSON
 * and the result turned into JSON (`json`), which separates QuickJS's interpretation from the cost
 * of the boundary.
 */
async function hostRates(source: string): Promise<{ raw: number; json: number }> {
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
  runFor(1000, false)
  runFor(1000, true)
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
    await publishFor(2) // warm-up
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
    return {
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
    `function benchmark: ${ROUNDS} rounds of ${SECONDS} s per handler, ${TENANTS} tenants, ${RATE} msg/s for ${LATENCY_SECONDS} s`,
  )
  const throughput: Record<string, { sandbox: number[]; host: number[]; hostJson: number[] }> = {
    trivial: { sandbox: [], host: [], hostJson: [] },
    countMin: { sandbox: [], host: [], hostJson: [] },
  }
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, source] of [
      ['trivial', TRIVIAL],
      ['countMin', COUNT_MIN_ETL],
    ] as const) {
      const sandbox = await sandboxRate(source)
      const host = await hostRates(source)
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
  const latency = await latencyFigures(true)
  log(JSON.stringify(latency))
  const baseline = await latencyFigures(false)
  log(JSON.stringify(baseline))

  const rows = Object.entries(throughput).map(([name, { sandbox, host, hostJson }]) => ({
    handler: name,
    sandboxPerSec: median(sandbox),
    hostPerSec: median(host),
    hostJsonPerSec: median(hostJson),
    ratio: median(sandbox.map((value, i) => value / (host[i] as number))),
    ratioJson: median(sandbox.map((value, i) => value / (hostJson[i] as number))),
  }))
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
    tenants,
    poolSpaced,
    poolBackToBack,
    latency,
    baseline,
  }
  const dir = resolve(flags['results-dir'] as string)
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `functions-${startedAt.toISOString().replace(/[:.]/g, '-').slice(0, 19)}.json`)
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`)

  const out = (line: string) => process.stdout.write(`${line}\n`)
  out(
    `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.platform}, Node ${machine.node}`,
  )
  out('')
  out(
    '| handler | sandbox calls/s (1 worker) | host JS calls/s | host JS with JSON in and out, calls/s | sandbox / host | sandbox / host with JSON |',
  )
  out('|---|---|---|---|---|---|')
  for (const row of rows) {
    out(
      `| ${row.handler} | ${row.sandboxPerSec.toFixed(0)} | ${row.hostPerSec.toFixed(0)} | ${row.hostJsonPerSec.toFixed(0)} | ${row.ratio.toFixed(4)} | ${row.ratioJson.toFixed(3)} |`,
    )
  }
  out('')
  out(`| new tenant through the pool (${TENANTS} tenants, one function each) | p50 | p99 |`)
  out('|---|---|---|')
  out(
    `| 50 ms apart (the worker's ready instance refilled) | ${poolSpaced.p50.toFixed(2)} ms | ${poolSpaced.p99.toFixed(2)} ms |`,
  )
  out(`| back to back | ${poolBackToBack.p50.toFixed(2)} ms | ${poolBackToBack.p99.toFixed(2)} ms |`)
  out('')
  out(
    `| per tenant (${TENANTS} tenants, one function each, on one thread) | QuickJS sandbox | Node vm context |`,
  )
  out('|---|---|---|')
  out(
    `| cold start p50 | ${tenants.coldStartP50Ms.toFixed(2)} ms | ${tenants.vmColdStartP50Ms.toFixed(2)} ms |`,
  )
  out(
    `| cold start p99 | ${tenants.coldStartP99Ms.toFixed(2)} ms | ${tenants.vmColdStartP99Ms.toFixed(2)} ms |`,
  )
  out(
    `| RSS per idle tenant | ${tenants.idleTenantKiB.toFixed(0)} KiB | ${tenants.vmContextKiB.toFixed(0)} KiB |`,
  )
  out(
    `| first tenant of a thread (compiles the WebAssembly module) | ${tenants.firstTenantMs.toFixed(1)} ms | |`,
  )
  out('')
  out(
    `| ${RATE} msg/s for ${LATENCY_SECONDS} s, QoS 0 | through a function (in -> output) | delivered directly (peer) | delivered directly, no function deployed |`,
  )
  out('|---|---|---|---|')
  out(
    `| received | ${latency.functionReceived} / ${latency.messages} | ${latency.directReceived} / ${latency.messages} | ${baseline.directReceived} / ${baseline.messages} |`,
  )
  out(
    `| p50 | ${latency.functionP50Ms.toFixed(2)} ms | ${latency.directP50Ms.toFixed(2)} ms | ${baseline.directP50Ms.toFixed(2)} ms |`,
  )
  out(
    `| p99 | ${latency.functionP99Ms.toFixed(2)} ms | ${latency.directP99Ms.toFixed(2)} ms | ${baseline.directP99Ms.toFixed(2)} ms |`,
  )
  log(`results in ${file}`)
}

await main()
