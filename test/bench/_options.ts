import { parseArgs } from 'node:util'
import { SCENARIOS, type Scenario } from './_load.ts'
import type { BrokerKind } from './_protocol.ts'

/** Settings of one benchmark run; every one has a flag and an env variable. */
export interface BenchOptions {
  rounds: number
  warmupSeconds: number
  measureSeconds: number
  publishers: number
  windowSize: number
  ratePerSec: number
  scenarios: Scenario[]
  brokers: BrokerKind[]
  /** Broker kinds whose child runs with `--cpu-prof`. */
  cpuProf: BrokerKind[]
  resultsDir: string
  /** Hard stop of the whole benchmark. */
  maxMinutes: number
  help: boolean
}

interface NumberSetting {
  flag: string
  env: string
  fallback: number
  min: number
  max: number
  integer: boolean
}

const NUMBERS = {
  rounds: { flag: 'rounds', env: 'BENCH_ROUNDS', fallback: 7, min: 1, max: 50, integer: true },
  measureSeconds: { flag: 'seconds', env: 'BENCH_SECONDS', fallback: 4, min: 0.5, max: 120, integer: false },
  warmupSeconds: {
    flag: 'warmup-seconds',
    env: 'BENCH_WARMUP_SECONDS',
    fallback: 2,
    min: 0,
    max: 60,
    integer: false,
  },
  publishers: { flag: 'publishers', env: 'BENCH_PUBLISHERS', fallback: 8, min: 1, max: 100, integer: true },
  windowSize: { flag: 'window', env: 'BENCH_WINDOW', fallback: 64, min: 1, max: 10_000, integer: true },
  ratePerSec: { flag: 'rate', env: 'BENCH_RATE', fallback: 2000, min: 1, max: 200_000, integer: true },
  maxMinutes: {
    flag: 'max-minutes',
    env: 'BENCH_MAX_MINUTES',
    fallback: 15,
    min: 0.1,
    max: 600,
    integer: false,
  },
} as const satisfies Record<string, NumberSetting>

const BROKER_KINDS: readonly BrokerKind[] = ['gateway', 'bare']

/** Usage text for `--help`. */
export const USAGE = `Usage: npm run bench -- [flags]    (or the BENCH_* env variables)

  --rounds N           BENCH_ROUNDS          alternating rounds per scenario (default 7)
  --seconds S          BENCH_SECONDS         measured window per run (default 4)
  --warmup-seconds S   BENCH_WARMUP_SECONDS  unmeasured load before each window (default 2)
  --publishers N       BENCH_PUBLISHERS      publisher connections (default 8)
  --window N           BENCH_WINDOW          outstanding messages per publisher (default 64)
  --rate N             BENCH_RATE            total msg/s of the fixed-rate scenarios (default 2000)
  --scenarios LIST     BENCH_SCENARIOS       subset of ${SCENARIOS.map((scenario) => scenario.name).join(',')}
  --brokers LIST       BENCH_BROKERS         subset of gateway,bare (default both)
  --cpu-prof LIST      BENCH_CPU_PROF        run these broker children with --cpu-prof
  --out DIR            BENCH_OUT             results directory (default test/bench/results)
  --max-minutes M      BENCH_MAX_MINUTES     hard stop of the whole run (default 15)
`

function parseNumber(setting: NumberSetting, raw: string | undefined): number {
  if (raw === undefined || raw === '') return setting.fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || (setting.integer && !Number.isInteger(value))) {
    throw new RangeError(
      `Cannot use --${setting.flag} (${setting.env}) '${raw}' as it is not a${setting.integer ? 'n integer' : ' number'}`,
    )
  }
  if (value < setting.min || value > setting.max) {
    throw new RangeError(
      `Cannot use --${setting.flag} (${setting.env}) '${raw}' as it is outside ${setting.min}..${setting.max}`,
    )
  }
  return value
}

function parseList<T extends string>(
  name: string,
  raw: string | undefined,
  allowed: readonly T[],
  fallback: T[],
): T[] {
  if (raw === undefined) return fallback
  const items = raw
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '')
  for (const item of items) {
    if (!allowed.includes(item as T)) {
      throw new RangeError(`Cannot use ${name} '${item}' as it is not one of ${allowed.join(', ')}`)
    }
  }
  return allowed.filter((item) => items.includes(item))
}

/** Reads flags, then env variables, then defaults; throws a `RangeError` naming a bad value. */
export function parseOptions(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): BenchOptions {
  const stringFlags = Object.fromEntries(
    [...Object.values(NUMBERS).map((setting) => setting.flag), 'scenarios', 'brokers', 'cpu-prof', 'out'].map(
      (flag) => [flag, { type: 'string' as const }],
    ),
  )
  const { values } = parseArgs({
    args: [...argv],
    options: { ...stringFlags, help: { type: 'boolean' as const, short: 'h' } },
    strict: true,
    allowPositionals: false,
  })
  const flag = (name: string): string | undefined => {
    const value = (values as Record<string, string | boolean | undefined>)[name]
    return typeof value === 'string' ? value : undefined
  }
  const number = (setting: NumberSetting): number =>
    parseNumber(setting, flag(setting.flag) ?? env[setting.env])
  const scenarioNames = SCENARIOS.map((scenario) => scenario.name)
  const chosen = parseList('scenario', flag('scenarios') ?? env.BENCH_SCENARIOS, scenarioNames, scenarioNames)
  return {
    rounds: number(NUMBERS.rounds),
    measureSeconds: number(NUMBERS.measureSeconds),
    warmupSeconds: number(NUMBERS.warmupSeconds),
    publishers: number(NUMBERS.publishers),
    windowSize: number(NUMBERS.windowSize),
    ratePerSec: number(NUMBERS.ratePerSec),
    maxMinutes: number(NUMBERS.maxMinutes),
    scenarios: SCENARIOS.filter((scenario) => chosen.includes(scenario.name)),
    brokers: parseList('broker', flag('brokers') ?? env.BENCH_BROKERS, BROKER_KINDS, [...BROKER_KINDS]),
    cpuProf: parseList('--cpu-prof broker', flag('cpu-prof') ?? env.BENCH_CPU_PROF, BROKER_KINDS, []),
    resultsDir: flag('out') ?? env.BENCH_OUT ?? 'test/bench/results',
    help: values.help === true,
  }
}
