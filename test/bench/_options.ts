import { parseArgs } from 'node:util'
import { SCENARIOS, type Scenario, sweepScenarios } from './_load.ts'
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
  /** The load sweep's fixed-rate scenarios (empty: no sweep). */
  sweep: Scenario[]
  sweepQos: 0 | 1
  /** Rounds that also run the sweep (the first `sweepRounds` of `rounds`). */
  sweepRounds: number
  sweepWarmupSeconds: number
  sweepSeconds: number
  brokers: BrokerKind[]
  /** Broker kinds whose child runs with `--cpu-prof`. */
  cpuProf: BrokerKind[]
  resultsDir: string
  /** Hard stop of the whole benchmark. */
  maxMinutes: number
  /** Shorter defaults, to check the pipeline (`--quick` or `BENCH_QUICK=1`). */
  quick: boolean
  help: boolean
}

interface NumberSetting {
  flag: string
  env: string
  fallback: number
  /** The default in quick mode. */
  quick: number
  min: number
  max: number
  integer: boolean
}

const NUMBERS = {
  rounds: { flag: 'rounds', env: 'BENCH_ROUNDS', fallback: 7, quick: 1, min: 1, max: 50, integer: true },
  measureSeconds: {
    flag: 'seconds',
    env: 'BENCH_SECONDS',
    fallback: 4,
    quick: 1,
    min: 0.5,
    max: 120,
    integer: false,
  },
  warmupSeconds: {
    flag: 'warmup-seconds',
    env: 'BENCH_WARMUP_SECONDS',
    fallback: 2,
    quick: 0.5,
    min: 0,
    max: 60,
    integer: false,
  },
  publishers: {
    flag: 'publishers',
    env: 'BENCH_PUBLISHERS',
    fallback: 8,
    quick: 8,
    min: 1,
    max: 100,
    integer: true,
  },
  windowSize: {
    flag: 'window',
    env: 'BENCH_WINDOW',
    fallback: 64,
    quick: 64,
    min: 1,
    max: 10_000,
    integer: true,
  },
  ratePerSec: {
    flag: 'rate',
    env: 'BENCH_RATE',
    fallback: 2000,
    quick: 2000,
    min: 1,
    max: 200_000,
    integer: true,
  },
  sweepRounds: {
    flag: 'sweep-rounds',
    env: 'BENCH_SWEEP_ROUNDS',
    fallback: 3,
    quick: 1,
    min: 1,
    max: 50,
    integer: true,
  },
  sweepSeconds: {
    flag: 'sweep-seconds',
    env: 'BENCH_SWEEP_SECONDS',
    fallback: 3,
    quick: 1,
    min: 0.5,
    max: 120,
    integer: false,
  },
  sweepWarmupSeconds: {
    flag: 'sweep-warmup-seconds',
    env: 'BENCH_SWEEP_WARMUP_SECONDS',
    fallback: 1,
    quick: 0.5,
    min: 0,
    max: 60,
    integer: false,
  },
  maxMinutes: {
    flag: 'max-minutes',
    env: 'BENCH_MAX_MINUTES',
    fallback: 20,
    quick: 5,
    min: 0.1,
    max: 600,
    integer: false,
  },
} as const satisfies Record<string, NumberSetting>

/** Offered rates of the load sweep, msg/s: doubling, past what one core of load generator sends. */
const SWEEP_RATES = [1000, 2000, 4000, 8000, 16_000, 32_000, 64_000]
const BROKER_KINDS: readonly BrokerKind[] = ['gateway', 'bare']

/** Usage text for `--help`. */
export const USAGE = `Usage: npm run bench:broker -- [flags]    (or the BENCH_* env variables)

  --quick                BENCH_QUICK=1               short defaults (in brackets) to check the pipeline
  --rounds N             BENCH_ROUNDS                alternating rounds per scenario (default 7 [1])
  --seconds S            BENCH_SECONDS               measured window per run (default 4 [1])
  --warmup-seconds S     BENCH_WARMUP_SECONDS        unmeasured load before each window (default 2 [0.5])
  --publishers N         BENCH_PUBLISHERS            publisher connections (default 8)
  --window N             BENCH_WINDOW                outstanding messages per publisher (default 64)
  --rate N               BENCH_RATE                  total msg/s of the fixed-rate scenarios (default 2000)
  --scenarios LIST       BENCH_SCENARIOS             subset of ${SCENARIOS.map((scenario) => scenario.name).join(',')}
  --sweep-rates LIST     BENCH_SWEEP_RATES           offered msg/s of the load sweep, '' for none
                                                     (default ${SWEEP_RATES.join(',')})
  --sweep-qos N          BENCH_SWEEP_QOS             QoS of the load sweep (default 1)
  --sweep-rounds N       BENCH_SWEEP_ROUNDS          rounds that also run the sweep (default 3 [1])
  --sweep-seconds S      BENCH_SWEEP_SECONDS         measured window per sweep run (default 3 [1])
  --sweep-warmup-seconds S BENCH_SWEEP_WARMUP_SECONDS  warm-up per sweep run (default 1 [0.5])
  --brokers LIST         BENCH_BROKERS               subset of gateway,bare (default both)
  --cpu-prof LIST        BENCH_CPU_PROF              run these broker children with --cpu-prof
  --out DIR              BENCH_OUT                   results directory (default test/bench/results)
  --max-minutes M        BENCH_MAX_MINUTES           hard stop of the whole run (default 20 [5])
`

function parseNumber(setting: NumberSetting, raw: string | undefined, quick: boolean): number {
  if (raw === undefined || raw === '') return quick ? setting.quick : setting.fallback
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

function parseRates(raw: string | undefined): number[] {
  if (raw === undefined) return SWEEP_RATES
  const rates = raw
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '')
    .map((item) => {
      const rate = Number(item)
      if (!Number.isInteger(rate) || rate < 1 || rate > 200_000) {
        throw new RangeError(`Cannot use sweep rate '${item}' as it is not an integer in 1..200000`)
      }
      return rate
    })
  return [...new Set(rates)].sort((a, b) => a - b)
}

/** Reads flags, then env variables, then defaults; throws a `RangeError` naming a bad value. */
export function parseOptions(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): BenchOptions {
  const stringFlags = Object.fromEntries(
    [
      ...Object.values(NUMBERS).map((setting) => setting.flag),
      'scenarios',
      'sweep-rates',
      'sweep-qos',
      'brokers',
      'cpu-prof',
      'out',
    ].map((flag) => [flag, { type: 'string' as const }]),
  )
  const { values } = parseArgs({
    args: [...argv],
    options: {
      ...stringFlags,
      help: { type: 'boolean' as const, short: 'h' },
      quick: { type: 'boolean' as const },
    },
    strict: true,
    allowPositionals: false,
  })
  const flag = (name: string): string | undefined => {
    const value = (values as Record<string, string | boolean | undefined>)[name]
    return typeof value === 'string' ? value : undefined
  }
  const quickEnv = env.BENCH_QUICK
  const quick = values.quick === true || (quickEnv !== undefined && quickEnv !== '' && quickEnv !== '0')
  const number = (setting: NumberSetting): number =>
    parseNumber(setting, flag(setting.flag) ?? env[setting.env], quick)
  const scenarioNames = SCENARIOS.map((scenario) => scenario.name)
  const chosen = parseList('scenario', flag('scenarios') ?? env.BENCH_SCENARIOS, scenarioNames, scenarioNames)
  const sweepQosText = flag('sweep-qos') ?? env.BENCH_SWEEP_QOS ?? '1'
  if (sweepQosText !== '0' && sweepQosText !== '1') {
    throw new RangeError(`Cannot use --sweep-qos (BENCH_SWEEP_QOS) '${sweepQosText}' as it is not 0 or 1`)
  }
  const sweepQos = sweepQosText === '0' ? 0 : 1
  return {
    rounds: number(NUMBERS.rounds),
    measureSeconds: number(NUMBERS.measureSeconds),
    warmupSeconds: number(NUMBERS.warmupSeconds),
    publishers: number(NUMBERS.publishers),
    windowSize: number(NUMBERS.windowSize),
    ratePerSec: number(NUMBERS.ratePerSec),
    maxMinutes: number(NUMBERS.maxMinutes),
    scenarios: SCENARIOS.filter((scenario) => chosen.includes(scenario.name)),
    sweep: sweepScenarios(parseRates(flag('sweep-rates') ?? env.BENCH_SWEEP_RATES), sweepQos),
    sweepQos,
    sweepRounds: number(NUMBERS.sweepRounds),
    sweepSeconds: number(NUMBERS.sweepSeconds),
    sweepWarmupSeconds: number(NUMBERS.sweepWarmupSeconds),
    brokers: parseList('broker', flag('brokers') ?? env.BENCH_BROKERS, BROKER_KINDS, [...BROKER_KINDS]),
    cpuProf: parseList('--cpu-prof broker', flag('cpu-prof') ?? env.BENCH_CPU_PROF, BROKER_KINDS, []),
    resultsDir: flag('out') ?? env.BENCH_OUT ?? 'test/bench/results',
    quick,
    help: values.help === true,
  }
}
