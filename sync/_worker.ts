import type { Worker } from 'node:worker_threads'
import { startModuleWorker, type WorkerEntry } from '../sandbox/module-worker.ts'

/** Starts `entry` in a worker thread; it reads its own data as `workerData.data`. */
export function _startWorker(entry: WorkerEntry, data: unknown): Worker {
  return startModuleWorker(entry, { workerData: { data } })
}
