// The worker side of createThreadedSqliteCloudStore: one SQLite store, calls answered in order.
import { parentPort, workerData } from 'node:worker_threads'
import type { CloudStore } from './cloud-store.ts'
import { createSqliteCloudStore } from './cloud-store-sqlite.ts'
import type { _StoreAnswer, _StoreCall } from './cloud-store-thread.ts'
import { SyncError } from './errors.ts'

const port = parentPort
if (port === null) throw new Error('Cannot run the store worker outside a worker thread')
const { file } = (workerData as { data: { file: string } }).data

const described = (error: unknown) =>
  error instanceof Error
    ? {
        name: error.name,
        message: error.message,
        ...(error instanceof SyncError ? { code: error.code } : {}),
      }
    : { name: 'Error', message: String(error) }

let store: CloudStore
try {
  store = await createSqliteCloudStore({ file })
  port.postMessage({ ready: true })
} catch (error) {
  port.postMessage({ failed: described(error) })
  process.exit(1)
}
// One call at a time, in the order they came: as on the caller's thread.
let queue: Promise<void> = Promise.resolve()
port.on('message', (request: _StoreCall) => {
  queue = queue.then(async () => {
    let answer: _StoreAnswer
    try {
      const method = store[request.method] as (...args: unknown[]) => Promise<unknown>
      answer = { id: request.id, ok: true, value: await method.apply(store, request.args) }
    } catch (error) {
      answer = { id: request.id, ok: false, ...described(error) }
    }
    port.postMessage(answer)
  })
})
