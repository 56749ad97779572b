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
  /** The CLI to run, with arguments before `gateway`; default `[BIN]`, the checkout's (tsx). */
  command?: [string, ...string[]]
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
  const [file, ...prefix] = options.command ?? [BIN]
  const child = spawn(file, [...prefix, ...args], {
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

/** A `taureau demo` child process on 127.0.0.1 with every port picked by the system. */
export interface DemoProcess {
  child: ChildProcess
  /** Its stdout, line by line, as it comes. */
  readonly output: string[]
  /** Its stderr so far (the gateway's warnings and errors). */
  stderr(): string
  /** Resolves once it printed its addresses: the API and UI's URL and the MQTT port. */
  ready(): Promise<{ httpUrl: string; mqttPort: number }>
  /** SIGINT, and its exit code. */
  stop(): Promise<number | null>
}

/** Starts `taureau demo` with `args` (data dirs, devices, …) after the port options. */
export function spawnDemo(options: { command?: [string, ...string[]]; args: string[] }): DemoProcess {
  const [file, ...prefix] = options.command ?? [BIN]
  const ports = ['--mqtt-port', '0', '--ws-port', '0', '--http-port', '0', '--cloud-port', '0']
  const child = spawn(file, [...prefix, 'demo', '--host', '127.0.0.1', ...ports, ...options.args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const exited = once(child, 'exit')
  const output: string[] = []
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => output.push(line))
  return {
    child,
    output,
    stderr: () => stderr,
    async ready() {
      for (;;) {
        const text = output.join('\n')
        const httpUrl = /web UI\s+(http:\/\/127\.0\.0\.1:\d+)\//.exec(text)?.[1]
        const mqttPort = /MQTT\s+mqtt:\/\/127\.0\.0\.1:(\d+)/.exec(text)?.[1]
        if (httpUrl !== undefined && mqttPort !== undefined) return { httpUrl, mqttPort: Number(mqttPort) }
        if (child.exitCode !== null) throw new Error(`the demo exited with ${child.exitCode}: ${stderr}`)
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT')
      const [code] = await exited
      return code as number | null
    },
  }
}
