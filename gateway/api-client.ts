import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { ADMIN_TOKEN_FILE, API_URL_FILE } from './data-files.ts'

/** Where the CLI finds the API: flags, then env, then the data dir's files. */
export interface ApiTarget {
  url: string
  token: string
}

/** An error answer of the API, or a failure to reach it. */
export class ApiError extends Error {
  override readonly name = 'ApiError'
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message)
  }
}

/** Resolves the API URL and token from `--url`/`--token`, `TAUREAU_URL`/`TAUREAU_TOKEN`, or `--data`. */
export function resolveApiTarget(
  flags: { url?: string | undefined; token?: string | undefined; data?: string | undefined },
  env: Readonly<Record<string, string | undefined>> = process.env,
): ApiTarget {
  // An empty variable counts as unset, as it does for the gateway's own configuration.
  const fromEnv = (name: string): string | undefined => (env[name] === '' ? undefined : env[name])
  const dataDir = resolve(flags.data ?? fromEnv('TAUREAU_DATA') ?? '.taureau')
  const fromFile = (name: string): string | undefined => {
    const file = join(dataDir, name)
    return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined
  }
  const url = flags.url ?? fromEnv('TAUREAU_URL') ?? fromFile(API_URL_FILE) ?? 'http://127.0.0.1:8080'
  const token = flags.token ?? fromEnv('TAUREAU_TOKEN') ?? fromFile(ADMIN_TOKEN_FILE)
  if (token === undefined) {
    throw new ApiError(
      `Cannot find an API token: pass --token, set TAUREAU_TOKEN, or point --data at the gateway's data dir (${dataDir})`,
      0,
      'unauthorized',
    )
  }
  return { url: url.replace(/\/+$/, ''), token }
}

/** Calls the management API and returns the parsed JSON answer (undefined for 204). */
export async function callApi(
  target: ApiTarget,
  method: string,
  path: string,
  body?: unknown,
): Promise<unknown> {
  let response: Response
  try {
    response = await fetch(`${target.url}/api/v1${path}`, {
      method,
      headers: {
        authorization: `Bearer ${target.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
  } catch (cause) {
    throw new ApiError(
      `Cannot reach the gateway at ${target.url}: ${(cause as Error & { cause?: Error }).cause?.message ?? (cause as Error).message}`,
      0,
      'unreachable',
    )
  }
  if (response.status === 204) return undefined
  const text = await response.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new ApiError(
      `Cannot read the gateway's answer (HTTP ${response.status})`,
      response.status,
      'bad_response',
    )
  }
  if (!response.ok) {
    const error = json as { code?: string; message?: string }
    throw new ApiError(error.message ?? `HTTP ${response.status}`, response.status, error.code ?? 'unknown')
  }
  return json
}

/**
 * Reads a server-sent event stream of the API until it ends or the process is interrupted,
 * calling `onEvent` with each event's name (`message` when it has none) and data.
 */
export async function followEvents(
  target: ApiTarget,
  path: string,
  onEvent: (event: string, data: string) => void,
): Promise<void> {
  let response: Response
  try {
    response = await fetch(`${target.url}/api/v1${path}`, {
      headers: { authorization: `Bearer ${target.token}`, accept: 'text/event-stream' },
    })
  } catch (cause) {
    throw new ApiError(
      `Cannot reach the gateway at ${target.url}: ${(cause as Error & { cause?: Error }).cause?.message ?? (cause as Error).message}`,
      0,
      'unreachable',
    )
  }
  if (!response.ok || response.body === null) {
    const error = (await response.json().catch(() => ({}))) as { code?: string; message?: string }
    throw new ApiError(error.message ?? `HTTP ${response.status}`, response.status, error.code ?? 'unknown')
  }
  const decoder = new TextDecoder()
  let buffered = ''
  const reader = response.body.getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) return
    buffered += decoder.decode(value, { stream: true })
    let end = buffered.indexOf('\n\n')
    while (end !== -1) {
      const lines = buffered.slice(0, end).split('\n')
      buffered = buffered.slice(end + 2)
      const data = lines
        .filter((line) => line.startsWith('data: '))
        .map((line) => line.slice(6))
        .join('\n')
      const name = lines.find((line) => line.startsWith('event: '))?.slice(7) ?? 'message'
      if (data !== '') onEvent(name, data)
      end = buffered.indexOf('\n\n')
    }
  }
}
