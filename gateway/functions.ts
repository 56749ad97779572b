import { Cron } from 'croner'
import type { Logger } from 'pino'
import {
  type CallOutcome,
  type HandlerName,
  type InvocationCall,
  type InvocationResult,
  SandboxError,
  type WorkerPool,
} from '../sandbox/index.ts'
import type { Broker, BrokerMessage } from './broker.ts'
import type { GatewayConfig, Quotas } from './config.ts'
import { GATEWAY_ERROR_CODES, GatewayError, quote } from './errors.ts'
import { type DeployRequest, type FunctionSpec, parseDuration, type Trigger } from './function-spec.ts'
import type { DeadLetter, FunctionRecord, FunctionStore, FunctionVersion } from './function-store.ts'
import type { Journal } from './journal.ts'
import type { Metrics } from './metrics.ts'
import { type Outbox, OutboxFullError } from './outbox.ts'
import { decodePayload, encodePayload } from './payload.ts'
import type { PublishIds } from './publish-ids.ts'
import { type StateChange, StateQuotaError, type StateStore, StateWriteError } from './state-store.ts'
import { filterCovers } from './topic-filter.ts'

/** One line of a function's log: what it logged with `ctx.log`, or why an invocation failed. */
/** The least time between two warnings that one function's queue refuses device messages. */
const REFUSAL_LOG_INTERVAL_MS = 10_000

export interface LogLine {
  ts: number
  version: number
  level: 'log' | 'error'
  message: string
}

/** A function as the API shows it: the stored record, its current version's spec and live figures. */
export interface FunctionView {
  name: string
  version: number
  latestVersion: number
  enabled: boolean
  /** `running`, `disabled`, or `failed` when the current version could not be loaded. */
  state: 'running' | 'disabled' | 'failed'
  problem: string | null
  triggers: Trigger[]
  output: string | null
  limits: FunctionSpec['limits']
  config: Record<string, unknown>
  createdAt: string
  updatedAt: string
  stats: FunctionStats
}

/** Live figures of a function since the gateway started. */
export interface FunctionStats {
  invocations: number
  errors: number
  /** Failures by reason: `deadline`, `memory`, `handler_threw`, `bad_output`, `broken`, `queue_full`, ... */
  errorsByReason: Record<string, number>
  lastError: { at: string; message: string } | null
  queued: number
  /** Invocation time (inside the sandbox) of the recent invocations, in ms. */
  p50Ms: number | null
  p99Ms: number | null
}

/** The outcome of a test invocation: nothing it produced takes effect. */
export type TestInvocation =
  | {
      ok: true
      version: number
      handler: HandlerName
      value: unknown
      output: { topic: string; payload: string } | null
      publishes: Array<{ topic: string; payload: string; qos: number; retain: boolean }>
      emits: Array<{ stream: string; record: unknown }>
      /** The state writes and leases it would have committed (a test run commits nothing). */
      state: Array<{
        namespace: string
        key: string
        op: string
        value?: unknown
        by?: number
        ttlMs?: number
      }>
      leases: Array<{ namespace: string; ttlMs: number | null }>
      logs: string[]
      durationMs: number
      memoryBytes: number
    }
  | { ok: false; version: number; handler: HandlerName; error: { code: string; message: string } }

/** A sample message for a test invocation. */
export interface SampleMessage {
  topic?: string | undefined
  payload?: unknown
  payloadBase64?: string | undefined
  qos?: 0 | 1 | 2 | undefined
  retain?: boolean | undefined
  device?: string | undefined
  ts?: number | undefined
}

/** Options of {@link createFunctions}. */
export interface FunctionsOptions {
  functionStore: FunctionStore
  broker: Broker
  pool: WorkerPool
  metrics: Metrics
  logger: Logger
  config: GatewayConfig['functions']
  /** The group commit that journals messages and results. */
  journal: Journal
  /** Where `ctx.emit` records wait for the uplink. */
  outbox: Outbox
  /** Function state (`ctx.state`): writes are applied with the other effects. */
  state: StateStore
  /** Packet ids of journaled messages, to tell a device's resends from new messages. */
  publishIds: PublishIds
  /** Journal QoS 0 messages too (`durability.journalQos0`); by default they are not. */
  journalQos0?: boolean
  /** false: journal nothing, acknowledge at once (`durability.journal`). */
  journalMessages?: boolean
  /** The tenant's effective quotas; undefined when the tenant does not exist. */
  quotas(tenantId: string): Quotas | undefined
  now?: () => number
  /** Runs the `every` and `cron` triggers; tests give their own to fire ticks by hand. */
  scheduler?: Scheduler
}

/** Starts schedules; each start returns the stop. */
export interface Scheduler {
  every(intervalMs: number, fire: () => void): () => void
  cron(expression: string, timezone: string, fire: () => void): () => void
}

/** Real timers: `setInterval` for `every`, croner for cron expressions. Neither keeps the process up. */
export const TIMER_SCHEDULER: Scheduler = {
  every(intervalMs, fire) {
    const timer = setInterval(fire, intervalMs)
    timer.unref()
    return () => clearInterval(timer)
  },
  cron(expression, timezone, fire) {
    const cron = new Cron(expression, { unref: true, timezone }, fire)
    return () => cron.stop()
  },
}

/**
 * The functions of every tenant: deploys, versions and rollback, the dispatch of broker messages
 * and schedule ticks to the sandbox pool, and what comes back (output publishes, outbox records,
 * dead letters, logs).
 */
export interface Functions {
  /** Loads every enabled function's current version into the pool and starts the schedules. */
  start(): Promise<void>
  /** Validates (compiles) first; stores a new version and swaps it in only when that succeeds. */
  deploy(tenantId: string, request: DeployRequest): Promise<FunctionView>
  /**
   * Validates a deploy without making it: the spec against the tenant's quotas, and the source
   * compiled (top level run) in the scratch sandbox. Throws what the deploy would.
   */
  check(tenantId: string, request: DeployRequest): Promise<void>
  rollback(tenantId: string, name: string, version: number): Promise<FunctionView>
  setEnabled(tenantId: string, name: string, enabled: boolean): Promise<FunctionView>
  remove(tenantId: string, name: string): Promise<void>
  /** Forgets a deleted tenant's functions (the store's rows go with the tenant). */
  removeTenant(tenantId: string): Promise<void>
  view(tenantId: string, name: string): FunctionView
  list(tenantId: string): FunctionView[]
  versions(tenantId: string, name: string): FunctionVersion[]
  /** Runs a kept version on a sample in a throwaway copy of the function: no effect takes place. */
  testInvoke(
    tenantId: string,
    name: string,
    options: {
      handler?: HandlerName | undefined
      message?: SampleMessage | undefined
      version?: number | undefined
    },
  ): Promise<TestInvocation>
  logs(tenantId: string, name: string): LogLine[]
  /**
   * Calls `listener` with each new log line of the function, and with `null` when the function
   * is removed (the stream ends); returns the unsubscribe.
   */
  followLogs(tenantId: string, name: string, listener: (line: LogLine | null) => void): () => void
  /**
   * Journals the functions triggered by state changes made outside an invocation (the API, leases
   * that ran out). Call it inside the transaction that makes the changes, so both commit or
   * neither; run what it returns after the commit: it queues them.
   */
  stateChanged(tenantId: string, changes: readonly StateChange[]): () => void
  /**
   * The broker's message handler: matches triggers, journals what it must, queues invocations
   * and calls `done` when the broker may acknowledge the message.
   */
  handleMessage(message: BrokerMessage, done: (error: Error | null) => void): void
  /**
   * Runs dead letters again (the given ids, or all of the tenant's or of one function's): each
   * message is journaled again for its function's current version and leaves the dead letters.
   * Letters of schedule ticks and of functions that no longer run are kept and counted as skipped.
   */
  replayDeadLetters(
    tenantId: string,
    options: { name?: string | undefined; ids?: number[] | undefined },
  ): Promise<{ replayed: number; skipped: number }>
  /** Resolves when no invocation is queued or running (tests, shutdown). */
  idle(): Promise<void>
  /** Stops the schedules and waits for invocations in flight. */
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** A function's current version, loaded in the pool and taking messages. */
interface Active {
  tenantId: string
  name: string
  version: number
  /** The pool's key of this compiled copy; a new deploy or rollback compiles a new one. */
  key: string
  spec: FunctionSpec
  filters: string[]
  /** Shared state namespaces whose changes (there and below) run `onState`. */
  stateFilters: string[]
  /** Schedules of the `every` and `cron` triggers. */
  timers: Array<{ stop(): void }>
  /** Schedule triggers with a tick still queued: a slow function skips ticks rather than piling them up. */
  pendingTicks: Set<number>
}

/** One queued invocation. */
interface Item {
  /** The version it was queued for: it runs there even when a newer one is swapped in meanwhile. */
  entry: Active
  handler: HandlerName
  call: InvocationCall
  /** The message's payload as it came, for the queue's byte bound and the dead letter; none for a tick. */
  payload?: Buffer
  /** How many functions produced the message before this one (0 for a device's message). */
  hops: number
  /** The schedule trigger of a tick. */
  trigger?: number
  /** The journaled message's sequence number; none when it was not journaled (QoS 0, ticks). */
  seq?: number
  /** Failed runs so far; it is tried again up to `functions.retries` times. */
  attempts: number
}

/** A device message waiting to be journaled. */
interface Admission {
  message: BrokerMessage
  done: (error: Error | null) => void
  /** `performance.now()` after which it is refused if its functions' queues are still full. */
  deadline: number
}

/** A message a function's output or a device publishes, as far as routing needs it. */
interface RoutedMessage {
  topic: string
  payload: Buffer
  qos: 0 | 1 | 2
  retain: boolean
  deviceId?: string | null
  receivedAt?: number
}

/** A publish of an invocation, encoded. */
interface Publish {
  topic: string
  payload: Buffer
  qos: 0 | 1 | 2
  retain: boolean
}

/** What a message triggers: invocations, and refusals of those past the chain depth. */
interface Routed {
  items: Item[]
  refusals: Array<{ lane: Lane; item: Item; message: string }>
}

/** Per function: its queue, in arrival order, what is running, its figures and its log. */
interface Lane {
  tenantId: string
  name: string
  queue: Item[]
  queuedBytes: number
  /** Invocations of the batch running now; 0 when none is. */
  running: number
  /** Set when the function is deleted: a batch still running settles into nothing. */
  removed: boolean
  /** Device messages admitted and being journaled for it, and their payload bytes. */
  reserved: number
  reservedBytes: number
  /** Sequence numbers of the journaled messages queued or running, so a replay does not repeat them. */
  seqs: Set<number>
  /** `performance.now()` before which no batch starts (a retry's backoff). */
  pausedUntil: number
  resume: NodeJS.Timeout | undefined
  stats: {
    invocations: number
    errors: number
    errorsByReason: Record<string, number>
    lastError: { at: number; message: string } | null
    /** Recent invocation times, a ring written at `next`. */
    durations: number[]
    next: number
  }
  logs: LogLine[]
  listeners: Set<(line: LogLine | null) => void>
}

type DeadLetterInsert = Omit<DeadLetter, 'id'>

const RECENT_DURATIONS = 512
/**
 * Journal rows of `onState` invocations have this topic prefix and the change as payload. Device
 * topics never start with `$`, so they cannot be mistaken for one.
 */
const STATE_TOPIC = '$state/'
/** Whether a state trigger's namespace covers a changed namespace: itself and those below it. */
const namespaceCovers = (filter: string, namespace: string): boolean =>
  namespace === filter || namespace.startsWith(`${filter}/`)
/** How long a lane waits before its batch runs again when the store refused its results. */
const STORE_RETRY_MS = 1000
const MAX_LOG_LINE_CHARS = 4096
/** Test invocations of one tenant running at once; more are refused (each compiles a copy). */
const MAX_TEST_INVOCATIONS = 4
/** Codes of compile failures the source causes (as opposed to the gateway's own). */
const GUEST_COMPILE_CODES = new Set<string>([
  'invalid_function',
  'memory',
  'deadline',
  'handler_threw',
  'bad_output',
])

/** The id under which a tenant's throwaway copies run: a sandbox apart from the running one. */
const scratchOf = (tenantId: string) => `${tenantId}\u0000scratch`

/** Creates the functions runtime; call `start()` after the broker is up. */
export function createFunctions(options: FunctionsOptions): Functions {
  const { functionStore, broker, pool, metrics, logger, config, journal, publishIds, outbox } = options
  const stateStore = options.state
  const journalQos0 = options.journalQos0 ?? false
  const journalMessages = options.journalMessages ?? true
  const now = options.now ?? Date.now
  const scheduler = options.scheduler ?? TIMER_SCHEDULER
  /** Active functions per tenant, by name. */
  const active = new Map<string, Map<string, Active>>()
  /** Problems of functions whose current version could not be loaded (start, enable). */
  const failed = new Map<string, string>()
  const lanes = new Map<string, Lane>()
  /** Queued and running invocations per compiled key; a retired key is removed from the pool at 0. */
  const keyUse = new Map<string, number>()
  const retired = new Set<string>()
  /** Deploys, rollbacks and the like of one function run one at a time. */
  const serial = new Map<string, Promise<unknown>>()
  /** Users of each tenant's scratch sandbox; it is dropped when the last one is done. */
  const scratchUsers = new Map<string, number>()
  /** Dead letters of refusals outside a batch, journaled together on the next turn. */
  let pendingLetters: Array<{ letter: DeadLetterInsert; seq: number | undefined }> = []
  let busyLanes = 0
  /** Lanes waiting out a retry's backoff with work queued. */
  let pausedLanes = 0
  /** Device messages waiting for room in their functions' queues, in arrival order. */
  const admissions: Admission[] = []
  let admissionTimer: NodeJS.Timeout | undefined
  /**
   * Refusals since each function's last warning about them, by tenant and function: a function
   * that cannot keep up is logged at most once per {@link REFUSAL_LOG_INTERVAL_MS}, with the count,
   * not once per message (at a thousand messages a second that would be the log's only content).
   */
  const refusalLog = new Map<string, { lastAt: number; refused: number }>()
  const idleWaiters: Array<() => void> = []
  let compiles = 0
  let closed = false

  const id = (tenantId: string, name: string) => `${tenantId}\u0000${name}`

  const exclusive = <T>(tenantId: string, name: string, run: () => Promise<T>): Promise<T> => {
    const at = id(tenantId, name)
    const previous = serial.get(at) ?? Promise.resolve()
    const next = previous.then(run, run)
    const settled = next.catch(() => {})
    serial.set(at, settled)
    void settled.then(() => {
      if (serial.get(at) === settled) serial.delete(at)
    })
    return next
  }

  const laneOf = (tenantId: string, name: string): Lane => {
    const at = id(tenantId, name)
    let lane = lanes.get(at)
    if (lane === undefined) {
      lane = {
        tenantId,
        name,
        queue: [],
        queuedBytes: 0,
        running: 0,
        removed: false,
        seqs: new Set(),
        reserved: 0,
        reservedBytes: 0,
        pausedUntil: 0,
        resume: undefined,
        stats: { invocations: 0, errors: 0, errorsByReason: {}, lastError: null, durations: [], next: 0 },
        logs: [],
        listeners: new Set(),
      }
      lanes.set(at, lane)
    }
    return lane
  }

  const log = (lane: Lane, version: number, level: LogLine['level'], message: string, ts = now()): void => {
    const line: LogLine = {
      ts,
      version,
      level,
      message: message.length > MAX_LOG_LINE_CHARS ? `${message.slice(0, MAX_LOG_LINE_CHARS)}…` : message,
    }
    lane.logs.push(line)
    if (lane.logs.length > config.logLines) lane.logs.splice(0, lane.logs.length - config.logLines)
    for (const listener of lane.listeners) listener(line)
  }

  /** Forgets a deleted function's lane: queued work is dropped, a running batch settles into nothing. */
  const dropLane = (tenantId: string, name: string): void => {
    const at = id(tenantId, name)
    const lane = lanes.get(at)
    if (lane === undefined) return
    lanes.delete(at)
    lane.removed = true
    for (const item of lane.queue.splice(0)) useKey(tenantId, item.entry.key, -1)
    lane.queuedBytes = 0
    for (const listener of lane.listeners) listener(null)
    lane.listeners.clear()
    // The function's figures name every outcome it was counted with.
    metrics.removeFunction(tenantId, name, ['ok', ...Object.keys(lane.stats.errorsByReason)])
  }

  const requireTenant = (tenantId: string): Quotas => {
    const quotas = options.quotas(tenantId)
    if (quotas === undefined) {
      throw new GatewayError(GATEWAY_ERROR_CODES.notFound, `Cannot find tenant ${quote(tenantId)}`)
    }
    return quotas
  }
  const requireFunction = (tenantId: string, name: string): FunctionRecord => {
    const fn = functionStore.get(tenantId, name)
    if (fn === undefined) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.notFound,
        `Cannot find function ${quote(name)} of tenant ${quote(tenantId)}`,
      )
    }
    return fn
  }
  const requireVersion = (tenantId: string, name: string, version: number): FunctionVersion => {
    const found = functionStore.version(tenantId, name, version)
    if (found === undefined) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.notFound,
        `Cannot find version ${version} of function ${quote(name)} as it was never deployed or is no longer kept`,
      )
    }
    return found
  }

  const handlersOf = (spec: FunctionSpec): HandlerName[] => {
    const handlers: HandlerName[] = []
    if (spec.triggers.some((trigger) => 'topic' in trigger)) handlers.push('onMessage')
    if (spec.triggers.some((trigger) => 'every' in trigger || 'cron' in trigger)) handlers.push('onSchedule')
    if (spec.triggers.some((trigger) => 'state' in trigger)) handlers.push('onState')
    return handlers
  }

  /** A sandbox message names the pool's key of a compiled copy; tenants know the function's name. */
  const clean = (message: string, key: string, name: string): string =>
    message.split(`'${key}'`).join(`'${name}'`)

  /**
   * Compiles a version into the pool under a fresh key. A failure the source causes (syntax,
   * missing handler, top-level code that throws or runs out of memory or time) is `invalid_input`
   * on `source`; anything else is the gateway's own failure.
   */
  const compile = async (
    sandboxId: string,
    name: string,
    source: string,
    spec: FunctionSpec,
  ): Promise<string> => {
    const key = `${name}#${++compiles}`
    try {
      await pool.compile(sandboxId, key, source, handlersOf(spec), {
        memoryBytes: spec.limits.memoryMb * 1024 * 1024,
      })
    } catch (error) {
      const message = clean((error as Error).message, key, name)
      if (error instanceof SandboxError && GUEST_COMPILE_CODES.has(error.code)) {
        throw new GatewayError(GATEWAY_ERROR_CODES.invalidInput, message, {
          field: 'source',
          cause: error,
          line: error.line,
          column: error.column,
        })
      }
      throw new GatewayError(
        GATEWAY_ERROR_CODES.internal,
        `Cannot load function ${quote(name)} in its sandbox: ${message}`,
        { cause: error },
      )
    }
    return key
  }

  /**
   * Runs `work` in the tenant's scratch sandbox, a QuickJS instance apart from the one that runs
   * its functions: what a throwaway copy does there (run out of memory, change globals) cannot
   * touch the running copies. The scratch sandbox is dropped when its last user is done.
   */
  const withScratch = async <T>(tenantId: string, work: (sandboxId: string) => Promise<T>): Promise<T> => {
    const sandboxId = scratchOf(tenantId)
    scratchUsers.set(tenantId, (scratchUsers.get(tenantId) ?? 0) + 1)
    try {
      return await work(sandboxId)
    } finally {
      const users = (scratchUsers.get(tenantId) ?? 1) - 1
      if (users > 0) scratchUsers.set(tenantId, users)
      else {
        scratchUsers.delete(tenantId)
        void pool.removeTenant(sandboxId).catch(() => {})
      }
    }
  }

  const useKey = (tenantId: string, key: string, delta: number): void => {
    const at = `${tenantId}\u0000${key}`
    const count = (keyUse.get(at) ?? 0) + delta
    if (count > 0) {
      keyUse.set(at, count)
      return
    }
    keyUse.delete(at)
    if (retired.delete(at)) void pool.remove(tenantId, key).catch(() => {})
  }
  /** The key is no longer current: removed from the pool once nothing queued or running uses it. */
  const retire = (tenantId: string, key: string): void => {
    const at = `${tenantId}\u0000${key}`
    if (keyUse.has(at)) retired.add(at)
    else void pool.remove(tenantId, key).catch(() => {})
  }

  const deactivate = (tenantId: string, name: string): void => {
    const current = active.get(tenantId)?.get(name)
    if (current === undefined) return
    for (const timer of current.timers) timer.stop()
    active.get(tenantId)?.delete(name)
    if (active.get(tenantId)?.size === 0) active.delete(tenantId)
    retire(tenantId, current.key)
  }

  /** Makes a compiled version the one that takes new messages; what is queued finishes on its own version. */
  const activate = (
    tenantId: string,
    name: string,
    version: number,
    key: string,
    spec: FunctionSpec,
  ): void => {
    deactivate(tenantId, name)
    failed.delete(id(tenantId, name))
    const entry: Active = {
      tenantId,
      name,
      version,
      key,
      spec,
      filters: spec.triggers.flatMap((trigger) => ('topic' in trigger ? [trigger.topic] : [])),
      stateFilters: spec.triggers.flatMap((trigger) => ('state' in trigger ? [trigger.state] : [])),
      timers: [],
      pendingTicks: new Set(),
    }
    spec.triggers.forEach((trigger, index) => {
      const fire = () => tick(entry, index)
      if ('every' in trigger) {
        entry.timers.push({ stop: scheduler.every(parseDuration(trigger.every) as number, fire) })
      } else if ('cron' in trigger) {
        entry.timers.push({ stop: scheduler.cron(trigger.cron, trigger.timezone ?? 'UTC', fire) })
      }
    })
    let functions = active.get(tenantId)
    if (functions === undefined) {
      functions = new Map()
      active.set(tenantId, functions)
    }
    functions.set(name, entry)
  }

  const tick = (entry: Active, trigger: number): void => {
    if (closed || entry.pendingTicks.has(trigger)) return
    entry.pendingTicks.add(trigger)
    const at = now()
    enqueue({
      entry,
      handler: 'onSchedule',
      call: { args: [], info: infoOf(entry, at) },
      hops: 0,
      trigger,
      attempts: 0,
    })
  }

  const infoOf = (entry: Active, at: number) => ({
    name: entry.name,
    version: entry.version,
    config: entry.spec.config,
    now: at,
  })

  /** A tick that ran, or never will, lets the next tick of its trigger be queued. */
  const tickDone = (item: Item): void => {
    if (item.trigger !== undefined) item.entry.pendingTicks.delete(item.trigger)
  }

  /** Queues an invocation; `force` skips the queue's bounds (a replay of journaled work). */
  const enqueue = (item: Item, force = false): void => {
    const { entry } = item
    const lane = laneOf(entry.tenantId, entry.name)
    const bytes = item.payload?.length ?? 0
    if (!force && (lane.queue.length >= config.queueLimit || lane.queuedBytes + bytes > config.queueBytes)) {
      tickDone(item)
      fail(
        lane,
        item,
        'queue_full',
        `Cannot run function ${quote(entry.name)} on this input as ${lane.queue.length} invocations (${lane.queuedBytes} bytes) are waiting, the most functions.queueLimit and functions.queueBytes allow`,
      )
      return
    }
    useKey(entry.tenantId, entry.key, 1)
    if (item.seq !== undefined) lane.seqs.add(item.seq)
    lane.queue.push(item)
    lane.queuedBytes += bytes
    pump(lane)
  }

  /** Puts items back at the head of their lane, in order, and pauses it for `delayMs`. */
  const requeue = (lane: Lane, items: Item[], delayMs: number): void => {
    if (items.length === 0 || lane.removed) return
    for (const item of items) {
      useKey(lane.tenantId, item.entry.key, 1)
      lane.queuedBytes += item.payload?.length ?? 0
      if (item.trigger !== undefined) item.entry.pendingTicks.add(item.trigger)
    }
    lane.queue.unshift(...items)
    lane.pausedUntil = Math.max(lane.pausedUntil, performance.now() + delayMs)
  }

  /** Counts a failure and logs it. */
  const countFailure = (lane: Lane, item: Item, reason: string, message: string): void => {
    const at = now()
    lane.stats.errors++
    lane.stats.errorsByReason[reason] = (lane.stats.errorsByReason[reason] ?? 0) + 1
    lane.stats.lastError = { at, message }
    metrics.functionInvocation(lane.tenantId, lane.name, reason)
    log(lane, item.entry.version, 'error', message, at)
  }

  /** A failed invocation's dead letter: the message as the function saw it, the payload as it came. */
  const letterOf = (lane: Lane, item: Item, reason: string, message: string): DeadLetterInsert => {
    const msg = item.call.args[0] as Record<string, unknown> | undefined
    return {
      tenantId: lane.tenantId,
      function: lane.name,
      version: item.entry.version,
      message:
        msg === undefined || item.payload === undefined
          ? { handler: item.handler }
          : {
              handler: item.handler,
              message: { ...msg, payload: undefined, payloadBase64: item.payload.toString('base64') },
            },
      reason,
      error: message,
      createdAt: now(),
    }
  }

  /**
   * A failure outside a batch (a full queue, a chain too deep): counted and logged at once; its
   * dead letter is journaled with the others of this turn, in one write, and for a journaled
   * message together with the end of the work it was owed.
   */
  const fail = (lane: Lane, item: Item, reason: string, message: string): void => {
    countFailure(lane, item, reason, message)
    const letter = letterOf(lane, item, reason, message)
    if (pendingLetters.length === 0) setImmediate(flushLetters)
    pendingLetters.push({ letter, seq: item.seq })
  }
  const flushLetters = (): void => {
    const letters = pendingLetters
    pendingLetters = []
    if (letters.length === 0) return
    journal.write(
      () => {
        functionStore.insertDeadLetters(letters.map(({ letter }) => letter))
        for (const { letter, seq } of letters) {
          if (seq !== undefined) functionStore.completeWork(letter.tenantId, letter.function, seq)
        }
      },
      (error) => {
        if (error !== null) logger.error({ err: error, count: letters.length }, 'cannot store dead letters')
      },
    )
  }

  const pump = (lane: Lane): void => {
    if (lane.running > 0 || lane.queue.length === 0 || lane.removed) return
    const waitMs = lane.pausedUntil - performance.now()
    if (waitMs > 0) {
      if (lane.resume === undefined) {
        pausedLanes++
        lane.resume = setTimeout(() => {
          lane.resume = undefined
          pausedLanes--
          pump(lane)
          if (busyLanes === 0 && pausedLanes === 0) for (const resolve of idleWaiters.splice(0)) resolve()
        }, waitMs)
      }
      return
    }
    const first = lane.queue[0] as Item
    let count = 1
    while (
      count < lane.queue.length &&
      count < config.maxBatch &&
      (lane.queue[count] as Item).entry === first.entry &&
      (lane.queue[count] as Item).handler === first.handler
    ) {
      count++
    }
    const batch = lane.queue.splice(0, count)
    for (const item of batch) lane.queuedBytes -= item.payload?.length ?? 0
    lane.running = batch.length
    busyLanes++
    pool
      .invokeBatch(
        lane.tenantId,
        first.entry.key,
        first.handler,
        batch.map((item) => item.call),
        first.entry.spec.limits.timeoutMs,
      )
      .then(
        (outcomes) => settle(lane, batch, outcomes),
        (error: unknown) =>
          settle(
            lane,
            batch,
            batch.map(
              () => ({ ok: false, code: 'broken', message: (error as Error).message }) as CallOutcome,
            ),
          ),
      )
      .catch((error: unknown) => {
        logger.error(
          { err: error, tenant: lane.tenantId, function: lane.name },
          'cannot apply the results of a function; its batch runs again',
        )
        if (!closed) requeue(lane, batch, STORE_RETRY_MS)
      })
      .finally(() => {
        lane.running = 0
        busyLanes--
        for (const item of batch) useKey(lane.tenantId, item.entry.key, -1)
        pump(lane)
        if (admissions.length > 0) admitWaiting()
        if (busyLanes === 0 && pausedLanes === 0) for (const resolve of idleWaiters.splice(0)) resolve()
      })
  }

  /** What an invocation's outcome comes to, decided before anything is written. */
  type Plan =
    | { item: Item; kind: 'ok'; result: InvocationResult; publishes: Publish[] }
    | {
        item: Item
        kind: 'failed'
        code: string
        message: string
        /** The call ran and wrote state that later calls of its batch may have read; it is refused. */
        wroteState?: boolean
      }

  const planOf = (lane: Lane, item: Item, outcome: CallOutcome, maxPayloadBytes: number): Plan => {
    if (!outcome.ok) {
      return {
        item,
        kind: 'failed',
        code: outcome.code,
        message: clean(outcome.message, item.entry.key, lane.name),
      }
    }
    const result = outcome.result
    const publishes: Publish[] = []
    const output = item.entry.spec.output
    if (output !== null && result.value !== undefined) {
      publishes.push({ topic: output, payload: encodePayload(result.value), qos: 0, retain: false })
    }
    for (const publish of result.publishes) {
      publishes.push({
        topic: publish.topic,
        payload: encodePayload(publish.value),
        qos: publish.qos,
        retain: publish.retain,
      })
    }
    const tooLarge = publishes.find((publish) => publish.payload.length > maxPayloadBytes)
    if (tooLarge !== undefined) {
      return {
        item,
        kind: 'failed',
        code: 'bad_output',
        message: `Cannot publish to ${quote(tooLarge.topic)} as the payload of ${tooLarge.payload.length} bytes is over the tenant's maxPayloadBytes (${maxPayloadBytes})`,
        wroteState: result.state.length > 0,
      }
    }
    return { item, kind: 'ok', result, publishes }
  }

  /** Whether a failed invocation is tried again: what the function's code itself refused is not. */
  const retries = (plan: Plan): boolean =>
    plan.kind === 'failed' && plan.code !== 'bad_output' && plan.item.attempts < config.retries

  /**
   * Applies a batch's outcomes through the journal, in one transaction: for each invocation its
   * outbox records and the end of the work its message was owed (or its dead letter), and the
   * journal rows of its publishes that trigger functions. Publishes go to the broker after the
   * commit. Failures are tried again (`functions.retries`, with backoff) before they become dead
   * letters. When the commit itself fails, the batch waits and runs again.
   */
  const settle = (lane: Lane, batch: Item[], outcomes: CallOutcome[]): Promise<void> => {
    for (const item of batch) tickDone(item)
    if (lane.removed) return Promise.resolve() // the function is deleted, with the work it owed
    const quotas = options.quotas(lane.tenantId)
    if (quotas === undefined) return Promise.resolve() // the tenant is gone, with its journal
    const plans = batch.map((item, index) =>
      planOf(
        lane,
        item,
        outcomes[index] ?? { ok: false, code: 'broken', message: 'The sandbox gave no answer' },
        quotas.maxPayloadBytes,
      ),
    )
    // A call that runs again holds back the calls after it, so the function sees them in order:
    // only the calls before the first retried one are settled now.
    const cut = plans.findIndex(retries)
    const again = cut === -1 ? [] : [batch[cut] as Item]
    const later = cut === -1 ? [] : batch.slice(cut + 1)
    const final = cut === -1 ? plans : plans.slice(0, cut)
    // Filled by the journal's work, which may run twice (a failed group is retried write by write).
    let chained: Routed = { items: [], refusals: [] }
    let refused = new Map<Item, { code: string; message: string }>()
    /**
     * Calls after a refused call that wrote state: they may have read its writes (a batch's calls
     * see the writes of its earlier successful ones), so they run again on the committed state.
     */
    let rerun = new Set<Item>()
    return new Promise((resolve) => {
      journal.write(
        () => {
          chained = { items: [], refusals: [] }
          refused = new Map()
          rerun = new Set()
          // Deleted since the batch ran: its work went with it, and so do its results.
          if (lane.removed) return
          let tainted = false
          const letters: DeadLetterInsert[] = []
          for (const plan of final) {
            const { item } = plan
            if (tainted && plan.kind === 'ok') {
              rerun.add(item)
              continue
            }
            if (plan.kind === 'failed' && plan.wroteState === true) tainted = true
            if (plan.kind === 'ok') {
              try {
                // A savepoint: the invocation's effects are written whole or not at all.
                const own = functionStore.transaction(() => {
                  const changes = stateStore.apply(
                    lane.tenantId,
                    lane.name,
                    plan.result.state,
                    plan.result.leases,
                    quotas,
                  )
                  writeEffects(lane, quotas, plan.result)
                  // What the writes trigger is journaled with them, whatever the invocation's origin.
                  const routed = journalStateRoute(lane.tenantId, changes, item.hops + 1)
                  if (item.seq === undefined) return routed
                  for (const publish of plan.publishes) {
                    const next = journalRoute(lane.tenantId, publish, item.hops + 1)
                    routed.items.push(...next.items)
                    routed.refusals.push(...next.refusals)
                  }
                  functionStore.completeWork(lane.tenantId, lane.name, item.seq)
                  return routed
                })
                chained.items.push(...own.items)
                chained.refusals.push(...own.refusals)
                continue
              } catch (error) {
                const code = effectFailure(error)
                if (code === undefined) throw error
                refused.set(item, { code, message: (error as Error).message })
                if (plan.result.state.length > 0) tainted = true
              }
            }
            const why = refused.get(item) ?? (plan.kind === 'failed' ? plan : undefined)
            if (why === undefined) continue
            letters.push(letterOf(lane, item, why.code, why.message))
            if (item.seq !== undefined) functionStore.completeWork(lane.tenantId, lane.name, item.seq)
          }
          for (const { lane: next, item, message } of chained.refusals) {
            letters.push(letterOf(next, item, 'chain_too_deep', message))
          }
          functionStore.insertDeadLetters(letters)
        },
        (error) => {
          try {
            applied(error)
          } finally {
            resolve()
          }
        },
      )
      /** After the commit (or its failure): figures, logs, publishes, and what runs again. */
      function applied(error: Error | null): void {
        if (lane.removed) return
        if (error !== null) {
          // Nothing was written: the whole batch runs again once the store takes writes.
          logger.error(
            { err: error, tenant: lane.tenantId, function: lane.name },
            'cannot journal the results of a function; its batch runs again',
          )
          // When closing, the work stays owed in the journal and runs after the restart.
          if (!closed) requeue(lane, batch, STORE_RETRY_MS)
          return
        }
        for (const plan of final) {
          if (rerun.has(plan.item)) continue
          if (plan.item.seq !== undefined) lane.seqs.delete(plan.item.seq)
          const why = refused.get(plan.item) ?? (plan.kind === 'failed' ? plan : undefined)
          if (why !== undefined) {
            countFailure(lane, plan.item, why.code, why.message)
            continue
          }
          if (plan.kind !== 'ok') continue
          succeeded(lane, plan.item, plan.result)
          for (const publish of plan.publishes) {
            broker.publish(lane.tenantId, publish.topic, publish.payload, publish.qos, publish.retain)
            // What an unjournaled invocation publishes triggers functions unjournaled, at once.
            if (plan.item.seq === undefined) {
              const next = route(lane.tenantId, publish, plan.item.hops + 1)
              for (const refusal of next.refusals)
                fail(refusal.lane, refusal.item, 'chain_too_deep', refusal.message)
              for (const item of next.items) enqueue(item)
            }
          }
        }
        for (const refusal of chained.refusals) {
          countFailure(refusal.lane, refusal.item, 'chain_too_deep', refusal.message)
        }
        // Journaled: they run, whatever the queues hold (the device's messages wait for room).
        for (const item of chained.items) enqueue(item, true)
        for (const item of again) {
          item.attempts++
          const plan = plans.find((candidate) => candidate.item === item)
          if (plan?.kind === 'failed') {
            log(
              lane,
              item.entry.version,
              'error',
              `${plan.message} (attempt ${item.attempts} of ${config.retries + 1}; it runs again)`,
            )
          }
        }
        // What runs again goes back to the head of the queue in its order, after a retry's backoff.
        const back = batch.filter((item) => again.includes(item) || later.includes(item) || rerun.has(item))
        const attempt = Math.max(0, ...again.map((item) => item.attempts))
        requeue(lane, back, attempt === 0 ? 0 : config.retryBackoffMs * 2 ** (attempt - 1))
      }
    })
  }

  /** Writes an invocation's effects (inside the journal's transaction): its outbox records. */
  const writeEffects = (lane: Lane, quotas: Quotas, result: InvocationResult): void => {
    if (result.emits.length === 0) return
    outbox.append(
      lane.tenantId,
      quotas,
      result.emits.map((emit) => ({ function: lane.name, stream: emit.stream, record: emit.record })),
    )
  }

  /** The failure code of an effect refused for the invocation's own sake (a bound); else undefined. */
  const effectFailure = (error: unknown): string | undefined =>
    error instanceof OutboxFullError
      ? 'outbox_full'
      : error instanceof StateQuotaError
        ? 'state_quota'
        : error instanceof StateWriteError
          ? 'bad_state'
          : undefined

  /** Counts and logs a successful invocation. */
  const succeeded = (lane: Lane, item: Item, result: InvocationResult): void => {
    lane.stats.invocations++
    const ring = lane.stats.durations
    if (ring.length < RECENT_DURATIONS) ring.push(result.durationMs)
    else ring[lane.stats.next++ % RECENT_DURATIONS] = result.durationMs
    metrics.functionInvocation(lane.tenantId, lane.name, 'ok', result.durationMs)
    for (const line of result.logs) log(lane, item.entry.version, 'log', line)
  }

  /**
   * The invocations a message triggers, and the refusals of those it may not (the message passed
   * through too many functions). Counts nothing: the caller decides when the refusals count.
   */
  const route = (tenantId: string, message: RoutedMessage, hops: number): Routed => {
    const routed: Routed = { items: [], refusals: [] }
    const functionsOfTenant = active.get(tenantId)
    // Not stopped by close(): the lanes drain then, and what their results trigger is journaled.
    if (functionsOfTenant === undefined) return routed
    const receivedAt = message.receivedAt ?? now()
    let decoded: { value: unknown } | undefined
    for (const entry of functionsOfTenant.values()) {
      if (!entry.filters.some((filter) => filterCovers(filter, message.topic))) continue
      decoded ??= { value: decodePayload(message.payload) }
      admit(routed, itemOf(entry, message, decoded.value, receivedAt, hops, undefined), quote(message.topic))
    }
    return routed
  }

  /** Adds an invocation to what a message triggers, or its refusal past the chain depth. */
  const admit = (routed: Routed, item: Item, what: string): void => {
    if (item.hops < config.maxChainDepth) {
      routed.items.push(item)
      return
    }
    const { entry } = item
    routed.refusals.push({
      lane: laneOf(entry.tenantId, entry.name),
      item,
      message: `Cannot run function ${quote(entry.name)} on ${what} as it comes from ${item.hops} functions in a row, the most functions.maxChainDepth allows`,
    })
  }

  /** An `onMessage` invocation of `entry` on a message. */
  const itemOf = (
    entry: Active,
    message: RoutedMessage,
    payload: unknown,
    receivedAt: number,
    hops: number,
    seq: number | undefined,
  ): Item => ({
    entry,
    handler: 'onMessage',
    call: {
      args: [
        {
          topic: message.topic,
          payload,
          qos: message.qos,
          retain: message.retain,
          device: message.deviceId ?? null,
          ts: receivedAt,
        },
      ],
      info: infoOf(entry, receivedAt),
    },
    payload: message.payload,
    hops,
    attempts: 0,
    ...(seq === undefined ? {} : { seq }),
  })

  /**
   * Journals a message that triggers functions (inside the journal's transaction) and returns the
   * invocations it owes, each with the message's sequence number. A chain too deep is refused here.
   */
  const journalRoute = (tenantId: string, message: RoutedMessage, hops: number): Routed => {
    const routed = route(tenantId, message, hops)
    const { items } = routed
    if (items.length === 0) return routed
    const seq = functionStore.insertInbox({
      tenantId,
      topic: message.topic,
      payload: message.payload,
      qos: message.qos,
      retain: message.retain,
      deviceId: message.deviceId ?? null,
      receivedAt: message.receivedAt ?? now(),
      hops,
    })
    for (const item of items) {
      item.seq = seq
      functionStore.insertWork(tenantId, item.entry.name, seq)
    }
    return routed
  }

  /**
   * The broker's handler: a device's message that triggers functions is journaled (QoS 1/2, and
   * QoS 0 with `durability.journalQos0`) before `done` lets the broker acknowledge it; its
   * invocations are queued after the commit. A resend of a message already journaled is only
   * acknowledged. Acknowledgements keep the order the messages came in.
   */
  const handleMessage = (message: BrokerMessage, done: (error: Error | null) => void): void => {
    const { source } = message
    if (source?.connection.refused === true) {
      done(new Error('Cannot accept the publish as an earlier message of this connection was refused'))
      return
    }
    const durable = journalMessages && (message.qos > 0 || journalQos0)
    if (!durable) {
      const { items } = route(message.tenantId, message, 0)
      const run = () => {
        for (const item of items) enqueue(item)
      }
      if (journal.pending === 0) {
        run()
        done(null)
      } else {
        journal.write(null, (error) => {
          if (error === null) run()
          done(error)
        })
      }
      return
    }
    const admission: Admission = { message, done, deadline: performance.now() + config.backpressureWaitMs }
    if (admissions.length === 0 && fullLane(message) === undefined) journalMessage(admission)
    else {
      admissions.push(admission)
      admitWaiting()
    }
  }

  /**
   * Journals a device's message and queues its invocations (never refused for a full queue: what
   * is acknowledged runs). Its admission made sure the queues had room.
   */
  const journalMessage = ({ message, done }: Admission): void => {
    const { source } = message
    let items: Item[] = []
    let resend = false
    let forget = false
    // Counted in its functions' queues from now: the messages of one socket read arrive together.
    const reserved = lanesOf(message)
    for (const lane of reserved) {
      lane.reserved++
      lane.reservedBytes += message.payload.length
    }
    journal.write(
      () => {
        items = []
        resend = false
        // The functions it triggers were matched at admission (`reserved`); none, nothing to keep.
        if (source === undefined || reserved.length === 0) {
          items = journalRoute(message.tenantId, message, 0).items
          return
        }
        const digest = publishIds.digest(message.topic, message.qos, message.retain, message.payload)
        // Checked in the transaction, after every earlier write of the client has committed. Only
        // messages that are journaled have their ids kept, so only they can end the resends.
        if (source.connection.resending) {
          if (publishIds.isResend(message.tenantId, source, digest)) {
            resend = true
            return
          }
          source.connection.resending = false
          forget = true
        }
        items = journalRoute(message.tenantId, message, 0).items
        publishIds.record(message.tenantId, source, digest)
        if (forget) publishIds.forgetEarlier(message.tenantId, source)
      },
      (error) => {
        for (const lane of reserved) {
          lane.reserved--
          lane.reservedBytes -= message.payload.length
        }
        if (error !== null) {
          if (source !== undefined) source.connection.refused = true
          done(error)
          return
        }
        if (!resend) for (const item of items) enqueue(item, true)
        done(null)
      },
    )
  }

  /** The queues of the functions a message triggers. */
  const lanesOf = (message: BrokerMessage): Lane[] => {
    const found: Lane[] = []
    for (const entry of active.get(message.tenantId)?.values() ?? []) {
      if (entry.filters.some((filter) => filterCovers(filter, message.topic))) {
        found.push(laneOf(entry.tenantId, entry.name))
      }
    }
    return found
  }

  /** The first queue of a function the message triggers that is at its bound; undefined when none is. */
  const fullLane = (message: BrokerMessage): Lane | undefined =>
    lanesOf(message).find(
      (lane) =>
        lane.queue.length + lane.reserved >= config.queueLimit ||
        lane.queuedBytes + lane.reservedBytes >= config.queueBytes,
    )

  /**
   * Back-pressure: device messages whose functions' queues are full wait, in arrival order, for
   * room (a batch that ends makes some), up to `functions.backpressureWaitMs`; then they are
   * refused, unacknowledged, and the device sends them again after reconnecting. A message that
   * waits holds back those that came after it, so acknowledgements keep their order.
   */
  const admitWaiting = (): void => {
    if (admissionTimer !== undefined) {
      clearTimeout(admissionTimer)
      admissionTimer = undefined
    }
    while (admissions.length > 0) {
      const head = admissions[0] as Admission
      if (head.message.source?.connection.refused === true) {
        admissions.shift()
        head.done(new Error('Cannot accept the publish as an earlier message of this connection was refused'))
        continue
      }
      const full = closed ? undefined : fullLane(head.message)
      if (full !== undefined && performance.now() < head.deadline) {
        admissionTimer = setTimeout(admitWaiting, head.deadline - performance.now())
        return
      }
      admissions.shift()
      if (full === undefined) {
        journalMessage(head)
        continue
      }
      const logKey = `${head.message.tenantId}\u0000${full.name}`
      const entry = refusalLog.get(logKey) ?? { lastAt: Number.NEGATIVE_INFINITY, refused: 0 }
      entry.refused++
      refusalLog.set(logKey, entry)
      if (performance.now() - entry.lastAt >= REFUSAL_LOG_INTERVAL_MS) {
        logger.warn(
          {
            tenant: head.message.tenantId,
            function: full.name,
            topic: head.message.topic,
            refused: entry.refused,
          },
          'a function cannot keep up: device messages are refused until its queue has room (refused: since the last such warning)',
        )
        entry.lastAt = performance.now()
        entry.refused = 0
      }
      if (head.message.source !== undefined) head.message.source.connection.refused = true
      head.done(
        new Error(
          `Cannot accept the publish as function '${full.name}' has ${full.queue.length} invocations waiting, the most functions.queueLimit and functions.queueBytes allow`,
        ),
      )
    }
  }

  /** The invocations of `onState` that state changes trigger, and those past the chain depth. */
  const routeState = (tenantId: string, changes: readonly StateChange[], hops: number): Routed => {
    const routed: Routed = { items: [], refusals: [] }
    const functionsOfTenant = active.get(tenantId)
    if (functionsOfTenant === undefined || changes.length === 0) return routed
    const at = now()
    for (const change of changes) {
      for (const entry of functionsOfTenant.values()) {
        if (!entry.stateFilters.some((filter) => namespaceCovers(filter, change.namespace))) continue
        const item = stateItemOf(entry, change, at, hops, undefined)
        admit(routed, item, `a change to state namespace ${quote(change.namespace)}`)
      }
    }
    return routed
  }

  /** An `onState` invocation; its journal row carries the change, under `$state/NAMESPACE`. */
  const stateItemOf = (
    entry: Active,
    change: Pick<StateChange, 'namespace' | 'key' | 'op' | 'value'>,
    at: number,
    hops: number,
    seq: number | undefined,
  ): Item => ({
    entry,
    handler: 'onState',
    call: {
      args: [
        {
          namespace: change.namespace,
          key: change.key,
          op: change.op,
          value: change.value === null ? null : (JSON.parse(change.value) as unknown),
        },
      ],
      info: infoOf(entry, at),
    },
    payload: Buffer.from(
      JSON.stringify({ namespace: change.namespace, key: change.key, op: change.op, value: change.value }),
    ),
    hops,
    attempts: 0,
    ...(seq === undefined ? {} : { seq }),
  })

  /** Journals the `onState` invocations of state changes (inside the journal's transaction). */
  const journalStateRoute = (tenantId: string, changes: readonly StateChange[], hops: number): Routed => {
    const routed = routeState(tenantId, changes, hops)
    for (const item of routed.items) {
      const { namespace } = item.call.args[0] as { namespace: string }
      item.seq = functionStore.insertInbox({
        tenantId,
        topic: `${STATE_TOPIC}${namespace}`,
        payload: item.payload as Buffer,
        qos: 0,
        retain: false,
        deviceId: null,
        receivedAt: item.call.info.now,
        hops,
      })
      functionStore.insertWork(tenantId, item.entry.name, item.seq)
    }
    return routed
  }

  /** Queues the journaled work a function still owes (after a restart, or when it is enabled again). */
  const replay = (tenantId?: string, name?: string): number => {
    let count = 0
    for (const work of functionStore.pendingWork(tenantId, name)) {
      const entry = active.get(work.tenantId)?.get(work.function)
      if (entry === undefined) continue // disabled or not loaded: owed until it runs again
      if (lanes.get(id(work.tenantId, work.function))?.seqs.has(work.seq)) continue // queued already
      const item = work.topic.startsWith(STATE_TOPIC)
        ? stateItemOf(
            entry,
            JSON.parse(work.payload.toString('utf8')) as StateChange,
            work.receivedAt,
            work.hops,
            work.seq,
          )
        : itemOf(entry, work, decodePayload(work.payload), work.receivedAt, work.hops, work.seq)
      enqueue(item, true)
      count++
    }
    return count
  }

  const percentile = (values: number[], q: number): number | null => {
    if (values.length === 0) return null
    const sorted = [...values].sort((a, b) => a - b)
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number
  }

  const viewOf = (fn: FunctionRecord): FunctionView => {
    const version = requireVersion(fn.tenantId, fn.name, fn.currentVersion)
    const lane = lanes.get(id(fn.tenantId, fn.name))
    const problem = failed.get(id(fn.tenantId, fn.name)) ?? null
    const stats = lane?.stats
    return {
      name: fn.name,
      version: fn.currentVersion,
      latestVersion: fn.latestVersion,
      enabled: fn.enabled,
      state: !fn.enabled ? 'disabled' : problem !== null ? 'failed' : 'running',
      problem,
      triggers: version.spec.triggers,
      output: version.spec.output,
      limits: version.spec.limits,
      config: version.spec.config,
      createdAt: new Date(fn.createdAt).toISOString(),
      updatedAt: new Date(fn.updatedAt).toISOString(),
      stats: {
        invocations: stats?.invocations ?? 0,
        errors: stats?.errors ?? 0,
        errorsByReason: { ...(stats?.errorsByReason ?? {}) },
        lastError:
          stats?.lastError == null
            ? null
            : { at: new Date(stats.lastError.at).toISOString(), message: stats.lastError.message },
        queued: (lane?.queue.length ?? 0) + (lane?.running ?? 0),
        p50Ms: percentile(stats?.durations ?? [], 0.5),
        p99Ms: percentile(stats?.durations ?? [], 0.99),
      },
    }
  }

  /** Loads a version and makes it current, or records why it could not be loaded. */
  const load = async (fn: FunctionRecord): Promise<void> => {
    const version = requireVersion(fn.tenantId, fn.name, fn.currentVersion)
    try {
      const key = await compile(fn.tenantId, fn.name, version.source, version.spec)
      activate(fn.tenantId, fn.name, version.version, key, version.spec)
    } catch (error) {
      const message = `Cannot load version ${version.version}: ${(error as Error).message}`
      failed.set(id(fn.tenantId, fn.name), message)
      log(laneOf(fn.tenantId, fn.name), version.version, 'error', message)
      logger.error({ tenant: fn.tenantId, function: fn.name, version: version.version }, message)
    }
  }

  /** Compiles a stored version into the tenant's sandbox, then runs `store`; undoes the compile if that throws. */
  const swapIn = async <T>(
    tenantId: string,
    name: string,
    version: FunctionVersion,
    store: () => T,
  ): Promise<T> => {
    const key = await compile(tenantId, name, version.source, version.spec)
    let stored: T
    try {
      stored = store()
    } catch (error) {
      retire(tenantId, key)
      throw error
    }
    activate(tenantId, name, version.version, key, version.spec)
    return stored
  }

  const limitError = (field: string, message: string) =>
    new GatewayError(GATEWAY_ERROR_CODES.invalidInput, message, { field })

  const specOf = (tenantId: string, request: DeployRequest, quotas: Quotas): FunctionSpec => {
    const memoryMb = request.limits?.memoryMb ?? Math.min(config.defaultMemoryMb, quotas.maxFunctionMemoryMb)
    const timeoutMs =
      request.limits?.timeoutMs ?? Math.min(config.defaultTimeoutMs, quotas.maxFunctionTimeoutMs)
    if (memoryMb > quotas.maxFunctionMemoryMb) {
      throw limitError(
        'limits.memoryMb',
        `Cannot deploy with limits.memoryMb ${memoryMb} as tenant ${quote(tenantId)} allows at most ${quotas.maxFunctionMemoryMb} (quota maxFunctionMemoryMb)`,
      )
    }
    if (memoryMb > config.tenantMemoryMb - 16) {
      throw limitError(
        'limits.memoryMb',
        `Cannot deploy with limits.memoryMb ${memoryMb} as a tenant's sandbox holds ${config.tenantMemoryMb} MiB (functions.tenantMemoryMb), of which QuickJS itself takes 16`,
      )
    }
    if (timeoutMs > quotas.maxFunctionTimeoutMs) {
      throw limitError(
        'limits.timeoutMs',
        `Cannot deploy with limits.timeoutMs ${timeoutMs} as tenant ${quote(tenantId)} allows at most ${quotas.maxFunctionTimeoutMs} (quota maxFunctionTimeoutMs)`,
      )
    }
    return {
      triggers: request.triggers,
      output: request.output ?? null,
      limits: { memoryMb, timeoutMs },
      config: request.config ?? {},
    }
  }

  /** A kept version's limits against the tenant's quotas now (they may have been lowered since). */
  const checkLimits = (tenantId: string, version: FunctionVersion, quotas: Quotas): void => {
    const { memoryMb, timeoutMs } = version.spec.limits
    if (memoryMb <= quotas.maxFunctionMemoryMb && timeoutMs <= quotas.maxFunctionTimeoutMs) return
    throw new GatewayError(
      GATEWAY_ERROR_CODES.invalidInput,
      `Cannot run version ${version.version} as its limits (${memoryMb} MiB, ${timeoutMs} ms) exceed tenant ${quote(tenantId)}'s quotas now (maxFunctionMemoryMb ${quotas.maxFunctionMemoryMb}, maxFunctionTimeoutMs ${quotas.maxFunctionTimeoutMs}); deploy it again with lower limits`,
    )
  }

  const checkFunctionCount = (tenantId: string, name: string, quotas: Quotas): void => {
    if (functionStore.get(tenantId, name) !== undefined) return
    if (functionStore.list(tenantId).length < quotas.maxFunctions) return
    throw new GatewayError(
      GATEWAY_ERROR_CODES.limitReached,
      `Cannot deploy function ${quote(name)} as tenant ${quote(tenantId)} has ${quotas.maxFunctions} functions (quota maxFunctions)`,
    )
  }

  /**
   * Checks a deploy against the tenant's quotas, then compiles it (running its top-level code) in
   * the scratch sandbox, so a source that fails there changes nothing, not even the running
   * copies' sandbox. Returns the version's spec.
   */
  const validate = async (tenantId: string, request: DeployRequest): Promise<FunctionSpec> => {
    const quotas = requireTenant(tenantId)
    checkFunctionCount(tenantId, request.name, quotas)
    const spec = specOf(tenantId, request, quotas)
    await withScratch(tenantId, async (sandboxId) => {
      const key = await compile(sandboxId, request.name, request.source, spec)
      await pool.remove(sandboxId, key).catch(() => {})
    })
    return spec
  }

  const functions: Functions = {
    async start() {
      for (const fn of functionStore.listAll()) if (fn.enabled) await load(fn)
      // Journaled work left by the last run: what was acknowledged and not yet done runs first.
      const replayed = replay()
      if (replayed > 0) logger.info({ invocations: replayed }, 'replaying journaled messages')
    },

    check: async (tenantId, request) => {
      await validate(tenantId, request)
    },

    deploy: (tenantId, request) =>
      exclusive(tenantId, request.name, async () => {
        const spec = await validate(tenantId, request)
        const existing = functionStore.get(tenantId, request.name)
        const enabled = request.enabled ?? existing?.enabled ?? true
        const key = enabled ? await compile(tenantId, request.name, request.source, spec) : undefined
        let stored: ReturnType<FunctionStore['deploy']>
        try {
          // Checked again now: other functions of the tenant may have been deployed meanwhile.
          checkFunctionCount(tenantId, request.name, requireTenant(tenantId))
          stored = functionStore.deploy(
            tenantId,
            request.name,
            request.source,
            spec,
            enabled,
            config.keepVersions,
          )
        } catch (error) {
          if (key !== undefined) retire(tenantId, key)
          throw error
        }
        if (key !== undefined) {
          activate(tenantId, request.name, stored.version.version, key, spec)
          // Work journaled for it while it was disabled or failed to load runs now.
          replay(tenantId, request.name)
        } else deactivate(tenantId, request.name)
        log(
          laneOf(tenantId, request.name),
          stored.version.version,
          'log',
          `deployed version ${stored.version.version}`,
        )
        return viewOf(stored.fn)
      }),

    rollback: (tenantId, name, version) =>
      exclusive(tenantId, name, async () => {
        const quotas = requireTenant(tenantId)
        const fn = requireFunction(tenantId, name)
        const target = requireVersion(tenantId, name, version)
        checkLimits(tenantId, target, quotas)
        const store = () => functionStore.setCurrent(tenantId, name, version)
        const updated = fn.enabled ? await swapIn(tenantId, name, target, store) : store()
        log(laneOf(tenantId, name), version, 'log', `rolled back to version ${version}`)
        return viewOf(updated)
      }),

    setEnabled: (tenantId, name, enabled) =>
      exclusive(tenantId, name, async () => {
        const quotas = requireTenant(tenantId)
        const fn = requireFunction(tenantId, name)
        const store = () => functionStore.setEnabled(tenantId, name, enabled)
        let updated: FunctionRecord
        if (enabled && !active.get(tenantId)?.has(name)) {
          const current = requireVersion(tenantId, name, fn.currentVersion)
          checkLimits(tenantId, current, quotas)
          updated = await swapIn(tenantId, name, current, store)
          replay(tenantId, name)
        } else {
          if (!enabled) deactivate(tenantId, name)
          updated = store()
        }
        log(laneOf(tenantId, name), fn.currentVersion, 'log', enabled ? 'enabled' : 'disabled')
        return viewOf(updated)
      }),

    remove: (tenantId, name) =>
      exclusive(tenantId, name, async () => {
        requireTenant(tenantId)
        requireFunction(tenantId, name)
        deactivate(tenantId, name)
        functionStore.delete(tenantId, name)
        failed.delete(id(tenantId, name))
        dropLane(tenantId, name)
      }),

    async removeTenant(tenantId) {
      for (const name of [...(active.get(tenantId)?.keys() ?? [])]) deactivate(tenantId, name)
      for (const lane of [...lanes.values()]) if (lane.tenantId === tenantId) dropLane(tenantId, lane.name)
      for (const at of failed.keys()) if (at.startsWith(`${tenantId}\u0000`)) failed.delete(at)
      await pool.removeTenant(tenantId)
    },

    view(tenantId, name) {
      requireTenant(tenantId)
      return viewOf(requireFunction(tenantId, name))
    },
    list(tenantId) {
      requireTenant(tenantId)
      return functionStore.list(tenantId).map(viewOf)
    },
    versions(tenantId, name) {
      requireTenant(tenantId)
      return functionStore.versions(tenantId, name)
    },

    async testInvoke(tenantId, name, request) {
      requireTenant(tenantId)
      const fn = requireFunction(tenantId, name)
      const version = requireVersion(tenantId, name, request.version ?? fn.currentVersion)
      const handlers = handlersOf(version.spec)
      const handler = request.handler ?? (handlers[0] as HandlerName)
      if (!handlers.includes(handler)) {
        throw new GatewayError(
          GATEWAY_ERROR_CODES.invalidInput,
          `Cannot run ${handler}() of function ${quote(name)} as version ${version.version} has no trigger that calls it`,
          { field: 'handler' },
        )
      }
      if ((scratchUsers.get(tenantId) ?? 0) >= MAX_TEST_INVOCATIONS) {
        throw new GatewayError(
          GATEWAY_ERROR_CODES.limitReached,
          `Cannot run a test invocation as tenant ${quote(tenantId)} has ${MAX_TEST_INVOCATIONS} running; try again when they finish`,
        )
      }
      const sample = request.message ?? {}
      const ts = sample.ts ?? now()
      const payload =
        sample.payloadBase64 !== undefined
          ? decodePayload(Buffer.from(sample.payloadBase64, 'base64'))
          : (sample.payload ?? null)
      const args =
        handler === 'onMessage'
          ? [
              {
                topic: sample.topic ?? firstTopic(version.spec),
                payload,
                qos: sample.qos ?? 0,
                retain: sample.retain ?? false,
                device: sample.device ?? 'test-device',
                ts,
              },
            ]
          : []
      const info = { name, version: version.version, config: version.spec.config, now: ts }
      // A throwaway copy in the scratch sandbox: neither the running copy's module state nor its
      // sandbox is touched, whatever the sample makes the function do.
      return withScratch(tenantId, async (sandboxId): Promise<TestInvocation> => {
        let key: string
        try {
          key = await compile(sandboxId, name, version.source, version.spec)
        } catch (error) {
          if (!(error instanceof GatewayError) || error.code !== 'invalid_input') throw error
          return {
            ok: false,
            version: version.version,
            handler,
            error: { code: 'invalid_function', message: error.message },
          }
        }
        let result: InvocationResult
        try {
          result = await pool.invoke(sandboxId, key, handler, args, info, version.spec.limits.timeoutMs)
        } catch (error) {
          if (!(error instanceof SandboxError)) throw error
          return {
            ok: false,
            version: version.version,
            handler,
            error: { code: error.code, message: clean(error.message, key, name) },
          }
        }
        const text = (value: unknown) => encodePayload(value).toString('utf8')
        // The same bound a live run applies before anything is published (see settle()).
        const maxPayloadBytes = requireTenant(tenantId).maxPayloadBytes
        const published = [
          ...(version.spec.output !== null && result.value !== undefined
            ? [{ topic: version.spec.output, value: result.value }]
            : []),
          ...result.publishes,
        ]
        const tooLarge = published.find((publish) => encodePayload(publish.value).length > maxPayloadBytes)
        if (tooLarge !== undefined) {
          const bytes = encodePayload(tooLarge.value).length
          return {
            ok: false,
            version: version.version,
            handler,
            error: {
              code: 'bad_output',
              message: `Cannot publish to ${quote(tooLarge.topic)} as the payload of ${bytes} bytes is over the tenant's maxPayloadBytes (${maxPayloadBytes})`,
            },
          }
        }
        return {
          ok: true,
          version: version.version,
          handler,
          value:
            result.value instanceof Uint8Array
              ? { base64: Buffer.from(result.value).toString('base64') }
              : result.value,
          output:
            version.spec.output !== null && result.value !== undefined
              ? { topic: version.spec.output, payload: text(result.value) }
              : null,
          publishes: result.publishes.map((publish) => ({
            topic: publish.topic,
            payload: text(publish.value),
            qos: publish.qos,
            retain: publish.retain,
          })),
          emits: result.emits.map((emit) => ({ stream: emit.stream, record: emit.record })),
          state: result.state.map(({ value, ...write }) => ({
            ...write,
            ...(value === undefined ? {} : { value: JSON.parse(value) as unknown }),
          })),
          leases: result.leases,
          logs: result.logs,
          durationMs: result.durationMs,
          memoryBytes: result.memoryBytes,
        }
      })
    },

    logs(tenantId, name) {
      requireTenant(tenantId)
      requireFunction(tenantId, name)
      return [...(lanes.get(id(tenantId, name))?.logs ?? [])]
    },
    followLogs(tenantId, name, listener) {
      requireTenant(tenantId)
      requireFunction(tenantId, name)
      const lane = laneOf(tenantId, name)
      lane.listeners.add(listener)
      return () => lane.listeners.delete(listener)
    },

    handleMessage,

    stateChanged(tenantId, changes) {
      const { items } = journalStateRoute(tenantId, changes, 0)
      return () => {
        for (const item of items) enqueue(item, true)
      }
    },

    replayDeadLetters: (tenantId, request) =>
      new Promise((resolve, reject) => {
        requireTenant(tenantId)
        if (request.name !== undefined) requireFunction(tenantId, request.name)
        let items: Item[] = []
        let skipped = 0
        journal.write(
          () => {
            items = []
            skipped = 0
            const runnable = (letter: DeadLetter) =>
              active.get(tenantId)?.has(letter.function) === true && replayable(letter.message) !== undefined
            const letters = functionStore.takeDeadLetters(tenantId, request.name, request.ids, (letter) => {
              if (runnable(letter)) return true
              skipped++
              return false
            })
            for (const letter of letters) {
              const entry = active.get(tenantId)?.get(letter.function) as Active
              const message = replayable(letter.message) as ReplayedMessage
              const seq = functionStore.insertInbox({ tenantId, ...message, hops: 0 })
              functionStore.insertWork(tenantId, entry.name, seq)
              items.push(itemOf(entry, message, decodePayload(message.payload), message.receivedAt, 0, seq))
            }
          },
          (error) => {
            if (error !== null) {
              reject(error)
              return
            }
            for (const item of items) enqueue(item, true)
            resolve({ replayed: items.length, skipped })
          },
        )
      }),

    idle() {
      if (busyLanes === 0 && pausedLanes === 0 && journal.pending === 0) return Promise.resolve()
      if (busyLanes === 0 && pausedLanes === 0) {
        return new Promise((resolve) => journal.write(null, () => resolve(functions.idle())))
      }
      return new Promise((resolve) => idleWaiters.push(resolve))
    },

    async close() {
      if (closed) return
      closed = true
      for (const functionsOfTenant of active.values()) {
        for (const entry of functionsOfTenant.values()) for (const timer of entry.timers) timer.stop()
      }
      if (admissionTimer !== undefined) clearTimeout(admissionTimer)
      for (const waiting of admissions.splice(0)) {
        waiting.done(new Error('Cannot accept the publish as the gateway is shutting down'))
      }
      await functions.idle()
      for (const lane of lanes.values()) {
        if (lane.resume !== undefined) clearTimeout(lane.resume)
        lane.resume = undefined
      }
      flushLetters()
      journal.flush()
    },
    [Symbol.asyncDispose]: () => functions.close(),
  }
  return functions
}

/** A dead letter's message as it is journaled again; ticks have none. */
type ReplayedMessage = Required<RoutedMessage> & { deviceId: string | null }

/** The message of a dead letter of `onMessage`, read back from what {@link letterOf} kept. */
function replayable(kept: unknown): ReplayedMessage | undefined {
  if (typeof kept !== 'object' || kept === null) return undefined
  const { handler, message } = kept as { handler?: unknown; message?: unknown }
  if (handler !== 'onMessage' || typeof message !== 'object' || message === null) return undefined
  const { topic, payloadBase64, qos, retain, device, ts } = message as Record<string, unknown>
  if (typeof topic !== 'string' || typeof payloadBase64 !== 'string') return undefined
  return {
    topic,
    payload: Buffer.from(payloadBase64, 'base64'),
    qos: qos === 1 || qos === 2 ? qos : 0,
    retain: retain === true,
    deviceId: typeof device === 'string' ? device : null,
    receivedAt: typeof ts === 'number' && Number.isFinite(ts) ? ts : Date.now(),
  }
}

/** A topic for a sample message: the first trigger filter with its wildcards filled in. */
function firstTopic(spec: FunctionSpec): string {
  const filter = spec.triggers.find((trigger) => 'topic' in trigger)
  if (filter === undefined || !('topic' in filter)) return 'test'
  return filter.topic
    .split('/')
    .map((level) => (level === '+' || level === '#' ? 'test' : level))
    .join('/')
}
