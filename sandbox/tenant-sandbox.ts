import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import {
  newQuickJSWASMModuleFromVariant,
  newVariant,
  type QuickJSContext,
  type QuickJSHandle,
  type QuickJSRuntime,
  RELEASE_SYNC,
  shouldInterruptAfterDeadline,
} from 'quickjs-emscripten'
import { fromBoundaryJson, toBoundaryJson } from './bytes.ts'
import { SANDBOX_ERROR_CODES, SandboxError } from './errors.ts'
import { GUEST_BOOTSTRAP } from './guest-bootstrap.ts'
import { GUEST_LIBRARIES } from './guest-libraries.ts'

const require = createRequire(import.meta.url)
const WASM_PAGE_BYTES = 65_536
// Emscripten's build of QuickJS starts with 256 pages (16 MiB) of memory; the cap is above that.
const INITIAL_PAGES = 256

let compiled: Promise<WebAssembly.Module> | undefined

/** The QuickJS WebAssembly module, compiled once per thread and instantiated once per tenant. */
export function quickJSWasmModule(): Promise<WebAssembly.Module> {
  if (compiled === undefined) {
    compiled = WebAssembly.compile(readFileSync(require.resolve('@jitl/quickjs-wasmfile-release-sync/wasm')))
  }
  return compiled
}

/** Options of {@link createTenantSandbox}. */
export interface TenantSandboxOptions {
  tenantId: string
  /** Hard cap of the tenant's WebAssembly memory, in bytes; at least 32 MiB. */
  memoryLimitBytes: number
  /** QuickJS stack limit, in bytes. Default 512 KiB. */
  stackBytes?: number
  /** Largest JSON result of one invocation, in bytes. Default 1 MiB. */
  maxOutputBytes?: number
  /** Most publishes and emits of one invocation. Default 100 each. */
  maxEffects?: number
}

/** What a function's module must export, checked at compile time. */
export type HandlerName = 'onMessage' | 'onSchedule'

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
}

/** What `ctx` tells the function about itself and the invocation. */
export interface InvocationInfo {
  name: string
  version: number
  config: Record<string, unknown>
  /** The invocation's time (the message's), ms since the epoch. */
  now: number
}

/**
 * One tenant's sandbox: its own QuickJS WebAssembly instance (its own capped linear memory),
 * runtime and context. Functions are compiled into it as ES modules and invoked with JSON values;
 * nothing of the host enters the guest. After a memory failure or a host-side fault the sandbox
 * is `broken` and must be replaced: it is never trusted to recover, nor to dispose cleanly.
 */
export interface TenantSandbox {
  readonly tenantId: string
  readonly broken: boolean
  /** Compiles `source` as function `key`; throws `invalid_function` with line and column. */
  compile(key: string, source: string, handlers: readonly HandlerName[]): void
  /** Forgets a compiled function. */
  remove(key: string): void
  /** Runs a handler of a compiled function with the given arguments (before `ctx`). */
  invoke(
    key: string,
    handler: HandlerName,
    args: unknown[],
    info: InvocationInfo,
    deadlineMs: number,
  ): InvocationResult
  dispose(): void
  [Symbol.dispose](): void
}

/** Creates a tenant sandbox from the shared precompiled module. */
export async function createTenantSandbox(options: TenantSandboxOptions): Promise<TenantSandbox> {
  if (!Number.isInteger(options.memoryLimitBytes) || options.memoryLimitBytes < 32 * 1024 * 1024) {
    throw new RangeError(
      `Cannot create a sandbox with a memory limit of ${options.memoryLimitBytes} bytes (at least 32 MiB)`,
    )
  }
  const maxOutputBytes = options.maxOutputBytes ?? 1024 * 1024
  const maxEffects = options.maxEffects ?? 100
  const memory = new WebAssembly.Memory({
    initial: INITIAL_PAGES,
    maximum: Math.floor(options.memoryLimitBytes / WASM_PAGE_BYTES),
  })
  const variant = newVariant(RELEASE_SYNC, { wasmModule: await quickJSWasmModule(), wasmMemory: memory })
  const module = await newQuickJSWASMModuleFromVariant(variant)
  const runtime: QuickJSRuntime = module.newRuntime()
  // QuickJS's own limit stops most runaway allocations with a catchable error before the hard cap.
  runtime.setMemoryLimit(options.memoryLimitBytes - INITIAL_PAGES * WASM_PAGE_BYTES)
  runtime.setMaxStackSize(options.stackBytes ?? 512 * 1024)
  // The guest libraries are the only modules a function may import.
  runtime.setModuleLoader(
    (name) => GUEST_LIBRARIES[name] ?? { error: new Error(`Cannot import '${name}': no such module`) },
  )
  const context: QuickJSContext = runtime.newContext()
  let broken = false
  let disposed = false

  const fail = (code: keyof typeof SANDBOX_ERROR_CODES, message: string, cause?: unknown): never => {
    throw new SandboxError(SANDBOX_ERROR_CODES[code], message, cause === undefined ? {} : { cause })
  }
  const guard = <T>(run: () => T): T => {
    if (broken || disposed)
      fail('broken', `Cannot use the sandbox of tenant '${options.tenantId}' as it is broken`)
    try {
      return run()
    } catch (error) {
      if (error instanceof SandboxError) throw error
      // A host-side fault (an abort, an out-of-bounds memory access): the instance is not trusted again.
      broken = true
      return fail('broken', `The sandbox of tenant '${options.tenantId}' failed and must be rebuilt`, error)
    }
  }

  const boot = context.evalCode(GUEST_BOOTSTRAP, 'taureau:bootstrap')
  if (boot.error) {
    const detail = JSON.stringify(context.dump(boot.error))
    boot.error.dispose()
    throw new Error(`Cannot boot the sandbox: ${detail}`)
  }
  boot.value.dispose()
  const api = context.getProp(context.global, '__taureau')

  const call = (method: string, args: QuickJSHandle[]): ReturnType<QuickJSContext['callFunction']> => {
    const fn = context.getProp(api, method)
    try {
      return context.callFunction(fn, api, ...args)
    } finally {
      fn.dispose()
      for (const arg of args) arg.dispose()
    }
  }

  const sandbox: TenantSandbox = {
    tenantId: options.tenantId,
    get broken() {
      return broken
    },
    compile: (key, source, handlers) =>
      guard(() => {
        runtime.setInterruptHandler(shouldInterruptAfterDeadline(Date.now() + 1000))
        const result = context.evalCode(source, `${key}.js`, { type: 'module' })
        runtime.removeInterruptHandler()
        if (result.error) {
          const error = context.dump(result.error) as {
            name?: string
            message?: string
            stack?: string
            lineNumber?: number
          }
          result.error.dispose()
          const where = /:(\d+):(\d+)/.exec(error?.stack ?? '')
          const line = where?.[1] === undefined ? error?.lineNumber : Number(where[1])
          const column = where?.[2] === undefined ? undefined : Number(where[2])
          throw new SandboxError(
            SANDBOX_ERROR_CODES.invalidFunction,
            `Cannot deploy function '${key}' as its source does not compile: ${error?.name ?? 'Error'}: ${error?.message ?? 'unknown'}${line === undefined ? '' : ` (line ${line}${column === undefined ? '' : `, column ${column}`})`}`,
            { line, column },
          )
        }
        const namespace = result.value
        const exported = context.getProp(namespace, 'default')
        try {
          if (context.typeof(exported) !== 'object') {
            fail(
              'invalidFunction',
              `Cannot deploy function '${key}' as its source does not export a default object`,
            )
          }
          for (const handler of handlers) {
            const fn = context.getProp(exported, handler)
            const kind = context.typeof(fn)
            fn.dispose()
            if (kind !== 'function') {
              fail(
                'invalidFunction',
                `Cannot deploy function '${key}' as its default export has no ${handler}() handler`,
              )
            }
          }
          const registered = call('register', [context.newString(key), exported.dup()])
          if (registered.error) registered.error.dispose()
          else registered.value.dispose()
        } finally {
          exported.dispose()
          namespace.dispose()
        }
      }),
    remove: (key) =>
      guard(() => {
        const removed = call('unregister', [context.newString(key)])
        if (removed.error) removed.error.dispose()
        else removed.value.dispose()
      }),
    invoke: (key, handler, args, info, deadlineMs) =>
      guard(() => {
        const started = performance.now()
        runtime.setInterruptHandler(shouldInterruptAfterDeadline(Date.now() + deadlineMs))
        const result = call('invoke', [
          context.newString(key),
          context.newString(handler),
          context.newString(toBoundaryJson(args)),
          context.newString(JSON.stringify({ tenant: options.tenantId, ...info })),
        ])
        runtime.removeInterruptHandler()
        const durationMs = performance.now() - started
        if (result.error) {
          const error = context.dump(result.error) as { name?: string; message?: string } | null
          result.error.dispose()
          if (error?.name === 'InternalError' && error.message === 'interrupted') {
            fail('deadline', `Function '${key}' ran past its ${deadlineMs} ms deadline`)
          }
          if (error === null || error?.message === 'out of memory' || error?.name === 'RangeError') {
            // Out of memory (QuickJS dumps it as null) leaves the heap in an unknown state.
            broken = error === null || error?.message === 'out of memory'
            fail(
              broken ? 'memory' : 'handlerThrew',
              `Function '${key}' ${broken ? 'ran out of memory' : `threw ${error?.name}: ${error?.message}`}`,
            )
          }
          return fail(
            'handlerThrew',
            `Function '${key}' failed: ${error?.name ?? 'Error'}: ${error?.message ?? 'unknown'}`,
          )
        }
        const text = context.getString(result.value)
        result.value.dispose()
        if (text.length > maxOutputBytes) {
          fail(
            'badOutput',
            `Function '${key}' produced ${text.length} bytes of output, more than ${maxOutputBytes}`,
          )
        }
        const outcome = fromBoundaryJson(text) as
          | { ok: true; value: unknown; publishes: GuestPublish[]; emits: GuestEmit[]; logs: string[] }
          | { ok: false; error: string; logs: string[] }
        if (!outcome.ok) {
          // QuickJS throws null when an allocation fails; the guest may have caught it. A null thrown
          // while memory is near the cap is taken as exhaustion (a tenant throwing null on purpose
          // only costs itself a rebuild).
          const nearCap = memory.buffer.byteLength >= 0.75 * options.memoryLimitBytes
          if (
            /^InternalError: out of memory/.test(outcome.error) ||
            (outcome.error === 'thrown: null' && nearCap)
          ) {
            // The guest caught its own out-of-memory error; the heap is not trusted after it.
            broken = true
            fail('memory', `Function '${key}' ran out of memory`)
          }
          fail('handlerThrew', `Function '${key}' threw ${outcome.error}`)
        }
        const ok = outcome as {
          ok: true
          value: unknown
          publishes: GuestPublish[]
          emits: GuestEmit[]
          logs: string[]
        }
        if (ok.publishes.length > maxEffects || ok.emits.length > maxEffects) {
          fail(
            'badOutput',
            `Function '${key}' made more than ${maxEffects} publishes or emits in one invocation`,
          )
        }
        for (const publish of ok.publishes) {
          const problem = publishProblem(publish)
          if (problem !== undefined) {
            fail(
              'badOutput',
              `Function '${key}' cannot publish to ${JSON.stringify(publish.topic)}: ${problem}`,
            )
          }
        }
        return {
          value: ok.value,
          publishes: ok.publishes,
          emits: ok.emits,
          logs: ok.logs,
          durationMs,
          memoryBytes: memory.buffer.byteLength,
        }
      }),
    dispose: () => {
      if (disposed) return
      disposed = true
      if (broken) return // a broken instance is dropped, not asked to clean up
      try {
        api.dispose()
        context.dispose()
        runtime.dispose()
      } catch {
        // Dispose is never trusted: the instance is garbage either way.
      }
    },
    [Symbol.dispose]: () => sandbox.dispose(),
  }
  return sandbox
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
