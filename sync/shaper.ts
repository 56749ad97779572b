/** Time source of the shaper: monotonic milliseconds and one-shot timers at an absolute time. */
export interface ShaperClock {
  now(): number
  setTimer(atMs: number, fn: () => void): { cancel(): void }
}

/**
 * When cells go. Every mode but `off` decides from time and `random` alone, so the schedule an
 * observer of the wire sees is the same whatever data waits (see each mode in {@link createShaper}).
 */
export type ShaperMode =
  | { mode: 'epoch'; epochMs?: number; cellsPerEpoch?: number }
  | { mode: 'clock'; intervalMs?: number; poisson?: boolean }
  | { mode: 'tiered'; epochMs: number; tiers: readonly number[]; dwellMs: number }
  | { mode: 'off' }

/** Defaults of the optional fields of {@link ShaperMode}. */
export const SHAPER_DEFAULTS = { epochMs: 1000, cellsPerEpoch: 4, intervalMs: 250, poisson: false } as const

/** Options of {@link createShaper}. */
export interface ShaperOptions {
  schedule: ShaperMode
  clock: ShaperClock
  /** Uniform in [0, 1); inject {@link seededRandom} for a reproducible schedule. */
  random: () => number
  /** Grants `cells` slots now; the sender fills each with a real cell, or a dummy when nothing waits. */
  send(cells: number): void
  /**
   * Cells of real data waiting. Read only by `tiered` at a dwell boundary, by `off`, and at each
   * slot when `alarmCells` is set; never when deciding when or how much to send in the other modes.
   */
  backlogCells(): number
  /** Backlog above which `onAlarm` is called, once each time it crosses over. */
  alarmCells?: number
  onAlarm?(backlogCells: number): void
}

/** A running schedule; see {@link createShaper}. */
export interface Shaper {
  /** Starts the schedule; a no-op when running. */
  start(): void
  /** Cancels the pending timer; idempotent. */
  stop(): void
  /** `off` mode: the sender calls it when data arrives. A no-op in the other modes. */
  kick(): void
  /** `tiered` mode: the cells per epoch in force; undefined in the other modes. */
  readonly tier: number | undefined
  [Symbol.dispose](): void
}

/**
 * Creates the traffic shaper that decides WHEN cells are sent, so that timing on the wire does not
 * depend on the data. At each slot it calls `send(n)`; the sender fills every granted cell with real
 * data or a dummy through the same code path.
 *
 * - `epoch`: after a random start jitter in [0, epochMs), exactly `cellsPerEpoch` cells at each
 *   epoch boundary. Excess data waits for later epochs; the rate is never raised.
 * - `clock`: one cell per slot, every `intervalMs` (after a random phase), or at Poisson times with
 *   that mean gap.
 * - `tiered`: `epoch` whose K comes from `tiers`, chosen at each dwell boundary from the backlog.
 * - `off` (tests only): sends the whole backlog as soon as `kick()` says data arrived; no dummies.
 *
 * A timer that fires late (the process stalled past further slots) sends for the one slot due, and
 * the missed slots are skipped, never caught up: a catch-up burst would tell an observer the
 * process stalled, and it would break the fixed rate.
 */
export function createShaper(options: ShaperOptions): Shaper {
  const { schedule, clock, random, send, backlogCells, alarmCells, onAlarm } = options
  if (alarmCells !== undefined && !(Number.isSafeInteger(alarmCells) && alarmCells >= 0)) {
    throw new RangeError(
      `Cannot create a shaper as alarmCells is not a non-negative integer: '${alarmCells}'`,
    )
  }
  let running = false
  let timer: { cancel(): void } | undefined
  let alarmArmed = true
  let tierIndex = 0

  const at = (atMs: number, fn: () => void) => {
    timer = clock.setTimer(atMs, () => {
      timer = undefined
      if (running) fn()
    })
  }

  // The alarm reads the backlog but only reports it: it must never feed back into the schedule.
  const checkAlarm = (backlog?: number) => {
    if (alarmCells === undefined) return
    const waiting = backlog ?? backlogCells()
    if (waiting > alarmCells) {
      if (alarmArmed) onAlarm?.(waiting)
      alarmArmed = false
    } else alarmArmed = true
  }

  let begin: () => void
  let kick = () => {}
  switch (schedule.mode) {
    case 'epoch':
    case 'tiered': {
      const epochMs = schedule.epochMs ?? SHAPER_DEFAULTS.epochMs
      _checkPositive('epochMs', epochMs)
      let tiers: readonly number[]
      let dwellEpochs = Number.POSITIVE_INFINITY
      if (schedule.mode === 'epoch') {
        tiers = [schedule.cellsPerEpoch ?? SHAPER_DEFAULTS.cellsPerEpoch]
      } else {
        tiers = schedule.tiers
        dwellEpochs = schedule.dwellMs / epochMs
        if (!Number.isSafeInteger(dwellEpochs) || dwellEpochs < 1) {
          throw new RangeError(
            `Cannot create a shaper as dwellMs is not a multiple of epochMs: '${schedule.dwellMs}'`,
          )
        }
      }
      _checkTiers(tiers)
      begin = () => {
        tierIndex = 0
        let nextDwell = dwellEpochs
        _runGrid(clock, at, random() * epochMs, epochMs, (epoch) => {
          // Tiered mode: the backlog is read only here, once per dwell, on the fixed epoch grid. The
          // choice among tiers.length rates is all an observer learns about the data, so this leaks
          // at most log2(tiers.length) bits per dwell (and nothing between dwell boundaries).
          if (epoch >= nextDwell) {
            nextDwell = (Math.floor(epoch / dwellEpochs) + 1) * dwellEpochs
            const backlog = backlogCells()
            tierIndex = tiers.findIndex((cells) => cells * dwellEpochs >= backlog)
            if (tierIndex === -1) tierIndex = tiers.length - 1
            checkAlarm(backlog)
          } else checkAlarm()
          send(tiers[tierIndex] ?? 0)
        })
      }
      break
    }
    case 'clock': {
      const intervalMs = schedule.intervalMs ?? SHAPER_DEFAULTS.intervalMs
      _checkPositive('intervalMs', intervalMs)
      const slot = () => {
        checkAlarm()
        send(1)
      }
      if (schedule.poisson ?? SHAPER_DEFAULTS.poisson) {
        // Exponential gaps (inverse transform; 1 - random() is in (0, 1], so the log is finite).
        const gap = () => -intervalMs * Math.log(1 - random())
        begin = () => {
          let dueMs = clock.now() + gap()
          const fire = () => {
            slot()
            // Skip slots the stall made us miss by drawing on: the rest of the Poisson schedule is
            // what it would have been had the timer fired on time.
            const nowMs = clock.now()
            do dueMs += gap()
            while (dueMs <= nowMs)
            at(dueMs, fire)
          }
          at(dueMs, fire)
        }
      } else {
        // A random phase, as in epoch mode, so slots do not line up with the process start.
        begin = () => _runGrid(clock, at, random() * intervalMs, intervalMs, slot)
      }
      break
    }
    case 'off':
      begin = () => {}
      kick = () => {
        // Coalesce the kicks of one turn into one send, outside the caller's stack.
        if (!running || timer !== undefined) return
        at(clock.now(), () => {
          const backlog = backlogCells()
          checkAlarm(backlog)
          if (backlog > 0) send(backlog)
        })
      }
      break
  }

  const stop = () => {
    running = false
    timer?.cancel()
    timer = undefined
  }
  return {
    start() {
      if (running) return
      running = true
      alarmArmed = true
      begin()
    },
    stop,
    kick: () => kick(),
    get tier() {
      return schedule.mode === 'tiered' ? schedule.tiers[tierIndex] : undefined
    },
    [Symbol.dispose]: stop,
  }
}

/**
 * Calls `onSlot(index)` at `start + offsetMs + index × stepMs`. Times are computed from the index,
 * not by adding steps, so they do not drift; after a late timer it goes on at the first grid point
 * still in the future, skipping the ones missed.
 */
function _runGrid(
  clock: ShaperClock,
  at: (atMs: number, fn: () => void) => void,
  offsetMs: number,
  stepMs: number,
  onSlot: (index: number) => void,
): void {
  const firstMs = clock.now() + offsetMs
  let index = 0
  const fire = () => {
    onSlot(index)
    index = Math.max(index + 1, Math.floor((clock.now() - firstMs) / stepMs) + 1)
    at(firstMs + index * stepMs, fire)
  }
  at(firstMs, fire)
}

/**
 * A small seeded PRNG (mulberry32) returning numbers in [0, 1), for tests and for callers that want
 * a reproducible schedule. Not cryptographic: in production pass a random source seeded from the OS.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let mixed = state
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1)
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61)
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 2 ** 32
  }
}

function _checkPositive(name: string, value: number): void {
  if (!(Number.isFinite(value) && value > 0)) {
    throw new RangeError(`Cannot create a shaper as ${name} is not a positive number: '${value}'`)
  }
}

function _checkTiers(tiers: readonly number[]): void {
  const valid =
    tiers.length > 0 &&
    tiers.every((cells, index) => Number.isSafeInteger(cells) && cells > 0 && cells > (tiers[index - 1] ?? 0))
  if (!valid) {
    throw new RangeError(
      `Cannot create a shaper as its cells per epoch are not increasing positive integers: '${tiers.join(',')}'`,
    )
  }
}
