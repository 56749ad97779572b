import type { Worker } from 'node:worker_threads'
import { _startWorker } from './_worker.ts'
import type { CloudStore } from './cloud-store.ts'
import { SYNC_ERROR_CODES, SyncError, type SyncErrorCode } from './errors.ts'

/** A call to the store in the worker, and its answer. */
export interface _StoreCall {
  id: number
  method: Exclude<keyof CloudStore, typeof Symbol.asyncDispose>
  args: unknown[]
}
export type _StoreAnswer =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; name: string; message: string; code?: SyncErrorCode }

const WORKER_ENTRY = {
  source: new URL('./cloud-store-thread-worker.ts', import.meta.url),
  bundled: 'cloud-store-worker.mjs',
}

/**
 * The SQLite cloud store in a worker thread of its own. Its commits wait for the disk (fsync), and
 * on the receiver's thread those waits would delay the cells it sends back right after a gateway
 * uploaded: an observer could see uploads in the receiver's timing. Here they block the worker
 * only. The calls and their errors are those of `createSqliteCloudStore`.
 */
export async function createThreadedSqliteCloudStore(options: {
  file: string
  /** Told once if the worker dies while the store is open: every later call fails. */
  onFailure?: (error: Error) => void
}): Promise<CloudStore> {
  const worker: Worker = _startWorker(WORKER_ENTRY, { file: options.file })
  const pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>()
  let nextId = 1
  let failure: Error | undefined
  let open = false
  let closing = false
  const failAll = (error: Error): void => {
    if (failure === undefined && open && !closing) options.onFailure?.(error)
    failure ??= error
    for (const { reject } of pending.values()) reject(error)
    pending.clear()
  }
  worker.on('message', (answer: _StoreAnswer | { ready: true } | { failed: string }) => {
    if ('ready' in answer || 'failed' in answer) return
    const waiter = pending.get(answer.id)
    pending.delete(answer.id)
    if (waiter === undefined) return
    if (answer.ok) waiter.resolve(answer.value)
    else waiter.reject(errorOf(answer))
  })
  worker.on('error', (error) =>
    failAll(
      new SyncError(SYNC_ERROR_CODES.store, `Cannot use the store as its worker failed: ${error.message}`, {
        cause: error,
      }),
    ),
  )
  worker.on('exit', () =>
    failAll(new SyncError(SYNC_ERROR_CODES.closed, 'Cannot use the store as it is closed')),
  )
  // The worker answers once the store is open, or with why it could not open it.
  await new Promise<void>((resolve, reject) => {
    const onMessage = (message: {
      ready?: true
      failed?: { name: string; message: string; code?: SyncErrorCode }
    }) => {
      if (message.ready === true) resolve()
      else if (message.failed !== undefined) reject(errorOf(message.failed))
      else return
      worker.off('message', onMessage)
    }
    worker.on('message', onMessage)
    worker.once('error', reject)
  }).catch(async (error: unknown) => {
    await worker.terminate()
    throw error
  })

  open = true
  const call = (method: _StoreCall['method'], ...args: unknown[]): Promise<never> =>
    new Promise((resolve, reject) => {
      if (failure !== undefined) {
        reject(failure)
        return
      }
      const id = nextId++
      pending.set(id, { resolve: resolve as (value: unknown) => void, reject })
      worker.postMessage({ id, method, args } satisfies _StoreCall)
    })
  let closed: Promise<void> | undefined
  const store: CloudStore = {
    addGateway: (...args) => call('addGateway', ...args),
    removeGateway: (...args) => call('removeGateway', ...args),
    listGateways: () => call('listGateways'),
    gatewayByKey: (...args) => call('gatewayByKey', ...args),
    acceptHandshake: (...args) => call('acceptHandshake', ...args),
    storeRecords: (...args) => call('storeRecords', ...args),
    records: (...args) => call('records', ...args),
    count: (...args) => call('count', ...args),
    close() {
      closed ??= (async () => {
        closing = true
        if (failure === undefined) await call('close')
        await worker.terminate()
      })()
      return closed
    },
    [Symbol.asyncDispose]: () => store.close(),
  }
  return store
}

/** The error the store threw in the worker, as the same class on this side. */
function errorOf(answer: { name: string; message: string; code?: SyncErrorCode }): Error {
  if (answer.name === 'SyncError' && answer.code !== undefined)
    return new SyncError(answer.code, answer.message)
  if (answer.name === 'RangeError') return new RangeError(answer.message)
  if (answer.name === 'TypeError') return new TypeError(answer.message)
  return new Error(answer.message)
}
