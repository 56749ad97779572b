import type { RunResult, Scenario } from './_load.ts'
import type { BrokerKind } from './_protocol.ts'
import { median } from './_stats.ts'

/** One run as recorded in the results file. */
export interface RunRecord {
  round: number
  scenario: string
  broker: BrokerKind
  startedAt: string
  result?: RunResult
  error?: string
}

/** Medians over the rounds of one scenario on one broker. */
export interface SummaryRow {
  scenario: string
  broker: BrokerKind
  runs: number
  failedRuns: number
  msgsPerSec: number
  cpuMicrosPerMsg: number
  latencyP50Ms: number
  latencyP99Ms: number
  brokerCpuCores: number
  loadGenCpuCores: number
  lost: number
  /** SUBSCRIBEs refused right after CONNACK and retried (see `subscribe` in `_load.ts`). */
  subscribeRetries: number
  /** Gateway rows: median gateway CPU/msg over median bare CPU/msg of the same scenario. */
  cpuRatio?: number
  /** Gateway rows: the same ratio per round (runs next to each other in time), every round that has both. */
  pairedCpuRatios?: number[]
}

/** Medians per scenario and broker, with the gateway/bare CPU ratios. */
export function summarize(
  records: readonly RunRecord[],
  scenarios: readonly Scenario[],
  brokers: readonly BrokerKind[],
): SummaryRow[] {
  const rows: SummaryRow[] = []
  for (const scenario of scenarios) {
    const byBroker = new Map<BrokerKind, SummaryRow>()
    for (const broker of brokers) {
      const runs = records.filter((record) => record.scenario === scenario.name && record.broker === broker)
      const results = runs.flatMap((record) => (record.result === undefined ? [] : [record.result]))
      const row: SummaryRow = {
        scenario: scenario.name,
        broker,
        runs: results.length,
        failedRuns: runs.length - results.length,
        msgsPerSec: median(results.map((result) => result.msgsPerSec)),
        cpuMicrosPerMsg: median(results.map((result) => result.brokerCpuMicrosPerMsg)),
        latencyP50Ms: median(results.map((result) => result.latencyP50Ms)),
        latencyP99Ms: median(results.map((result) => result.latencyP99Ms)),
        brokerCpuCores: median(results.map((result) => result.brokerCpuCores)),
        loadGenCpuCores: median(results.map((result) => result.loadGenCpuCores)),
        lost: results.reduce((sum, result) => sum + result.lost, 0),
        subscribeRetries: results.reduce((sum, result) => sum + result.subscribeRetries, 0),
      }
      byBroker.set(broker, row)
      rows.push(row)
    }
    const gateway = byBroker.get('gateway')
    const bare = byBroker.get('bare')
    if (gateway !== undefined && bare !== undefined) {
      gateway.cpuRatio = gateway.cpuMicrosPerMsg / bare.cpuMicrosPerMsg
      const perRound = (broker: BrokerKind, round: number): number | undefined =>
        records.find(
          (record) => record.scenario === scenario.name && record.broker === broker && record.round === round,
        )?.result?.brokerCpuMicrosPerMsg
      const rounds = [...new Set(records.map((record) => record.round))]
      gateway.pairedCpuRatios = rounds.flatMap((round) => {
        const gatewayCpu = perRound('gateway', round)
        const bareCpu = perRound('bare', round)
        return gatewayCpu === undefined || bareCpu === undefined ? [] : [gatewayCpu / bareCpu]
      })
    }
  }
  return rows
}

const fixed = (value: number, digits: number): string =>
  Number.isFinite(value) ? value.toFixed(digits) : 'n/a'

/** The summary as a markdown table. */
export function markdownTable(rows: readonly SummaryRow[]): string {
  const lines = [
    '| Scenario | Broker | Runs | msgs/s | CPU µs/msg | p50 ms | p99 ms | Broker CPU (cores) | Load-gen CPU (cores) | CPU/msg gateway/bare | Per-round ratio: median (min–max) |',
    '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  ]
  for (const row of rows) {
    const paired = row.pairedCpuRatios ?? []
    const range =
      paired.length === 0
        ? ''
        : `${fixed(median(paired), 2)} (${fixed(Math.min(...paired), 2)}–${fixed(Math.max(...paired), 2)})`
    const runs = row.failedRuns === 0 ? String(row.runs) : `${row.runs} (+${row.failedRuns} failed)`
    lines.push(
      `| ${row.scenario} | ${row.broker} | ${runs} | ${fixed(row.msgsPerSec, 0)} | ${fixed(row.cpuMicrosPerMsg, 1)} | ${fixed(row.latencyP50Ms, 2)} | ${fixed(row.latencyP99Ms, 2)} | ${fixed(row.brokerCpuCores, 2)} | ${fixed(row.loadGenCpuCores, 2)} | ${row.cpuRatio === undefined ? '' : `${fixed(row.cpuRatio, 2)}×`} | ${range} |`,
    )
  }
  return lines.join('\n')
}
