import type { SSEStreamingApi } from 'hono/streaming'

/** Idle SSE connections get a comment this often, so proxies and clients keep them open. */
export const SSE_HEARTBEAT_MS = 15_000

/**
 * Writes to an SSE stream in order, each write after the one before, and counts the writes not
 * yet done: a client that stops reading makes that count grow, so callers bound it.
 */
export function orderedWriter(stream: SSEStreamingApi) {
  let writing: Promise<unknown> = Promise.resolve()
  let unwritten = 0
  const enqueue = (write: () => Promise<unknown>): void => {
    unwritten++
    writing = writing
      .then(write)
      .catch(() => {})
      .finally(() => unwritten--)
  }
  const heartbeat = setInterval(() => enqueue(() => stream.write(': heartbeat\n\n')), SSE_HEARTBEAT_MS)
  return {
    enqueue,
    get unwritten() {
      return unwritten
    },
    /** Stops the heartbeat; resolves once every queued write is done. */
    finish(): Promise<unknown> {
      clearInterval(heartbeat)
      return writing
    },
  }
}
