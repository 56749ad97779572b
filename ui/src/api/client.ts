// The one way the UI talks to the API: URLs relative to the document (the gateway may be served
// under a path prefix), the session cookie, the CSRF header on changes, and one error type.

/** An error answer of the API, `{ code, message, field?, line?, column? }`, with its HTTP status. */
export class ApiError extends Error {
  override readonly name = 'ApiError'
  readonly status: number
  readonly code: string
  readonly field: string | undefined
  readonly line: number | undefined
  readonly column: number | undefined

  constructor(
    status: number,
    code: string,
    message: string,
    where: { field?: string | undefined; line?: number | undefined; column?: number | undefined } = {},
  ) {
    super(message)
    this.status = status
    this.code = code
    this.field = where.field
    this.line = where.line
    this.column = where.column
  }
}

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE'
type Query = Record<string, string | number | undefined>

/** Options of {@link request}. */
export interface RequestOptions {
  body?: unknown
  query?: Query
  signal?: AbortSignal
  /** A 401 is an expected answer (checking for a session, signing in): do not sign out. */
  expectUnauthorized?: boolean
}

let csrfToken: string | null = null
let unauthorized: () => void = () => {}

/** Sets the CSRF token sent with every change (from the session), or clears it at sign-out. */
export function setCsrfToken(token: string | null): void {
  csrfToken = token
}

/** What to do when the API says the session is gone: the session context signs out. */
export function onUnauthorized(handler: () => void): void {
  unauthorized = handler
}

/** An API path with each interpolated value encoded as one path segment: path`tenants/${id}`. */
export function path(strings: TemplateStringsArray, ...values: Array<string | number>): string {
  let out = strings[0] ?? ''
  values.forEach((value, i) => {
    out += encodeURIComponent(String(value)) + (strings[i + 1] ?? '')
  })
  return out
}

/** The absolute URL of an API path (`tenants/acme`), resolved against the document's base. */
export function apiUrl(apiPath: string, query: Query = {}): string {
  const url = new URL(`api/v1/${apiPath}`, document.baseURI)
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined) url.searchParams.set(name, String(value))
  }
  return url.href
}

/** Whether an error is one the UI shows nothing for: an aborted request, or a signed-out session. */
export function isQuiet(error: unknown): boolean {
  return (
    (error instanceof DOMException && error.name === 'AbortError') ||
    (error instanceof ApiError && error.status === 401)
  )
}

/** The message to show for a failure of any kind. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/** Calls the API and returns its JSON answer (undefined for 204); throws {@link ApiError}. */
export async function request<T>(method: Method, apiPath: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' }
  if (method !== 'GET' && csrfToken !== null) headers['x-csrf-token'] = csrfToken
  if (options.body !== undefined) headers['content-type'] = 'application/json'
  let response: Response
  try {
    response = await fetch(apiUrl(apiPath, options.query), {
      method,
      headers,
      credentials: 'same-origin',
      body: options.body === undefined ? null : JSON.stringify(options.body),
      signal: options.signal ?? null,
    })
  } catch (cause) {
    if (cause instanceof DOMException && cause.name === 'AbortError') throw cause
    throw new ApiError(0, 'network', 'Cannot reach the gateway: check that it runs and try again')
  }
  const text = await response.text()
  let body: unknown
  try {
    body = text === '' ? undefined : JSON.parse(text)
  } catch {
    body = undefined
  }
  if (!response.ok) {
    const answer = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>
    const error = new ApiError(
      response.status,
      typeof answer.code === 'string' ? answer.code : `http_${response.status}`,
      typeof answer.message === 'string'
        ? answer.message
        : `The gateway answered ${response.status} ${response.statusText}`.trim(),
      {
        field: typeof answer.field === 'string' ? answer.field : undefined,
        line: typeof answer.line === 'number' ? answer.line : undefined,
        column: typeof answer.column === 'number' ? answer.column : undefined,
      },
    )
    if (response.status === 401 && options.expectUnauthorized !== true) unauthorized()
    throw error
  }
  return body as T
}
