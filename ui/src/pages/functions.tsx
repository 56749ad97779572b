import { useState } from 'preact/hooks'
import { path, request } from '../api/client.ts'
import type { FunctionView, Trigger } from '../api/types.ts'
import { Badge, Banner, Empty, LoadError, Loading } from '../components/feedback.tsx'
import { errorsOfFailure } from '../lib/form.ts'
import { formatAgo, formatCount, formatNumber } from '../lib/format.ts'
import { useApi } from '../lib/use-api.ts'
import type { SectionProps } from './tenant.tsx'

/** A trigger in a few words: `topic sensors/#`, `every 10s`, `cron 0 * * * * (UTC)`. */
export function describeTrigger(trigger: Trigger): string {
  if ('topic' in trigger) return `topic ${trigger.topic}`
  if ('every' in trigger) return `every ${trigger.every}`
  if ('cron' in trigger) return `cron ${trigger.cron} (${trigger.timezone ?? 'UTC'})`
  return `state ${trigger.state}`
}

/** A function's state as a badge. */
export function FunctionState({ fn }: { fn: Pick<FunctionView, 'state' | 'problem'> }) {
  const tone = fn.state === 'running' ? 'ok' : fn.state === 'failed' ? 'bad' : 'muted'
  return (
    <span title={fn.problem ?? undefined}>
      <Badge tone={tone}>{fn.state}</Badge>
    </span>
  )
}

/** The tenant's functions with their figures, and enable or disable each. */
export function FunctionsSection({ tenantId }: SectionProps) {
  const functions = useApi<{ functions: FunctionView[] }>(path`tenants/${tenantId}/functions`, {
    pollMs: 5000,
  })
  const [busy, setBusy] = useState<string | null>(null)
  const [error, setError] = useState<string | null>(null)
  const list = functions.data?.functions ?? []
  const base = `#/tenants/${encodeURIComponent(tenantId)}/functions`

  const toggle = async (fn: FunctionView) => {
    setBusy(fn.name)
    setError(null)
    try {
      await request(
        'POST',
        path`tenants/${tenantId}/functions/${fn.name}/${fn.enabled ? 'disable' : 'enable'}`,
      )
      functions.reload()
    } catch (failure) {
      setError(Object.values(errorsOfFailure(failure))[0] ?? null)
    } finally {
      setBusy(null)
    }
  }

  return (
    <section class="card">
      <div class="card-head">
        <h2 class="card-title">Functions</h2>
        <a class="button primary" href={`${base}/new`}>
          New function
        </a>
      </div>
      {error !== null && (
        <Banner kind="error" onDismiss={() => setError(null)}>
          {error}
        </Banner>
      )}
      {functions.error !== null && <LoadError message={functions.error} retry={functions.reload} />}
      {functions.data === undefined ? (
        functions.error === null && <Loading />
      ) : list.length === 0 ? (
        <Empty title="No functions yet">
          A function runs JavaScript on the tenant's messages or on a schedule; write one with New function.
        </Empty>
      ) : (
        <table class="table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Status</th>
              <th scope="col">Version</th>
              <th scope="col">Triggers</th>
              <th scope="col">Output</th>
              <th scope="col" class="num">
                Invocations
              </th>
              <th scope="col" class="num">
                Errors
              </th>
              <th scope="col" class="num">
                p50 / p99 ms
              </th>
              <th scope="col">Last error</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.map((fn) => {
              const reasons = Object.entries(fn.stats.errorsByReason)
              return (
                <tr key={fn.name}>
                  <td>
                    <a href={`${base}/${encodeURIComponent(fn.name)}`}>{fn.name}</a>
                  </td>
                  <td>
                    <FunctionState fn={fn} />
                    {fn.problem !== null && <div class="cell-note bad-text">{fn.problem}</div>}
                  </td>
                  <td>
                    v{fn.version}
                    {fn.version !== fn.latestVersion && <span class="muted"> of v{fn.latestVersion}</span>}
                  </td>
                  <td>
                    {fn.triggers.map((trigger) => (
                      <div key={describeTrigger(trigger)} class="mono small-text">
                        {describeTrigger(trigger)}
                      </div>
                    ))}
                  </td>
                  <td class="mono small-text">{fn.output ?? '–'}</td>
                  <td class="num">{formatCount(fn.stats.invocations)}</td>
                  <td class="num">
                    {fn.stats.errors > 0 ? <span class="bad-text">{formatCount(fn.stats.errors)}</span> : '0'}
                    {reasons.length > 0 && (
                      <div class="cell-note">
                        {reasons.map(([reason, count]) => `${reason} ${formatCount(count)}`).join(', ')}
                      </div>
                    )}
                  </td>
                  <td class="num">
                    {formatNumber(fn.stats.p50Ms)} / {formatNumber(fn.stats.p99Ms)}
                  </td>
                  <td class="small-text">
                    {fn.stats.lastError === null ? (
                      '–'
                    ) : (
                      <span title={fn.stats.lastError.message}>
                        {formatAgo(fn.stats.lastError.at)}: {fn.stats.lastError.message.slice(0, 80)}
                      </span>
                    )}
                  </td>
                  <td class="row-actions">
                    <button
                      type="button"
                      class="small"
                      disabled={busy === fn.name}
                      onClick={() => void toggle(fn)}
                    >
                      {fn.enabled ? 'Disable' : 'Enable'}
                    </button>
                  </td>
                </tr>
              )
            })}
          </tbody>
        </table>
      )}
    </section>
  )
}
