import { useLayoutEffect, useRef, useState } from 'preact/hooks'
import { apiUrl, path } from '../api/client.ts'
import type { LogLine } from '../api/types.ts'
import { Badge } from '../components/feedback.tsx'
import { formatClock } from '../lib/format.ts'
import { useEventSource } from '../lib/use-event-source.ts'

/** Lines the panel keeps; older ones scroll away. */
const MAX_LINES = 500

/** A function's log as it is written (server-sent events), newest at the bottom. */
export function LogsPanel({ tenantId, name }: { tenantId: string; name: string }) {
  const [lines, setLines] = useState<LogLine[]>([])
  const [ended, setEnded] = useState<string | null>(null)
  const list = useRef<HTMLOListElement>(null)
  const pinned = useRef(true)

  const add = (data: string) => {
    const line = JSON.parse(data) as LogLine
    setLines((kept) => [...kept, line].slice(-MAX_LINES))
    return undefined
  }
  const url = apiUrl(path`tenants/${tenantId}/functions/${name}/logs`, { follow: 'true' })
  const stream = useEventSource(
    url,
    {
      log: add,
      error: add,
      end: (reason) => {
        setEnded(reason)
        return 'close'
      },
    },
    // Each connection starts with the recent lines again.
    () => {
      setLines([])
      setEnded(null)
    },
  )

  // Follows the newest line unless the reader scrolled up.
  useLayoutEffect(() => {
    const element = list.current
    if (element !== null && pinned.current) element.scrollTop = element.scrollHeight
  }, [lines])

  return (
    <section class="card" aria-labelledby="logs-title">
      <div class="card-head">
        <h3 class="card-title" id="logs-title">
          Live logs
        </h3>
        <span>
          {stream.status === 'open' && <Badge tone="ok">live</Badge>}
          {stream.status === 'connecting' && <Badge tone="warn">connecting</Badge>}
          {stream.status === 'closed' && <Badge tone="muted">stopped</Badge>}{' '}
          <button type="button" class="small" onClick={() => setLines([])}>
            Clear
          </button>{' '}
          {stream.status === 'closed' && (
            <button type="button" class="small" onClick={stream.reconnect}>
              Reconnect
            </button>
          )}
        </span>
      </div>
      {ended !== null && <p class="hint">The stream ended: {ended}.</p>}
      <ol
        class="log-list"
        data-testid="live-logs"
        ref={list}
        onScroll={(event) => {
          const element = event.currentTarget
          pinned.current = element.scrollHeight - element.scrollTop - element.clientHeight < 24
        }}
      >
        {lines.length === 0 && (
          <li class="muted">No log lines yet. ctx.log lines and failures appear here.</li>
        )}
        {lines.map((line, index) => (
          <li key={`${line.ts}-${index}`} class={`log-line ${line.level}`}>
            <span class="log-time">{formatClock(line.ts)}</span>
            <span class={`log-level ${line.level}`}>{line.level}</span>
            <span class="log-version">v{line.version}</span>
            <span class="log-message">{line.message}</span>
          </li>
        ))}
      </ol>
    </section>
  )
}
