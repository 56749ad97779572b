/**
 * Milliseconds on a monotonic clock that every thread of the process reads alike: the process's
 * time origin plus the thread's `performance.now()`. Each thread's `performance.now()` has its own
 * origin, but `performance.timeOrigin + performance.now()` is comparable across threads, and unlike
 * `Date.now()` it does not jump when the wall clock is set. Deadlines that a worker writes to
 * shared memory and the pool's watchdog reads are in this time.
 */
export function sharedClockNow(): number {
  return performance.timeOrigin + performance.now()
}
