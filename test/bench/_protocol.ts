// Messages between the benchmark's parent (load generator) and a broker child, over the IPC
// channel that `child_process.fork` opens. Kept in one file so both sides agree on the shapes.

/** Which broker a child runs: the whole gateway, or aedes alone with in-memory persistence. */
export type BrokerKind = 'bare' | 'gateway'

/** How a bench client signs in; bare aedes accepts anyone, so both fields are then absent. */
export interface BenchCredentials {
  username?: string
  password?: string
}

/** The broker process's own CPU accounting at one instant, cumulative since it started. */
export interface BrokerCpuSample {
  /** `process.cpuUsage().user` in µs: every thread of the child (main, workers, libuv pool). */
  userMicros: number
  /** `process.cpuUsage().system` in µs. */
  systemMicros: number
  /** `performance.eventLoopUtilization()` of the child's main thread, cumulative, in ms. */
  eluActiveMs: number
  eluIdleMs: number
}

/** Parent → child. */
export type ParentMessage = { type: 'sample'; id: number } | { type: 'close' }

/** Child → parent. */
export type ChildMessage =
  | {
      type: 'ready'
      port: number
      publishers: BenchCredentials[]
      subscriber: BenchCredentials
    }
  | { type: 'failed'; message: string; stack: string }
  | ({ type: 'sample'; id: number } & BrokerCpuSample)
  | { type: 'closed' }
