import { getRandomValues } from 'node:crypto'
import {
  newQuickJSWASMModuleFromVariant,
  newVariant,
  type QuickJSContext,
  type QuickJSHandle,
  type QuickJSRuntime,
  type QuickJSWASMModule,
  RELEASE_SYNC,
} from 'quickjs-emscripten'
import { BYTES_MARKER, fromBoundaryJson, toBoundaryJson } from './bytes.ts'
import { SANDBOX_ERROR_CODES, SandboxError, type SandboxErrorCode } from './errors.ts'
import { GUEST_BOOTSTRAP } from './guest-bootstrap.ts'
import { GUEST_LIBRARIES } from './guest-libraries.ts'
import { quickJSWasmBytes } from './quickjs-wasm.ts'
import { sharedClockNow } from './shared-clock.ts'
import { namespacePathProblem, STATE_LIMITS } from './state-rules.ts'

export { STATE_LIMITS }

const WASM_PAGE_BYTES = 65_536
// Emscripten's build of QuickJS starts with 256 pages (16 MiB) of memory; the cap is above that.
const INITIAL_PAGES = 256
const MIB = 1024 * 1024
/** The smallest per-function memory limit: a runtime, its context and the bootstrap take ~100 KiB. */
const MIN_FUNCTION_MEMORY_BYTES = MIB
/** Longest guest error text kept in a message. */
const MAX_MESSAGE_CHARS = 1000

let compiled: Promise<WebAssembly.Module> | undefined

/** The QuickJS WebAssembly module, compiled once per thread and instantiated once per tenant. */
export function quickJSWasmModule(): Promise<WebAssembly.Module> {
  if (compiled === undefined) {
    compiled = WebAssembly.compile(quickJSWasmBytes())
  }
  return compiled
}

/**
 * An instantiated QuickJS module with its own capped memory, not yet given to a tenant, with a
 * runtime and context in which the bootstrap has been evaluated, for the tenant's first function. A
 * worker keeps one ready so that a tenant's cold start waits for neither.
 */
export interface SandboxInstance {
  readonly memoryLimitBytes: number
}

interface PreparedInstance extends SandboxInstance {
  module: QuickJSWASMModule
  memory: WebAssembly.Memory
  /** Failed attempts to grow `memory` (the tenant's cap), counted by the host, never by the guest. */
  growth: { failures: number }
  taken: boolean
  /** A runtime with the bootstrap evaluated, for the first function built; taken by it. */
  booted: { runtime: QuickJSRuntime; context: QuickJSContext; factory: QuickJSHandle } | undefined
}

/** Instantiates the QuickJS module with a memory capped at `memoryLimitBytes`, for one tenant. */
export async function prepareSandboxInstance(memoryLimitBytes: number): Promise<SandboxInstance> {
  checkMemoryLimit(memoryLimitBytes)
  const memory = new WebAssembly.Memory({
    initial: INITIAL_PAGES,
    maximum: Math.floor(memoryLimitBytes / WASM_PAGE_BYTES),
  })
  // Emscripten's heap grows with memory.grow(), which throws past the maximum and makes malloc
  // return NULL. Counting those failures here tells the host, without asking the guest, that a call
  // ran into the tenant's cap: QuickJS's 'out of memory' error is text a guest can forge.
  const growth = { failures: 0 }
  const grow = memory.grow.bind(memory)
  Object.defineProperty(memory, 'grow', {
    value: (deltaPages: number): number => {
      try {
        return grow(deltaPages)
      } catch (error) {
        growth.failures++
        throw error
      }
    },
  })
  const variant = newVariant(RELEASE_SYNC, { wasmModule: await quickJSWasmModule(), wasmMemory: memory })
  const module = await newQuickJSWASMModuleFromVariant(variant)
  // The bootstrap is the gateway's own code and the same for every tenant: evaluating it here takes
  // most of a function's build (its parse) off the cold start. The function's limits, interrupt
  // handler and module loader are set when it is built, before any tenant code runs.
  const runtime = module.newRuntime()
  const context = runtime.newContext()
  const evaluated = context.evalCode(GUEST_BOOTSTRAP, 'taureau:bootstrap')
  if (evaluated.error) {
    const error = describeError(dumpError(context, evaluated.error))
    evaluated.error.dispose()
    context.dispose()
    runtime.dispose()
    throw new Error(`Cannot boot a function's context: ${error}`)
  }
  const booted = { runtime, context, factory: evaluated.value }
  const prepared: PreparedInstance = { memoryLimitBytes, module, memory, growth, taken: false, booted }
  return prepared
}

function checkMemoryLimit(memoryLimitBytes: number): void {
  if (!Number.isInteger(memoryLimitBytes) || memoryLimitBytes < 32 * MIB) {
    throw new RangeError(
      `Cannot create a sandbox with a memory limit of ${memoryLimitBytes} bytes (at least 32 MiB)`,
    )
  }
}

/** Options of {@link createTenantSandbox}. */
export interface TenantSandboxOptions {
  /**
   * The sandbox's id: the tenant's id, or the tenant's id, U+0000 and a suffix for a sandbox of
   * the tenant kept apart (the gateway's scratch sandbox for test invocations). `ctx.tenant` is
   * the part before U+0000.
   */
  tenantId: string
  /** Hard cap of the tenant's WebAssembly memory, in bytes; at least 32 MiB. */
  memoryLimitBytes: number
  /**
   * QuickJS stack limit of each function, in bytes. Default 256 KiB (about 1,500 nested calls).
   * QuickJS counts its C stack, but each C frame also takes native stack in the host thread; the
   * parser, the worst measured, takes up to 32 times more. So the thread needs 64 times this much
   * native stack (the pool's workers get 16 MiB) or deep recursion becomes a host stack overflow,
   * which breaks the sandbox instead of failing the invocation.
   */
  stackBytes?: number
  /** Largest JSON outcome of one invocation, in bytes. Default 1 MiB. */
  maxOutputBytes?: number
  /** Most publishes and most emits of one invocation. Default 100 each. */
  maxEffects?: number
  /** Most log lines of one invocation; further lines are counted and dropped. Default 100. */
  maxLogLines?: number
  /** CPU deadline of a function's top-level code when it is compiled. Default 1000 ms. */
  compileDeadlineMs?: number
  /** A module instance from {@link prepareSandboxInstance}, used instead of a new one. */
  instance?: SandboxInstance
  /**
   * Committed function state, read by `ctx.state` for keys no write of the call or of the
   * batch's earlier calls has touched. Without it, functions see no committed state.
   */
  state?: StateSource
}

/** What a function's module must export, checked at compile time. */
export type HandlerName = 'onMessage' | 'onSchedule' | 'onState'

/** Options of a compiled function. */
export interface CompileOptions {
  /**
   * The function's memory limit, in bytes, at least 1 MiB; clamped to the tenant's cap. Without
   * it, only the tenant's cap applies. See {@link TenantSandbox.compile} for what it bounds.
   */
  memoryBytes?: number
}

/** One buffered publish of an invocation, tenant-relative. */
export interface GuestPublish {
  topic: string
  value: unknown
  qos: 0 | 1 | 2
  retain: boolean
}

/** One buffered record for the uplink. */
export interface GuestEmit {
  record: unknown
  stream: string
}

/** The outcome of an invocation that returned. */
export interface InvocationResult {
  value: unknown
  publishes: GuestPublish[]
  emits: GuestEmit[]
  logs: string[]
  durationMs: number
  /** The tenant module's WebAssembly memory after the call, in bytes. */
  memoryBytes: number
  /**
   * The call's writes to function state, one per key it wrote (the last write wins; an increment
   * after a set or delete becomes a set), for the host to commit with the other effects.
   */
  state: StateWrite[]
  /** The leases the call put on (or removed from) whole namespaces, one per namespace. */
  leases: StateLease[]
}

/** What `ctx` tells the function about itself and the invocation. */
export interface InvocationInfo {
  name: string
  version: number
  config: Record<string, unknown>
  /** The invocation's time (the message's), ms since the epoch. */
  now: number
}

/** One invocation of a batch: the handler's arguments (before `ctx`) and what `ctx` tells. */
export interface InvocationCall {
  args: unknown[]
  info: InvocationInfo
}

/** How one invocation of a batch ended; one call's failure never fails the others. */
export type CallOutcome =
  | { ok: true; result: InvocationResult }
  | { ok: false; code: SandboxErrorCode; message: string }

/** Hooks of {@link TenantSandbox.invokeBatch}, for a scheduler that watches or cuts a batch. */
export interface BatchControl {
  /** Called before call `index` starts; `deadlineAt` is its deadline in {@link sharedClockNow} time. */
  onCallStart?(index: number, deadlineAt: number): void
  /**
   * Called before call `index` when its function must first get a fresh runtime (its last call
   * left promise jobs pending), with the compile deadline that rebuild runs under. The rebuild's
   * time is part of the call's `spentMs`: the tenant pays for it.
   */
  onReload?(index: number, deadlineAt: number): void
  /** Called after call `index`, with the host time it took; returning true ends the batch there. */
  onCallEnd?(index: number, outcome: CallOutcome, spentMs: number): boolean | undefined
  /**
   * The overlay of each call: the state writes of the earlier successful calls of its batch, for a
   * scheduler that cuts batches and joins pieces of several (it keeps each batch's overlay between
   * its pieces). A call reads through its overlay and, when it succeeds, adds its writes to it;
   * null makes a call a batch of its own. Without them the calls of this `invokeBatch()` are one
   * batch.
   */
  overlays?: ReadonlyArray<StateOverlay | null>
}

/**
 * One tenant's sandbox: its own QuickJS WebAssembly instance (its own capped linear memory), and in
 * it one QuickJS runtime and context per function, so a function never sees another's globals or
 * prototypes. Functions are compiled as ES modules and invoked with JSON values; nothing of the
 * host enters the guest but the state function that `ctx.state` calls, which only the bootstrap
 * holds. After a memory failure or a host-side fault the sandbox is `broken` and must be replaced:
 * it is never trusted to recover, nor to dispose cleanly.
 */
export interface TenantSandbox {
  readonly tenantId: string
  readonly broken: boolean
  /**
   * Compiles `source` as function `key` in a fresh runtime, replacing an earlier version only if it
   * compiles; throws `invalid_function` with line and column. `memoryBytes` is enforced two ways,
   * as QuickJS's own limit is no byte cap in this WebAssembly build (it counts 8 bytes per
   * allocation, as Emscripten has no `malloc_usable_size`): QuickJS refuses any single allocation
   * larger than it, and one invocation may not grow the tenant's memory by more than it (checked
   * at interrupt polls and after the call). The tenant's capped memory stays the hard cap.
   */
  compile(key: string, source: string, handlers: readonly HandlerName[], options?: CompileOptions): void
  /** Forgets a compiled function and frees its runtime. */
  remove(key: string): void
  /** Runs a handler of a compiled function with the given arguments (before `ctx`). */
  invoke(
    key: string,
    handler: HandlerName,
    args: unknown[],
    info: InvocationInfo,
    deadlineMs: number,
  ): InvocationResult
  /**
   * Runs the calls in order, each with its own deadline of `deadlineMs`, and returns one outcome
   * per call run. Fewer outcomes than calls come back when `control` ended the batch or the
   * sandbox broke (the last outcome then says why): the caller runs the rest elsewhere. Each
   * call reads the state writes of the batch's earlier successful calls (read-your-writes across
   * the batch, as the host commits them in order), through `control.overlays` when given.
   */
  invokeBatch(
    key: string,
    handler: HandlerName,
    calls: readonly InvocationCall[],
    deadlineMs: number,
    control?: BatchControl,
  ): CallOutcome[]
  dispose(): void
  [Symbol.dispose](): void
}

/** A function's runtime, context and the bootstrap's entry points in it. */
interface FunctionRuntime {
  key: string
  source: string
  handlers: readonly HandlerName[]
  memoryBytes: number | undefined
  runtime: QuickJSRuntime
  context: QuickJSContext
  /** Handles to dispose, in order of creation. */
  handles: QuickJSHandle[]
  setInfo: QuickJSHandle
  run: QuickJSHandle
  handlerNames: Map<string, QuickJSHandle>
  /** What `ctx` currently tells, to call `setInfo` only when it changes. */
  info: { name: string; version: number; config: unknown; configJson: string } | undefined
  /** Set when a call left promise jobs pending: the runtime is rebuilt before the next call. */
  stale: boolean
}

interface GuestError {
  name?: unknown
  message?: unknown
  stack?: unknown
  lineNumber?: unknown
}

/** Creates a tenant sandbox from the shared precompiled module. */
export async function createTenantSandbox(options: TenantSandboxOptions): Promise<TenantSandbox> {
  checkMemoryLimit(options.memoryLimitBytes)
  const instance = (options.instance ?? (await prepareSandboxInstance(options.memoryLimitBytes))) as
    | PreparedInstance
    | undefined
  if (instance === undefined || instance.taken || instance.memoryLimitBytes !== options.memoryLimitBytes) {
    throw new TypeError(
      `Cannot create the sandbox of tenant '${options.tenantId}' as its instance is taken or has another memory limit`,
    )
  }
  instance.taken = true
  const prepared = instance
  const { module, memory, growth } = instance
  const tenantId = options.tenantId
  const capBytes = options.memoryLimitBytes
  const stackBytes = options.stackBytes ?? 256 * 1024
  const maxOutputBytes = options.maxOutputBytes ?? MIB
  const maxEffects = options.maxEffects ?? 100
  const maxLogLines = options.maxLogLines ?? 100
  const compileDeadlineMs = options.compileDeadlineMs ?? 1000
  const stateSource = options.state
  /** The tenant itself: a sandbox kept apart (see tenantId) reads and writes the tenant's state. */
  const tenant = tenantId.split('\u0000')[0] ?? tenantId
  const limits = { tenant, maxEffects, maxLogs: maxLogLines, maxStateValueBytes: STATE_LIMITS.maxValueBytes }
  const functions = new Map<string, FunctionRuntime>()
  // The state of the call running now: the state function answers only while one runs.
  let session: StateSession | undefined
  const stateCall = (context: QuickJSContext, args: QuickJSHandle[]): QuickJSHandle | undefined => {
    try {
      const reply =
        session === undefined
          ? 'eCannot use ctx.state outside an invocation'
          : answerState(
              session,
              args.map((arg) => readStateArg(context, arg)),
            )
      return context.newString(reply)
    } catch {
      // Out of memory in the guest: the host sees it (memoryHit) and fails the call.
      return undefined
    }
  }
  let broken = false
  let disposed = false

  // One interrupt handler for all the tenant's runtimes: only one of them runs at a time.
  let deadlineAt = Number.POSITIVE_INFINITY
  // The tenant's memory size above which the running call breaks its function's memory limit.
  let memoryCeiling = Number.POSITIVE_INFINITY
  let memoryExceeded = false
  const interrupt = (): boolean => {
    if (memory.buffer.byteLength > memoryCeiling) {
      memoryExceeded = true
      return true
    }
    return sharedClockNow() > deadlineAt
  }
  // Grow failures seen when the running call or compile started: more now means it hit the cap.
  let growFailuresAtStart = 0
  /** Whether the host saw the running code run out of memory: never decided from guest text. */
  const memoryHit = (): boolean =>
    memoryExceeded || memory.buffer.byteLength > memoryCeiling || growth.failures !== growFailuresAtStart
  // Set when a function imports something other than a guest library, for a clearer message.
  let refusedImport: string | undefined
  const loadModule = (name: string) => {
    if (Object.hasOwn(GUEST_LIBRARIES, name)) return GUEST_LIBRARIES[name] as string
    refusedImport = name
    return { error: new Error(`Cannot import '${name}': no such module`) }
  }

  const fail = (code: SandboxErrorCode, message: string, cause?: unknown): never => {
    throw new SandboxError(code, message, cause === undefined ? {} : { cause })
  }
  /** Runs host-side work on the instance; a fault there leaves the instance untrusted. */
  const guard = <T>(run: () => T): T => {
    if (broken || disposed) {
      fail(SANDBOX_ERROR_CODES.broken, `Cannot use the sandbox of tenant '${tenantId}' as it is broken`)
    }
    try {
      return run()
    } catch (error) {
      if (error instanceof SandboxError) throw error
      // An abort, an out-of-bounds access or a host stack overflow inside the WebAssembly code.
      broken = true
      return fail(
        SANDBOX_ERROR_CODES.broken,
        `The sandbox of tenant '${tenantId}' failed and must be rebuilt`,
        error,
      )
    }
  }
  const limitText = (fn: FunctionRuntime) =>
    fn.memoryBytes === undefined
      ? `its tenant's limit is ${formatBytes(capBytes)}`
      : `its limit is ${formatBytes(fn.memoryBytes)}`

  /** Disposes a function's handles, context and runtime; a failure leaves the instance untrusted. */
  const disposeFunction = (fn: FunctionRuntime | Partial<FunctionRuntime>): void => {
    try {
      for (const handle of (fn.handles ?? []).reverse()) if (handle.alive) handle.dispose()
      fn.context?.dispose()
      fn.runtime?.dispose()
    } catch (error) {
      broken = true
      fail(
        SANDBOX_ERROR_CODES.broken,
        `The sandbox of tenant '${tenantId}' failed and must be rebuilt`,
        error,
      )
    }
  }

  /** Calls a bootstrap function with string arguments; returns its string result or the dumped error. */
  const callGuest = (
    fn: Pick<FunctionRuntime, 'context'>,
    target: QuickJSHandle,
    args: QuickJSHandle[],
  ): { text: string } | { error: GuestError | null } => {
    const { context } = fn
    const result = context.callFunction(target, context.undefined, ...args)
    if (result.error) {
      const error = dumpError(context, result.error)
      result.error.dispose()
      return { error }
    }
    const text = context.typeof(result.value) === 'string' ? context.getString(result.value) : ''
    result.value.dispose()
    return { text }
  }

  /**
   * Builds a function's runtime: the bootstrap, then the module, then the checks of its exports.
   * Throws `invalid_function` (or `memory`, leaving the sandbox broken) and frees what it made.
   */
  const buildFunction = (
    key: string,
    source: string,
    handlers: readonly HandlerName[],
    memoryBytes: number | undefined,
  ): FunctionRuntime => {
    const refuse = (why: string, where: { line?: number | undefined; column?: number | undefined } = {}) =>
      new SandboxError(
        SANDBOX_ERROR_CODES.invalidFunction,
        `Cannot deploy function '${key}' as ${why}`,
        where,
      )
    const partial: Partial<FunctionRuntime> & { handles: QuickJSHandle[] } = { handles: [] }
    memoryExceeded = false
    growFailuresAtStart = growth.failures
    refusedImport = undefined
    try {
      const ready = prepared.booted
      prepared.booted = undefined
      if (ready !== undefined) partial.handles.push(ready.factory)
      const runtime = ready?.runtime ?? module.newRuntime()
      partial.runtime = runtime
      // QuickJS checks each allocation's size against this limit (see compile()). Without a
      // function limit there is none: a request past the tenant's cap then fails in memory.grow(),
      // where the host sees it (see prepareSandboxInstance).
      runtime.setMemoryLimit(memoryBytes ?? -1)
      runtime.setMaxStackSize(stackBytes)
      runtime.setModuleLoader(loadModule)
      runtime.setInterruptHandler(interrupt)
      const context = ready?.context ?? runtime.newContext()
      partial.context = context
      deadlineAt = sharedClockNow() + compileDeadlineMs
      memoryCeiling =
        memoryBytes === undefined ? Number.POSITIVE_INFINITY : memory.buffer.byteLength + memoryBytes
      const keep = (handle: QuickJSHandle): QuickJSHandle => {
        partial.handles.push(handle)
        return handle
      }
      /** The value of a boot step; its failure is the sandbox's (memory) or the gateway's own. */
      const booted = (result: ReturnType<QuickJSContext['evalCode']>): QuickJSHandle => {
        if (!result.error) return keep(result.value)
        const error = dumpError(context, result.error)
        result.error.dispose()
        if (memoryHit()) throw memoryFailure()
        throw new Error(`Cannot boot a function's context: ${describeError(error)}`)
      }
      const factory = ready?.factory ?? booted(context.evalCode(GUEST_BOOTSTRAP, 'taureau:bootstrap'))
      // Math.random's seed: 128 bits of host randomness per runtime (see GUEST_BOOTSTRAP).
      const seed = Array.from(getRandomValues(new Uint32Array(4)))
      const setup = keep(context.newString(JSON.stringify({ ...limits, seed })))
      // ctx.state's way to the host: handed to the bootstrap, which keeps it out of the function's reach.
      const state = keep(context.newFunction('state', (...args) => stateCall(context, args)))
      const api = booted(context.callFunction(factory, context.undefined, setup, state))
      const setModule = keep(context.getProp(api, 'setModule'))
      partial.setInfo = keep(context.getProp(api, 'setInfo'))
      partial.run = keep(context.getProp(api, 'run'))

      const evaluated = context.evalCode(source, `${key}.js`, { type: 'module' })
      if (evaluated.error) {
        const error = dumpError(context, evaluated.error)
        evaluated.error.dispose()
        if (memoryHit()) throw memoryFailure()
        if (isInterrupted(error))
          throw refuse(`its top level ran past the ${compileDeadlineMs} ms compile deadline`)
        if (refusedImport !== undefined) {
          throw refuse(
            `it imports '${clip(refusedImport)}': only ${Object.keys(GUEST_LIBRARIES).join(', ')} can be imported`,
          )
        }
        const where = /:(\d+):(\d+)/.exec(typeof error?.stack === 'string' ? error.stack : '')
        const line =
          where?.[1] === undefined
            ? typeof error?.lineNumber === 'number'
              ? error.lineNumber
              : undefined
            : Number(where[1])
        const column = where?.[2] === undefined ? undefined : Number(where[2])
        const place =
          line === undefined ? '' : ` (line ${line}${column === undefined ? '' : `, column ${column}`})`
        const why =
          error?.name === 'SyntaxError'
            ? `its source does not compile: ${describeError(error)}${place}`
            : `its top level threw ${describeError(error)}${place}`
        throw refuse(why, { line, column })
      }
      const namespace = keep(evaluated.value)
      const checked = callGuest(partial as FunctionRuntime, setModule, [
        namespace,
        keep(context.newString(JSON.stringify(handlers))),
      ])
      if ('error' in checked) {
        if (memoryHit()) throw memoryFailure()
        if (isInterrupted(checked.error)) {
          throw refuse(`its exports ran past the ${compileDeadlineMs} ms compile deadline`)
        }
        throw refuse(`its exports cannot be read: ${describeError(checked.error)}`)
      }
      if (checked.text !== '') throw refuse(checked.text)
      if (runtime.hasPendingJob()) {
        throw refuse(
          'its top level leaves promise callbacks pending: handlers are synchronous, so promise callbacks never run',
        )
      }
      if (memoryHit()) throw memoryFailure()
      // Only the handles the invocations need stay alive.
      namespace.dispose()
      setModule.dispose()
      return {
        key,
        source,
        handlers,
        memoryBytes,
        runtime,
        context,
        handles: partial.handles.filter((handle) => handle.alive),
        setInfo: partial.setInfo,
        run: partial.run,
        handlerNames: new Map(),
        info: undefined,
        stale: false,
      }
    } catch (error) {
      // A memory failure leaves the instance untrusted: it is dropped, not asked to clean up.
      if (!broken) disposeFunction(partial)
      throw error
    } finally {
      deadlineAt = Number.POSITIVE_INFINITY
      memoryCeiling = Number.POSITIVE_INFINITY
    }

    function memoryFailure(): SandboxError {
      broken = true
      return new SandboxError(
        SANDBOX_ERROR_CODES.memory,
        `Cannot deploy function '${key}' as its top level ran out of memory`,
      )
    }
  }

  const outcomeOf = (code: SandboxErrorCode, message: string): CallOutcome => ({ ok: false, code, message })

  /** Runs one call; never throws for what the guest did, only for host faults (left to guard). */
  const runCall = (
    fn: FunctionRuntime,
    handler: HandlerName,
    call: InvocationCall,
    callDeadlineAt: number,
    deadlineMs: number,
    overlay: StateOverlay,
  ): CallOutcome => {
    const { key } = fn
    const started = performance.now()
    let json: string
    let info: { json: string; configJson: string } | undefined
    try {
      if (
        !Array.isArray(call.args) ||
        typeof call.info?.now !== 'number' ||
        !Number.isFinite(call.info.now)
      ) {
        throw new TypeError('a call needs an args array and info.now as a finite number')
      }
      json = toBoundaryJson([call.info.now, ...call.args])
      info = infoChange(fn, call.info)
    } catch (error) {
      return outcomeOf(
        SANDBOX_ERROR_CODES.handlerThrew,
        `Cannot run function '${key}' as its arguments cannot be serialized: ${(error as Error).message}`,
      )
    }
    memoryExceeded = false
    growFailuresAtStart = growth.failures
    memoryCeiling =
      fn.memoryBytes === undefined ? Number.POSITIVE_INFINITY : memory.buffer.byteLength + fn.memoryBytes
    deadlineAt = callDeadlineAt
    const state = openStateSession(
      tenant,
      String(call.info.name),
      stateSource,
      overlay,
      maxEffects,
      maxOutputBytes,
    )
    session = state
    let reply: { text: string } | { error: GuestError | null }
    try {
      reply = (info === undefined ? undefined : setInfo(fn, call.info, info)) ?? runGuest(fn, handler, json)
    } finally {
      deadlineAt = Number.POSITIVE_INFINITY
      session = undefined
    }
    const grewPastLimit = memoryHit()
    memoryCeiling = Number.POSITIVE_INFINITY
    const durationMs = performance.now() - started
    // Promise jobs never run (handlers are synchronous) and a runtime cannot drop its job queue,
    // so a function that leaves jobs behind gets a fresh runtime, before its next call.
    const jobsLeft = fn.runtime.hasPendingJob()

    let outcome: CallOutcome
    if (grewPastLimit) {
      broken = true
      outcome = outcomeOf(
        SANDBOX_ERROR_CODES.memory,
        `Function '${key}' ran out of memory (${limitText(fn)})`,
      )
    } else if ('error' in reply && isInterrupted(reply.error)) {
      outcome = outcomeOf(
        SANDBOX_ERROR_CODES.deadline,
        `Function '${key}' ran past its ${deadlineMs} ms deadline`,
      )
    } else if (state.failure !== undefined) {
      // Not the function's doing, whatever it made of the error it got.
      outcome = outcomeOf(SANDBOX_ERROR_CODES.broken, `Cannot run function '${key}' as ${state.failure}`)
    } else if (state.refusal !== undefined) {
      // A bound of ctx.state fails the invocation even when the function caught the error.
      outcome = outcomeOf(SANDBOX_ERROR_CODES.badOutput, `Function '${key}' ${state.refusal}`)
    } else if ('error' in reply) {
      outcome = outcomeOf(
        SANDBOX_ERROR_CODES.handlerThrew,
        `Function '${key}' failed: ${describeError(reply.error)}`,
      )
    } else {
      outcome = readOutcome(fn, reply.text, durationMs, state)
    }
    if (jobsLeft && !broken) {
      // Rebuilt before the next call, under the compile deadline and not this call's (its top
      // level may take far longer than a call may), and with that call's time: see invokeBatch.
      fn.stale = true
      if (outcome.ok) {
        outcome = outcomeOf(
          SANDBOX_ERROR_CODES.handlerThrew,
          `Function '${key}' left promise callbacks pending: handlers are synchronous, so promise callbacks never run (its runtime is reset)`,
        )
      }
    }
    return outcome
  }

  /** What to tell the guest `ctx` says, or nothing if it is what the function last saw. */
  const infoChange = (
    fn: FunctionRuntime,
    info: InvocationInfo,
  ): { json: string; configJson: string } | undefined => {
    const last = fn.info
    const same = last !== undefined && last.name === info.name && last.version === info.version
    if (same && last.config === info.config) return undefined
    const configJson = JSON.stringify(info.config ?? {})
    if (same && configJson === last.configJson) {
      last.config = info.config
      return undefined
    }
    const json = `{"name":${JSON.stringify(String(info.name))},"version":${JSON.stringify(info.version ?? null)},"config":${configJson}}`
    return { json, configJson }
  }

  /** Tells the guest what `ctx` says; returns the guest's error or nothing. */
  const setInfo = (
    fn: FunctionRuntime,
    info: InvocationInfo,
    change: { json: string; configJson: string },
  ): { error: GuestError | null } | undefined => {
    const text = fn.context.newString(change.json)
    const reply = callGuest(fn, fn.setInfo, [text])
    text.dispose()
    if ('error' in reply) {
      fn.info = undefined
      return reply
    }
    fn.info = { name: info.name, version: info.version, config: info.config, configJson: change.configJson }
    return undefined
  }

  const runGuest = (
    fn: FunctionRuntime,
    handler: HandlerName,
    json: string,
  ): { text: string } | { error: GuestError | null } => {
    const { context } = fn
    let name = fn.handlerNames.get(handler)
    if (name === undefined) {
      name = context.newString(handler)
      fn.handlerNames.set(handler, name)
      fn.handles.push(name)
    }
    const text = context.newString(json)
    try {
      return callGuest(fn, fn.run, [name, text, json.includes(BYTES_MARKER) ? context.true : context.false])
    } finally {
      text.dispose()
    }
  }

  /** Reads the bootstrap's outcome text; the guest is not trusted, so every field is checked. */
  const readOutcome = (
    fn: FunctionRuntime,
    text: string,
    durationMs: number,
    state: StateSession,
  ): CallOutcome => {
    const { key } = fn
    if (
      text.length > maxOutputBytes ||
      (text.length * 3 > maxOutputBytes && Buffer.byteLength(text) > maxOutputBytes)
    ) {
      return outcomeOf(
        SANDBOX_ERROR_CODES.badOutput,
        `Function '${key}' produced ${Buffer.byteLength(text)} bytes of output, more than ${maxOutputBytes}`,
      )
    }
    let parsed: unknown
    try {
      parsed = text.includes(BYTES_MARKER) ? fromBoundaryJson(text) : JSON.parse(text)
    } catch {
      parsed = undefined
    }
    const unreadable = outcomeOf(
      SANDBOX_ERROR_CODES.badOutput,
      `Function '${key}' produced an outcome the sandbox cannot read`,
    )
    if (!isRecord(parsed)) return unreadable
    if (parsed.ok !== true) {
      const error = typeof parsed.error === 'string' ? clip(parsed.error) : 'an unknown error'
      switch (parsed.kind) {
        case 'threw':
          // An 'out of memory' error here is only text: the guest can throw one of its own. A real
          // exhaustion was seen by the host first (memoryHit() in runCall).
          return outcomeOf(SANDBOX_ERROR_CODES.handlerThrew, `Function '${key}' threw ${error}`)
        case 'refused':
          return outcomeOf(SANDBOX_ERROR_CODES.badOutput, `Function '${key}' ${error}`)
        case 'missing':
          return outcomeOf(SANDBOX_ERROR_CODES.handlerThrew, `Cannot run function '${key}' as ${error}`)
        default:
          return unreadable
      }
    }
    const { publishes, emits, logs, droppedLogs } = parsed
    if (!Array.isArray(publishes) || !Array.isArray(emits) || !Array.isArray(logs)) return unreadable
    if (publishes.length > maxEffects || emits.length > maxEffects) {
      return outcomeOf(
        SANDBOX_ERROR_CODES.badOutput,
        `Function '${key}' made more than ${maxEffects} publishes or emits in one invocation`,
      )
    }
    for (const publish of publishes as unknown[]) {
      if (!isRecord(publish) || typeof publish.retain !== 'boolean') return unreadable
      const problem = publishProblem(publish as unknown as GuestPublish)
      if (problem !== undefined) {
        return outcomeOf(
          SANDBOX_ERROR_CODES.badOutput,
          `Function '${key}' cannot publish to ${JSON.stringify(clip(String(publish.topic)))}: ${problem}`,
        )
      }
    }
    for (const emit of emits as unknown[]) {
      if (!isRecord(emit) || typeof emit.stream !== 'string') return unreadable
    }
    if (!logs.every((line) => typeof line === 'string')) return unreadable
    if (typeof droppedLogs === 'number' && droppedLogs > 0) {
      logs.push(`(${droppedLogs} more log lines dropped: at most ${maxLogLines} per invocation)`)
    }
    return {
      ok: true,
      result: {
        value: parsed.value,
        publishes: publishes as GuestPublish[],
        emits: emits as GuestEmit[],
        logs: logs as string[],
        durationMs,
        memoryBytes: memory.buffer.byteLength,
        // Kept by the host as the call made them: the guest's outcome text never names a write.
        state: [...state.writes.values()],
        leases: [...state.leases].map(([namespace, ttlMs]) => ({ namespace, ttlMs })),
      },
    }
  }

  /** Replaces a function's runtime with a fresh one from the same source. */
  const reload = (fn: FunctionRuntime): FunctionRuntime => {
    disposeFunction(fn)
    functions.delete(fn.key)
    try {
      const fresh = buildFunction(fn.key, fn.source, fn.handlers, fn.memoryBytes)
      functions.set(fn.key, fresh)
      return fresh
    } catch (error) {
      // It compiled before, so only a broken instance stops it compiling again.
      broken = true
      return fail(
        SANDBOX_ERROR_CODES.broken,
        `The sandbox of tenant '${tenantId}' failed and must be rebuilt`,
        error,
      )
    }
  }

  const sandbox: TenantSandbox = {
    tenantId,
    get broken() {
      return broken
    },
    compile: (key, source, handlers, compileOptions = {}) => {
      const memoryBytes = compileOptions.memoryBytes
      if (
        memoryBytes !== undefined &&
        (!Number.isInteger(memoryBytes) || memoryBytes < MIN_FUNCTION_MEMORY_BYTES)
      ) {
        throw new RangeError(
          `Cannot deploy function '${key}' with a memory limit of ${memoryBytes} bytes (at least ${MIN_FUNCTION_MEMORY_BYTES})`,
        )
      }
      guard(() => {
        const fresh = buildFunction(
          key,
          source,
          handlers,
          memoryBytes === undefined ? undefined : Math.min(memoryBytes, capBytes),
        )
        const previous = functions.get(key)
        functions.set(key, fresh)
        if (previous !== undefined) disposeFunction(previous)
      })
    },
    remove: (key) =>
      guard(() => {
        const fn = functions.get(key)
        if (fn === undefined) return
        functions.delete(key)
        disposeFunction(fn)
      }),
    invoke: (key, handler, args, info, deadlineMs) => {
      const [outcome] = sandbox.invokeBatch(key, handler, [{ args, info }], deadlineMs)
      if (outcome === undefined) return fail(SANDBOX_ERROR_CODES.broken, 'The sandbox gave no answer')
      if (outcome.ok) return outcome.result
      return fail(outcome.code, outcome.message)
    },
    invokeBatch: (key, handler, calls, deadlineMs, control) => {
      if (!(deadlineMs > 0) || !Number.isFinite(deadlineMs)) {
        throw new RangeError(`Cannot run function '${key}' with a deadline of ${deadlineMs} ms`)
      }
      return guard(() => {
        const outcomes: CallOutcome[] = []
        const ownOverlay = createStateOverlay()
        for (let index = 0; index < calls.length; index++) {
          const started = performance.now()
          let outcome: CallOutcome
          let overlay: StateOverlay | null = null
          try {
            // Looked up per call: a reload after left-over promise jobs replaces the runtime.
            let fn = functions.get(key)
            if (fn?.stale === true) {
              control?.onReload?.(index, sharedClockNow() + compileDeadlineMs)
              fn = reload(fn)
            }
            const callDeadlineAt = sharedClockNow() + deadlineMs
            const given = control?.overlays?.[index]
            overlay = given === undefined ? ownOverlay : given
            control?.onCallStart?.(index, callDeadlineAt)
            outcome =
              fn === undefined
                ? outcomeOf(
                    SANDBOX_ERROR_CODES.handlerThrew,
                    `Cannot run function '${key}' as it is not deployed`,
                  )
                : runCall(
                    fn,
                    handler,
                    calls[index] as InvocationCall,
                    callDeadlineAt,
                    deadlineMs,
                    overlay ?? NO_OVERLAY,
                  )
          } catch (error) {
            // A host-side fault: the calls before this one stand, this one and the rest do not run here.
            if (!(error instanceof SandboxError)) broken = true
            outcome =
              error instanceof SandboxError
                ? outcomeOf(error.code, error.message)
                : outcomeOf(
                    SANDBOX_ERROR_CODES.broken,
                    `The sandbox of tenant '${tenantId}' failed and must be rebuilt`,
                  )
          }
          outcomes.push(outcome)
          // The batch's later calls read what this one wrote; a failed call wrote nothing.
          if (outcome.ok) overlay?.add(outcome.result.state)
          const stop = control?.onCallEnd?.(index, outcome, performance.now() - started) === true
          if (stop || broken) break
        }
        return outcomes
      })
    },
    dispose: () => {
      if (disposed) return
      disposed = true
      if (broken) return // a broken instance is dropped, not asked to clean up
      try {
        for (const fn of [...functions.values()].reverse()) disposeFunction(fn)
      } catch {
        // Dispose is never trusted: the instance is garbage either way.
      }
      functions.clear()
    },
    [Symbol.dispose]: () => sandbox.dispose(),
  }
  return sandbox
}

/** The guest's thrown value as plain data, without running guest code for it. */
function dumpError(context: QuickJSContext, handle: QuickJSHandle): GuestError | null {
  try {
    const dumped = context.dump(handle) as unknown
    return isRecord(dumped) ? dumped : dumped === null ? null : { message: String(dumped) }
  } catch {
    return { message: 'an error that cannot be read' }
  }
}

function isInterrupted(error: GuestError | null): boolean {
  return error?.name === 'InternalError' && error.message === 'interrupted'
}

function describeError(error: GuestError | null): string {
  if (error === null) return 'null'
  const name = typeof error.name === 'string' ? error.name : 'Error'
  const message = typeof error.message === 'string' ? error.message : 'unknown'
  return clip(`${name}: ${message}`)
}

function clip(text: string): string {
  return text.length > MAX_MESSAGE_CHARS ? `${text.slice(0, MAX_MESSAGE_CHARS)}...` : text
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

function formatBytes(bytes: number): string {
  return bytes % MIB === 0 ? `${bytes / MIB} MiB` : `${bytes} bytes`
}

/**
 * Why a function may not publish this: topics are tenant-relative topic names (MQTT 3.1.1 section
 * 4.7), so no wildcards, no `$` (reserved), no U+0000, not empty; `.` and `..` levels are refused
 * as they only serve to look like a path out of the tenant. At most 99 levels and 1024 characters.
 */
export function publishProblem(publish: GuestPublish): string | undefined {
  const topic = publish.topic
  if (typeof topic !== 'string' || topic.length === 0) return 'the topic is empty'
  if (topic.length > 1024) return 'the topic is longer than 1024 characters'
  if (topic.startsWith('$')) return "topics starting with '$' are reserved"
  if (topic.includes('+') || topic.includes('#') || topic.includes('\u0000')) {
    return 'a topic name has no wildcards or U+0000'
  }
  const levels = topic.split('/')
  if (levels.length > 99) return 'the topic has more than 99 levels'
  if (levels.some((level) => level === '.' || level === '..')) return "'.' and '..' levels are refused"
  if (![0, 1, 2].includes(publish.qos)) return 'qos must be 0, 1 or 2'
  return undefined
}

// ---------------------------------------------------------------------------------------------
// Function state (ctx.state)

/** One write of an invocation to function state, as the host commits it. */
export interface StateWrite {
  /** `@` and the function's name for its private namespace, else a shared namespace's path. */
  namespace: string
  key: string
  op: 'set' | 'delete' | 'incr'
  /** The value's JSON text (`set`). */
  value?: string
  /** The increment (`incr`), committed as `value + by` so that concurrent increments all count. */
  by?: number
  /** The key's own lease (`set`): the key goes this long after the write is committed. */
  ttlMs?: number
}

/** A lease an invocation put on a whole namespace (`ttlMs`), or removed (`null`). */
export interface StateLease {
  namespace: string
  ttlMs: number | null
}

/**
 * Committed function state, read synchronously while a call runs. Both reads honour key leases
 * (`expires_at`) and namespace leases; each is one indexed lookup or one bounded range scan.
 */
export interface StateSource {
  /** The value's JSON text; undefined when there is none, it expired or its namespace lapsed. */
  get(tenantId: string, namespace: string, key: string): string | undefined
  /** Up to `limit` keys above `after` that start with `prefix`, in code point (UTF-8 byte) order. */
  keys(tenantId: string, namespace: string, prefix: string, after: string, limit: number): string[]
}

/**
 * The state writes of a batch's earlier successful calls, folded per key, which its later calls
 * read (see {@link BatchControl.overlays}).
 */
export interface StateOverlay {
  /** Folds in the writes of one more successful call. */
  add(writes: readonly StateWrite[]): void
}

interface OverlayEntries extends StateOverlay {
  readonly entries: Map<string, StateWrite>
}

/** An overlay holding `writes`, the writes of a batch's earlier successful calls in order. */
export function createStateOverlay(writes: readonly StateWrite[] = []): StateOverlay {
  const entries = new Map<string, StateWrite>()
  const overlay: OverlayEntries = {
    entries,
    add(list) {
      for (const write of list) {
        const id = stateId(write.namespace, write.key)
        entries.set(id, mergeWrite(entries.get(id), write))
      }
    },
  }
  overlay.add(writes)
  return overlay
}

/** What a call that is a batch of its own reads through: nothing is ever added to it. */
const NO_OVERLAY = createStateOverlay()

const LONE_SURROGATE = /\p{Cs}/u

/** Why `key` cannot be a state key (1-256 characters, no lone surrogate, no U+0000), or undefined. */
export function stateKeyProblem(key: unknown): string | undefined {
  if (typeof key !== 'string') return `a key must be a string, not ${typeName(key)}`
  if (key.length === 0) return 'the key is empty'
  if (key.length > STATE_LIMITS.maxKeyChars) {
    return `the key is longer than ${STATE_LIMITS.maxKeyChars} characters`
  }
  return textProblem(key, 'key')
}

/**
 * Why `path` cannot name a shared namespace, or undefined: `/`-separated levels of letters,
 * digits, `.`, `_` and `-` (not `.` or `..`), at most 8 levels and 256 characters.
 */
export function stateNamespaceProblem(path: unknown): string | undefined {
  if (typeof path !== 'string') return `a namespace path must be a string, not ${typeName(path)}`
  return namespacePathProblem(path)
}

/** Why `ttlMs` cannot be a lease, or undefined: a whole number of ms, 1 to ten years. */
export function stateTtlProblem(ttlMs: unknown): string | undefined {
  return typeof ttlMs === 'number' && Number.isInteger(ttlMs) && ttlMs >= 1 && ttlMs <= STATE_LIMITS.maxTtlMs
    ? undefined
    : `ttlMs must be a whole number of ms from 1 to ${STATE_LIMITS.maxTtlMs}, not ${describeValue(ttlMs)}`
}

/** Orders keys by code point, as SQLite orders UTF-8 text: UTF-16 order differs past U+D7FF. */
function compareStateKeys(a: string, b: string): number {
  const length = Math.min(a.length, b.length)
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x !== y) return codeUnitRank(x) - codeUnitRank(y)
  }
  return a.length - b.length
}

/**
 * The least string above every string that starts with `prefix`, in code point order (so the keys
 * with a prefix are one range of an index: `key >= prefix AND key < end`); undefined when there is
 * none (an empty prefix, or one of U+10FFFF only).
 */
export function statePrefixEnd(prefix: string): string | undefined {
  const points = Array.from(prefix)
  while (points.length > 0) {
    const last = (points.pop() as string).codePointAt(0) as number
    if (last < 0x10ffff) return points.join('') + String.fromCodePoint(last === 0xd7ff ? 0xe000 : last + 1)
  }
  return undefined
}

/** Surrogates (code points above U+FFFF) after U+E000-U+FFFF, the rest in place. */
function codeUnitRank(unit: number): number {
  return unit < 0xd800 ? unit : unit < 0xe000 ? unit + 0x2000 : unit - 0x800
}

function textProblem(text: string, what: string): string | undefined {
  return LONE_SURROGATE.test(text) || text.includes('\u0000')
    ? `the ${what} has a lone surrogate or U+0000, which cannot be stored as UTF-8 text`
    : undefined
}

function stateId(namespace: string, key: string): string {
  return `${namespace}\u0000${key}`
}

/** What a write leaves when it follows `previous` on the same key: an increment adds to a set. */
function mergeWrite(previous: StateWrite | undefined, write: StateWrite): StateWrite {
  if (write.op !== 'incr' || previous === undefined) return write
  const { namespace, key } = write
  const by = write.by ?? 0
  if (previous.op === 'incr') return { namespace, key, op: 'incr', by: (previous.by ?? 0) + by }
  const value = String(numberIn(previous.value) + by)
  return previous.ttlMs === undefined
    ? { namespace, key, op: 'set', value }
    : { namespace, key, op: 'set', value, ttlMs: previous.ttlMs }
}

/** The number a value's JSON text holds; a missing value counts as 0. */
function numberIn(json: string | undefined): number {
  if (json === undefined) return 0
  const value: unknown = JSON.parse(json)
  return typeof value === 'number' ? value : 0
}

function typeName(value: unknown): string {
  if (value === null) return 'null'
  if (value instanceof Unread) return value.description
  if (Array.isArray(value)) return 'an array'
  const type = typeof value
  return type === 'undefined' ? 'undefined' : `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type}`
}

function describeValue(value: unknown): string {
  return typeof value === 'string'
    ? JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}...` : value)
    : typeof value === 'number'
      ? String(value)
      : typeName(value)
}

/** A guest argument left unread: not a primitive. */
class Unread {
  constructor(readonly description: string) {}
}

/** Reads an argument of the state function without running guest code. */
function readStateArg(context: QuickJSContext, handle: QuickJSHandle): unknown {
  const type = context.typeof(handle)
  switch (type) {
    case 'string':
      return context.getString(handle)
    case 'number':
      return context.getNumber(handle)
    case 'undefined':
      return undefined
    case 'boolean':
      return context.sameValue(handle, context.true)
    case 'object':
      return context.sameValue(handle, context.null) ? null : new Unread('an object')
    default:
      return new Unread(`a ${type}`)
  }
}

/** The state of one running call: its writes and leases, and what it reads through. */
interface StateSession {
  readonly tenantId: string
  readonly privateNamespace: string
  readonly source: StateSource | undefined
  readonly overlay: OverlayEntries
  readonly maxWrites: number
  readonly maxWrittenBytes: number
  readonly writes: Map<string, StateWrite>
  readonly leases: Map<string, number | null>
  writtenBytes: number
  /** Why the call fails whatever the function catches: a bound of ctx.state it went past. */
  refusal: string | undefined
  /** Set when committed state could not be read: the call fails, and it is not the function's doing. */
  failure: string | undefined
}

function openStateSession(
  tenantId: string,
  functionName: string,
  source: StateSource | undefined,
  overlay: StateOverlay,
  maxWrites: number,
  maxWrittenBytes: number,
): StateSession {
  return {
    tenantId,
    privateNamespace: `@${functionName}`,
    source,
    overlay: overlay as OverlayEntries,
    maxWrites,
    maxWrittenBytes,
    writes: new Map(),
    leases: new Map(),
    writtenBytes: 0,
    refusal: undefined,
    failure: undefined,
  }
}

/**
 * Answers one call of the guest's state function: `[op, path, ...]`, `path` '' for the function's
 * private namespace; then `key` (get, delete), `key, json, ttlMs` (set), `key, by` (incr),
 * `prefix, after, limit` (keys), `ttlMs` (lease); `['ns', path]` checks a path. The reply is a tag
 * and text: `v` and JSON, `u` (undefined), or `e` and the message of a TypeError the guest throws.
 * Never throws: a host error must not reach the guest (quickjs-emscripten would hand it the host's
 * message and stack).
 */
function answerState(session: StateSession, args: readonly unknown[]): string {
  const [op, path, key, a, b] = args
  try {
    if (op === 'ns') {
      const problem = stateNamespaceProblem(path)
      return problem === undefined ? 'u' : `eCannot open state namespace ${describeValue(path)} as ${problem}`
    }
    const problem = path === '' ? undefined : stateNamespaceProblem(path)
    if (problem !== undefined || typeof path !== 'string') {
      return `eCannot use state namespace ${describeValue(path)} as ${problem}`
    }
    const namespace = path === '' ? session.privateNamespace : path
    if (op === 'lease') return leaseState(session, namespace, key)
    if (op === 'keys') return listState(session, namespace, key, a, b)
    const verb = op === 'get' ? 'read' : op === 'incr' ? 'increment' : op
    const keyProblem = stateKeyProblem(key)
    if (keyProblem !== undefined) return `eCannot ${verb} state key ${describeValue(key)} as ${keyProblem}`
    const name = key as string
    switch (op) {
      case 'get': {
        const json = readState(session, namespace, name)
        return json === undefined ? 'u' : `v${json}`
      }
      case 'set':
        return setState(session, namespace, name, a, b)
      case 'delete':
        return writeState(session, { namespace, key: name, op: 'delete' }) ?? 'u'
      case 'incr':
        return incrState(session, namespace, name, a)
      default:
        return 'eCannot use ctx.state: no such operation'
    }
  } catch {
    session.failure ??= 'the state store could not be read'
    return `eCannot read function state as ${session.failure}`
  }
}

function setState(session: StateSession, namespace: string, key: string, json: unknown, ttlMs: unknown) {
  const what = `Cannot set state key ${describeValue(key)}`
  if (typeof json === 'number') {
    // The bootstrap sends the length of a value whose JSON is too long to be within the bound.
    return `e${what} as its value has ${json} characters of JSON, more than ${STATE_LIMITS.maxValueBytes} bytes`
  }
  if (typeof json !== 'string') {
    return `e${what} as its value is not JSON (undefined, a function or a symbol): use delete() to remove a key`
  }
  const bytes = Buffer.byteLength(json)
  if (bytes > STATE_LIMITS.maxValueBytes) {
    return `e${what} as its value has ${bytes} bytes of JSON, more than ${STATE_LIMITS.maxValueBytes}`
  }
  if (ttlMs !== undefined && ttlMs !== null) {
    const problem = stateTtlProblem(ttlMs)
    if (problem !== undefined) return `e${what} as ${problem}`
  }
  const write: StateWrite =
    ttlMs === undefined || ttlMs === null
      ? { namespace, key, op: 'set', value: json }
      : { namespace, key, op: 'set', value: json, ttlMs: ttlMs as number }
  return writeState(session, write) ?? 'u'
}

function incrState(session: StateSession, namespace: string, key: string, by: unknown): string {
  const what = `Cannot increment state key ${describeValue(key)}`
  if (typeof by !== 'number' || !Number.isFinite(by)) {
    return `e${what} by ${describeValue(by)} as the increment must be a finite number`
  }
  const current = readState(session, namespace, key)
  const value: unknown = current === undefined ? 0 : JSON.parse(current)
  if (typeof value !== 'number') return `e${what} as its value is ${typeName(value)}, not a number`
  const next = value + by
  if (!Number.isFinite(next)) return `e${what} by ${by} as the result would not be a finite number`
  return writeState(session, { namespace, key, op: 'incr', by }) ?? `v${String(next)}`
}

/** Records a write; returns the error to throw when it goes past a bound (the call then fails). */
function writeState(session: StateSession, write: StateWrite): string | undefined {
  const id = stateId(write.namespace, write.key)
  const previous = session.writes.get(id)
  if (previous === undefined && session.writes.size >= session.maxWrites) {
    session.refusal ??= `wrote more than ${session.maxWrites} state keys in one invocation`
    return `eCannot write more than ${session.maxWrites} state keys in one invocation`
  }
  const merged = mergeWrite(previous, write)
  const bytes = session.writtenBytes - valueBytes(previous) + valueBytes(merged)
  if (bytes > session.maxWrittenBytes) {
    session.refusal ??= `wrote more than ${session.maxWrittenBytes} bytes of state values in one invocation`
    return `eCannot write more than ${session.maxWrittenBytes} bytes of state values in one invocation`
  }
  session.writtenBytes = bytes
  session.writes.set(id, merged)
  return undefined
}

function valueBytes(write: StateWrite | undefined): number {
  return write?.value === undefined ? 0 : Buffer.byteLength(write.value)
}

function leaseState(session: StateSession, namespace: string, ttlMs: unknown): string {
  if (ttlMs !== null) {
    const problem = stateTtlProblem(ttlMs)
    if (problem !== undefined) {
      return `eCannot lease state namespace ${describeValue(namespace)} as ${problem} (null removes the lease)`
    }
  }
  if (!session.leases.has(namespace) && session.leases.size >= session.maxWrites) {
    session.refusal ??= `leased more than ${session.maxWrites} state namespaces in one invocation`
    return `eCannot lease more than ${session.maxWrites} state namespaces in one invocation`
  }
  session.leases.set(namespace, ttlMs as number | null)
  return 'u'
}

/**
 * The value a call sees: its own writes, then the batch's earlier calls', then committed state;
 * increments on the way add to what is below them.
 */
function readState(session: StateSession, namespace: string, key: string): string | undefined {
  const id = stateId(namespace, key)
  let by = 0
  let counted = false
  for (const layer of [session.writes, session.overlay.entries]) {
    const write = layer.get(id)
    if (write === undefined) continue
    if (write.op !== 'incr') return counted ? String(numberIn(write.value) + by) : write.value
    by += write.by ?? 0
    counted = true
  }
  const committed = session.source?.get(session.tenantId, namespace, key)
  return counted ? String(numberIn(committed) + by) : committed
}

function listState(
  session: StateSession,
  namespace: string,
  prefix: unknown,
  after: unknown,
  limit: unknown,
) {
  const what = `Cannot list the keys of state namespace ${describeValue(namespace)}`
  if (typeof prefix !== 'string' || prefix.length > STATE_LIMITS.maxKeyChars) {
    return `e${what} as the prefix must be a string of at most ${STATE_LIMITS.maxKeyChars} characters, not ${describeValue(prefix)}`
  }
  const prefixProblem = textProblem(prefix, 'prefix')
  if (prefixProblem !== undefined) return `e${what} as ${prefixProblem}`
  if (after !== undefined && (typeof after !== 'string' || after.length > STATE_LIMITS.maxKeyChars)) {
    return `e${what} as 'after' must be a key, not ${describeValue(after)}`
  }
  const max = STATE_LIMITS.maxListedKeys
  if (
    limit !== undefined &&
    !(typeof limit === 'number' && Number.isInteger(limit) && limit >= 1 && limit <= max)
  ) {
    return `e${what} as 'limit' must be a whole number from 1 to ${max}, not ${describeValue(limit)}`
  }
  const count = (limit as number | undefined) ?? max
  const from = (after as string | undefined) ?? ''
  // What this call and the batch's earlier calls wrote in the range: true if the key now exists.
  const written = new Map<string, boolean>()
  for (const layer of [session.overlay.entries, session.writes]) {
    for (const write of layer.values()) {
      if (write.namespace !== namespace || !write.key.startsWith(prefix)) continue
      if (compareStateKeys(write.key, from) > 0) written.set(write.key, write.op !== 'delete')
    }
  }
  let deleted = 0
  for (const exists of written.values()) if (!exists) deleted++
  // Deleted keys may hide committed ones: ask for as many more, so a full page stays full.
  const committed = session.source?.keys(session.tenantId, namespace, prefix, from, count + deleted) ?? []
  const keys = new Set(committed.filter((key) => written.get(key) !== false))
  for (const [key, exists] of written) if (exists) keys.add(key)
  return `v${JSON.stringify([...keys].sort(compareStateKeys).slice(0, count))}`
}
