// Worker threads on ES modules, from the TypeScript sources (through tsx) or from the bundle that
// `npm run build` makes (dist/*.mjs, plain JavaScript): the one place that tells the two apart.
import { Worker, type WorkerOptions } from 'node:worker_threads'

/** Whether this code runs from the bundle in dist/ rather than from the TypeScript sources. */
export const BUNDLED = !import.meta.url.endsWith('.ts')

// A worker does not inherit the main thread's module hooks: from the sources, a small bootstrap
// registers tsx before it imports the entry module.
const BOOTSTRAP = `
const { workerData } = require('node:worker_threads')
import(workerData.tsx)
  .then((tsx) => tsx.register())
  .then(() => import(workerData.main))
`

/** A worker's entry module: its TypeScript source, and its file in dist/ (see gateway/build.ts). */
export interface WorkerEntry {
  source: URL
  bundled: string
}

/**
 * Starts a worker thread on `entry`. Its `workerData` is `options.workerData` (an object), plus,
 * from the sources, the `main` and `tsx` URLs the bootstrap reads.
 */
export function startModuleWorker(
  entry: WorkerEntry,
  options: Omit<WorkerOptions, 'eval' | 'workerData'> & { workerData: object },
): Worker {
  if (BUNDLED) return new Worker(new URL(`./${entry.bundled}`, import.meta.url), options)
  return new Worker(BOOTSTRAP, {
    ...options,
    eval: true,
    workerData: {
      ...options.workerData,
      main: entry.source.href,
      // Resolved here: an eval'd worker resolves bare specifiers from the working directory.
      tsx: import.meta.resolve('tsx/esm/api'),
    },
  })
}
