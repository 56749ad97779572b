import { availableParallelism } from 'node:os'
import type { Worker } from 'node:worker_threads'
import { SANDBOX_ERROR_CODES, SandboxError } from './errors.ts'
import { startModuleWorker } from './module-worker.ts'
import { sharedClockNow } from './shared-clock.ts'
import type {
  CallOutcome,
  CompileOptions,
  HandlerName,
  InvocationCall,
  InvocationInfo,
  InvocationResult,
  StateWrite,
} from './tenant-sandbox.ts'
import {
  type BatchPlace,
  createProgressBuffer,
  type Progress,
  type ProgressViews,
  progressViews,
  readProgress,
  setWaiting,
  type UnitResult,
  type WorkerJob,
  type WorkerNotice,
  type WorkerReply,
  type WorkerRequest,
  type WorkerStartData,
} from './worker-protocol.ts'

/**
 * The noisy-neighbour policy (see {@link WorkerPool}). A tenant is moved from its shared worker to
 * an isolation worker when an invocation runs past its deadline, or when it uses more than
 * `cpuShare` of a core (decayed over about a second) while another tenant of its worker is active.
 */
export interface IsolationOptions {
  /** Isolation workers, each started when first needed and stopped when empty. 0 turns the policy off. Default 1. */
  workers?: number
  /** Share of one core a tenant may take on a shared worker while others are active. Default 0.5. */
  cpuShare?: number
  /** How long an isolated tenant must stay without overruns and under half its share to go home. Default 60 s. */
  quietMs?: number
}

/** Options of {@link createWorkerPool}. */
export interface WorkerPoolOptions {
  /** Shared worker threads. Default: cores - 1, at least 1. */
  size?: number
  /** Each tenant's memory cap, in bytes. */
  memoryLimitBytes: number
  /**
   * Extra time past an invocation's deadline before the watchdog terminates its worker: for a
   * built-in (a regex, a sort) that runs with no interrupt point. Default 250 ms.
   */
  watchdogGraceMs?: number
  /** Invocations waiting (not yet sent) on one worker before new ones are refused. Default 10 000. */
  maxQueuedPerWorker?: number
  /** Invocations waiting for one tenant before its new ones are refused. Default 2 500. */
  maxQueuedPerTenant?: number
  /**
   * Work put in one message, by each tenant's measured cost per call; a worker also hands back the
   * calls it has not started once a message has taken this long while another tenant waits, so
   * that other tenants' work is not held up behind a long batch. Default 5 ms.
   */
  sliceMs?: number
  /** Most units (calls, compiles) in one message to a worker. Default 256. */
  maxCallsPerMessage?: number
  /** CPU deadline of a function's top-level code when it is compiled. Default 1000 ms. */
  compileDeadlineMs?: number
  /**
   * A tenant whose functions have not run (nor been compiled) on its worker for this long has its
   * sandbox dropped there, and rebuilt, its functions compiled again, at its next work: about
   * 0.45 MB of memory per idle tenant with one small function (measured), for a cold start of a
   * few ms (more for heavy top levels, charged to the tenant). Module-level variables start again
   * then, as after a crash. 0 keeps sandboxes as long as their worker. Default 60 000 ms.
   */
  idleEvictMs?: number
  isolation?: IsolationOptions
  /**
   * The gateway's SQLite file (WAL mode). Each worker opens it read-only for the committed
   * function state `ctx.state` reads; without it, functions see no committed state (their own
   * writes and those of their batch's earlier calls only).
   */
  stateDatabase?: string
  /**
   * The clock of the isolation policy (CPU shares, quiet periods); injected by tests. Deadlines
   * and the watchdog use the monotonic clock the workers share (`sharedClockNow()`).
   */
  clock?: { now(): number }
  /**
   * Told why a worker crashed or could not start, for the operator's log. Tenants only ever see
   * a generic `broken`: the error may name host paths.
   */
  onWorkerError?: (error: Error) => void
}

/** Where a tenant runs: the index of its worker (isolation workers come after the shared ones). */
export interface TenantPlacement {
  worker: number
  isolated: boolean
}

/**
 * Runs tenant sandboxes in worker threads, so guest code never runs on the broker's event loop.
 *
 * Scheduling. Every tenant has a queue in the pool, on the main thread; a worker gets at most two
 * messages at a time, each built round-robin across the tenants with work (so one tenant's flood
 * or slow handler cannot starve the others of a worker) and holding many calls (messages cross to
 * workers in batches). A worker hands back the calls it has not started once a message has used
 * `sliceMs`; they go back to the front of their tenants' queues. Each tenant's calls run in the
 * order they were queued, always.
 *
 * Placement and noisy neighbours. A tenant is placed on the shared worker with the fewest tenants.
 * A tenant whose invocation runs past its deadline, or that takes more than `isolation.cpuShare`
 * of a core while other tenants of its worker are active, is moved to an isolation worker
 * (started when first needed): there it can only delay other noisy tenants. Its calls already on
 * the old worker finish first, and the worker skips the tenant's calls in messages sent before
 * the pool heard of the overrun, so its order is kept across the move. After `isolation.quietMs`
 * without overruns and under half its share it goes back home.
 *
 * Watchdog. Workers publish the deadline of the call they run in shared memory. A worker whose
 * call is past its deadline plus a grace (a built-in with no interrupt point) is terminated and
 * replaced; that call fails with `deadline`, the others it had were run again once on the
 * replacement (they ran, or not, on the lost worker: their results were lost with it), and the
 * tenants it hosted get their functions compiled again. Other workers keep serving.
 */
export interface WorkerPool {
  /** Compiles a function, replacing its earlier version only if it compiles; `invalid_function` has line and column. */
  compile(
    tenantId: string,
    key: string,
    source: string,
    handlers: HandlerName[],
    options?: CompileOptions,
  ): Promise<void>
  /** Forgets a compiled function (a replaced version, a deleted function), in the worker too. */
  remove(tenantId: string, key: string): Promise<void>
  invoke(
    tenantId: string,
    key: string,
    handler: HandlerName,
    args: unknown[],
    info: InvocationInfo,
    deadlineMs: number,
  ): Promise<InvocationResult>
  /**
   * Runs many calls of one handler, each with its own deadline of `deadlineMs`; the outcomes come
   * back in order and one call's failure never fails the others. Calls past the tenant's or the
   * worker's queue bound come back `overloaded` without running.
   */
  invokeBatch(
    tenantId: string,
    key: string,
    handler: HandlerName,
    calls: readonly InvocationCall[],
    deadlineMs: number,
  ): Promise<CallOutcome[]>
  /** Drops the tenant's sandbox and functions, after the work it has queued. */
  removeTenant(tenantId: string): Promise<void>
  /**
   * Replaces the worker that hosts a tenant, as after a crash: its invocations in flight fail, and
   * its tenants' functions are compiled again on the new worker.
   */
  restartWorkerOf(tenantId: string): Promise<void>
  /** Where a tenant runs now, if the pool knows it. */
  placementOf(tenantId: string): TenantPlacement | undefined
  /** Workers replaced after a crash, a watchdog kill or a restart. */
  readonly restarts: number
  /** Moves of tenants to an isolation worker. */
  readonly isolations: number
  /** Messages sent to workers; each carries many calls when there are many to send. */
  readonly messages: number
  /** Tenant sandboxes dropped by their workers after `idleEvictMs` without work. */
  readonly evictions: number
  /** Worker threads running now: the shared ones sent work so far and the isolation workers in use. */
  readonly workers: number
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** Shared by the workers of every pool in this process (see WorkerStartData.flagLock). */
const FLAG_LOCK = new SharedArrayBuffer(4)
const WORKER_ENTRY = { source: new URL('./worker-main.ts', import.meta.url), bundled: 'sandbox-worker.mjs' }
/** Workers of a slot that die before they are ready, in a row, after which it starts one only for work. */
const MAX_START_FAILURES = 3
/** Native stack of a worker: QuickJS's 256 KiB limit needs 64 times that (see TenantSandboxOptions). */
const WORKER_STACK_MB = 16
/**
 * V8's young generation of a worker. Its default (16 MiB semi-spaces) grows under a stream of calls
 * to hold about 14 MB more of the worker's memory than this, measured, for no measurable throughput
 * (see sandbox/README.md): a worker's JavaScript objects are the calls' messages and their
 * results, short-lived; what tenants keep lives in their WebAssembly memories.
 */
const WORKER_YOUNG_GENERATION_MB = 8
/** Messages a worker may hold: one running, one waiting, so it never idles between them. */
const MAX_MESSAGES_IN_FLIGHT = 2
/** Half-life of a tenant's CPU account, in ms. */
const CPU_HALF_LIFE_MS = 1000
/** Assumed cost of a call of a tenant not yet measured, in ms. */
const FIRST_CALL_MS = 0.05

type Settle = (result: UnitResult) => void
type Task = {
  settle: Settle
  /** Times the task was sent again after its worker was lost. */
  attempts: number
  /** Order of arrival in the pool, to put tasks handed back in their place. */
  seq: number
} & (
  | { kind: 'compile'; key: string; source: string; handlers: HandlerName[]; memoryBytes: number | undefined }
  | { kind: 'remove'; key: string }
  | { kind: 'removeTenant' }
  | {
      kind: 'call'
      key: string
      handler: HandlerName
      call: InvocationCall
      deadlineMs: number
      batch: Batch
      /** Its place in the batch. */
      index: number
    }
)

/**
 * The calls of one invokeBatch(). Its calls read each other's state writes, and the pool may cut it
 * across messages: `writes` keeps what its successful calls wrote, for a worker that has not seen
 * them (see BatchPlace).
 */
interface Batch {
  id: number
  size: number
  writes: Array<StateWrite[] | undefined>
}

interface Deployed {
  key: string
  source: string
  handlers: HandlerName[]
  memoryBytes: number | undefined
}

interface Tenant {
  id: string
  /** The shared worker it belongs to. */
  home: Slot
  /** Where its work goes now: its home or an isolation worker. */
  slot: Slot
  queue: Task[]
  queuedCalls: number
  /** Units sent and not answered, all on one worker (`inFlightSlot`). */
  inFlight: number
  inFlightSlot: Slot | undefined
  /**
   * Set when a worker handed back some of its units: its units in later messages come back too
   * (see WorkerRequest.seenReplies), so nothing more is sent until all are back, then in order.
   */
  held: boolean
  /** Tasks handed back, in their order; they go back to the front of the queue once all are back. */
  returned: Task[]
  /** The worker whose ready list holds it, if any. */
  readyOn: Slot | undefined
  deployed: Map<string, Deployed>
  /** CPU time, decayed with CPU_HALF_LIFE_MS, as of `cpuAt`. */
  cpuMs: number
  cpuAt: number
  avgCallMs: number
  activeAt: number
  overrunAt: number
  isolatedAt: number
  shareCheckedAt: number
}

/** One unit of a message: a tenant's task, a reinstall of a deployed function, or a drop. */
interface Unit {
  tenant?: Tenant
  task?: Task
  install?: true
  drop?: string
}

interface Slot {
  /** Index in placements: shared workers first, then isolation workers. */
  id: number
  isolation: boolean
  /** Started when the slot is first sent work: a gateway whose tenants deploy nothing runs no worker. */
  worker: Worker | null
  /** Workers that died before they were ready, in a row (a broken install, not a tenant's doing). */
  startFailures: number
  /** The progress record the next worker started in this slot writes to. */
  progressBuffer: SharedArrayBuffer
  progress: ProgressViews
  inFlight: Map<number, Unit[]>
  seenReplies: number
  /** Tenants whose work goes here now. */
  tenants: Set<Tenant>
  /** Tenants whose home this is (shared workers only). */
  homeCount: number
  ready: Tenant[]
  /** Tenants whose functions the worker has compiled. */
  hosted: Set<string>
  /** Tenants to drop from the worker: they moved away. */
  housekeeping: string[]
  queuedCalls: number
  watchdog: NodeJS.Timeout | undefined
  scheduled: boolean
  retired: boolean
}

/** Starts the pool's shared workers; isolation workers start when first needed. */
export function createWorkerPool(options: WorkerPoolOptions): WorkerPool {
  const size = options.size ?? Math.max(1, availableParallelism() - 1)
  if (!Number.isInteger(size) || size < 1) {
    throw new RangeError(`Cannot create a worker pool of ${size} workers`)
  }
  const grace = options.watchdogGraceMs ?? 250
  const maxQueuedPerWorker = options.maxQueuedPerWorker ?? 10_000
  const maxQueuedPerTenant = options.maxQueuedPerTenant ?? 2_500
  const sliceMs = options.sliceMs ?? 5
  const maxUnits = options.maxCallsPerMessage ?? 256
  const compileDeadlineMs = options.compileDeadlineMs ?? 1000
  const idleEvictMs = options.idleEvictMs ?? 60_000
  if (!Number.isInteger(idleEvictMs) || idleEvictMs < 0) {
    throw new RangeError(`Cannot create a worker pool with idleEvictMs ${idleEvictMs} (an integer >= 0)`)
  }
  const isolationWorkers = options.isolation?.workers ?? 1
  const cpuShare = options.isolation?.cpuShare ?? 0.5
  const quietMs = options.isolation?.quietMs ?? 60_000
  const tenants = new Map<string, Tenant>()
  const clock = options.clock ?? Date
  let nextMessageId = 1
  let nextTaskSeq = 1
  let nextBatchId = 1
  let messages = 0
  let restarts = 0
  let isolations = 0
  let evictions = 0
  let closed = false

  /** Starts a worker for a slot; `slotOf` is read when events come, as the slot may not exist yet. */
  const startWorker = (slotOf: () => Slot, buffer: SharedArrayBuffer): Worker => {
    const data: WorkerStartData = {
      memoryLimitBytes: options.memoryLimitBytes,
      compileDeadlineMs,
      idleEvictMs,
      progress: buffer,
      stateDatabase: options.stateDatabase,
      flagLock: FLAG_LOCK,
    }
    const worker = startModuleWorker(WORKER_ENTRY, {
      workerData: data,
      resourceLimits: { stackSizeMb: WORKER_STACK_MB, maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB },
    })
    let ready = false
    let ended = false
    const end = (why: string): void => {
      if (ended) return
      ended = true
      if (!ready && slotOf().worker === worker) slotOf().startFailures++
      onLost(slotOf(), worker, why)
    }
    worker.on('message', (reply: WorkerReply | WorkerNotice) => {
      if (slotOf().worker !== worker) return
      if ('ready' in reply) {
        ready = true
        slotOf().startFailures = 0
      } else if ('evicted' in reply) evictions += reply.evicted
      else onReply(slotOf(), reply)
    })
    worker.on('error', (error) => {
      options.onWorkerError?.(error)
      end('The sandbox worker crashed')
    })
    worker.on('exit', () => end('The sandbox worker exited'))
    return worker
  }

  const newSlot = (id: number, isolation: boolean): Slot => {
    const buffer = createProgressBuffer()
    const slot: Slot = {
      id,
      isolation,
      worker: null,
      startFailures: 0,
      progressBuffer: buffer,
      progress: progressViews(buffer),
      inFlight: new Map(),
      seenReplies: 0,
      tenants: new Set(),
      homeCount: 0,
      ready: [],
      hosted: new Set(),
      housekeeping: [],
      queuedCalls: 0,
      watchdog: undefined,
      scheduled: false,
      retired: false,
    }
    return slot
  }

  const shared: Slot[] = Array.from({ length: size }, (_, index) => newSlot(index, false))
  const isolated: Array<Slot | undefined> = Array.from({ length: isolationWorkers }, () => undefined)

  // ---------------------------------------------------------------------------------------------
  // Tenants and placement

  /** Explicit placement: a new tenant goes to the shared worker with the fewest tenants. */
  const homeForNewTenant = (): Slot =>
    shared.reduce((best, slot) => (slot.homeCount < best.homeCount ? slot : best))

  const tenantOf = (tenantId: string): Tenant => {
    let tenant = tenants.get(tenantId)
    if (tenant === undefined) {
      const home = homeForNewTenant()
      home.homeCount++
      tenant = {
        id: tenantId,
        home,
        slot: home,
        queue: [],
        queuedCalls: 0,
        inFlight: 0,
        inFlightSlot: undefined,
        held: false,
        returned: [],
        readyOn: undefined,
        deployed: new Map(),
        cpuMs: 0,
        cpuAt: clock.now(),
        avgCallMs: FIRST_CALL_MS,
        activeAt: clock.now(),
        overrunAt: Number.NEGATIVE_INFINITY,
        isolatedAt: Number.NEGATIVE_INFINITY,
        shareCheckedAt: 0,
      }
      home.tenants.add(tenant)
      tenants.set(tenantId, tenant)
    }
    return tenant
  }

  /** Drops the record of a tenant with no functions and no work: its next call starts afresh. */
  const forgetIfIdle = (tenant: Tenant): void => {
    if (tenant.deployed.size > 0 || tenant.queue.length > 0 || tenant.inFlight > 0) return
    if (tenants.get(tenant.id) !== tenant) return
    tenants.delete(tenant.id)
    tenant.slot.tenants.delete(tenant)
    tenant.home.homeCount--
    if (tenant.slot.hosted.delete(tenant.id)) {
      tenant.slot.housekeeping.push(tenant.id)
      schedule(tenant.slot)
    }
    retireIfEmpty(tenant.slot)
  }

  /** The tenant's share of one core over the last second or so. */
  const shareOf = (tenant: Tenant, now: number): number =>
    (tenant.cpuMs * 2 ** (-(now - tenant.cpuAt) / CPU_HALF_LIFE_MS) * Math.LN2) / CPU_HALF_LIFE_MS

  /** Adds worker time spent for the tenant (calls, compiles, rebuilds) to its CPU account. */
  const charge = (tenant: Tenant, spentMs: number, now: number): void => {
    tenant.cpuMs = tenant.cpuMs * 2 ** (-(now - tenant.cpuAt) / CPU_HALF_LIFE_MS) + spentMs
    tenant.cpuAt = now
  }

  const account = (tenant: Tenant, spentMs: number, now: number): void => {
    charge(tenant, spentMs, now)
    tenant.avgCallMs = 0.8 * tenant.avgCallMs + 0.2 * spentMs
  }

  /** Moves the tenant to an isolation worker if it takes more than its share while others work. */
  const checkShare = (tenant: Tenant, now: number): void => {
    if (tenant.slot.isolation || now - tenant.shareCheckedAt < 100) return
    tenant.shareCheckedAt = now
    if (shareOf(tenant, now) > cpuShare && othersActive(tenant, now)) isolate(tenant, now)
  }

  const move = (tenant: Tenant, to: Slot): void => {
    const from = tenant.slot
    if (from === to) return
    from.tenants.delete(tenant)
    to.tenants.add(tenant)
    from.queuedCalls -= tenant.queuedCalls
    to.queuedCalls += tenant.queuedCalls
    tenant.slot = to
    // The old worker frees the tenant's sandbox after the work it still has of it.
    if (from.hosted.delete(tenant.id)) {
      from.housekeeping.push(tenant.id)
      schedule(from)
    }
    if (tenant.readyOn === from) {
      from.ready.splice(from.ready.indexOf(tenant), 1)
      tenant.readyOn = undefined
    }
    markReady(tenant)
    retireIfEmpty(from)
  }

  const isolate = (tenant: Tenant, now: number): void => {
    if (isolationWorkers === 0 || tenant.slot.isolation || closed) return
    let target: Slot | undefined
    for (let index = 0; index < isolated.length; index++) {
      const slot = isolated[index] ?? newSlot(size + index, true)
      if (isolated[index] === undefined) isolated[index] = slot
      if (target === undefined || slot.tenants.size < target.tenants.size) target = slot
      if (slot.tenants.size === 0) break
    }
    if (target === undefined) return
    isolations++
    tenant.isolatedAt = now
    move(tenant, target)
  }

  const returnHomeIfQuiet = (tenant: Tenant, now: number): void => {
    if (!tenant.slot.isolation) return
    if (now - tenant.overrunAt < quietMs || now - tenant.isolatedAt < quietMs) return
    if (shareOf(tenant, now) >= cpuShare / 2) return
    move(tenant, tenant.home)
  }

  /** Whether another tenant of the worker has had work lately: only then is a heavy tenant a bother. */
  const othersActive = (tenant: Tenant, now: number): boolean => {
    for (const other of tenant.slot.tenants) {
      if (other !== tenant && now - other.activeAt < 2 * CPU_HALF_LIFE_MS) return true
    }
    return false
  }

  const retireIfEmpty = (slot: Slot): void => {
    if (!slot.isolation || slot.retired || slot.tenants.size > 0 || slot.inFlight.size > 0) return
    slot.retired = true
    if (slot.watchdog !== undefined) clearTimeout(slot.watchdog)
    isolated[slot.id - size] = undefined
    void slot.worker?.terminate()
  }

  // ---------------------------------------------------------------------------------------------
  // Queues and messages

  const enqueue = (tenant: Tenant, tasks: Task[]): void => {
    const now = clock.now()
    tenant.activeAt = now
    let calls = 0
    for (const task of tasks) {
      task.seq = nextTaskSeq++
      tenant.queue.push(task)
      if (task.kind === 'call') calls++
    }
    tenant.queuedCalls += calls
    tenant.slot.queuedCalls += calls
    returnHomeIfQuiet(tenant, now)
    markReady(tenant)
  }

  /** Puts tasks that did not run back at the front of their tenant's queue, in arrival order. */
  const requeue = (tenant: Tenant, tasks: Task[]): void => {
    if (tasks.length === 0) return
    tasks.sort((a, b) => a.seq - b.seq)
    tenant.queue.unshift(...tasks)
    const calls = tasks.filter((task) => task.kind === 'call').length
    tenant.queuedCalls += calls
    tenant.slot.queuedCalls += calls
  }

  const markReady = (tenant: Tenant): void => {
    if (tenant.queue.length === 0 || tenant.readyOn !== undefined || closed) return
    // Work in flight on another worker (before a move), or handed back, finishes first.
    if (tenant.inFlightSlot !== undefined && (tenant.inFlightSlot !== tenant.slot || tenant.held)) return
    tenant.slot.ready.push(tenant)
    tenant.readyOn = tenant.slot
    if (tenant.inFlight === 0) setWaiting(tenant.slot.progress, true)
    schedule(tenant.slot)
  }

  // Dispatch waits for the end of the current tick, so calls queued together travel together.
  const schedule = (slot: Slot): void => {
    if (slot.scheduled || closed || slot.retired) return
    slot.scheduled = true
    queueMicrotask(() => {
      slot.scheduled = false
      dispatch(slot)
    })
  }

  const dispatch = (slot: Slot): void => {
    while (slot.inFlight.size < MAX_MESSAGES_IN_FLIGHT && !closed && !slot.retired) {
      const message = build(slot)
      setWaiting(
        slot.progress,
        slot.ready.some((tenant) => tenant.inFlight === 0),
      )
      if (message === undefined) return
      const id = nextMessageId++
      messages++
      slot.inFlight.set(id, message.units)
      const request: WorkerRequest = {
        id,
        seenReplies: slot.seenReplies,
        budgetMs: sliceMs,
        jobs: message.jobs,
      }
      try {
        slot.worker ??= startWorker(() => slot, slot.progressBuffer)
        slot.worker.postMessage(request)
      } catch {
        slot.inFlight.delete(id)
        unsendable(slot, message.units)
        continue
      }
      armWatchdog(slot)
    }
  }

  /**
   * A message could not be copied to the worker (arguments that are not structured-cloneable, such
   * as functions): the calls at fault fail, the others go back to their queues for the next one.
   */
  const unsendable = (slot: Slot, units: Unit[]): void => {
    const copyable = (task: Task): boolean => {
      if (task.kind !== 'call') return true
      try {
        structuredClone(task.call)
        return true
      } catch {
        return false
      }
    }
    // If no call is at fault the whole message is, and its calls fail: sending it again would loop.
    const anyAtFault = units.some((unit) => unit.task !== undefined && !copyable(unit.task))
    for (const unit of units) {
      if (unit.drop !== undefined) slot.housekeeping.push(unit.drop)
      const { tenant, task } = unit
      if (tenant === undefined) continue
      if (task === undefined) {
        slot.hosted.delete(tenant.id)
        continue
      }
      tenant.inFlight--
      if (anyAtFault && copyable(task)) {
        tenant.returned.push(task)
        continue
      }
      task.settle({
        ok: false,
        code: SANDBOX_ERROR_CODES.handlerThrew,
        message: `Cannot run function '${task.kind === 'removeTenant' ? tenant.id : task.key}' as its arguments cannot be copied to a worker`,
      })
    }
    settleTenants(units)
  }

  /** The next message: dropped tenants, then each ready tenant in turn, up to a slice's worth of work. */
  const build = (slot: Slot): { jobs: WorkerJob[]; units: Unit[] } | undefined => {
    const jobs: WorkerJob[] = []
    const units: Unit[] = []
    for (const tenantId of slot.housekeeping) {
      jobs.push({ kind: 'dropTenant', tenantId })
      units.push({ drop: tenantId })
    }
    slot.housekeeping = []
    let estimatedMs = 0
    let visits = slot.ready.length
    while (visits-- > 0 && units.length < maxUnits && estimatedMs < sliceMs) {
      const tenant = slot.ready.shift() as Tenant
      tenant.readyOn = undefined
      if (tenant.slot !== slot) {
        markReady(tenant)
        continue
      }
      if (tenant.queue.length === 0) continue
      if (tenant.inFlightSlot !== undefined && (tenant.inFlightSlot !== slot || tenant.held)) continue
      if (!slot.hosted.has(tenant.id)) {
        // The worker has not got this tenant's functions (new, moved or replaced worker).
        for (const fn of tenant.deployed.values()) {
          jobs.push({ kind: 'compile', tenantId: tenant.id, ...fn })
          units.push({ tenant, install: true })
        }
        slot.hosted.add(tenant.id)
      }
      const allowance = Math.max(
        1,
        Math.min(
          maxUnits - units.length,
          Math.floor((sliceMs - estimatedMs) / Math.max(tenant.avgCallMs, 0.01)),
        ),
      )
      let taken = 0
      let calls = 0
      let batch: Extract<WorkerJob, { kind: 'calls' }> | undefined
      while (taken < allowance && tenant.queue.length > 0) {
        const task = tenant.queue.shift() as Task
        taken++
        units.push({ tenant, task })
        if (task.kind === 'call') {
          calls++
          estimatedMs += tenant.avgCallMs
          if (
            batch === undefined ||
            batch.key !== task.key ||
            batch.handler !== task.handler ||
            batch.deadlineMs !== task.deadlineMs
          ) {
            batch = {
              kind: 'calls',
              tenantId: tenant.id,
              key: task.key,
              handler: task.handler,
              deadlineMs: task.deadlineMs,
              calls: [],
              batches: [],
            }
            jobs.push(batch)
          }
          batch.calls.push(task.call)
          const place = batch.batches.at(-1)
          if (place?.id === task.batch.id && place.start + place.count === task.index) place.count++
          else batch.batches.push(placeOf(task, tenant.inFlight + taken - 1))
          continue
        }
        batch = undefined
        estimatedMs += 1
        if (task.kind === 'compile') {
          const { key, source, handlers, memoryBytes } = task
          jobs.push({ kind: 'compile', tenantId: tenant.id, key, source, handlers, memoryBytes })
        } else if (task.kind === 'remove') {
          jobs.push({ kind: 'remove', tenantId: tenant.id, key: task.key })
        } else {
          jobs.push({ kind: 'dropTenant', tenantId: tenant.id })
        }
      }
      tenant.queuedCalls -= calls
      slot.queuedCalls -= calls
      tenant.inFlight += taken
      tenant.inFlightSlot = slot
      if (tenant.queue.length > 0) {
        slot.ready.push(tenant)
        tenant.readyOn = slot
      }
    }
    return jobs.length === 0 ? undefined : { jobs, units }
  }

  /**
   * Where a job starting with `task` sits in its batch. With nothing of the tenant in flight or
   * before it in this message, the pool has every outcome of the batch's earlier calls, and the
   * worker may not (it is new, or the tenant moved): their writes go along. Otherwise its earlier
   * calls went, in order, to this same worker, which keeps their overlay.
   */
  const placeOf = (task: Extract<Task, { kind: 'call' }>, unitsBefore: number): BatchPlace => {
    const { id, size, writes } = task.batch
    const place = { id, start: task.index, count: 1, size }
    if (task.index === 0 || unitsBefore > 0) return place
    return { ...place, overlay: writes.slice(0, task.index).flatMap((list) => list ?? []) }
  }

  const onReply = (slot: Slot, reply: WorkerReply): void => {
    const units = slot.inFlight.get(reply.id)
    if (units === undefined) return
    slot.inFlight.delete(reply.id)
    slot.seenReplies = Math.max(slot.seenReplies, reply.id)
    const now = clock.now()
    units.forEach((unit, index) => {
      const result = reply.results[index]
      const tenant = unit.tenant
      if (tenant === undefined) return
      if (unit.install === true) {
        // Not run, or failed: the function is compiled again before the tenant's next work here.
        if (result === null || result === undefined || !result.ok) slot.hosted.delete(tenant.id)
        // Compiling a tenant's functions again on a new worker is the tenant's work too.
        charge(tenant, reply.spentMs[index] ?? 0, now)
        checkShare(tenant, now)
        return
      }
      const task = unit.task as Task
      tenant.inFlight--
      if (result === null) {
        tenant.returned.push(task)
        tenant.held = true
        return
      }
      finish(
        tenant,
        task,
        result ?? { ok: false, code: SANDBOX_ERROR_CODES.broken, message: 'The sandbox worker failed' },
        reply.spentMs[index] ?? 0,
        now,
      )
    })
    settleTenants(units)
    retireIfEmpty(slot)
    dispatch(slot)
    armWatchdog(slot)
  }

  /** After units came back: tenants with nothing in flight may go on, wherever they now run. */
  const settleTenants = (units: Unit[]): void => {
    const seen = new Set<Tenant>()
    for (const unit of units) {
      const tenant = unit.tenant
      if (tenant === undefined || seen.has(tenant)) continue
      seen.add(tenant)
      if (tenant.inFlight === 0) {
        tenant.inFlightSlot = undefined
        tenant.held = false
        requeue(tenant, tenant.returned.splice(0))
      }
      markReady(tenant)
      forgetIfIdle(tenant)
    }
  }

  /** Applies a unit's result to the pool's records, then to the caller. */
  const finish = (tenant: Tenant, task: Task, result: UnitResult, spentMs: number, now: number): void => {
    switch (task.kind) {
      case 'call': {
        account(tenant, spentMs, now)
        if (result.ok && result.result !== null) task.batch.writes[task.index] = result.result.state
        // Running out of memory costs the worker a rebuild of the sandbox: it counts as an overrun.
        if (
          !result.ok &&
          (result.code === SANDBOX_ERROR_CODES.deadline || result.code === SANDBOX_ERROR_CODES.memory)
        ) {
          tenant.overrunAt = now
          isolate(tenant, now)
        } else checkShare(tenant, now)
        break
      }
      case 'compile':
        charge(tenant, spentMs, now)
        checkShare(tenant, now)
        if (result.ok) {
          const { key, source, handlers, memoryBytes } = task
          tenant.deployed.set(key, { key, source, handlers, memoryBytes })
        }
        break
      case 'remove':
        tenant.deployed.delete(task.key)
        break
      case 'removeTenant':
        tenant.deployed.clear()
        tenant.slot.hosted.delete(tenant.id)
        break
    }
    task.settle(result)
  }

  // ---------------------------------------------------------------------------------------------
  // Watchdog and lost workers

  const armWatchdog = (slot: Slot): void => {
    if (slot.inFlight.size === 0) {
      if (slot.watchdog !== undefined) clearTimeout(slot.watchdog)
      slot.watchdog = undefined
      return
    }
    if (slot.watchdog === undefined) slot.watchdog = setTimeout(() => checkWatchdog(slot), grace)
  }

  /** Reads what the worker runs; terminates it when that call is past its deadline plus the grace. */
  const checkWatchdog = (slot: Slot): void => {
    slot.watchdog = undefined
    if (closed || slot.retired || slot.inFlight.size === 0) return
    const at = readProgress(slot.progress)
    const now = sharedClockNow()
    if (
      at !== undefined &&
      at.messageId !== 0 &&
      slot.inFlight.has(at.messageId) &&
      Number.isFinite(at.deadlineAt)
    ) {
      const killAt = at.deadlineAt + grace
      if (now >= killAt) {
        kill(slot, at)
        return
      }
      slot.watchdog = setTimeout(() => checkWatchdog(slot), Math.max(1, killAt - now))
      return
    }
    slot.watchdog = setTimeout(() => checkWatchdog(slot), grace)
  }

  const kill = (slot: Slot, at: Progress): void => {
    const now = clock.now()
    const overran = slot.inFlight.get(at.messageId)?.[at.unit]
    const lost: Unit[] = []
    for (const [id, units] of [...slot.inFlight].sort(([a], [b]) => a - b)) {
      units.forEach((unit, index) => {
        lost.push(unit)
        const { tenant, task } = unit
        if (tenant === undefined || task === undefined) return
        tenant.inFlight--
        if (id === at.messageId && index === at.unit) return
        // Run again once on the replacement: its result, if it ran, was lost with the worker.
        if (task.attempts >= 1) {
          task.settle({
            ok: false,
            code: SANDBOX_ERROR_CODES.broken,
            message: 'Cannot run the function as its worker was stopped twice while it waited',
          })
          return
        }
        task.attempts++
        tenant.returned.push(task)
      })
    }
    slot.inFlight.clear()
    replace(slot)
    if (overran?.tenant !== undefined && overran.task !== undefined) {
      const task = overran.task
      const result: UnitResult = {
        ok: false,
        code: task.kind === 'compile' ? SANDBOX_ERROR_CODES.invalidFunction : SANDBOX_ERROR_CODES.deadline,
        message:
          task.kind === 'compile'
            ? `Cannot deploy function '${task.key}' as its top level ran past the ${compileDeadlineMs} ms compile deadline`
            : task.kind === 'call'
              ? `Function '${task.key}' ran past its ${task.deadlineMs} ms deadline in a built-in that cannot be interrupted; its worker was replaced`
              : 'The sandbox worker stopped responding and was replaced',
      }
      overran.tenant.overrunAt = now
      finish(overran.tenant, task, result, grace, now)
      if (task.kind !== 'call') isolate(overran.tenant, now)
    } else if (overran?.install === true && overran.tenant !== undefined) {
      // A deployed function's top level hung while it was compiled again: it is a noisy tenant.
      overran.tenant.overrunAt = now
      isolate(overran.tenant, now)
    }
    settleTenants(lost)
  }

  /** A worker died on its own (a crash) or by restartWorkerOf(): its work in flight fails. */
  const onLost = (slot: Slot, worker: Worker, why: string): void => {
    if (slot.worker !== worker || closed || slot.retired) return
    const lost: Unit[] = []
    for (const units of slot.inFlight.values()) {
      for (const unit of units) {
        lost.push(unit)
        if (unit.tenant === undefined || unit.task === undefined) continue
        unit.tenant.inFlight--
        unit.task.settle({ ok: false, code: SANDBOX_ERROR_CODES.broken, message: why })
      }
    }
    slot.inFlight.clear()
    replace(slot)
    settleTenants(lost)
  }

  /** Starts a new worker in the slot; the old one is terminated if it still runs. */
  const replace = (slot: Slot): void => {
    restarts++
    const old = slot.worker
    if (slot.watchdog !== undefined) clearTimeout(slot.watchdog)
    slot.watchdog = undefined
    // A fresh progress record: the old worker may still write to its own while it is stopped.
    const buffer = createProgressBuffer()
    slot.progressBuffer = buffer
    slot.progress = progressViews(buffer)
    // A worker that keeps dying before it is ready is not restarted in a loop: the next one starts
    // when work comes (which then fails the same way, with a clear error, until the cause is fixed).
    slot.worker = slot.startFailures >= MAX_START_FAILURES ? null : startWorker(() => slot, buffer)
    slot.hosted.clear()
    slot.housekeeping = []
    void old?.terminate()
    for (const tenant of slot.tenants) markReady(tenant)
    schedule(slot)
  }

  // ---------------------------------------------------------------------------------------------
  // The API

  const failed = (message: string): UnitResult => ({ ok: false, code: SANDBOX_ERROR_CODES.broken, message })
  const outcomeOf = (result: UnitResult): CallOutcome =>
    result.ok
      ? { ok: true, result: result.result as InvocationResult }
      : { ok: false, code: result.code, message: result.message }
  const errorOf = (result: Extract<UnitResult, { ok: false }>): SandboxError =>
    new SandboxError(result.code, result.message, { line: result.line, column: result.column })
  const CLOSED = 'The worker pool is closed'

  const control = (tenantId: string, task: Task): Promise<void> =>
    new Promise((resolve, reject) => {
      if (closed) {
        reject(errorOf(failed(CLOSED) as Extract<UnitResult, { ok: false }>))
        return
      }
      const settle = task.settle
      task.settle = (result) => {
        settle(result)
        if (result.ok) resolve()
        else reject(errorOf(result))
      }
      enqueue(tenantOf(tenantId), [task])
    })

  const pool: WorkerPool = {
    compile(tenantId, key, source, handlers, compileOptions = {}) {
      const memoryBytes = compileOptions.memoryBytes
      if (memoryBytes !== undefined && (!Number.isInteger(memoryBytes) || memoryBytes < 1024 * 1024)) {
        return Promise.reject(
          new RangeError(
            `Cannot deploy function '${key}' with a memory limit of ${memoryBytes} bytes (at least 1 MiB)`,
          ),
        )
      }
      return control(tenantId, {
        kind: 'compile',
        key,
        source,
        handlers: [...handlers],
        memoryBytes,
        attempts: 0,
        seq: 0,
        settle: () => {},
      })
    },
    async remove(tenantId, key) {
      if (!tenants.has(tenantId) || closed) return
      await control(tenantId, { kind: 'remove', key, attempts: 0, seq: 0, settle: () => {} })
    },
    async removeTenant(tenantId) {
      if (!tenants.has(tenantId) || closed) return
      await control(tenantId, { kind: 'removeTenant', attempts: 0, seq: 0, settle: () => {} })
    },
    async invoke(tenantId, key, handler, args, info, deadlineMs) {
      const [outcome] = await pool.invokeBatch(tenantId, key, handler, [{ args, info }], deadlineMs)
      if (outcome === undefined) throw errorOf(failed('The sandbox gave no answer') as never)
      if (!outcome.ok) throw new SandboxError(outcome.code, outcome.message)
      return outcome.result
    },
    invokeBatch(tenantId, key, handler, calls, deadlineMs) {
      if (!(deadlineMs > 0) || !Number.isFinite(deadlineMs)) {
        return Promise.reject(
          new RangeError(`Cannot run function '${key}' with a deadline of ${deadlineMs} ms`),
        )
      }
      if (!Array.isArray(calls)) return Promise.reject(new TypeError('invokeBatch() takes an array of calls'))
      const outcomes: CallOutcome[] = new Array(calls.length)
      if (closed) {
        outcomes.fill(outcomeOf(failed(CLOSED)))
        return Promise.resolve(outcomes)
      }
      const tenant = tenantOf(tenantId)
      // At the bound, calls are refused with `overloaded` rather than queued without limit.
      const tenantRoom = maxQueuedPerTenant - tenant.queuedCalls
      const workerRoom = maxQueuedPerWorker - tenant.slot.queuedCalls
      const accepted = Math.max(0, Math.min(tenantRoom, workerRoom, calls.length))
      const bound =
        tenantRoom <= workerRoom
          ? `its tenant has ${maxQueuedPerTenant}`
          : `its worker has ${maxQueuedPerWorker}`
      for (let index = accepted; index < calls.length; index++) {
        outcomes[index] = {
          ok: false,
          code: SANDBOX_ERROR_CODES.overloaded,
          message: `Cannot run function '${key}' as ${bound} invocations waiting`,
        }
      }
      if (accepted === 0) {
        // Nothing was queued: a tenant seen only now is not kept (nor counted in placement).
        forgetIfIdle(tenant)
        return Promise.resolve(outcomes)
      }
      return new Promise((resolve) => {
        let pending = accepted
        const tasks: Task[] = []
        const batch: Batch = { id: nextBatchId++, size: accepted, writes: new Array(accepted) }
        for (let index = 0; index < accepted; index++) {
          tasks.push({
            kind: 'call',
            key,
            handler,
            call: calls[index] as InvocationCall,
            deadlineMs,
            batch,
            index,
            attempts: 0,
            seq: 0,
            settle: (result) => {
              outcomes[index] = outcomeOf(result)
              if (--pending === 0) resolve(outcomes)
            },
          })
        }
        enqueue(tenant, tasks)
      })
    },
    async restartWorkerOf(tenantId) {
      const slot = tenants.get(tenantId)?.slot ?? homeForNewTenant()
      // A slot never sent work has no worker yet: there is nothing to restart.
      await slot.worker?.terminate()
    },
    placementOf(tenantId) {
      const tenant = tenants.get(tenantId)
      return tenant === undefined ? undefined : { worker: tenant.slot.id, isolated: tenant.slot.isolation }
    },
    get restarts() {
      return restarts
    },
    get isolations() {
      return isolations
    },
    get messages() {
      return messages
    },
    get evictions() {
      return evictions
    },
    get workers() {
      return closed
        ? 0
        : [...shared, ...isolated].filter((slot) => slot !== undefined && slot.worker !== null).length
    },
    async close() {
      if (closed) return
      closed = true
      const slots = [...shared, ...isolated].filter(
        (slot): slot is Slot => slot !== undefined && !slot.retired,
      )
      for (const tenant of tenants.values()) {
        // Tasks a worker handed back wait in `returned` until the tenant's other units are back.
        for (const task of [...tenant.returned.splice(0), ...tenant.queue.splice(0)]) {
          task.settle(failed(CLOSED))
        }
      }
      for (const slot of slots) {
        if (slot.watchdog !== undefined) clearTimeout(slot.watchdog)
        for (const units of slot.inFlight.values()) {
          for (const unit of units) unit.task?.settle(failed(CLOSED))
        }
        slot.inFlight.clear()
      }
      await Promise.all(slots.map((slot) => slot.worker?.terminate()))
    },
    [Symbol.asyncDispose]: () => pool.close(),
  }
  return pool
}
