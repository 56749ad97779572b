/**
 * The common result format of every benchmark: each one writes one `BenchSection` per run through
 * `writeSection`, and `report.ts` turns the newest section of each id into `docs/BENCHMARKS.md`
 * and the SVG plots in `docs/bench/`. Keep this shape stable: other benchmarks depend on it.
 *
 * Quick mode (`BENCH_QUICK=1` or `--quick`, see `_quick.ts`) is recorded by `writeSection` in the
 * file's `machine.mode`, and the report shows it: a benchmark only has to shorten its defaults.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { arch, availableParallelism, cpus, hostname, loadavg, release, totalmem, type } from 'node:os'
import { join } from 'node:path'
import { isQuickMode } from './_quick.ts'

/**
 * One headline number, next to the figure it should be judged against, measured in the same run
 * (gateway against bare aedes, sandbox against host JS, …).
 */
export interface BenchFigure {
  name: string
  value: number
  unit: string
  peer?: { name: string; value: number }
  /** `value / peer.value`. */
  ratio?: number
  /** Judged on `value` (not on `ratio`): state a goal on a ratio as a figure whose value is the ratio. */
  goal?: { op: '<=' | '>='; value: number }
  note?: string
}

/** A table of results, printed as markdown in the report. */
export interface BenchTable {
  caption: string
  columns: string[]
  rows: Array<Array<string | number>>
}

/** A plot, rendered to `docs/bench/${id}.svg` by the report. */
export interface BenchPlot {
  /** File name stem, `[a-z0-9-]`. */
  id: string
  title: string
  kind: 'cdf' | 'line'
  x: { label: string; log?: boolean }
  y: { label: string; log?: boolean }
  series: Array<{ name: string; points: Array<[number, number]> }>
}

/** Everything one benchmark reports about one run. */
export interface BenchSection {
  /** `'broker' | 'functions' | 'durability' | 'uplink' | 'scale' | 'memory'`. */
  id: string
  title: string
  /** The command that produced it, e.g. `npm run bench:broker`. */
  command: string
  startedAt: string
  durationSec: number
  /** Short markdown paragraph; links to `docs/benchmark-methods.md#anchor` for the long form. */
  method: string
  figures: BenchFigure[]
  tables: BenchTable[]
  plots: BenchPlot[]
  notes?: string[]
}

function formatLoad(): string {
  return loadavg()
    .map((value) => value.toFixed(2))
    .join(' ')
}

/** The load average when this module was first imported, i.e. about when the benchmark process started. */
const LOADAVG_AT_START = formatLoad()
const STARTED_AT = new Date().toISOString()

function cpuModel(): string {
  const fromOs = cpus()[0]?.model?.trim()
  if (fromOs !== undefined && fromOs !== '') return fromOs
  try {
    const match = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))
    if (match?.[1] !== undefined) return match[1].trim()
  } catch {
    // Not Linux: fall through.
  }
  return 'unknown'
}

function osName(): string {
  try {
    const match = /^PRETTY_NAME="?([^"\n]+)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'))
    if (match?.[1] !== undefined) return match[1]
  } catch {
    // No /etc/os-release: use the platform name.
  }
  return `${type()} ${release()}`
}

/**
 * The machine a benchmark ran on: CPU model, logical cores, RAM, OS, kernel, Node version and the
 * 1/5/15-minute load average at the moment of the call (call it at the start and at the end).
 */
export function machineInfo(): Record<string, string | number> {
  return {
    cpuModel: cpuModel(),
    cores: availableParallelism(),
    ramGiB: Number((totalmem() / 2 ** 30).toFixed(1)),
    os: osName(),
    kernel: `${type()} ${release()} ${arch()}`,
    node: process.version,
    loadavg: formatLoad(),
    hostname: hostname(),
    date: new Date().toISOString(),
    mode: isQuickMode() ? 'quick' : 'full',
  }
}

/**
 * The empirical CDF of sorted samples (ms) as `[latencyMs, fraction ≤ latencyMs]` points, downsampled
 * to at most `maxPoints`: evenly spaced in rank, plus the tail ranks (p99, p99.9, max) kept exactly
 * so the tail of the curve is not smoothed away. Samples that are not sorted are sorted in a copy.
 */
export function cdfPoints(sortedSamplesMs: number[], maxPoints = 200): Array<[number, number]> {
  const count = sortedSamplesMs.length
  if (count === 0) return []
  if (maxPoints < 2)
    throw new RangeError(`Cannot downsample a CDF to ${maxPoints} points as it needs at least 2`)
  let sorted = sortedSamplesMs
  for (let index = 1; index < count; index++) {
    // Not sorted after all: a CDF of them is still what the caller means, so sort a copy.
    if ((sorted[index] as number) < (sorted[index - 1] as number)) {
      sorted = [...sortedSamplesMs].sort((a, b) => a - b)
      break
    }
  }
  const ranks = new Set<number>()
  if (count <= maxPoints) {
    for (let rank = 1; rank <= count; rank++) ranks.add(rank)
  } else {
    const evenPoints = maxPoints - 4
    for (let index = 0; index < evenPoints; index++) {
      ranks.add(Math.max(1, Math.round(((index + 1) / evenPoints) * count)))
    }
    for (const fraction of [0.99, 0.999, 0.9999]) ranks.add(Math.max(1, Math.ceil(fraction * count)))
    ranks.add(1)
    ranks.add(count)
  }
  return [...ranks]
    .sort((a, b) => a - b)
    .map((rank) => [sorted[rank - 1] as number, rank / count] as [number, number])
}

/** `2026-11-27T08-42-39`: a file-name-safe timestamp. */
function fileTimestamp(date: Date): string {
  return date.toISOString().slice(0, 19).replaceAll(':', '-')
}

/**
 * Writes `${resultsDir}/${section.id}-${timestamp}.json` as `{ section, machine, raw }` and returns its
 * path. `raw` is the benchmark's full result data, kept for later analysis. `machine` is `machineInfo()`
 * at the end of the run plus `loadavgAtStart`, taken when this module was first imported.
 */
export function writeSection(resultsDir: string, section: BenchSection, raw?: unknown): string {
  if (!/^[a-z0-9-]+$/.test(section.id)) {
    throw new RangeError(`Cannot write section '${section.id}' as its id is not [a-z0-9-]+`)
  }
  for (const plot of section.plots) {
    if (!/^[a-z0-9-]+$/.test(plot.id)) {
      throw new RangeError(
        `Cannot write plot '${plot.id}' of section '${section.id}' as its id is not [a-z0-9-]+`,
      )
    }
  }
  mkdirSync(resultsDir, { recursive: true })
  const file = join(resultsDir, `${section.id}-${fileTimestamp(new Date())}.json`)
  // `loadavg` is the load at the end of the run; the start is taken when this module was loaded.
  const machine = { ...machineInfo(), loadavgAtStart: LOADAVG_AT_START, processStartedAt: STARTED_AT }
  writeFileSync(file, `${JSON.stringify({ section, machine, raw }, null, 2)}\n`)
  return file
}
