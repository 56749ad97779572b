import { useMemo } from 'preact/hooks'
import { path } from '../api/client.ts'
import type { OutboxDrop, OutboxRecord, OutboxUsage } from '../api/types.ts'
import { Empty, LoadError, Loading, Meter } from '../components/feedback.tsx'
import { formatBytes, formatCount, formatDuration, formatTime, preview } from '../lib/format.ts'
import { useApi } from '../lib/use-api.ts'
import type { SectionProps } from './tenant.tsx'

const REASONS: Record<string, string> = {
  quota_oldest: 'Outbox full: oldest dropped',
  quota_priority: 'Outbox full: lowest priority dropped',
  ttl: 'Waited past the TTL',
}

/** Sums records or drops by a key: count and bytes each. */
function tally<T extends { bytes: number }>(rows: readonly T[], keyOf: (row: T) => string) {
  const sums = new Map<string, { count: number; bytes: number }>()
  for (const row of rows) {
    const sum = sums.get(keyOf(row)) ?? { count: 0, bytes: 0 }
    sum.count++
    sum.bytes += row.bytes
    sums.set(keyOf(row), sum)
  }
  return [...sums].sort((a, b) => b[1].bytes - a[1].bytes)
}

/** What waits for the uplink: usage against the quota, the records, and what was dropped and why. */
export function OutboxSection({ tenantId, tenant }: SectionProps) {
  const outbox = useApi<{ records: OutboxRecord[]; usage: OutboxUsage }>(
    `${path`tenants/${tenantId}/outbox`}?limit=200`,
    {
      pollMs: 5000,
    },
  )
  const drops = useApi<{ drops: OutboxDrop[] }>(`${path`tenants/${tenantId}/outbox/drops`}?limit=1000`, {
    pollMs: 10_000,
  })
  const records = outbox.data?.records ?? []
  const dropList = drops.data?.drops ?? []
  const byStream = useMemo(() => tally(records, (record) => record.stream), [records])
  const byReason = useMemo(() => tally(dropList, (drop) => drop.reason), [dropList])
  const usage = outbox.data?.usage

  return (
    <div class="stack">
      <section class="card">
        <h2 class="card-title">Usage</h2>
        {outbox.error !== null && <LoadError message={outbox.error} retry={outbox.reload} />}
        {usage === undefined ? (
          outbox.error === null && <Loading />
        ) : (
          <>
            <Meter label="Outbox bytes" value={usage.bytes} max={usage.quotaBytes} format={formatBytes} />
            <p class="hint">
              {formatCount(usage.records)} record{usage.records === 1 ? '' : 's'} waiting · policy at the
              bound: <code>{tenant.quotas.outboxPolicy}</code> · records older than{' '}
              {formatDuration(tenant.quotas.outboxTtlMs)} are dropped
            </p>
            {byStream.length > 0 && (
              <table class="table compact">
                <caption>
                  By stream{records.length < usage.records ? ` (the first ${records.length} records)` : ''}
                </caption>
                <thead>
                  <tr>
                    <th scope="col">Stream</th>
                    <th scope="col" class="num">
                      Priority
                    </th>
                    <th scope="col" class="num">
                      Records
                    </th>
                    <th scope="col" class="num">
                      Bytes
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {byStream.map(([stream, sum]) => (
                    <tr key={stream}>
                      <td class="mono">{stream}</td>
                      <td class="num">{tenant.quotas.outboxStreamPriorities[stream] ?? 0}</td>
                      <td class="num">{formatCount(sum.count)}</td>
                      <td class="num">{formatBytes(sum.bytes)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </>
        )}
      </section>
      <section class="card">
        <h2 class="card-title">Waiting records</h2>
        {outbox.data !== undefined && records.length === 0 ? (
          <Empty title="The outbox is empty">
            Records that functions emit with ctx.emit wait here for the uplink.
          </Empty>
        ) : (
          <div class="table-scroll">
            <table class="table compact">
              <thead>
                <tr>
                  <th scope="col" class="num">
                    Seq
                  </th>
                  <th scope="col">Function</th>
                  <th scope="col">Stream</th>
                  <th scope="col" class="num">
                    Bytes
                  </th>
                  <th scope="col">Created</th>
                  <th scope="col">Expires</th>
                  <th scope="col">Record</th>
                </tr>
              </thead>
              <tbody>
                {records.map((record) => (
                  <tr key={record.seq}>
                    <td class="num">{record.seq}</td>
                    <td>{record.function}</td>
                    <td class="mono">{record.stream}</td>
                    <td class="num">{formatBytes(record.bytes)}</td>
                    <td>{formatTime(record.createdAt)}</td>
                    <td>{formatTime(record.expiresAt)}</td>
                    <td class="mono small-text payload">{preview(record.record)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
      <section class="card">
        <h2 class="card-title">Drops</h2>
        {drops.error !== null && <LoadError message={drops.error} retry={drops.reload} />}
        {drops.data === undefined ? (
          drops.error === null && <Loading />
        ) : dropList.length === 0 ? (
          <Empty title="Nothing dropped">
            Records dropped at the quota or past their TTL are listed here.
          </Empty>
        ) : (
          <>
            <table class="table compact">
              <caption>By reason{dropList.length >= 1000 ? ' (the last 1,000 drops)' : ''}</caption>
              <thead>
                <tr>
                  <th scope="col">Reason</th>
                  <th scope="col" class="num">
                    Records
                  </th>
                  <th scope="col" class="num">
                    Bytes
                  </th>
                </tr>
              </thead>
              <tbody>
                {byReason.map(([reason, sum]) => (
                  <tr key={reason}>
                    <td>
                      <code>{reason}</code> <span class="muted">{REASONS[reason] ?? ''}</span>
                    </td>
                    <td class="num">{formatCount(sum.count)}</td>
                    <td class="num">{formatBytes(sum.bytes)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            <div class="table-scroll">
              <table class="table compact">
                <thead>
                  <tr>
                    <th scope="col">Time</th>
                    <th scope="col">Reason</th>
                    <th scope="col">Function</th>
                    <th scope="col">Stream</th>
                    <th scope="col" class="num">
                      Seq
                    </th>
                    <th scope="col" class="num">
                      Bytes
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {dropList.slice(0, 200).map((drop) => (
                    <tr key={drop.id}>
                      <td>{formatTime(drop.at)}</td>
                      <td>
                        <code>{drop.reason}</code>
                      </td>
                      <td>{drop.function}</td>
                      <td class="mono">{drop.stream}</td>
                      <td class="num">{drop.seq}</td>
                      <td class="num">{formatBytes(drop.bytes)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </>
        )}
      </section>
    </div>
  )
}
