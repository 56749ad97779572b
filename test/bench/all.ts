// Every benchmark, then the report: `npm run bench` (quick check: `npm run bench -- --quick` or
// `BENCH_QUICK=1 npm run bench`). Runs each benchmark's own npm script in turn, in its own
// process, carries on past one that fails, records how each ended in
// test/bench/results/bench-run-<timestamp>.json (the report marks failures from it), runs
// `npm run bench:report`, and exits non-zero if anything failed. A benchmark whose entry file does
// not exist yet is skipped.
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { BENCH_RUN_PREFIX, BENCHMARKS, type BenchRun, type BenchRunPart } from './_catalog.ts'
import { isQuickMode } from './_quick.ts'
import { machineInfo } from './_section.ts'

const RESULTS_DIR = 'test/bench/results'
/** Longest one benchmark may run before it is stopped and counted as failed. */
const PART_TIMEOUT_MS = { full: 45 * 60_000, quick: 10 * 60_000 } as const
/** After SIGTERM, how long a stopped benchmark gets before SIGKILL. */
const KILL_GRACE_MS = 10_000

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
})

const log = (line: string) => process.stderr.write(`${line}\n`)

function fileTimestamp(date: Date): string {
  return date.toISOString().slice(0, 19).replaceAll(':', '-')
}

/** The section file `id` wrote since `since`, if any. */
function sectionWrittenSince(id: string, since: number): string | undefined {
  const dir = resolve(RESULTS_DIR)
  if (!existsSync(dir)) return undefined
  const pattern = new RegExp(`^${id}-\\d{4}-\\d{2}-\\d{2}T[\\d-]+\\.json$`)
  return readdirSync(dir)
    .filter((name) => pattern.test(name) && statSync(join(dir, name)).mtimeMs >= since)
    .sort()
    .at(-1)
}

interface Ended {
  exitCode: number | null
  signal: string | null
  timedOut: boolean
}

/**
 * Runs `npm run <script>` in its own process group (so that a timeout stops the benchmark and the
 * broker or gateway children it started), with the output passed through.
 */
function runScript(script: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Ended> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('npm', ['run', '--silent', script], { stdio: 'inherit', env, detached: true })
    let timedOut = false
    let killTimer: NodeJS.Timeout | undefined
    const signalGroup = (signal: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, signal)
      } catch {
        // The group is gone already.
      }
    }
    const timer = setTimeout(() => {
      timedOut = true
      log(`\n${script} ran past ${timeoutMs / 60_000} min: stopping it`)
      signalGroup('SIGTERM')
      killTimer = setTimeout(() => signalGroup('SIGKILL'), KILL_GRACE_MS)
    }, timeoutMs)
    // Ctrl-C: the benchmark runs in its own group, so pass the signal on, then stop.
    const onSignal = (signal: NodeJS.Signals) => {
      signalGroup(signal)
      process.exitCode = 130
    }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    child.once('error', (error) => {
      clearTimeout(timer)
      reject(new Error(`Cannot run 'npm run ${script}': ${error.message}`, { cause: error }))
    })
    child.once('exit', (exitCode, signal) => {
      clearTimeout(timer)
      clearTimeout(killTimer)
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      resolvePromise({ exitCode, signal, timedOut })
    })
  })
}

function reasonOf(ended: Ended, timeoutMs: number): string | undefined {
  if (ended.timedOut) return `stopped after ${timeoutMs / 60_000} min`
  if (ended.signal !== null) return `killed by ${ended.signal}`
  if (ended.exitCode !== 0) return `exit code ${ended.exitCode}`
  return undefined
}

async function main(): Promise<void> {
  const quick = flags.quick === true || isQuickMode()
  const only = flags.only?.split(',').map((id) => id.trim())
  for (const id of only ?? []) {
    if (!BENCHMARKS.some((entry) => entry.id === id)) {
      throw new RangeError(
        `Cannot run benchmark '${id}' as it is not one of ${BENCHMARKS.map((entry) => entry.id).join(', ')}`,
      )
    }
  }
  const env: NodeJS.ProcessEnv = { ...process.env, ...(quick ? { BENCH_QUICK: '1' } : {}) }
  const timeoutMs = quick ? PART_TIMEOUT_MS.quick : PART_TIMEOUT_MS.full
  const startedAt = new Date()
  const machineAtStart = machineInfo()
  log(
    `npm run bench${quick ? ' (QUICK MODE: short runs to check the pipeline, not figures to quote)' : ''}: ` +
      `${BENCHMARKS.filter((entry) => only === undefined || only.includes(entry.id))
        .map((entry) => entry.id)
        .join(', ')}, then the report`,
  )
  const parts: BenchRunPart[] = []
  for (const entry of BENCHMARKS) {
    if (only !== undefined && !only.includes(entry.id)) continue
    const command = `npm run ${entry.script}`
    const partStartedAt = new Date()
    if (!existsSync(resolve(entry.file))) {
      log(`\n=== ${entry.id}: skipped, ${entry.file} does not exist`)
      parts.push({
        id: entry.id,
        command,
        status: 'skipped',
        exitCode: null,
        signal: null,
        startedAt: partStartedAt.toISOString(),
        durationSec: 0,
        reason: `${entry.file} does not exist`,
      })
      continue
    }
    log(`\n=== ${entry.id}: ${command}${quick ? ' (quick)' : ''}`)
    const ended = await runScript(entry.script, env, timeoutMs)
    const durationSec = Number(((Date.now() - partStartedAt.getTime()) / 1000).toFixed(1))
    const reason = reasonOf(ended, timeoutMs)
    const sectionFile = sectionWrittenSince(entry.id, partStartedAt.getTime())
    parts.push({
      id: entry.id,
      command,
      status: reason === undefined ? 'ok' : 'failed',
      exitCode: ended.exitCode,
      signal: ended.signal,
      startedAt: partStartedAt.toISOString(),
      durationSec,
      ...(reason === undefined ? {} : { reason }),
      ...(sectionFile === undefined ? {} : { sectionFile }),
    })
    log(`=== ${entry.id}: ${reason === undefined ? 'ok' : `FAILED (${reason})`} after ${durationSec} s`)
    if (process.exitCode === 130) break
  }

  const run: BenchRun = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    quick,
    machineAtStart,
    machineAtEnd: machineInfo(),
    parts,
  }
  mkdirSync(resolve(RESULTS_DIR), { recursive: true })
  const runFile = join(resolve(RESULTS_DIR), `${BENCH_RUN_PREFIX}-${fileTimestamp(startedAt)}.json`)
  writeFileSync(runFile, `${JSON.stringify(run, null, 2)}\n`)

  log('\n=== report: npm run bench:report')
  const report = await runScript('bench:report', env, PART_TIMEOUT_MS.quick)
  const reportFailed = reasonOf(report, PART_TIMEOUT_MS.quick)

  log(
    `\nnpm run bench${quick ? ' (quick mode)' : ''}: ${((Date.now() - startedAt.getTime()) / 1000).toFixed(0)} s in all`,
  )
  for (const part of parts) {
    log(
      `  ${part.id.padEnd(11)} ${part.status.padEnd(8)} ${String(part.durationSec).padStart(7)} s${part.reason === undefined ? '' : `  ${part.reason}`}`,
    )
  }
  log(`  ${'report'.padEnd(11)} ${reportFailed === undefined ? 'ok' : `failed (${reportFailed})`}`)
  log(`run record: ${runFile}`)
  const failed = parts.filter((part) => part.status === 'failed')
  if (failed.length > 0 || reportFailed !== undefined) {
    log(
      `\nFailed: ${[...failed.map((part) => part.id), ...(reportFailed === undefined ? [] : ['report'])].join(', ')}`,
    )
    process.exitCode ||= 1
  }
}

function printHelp(): void {
  process.stdout.write(`npm run bench -- [flags]
  --quick       every benchmark with short defaults, to check the pipeline (also BENCH_QUICK=1)
  --only LIST   a subset of: ${BENCHMARKS.map((entry) => entry.id).join(', ')}
Each benchmark's own flags: npm run bench:<id> -- --help
`)
}

if (flags.help) printHelp()
else
  await main().catch((error: unknown) => {
    log(
      error instanceof RangeError
        ? error.message
        : error instanceof Error
          ? (error.stack ?? error.message)
          : String(error),
    )
    process.exitCode = 1
  })
