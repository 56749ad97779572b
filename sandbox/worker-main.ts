import { createRequire } from 'node:module'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { parentPort, workerData } from 'node:worker_threads'
import type BetterSqlite3 from 'better-sqlite3'
import { SANDBOX_ERROR_CODES, SandboxError } from './errors.ts'
import { sharedClockNow } from './shared-clock.ts'
import {
  type CallOutcome,
  createStateOverlay,
  createTenantSandbox,
  type HandlerName,
  prepareSandboxInstance,
  type SandboxInstance,
  type StateOverlay,
  type StateSource,
  statePrefixEnd,
  type TenantSandbox,
} from './tenant-sandbox.ts'
import {
  othersWaiting,
  progressViews,
  type UnitResult,
  type WorkerJob,
  type WorkerNotice,
  type WorkerReply,
  type WorkerRequest,
  type WorkerStartData,
  writeProgress,
} from './worker-protocol.ts'

// A pool worker: hosts the sandboxes of the tenants the pool places on it and runs the pool's
// messages one at a time, in order. It never writes the database and never touches the network;
// it only computes, and reads committed function state through a read-only connection of its own.
// It keeps the pool's watchdog informed through a shared progress record, as a built-in that runs
// without interrupt points leaves it no other way to speak.
const port = parentPort
if (port === null) throw new Error('sandbox/worker-main.ts runs only as a worker thread')

const start = workerData as WorkerStartData
const progress = progressViews(start.progress)
const sandboxes = new Map<string, TenantSandbox>()
const sources = new Map<
  string,
  Map<string, { source: string; handlers: HandlerName[]; memoryBytes: number | undefined }>
>()
/**
 * Tenants whose units this worker handed back unrun (past a deadline, past a message's budget), with
 * the last message it did so in. Their units in messages the pool built before it read that reply
 * are handed back too: they come after the ones handed back, and the pool sends those again first.
 */
const suspended = new Map<string, number>()
/**
 * A tenant's sandbox is rebuilt (all its functions compiled again) at most once in this time: within
 * it, work for a sandbox that broke again fails fast with `broken`. A rebuild runs the tenant's top
 * levels, hundreds of ms for a heavy one, on a worker other tenants share; the tenant pays for it
 * (it is part of its calls' time), and this bounds how often it can make its neighbours wait.
 */
const REBUILD_BACKOFF_MS = 1000
/** When each tenant's sandbox was last rebuilt after it broke, in `performance.now()` time. */
const rebuiltAt = new Map<string, number>()
/** When each tenant's sandbox was last used (a call, a compile), in `performance.now()` time. */
const usedAt = new Map<string, number>()
/**
 * The state overlays of the batches this worker is running, by batch id, kept between the pieces
 * of a batch the pool cut across messages (see BatchPlace); dropped when the batch's last call has
 * run, or with the tenant.
 */
const overlays = new Map<number, { tenantId: string; overlay: StateOverlay }>()

/** The overlay of each call of a job, by its batch; null for a batch of one call (an invoke()). */
function overlaysOf(job: Extract<WorkerJob, { kind: 'calls' }>): Array<StateOverlay | null> {
  const each: Array<StateOverlay | null> = []
  for (const place of job.batches) {
    if (place.size === 1) {
      each.push(null)
      continue
    }
    let kept = overlays.get(place.id)
    // The pool sends the writes of the calls before `start` when this worker may not have them;
    // when it does not, this worker ran those calls (or none came before).
    if (kept === undefined || place.overlay !== undefined) {
      kept = { tenantId: job.tenantId, overlay: createStateOverlay(place.overlay) }
      overlays.set(place.id, kept)
    }
    for (let i = 0; i < place.count; i++) each.push(kept.overlay)
  }
  return each
}

/** Forgets the overlays of the batches whose last call is among the first `done` calls of a job. */
function forgetEndedBatches(job: Extract<WorkerJob, { kind: 'calls' }>, done: number): void {
  let end = 0
  for (const place of job.batches) {
    end += place.count
    if (end <= done && place.start + place.count >= place.size) overlays.delete(place.id)
  }
}

/** Longest wait of a state read for a lock (a WAL reader waits only while the WAL is recovered). */
const STATE_READ_TIMEOUT_MS = 250

/**
 * Committed function state, read from the gateway's SQLite file through this worker's own
 * read-only connection (the gateway's database is in WAL mode: reads never wait for its writer).
 * Opened at the first read; a failure to open fails that read, and the next read tries again.
 * Reads honour key and namespace leases against this host's wall clock.
 */
function openStateSource(file: string): StateSource {
  let statements:
    | { get: BetterSqlite3.Statement; keys: BetterSqlite3.Statement; keysBelow: BetterSqlite3.Statement }
    | undefined
  const open = () => {
    if (statements !== undefined) return statements
    // Loaded only by workers that read state: the pool's other workers start without it.
    const Database = createRequire(import.meta.url)('better-sqlite3') as typeof BetterSqlite3
    const db = new Database(file, { readonly: true, fileMustExist: true, timeout: STATE_READ_TIMEOUT_MS })
    const visible = `(expires_at IS NULL OR expires_at > :now) AND NOT EXISTS (
      SELECT 1 FROM state_leases WHERE tenant_id = :tenant AND namespace = :namespace AND expires_at <= :now)`
    const range = 'tenant_id = :tenant AND namespace = :namespace AND key >= :prefix AND key > :after'
    statements = {
      get: db
        .prepare(
          `SELECT value FROM state WHERE tenant_id = :tenant AND namespace = :namespace AND key = :key AND ${visible}`,
        )
        .pluck(),
      keys: db
        .prepare(`SELECT key FROM state WHERE ${range} AND ${visible} ORDER BY key LIMIT :limit`)
        .pluck(),
      keysBelow: db
        .prepare(
          `SELECT key FROM state WHERE ${range} AND key < :end AND ${visible} ORDER BY key LIMIT :limit`,
        )
        .pluck(),
    }
    return statements
  }
  return {
    get: (tenant, namespace, key) =>
      open().get.get({ tenant, namespace, key, now: Date.now() }) as string | undefined,
    keys: (tenant, namespace, prefix, after, limit) => {
      const end = statePrefixEnd(prefix)
      const query = { tenant, namespace, prefix, after, limit, now: Date.now() }
      return (
        end === undefined ? open().keys.all(query) : open().keysBelow.all({ ...query, end })
      ) as string[]
    },
  }
}
const stateSource = start.stateDatabase === undefined ? undefined : openStateSource(start.stateDatabase)
// One module instance kept ready, booted for its tenant's first function, so a tenant's cold start
// waits for neither instantiation nor the bootstrap. It is made again once the worker has been idle
// for REFILL_IDLE_MS: it takes a few ms of this thread, and made at once it would hold up the calls
// that follow a cold start.
const REFILL_IDLE_MS = 5
/**
 * A full garbage collection, run right after a spare instance is made. Each new WebAssembly.Memory
 * makes V8 start an incremental collection for external memory pressure, which it finishes tens of
 * ms later in steps and a final pause of up to 8 ms (measured): left alone, these land in the calls
 * and cold starts that follow. Collected at once, in idle time, the heap is clean when work comes
 * (measured: about 1 ms median with 300 tenants on the worker). V8 only offers this through
 * `--expose-gc`, which the flag exposes to contexts made while it is set; it is unset at once.
 */
type CollectGarbage = (options: { type: 'major'; execution: 'sync' | 'async' }) => void
const collectGarbage = ((): CollectGarbage => {
  // V8's flags belong to the process: without the lock, a worker starting at the same moment could
  // turn the flag off between this one turning it on and making its context.
  const lock = new Int32Array(start.flagLock)
  while (Atomics.compareExchange(lock, 0, 0, 1) !== 0) Atomics.wait(lock, 0, 1, 10)
  setFlagsFromString('--expose-gc')
  try {
    const gc: unknown = runInNewContext('typeof gc === "function" ? gc : undefined')
    // Without it (flags changed by other code of the process) the heap is only left to V8's timing.
    return typeof gc === 'function' ? (gc as CollectGarbage) : () => {}
  } finally {
    setFlagsFromString('--no-expose-gc')
    Atomics.store(lock, 0, 0)
    Atomics.notify(lock, 0)
  }
})()
let spare: Promise<SandboxInstance> | undefined
let refill: NodeJS.Timeout | undefined

function takeInstance(): Promise<SandboxInstance> {
  const instance = spare ?? prepareSandboxInstance(start.memoryLimitBytes)
  spare = undefined
  return instance
}

function refillWhenIdle(delayMs = REFILL_IDLE_MS): void {
  if (spare !== undefined || refill !== undefined) return
  refill = setTimeout(() => {
    refill = undefined
    if (spare !== undefined) return
    // A timer may fire a fraction of a millisecond early by this clock: only the rest is waited.
    const idleMs = performance.now() - lastBusyAt
    if (draining || idleMs < REFILL_IDLE_MS - 1) {
      refillWhenIdle(draining ? REFILL_IDLE_MS : REFILL_IDLE_MS - idleMs)
      return
    }
    const next = prepareSandboxInstance(start.memoryLimitBytes)
    spare = next
    next.then(
      () => {
        if (!draining) collectGarbage({ type: 'major', execution: 'sync' })
      },
      () => {
        if (spare === next) spare = undefined
      },
    )
  }, delayMs)
}

/** The tenant's sandbox; a broken one is dropped and rebuilt with the tenant's functions. */
async function sandboxOf(tenantId: string, messageId: number, unit: number): Promise<TenantSandbox> {
  usedAt.set(tenantId, performance.now())
  const current = sandboxes.get(tenantId)
  if (current !== undefined && !current.broken) return current
  if (current !== undefined) {
    const last = rebuiltAt.get(tenantId)
    if (last !== undefined && performance.now() - last < REBUILD_BACKOFF_MS) {
      throw new SandboxError(
        SANDBOX_ERROR_CODES.broken,
        `Cannot run the functions of tenant '${tenantId}' as its sandbox broke again within ${REBUILD_BACKOFF_MS} ms of being rebuilt: it is rebuilt once that time has passed`,
      )
    }
    rebuiltAt.set(tenantId, performance.now())
    sandboxes.delete(tenantId)
    current.dispose()
  }
  const fresh = await createTenantSandbox({
    tenantId,
    memoryLimitBytes: start.memoryLimitBytes,
    compileDeadlineMs: start.compileDeadlineMs,
    instance: await takeInstance(),
    ...(stateSource === undefined ? {} : { state: stateSource }),
  })
  sandboxes.set(tenantId, fresh)
  for (const [key, entry] of sources.get(tenantId) ?? []) {
    writeProgress(progress, messageId, unit, sharedClockNow() + start.compileDeadlineMs)
    try {
      fresh.compile(key, entry.source, entry.handlers, memoryOption(entry.memoryBytes))
    } catch {
      // It compiled before; a failure now leaves the function out and its invocations say so.
    }
  }
  return fresh
}

const memoryOption = (memoryBytes: number | undefined) => (memoryBytes === undefined ? {} : { memoryBytes })

function failure(error: unknown): UnitResult {
  if (error instanceof SandboxError) {
    return {
      ok: false,
      code: error.code,
      message: error.message,
      ...(error.line === undefined ? {} : { line: error.line }),
      ...(error.column === undefined ? {} : { column: error.column }),
    }
  }
  // Host errors stay here: their messages and stacks name host paths.
  return { ok: false, code: SANDBOX_ERROR_CODES.broken, message: 'The sandbox worker failed' }
}

async function handle(request: WorkerRequest): Promise<WorkerReply> {
  const started = performance.now()
  // Suspensions the pool has now seen are lifted: it has decided where those tenants run.
  for (const [tenantId, messageId] of suspended) {
    if (request.seenReplies >= messageId) suspended.delete(tenantId)
  }
  const results: Array<UnitResult | null> = []
  const spentMs: number[] = []
  const skip = (tenantId: string, units: number) => {
    if (units === 0) return
    suspended.set(tenantId, request.id)
    for (let i = 0; i < units; i++) {
      results.push(null)
      spentMs.push(0)
    }
  }
  let ranUnits = 0
  let budgetSpent = false
  const overBudget = () =>
    ranUnits > 0 && performance.now() - started >= request.budgetMs && othersWaiting(progress)

  for (const job of request.jobs) {
    const units = job.kind === 'calls' ? job.calls.length : 1
    if (job.kind !== 'dropTenant') {
      // Past the budget nothing more starts; the pool sends it again, in each tenant's order.
      if (budgetSpent || overBudget()) {
        budgetSpent = true
        skip(job.tenantId, units)
        continue
      }
      if (suspended.has(job.tenantId)) {
        skip(job.tenantId, units)
        continue
      }
    }
    const unit = results.length
    if (job.kind === 'calls') {
      let done = 0
      const each = overlaysOf(job)
      while (done < job.calls.length) {
        const base = unit + done
        let stop = false
        let outcomes: CallOutcome[]
        // A rebuild of the tenant's sandbox is charged to the tenant, with its next unit's time.
        const setupStarted = performance.now()
        let setupMs = 0
        try {
          const sandbox = await sandboxOf(job.tenantId, request.id, base)
          setupMs = performance.now() - setupStarted
          // The worker's progress record names the call running now and its deadline.
          const mark = (index: number, deadlineAt: number) =>
            writeProgress(progress, request.id, base + index, deadlineAt)
          const calls = done === 0 ? job.calls : job.calls.slice(done)
          outcomes = sandbox.invokeBatch(job.key, job.handler, calls, job.deadlineMs, {
            overlays: done === 0 ? each : each.slice(done),
            onCallStart: mark,
            onReload: mark,
            onCallEnd: (_index, outcome, spent) => {
              results.push(outcome)
              spentMs.push(spent + setupMs)
              setupMs = 0
              ranUnits++
              writeProgress(progress, request.id, results.length, Number.POSITIVE_INFINITY)
              if (
                outcome.ok === false &&
                (outcome.code === SANDBOX_ERROR_CODES.deadline || outcome.code === SANDBOX_ERROR_CODES.memory)
              ) {
                // The pool decides where this tenant runs next (see skip); until then its work waits.
                suspended.set(job.tenantId, request.id)
                stop = true
              } else if (overBudget()) {
                budgetSpent = true
                stop = true
              }
              return stop
            },
          })
        } catch (error) {
          // No sandbox for the tenant (or misuse): the calls left fail with the reason.
          const result = failure(error)
          setupMs = performance.now() - setupStarted
          for (; done < job.calls.length; done++) {
            results.push(result)
            spentMs.push(setupMs)
            setupMs = 0
          }
          break
        }
        done += outcomes.length
        // A broken sandbox ends its batch early: it is rebuilt and the batch goes on.
        if (stop || outcomes.length === 0) break
      }
      skip(job.tenantId, job.calls.length - done)
      forgetEndedBatches(job, done)
      continue
    }
    const jobStarted = performance.now()
    results.push(await runJob(job, request.id, unit))
    spentMs.push(performance.now() - jobStarted)
    ranUnits++
    writeProgress(progress, request.id, results.length, Number.POSITIVE_INFINITY)
  }
  return { id: request.id, results, spentMs }
}

async function runJob(job: Exclude<WorkerJob, { kind: 'calls' }>, messageId: number, unit: number) {
  try {
    switch (job.kind) {
      case 'compile': {
        const sandbox = await sandboxOf(job.tenantId, messageId, unit)
        writeProgress(progress, messageId, unit, sharedClockNow() + start.compileDeadlineMs)
        sandbox.compile(job.key, job.source, job.handlers, memoryOption(job.memoryBytes))
        let functions = sources.get(job.tenantId)
        if (functions === undefined) {
          functions = new Map()
          sources.set(job.tenantId, functions)
        }
        functions.set(job.key, { source: job.source, handlers: job.handlers, memoryBytes: job.memoryBytes })
        return { ok: true, result: null } satisfies UnitResult
      }
      case 'remove': {
        sources.get(job.tenantId)?.delete(job.key)
        const sandbox = sandboxes.get(job.tenantId)
        if (sandbox !== undefined && !sandbox.broken) sandbox.remove(job.key)
        return { ok: true, result: null } satisfies UnitResult
      }
      case 'dropTenant': {
        sources.delete(job.tenantId)
        suspended.delete(job.tenantId)
        rebuiltAt.delete(job.tenantId)
        usedAt.delete(job.tenantId)
        for (const [id, kept] of overlays) if (kept.tenantId === job.tenantId) overlays.delete(id)
        sandboxes.get(job.tenantId)?.dispose()
        sandboxes.delete(job.tenantId)
        return { ok: true, result: null } satisfies UnitResult
      }
    }
  } catch (error) {
    return failure(error)
  }
}

let evictTimer: NodeJS.Timeout | undefined

/**
 * Arms the sweep of idle sandboxes for when the least recently used one reaches `idleEvictMs`. An
 * idle tenant's sandbox (its QuickJS instance, about 0.45 MB of touched memory with one small
 * function, measured) is dropped and its functions are compiled again at its next work, as the
 * sandbox of a broken one is (sandboxOf); what it keeps in module-level variables is lost then.
 */
function evictWhenIdle(): void {
  if (start.idleEvictMs <= 0 || evictTimer !== undefined) return
  let oldest = Number.POSITIVE_INFINITY
  for (const [tenantId, sandbox] of sandboxes) {
    if (!sandbox.broken) oldest = Math.min(oldest, usedAt.get(tenantId) ?? 0)
  }
  if (oldest === Number.POSITIVE_INFINITY) return
  evictTimer = setTimeout(evictIdle, Math.max(1, oldest + start.idleEvictMs - performance.now()))
}

/**
 * Drops the sandboxes not used for `idleEvictMs`, between messages only: work that arrives
 * meanwhile waits in the port's queue and finds the tenant's sandbox gone, which sandboxOf builds
 * again, so no call is lost or runs out of order. The tenant's functions (`sources`), the
 * overlays of its batches and its suspension stay. A broken sandbox is left to sandboxOf, which
 * rebuilds it at most once per REBUILD_BACKOFF_MS.
 */
function evictIdle(): void {
  evictTimer = undefined
  // A message is running: the drain arms the sweep again when it ends.
  if (draining) return
  const before = performance.now() - start.idleEvictMs
  let evicted = 0
  for (const [tenantId, sandbox] of sandboxes) {
    if (sandbox.broken || (usedAt.get(tenantId) ?? 0) > before) continue
    sandboxes.delete(tenantId)
    usedAt.delete(tenantId)
    sandbox.dispose()
    evicted++
  }
  if (evicted > 0) {
    // A WebAssembly.Memory is given back only when the object is collected, which V8 would leave
    // for pressure an idle worker never makes. Measured: a collection run at once ('sync') frees
    // none of the dropped memories, not even when repeated; one run from a task of its own
    // ('async', a few ms later) frees them all.
    collectGarbage({ type: 'major', execution: 'async' })
    port?.postMessage({ evicted } satisfies WorkerNotice)
  }
  evictWhenIdle()
}

// Messages are handled strictly one after another: each may wait for a sandbox to be built.
const inbox: WorkerRequest[] = []
let draining = false
let lastBusyAt = 0
async function drain(): Promise<void> {
  draining = true
  while (inbox.length > 0) {
    const request = inbox.shift() as WorkerRequest
    let reply: WorkerReply
    try {
      reply = await handle(request)
    } catch {
      reply = { id: request.id, results: [], spentMs: [] }
    }
    writeProgress(progress, 0, 0, Number.POSITIVE_INFINITY)
    port?.postMessage(reply)
  }
  draining = false
  lastBusyAt = performance.now()
  refillWhenIdle()
  evictWhenIdle()
}

port.on('message', (request: WorkerRequest) => {
  inbox.push(request)
  if (!draining) void drain()
})

// The first spare instance is made before the worker says it is ready: no tenant waits for it.
spare = prepareSandboxInstance(start.memoryLimitBytes)
spare.then(
  () => port.postMessage({ ready: true } satisfies WorkerNotice),
  () => {
    spare = undefined
    port.postMessage({ ready: true } satisfies WorkerNotice)
  },
)
