/** Options of {@link createAuthThrottle}. */
export interface AuthThrottleOptions {
  /** Failures from one address answered without delay. */
  freeFailures: number
  /** Delay after the first delayed failure, doubled by each further failure, in ms. */
  baseDelayMs?: number
  /** Longest delay, in ms. */
  maxDelayMs: number
  /** A failure is forgotten this long after the address's last failure, in ms. Default 15 min. */
  forgetAfterMs?: number
  /** Addresses tracked at once; at the bound the oldest entry is forgotten. Default 10 000. */
  maxAddresses?: number
  now?: () => number
}

/**
 * Slows down repeated failed sign-ins from one address: the first `freeFailures` are answered at
 * once, then each further attempt waits `baseDelayMs * 2^n` (capped) before it is even checked, so
 * guessing costs the guesser time and costs the gateway no hashing. A success clears the address.
 */
export interface AuthThrottle {
  /** How long an attempt from `address` must wait before it is checked, in ms. */
  delayFor(address: string): number
  recordFailure(address: string): void
  recordSuccess(address: string): void
}

interface Entry {
  failures: number
  lastFailureAt: number
}

/** Creates an {@link AuthThrottle}. */
export function createAuthThrottle(options: AuthThrottleOptions): AuthThrottle {
  const now = options.now ?? Date.now
  const baseDelayMs = options.baseDelayMs ?? 250
  const forgetAfterMs = options.forgetAfterMs ?? 15 * 60_000
  const maxAddresses = options.maxAddresses ?? 10_000
  // Map keeps insertion order; re-inserting on each failure keeps the oldest entry first.
  const entries = new Map<string, Entry>()

  const current = (address: string): Entry | undefined => {
    const entry = entries.get(address)
    if (entry !== undefined && now() - entry.lastFailureAt > forgetAfterMs) {
      entries.delete(address)
      return undefined
    }
    return entry
  }

  return {
    delayFor(address) {
      const entry = current(address)
      if (entry === undefined || entry.failures < options.freeFailures) return 0
      const exponent = Math.min(entry.failures - options.freeFailures, 30)
      return Math.min(options.maxDelayMs, baseDelayMs * 2 ** exponent)
    },
    recordFailure(address) {
      const entry = current(address) ?? { failures: 0, lastFailureAt: 0 }
      entry.failures++
      entry.lastFailureAt = now()
      entries.delete(address)
      if (entries.size >= maxAddresses) {
        const oldest = entries.keys().next().value
        if (oldest !== undefined) entries.delete(oldest)
      }
      entries.set(address, entry)
    },
    recordSuccess(address) {
      entries.delete(address)
    },
  }
}
