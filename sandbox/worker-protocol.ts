import type { SandboxErrorCode } from './errors.ts'
import type { HandlerName, InvocationCall, InvocationResult, StateWrite } from './tenant-sandbox.ts'

/** What the pool hands a worker when it starts it. */
export interface WorkerStartData {
  memoryLimitBytes: number
  compileDeadlineMs: number
  /**
   * A tenant sandbox not used for this long is dropped, its functions kept as source and compiled
   * again at its next work (see worker-main's evictIdle); 0 keeps sandboxes until they break.
   */
  idleEvictMs: number
  /** The worker's progress record (see writeProgress). */
  progress: SharedArrayBuffer
  /**
   * The gateway's SQLite file, which the worker opens read-only for the committed function state
   * `ctx.state` reads; none: functions see no committed state.
   */
  stateDatabase: string | undefined
  /**
   * One Int32 shared by every worker of the process: held while a worker turns V8's process-wide
   * `--expose-gc` flag on and off (see worker-main's collectGarbage).
   */
  flagLock: SharedArrayBuffer
}

/**
 * `count` calls of a `calls` job that come from one `invokeBatch()`: its calls `start` to `start +
 * count` of `size`. A batch's calls read each other's state writes (see
 * TenantSandbox.invokeBatch), and a batch may be cut across messages: the worker keeps the batch's
 * overlay between its pieces, and the pool sends `overlay` (the writes of the calls before
 * `start`) when the worker may not have it, after a move or a restart.
 */
export interface BatchPlace {
  id: number
  start: number
  count: number
  size: number
  overlay?: StateWrite[]
}

/**
 * One piece of work in a message to a worker. A `calls` job counts as one unit per call, the
 * others as one unit each; replies and the progress record count in units.
 */
export type WorkerJob =
  | {
      kind: 'compile'
      tenantId: string
      key: string
      source: string
      handlers: HandlerName[]
      memoryBytes: number | undefined
    }
  | { kind: 'remove'; tenantId: string; key: string }
  /** Frees a tenant's sandbox: the tenant left this worker or was removed. */
  | { kind: 'dropTenant'; tenantId: string }
  | {
      kind: 'calls'
      tenantId: string
      key: string
      handler: HandlerName
      deadlineMs: number
      calls: InvocationCall[]
      /** Where its calls come from, in order: pieces of one or more batches. */
      batches: BatchPlace[]
    }

/** A message from the pool to a worker: jobs run in order, tenants' jobs interleaved by the pool. */
export interface WorkerRequest {
  id: number
  /**
   * The last message id whose reply the pool had read when it built this one. A tenant that ran
   * past a deadline in a later message is skipped here: the pool had not yet decided where it runs.
   */
  seenReplies: number
  /**
   * Once the message has used this much time while another tenant waits (see setWaiting), the
   * worker hands back the units it has not started.
   */
  budgetMs: number
  jobs: WorkerJob[]
}

/** How one unit ended. */
export type UnitResult =
  | { ok: true; result: InvocationResult | null }
  | { ok: false; code: SandboxErrorCode; message: string; line?: number; column?: number }

/** A worker's answer to one message: one entry per unit, null for a unit it did not run. */
export interface WorkerReply {
  id: number
  results: Array<UnitResult | null>
  /** Host time each unit took, in ms (0 for units not run). */
  spentMs: number[]
}

/**
 * A note from a worker that is no answer to a message: it is ready (its first spare instance is
 * made), or it dropped the sandboxes of `evicted` tenants it had not used for `idleEvictMs`.
 */
export type WorkerNotice = { ready: true } | { evicted: number }

/** What the worker is running now, for the pool's watchdog; written by the worker only. */
export interface Progress {
  /** The message being worked on, or 0 when idle. */
  messageId: number
  unit: number
  /** When the unit's deadline passes, in `sharedClockNow()` time; Infinity outside guest code. */
  deadlineAt: number
}

const FIELDS = 3

/**
 * Views on the shared memory of a worker's progress record: a sequence number and three numbers
 * written by the worker, and a flag written by the pool (see setWaiting).
 */
export interface ProgressViews {
  /** [sequence, waiting] */
  sequence: Int32Array
  fields: Float64Array
}

/** Shared memory for a progress record, all zeros (idle). */
export function createProgressBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(8 + FIELDS * 8)
}

export function progressViews(buffer: SharedArrayBuffer): ProgressViews {
  return { sequence: new Int32Array(buffer, 0, 2), fields: new Float64Array(buffer, 8, FIELDS) }
}

/**
 * Writes the progress record. A sequence lock (odd while writing) lets the other thread read the
 * three numbers consistently without a lock; the writer is never blocked.
 */
export function writeProgress(
  views: ProgressViews,
  messageId: number,
  unit: number,
  deadlineAt: number,
): void {
  Atomics.add(views.sequence, 0, 1)
  views.fields[0] = messageId
  views.fields[1] = unit
  views.fields[2] = deadlineAt
  Atomics.add(views.sequence, 0, 1)
}

/**
 * Written by the pool: whether a tenant with nothing in flight on this worker has work waiting. The
 * worker cuts a message short at its budget only then; alone, it may as well finish the message.
 */
export function setWaiting(views: ProgressViews, waiting: boolean): void {
  Atomics.store(views.sequence, 1, waiting ? 1 : 0)
}

export function othersWaiting(views: ProgressViews): boolean {
  return Atomics.load(views.sequence, 1) === 1
}

/** Reads of the progress record before readProgress gives up: a write takes a few ns. */
const MAX_READ_ATTEMPTS = 1000

/**
 * Reads the progress record written by the worker; `undefined` when no consistent read came in
 * MAX_READ_ATTEMPTS tries (a worker stopped in the middle of a write), for the caller to try later.
 */
export function readProgress(views: ProgressViews): Progress | undefined {
  for (let attempt = 0; attempt < MAX_READ_ATTEMPTS; attempt++) {
    const before = Atomics.load(views.sequence, 0)
    const progress = {
      messageId: views.fields[0] ?? 0,
      unit: views.fields[1] ?? 0,
      deadlineAt: views.fields[2] ?? 0,
    }
    if (before % 2 === 0 && Atomics.load(views.sequence, 0) === before) return progress
  }
  return undefined
}
