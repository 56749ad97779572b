import { useCallback, useEffect, useRef, useState } from 'preact/hooks'
import { isQuiet, messageOf, request } from '../api/client.ts'

/** A GET of the API as a component sees it. */
export interface Resource<T> {
  data: T | undefined
  error: string | null
  loading: boolean
  /** Fetches again; the data shown stays until the answer comes. */
  reload(): void
  /** Replaces the data (after a change whose answer carries the new value). */
  setData(data: T): void
}

/**
 * Fetches `apiPath` (relative to `api/v1/`) now and whenever it changes, every `pollMs` when given.
 * A null path fetches nothing. Aborted and signed-out answers leave no error.
 */
export function useApi<T>(apiPath: string | null, options: { pollMs?: number } = {}): Resource<T> {
  const [data, setData] = useState<T | undefined>(undefined)
  const [error, setError] = useState<string | null>(null)
  const [loading, setLoading] = useState(apiPath !== null)
  const [generation, setGeneration] = useState(0)
  const { pollMs } = options

  const shownPath = useRef(apiPath)

  useEffect(() => {
    if (apiPath === null) {
      setLoading(false)
      return
    }
    // A new path starts empty, so a page never shows the last tenant's data under a new name.
    if (shownPath.current !== apiPath) {
      shownPath.current = apiPath
      setData(undefined)
      setError(null)
    }
    const controller = new AbortController()
    let timer: ReturnType<typeof setTimeout> | undefined
    const load = (): void => {
      setLoading(true)
      request<T>('GET', apiPath, { signal: controller.signal })
        .then((answer) => {
          setData(answer)
          setError(null)
        })
        .catch((failure: unknown) => {
          if (!isQuiet(failure)) setError(messageOf(failure))
        })
        .finally(() => {
          if (controller.signal.aborted) return
          setLoading(false)
          if (pollMs !== undefined) timer = setTimeout(load, pollMs)
        })
    }
    load()
    return () => {
      controller.abort()
      clearTimeout(timer)
    }
  }, [apiPath, pollMs, generation])

  const reload = useCallback(() => setGeneration((n) => n + 1), [])
  return { data, error, loading, reload, setData }
}

/** Calls `tick` every `ms` while the component is shown (and `ms` is not null). */
export function useInterval(tick: () => void, ms: number | null): void {
  const latest = useRef(tick)
  latest.current = tick
  useEffect(() => {
    if (ms === null) return
    const timer = setInterval(() => latest.current(), ms)
    return () => clearInterval(timer)
  }, [ms])
}
