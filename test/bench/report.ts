// The benchmark report: `npm run bench:report` (also the last step of `npm run bench`). Reads the
// newest section file of every known benchmark in test/bench/results (see _section.ts), and the
// record of the last `npm run bench` (see all.ts), and writes docs/BENCHMARKS.md with its plots
// rendered to docs/bench/*.svg. Nothing in the report is typed in by hand: every figure comes
// from a section file.
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { z } from 'zod'
import {
  BENCH_RUN_PREFIX,
  BENCH_RUN_SCHEMA,
  BENCHMARKS,
  type BenchRun,
  type BenchRunPart,
} from './_catalog.ts'
import { figuresTable, goalMet, tableMarkdown } from './_markdown.ts'
import { renderPlot } from './_plot.ts'
import type { BenchSection } from './_section.ts'

const { values: flags } = parseArgs({
  options: {
    'results-dir': { type: 'string', default: process.env.BENCH_RESULTS_DIR ?? 'test/bench/results' },
    out: { type: 'string', default: 'docs/BENCHMARKS.md' },
    'svg-dir': { type: 'string', default: 'docs/bench' },
    help: { type: 'boolean', default: false },
  },
})

const log = (line: string) => process.stderr.write(`${line}\n`)

const ID = /^[a-z0-9-]+$/
const POINT = z.tuple([z.number().nullable(), z.number().nullable()])
/** A section file as `writeSection` writes it; numbers may be null where JSON turned NaN into null. */
const SECTION_FILE_SCHEMA = z.object({
  section: z.object({
    id: z.string().regex(ID),
    title: z.string(),
    command: z.string(),
    startedAt: z.string(),
    durationSec: z.number(),
    method: z.string(),
    figures: z.array(
      z.object({
        name: z.string(),
        value: z.number().nullable(),
        unit: z.string(),
        peer: z.object({ name: z.string(), value: z.number().nullable() }).optional(),
        ratio: z.number().nullable().optional(),
        goal: z.object({ op: z.enum(['<=', '>=']), value: z.number() }).optional(),
        note: z.string().optional(),
      }),
    ),
    tables: z.array(
      z.object({
        caption: z.string(),
        columns: z.array(z.string()),
        rows: z.array(z.array(z.union([z.string(), z.number(), z.null()]))),
      }),
    ),
    plots: z.array(
      z.object({
        id: z.string().regex(ID),
        title: z.string(),
        kind: z.enum(['cdf', 'line']),
        x: z.object({ label: z.string(), log: z.boolean().optional() }),
        y: z.object({ label: z.string(), log: z.boolean().optional() }),
        series: z.array(z.object({ name: z.string(), points: z.array(POINT) })),
      }),
    ),
    notes: z.array(z.string()).optional(),
  }),
  machine: z.record(z.string(), z.union([z.string(), z.number(), z.null()])),
})

/** One section as read from its file, with `null`s (NaN in the writer) turned back into NaN. */
interface LoadedSection {
  file: string
  section: BenchSection
  machine: Record<string, string | number>
}

const nan = (value: number | null | undefined): number => (typeof value === 'number' ? value : Number.NaN)

function loadSectionFile(file: string): LoadedSection | undefined {
  let json: unknown
  try {
    json = JSON.parse(readFileSync(file, 'utf8'))
  } catch (error) {
    throw new Error(`Cannot read the results file '${file}' as it is not JSON: ${(error as Error).message}`, {
      cause: error,
    })
  }
  // Files from before the common section format (raw results only) are skipped, not errors.
  if (typeof json !== 'object' || json === null || !('section' in json)) return undefined
  const parsed = SECTION_FILE_SCHEMA.safeParse(json)
  if (!parsed.success) {
    throw new Error(
      `Cannot use the section file '${file}' as it does not match the section format: ${z.prettifyError(parsed.error)}`,
    )
  }
  const { section, machine } = parsed.data
  return {
    file,
    machine: Object.fromEntries(Object.entries(machine).map(([key, value]) => [key, value ?? 'n/a'])),
    section: {
      ...section,
      figures: section.figures.map((figure) => ({
        ...figure,
        value: nan(figure.value),
        ...(figure.peer === undefined
          ? {}
          : { peer: { name: figure.peer.name, value: nan(figure.peer.value) } }),
        ...(figure.ratio === undefined ? {} : { ratio: nan(figure.ratio) }),
      })),
      tables: section.tables.map((table) => ({
        ...table,
        rows: table.rows.map((row) => row.map((cell) => cell ?? 'n/a')),
      })),
      plots: section.plots.map((plot) => ({
        ...plot,
        series: plot.series.map((series) => ({
          name: series.name,
          points: series.points.map(([x, y]) => [nan(x), nan(y)] as [number, number]),
        })),
      })),
    } as BenchSection,
  }
}

/** The newest file of each prefix, by the timestamp in its name (`<prefix>-2026-11-27T08-42-39.json`). */
function filesByNewest(dir: string, prefix: string): string[] {
  const pattern = new RegExp(`^${prefix}-(\\d{4}-\\d{2}-\\d{2}T[\\d-]+)\\.json$`)
  return readdirSync(dir)
    .filter((name) => pattern.test(name))
    .sort()
    .reverse()
    .map((name) => join(dir, name))
}

function newestSection(dir: string, id: string): LoadedSection | undefined {
  for (const file of filesByNewest(dir, id)) {
    const loaded = loadSectionFile(file)
    if (loaded !== undefined) return loaded
  }
  return undefined
}

function newestRun(dir: string): BenchRun | undefined {
  const [file] = filesByNewest(dir, BENCH_RUN_PREFIX)
  if (file === undefined) return undefined
  const parsed = BENCH_RUN_SCHEMA.safeParse(JSON.parse(readFileSync(file, 'utf8')))
  if (!parsed.success) {
    throw new Error(
      `Cannot use the run record '${file}' as it is malformed: ${z.prettifyError(parsed.error)}`,
    )
  }
  return parsed.data
}

/** `2026-11-27 21:57 UTC`. */
const when = (iso: string): string => `${iso.slice(0, 16).replace('T', ' ')} UTC`

function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return 'n/a'
  if (seconds < 90) return `${Math.round(seconds)} s`
  const minutes = Math.floor(seconds / 60)
  return `${minutes} min ${String(Math.round(seconds - minutes * 60)).padStart(2, '0')} s`
}

/** Method paragraphs link to `docs/benchmark-methods.md#…`; from docs/ that is `benchmark-methods.md#…`. */
const docsRelative = (markdown: string): string => markdown.replaceAll('](docs/', '](')

const MACHINE_ROWS: Array<[string, string]> = [
  ['CPU model', 'cpuModel'],
  ['Logical cores', 'cores'],
  ['RAM (GiB)', 'ramGiB'],
  ['OS', 'os'],
  ['Kernel', 'kernel'],
  ['Node', 'node'],
  ['Host name', 'hostname'],
]
/** Keys that tell whether two sections ran on the same machine and runtime. */
const MACHINE_IDENTITY = ['cpuModel', 'cores', 'ramGiB', 'kernel', 'node', 'hostname']

function machineTable(
  machine: Record<string, string | number>,
  loadAtStart: string,
  loadAtEnd: string,
  period: string,
): string {
  const rows = MACHINE_ROWS.map(([label, key]) => `| ${label} | ${machine[key] ?? 'n/a'} |`)
  return [
    '| Machine | |',
    '|---|---|',
    ...rows,
    `| Load average (1, 5, 15 min) at start | ${loadAtStart} |`,
    `| Load average (1, 5, 15 min) at end | ${loadAtEnd} |`,
    `| Date | ${period} |`,
  ].join('\n')
}

interface SectionState {
  id: string
  title: string
  command: string
  loaded: LoadedSection | undefined
  part: BenchRunPart | undefined
  /**
   * Where the loaded section comes from, against the last `npm run bench`: written by it, before
   * it, after it (a benchmark run on its own), or there is no record of a run.
   */
  origin: 'last-run' | 'older' | 'newer' | 'no-run'
}

function statusOf(state: SectionState): string {
  if (state.loaded !== undefined && state.origin === 'newer') {
    return `ok (run on its own, ${when(state.loaded.section.startedAt)})`
  }
  if (state.part?.status === 'failed') {
    return `**failed** (${state.part.reason ?? `exit ${state.part.exitCode}`})`
  }
  if (state.part?.status === 'skipped' && state.loaded === undefined) return `skipped (${state.part.reason})`
  if (state.loaded === undefined) return 'not run'
  if (state.origin === 'older') return `older run (${when(state.loaded.section.startedAt)})`
  return 'ok'
}

function originOf(section: BenchSection | undefined, run: BenchRun | undefined): SectionState['origin'] {
  if (run === undefined || section === undefined) return 'no-run'
  const startedAt = Date.parse(section.startedAt)
  // A second of slack: the run's clock and the benchmark's are read in different processes.
  if (startedAt < Date.parse(run.startedAt) - 1000) return 'older'
  if (startedAt > Date.parse(run.finishedAt)) return 'newer'
  return 'last-run'
}

async function main(): Promise<void> {
  const resultsDir = resolve(flags['results-dir'] as string)
  const outFile = resolve(flags.out as string)
  const svgDir = resolve(flags['svg-dir'] as string)
  const run = newestRun(resultsDir)
  const states: SectionState[] = BENCHMARKS.map((entry) => {
    const loaded = newestSection(resultsDir, entry.id)
    const part = run?.parts.find((candidate) => candidate.id === entry.id)
    const command = `npm run ${entry.script}`
    const origin = originOf(loaded?.section, run)
    return { id: entry.id, title: entry.title, command, loaded, part, origin }
  })
  const present = states.filter((state) => state.loaded !== undefined)
  const quickSections = present.filter((state) => state.loaded?.machine.mode === 'quick')

  // Plots: render every plot of every section; remove SVGs no section has any more.
  mkdirSync(svgDir, { recursive: true })
  const written = new Set<string>()
  const plotProblems: string[] = []
  for (const state of present) {
    for (const plot of state.loaded?.section.plots ?? []) {
      if (written.has(plot.id)) {
        plotProblems.push(
          `Plot '${plot.id}' of section '${state.id}' was left out: another section has a plot of that id.`,
        )
        continue
      }
      const { svg, droppedPoints } = await renderPlot(plot)
      writeFileSync(join(svgDir, `${plot.id}.svg`), svg)
      written.add(plot.id)
      if (droppedPoints > 0) {
        plotProblems.push(
          `Plot '${plot.id}': ${droppedPoints} points were not drawn (not numbers, or not positive on a log axis).`,
        )
      }
    }
  }
  for (const name of readdirSync(svgDir)) {
    if (name.endsWith('.svg') && !written.has(name.slice(0, -'.svg'.length))) rmSync(join(svgDir, name))
  }
  const svgLink = relative(resolve(outFile, '..'), svgDir).split('\\').join('/') || '.'

  const lines: string[] = []
  const push = (...more: string[]) => lines.push(...more)
  push(
    '<!-- Generated by test/bench/report.ts from test/bench/results: do not edit by hand. -->',
    '',
    '# Benchmarks',
    '',
    'Generated by `npm run bench:report` from the newest results in `test/bench/results/`. ' +
      '`npm run bench` runs every benchmark in turn and then this report (`npm run bench -- --quick`, or ' +
      '`BENCH_QUICK=1 npm run bench`, for a short check of the pipeline). Each figure is shown next to its peer, ' +
      'measured in the same run on the same machine: compare the ratios, not figures from different runs. ' +
      'How each benchmark works, why, its options, and lasting findings: [benchmark-methods.md](benchmark-methods.md).',
    '',
  )
  if (quickSections.length > 0) {
    const which =
      quickSections.length === present.length
        ? 'Every section below comes'
        : `${quickSections.length === 1 ? 'Section' : 'Sections'} ${quickSections.map((state) => `\`${state.id}\``).join(', ')} ${quickSections.length === 1 ? 'comes' : 'come'}`
    push(
      `> [!WARNING]`,
      `> **QUICK RUN.** ${which} from quick mode ` +
        '(`BENCH_QUICK=1`: fewer rounds, shorter windows, fewer tenants and devices). ' +
        'These figures check that the pipeline works; they are too short and too noisy to quote. ' +
        'Run `npm run bench` for the full benchmarks.',
      '',
    )
  }

  // The machine: the last `npm run bench` if there is one, else the newest section.
  const newest = [...present].sort((a, b) =>
    (b.loaded?.section.startedAt ?? '').localeCompare(a.loaded?.section.startedAt ?? ''),
  )[0]?.loaded
  const reference = run?.machineAtStart ?? newest?.machine
  push('## Machine', '')
  if (run !== undefined) {
    push(
      machineTable(
        run.machineAtStart,
        String(run.machineAtStart.loadavg ?? 'n/a'),
        String(run.machineAtEnd.loadavg ?? 'n/a'),
        `${when(run.startedAt)} to ${when(run.finishedAt)}`,
      ),
      '',
      `Last \`npm run bench\`: ${when(run.startedAt)}, ${duration((Date.parse(run.finishedAt) - Date.parse(run.startedAt)) / 1000)} in all, ` +
        `${run.quick ? '**quick mode**' : 'full mode'}.`,
      '',
    )
  } else if (newest !== undefined) {
    push(
      machineTable(
        newest.machine,
        String(newest.machine.loadavgAtStart ?? 'n/a'),
        String(newest.machine.loadavg ?? 'n/a'),
        when(newest.section.startedAt),
      ),
      '',
      'No record of an `npm run bench` was found: the sections below come from separate runs; each says when.',
      '',
    )
  } else {
    push('No benchmark has been run yet.', '')
  }

  push(
    '## Overview',
    '',
    '| benchmark | status | started | took | mode | goals met | command |',
    '|---|---|---|---|---|---|---|',
  )
  for (const state of states) {
    const section = state.loaded?.section
    const goals = section?.figures.filter((figure) => figure.goal !== undefined) ?? []
    const met = goals.filter((figure) => goalMet(figure) === true).length
    push(
      `| [${state.title}](#${state.id}) | ${statusOf(state)} | ${section === undefined ? '' : when(section.startedAt)} | ` +
        `${section === undefined ? '' : duration(section.durationSec)} | ${state.loaded?.machine.mode ?? ''} | ` +
        `${goals.length === 0 ? '' : `${met} of ${goals.length}`} | \`${state.command}\` |`,
    )
  }
  push('')

  for (const state of states) {
    push(`<a id="${state.id}"></a>`, '', `## ${state.loaded?.section.title ?? state.title}`, '')
    const part = state.part
    if (part?.status === 'failed' && state.origin !== 'newer') {
      push(
        `> [!CAUTION]`,
        `> \`${state.command}\` **failed** in the last \`npm run bench\` (${part.reason ?? `exit code ${part.exitCode}`}, after ${duration(part.durationSec)}). ` +
          (state.loaded === undefined
            ? 'No results of it exist.'
            : state.origin === 'last-run'
              ? 'The results below are what it wrote before it ended: check its notes.'
              : `The results below are from an older run, ${when(state.loaded.section.startedAt)}.`),
        '',
      )
    }
    const loaded = state.loaded
    if (loaded === undefined) {
      // A failure without results is said above; otherwise say how to make the section.
      if (part?.status !== 'failed') {
        const why = part?.status === 'skipped' ? ` (${part.reason})` : ''
        push(`Not run${why}. \`${state.command}\` makes it; then \`npm run bench:report\`.`, '')
      }
      continue
    }
    const { section, machine } = loaded
    if (run !== undefined && state.origin === 'older' && part?.status !== 'failed') {
      push(
        `> [!NOTE]`,
        `> Not from the last \`npm run bench\` (${when(run.startedAt)}): these results are from an older run, ${when(section.startedAt)}.`,
        '',
      )
    }
    if (run !== undefined && state.origin === 'newer') {
      push(
        `> [!NOTE]`,
        `> Run on its own after the last \`npm run bench\` (${when(run.startedAt)}), on ${when(section.startedAt)}.`,
        '',
      )
    }
    const otherMachine =
      reference !== undefined &&
      MACHINE_IDENTITY.some((key) => String(machine[key]) !== String(reference[key]))
    push(
      `\`${section.command}\` · ${when(section.startedAt)} · took ${duration(section.durationSec)} · ` +
        `${machine.mode === 'quick' ? '**quick mode**' : 'full mode'} · load average ${machine.loadavgAtStart ?? 'n/a'} at start, ${machine.loadavg ?? 'n/a'} at end` +
        (otherMachine
          ? ` · on another machine: ${machine.cpuModel}, ${machine.cores} cores, ${machine.kernel}, Node ${machine.node}`
          : '') +
        ` · [results file](${relative(resolve(outFile, '..'), loaded.file).split('\\').join('/')})`,
      '',
      docsRelative(section.method),
      '',
    )
    if (section.figures.length > 0) push(tableMarkdown(figuresTable(section.figures)), '')
    for (const table of section.tables) push(tableMarkdown(table), '')
    for (const plot of section.plots) {
      if (written.has(plot.id)) push(`![${plot.title}](${svgLink}/${plot.id}.svg)`, '')
    }
    if (section.notes !== undefined && section.notes.length > 0) {
      push(...section.notes.map((note) => `- ${docsRelative(note)}`), '')
    }
  }
  if (plotProblems.length > 0)
    push('## Report notes', '', ...plotProblems.map((problem) => `- ${problem}`), '')

  mkdirSync(resolve(outFile, '..'), { recursive: true })
  writeFileSync(outFile, `${lines.join('\n').trimEnd()}\n`)
  log(
    `report: ${relative(process.cwd(), outFile)} with ${present.length} of ${states.length} sections and ${written.size} plots in ${relative(process.cwd(), svgDir)}/` +
      (quickSections.length > 0 ? ` (quick mode: ${quickSections.map((state) => state.id).join(', ')})` : ''),
  )
  for (const state of states) {
    if (state.loaded === undefined) log(`  ${state.id}: not run (${state.command})`)
  }
}

function printHelp(): void {
  process.stdout.write(`npm run bench:report -- [flags]
  --results-dir DIR   where the section files are (BENCH_RESULTS_DIR, test/bench/results)
  --out FILE          the markdown report (docs/BENCHMARKS.md)
  --svg-dir DIR       where the plots go (docs/bench)
`)
}

if (flags.help) printHelp()
else
  await main().catch((error: unknown) => {
    log(error instanceof Error ? (error.stack ?? error.message) : String(error))
    process.exitCode = 1
  })
