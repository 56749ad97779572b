import { useEffect, useMemo, useState } from 'preact/hooks'
import { isQuiet, messageOf, path, request } from '../api/client.ts'
import { useSignedIn } from '../api/session.tsx'
import type { StatsResponse, StatsSample } from '../api/types.ts'
import { TimeChart } from '../components/chart.tsx'
import { LoadError } from '../components/feedback.tsx'
import { PageHeader } from '../components/layout.tsx'
import { formatCount, formatNumber } from '../lib/format.ts'
import { UplinkCard } from './uplink-card.tsx'

/** Samples the charts keep: ten minutes at one a second, what the gateway keeps too. */
const MAX_SAMPLES = 600
const POLL_MS = 2000

/** The live series of `stats` (the gateway) or `tenants/:t/stats`, polled for newer samples. */
function useLiveStats(apiPath: string): { samples: StatsSample[]; error: string | null } {
  const [samples, setSamples] = useState<StatsSample[]>([])
  const [error, setError] = useState<string | null>(null)
  useEffect(() => {
    setSamples([])
    const controller = new AbortController()
    let timer: ReturnType<typeof setTimeout> | undefined
    let last = 0
    const poll = (): void => {
      request<StatsResponse>('GET', apiPath, {
        signal: controller.signal,
        query: { since: last > 0 ? last : undefined },
      })
        .then((answer) => {
          const fresh = answer.samples.filter((sample) => sample.t > last)
          if (fresh.length > 0) {
            last = fresh[fresh.length - 1]?.t ?? last
            setSamples((kept) => [...kept, ...fresh].slice(-MAX_SAMPLES))
          }
          setError(null)
        })
        .catch((failure: unknown) => {
          if (!isQuiet(failure)) setError(messageOf(failure))
        })
        .finally(() => {
          if (!controller.signal.aborted) timer = setTimeout(poll, POLL_MS)
        })
    }
    poll()
    return () => {
      controller.abort()
      clearTimeout(timer)
    }
  }, [apiPath])
  return { samples, error }
}

const COLORS = { blue: '#3b6fd8', orange: '#e08a1e', green: '#1f9d6b', red: '#d64545', violet: '#8a5cd6' }

/** Live charts of the gateway (administrators) or of the signed-in tenant, and the uplink. */
export function OverviewPage() {
  const { session, isAdmin } = useSignedIn()
  const statsPath = isAdmin ? 'stats' : path`tenants/${session.tenant ?? ''}/stats`
  const { samples, error } = useLiveStats(statsPath)
  const latest = samples[samples.length - 1]

  const series = useMemo(() => {
    const pick = (read: (sample: StatsSample) => number | null) => samples.map(read)
    return {
      times: samples.map((sample) => sample.t),
      messages: [
        { label: 'In', color: COLORS.blue, values: pick((s) => s.messagesIn) },
        { label: 'Out', color: COLORS.green, values: pick((s) => s.messagesOut) },
      ],
      invocations: [{ label: 'Invocations', color: COLORS.violet, values: pick((s) => s.invocations) }],
      latency: [
        { label: 'p50', color: COLORS.blue, values: pick((s) => s.p50Ms), points: true },
        { label: 'p99', color: COLORS.orange, values: pick((s) => s.p99Ms), points: true },
      ],
      errors: [{ label: 'Errors', color: COLORS.red, values: pick((s) => s.errors) }],
    }
  }, [samples])

  const tiles: Array<[string, string]> = [
    ['Connections', latest === undefined ? '–' : formatCount(latest.connections)],
    ['Messages in/s', formatNumber(latest?.messagesIn)],
    ['Messages out/s', formatNumber(latest?.messagesOut)],
    ['Invocations/s', formatNumber(latest?.invocations)],
    ['Errors/s', formatNumber(latest?.errors)],
    [
      'Latency p99',
      latest?.p99Ms === null || latest === undefined ? '–' : `${formatNumber(latest.p99Ms)} ms`,
    ],
  ]

  return (
    <>
      <PageHeader
        title="Overview"
        sub={isAdmin ? 'The whole gateway, live.' : `Tenant ${session.tenant ?? ''}, live.`}
      />
      {error !== null && <LoadError message={error} />}
      <div class="tiles">
        {tiles.map(([label, value]) => (
          <div class="tile" key={label}>
            <span class="tile-label">{label}</span>
            <span class="tile-value num">{value}</span>
          </div>
        ))}
      </div>
      <div class="chart-grid">
        <TimeChart
          title="Messages"
          unit="per s"
          testId="chart-messages"
          times={series.times}
          lines={series.messages}
        />
        <TimeChart
          title="Function invocations"
          unit="per s"
          testId="chart-invocations"
          times={series.times}
          lines={series.invocations}
        />
        <TimeChart
          title="Invocation latency"
          unit="ms"
          testId="chart-latency"
          times={series.times}
          lines={series.latency}
        />
        <TimeChart
          title="Errors"
          unit="per s"
          testId="chart-errors"
          times={series.times}
          lines={series.errors}
        />
      </div>
      {isAdmin && <UplinkCard />}
    </>
  )
}
