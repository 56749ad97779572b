import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type {
  BenchCredentials,
  BrokerCpuSample,
  BrokerKind,
  ChildMessage,
  ParentMessage,
} from './_protocol.ts'

/** Options of {@link startBrokerProcess}. */
export interface BrokerProcessOptions {
  kind: BrokerKind
  publisherCount: number
  /** Longest the child may take to start and provision its broker. */
  startTimeoutMs: number
  /** Directory for a V8 CPU profile of the child (`--cpu-prof`), written when it exits. */
  cpuProfDir?: string | undefined
}

/** A broker running in a child process, seen from the load generator. */
export interface BrokerProcess {
  readonly kind: BrokerKind
  readonly pid: number
  readonly port: number
  readonly publishers: readonly BenchCredentials[]
  readonly subscriber: BenchCredentials
  /** Whether the child process is still alive. */
  isRunning(): boolean
  /** The child's own cumulative CPU accounting, read inside the child now. */
  sample(): Promise<BrokerCpuSample>
  /** Asks the child to close its broker and exit; kills it if it does not within the bound. */
  close(): Promise<void>
  /** Kills the child at once (SIGKILL); safe to call at any time, e.g. from an exit handler. */
  kill(): void
  [Symbol.asyncDispose](): Promise<void>
}

const CHILD_FILE = fileURLToPath(new URL('./broker-child.ts', import.meta.url))
const SAMPLE_TIMEOUT_MS = 5000
const CLOSE_TIMEOUT_MS = 10_000

/** Forks `broker-child.ts` and resolves once its broker listens (and, for the gateway, is provisioned). */
export async function startBrokerProcess(options: BrokerProcessOptions): Promise<BrokerProcess> {
  const execArgv = ['--import', 'tsx']
  if (options.cpuProfDir !== undefined) execArgv.push('--cpu-prof', '--cpu-prof-dir', options.cpuProfDir)
  // The child's stdout goes to our stderr: our stdout carries only the results table.
  const child: ChildProcess = fork(CHILD_FILE, [options.kind, String(options.publisherCount)], {
    execArgv,
    stdio: ['ignore', 2, 2, 'ipc'],
  })
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))

  const pending = new Map<number, { resolve(sample: BrokerCpuSample): void; reject(error: Error): void }>()
  let nextSampleId = 1
  const failAll = (error: Error): void => {
    for (const waiter of pending.values()) waiter.reject(error)
    pending.clear()
  }
  child.on('exit', (code, signal) => {
    failAll(
      new Error(
        `Cannot sample the ${options.kind} broker as its process exited (code ${code}, signal ${signal})`,
      ),
    )
  })

  const ready = await new Promise<Extract<ChildMessage, { type: 'ready' }>>((resolve, reject) => {
    const timer = setTimeout(() => {
      kill()
      reject(
        new Error(
          `Cannot start the ${options.kind} broker as it was not ready within ${options.startTimeoutMs} ms`,
        ),
      )
    }, options.startTimeoutMs)
    child.on('message', (message: ChildMessage) => {
      if (message.type === 'ready') {
        clearTimeout(timer)
        resolve(message)
      } else if (message.type === 'failed') {
        clearTimeout(timer)
        kill()
        const error = new Error(`Cannot start the ${options.kind} broker: ${message.message}`)
        error.stack = message.stack
        reject(error)
      } else if (message.type === 'sample') {
        const waiter = pending.get(message.id)
        pending.delete(message.id)
        waiter?.resolve({
          userMicros: message.userMicros,
          systemMicros: message.systemMicros,
          eluActiveMs: message.eluActiveMs,
          eluIdleMs: message.eluIdleMs,
        })
      }
    })
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(
        new Error(
          `Cannot start the ${options.kind} broker as its process exited (code ${code}, signal ${signal})`,
        ),
      )
    })
  })

  let closing: Promise<void> | undefined
  const broker: BrokerProcess = {
    kind: options.kind,
    pid: child.pid ?? -1,
    port: ready.port,
    publishers: ready.publishers,
    subscriber: ready.subscriber,
    isRunning: () => child.exitCode === null && child.signalCode === null,
    sample: () =>
      new Promise<BrokerCpuSample>((resolve, reject) => {
        if (!child.connected) {
          reject(new Error(`Cannot sample the ${options.kind} broker as its IPC channel is closed`))
          return
        }
        const id = nextSampleId++
        const timer = setTimeout(() => {
          pending.delete(id)
          reject(
            new Error(
              `Cannot sample the ${options.kind} broker as it did not answer within ${SAMPLE_TIMEOUT_MS} ms`,
            ),
          )
        }, SAMPLE_TIMEOUT_MS)
        pending.set(id, {
          resolve: (sample) => {
            clearTimeout(timer)
            resolve(sample)
          },
          reject: (error) => {
            clearTimeout(timer)
            reject(error)
          },
        })
        child.send({ type: 'sample', id } satisfies ParentMessage)
      }),
    close: () => {
      closing ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return
        const timer = setTimeout(kill, CLOSE_TIMEOUT_MS)
        if (child.connected) child.send({ type: 'close' } satisfies ParentMessage)
        else kill()
        await exited
        clearTimeout(timer)
      })()
      return closing
    },
    kill,
    [Symbol.asyncDispose]: () => broker.close(),
  }
  return broker
}
