/** Acks per second over the last few seconds, from per-second counts in a small ring. */
export interface AckRate {
  record(nowMs: number): void
  /** Acks per second over the last `windowSec` whole seconds (or since `startMs` when sooner). */
  perSec(nowMs: number): number
}

/** Creates an {@link AckRate} over `windowSec` seconds, counting from `startMs` (monotonic ms). */
export function createAckRate(startMs: number, windowSec = 5): AckRate {
  const slots = windowSec + 1
  const counts = new Float64Array(slots)
  const seconds = new Float64Array(slots).fill(-1)
  const secondOf = (nowMs: number): number => Math.floor((nowMs - startMs) / 1000)
  return {
    record(nowMs) {
      const second = secondOf(nowMs)
      const slot = second % slots
      if (seconds[slot] !== second) {
        seconds[slot] = second
        counts[slot] = 0
      }
      counts[slot] = (counts[slot] as number) + 1
    },
    perSec(nowMs) {
      const current = secondOf(nowMs)
      // The current second is still filling: before the first whole second, it is all there is.
      const first = current === 0 ? 0 : Math.max(0, current - windowSec)
      const last = current === 0 ? 0 : current - 1
      const spanSec = current === 0 ? Math.max(0.001, (nowMs - startMs) / 1000) : last - first + 1
      let total = 0
      for (let slot = 0; slot < slots; slot++) {
        const second = seconds[slot] as number
        if (second >= first && second <= last) total += counts[slot] as number
      }
      return total / spanSec
    },
  }
}
