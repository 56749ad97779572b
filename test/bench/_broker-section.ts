import { histogramCdf, histogramQuantile, type LatencyHistogram, mergeHistograms } from './_histogram.ts'
import { plural } from './_markdown.ts'
import type { BenchOptions } from './_options.ts'
import type { BrokerKind } from './_protocol.ts'
import type { RunRecord, SummaryRow } from './_report.ts'
import type { BenchFigure, BenchPlot, BenchSection, BenchTable } from './_section.ts'
import { median } from './_stats.ts'

/** Goals of the broker issue: gateway CPU per message over bare aedes', per QoS. */
const CPU_RATIO_GOALS = { 0: 1.25, 1: 1.5 } as const

const BROKER_NAMES: Record<BrokerKind, string> = { gateway: 'gateway', bare: 'bare aedes' }

/** What `run.ts` measured, for {@link brokerSection}. */
export interface BrokerRun {
  options: BenchOptions
  records: readonly RunRecord[]
  summary: readonly SummaryRow[]
  idleCpuMsPerSec: Partial<Record<BrokerKind, number>>
  startErrors: Partial<Record<BrokerKind, string>>
  versions: Record<string, string>
  startedAt: Date
  durationSec: number
}

const round = (value: number, digits: number): number =>
  Number.isFinite(value) ? Number(value.toFixed(digits)) : Number.NaN

function pooledHistogram(
  records: readonly RunRecord[],
  scenario: string,
  broker: BrokerKind,
): LatencyHistogram {
  return mergeHistograms(
    records.flatMap((record) =>
      record.scenario === scenario && record.broker === broker && record.result !== undefined
        ? [record.result.latencyHistogram]
        : [],
    ),
  )
}

/** The broker benchmark's results as a report section: figures against bare aedes, tables, plots. */
export function brokerSection(run: BrokerRun): BenchSection {
  const { options, records, summary } = run
  const row = (scenario: string, broker: BrokerKind) =>
    summary.find((candidate) => candidate.scenario === scenario && candidate.broker === broker)
  const figures: BenchFigure[] = []
  const plots: BenchPlot[] = []

  for (const scenario of options.scenarios) {
    const gateway = row(scenario.name, 'gateway')
    const bare = row(scenario.name, 'bare')
    if (gateway === undefined || bare === undefined || gateway.runs === 0 || bare.runs === 0) continue
    const peer = (value: number) => ({ name: BROKER_NAMES.bare, value })
    figures.push({
      name: `CPU per message, ${scenario.name}`,
      value: round(gateway.cpuMicrosPerMsg, 2),
      unit: 'µs/msg',
      peer: peer(round(bare.cpuMicrosPerMsg, 2)),
      ratio: round(gateway.cpuMicrosPerMsg / bare.cpuMicrosPerMsg, 3),
      note: `medians over ${plural(gateway.runs, 'round')}`,
    })
    const paired = gateway.pairedCpuRatios ?? []
    if (paired.length > 0) {
      figures.push({
        name: `CPU per message gateway / bare, median of per-round ratios, ${scenario.name}`,
        value: round(median(paired), 3),
        unit: '×',
        goal: { op: '<=', value: CPU_RATIO_GOALS[scenario.qos] },
        note: `rounds ${round(Math.min(...paired), 2)}–${round(Math.max(...paired), 2)}; a round's two runs are seconds apart`,
      })
    }
    if (scenario.shape === 'saturating') {
      figures.push({
        name: `Throughput, ${scenario.name}`,
        value: Math.round(gateway.msgsPerSec),
        unit: 'msg/s',
        peer: peer(Math.round(bare.msgsPerSec)),
        ratio: round(gateway.msgsPerSec / bare.msgsPerSec, 3),
        note:
          gateway.loadGenCpuCores >= 0.9
            ? `load generator at ${round(gateway.loadGenCpuCores, 2)} cores: it is likely the limit`
            : `load generator at ${round(gateway.loadGenCpuCores, 2)} cores`,
      })
    } else {
      figures.push({
        name: `Latency p99, ${scenario.name} (${scenario.ratePerSec ?? options.ratePerSec} msg/s)`,
        value: round(gateway.latencyP99Ms, 2),
        unit: 'ms',
        peer: peer(round(bare.latencyP99Ms, 2)),
        ratio: round(gateway.latencyP99Ms / bare.latencyP99Ms, 3),
        note: 'median over rounds of each run’s p99',
      })
    }
    plots.push({
      id: `broker-latency-${scenario.name}`,
      title: `Broker end-to-end latency, ${scenario.name} (all rounds pooled)`,
      kind: 'cdf',
      x: { label: 'publish to receipt (ms)', log: true },
      y: { label: 'fraction of messages' },
      series: options.brokers.map((broker) => ({
        name: BROKER_NAMES[broker],
        points: histogramCdf(pooledHistogram(records, scenario.name, broker)),
      })),
    })
  }

  const tables: BenchTable[] = []
  const fixed = (value: number, digits: number): string | number =>
    Number.isFinite(value) ? Number(value.toFixed(digits)) : 'n/a'
  const mainRows = summary.filter((candidate) =>
    options.scenarios.some((scenario) => scenario.name === candidate.scenario),
  )
  tables.push({
    caption: `Per scenario and broker, medians over rounds (${plural(options.rounds, 'round')}, ${options.warmupSeconds} s warm-up + ${options.measureSeconds} s measured per run)`,
    columns: [
      'scenario',
      'broker',
      'runs',
      'msg/s',
      'CPU µs/msg',
      'p50 ms',
      'p99 ms',
      'broker CPU (cores)',
      'load-gen CPU (cores)',
      'CPU/msg gateway/bare',
      'per-round ratio: median (min–max)',
      'lost',
    ],
    rows: mainRows.map((summaryRow) => {
      const paired = summaryRow.pairedCpuRatios ?? []
      return [
        summaryRow.scenario,
        BROKER_NAMES[summaryRow.broker],
        summaryRow.failedRuns === 0
          ? summaryRow.runs
          : `${summaryRow.runs} (+${summaryRow.failedRuns} failed)`,
        fixed(summaryRow.msgsPerSec, 0),
        fixed(summaryRow.cpuMicrosPerMsg, 1),
        fixed(summaryRow.latencyP50Ms, 2),
        fixed(summaryRow.latencyP99Ms, 2),
        fixed(summaryRow.brokerCpuCores, 2),
        fixed(summaryRow.loadGenCpuCores, 2),
        summaryRow.cpuRatio === undefined ? '' : `${fixed(summaryRow.cpuRatio, 2)}×`,
        paired.length === 0
          ? ''
          : `${fixed(median(paired), 2)} (${fixed(Math.min(...paired), 2)}–${fixed(Math.max(...paired), 2)})`,
        summaryRow.lost,
      ]
    }),
  })

  // The load sweep: fixed offered rates, plus the saturating scenario of the same QoS.
  const sweepRuns = (scenario: string, broker: BrokerKind) =>
    records.flatMap((record) =>
      record.scenario === scenario && record.broker === broker && record.result !== undefined
        ? [record.result]
        : [],
    )
  if (options.sweep.length > 0) {
    const saturatingName = `qos${options.sweepQos}-saturating`
    const rates = options.sweep.map((scenario) => scenario.ratePerSec as number)
    const sweepRows: Array<Array<string | number>> = []
    const delivered: BenchPlot['series'] = []
    const p99: BenchPlot['series'] = []
    const cpu: BenchPlot['series'] = []
    for (const broker of options.brokers) {
      const deliveredPoints: Array<[number, number]> = []
      const p99Points: Array<[number, number]> = []
      const cpuPoints: Array<[number, number]> = []
      for (const scenario of options.sweep) {
        const runs = sweepRuns(scenario.name, broker)
        if (runs.length === 0) continue
        const offered = scenario.ratePerSec as number
        const msgsPerSec = median(runs.map((result) => result.msgsPerSec))
        const pooled = mergeHistograms(runs.map((result) => result.latencyHistogram))
        const p99Ms = histogramQuantile(pooled, 0.99)
        const cpuMicros = median(runs.map((result) => result.brokerCpuMicrosPerMsg))
        deliveredPoints.push([offered, msgsPerSec])
        if (Number.isFinite(p99Ms)) p99Points.push([offered, p99Ms])
        if (Number.isFinite(cpuMicros)) cpuPoints.push([offered, cpuMicros])
        sweepRows.push([
          offered,
          BROKER_NAMES[broker],
          runs.length,
          fixed(msgsPerSec, 0),
          fixed(median(runs.map((result) => result.rateShortfall)), 0),
          fixed(cpuMicros, 1),
          fixed(median(runs.map((result) => result.brokerCpuCores)), 2),
          fixed(median(runs.map((result) => result.loadGenCpuCores)), 2),
          fixed(histogramQuantile(pooled, 0.5), 2),
          fixed(p99Ms, 2),
        ])
      }
      delivered.push({ name: BROKER_NAMES[broker], points: deliveredPoints })
      p99.push({ name: BROKER_NAMES[broker], points: p99Points })
      cpu.push({ name: BROKER_NAMES[broker], points: cpuPoints })
      const saturating = row(saturatingName, broker)
      if (saturating !== undefined && saturating.runs > 0 && rates.length > 0) {
        const lowest = rates[0] as number
        const highest = rates.at(-1) as number
        delivered.push({
          name: `${BROKER_NAMES[broker]}, saturating (window-limited)`,
          points: [
            [lowest, saturating.msgsPerSec],
            [highest, saturating.msgsPerSec],
          ],
        })
        sweepRows.push([
          'saturating',
          BROKER_NAMES[broker],
          saturating.runs,
          fixed(saturating.msgsPerSec, 0),
          '',
          fixed(saturating.cpuMicrosPerMsg, 1),
          fixed(saturating.brokerCpuCores, 2),
          fixed(saturating.loadGenCpuCores, 2),
          fixed(saturating.latencyP50Ms, 2),
          fixed(saturating.latencyP99Ms, 2),
        ])
      }
    }
    if (rates.length > 0) {
      // First, so that the measured lines are drawn over it.
      delivered.unshift({
        name: 'offered (delivered = offered)',
        points: rates.map((rate) => [rate, rate] as [number, number]),
      })
    }
    sweepRows.sort((a, b) => {
      const rank = (value: string | number) => (typeof value === 'number' ? value : Number.POSITIVE_INFINITY)
      return rank(a[0] as string | number) - rank(b[0] as string | number)
    })
    tables.push({
      caption:
        `Load sweep at QoS ${options.sweepQos}: fixed offered rates (${plural(Math.min(options.sweepRounds, options.rounds), 'round')}, ` +
        `${options.sweepWarmupSeconds} s warm-up + ${options.sweepSeconds} s each; latencies pooled over rounds), ` +
        `and the ${saturatingName} scenario (medians)`,
      columns: [
        'offered msg/s',
        'broker',
        'runs',
        'delivered msg/s',
        'not sent (windows full)',
        'CPU µs/msg',
        'broker CPU (cores)',
        'load-gen CPU (cores)',
        'p50 ms',
        'p99 ms',
      ],
      rows: sweepRows,
    })
    const sweepTitle = `QoS ${options.sweepQos}, ${options.publishers} publishers × ${options.windowSize} in flight`
    plots.push(
      {
        id: 'broker-sweep-throughput',
        title: `Delivered against offered load, ${sweepTitle}`,
        kind: 'line',
        x: { label: 'offered (msg/s)', log: true },
        y: { label: 'delivered (msg/s)', log: true },
        series: delivered,
      },
      {
        id: 'broker-sweep-p99',
        title: `p99 latency against offered load, ${sweepTitle}`,
        kind: 'line',
        x: { label: 'offered (msg/s)', log: true },
        y: { label: 'p99 publish to receipt (ms)', log: true },
        series: p99,
      },
      {
        id: 'broker-sweep-cpu',
        title: `Broker CPU per message against offered load, ${sweepTitle}`,
        kind: 'line',
        x: { label: 'offered (msg/s)', log: true },
        y: { label: 'broker CPU per delivered message (µs)' },
        series: cpu,
      },
    )
    for (const scenario of options.sweep) {
      const gateway = sweepRuns(scenario.name, 'gateway')
      const bare = sweepRuns(scenario.name, 'bare')
      if (gateway.length === 0 || bare.length === 0) continue
      const gatewayCpu = median(gateway.map((result) => result.brokerCpuMicrosPerMsg))
      const bareCpu = median(bare.map((result) => result.brokerCpuMicrosPerMsg))
      figures.push({
        name: `CPU per message at ${scenario.ratePerSec} msg/s offered, QoS ${options.sweepQos} (sweep)`,
        value: round(gatewayCpu, 2),
        unit: 'µs/msg',
        peer: { name: BROKER_NAMES.bare, value: round(bareCpu, 2) },
        ratio: round(gatewayCpu / bareCpu, 3),
      })
    }
  }

  const idle = Object.entries(run.idleCpuMsPerSec)
  if (idle.length > 0) {
    tables.push({
      caption: 'Idle CPU of each broker after the runs, no clients (timers, workers, GC)',
      columns: ['broker', 'CPU ms per second'],
      rows: idle.map(([broker, msPerSec]) => [BROKER_NAMES[broker as BrokerKind], fixed(msPerSec, 1)]),
    })
  }

  const notes: string[] = []
  for (const [broker, error] of Object.entries(run.startErrors)) {
    notes.push(`The ${broker} broker did not start: ${error.split('\n')[0]}`)
  }
  const failed = records.filter((record) => record.error !== undefined)
  if (failed.length > 0) {
    notes.push(
      `${failed.length} runs failed: ${failed
        .slice(0, 5)
        .map((record) => `round ${record.round} ${record.scenario} ${record.broker}: ${record.error}`)
        .join('; ')}`,
    )
  }
  const retries = records.reduce((sum, record) => sum + (record.result?.subscribeRetries ?? 0), 0)
  if (retries > 0) notes.push(`${retries} SUBSCRIBEs were refused right after CONNACK and retried.`)

  return {
    id: 'broker',
    title: 'MQTT broker: gateway against bare aedes',
    command: 'npm run bench:broker',
    startedAt: run.startedAt.toISOString(),
    durationSec: round(run.durationSec, 1),
    method:
      `The gateway (\`createGateway()\`: device sign-in, tenant mount, an ACL rule, SQLite persistence) and bare aedes ${run.versions.aedes ?? ''}, ` +
      `each in its own child process, are loaded in turn (A B A B …) by the same mqtt.js ${run.versions.mqtt ?? ''} load generator in the parent: ` +
      `${options.publishers} publishers with up to ${options.windowSize} messages in flight each, 64-byte payloads, one subscriber on \`sensors/#\`. ` +
      'The key figure is the broker process’s own CPU time (user + system, all threads) per delivered message; ' +
      'latency is publish to receipt on one clock. Figures are medians over rounds, and ratios are gateway over bare in the same run. ' +
      `The load sweep offers fixed rates at QoS ${options.sweepQos}; delivered below offered means the broker or the generator could not keep up. ` +
      'Long form: [benchmark-methods.md#broker](benchmark-methods.md#broker).',
    figures,
    tables,
    plots,
    ...(notes.length > 0 ? { notes } : {}),
  }
}
