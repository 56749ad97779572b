import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

/** The CLI, as users run it. */
export const BIN = join(import.meta.dirname, '../../bin/taureau')

/** Options of {@link spawnGateway}. */
export interface SpawnGatewayOptions {
  dataDir: string
  /** Ports to listen on; 0 (any free one) when not given. WebSocket always gets any. */
  mqttPort?: number
  httpPort?: number
  /** More arguments for `taureau gateway` (`--config FILE`, ...). */
  args?: string[]
  /** `TAUREAU_LOG_LEVEL` of the child; default `silent`. */
  logLevel?: string
  /** What becomes of the child's stderr (its log); `pipe` to read it. Default `inherit`. */
  stderr?: 'inherit' | 'pipe' | 'ignore'
  /** Longest wait of one API call, in ms. */
  apiTimeoutMs?: number
}

/** A `taureau gateway` child process, ready, with its addresses and an API caller. */
export interface GatewayProcess {
  child: ChildProcess
  /** The line it printed when ready. */
  line: string
  mqttPort: number
  httpPort: number
  httpUrl: string
  /** Calls `/api/v1` with the admin token; returns the parsed body, throws on an error status. */
  api(method: string, path: string, body?: unknown): Promise<any>
  /** SIGKILL, and the exit. */
  kill(): Promise<void>
}

/** Starts `taureau gateway` on 127.0.0.1 and resolves once it prints that it listens. */
export async function spawnGateway(options: SpawnGatewayOptions): Promise<GatewayProcess> {
  const { dataDir } = options
  const args = ['gateway', '--data', dataDir, '--host', '127.0.0.1', '--ws-port', '0']
  args.push('--mqtt-port', String(options.mqttPort ?? 0), '--http-port', String(options.httpPort ?? 0))
  args.push(...(options.args ?? []))
  const child = spawn(BIN, args, {
    env: { ...process.env, TAUREAU_LOG_LEVEL: options.logLevel ?? 'silent' },
    stdio: ['ignore', 'pipe', options.stderr ?? 'inherit'],
  })
  const exited = once(child, 'exit')
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
  const [line] = (await Promise.race([
    once(lines, 'line'),
    exited.then(([code]) => {
      throw new Error(`the gateway exited with ${code} before it was ready`)
    }),
  ])) as [string]
  const mqttPort = Number(/mqtt:\/\/127\.0\.0\.1:(\d+)/.exec(line)?.[1])
  const httpUrl = /API and UI at (http:\/\/\S+)/.exec(line)?.[1] as string
  const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()
  return {
    child,
    line,
    mqttPort,
    httpPort: Number(new URL(httpUrl).port),
    httpUrl,
    async api(method, path, body) {
      const response = await fetch(`${httpUrl}/api/v1${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        ...(options.apiTimeoutMs === undefined ? {} : { signal: AbortSignal.timeout(options.apiTimeoutMs) }),
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      })
      const text = await response.text()
      if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`)
      return text === '' ? undefined : JSON.parse(text)
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGKILL')
      await exited
    },
  }
}
