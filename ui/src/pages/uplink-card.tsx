import type { UplinkStatus } from '../api/types.ts'
import { Badge, LoadError, Loading } from '../components/feedback.tsx'
import { formatAgo, formatBytes, formatCount, formatDuration } from '../lib/format.ts'
import { useApi } from '../lib/use-api.ts'

type Live = Exclude<UplinkStatus, { state: 'off' }>

/** The schedule of the shaper in words: `epoch: 8 cells every 1 s`. */
function describeSchedule(schedule: Live['schedule']): string {
  const number = (key: string): number | undefined =>
    typeof schedule[key] === 'number' ? (schedule[key] as number) : undefined
  switch (schedule.mode) {
    case 'epoch':
      return `${number('cellsPerEpoch') ?? 4} cells every ${formatDuration(number('epochMs') ?? 1000)}`
    case 'clock':
      return `a cell every ${formatDuration(number('intervalMs') ?? 250)}${schedule.poisson === true ? ' (Poisson)' : ''}`
    case 'tiered': {
      const tiers = Array.isArray(schedule.tiers) ? schedule.tiers.join(', ') : ''
      return `tiers of ${tiers} cells per ${formatDuration(number('epochMs') ?? 1000)}, held ${formatDuration(number('dwellMs') ?? 0)}`
    }
    default:
      return 'unshaped: cells go when data waits'
  }
}

/** The private uplink at a glance: link state, backlog, last ack, and real against cover traffic. */
export function UplinkCard() {
  const uplink = useApi<UplinkStatus>('uplink', { pollMs: 2000 })
  const status = uplink.data
  return (
    <section class="card" aria-labelledby="uplink-title">
      <h2 class="card-title" id="uplink-title">
        Private uplink
      </h2>
      {uplink.error !== null && <LoadError message={uplink.error} retry={uplink.reload} />}
      {status === undefined ? (
        uplink.error === null && <Loading />
      ) : status.state === 'off' ? (
        <p class="muted">
          Off: this gateway streams to no cloud receiver. Start it with{' '}
          <code>--cloud HOST:PORT --cloud-key KEY</code>.
        </p>
      ) : (
        <UplinkFigures status={status} />
      )}
    </section>
  )
}

function UplinkFigures({ status }: { status: Live }) {
  const { wire, cellBytes } = status
  const cells = wire.cellsData + wire.cellsDummy
  const realShare = cells === 0 ? 0 : wire.cellsData / cells
  const rows: Array<[string, string]> = [
    ['Shaper', `${status.schedule.mode}: ${describeSchedule(status.schedule)}`],
    ['Cell size', formatBytes(cellBytes)],
    ['Backlog', `${formatCount(wire.backlogCells)} cells`],
    ['In flight', `${formatCount(status.inFlight)} records`],
    ['Delivered', `${formatCount(status.delivered)} records`],
    ['Last ack', status.lastAckAt === null ? 'never' : formatAgo(status.lastAckAt)],
    ['Sessions', formatCount(status.sessions)],
    ['Data cells (real)', `${formatCount(wire.cellsData)} · ${formatBytes(wire.cellsData * cellBytes)}`],
    ['Dummy cells (cover)', `${formatCount(wire.cellsDummy)} · ${formatBytes(wire.cellsDummy * cellBytes)}`],
    ['Control cells', formatCount(wire.cellsControl)],
    ['Record bytes carried', formatBytes(wire.recordBytes)],
    ['Bytes on the wire', formatBytes(wire.wireBytes)],
    ['Slots skipped', formatCount(wire.slotsSkipped)],
  ]
  return (
    <>
      <p>
        <Badge tone={status.state === 'connected' ? 'ok' : status.state === 'connecting' ? 'warn' : 'bad'}>
          {status.state}
        </Badge>{' '}
        {status.alarm && <Badge tone="bad">backlog alarm</Badge>}
      </p>
      <div class="split-bar" role="img" aria-label={`${Math.round(realShare * 100)}% of cells carried data`}>
        <span class="real" style={{ width: `${realShare * 100}%` }} />
      </div>
      <p class="hint">
        {Math.round(realShare * 100)}% of cells carried records; the rest were cover traffic on the same
        schedule.
      </p>
      <dl class="facts">
        {rows.map(([label, value]) => (
          <div key={label}>
            <dt>{label}</dt>
            <dd class="num">{value}</dd>
          </div>
        ))}
      </dl>
    </>
  )
}
