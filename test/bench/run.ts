// The broker benchmark: `npm run bench:broker` (see docs/benchmark-methods.md#broker). Loads the
// gateway and a bare in-memory aedes, each in its own child process, alternately with the same
// mqtt.js publishers and subscriber, and reports the broker's CPU time per delivered message,
// throughput and end-to-end latency, then sweeps offered load at fixed rates. Progress goes to
// stderr; the results table to stdout and a section file (see _section.ts) to the results dir.
import { mkdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { arch, cpus, loadavg, platform, totalmem } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { type BrokerProcess, startBrokerProcess } from './_broker-process.ts'
import { brokerSection } from './_broker-section.ts'
import { PAYLOAD_BYTES, runLoad, type Scenario } from './_load.ts'
import { parseOptions, USAGE } from './_options.ts'
import type { BrokerCpuSample, BrokerKind } from './_protocol.ts'
import { markdownTable, type RunRecord, summarize } from './_report.ts'
import { writeSection } from './_section.ts'

const START_TIMEOUT_MS = 60_000
/** How long the idle CPU of the brokers is measured after the runs. */
const IDLE_SAMPLE_MS = 3000
/** How long the children get to close after Ctrl-C before they are killed. */
const SIGNAL_CLOSE_MS = 3000
/** Connect, drain and disconnect around each run's warm-up and window, for the time estimate. */
const RUN_OVERHEAD_SECONDS = 1

const log = (line: string): void => {
  process.stderr.write(`${line}\n`)
}

function packageVersion(name: string): string {
  const require = createRequire(import.meta.url)
  const entry = require.resolve(name)
  let dir = dirname(entry)
  // Walk up from the entry point to the package's own folder (exports may hide package.json).
  for (let depth = 0; depth < 5; depth++) {
    try {
      const pkg = require(join(dir, 'package.json')) as { name?: string; version?: string }
      if (pkg.name === name) return pkg.version ?? 'unknown'
    } catch {}
    dir = dirname(dir)
  }
  return 'unknown'
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), process.env)
  if (options.help) {
    process.stdout.write(USAGE)
    return
  }
  const startedAt = new Date()
  const loadAverageAtStart = loadavg()
  const brokers = new Map<BrokerKind, BrokerProcess>()
  let interrupted = false
  const killAll = (): void => {
    for (const broker of brokers.values()) broker.kill()
  }
  process.on('exit', killAll)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      interrupted = true
      log(`\n${signal}: stopping the broker children`)
      // Let them close (and remove the gateway's temp data dir), but not for long.
      const closed = Promise.all([...brokers.values()].map((broker) => broker.close()))
      void Promise.race([closed, sleep(SIGNAL_CLOSE_MS)]).finally(() => {
        killAll()
        process.exit(130)
      })
    })
  }
  // Every loop below is bounded; this is the backstop for anything that is not.
  setTimeout(() => {
    log(`Cannot finish the benchmark as it ran past --max-minutes ${options.maxMinutes}; stopping`)
    killAll()
    process.exit(2)
  }, options.maxMinutes * 60_000).unref()

  const resultsDir = resolve(options.resultsDir)
  mkdirSync(resultsDir, { recursive: true })
  const profileDir = join(resultsDir, 'profiles')
  if (options.cpuProf.length > 0) mkdirSync(profileDir, { recursive: true })

  const startErrors: Partial<Record<BrokerKind, string>> = {}
  const start = async (kind: BrokerKind): Promise<void> => {
    try {
      const broker = await startBrokerProcess({
        kind,
        publisherCount: options.publishers,
        startTimeoutMs: START_TIMEOUT_MS,
        cpuProfDir: options.cpuProf.includes(kind) ? profileDir : undefined,
      })
      brokers.set(kind, broker)
      log(`${kind} broker: pid ${broker.pid}, mqtt://127.0.0.1:${broker.port}`)
    } catch (error) {
      startErrors[kind] = (error as Error).stack ?? String(error)
      log(`${kind} broker did not start: ${(error as Error).stack ?? String(error)}`)
    }
  }
  for (const kind of options.brokers) await start(kind)

  const runSeconds = options.warmupSeconds + options.measureSeconds + RUN_OVERHEAD_SECONDS
  const sweepRunSeconds = options.sweepWarmupSeconds + options.sweepSeconds + RUN_OVERHEAD_SECONDS
  const sweepRounds = options.sweep.length === 0 ? 0 : Math.min(options.rounds, options.sweepRounds)
  const plannedSeconds =
    options.rounds * options.scenarios.length * brokers.size * runSeconds +
    sweepRounds * options.sweep.length * brokers.size * sweepRunSeconds
  log(
    `${options.quick ? 'QUICK MODE: ' : ''}${options.rounds} rounds × ${options.scenarios.length} scenarios × ${brokers.size} brokers, ` +
      `${options.warmupSeconds} s warm-up + ${options.measureSeconds} s measured each; load sweep at QoS ${options.sweepQos} ` +
      `(${options.sweep.map((scenario) => scenario.ratePerSec).join(', ')} msg/s) in ${sweepRounds} of the rounds, ` +
      `${options.sweepWarmupSeconds} s + ${options.sweepSeconds} s each: about ${Math.ceil(plannedSeconds / 60)} min`,
  )

  const records: RunRecord[] = []
  for (let round = 1; round <= options.rounds; round++) {
    const planned: Array<{ scenario: Scenario; warmupSeconds: number; measureSeconds: number }> = [
      ...options.scenarios.map((scenario) => ({
        scenario,
        warmupSeconds: options.warmupSeconds,
        measureSeconds: options.measureSeconds,
      })),
      ...(round <= sweepRounds ? options.sweep : []).map((scenario) => ({
        scenario,
        warmupSeconds: options.sweepWarmupSeconds,
        measureSeconds: options.sweepSeconds,
      })),
    ]
    for (const { scenario, warmupSeconds, measureSeconds } of planned) {
      // Alternate the brokers (A B A B ...) so that drift in the machine's load hits both alike.
      for (const kind of options.brokers) {
        if (interrupted) return
        let broker = brokers.get(kind)
        if (broker === undefined) continue
        if (!broker.isRunning()) {
          log(`${kind} broker process is gone; starting a new one`)
          brokers.delete(kind)
          await start(kind)
          broker = brokers.get(kind)
          if (broker === undefined) continue
        }
        const record: RunRecord = {
          round,
          scenario: scenario.name,
          broker: kind,
          startedAt: new Date().toISOString(),
        }
        records.push(record)
        const current = broker
        try {
          record.result = await runLoad({
            port: current.port,
            publishers: current.publishers,
            subscriber: current.subscriber,
            scenario,
            warmupMs: warmupSeconds * 1000,
            measureMs: measureSeconds * 1000,
            windowSize: options.windowSize,
            ratePerSec: options.ratePerSec,
            sampleBroker: () => current.sample(),
            runId: `${round}-${scenario.name}`,
          })
          const result = record.result
          log(
            `round ${round}/${options.rounds} ${scenario.name.padEnd(18)} ${kind.padEnd(7)} ` +
              `${result.msgsPerSec.toFixed(0).padStart(6)} msg/s  ${result.brokerCpuMicrosPerMsg.toFixed(1).padStart(6)} µs CPU/msg  ` +
              `broker ${result.brokerCpuCores.toFixed(2)} cores  load-gen ${result.loadGenCpuCores.toFixed(2)} cores  ` +
              `p50 ${result.latencyP50Ms.toFixed(2)} ms  p99 ${result.latencyP99Ms.toFixed(2)} ms` +
              (result.lost > 0 ? `  lost ${result.lost}` : '') +
              (result.rateShortfall > 0 ? `  shortfall ${result.rateShortfall}` : ''),
          )
        } catch (error) {
          record.error = (error as Error).message
          log(`round ${round}/${options.rounds} ${scenario.name} ${kind}: FAILED: ${record.error}`)
        }
      }
    }
  }

  // Background CPU of each broker with no clients (timers, workers, GC), after all runs: part of
  // every figure above, and most visible at the fixed rate.
  const idleCpuMsPerSec: Partial<Record<BrokerKind, number>> = {}
  try {
    const live = [...brokers.values()].filter((broker) => broker.isRunning())
    const before = await Promise.all(live.map((broker) => broker.sample()))
    const idleStartedAt = performance.now()
    await sleep(IDLE_SAMPLE_MS)
    const after = await Promise.all(live.map((broker) => broker.sample()))
    const idleSeconds = (performance.now() - idleStartedAt) / 1000
    live.forEach((broker, index) => {
      const start = before[index] as BrokerCpuSample
      const end = after[index] as BrokerCpuSample
      const cpuMs = (end.userMicros + end.systemMicros - start.userMicros - start.systemMicros) / 1000
      idleCpuMsPerSec[broker.kind] = cpuMs / idleSeconds
      log(`${broker.kind} broker idle: ${(cpuMs / idleSeconds).toFixed(1)} ms CPU per second`)
    })
  } catch (error) {
    log(`Cannot measure idle CPU: ${(error as Error).message}`)
  }

  for (const kind of [...brokers.keys()].reverse()) await brokers.get(kind)?.close()
  brokers.clear()

  const summary = summarize(records, [...options.scenarios, ...options.sweep], options.brokers)
  const table = markdownTable(summary)
  const cpuModel = cpus()[0]?.model ?? 'unknown'
  process.stdout.write(
    `\nBroker benchmark, ${startedAt.toISOString()}: ${cpuModel}, ${cpus().length} cores, Node ${process.version}; ` +
      `${options.rounds} rounds, ${options.measureSeconds} s measured per run, medians over rounds\n\n${table}\n`,
  )
  for (const [kind, error] of Object.entries(startErrors))
    process.stdout.write(`\n${kind} did not start: ${error}\n`)

  const { help: _help, ...recordedOptions } = options
  const versions = { aedes: packageVersion('aedes'), mqtt: packageVersion('mqtt') }
  const raw = {
    benchmark: 'broker',
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: {
      cpuModel,
      cores: cpus().length,
      node: process.version,
      platform: platform(),
      arch: arch(),
      totalMemoryBytes: totalmem(),
      loadAverageAtStart,
      loadAverageAtEnd: loadavg(),
    },
    versions,
    options: { ...recordedOptions, payloadBytes: PAYLOAD_BYTES },
    startErrors,
    idleCpuMsPerSec,
    summary,
    runs: records,
  }
  const section = brokerSection({
    options,
    records,
    summary,
    idleCpuMsPerSec,
    startErrors,
    versions,
    startedAt,
    durationSec: (Date.now() - startedAt.getTime()) / 1000,
  })
  const file = writeSection(resultsDir, section, raw)
  log(`\nresults: ${file}`)
  // Results are written either way; the exit code says whether they are complete.
  if (Object.keys(startErrors).length > 0 || records.some((record) => record.error !== undefined)) {
    process.exitCode = 1
  }
}

main().catch((error: unknown) => {
  // A bad flag or env value is the user's to fix: its message is enough.
  log(
    error instanceof RangeError ? `${error.message}\n\n${USAGE}` : ((error as Error).stack ?? String(error)),
  )
  process.exitCode = 1
})
