import { useEffect, useRef, useState } from 'preact/hooks'

/** Where a live stream stands. */
export type StreamStatus = 'connecting' | 'open' | 'closed'

/**
 * Follows a server-sent event stream at `url` (null: none) and calls the handler of each event
 * name with the event's data. The browser reconnects on its own after a dropped connection; when
 * it gives up (an error answer) the status is `closed`, and `reconnect()` starts again. A handler
 * returning `'close'` ends the stream (the server said it is over). `onOpen` runs on each
 * (re)connection, before the events the server sends on it.
 */
export function useEventSource(
  url: string | null,
  handlers: Record<string, (data: string) => 'close' | undefined>,
  onOpen?: () => void,
): { status: StreamStatus; reconnect(): void } {
  const [status, setStatus] = useState<StreamStatus>('connecting')
  const [attempt, setAttempt] = useState(0)
  const latest = useRef(handlers)
  latest.current = handlers
  const opened = useRef(onOpen)
  opened.current = onOpen
  const names = Object.keys(handlers).sort().join(',')

  useEffect(() => {
    if (url === null) {
      setStatus('closed')
      return
    }
    const source = new EventSource(url, { withCredentials: true })
    setStatus('connecting')
    source.addEventListener('open', () => {
      opened.current?.()
      setStatus('open')
    })
    for (const name of names.split(',')) {
      source.addEventListener(name, (event) => {
        // A stream may name its events `error`, like the browser's own connection errors; only
        // those of the stream carry data.
        if (!(event instanceof MessageEvent) || typeof event.data !== 'string') return
        if (latest.current[name]?.(event.data) === 'close') {
          source.close()
          setStatus('closed')
        }
      })
    }
    source.addEventListener('error', (event) => {
      if (event instanceof MessageEvent && typeof event.data === 'string') return
      setStatus(source.readyState === EventSource.CLOSED ? 'closed' : 'connecting')
    })
    return () => source.close()
  }, [url, names, attempt])

  return { status, reconnect: () => setAttempt((n) => n + 1) }
}
