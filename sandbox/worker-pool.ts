import { Worker } from 'node:worker_threads'
import { SANDBOX_ERROR_CODES, SandboxError } from './errors.ts'
import type { HandlerName, InvocationInfo, InvocationResult } from './tenant-sandbox.ts'
import type { WorkerReply, WorkerRequest } from './worker-protocol.ts'

/** Options of {@link createWorkerPool}. */
export interface WorkerPoolOptions {
  /** Worker threads. Default: cores - 1, at least 1. */
  size: number
  /** Each tenant's memory cap, in bytes. */
  memoryLimitBytes: number
  /**
   * Extra time past an invocation's deadline before the watchdog terminates its worker: for a
   * built-in (a regex, a sort) that runs with no interrupt point. Default 250 ms.
   */
  watchdogGraceMs?: number
  /** Requests waiting per worker before new ones are refused. Default 10 000. */
  maxQueuedPerWorker?: number
}

/** The compiled function a tenant deployed, kept so a replaced worker can compile it again. */
interface Deployed {
  key: string
  source: string
  handlers: HandlerName[]
}

interface Pending {
  resolve(reply: WorkerReply): void
  /** How long the request may run once the worker starts it; undefined for no watchdog. */
  watchdogMs: number | undefined
  timer: NodeJS.Timeout | undefined
}

interface Slot {
  worker: Worker
  /** Requests in the order sent; the worker handles them in that order. */
  pending: Map<number, Pending>
  /** Whether the worker has loaded its code; startup time is not charged to any request. */
  ready: boolean
}

/**
 * Runs tenant sandboxes in worker threads, so guest code never runs on the broker's event loop.
 * Tenants are sharded across workers by a hash of their id. A worker whose invocation overruns its
 * deadline plus a grace (a built-in with no interrupt point) is terminated by a watchdog and
 * replaced; the tenants it hosted are compiled again on the new worker, and other workers keep
 * serving.
 */
export interface WorkerPool {
  compile(tenantId: string, key: string, source: string, handlers: HandlerName[]): Promise<void>
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
   * Replaces the worker that hosts a tenant, as the watchdog does: its invocations in flight fail,
   * and its tenants' functions are compiled again on the new worker.
   */
  restartWorkerOf(tenantId: string): Promise<void>
  /** Workers replaced after a crash, a watchdog kill or a restart. */
  readonly restarts: number
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

const WORKER_URL = new URL('./worker-main.ts', import.meta.url)
const WORKER_BOOTSTRAP = `
const { workerData } = require('node:worker_threads')
import('tsx/esm/api')
  .then((tsx) => tsx.register())
  .then(() => import(workerData.main))
`

/** Starts the pool's workers. */
export function createWorkerPool(options: WorkerPoolOptions): WorkerPool {
  if (!Number.isInteger(options.size) || options.size < 1) {
    throw new RangeError(`Cannot create a worker pool of ${options.size} workers`)
  }
  const grace = options.watchdogGraceMs ?? 250
  const maxQueued = options.maxQueuedPerWorker ?? 10_000
  const deployed = new Map<string, Map<string, Deployed>>()
  let nextId = 1
  let restarts = 0
  let closed = false

  const spawn = (index: number): Slot => {
    // Workers load the TypeScript sources through tsx, as the main thread does: a worker does not
    // inherit the main thread's module hooks, so a small bootstrap registers them first.
    const worker = new Worker(WORKER_BOOTSTRAP, { eval: true, workerData: { main: WORKER_URL.href } })
    const slot: Slot = { worker, pending: new Map(), ready: false }
    worker.on('message', (reply: WorkerReply | { ready: true }) => {
      if ('ready' in reply) {
        slot.ready = true
        arm(slot)
        return
      }
      const pending = slot.pending.get(reply.id)
      if (pending === undefined) return
      slot.pending.delete(reply.id)
      if (pending.timer !== undefined) clearTimeout(pending.timer)
      pending.resolve(reply)
      arm(slot)
    })
    const lost = (why: string) => {
      if (slots[index] !== slot) return
      for (const [id, pending] of slot.pending) {
        if (pending.timer !== undefined) clearTimeout(pending.timer)
        pending.resolve({ id, ok: false, code: SANDBOX_ERROR_CODES.broken, message: why })
      }
      slot.pending.clear()
      if (closed) return
      restarts++
      slots[index] = spawn(index)
      // The tenants of this shard get their functions back on the new worker.
      for (const [tenantId, functions] of deployed) {
        if (shardOf(tenantId) !== index) continue
        for (const fn of functions.values()) {
          void send(
            tenantId,
            { type: 'compile', tenantId, memoryLimitBytes: options.memoryLimitBytes, ...fn },
            undefined,
          )
        }
      }
    }
    worker.on('error', () => lost('The sandbox worker crashed'))
    worker.on('exit', () => lost('The sandbox worker exited'))
    return slot
  }
  const slots: Slot[] = Array.from({ length: options.size }, (_, index) => spawn(index))

  function shardOf(tenantId: string): number {
    let hash = 2166136261
    for (let i = 0; i < tenantId.length; i++) hash = Math.imul(hash ^ tenantId.charCodeAt(i), 16777619)
    return (hash >>> 0) % slots.length
  }

  function send(
    tenantId: string,
    request: Omit<WorkerRequest, 'id'> & { type: WorkerRequest['type'] },
    watchdogMs: number | undefined,
  ): Promise<WorkerReply> {
    const index = shardOf(tenantId)
    const slot = slots[index] as Slot
    const id = nextId++
    if (closed) {
      return Promise.resolve({
        id,
        ok: false,
        code: SANDBOX_ERROR_CODES.broken,
        message: 'The worker pool is closed',
      })
    }
    if (slot.pending.size >= maxQueued) {
      return Promise.resolve({
        id,
        ok: false,
        code: SANDBOX_ERROR_CODES.broken,
        message: `Cannot run the function as ${maxQueued} invocations are already waiting on its worker`,
      })
    }
    return new Promise((resolve) => {
      slot.pending.set(id, { resolve, watchdogMs, timer: undefined })
      slot.worker.postMessage({ ...request, id })
      arm(slot)
    })
  }

  /**
   * Starts the watchdog of the request the worker is working on: the oldest one it has not
   * answered. Time spent waiting behind other requests or for the worker to load is not charged.
   */
  function arm(slot: Slot): void {
    if (!slot.ready) return
    const head = slot.pending.entries().next().value
    if (head === undefined) return
    const [id, pending] = head
    if (pending.watchdogMs === undefined || pending.timer !== undefined) return
    pending.timer = setTimeout(() => {
      // The deadline passed with no answer: a built-in is running without an interrupt point.
      slot.pending.delete(id)
      pending.resolve({
        id,
        ok: false,
        code: SANDBOX_ERROR_CODES.deadline,
        message: 'The function ran past its deadline',
      })
      void slot.worker.terminate()
    }, pending.watchdogMs)
  }

  const unwrap = (reply: WorkerReply): InvocationResult | null => {
    if (reply.ok) return reply.result
    throw new SandboxError(reply.code, reply.message, { line: reply.line, column: reply.column })
  }

  const pool: WorkerPool = {
    async compile(tenantId, key, source, handlers) {
      const request = {
        type: 'compile' as const,
        tenantId,
        memoryLimitBytes: options.memoryLimitBytes,
        key,
        source,
        handlers,
      }
      unwrap(await send(tenantId, request, 5_000))
      let functions = deployed.get(tenantId)
      if (functions === undefined) {
        functions = new Map()
        deployed.set(tenantId, functions)
      }
      functions.set(key, { key, source, handlers })
    },
    async remove(tenantId, key) {
      deployed.get(tenantId)?.delete(key)
      if (deployed.get(tenantId)?.size === 0) deployed.delete(tenantId)
      const request = { type: 'remove' as const, tenantId, memoryLimitBytes: options.memoryLimitBytes, key }
      unwrap(await send(tenantId, request, 5_000))
    },
    async invoke(tenantId, key, handler, args, info, deadlineMs) {
      const request = {
        type: 'invoke' as const,
        tenantId,
        memoryLimitBytes: options.memoryLimitBytes,
        key,
        handler,
        args,
        info,
        deadlineMs,
      }
      return unwrap(await send(tenantId, request, deadlineMs + grace)) as InvocationResult
    },
    async restartWorkerOf(tenantId) {
      await (slots[shardOf(tenantId)] as Slot).worker.terminate()
    },
    get restarts() {
      return restarts
    },
    async close() {
      if (closed) return
      closed = true
      await Promise.all(slots.map((slot) => slot.worker.terminate()))
    },
    [Symbol.asyncDispose]: () => pool.close(),
  }
  return pool
}
