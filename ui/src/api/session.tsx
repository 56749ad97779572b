import { type ComponentChildren, createContext } from 'preact'
import { useCallback, useContext, useEffect, useMemo, useState } from 'preact/hooks'
import { ApiError, messageOf, onUnauthorized, request, setCsrfToken } from './client.ts'
import type { GatewayInfo, SessionInfo, SessionResponse } from './types.ts'

/** Where the UI stands with the gateway: checking, signed out, signed in, or unreachable. */
export type SessionState =
  | { status: 'loading' }
  | { status: 'signed-out'; notice: string | null; keepPlace: boolean }
  | { status: 'unreachable'; message: string }
  | { status: 'signed-in'; session: SessionInfo; gateway: GatewayInfo }

/** The session context: the state, and signing in and out. */
export interface SessionContextValue {
  state: SessionState
  /** Signs in with `{ token }` or `{ username, password }`; throws the API's error. */
  signIn(body: { token: string } | { username: string; password: string }): Promise<void>
  signOut(): Promise<void>
  /** Asks the gateway again (after it was unreachable). */
  retry(): void
}

const SessionContext = createContext<SessionContextValue | null>(null)

/** Holds the session for the whole app; any 401 from the API signs the UI out. */
export function SessionProvider({ children }: { children: ComponentChildren }) {
  const [state, setState] = useState<SessionState>({ status: 'loading' })
  const [attempt, setAttempt] = useState(0)

  const apply = useCallback((answer: SessionResponse) => {
    setCsrfToken(answer.csrfToken)
    setState({ status: 'signed-in', session: answer.session, gateway: answer.gateway })
  }, [])

  useEffect(() => {
    onUnauthorized(() => {
      setCsrfToken(null)
      setState((current) =>
        current.status === 'signed-in'
          ? { status: 'signed-out', notice: 'Your session ended: sign in again.', keepPlace: true }
          : current,
      )
    })
  }, [])

  useEffect(() => {
    let live = true
    // Signed out reads as `{ session: null }`, or as a 401 from gateways that answer so.
    request<SessionResponse | { session: null }>('GET', 'session', { expectUnauthorized: true })
      .then((answer) => {
        if (!live) return
        if (answer.session === null) setState({ status: 'signed-out', notice: null, keepPlace: true })
        else apply(answer)
      })
      .catch((error: unknown) => {
        if (!live) return
        if (error instanceof ApiError && error.status === 401)
          setState({ status: 'signed-out', notice: null, keepPlace: true })
        else setState({ status: 'unreachable', message: messageOf(error) })
      })
    return () => {
      live = false
    }
  }, [apply, attempt])

  const value = useMemo<SessionContextValue>(
    () => ({
      state,
      async signIn(body) {
        apply(await request<SessionResponse>('POST', 'session', { body, expectUnauthorized: true }))
      },
      async signOut() {
        try {
          await request('DELETE', 'session', { expectUnauthorized: true })
        } catch {
          // Signed out here either way; the cookie ends with its session on the gateway.
        }
        setCsrfToken(null)
        setState({ status: 'signed-out', notice: null, keepPlace: false })
      },
      retry() {
        setState({ status: 'loading' })
        setAttempt((n) => n + 1)
      },
    }),
    [state, apply],
  )
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>
}

/** The session context; only inside {@link SessionProvider}. */
export function useSession(): SessionContextValue {
  const value = useContext(SessionContext)
  if (value === null) throw new TypeError('Cannot use the session outside its provider')
  return value
}

/** The signed-in session; only on pages shown when signed in. */
export function useSignedIn(): { session: SessionInfo; gateway: GatewayInfo; isAdmin: boolean } {
  const { state } = useSession()
  if (state.status !== 'signed-in') throw new TypeError('Cannot show this page when not signed in')
  return { session: state.session, gateway: state.gateway, isAdmin: state.session.kind === 'admin' }
}
