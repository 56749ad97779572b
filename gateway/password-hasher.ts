import { createHmac, randomBytes } from 'node:crypto'
import type { Worker } from 'node:worker_threads'
import { startModuleWorker } from '../sandbox/module-worker.ts'
import { GATEWAY_ERROR_CODES, GatewayError } from './errors.ts'

/** The worker's module (gateway/password-hasher-worker.ts, bundled by gateway/build.ts). */
const WORKER_ENTRY = {
  source: new URL('./password-hasher-worker.ts', import.meta.url),
  bundled: 'password-hasher-worker.mjs',
}

/** Options of {@link createPasswordHasher}. */
export interface PasswordHasherOptions {
  /** Argon2id passes. Default 2. */
  opsLimit?: number
  /**
   * Argon2id memory in bytes. Default 19 MiB with 2 passes, the OWASP minimum for Argon2id: device
   * secrets are generated with 192 bits of entropy, so the hash guards a stolen store, not a weak
   * password, and an edge box with little memory must verify bursts of reconnects.
   */
  memLimitBytes?: number
  /** Jobs waiting for the worker before new ones are refused. Default 256. */
  maxQueued?: number
  /** How long the worker may sit idle before it exits; default {@link IDLE_EXIT_MS}. */
  idleExitMs?: number
}

/**
 * Hashes and verifies device secrets with Argon2id (libsodium `crypto_pwhash_str`) in a worker
 * thread, so a burst of CONNECTs never stalls the broker's event loop. Verified pairs of hash
 * and secret are remembered as an HMAC under a per-process key, so a device that reconnects with
 * its right secret costs one HMAC, while a wrong secret always costs a full check.
 */
export interface PasswordHasher {
  hash(secret: string): Promise<string>
  verify(hash: string, secret: string): Promise<boolean>
  /** Whether its worker thread runs now: from the first job until it has been idle a while. */
  readonly running: boolean
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

interface Job {
  resolve(value: string | boolean): void
  reject(error: Error): void
}

const VERIFIED_CACHE_ENTRIES = 10_000

/**
 * How long the worker may sit idle before it exits. Argon2id's memory stays with a worker's
 * WebAssembly instance (about 20 MiB at the default cost, plus the thread), and sign-ins come in
 * bursts: when devices reconnect, and rarely after. The next job starts a new worker (tens of ms).
 */
const IDLE_EXIT_MS = 30_000

/** Starts the hasher; its worker runs while there are jobs and exits after {@link IDLE_EXIT_MS} idle. */
export function createPasswordHasher(options: PasswordHasherOptions = {}): PasswordHasher {
  const maxQueued = options.maxQueued ?? 256
  const workerData = {
    opsLimit: options.opsLimit ?? 2,
    memLimitBytes: options.memLimitBytes ?? 19 * 1024 * 1024,
  }
  const jobs = new Map<number, Job>()
  let nextId = 1
  let closed = false
  const cacheKey = randomBytes(32)
  // HMAC(hash, secret) of pairs that verified. Keyed by both, so a wrong secret is never answered
  // from the cache: it always costs a full Argon2id check, and the time to refuse it says nothing
  // about whether the device exists or was online. A new hash (rotation) never matches an old entry.
  const verified = new Set<string>()

  let worker: Worker | undefined
  let idleTimer: NodeJS.Timeout | undefined

  /** Asks a worker to exit after the jobs sent to it; terminates it if it does not in time. */
  const stopWorker = async (stopping: Worker): Promise<void> => {
    const exited = new Promise<void>((resolve) => stopping.once('exit', () => resolve()))
    stopping.ref()
    stopping.postMessage({ kind: 'close' })
    // Only a worker that does not exit in time is terminated (terminating one mid-way through
    // loading or running WebAssembly is what a clean shutdown should not depend on).
    const timer = setTimeout(() => void stopping.terminate(), 5_000)
    await exited
    clearTimeout(timer)
  }

  const startWorker = (): Worker => {
    const started = startModuleWorker(WORKER_ENTRY, { workerData })
    started.unref()
    started.on('message', (message: { id?: number; result?: string | boolean; error?: string }) => {
      if (message.id === undefined) return
      const job = jobs.get(message.id)
      if (job === undefined) return
      jobs.delete(message.id)
      if (message.error !== undefined) job.reject(new Error(message.error))
      else job.resolve(message.result as string | boolean)
    })
    started.once('exit', () => {
      if (worker === started) worker = undefined
    })
    started.on('error', (error) => {
      for (const job of jobs.values()) job.reject(error)
      jobs.clear()
    })
    return started
  }

  const run = (message: Record<string, unknown>): Promise<string | boolean> => {
    if (closed)
      return Promise.reject(
        new GatewayError(GATEWAY_ERROR_CODES.internal, 'Cannot hash as the hasher is closed'),
      )
    if (jobs.size >= maxQueued) {
      return Promise.reject(
        new GatewayError(
          GATEWAY_ERROR_CODES.limitReached,
          `Cannot hash as ${maxQueued} jobs are already waiting`,
        ),
      )
    }
    clearTimeout(idleTimer)
    worker ??= startWorker()
    const current = worker
    const id = nextId++
    return new Promise((resolve, reject) => {
      jobs.set(id, { resolve, reject })
      current.ref()
      current.postMessage({ ...message, id })
    }).finally(() => {
      if (jobs.size > 0 || closed) return
      current.unref()
      idleTimer = setTimeout(() => {
        if (worker !== current || jobs.size > 0) return
        worker = undefined
        void stopWorker(current)
      }, options.idleExitMs ?? IDLE_EXIT_MS)
      idleTimer.unref()
    }) as Promise<string | boolean>
  }

  const mac = (hash: string, secret: string): string =>
    createHmac('sha256', cacheKey).update(hash).update('\u0000').update(secret).digest('base64')

  const hasher: PasswordHasher = {
    hash: async (secret) => (await run({ kind: 'hash', secret })) as string,
    verify: async (hash, secret) => {
      const key = mac(hash, secret)
      if (verified.has(key)) return true
      const ok = (await run({ kind: 'verify', hash, secret })) as boolean
      if (ok) {
        if (verified.size >= VERIFIED_CACHE_ENTRIES) verified.clear()
        verified.add(key)
      }
      return ok
    },
    get running() {
      return worker !== undefined
    },
    close: async () => {
      if (closed) return
      closed = true
      clearTimeout(idleTimer)
      for (const job of jobs.values())
        job.reject(new GatewayError(GATEWAY_ERROR_CODES.internal, 'Cannot hash as the hasher closed'))
      jobs.clear()
      const stopping = worker
      worker = undefined
      if (stopping !== undefined) await stopWorker(stopping)
    },
    [Symbol.asyncDispose]: () => hasher.close(),
  }
  return hasher
}

/** A new device secret: 24 random bytes (192 bits) as base64url, 32 characters. */
export function generateSecret(): string {
  return randomBytes(24).toString('base64url')
}
