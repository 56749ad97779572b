import { z } from 'zod'

/** One benchmark that `npm run bench` runs and the report knows. */
export interface BenchmarkEntry {
  /** The section id it writes (`<id>-<timestamp>.json`). */
  id: string
  title: string
  /** The package.json script that runs it. */
  script: string
  /** Its entry file: the benchmark is skipped while the file does not exist. */
  file: string
}

/** Every benchmark, in the order `npm run bench` runs them and the report shows them. */
export const BENCHMARKS: readonly BenchmarkEntry[] = [
  { id: 'broker', title: 'MQTT broker', script: 'bench:broker', file: 'test/bench/run.ts' },
  { id: 'functions', title: 'Functions', script: 'bench:functions', file: 'test/bench/functions.ts' },
  { id: 'durability', title: 'Durability', script: 'bench:durability', file: 'test/bench/durability.ts' },
  { id: 'uplink', title: 'Private uplink', script: 'bench:uplink', file: 'test/bench/uplink.ts' },
  { id: 'scale', title: 'Scale', script: 'bench:scale', file: 'test/bench/scale.ts' },
  { id: 'memory', title: 'Memory', script: 'bench:memory', file: 'test/bench/memory.ts' },
]

/** How one benchmark of an `npm run bench` ended. */
export const BENCH_RUN_PART_SCHEMA = z.object({
  id: z.string(),
  command: z.string(),
  status: z.enum(['ok', 'failed', 'skipped']),
  exitCode: z.number().nullable(),
  signal: z.string().nullable(),
  startedAt: z.string(),
  durationSec: z.number(),
  /** Why it failed or was skipped, in a few words. */
  reason: z.string().optional(),
  /** The section file it wrote in this run, if any. */
  sectionFile: z.string().optional(),
})

/** The record `npm run bench` (all.ts) leaves in the results dir as `bench-run-<timestamp>.json`. */
export const BENCH_RUN_SCHEMA = z.object({
  startedAt: z.string(),
  finishedAt: z.string(),
  quick: z.boolean(),
  machineAtStart: z.record(z.string(), z.union([z.string(), z.number()])),
  machineAtEnd: z.record(z.string(), z.union([z.string(), z.number()])),
  parts: z.array(BENCH_RUN_PART_SCHEMA),
})

export type BenchRunPart = z.infer<typeof BENCH_RUN_PART_SCHEMA>
export type BenchRun = z.infer<typeof BENCH_RUN_SCHEMA>

/** The file name prefix of the run records. */
export const BENCH_RUN_PREFIX = 'bench-run'
