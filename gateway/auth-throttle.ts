/** Options of {@link createAuthThrottle}. */
export interface AuthThrottleOptions {
  /** Failures from one address answered without delay. */
  freeFailures: number
  /** Delay after the first delayed failure, doubled by each further failure, in ms. */
  baseDelayMs?: number
  /** Longest delay, in ms. */
  maxDelayMs: number
  /** Sign-ins from one address being checked at once; more are refused without a check. Default 4. */
  maxInFlight?: number
  /** A failure is forgotten this long after the address's last failure, in ms. Default 15 min. */
  forgetAfterMs?: number
  /** Addresses tracked at once; at the bound the oldest entry is forgotten. Default 10 000. */
  maxAddresses?: number
  now?: () => number
}

/**
 * Slows down repeated failed sign-ins from one address: the first `freeFailures` are answered at
 * once, then each further attempt waits `baseDelayMs * 2^n` (capped) before it is even checked, so
 * guessing costs the guesser time and costs the gateway no hashing. Attempts still being checked
 * count as failures for the delay, so a burst of parallel guesses is slowed like a sequence of
 * them, and past `maxInFlight` parallel attempts an address is refused without a check. Failures
 * are forgotten `forgetAfterMs` after the address's last one.
 */
export interface AuthThrottle {
  /** Starts an attempt; false when the address has too many being checked (refuse it unchecked). */
  enter(address: string): boolean
  /** How long an attempt that entered must wait before it is checked, in ms. */
  delayFor(address: string): number
  /** Ends an attempt that failed. */
  recordFailure(address: string): void
  /** Counts an attempt that `enter` refused (it never entered) as a failure. */
  recordRefused(address: string): void
  /**
   * Ends an attempt that succeeded. Failures are not cleared: anyone with one valid login could
   * otherwise reset the count between guesses at other devices. They are forgotten with time.
   */
  recordSuccess(address: string): void
}

interface Entry {
  failures: number
  inFlight: number
  lastFailureAt: number
}

/** Creates an {@link AuthThrottle}. */
export function createAuthThrottle(options: AuthThrottleOptions): AuthThrottle {
  const now = options.now ?? Date.now
  const baseDelayMs = options.baseDelayMs ?? 250
  const maxInFlight = options.maxInFlight ?? 4
  const forgetAfterMs = options.forgetAfterMs ?? 15 * 60_000
  const maxAddresses = options.maxAddresses ?? 10_000
  // Map keeps insertion order; re-inserting on each change keeps the oldest entry first.
  const entries = new Map<string, Entry>()

  const current = (address: string): Entry | undefined => {
    const entry = entries.get(address)
    if (entry !== undefined && entry.inFlight === 0 && now() - entry.lastFailureAt > forgetAfterMs) {
      entries.delete(address)
      return undefined
    }
    return entry
  }
  const touch = (address: string): Entry => {
    const entry = current(address) ?? { failures: 0, inFlight: 0, lastFailureAt: now() }
    entries.delete(address)
    if (entries.size >= maxAddresses) {
      const oldest = entries.keys().next().value
      if (oldest !== undefined) entries.delete(oldest)
    }
    entries.set(address, entry)
    return entry
  }
  const leave = (entry: Entry | undefined): void => {
    if (entry !== undefined && entry.inFlight > 0) entry.inFlight--
  }

  return {
    enter(address) {
      const entry = touch(address)
      if (entry.inFlight >= maxInFlight) return false
      entry.inFlight++
      return true
    },
    delayFor(address) {
      const entry = current(address)
      if (entry === undefined) return 0
      // This attempt is one of `inFlight`; the others count as if they had failed.
      const attempts = entry.failures + Math.max(0, entry.inFlight - 1)
      if (attempts < options.freeFailures) return 0
      const exponent = Math.min(attempts - options.freeFailures, 30)
      return Math.min(options.maxDelayMs, baseDelayMs * 2 ** exponent)
    },
    recordFailure(address) {
      const entry = touch(address)
      leave(entry)
      entry.failures++
      entry.lastFailureAt = now()
    },
    recordRefused(address) {
      const entry = touch(address)
      entry.failures++
      entry.lastFailureAt = now()
    },
    recordSuccess(address) {
      const entry = entries.get(address)
      leave(entry)
      if (entry !== undefined && entry.inFlight === 0 && entry.failures === 0) entries.delete(address)
    },
  }
}
