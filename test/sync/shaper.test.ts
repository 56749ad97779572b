import { describe, expect, test } from 'vitest'
import { createShaper, type ShaperClock, type ShaperMode, seededRandom } from '../../sync/shaper.ts'

/** A virtual clock: timers in a priority queue (by time, then by order set), run by advance(). */
function createVirtualClock(): ShaperClock & {
  advance(ms: number, options?: { late?: boolean }): void
  pending(): number[]
} {
  let nowMs = 0
  let order = 0
  let timers: Array<{ atMs: number; order: number; fn: () => void }> = []
  const runDue = () => {
    for (;;) {
      const next = timers[0]
      if (next === undefined || next.atMs > nowMs) return
      timers.shift()
      next.fn()
    }
  }
  return {
    now: () => nowMs,
    setTimer(atMs, fn) {
      const timer = { atMs, order: order++, fn }
      timers.push(timer)
      timers.sort((a, b) => a.atMs - b.atMs || a.order - b.order)
      return {
        cancel() {
          timers = timers.filter((other) => other !== timer)
        },
      }
    },
    /** Runs the timers due within `ms`, each at its time; `late` jumps first, as a stalled process. */
    advance(ms, { late = false } = {}) {
      const target = nowMs + ms
      if (late) nowMs = target
      for (;;) {
        const next = timers[0]
        if (next === undefined || next.atMs > target) break
        nowMs = Math.max(nowMs, next.atMs)
        runDue()
      }
      nowMs = target
    },
    pending: () => timers.map((timer) => timer.atMs),
  }
}

type Sends = Array<[timeMs: number, cells: number]>

/**
 * Runs a shaper for 60 virtual seconds against a workload. `bursty`: at random times (its own PRNG)
 * the backlog jumps to 500 cells; every granted cell drains one. `idle`: the backlog stays 0.
 */
function run(schedule: ShaperMode, workload: 'idle' | 'bursty', seed = 7) {
  const clock = createVirtualClock()
  const sends: Sends = []
  const alarms: number[] = []
  let backlog = 0
  const shaper = createShaper({
    schedule,
    clock,
    random: seededRandom(seed),
    send(cells) {
      sends.push([clock.now(), cells])
      backlog = Math.max(0, backlog - cells)
    },
    backlogCells: () => backlog,
    alarmCells: 100,
    onAlarm: (cells) => alarms.push(cells),
  })
  if (workload === 'bursty') {
    const burstRandom = seededRandom(seed * 31 + 1)
    const burst = () => {
      backlog = 500
      shaper.kick()
      clock.setTimer(clock.now() + 1 + burstRandom() * 15_000, burst)
    }
    clock.setTimer(burstRandom() * 5_000, burst)
  }
  shaper.start()
  clock.advance(60_000)
  shaper.stop()
  return { sends, alarms, shaper }
}

describe('non-interference', () => {
  test.each<[string, ShaperMode, number]>([
    ['epoch', { mode: 'epoch', epochMs: 1000, cellsPerEpoch: 4 }, 60],
    ['clock (constant)', { mode: 'clock', intervalMs: 250, poisson: false }, 240],
    ['clock (Poisson)', { mode: 'clock', intervalMs: 250, poisson: true }, 240],
  ])('%s sends the identical schedule whether the link is idle or bursty', (_name, schedule, slots) => {
    const idle = run(schedule, 'idle')
    const bursty = run(schedule, 'bursty')
    expect(bursty.sends).toEqual(idle.sends)
    // Not vacuous: the run did send on schedule, the bursts did happen (the alarm saw them) and
    // data was still waiting, so a shaper that sped up for it would have been caught.
    expect(Math.abs(idle.sends.length - slots)).toBeLessThanOrEqual(
      schedule.mode === 'clock' && schedule.poisson ? 40 : 1,
    )
    expect(bursty.alarms.length).toBeGreaterThan(0)
    expect(idle.alarms).toEqual([])
    // Another seed gives another schedule: the schedule does come from `random`.
    expect(run(schedule, 'idle', 8).sends).not.toEqual(idle.sends)
  })

  test('tiered sends on the same epoch grid either way, changing K only at dwell boundaries', () => {
    const schedule: ShaperMode = { mode: 'tiered', epochMs: 1000, tiers: [2, 8, 32], dwellMs: 10_000 }
    const idle = run(schedule, 'idle')
    const bursty = run(schedule, 'bursty')
    expect(bursty.sends.map(([timeMs]) => timeMs)).toEqual(idle.sends.map(([timeMs]) => timeMs))
    const firstMs = idle.sends[0]![0]
    expect(firstMs).toBeGreaterThanOrEqual(0)
    expect(firstMs).toBeLessThan(1000)
    idle.sends.forEach(([timeMs], epoch) => {
      expect(timeMs).toBeCloseTo(firstMs + epoch * 1000, 6)
    })
    for (const { sends } of [idle, bursty]) {
      sends.forEach(([, cells], epoch) => {
        expect([2, 8, 32]).toContain(cells)
        if (epoch % 10 !== 0) expect(cells).toBe(sends[epoch - 1]![1])
      })
    }
    expect(new Set(idle.sends.map(([, cells]) => cells))).toEqual(new Set([2]))
    // The bursts of 500 cells did move bursty up a tier, and only at dwell boundaries.
    const changes = bursty.sends.flatMap(([, cells], epoch) =>
      epoch > 0 && cells !== bursty.sends[epoch - 1]![1] ? [epoch] : [],
    )
    expect(changes.length).toBeGreaterThan(0)
    for (const epoch of changes) expect(epoch % 10).toBe(0)
  })

  test('off sends only when data waits, so its schedule follows the data', () => {
    const idle = run({ mode: 'off' }, 'idle')
    const bursty = run({ mode: 'off' }, 'bursty')
    expect(idle.sends).toEqual([])
    expect(bursty.sends.length).toBeGreaterThan(0)
    for (const [, cells] of bursty.sends) expect(cells).toBe(500)
  })

  test('epoch and clock never read the backlog unless an alarm is set', () => {
    for (const schedule of [
      { mode: 'epoch' },
      { mode: 'clock' },
      { mode: 'clock', poisson: true },
    ] as const) {
      const clock = createVirtualClock()
      let sent = 0
      const shaper = createShaper({
        schedule,
        clock,
        random: seededRandom(1),
        send(cells) {
          sent += cells
        },
        backlogCells: () => {
          throw new Error('the backlog was read')
        },
      })
      shaper.start()
      clock.advance(10_000)
      shaper.stop()
      expect(sent).toBeGreaterThan(20)
    }
  })
})

describe('schedules', () => {
  test('epoch starts after a jitter in [0, T) that differs by seed, then sends K per epoch', () => {
    const firsts = new Set<number>()
    for (let seed = 1; seed <= 20; seed++) {
      const { sends } = run({ mode: 'epoch', epochMs: 1000, cellsPerEpoch: 3 }, 'idle', seed)
      const firstMs = sends[0]![0]
      expect(firstMs).toBeGreaterThanOrEqual(0)
      expect(firstMs).toBeLessThan(1000)
      for (const [, cells] of sends) expect(cells).toBe(3)
      firsts.add(firstMs)
    }
    expect(firsts.size).toBeGreaterThan(15)
    // The edges of random(): 0 starts at once, just under 1 starts just under T.
    for (const [value, expected] of [
      [0, 0],
      [0.999, 999],
    ]) {
      const clock = createVirtualClock()
      const times: number[] = []
      const shaper = createShaper({
        schedule: { mode: 'epoch' },
        clock,
        random: () => value!,
        send: () => times.push(clock.now()),
        backlogCells: () => 0,
      })
      shaper.start()
      clock.advance(1000)
      expect(times[0]).toBeCloseTo(expected!, 6)
    }
  })

  test.each([false, true])(
    'clock (poisson: %s) sends one cell for a late timer and skips the missed slots',
    (poisson) => {
      const clock = createVirtualClock()
      const sends: Sends = []
      const shaper = createShaper({
        schedule: { mode: 'clock', intervalMs: 250, poisson },
        clock,
        random: seededRandom(3),
        send: (cells) => sends.push([clock.now(), cells]),
        backlogCells: () => 0,
      })
      shaper.start()
      clock.advance(1000)
      const onTime = sends.length
      expect(onTime).toBeGreaterThan(0)
      // The process stalls for 5 s (about 20 slots); when it wakes the overdue timer fires once.
      clock.advance(5000, { late: true })
      expect(sends.slice(onTime)).toEqual([[6000, 1]])
      expect(clock.pending()).toHaveLength(1)
      expect(clock.pending()[0]).toBeGreaterThan(6000)
      // And it goes on at the normal rate afterwards.
      clock.advance(1000)
      const after = sends.slice(onTime + 1)
      if (!poisson) expect(after).toHaveLength(4)
      for (const [, cells] of after) expect(cells).toBe(1)
      shaper.stop()
    },
  )

  test('constant clock slots sit on a fixed grid after a random phase', () => {
    const { sends } = run({ mode: 'clock', intervalMs: 250 }, 'idle')
    const phaseMs = sends[0]![0]
    expect(phaseMs).toBeGreaterThanOrEqual(0)
    expect(phaseMs).toBeLessThan(250)
    sends.forEach(([timeMs, cells], slot) => {
      expect(timeMs).toBeCloseTo(phaseMs + slot * 250, 6)
      expect(cells).toBe(1)
    })
  })

  test('epoch skips missed epochs after a stall instead of sending them in a burst', () => {
    const clock = createVirtualClock()
    const sends: Sends = []
    const shaper = createShaper({
      schedule: { mode: 'epoch', epochMs: 1000, cellsPerEpoch: 4 },
      clock,
      random: () => 0.5,
      send: (cells) => sends.push([clock.now(), cells]),
      backlogCells: () => 0,
    })
    shaper.start()
    clock.advance(1000)
    clock.advance(10_000, { late: true })
    expect(sends).toEqual([
      [500, 4],
      [11_000, 4],
    ])
    expect(clock.pending()).toEqual([11_500])
    shaper.stop()
  })

  test('tiered picks the smallest tier that drains the backlog within a dwell, or the largest', () => {
    const clock = createVirtualClock()
    let backlog = 0
    const sends: number[] = []
    const shaper = createShaper({
      schedule: { mode: 'tiered', epochMs: 100, tiers: [2, 8, 32], dwellMs: 1000 },
      clock,
      random: () => 0,
      send: (cells) => sends.push(cells),
      backlogCells: () => backlog,
    })
    shaper.start()
    expect(shaper.tier).toBe(2)
    const tierAfterDwell = (cells: number) => {
      backlog = cells
      clock.advance(1000)
      return shaper.tier
    }
    // 10 epochs per dwell: 2 × 10 = 20, 8 × 10 = 80, 32 × 10 = 320.
    expect(tierAfterDwell(80)).toBe(8)
    expect(tierAfterDwell(20)).toBe(2)
    expect(tierAfterDwell(81)).toBe(32)
    expect(tierAfterDwell(10_000)).toBe(32)
    expect(tierAfterDwell(0)).toBe(2)
    expect(sends.slice(0, 11)).toEqual([2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 8])
    shaper.stop()
  })

  test('off coalesces kicks into one send of the whole backlog and sends nothing when empty', () => {
    const clock = createVirtualClock()
    let backlog = 0
    const sends: number[] = []
    const shaper = createShaper({
      schedule: { mode: 'off' },
      clock,
      random: seededRandom(1),
      send: (cells) => sends.push(cells),
      backlogCells: () => backlog,
    })
    shaper.start()
    shaper.kick()
    clock.advance(0)
    backlog = 3
    shaper.kick()
    shaper.kick()
    expect(sends).toEqual([])
    clock.advance(0)
    expect(sends).toEqual([3])
    clock.advance(10_000)
    expect(sends).toEqual([3])
    shaper.stop()
  })

  test('the alarm fires once per crossing of alarmCells and does not change the schedule', () => {
    const clock = createVirtualClock()
    const backlogs = [0, 20, 30, 11, 10, 5, 50, 60]
    const alarms: number[] = []
    const sends: number[] = []
    const shaper = createShaper({
      schedule: { mode: 'clock', intervalMs: 100 },
      clock,
      random: () => 0,
      send: (cells) => sends.push(cells),
      backlogCells: () => backlogs[sends.length] ?? 0,
      alarmCells: 10,
      onAlarm: (cells) => alarms.push(cells),
    })
    shaper.start()
    clock.advance(750)
    expect(sends).toEqual([1, 1, 1, 1, 1, 1, 1, 1])
    expect(alarms).toEqual([20, 50])
    shaper.stop()
  })

  test('stop() cancels the schedule, is idempotent, and start() begins again', () => {
    const clock = createVirtualClock()
    let sent = 0
    const shaper = createShaper({
      schedule: { mode: 'epoch' },
      clock,
      random: () => 0,
      send: () => void sent++,
      backlogCells: () => 0,
    })
    shaper.start()
    shaper.start()
    clock.advance(0)
    expect(sent).toBe(1)
    shaper.stop()
    shaper[Symbol.dispose]()
    expect(clock.pending()).toEqual([])
    clock.advance(5000)
    expect(sent).toBe(1)
    shaper.start()
    clock.advance(0)
    expect(sent).toBe(2)
    shaper.stop()
  })

  test('createShaper() refuses impossible schedules', () => {
    const base = { clock: createVirtualClock(), random: () => 0, send: () => {}, backlogCells: () => 0 }
    for (const schedule of [
      { mode: 'epoch', epochMs: 0 },
      { mode: 'epoch', cellsPerEpoch: 1.5 },
      { mode: 'clock', intervalMs: -1 },
      { mode: 'tiered', epochMs: 1000, tiers: [], dwellMs: 10_000 },
      { mode: 'tiered', epochMs: 1000, tiers: [8, 2], dwellMs: 10_000 },
      { mode: 'tiered', epochMs: 1000, tiers: [2, 8], dwellMs: 1500 },
    ] as ShaperMode[]) {
      expect(() => createShaper({ ...base, schedule })).toThrow(RangeError)
    }
    expect(() => createShaper({ ...base, schedule: { mode: 'off' }, alarmCells: -1 })).toThrow(RangeError)
  })

  test('seededRandom() is reproducible per seed and stays in [0, 1)', () => {
    const values = Array.from({ length: 10_000 }, seededRandom(42))
    expect(Array.from({ length: 10_000 }, seededRandom(42))).toEqual(values)
    expect(Array.from({ length: 10 }, seededRandom(43))).not.toEqual(values.slice(0, 10))
    expect(values.every((value) => value >= 0 && value < 1)).toBe(true)
    const mean = values.reduce((sum, value) => sum + value, 0) / values.length
    expect(mean).toBeGreaterThan(0.48)
    expect(mean).toBeLessThan(0.52)
  })
})
