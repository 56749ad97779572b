import { Worker } from 'node:worker_threads'

// Workers load TypeScript sources through tsx, as the main thread does: a worker does not inherit
// the main thread's module hooks, so a small bootstrap registers them before it imports `main`.
const BOOTSTRAP = `
const { workerData } = require('node:worker_threads')
import(workerData.tsx)
  .then((tsx) => tsx.register())
  .then(() => import(workerData.main))
`
/** Resolved here: an eval'd worker resolves bare specifiers from the working directory, which is anywhere. */
const TSX_API_URL = import.meta.resolve('tsx/esm/api')

/** Starts `main` (a module URL) in a worker thread; it reads its own data as `workerData.data`. */
export function _startWorker(main: URL, data: unknown): Worker {
  return new Worker(BOOTSTRAP, { eval: true, workerData: { main: main.href, tsx: TSX_API_URL, data } })
}
