import { expect, test } from 'vitest'
import { createTenantSandbox, SandboxError } from '../../sandbox/index.ts'

const MB = 1024 * 1024
const info = { name: 'window', version: 1, config: {}, now: 0 }

interface ClosedWindow {
  start: number
  end: number
  value: unknown
}

// The guest makes seeded events, each up to latenessMs behind the latest one (out of order, but
// never too late), plus every 500th one far too late for all its windows. Beside the windows it
// computes the exact answer: every window with an event, folded over its on-time events, and the
// call at which the watermark first reaches its end, which is when the window must close.
const AGAINST_EXACT = `
import { SlidingWindow, TumblingWindow } from 'taureau:window'
export default {
  onMessage({ n, sizeMs, slideMs, latenessMs }) {
    let seed = 4242
    const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296)
    const events = []
    let clock = 1700000000000
    let latest = -Infinity
    for (let i = 0; i < n; i++) {
      clock += Math.floor(random() * 200)
      const tooLate = i % 500 === 499
      const atMs = tooLate ? latest - latenessMs - sizeMs - Math.floor(random() * 1000) : clock - Math.floor(random() * (latenessMs + 1))
      events.push({ atMs, value: Math.floor(random() * 100), tooLate })
      latest = Math.max(latest, atMs)
    }
    const init = () => ({ count: 0, sum: 0, first: null })
    const reduce = (acc, value) => ({ count: acc.count + 1, sum: acc.sum + value, first: acc.first ?? value })
    const flushAt = latest + latenessMs + sizeMs

    const run = (windows) => {
      const closed = []
      const closedAt = []
      events.forEach(({ atMs, value }, call) => {
        for (const window of windows.add(atMs, value)) {
          closed.push(window)
          closedAt.push(call)
        }
      })
      for (const window of windows.advance(flushAt)) {
        closed.push(window)
        closedAt.push(n)
      }
      return { closed, closedAt, dropped: windows.dropped, open: windows.openWindows }
    }

    const exact = (slide) => {
      const byStart = new Map()
      for (const { atMs, value, tooLate } of events) {
        if (tooLate) continue
        // The windows holding atMs: start = j * slide with atMs - sizeMs < start <= atMs.
        for (let j = Math.ceil((atMs - sizeMs + 1) / slide); j * slide <= atMs; j++) {
          byStart.set(j * slide, reduce(byStart.get(j * slide) ?? init(), value))
        }
      }
      const starts = [...byStart.keys()].sort((a, b) => a - b)
      // seen[call]: the latest event time once call is made; it only grows, as do the ends.
      const seen = []
      for (const { atMs } of events) seen.push(Math.max(seen.at(-1) ?? -Infinity, atMs))
      let call = 0
      const closedAt = starts.map((start) => {
        while (call < n && seen[call] - latenessMs < start + sizeMs) call++
        return call
      })
      return { closed: starts.map((start) => ({ start, end: start + sizeMs, value: byStart.get(start) })), closedAt }
    }

    return {
      tooLate: events.filter((event) => event.tooLate).length,
      outOfOrder: events.filter((event, i) => i > 0 && event.atMs < events[i - 1].atMs).length,
      tumbling: run(new TumblingWindow({ sizeMs, latenessMs, init, reduce })),
      tumblingExact: exact(sizeMs),
      sliding: run(new SlidingWindow({ sizeMs, slideMs, latenessMs, init, reduce })),
      slidingExact: exact(slideMs),
    }
  },
}`

interface WindowRun {
  closed: ClosedWindow[]
  closedAt: number[]
  dropped: number
  open: number
}

test('tumbling and sliding windows equal an exact computation and close when the watermark passes', async () => {
  using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 64 * MB })
  sandbox.compile('exact', AGAINST_EXACT, ['onMessage'])
  const args = { n: 20_000, sizeMs: 10_000, slideMs: 2_500, latenessMs: 3_000 }
  const { value } = sandbox.invoke('exact', 'onMessage', [args], info, 30_000)
  const result = value as {
    tooLate: number
    outOfOrder: number
    tumbling: WindowRun
    tumblingExact: Pick<WindowRun, 'closed' | 'closedAt'>
    sliding: WindowRun
    slidingExact: Pick<WindowRun, 'closed' | 'closedAt'>
  }
  // The stream really is out of order, and has events beyond the lateness.
  expect(result.outOfOrder).toBeGreaterThan(args.n / 4)
  expect(result.tooLate).toBe(40)
  for (const [run, exact] of [
    [result.tumbling, result.tumblingExact],
    [result.sliding, result.slidingExact],
  ] as const) {
    expect(run.closed.length).toBeGreaterThan(100)
    expect(run.closed).toEqual(exact.closed)
    expect(run.closedAt).toEqual(exact.closedAt)
    expect(run.dropped).toBe(result.tooLate)
    expect(run.open).toBe(0)
  }
  // Each event is in sizeMs / slideMs sliding windows.
  expect(result.sliding.closed.length).toBeGreaterThan(3 * result.tumbling.closed.length)
})

const BY_HAND = `
import { TumblingWindow } from 'taureau:window'
export default {
  onMessage() {
    const windows = new TumblingWindow({ sizeMs: 1000, latenessMs: 1000, init: () => 0, reduce: (sum, value) => sum + value })
    const steps = [[0, 1], [500, 2], [1500, 4], [10000, 8], [9000, 16], [8999, 32], [9999, 64]]
    const out = steps.map(([atMs, value]) => ({ atMs, closed: windows.add(atMs, value), dropped: windows.dropped }))
    out.push({ advance: 10999, closed: windows.advance(10999) }, { advance: 11000, closed: windows.advance(11000) })
    out.push({ advance: 5000, closed: windows.advance(5000), watermark: windows.watermark })
    return out
  },
}`

test('an event exactly latenessMs behind the latest is kept and one 1 ms older is dropped', async () => {
  using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
  sandbox.compile('hand', BY_HAND, ['onMessage'])
  const { value } = sandbox.invoke('hand', 'onMessage', [], info, 10_000)
  expect(value).toEqual([
    { atMs: 0, closed: [], dropped: 0 },
    { atMs: 500, closed: [], dropped: 0 },
    { atMs: 1500, closed: [], dropped: 0 },
    // The watermark jumps to 9000: both earlier windows close, in order.
    {
      atMs: 10000,
      closed: [
        { start: 0, end: 1000, value: 3 },
        { start: 1000, end: 2000, value: 4 },
      ],
      dropped: 0,
    },
    { atMs: 9000, closed: [], dropped: 0 },
    { atMs: 8999, closed: [], dropped: 1 },
    { atMs: 9999, closed: [], dropped: 1 },
    { advance: 10999, closed: [] },
    { advance: 11000, closed: [{ start: 9000, end: 10000, value: 80 }] },
    // A time behind the latest does not move the watermark back.
    { advance: 5000, closed: [], watermark: 10000 },
  ])
})

// One invocation per slice of the stream, the windows kept as JSON state between them (as a
// function keeps its state), with a Count-Min sketch per window revived by CountMin.fromJSON.
const RESUMED = `
import { CountMin } from 'taureau:sketch'
import { SlidingWindow } from 'taureau:window'
const OPTIONS = {
  sizeMs: 60000, slideMs: 20000, latenessMs: 5000,
  init: () => new CountMin({ width: 64, depth: 3 }),
  reduce: (sketch, key) => sketch.add(key),
  revive: (json) => CountMin.fromJSON(json),
}
export default {
  onMessage({ n, from, to, state }) {
    let seed = 77
    const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296)
    const events = []
    let clock = 0
    for (let i = 0; i < n; i++) {
      clock += Math.floor(random() * 1000)
      // Up to 8 s behind with 5 s lateness, so some events miss some windows; every 100th is 90 s
      // behind and misses all of them.
      const behindMs = i % 100 === 99 ? 90000 : Math.floor(random() * 8000)
      events.push([clock - behindMs, 'sensor-' + Math.floor(random() * random() * 40)])
    }
    const windows = state === null ? new SlidingWindow(OPTIONS) : SlidingWindow.fromJSON(state, OPTIONS)
    const closed = []
    for (const [atMs, key] of events.slice(from, to)) closed.push(...windows.add(atMs, key))
    if (to === n) closed.push(...windows.advance(clock + 100000))
    return { state: windows, closed, hot: closed.map((window) => window.value.estimate('sensor-0')) }
  },
}`

test('windows saved as JSON between invocations give the same results as one uninterrupted run', async () => {
  using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 64 * MB })
  sandbox.compile('resumed', RESUMED, ['onMessage'])
  type Slice = { state: { dropped: number; windows: unknown[] }; closed: ClosedWindow[]; hot: number[] }
  const n = 5_000
  const invoke = (from: number, to: number, state: unknown): Slice =>
    sandbox.invoke('resumed', 'onMessage', [{ n, from, to, state }], info, 30_000).value as Slice
  const whole = invoke(0, n, null)
  const closed: ClosedWindow[] = []
  const hot: number[] = []
  let slice: Slice | undefined
  for (let from = 0; from < n; from += 700) {
    slice = invoke(from, Math.min(from + 700, n), slice?.state ?? null)
    closed.push(...slice.closed)
    hot.push(...slice.hot)
    if (from === 2_100) expect(slice.state.windows.length).toBeGreaterThan(0) // saved mid-window
  }
  expect(whole.closed.length).toBeGreaterThan(100)
  expect(whole.state.dropped).toBe(n / 100)
  expect(closed).toEqual(whole.closed)
  expect(hot).toEqual(whole.hot)
  expect(slice?.state).toEqual(whole.state)
  expect(Math.max(...whole.hot)).toBeGreaterThan(0)
})

// Sliding windows of 4 s every 1 s with 2.5 s lateness: the open ones start in
// (latest - 6.5 s, latest], so at most ceil(6500 / 1000) = 7 of them.
const BOUNDED = `
import { SlidingWindow, TumblingWindow } from 'taureau:window'
export default {
  onMessage({ maxOpenWindows }) {
    const windows = new SlidingWindow({ sizeMs: 4000, slideMs: 1000, latenessMs: 2500, maxOpenWindows, init: () => 0, reduce: (count) => count + 1 })
    let seed = 5
    const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296)
    let clock = 0
    let mostOpen = 0
    for (let i = 0; i < 5000; i++) {
      clock += Math.floor(random() * 300)
      windows.add(clock - Math.floor(random() * 2501), i)
      mostOpen = Math.max(mostOpen, windows.openWindows)
    }
    let refused = ''
    try {
      new TumblingWindow({ sizeMs: 60000, latenessMs: 86400000, init: () => 0, reduce: (count) => count + 1 })
    } catch (error) {
      refused = error.name + ': ' + error.message
    }
    return { mostOpen, refused }
  },
}`

test('the options are refused when more windows than maxOpenWindows could be open at once', async () => {
  using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
  sandbox.compile('bounded', BOUNDED, ['onMessage'])
  const { value } = sandbox.invoke('bounded', 'onMessage', [{ maxOpenWindows: 7 }], info, 10_000)
  // The bound is reached, never passed; and a day of lateness on minute windows is 1441 > 1000.
  expect(value).toEqual({
    mostOpen: 7,
    refused:
      "RangeError: Cannot create windows as up to 1441 could be open at once, ceil((sizeMs + latenessMs) / slideMs), more than maxOpenWindows: '1000'",
  })
  let error: unknown
  try {
    sandbox.invoke('bounded', 'onMessage', [{ maxOpenWindows: 6 }], info, 10_000)
  } catch (caught) {
    error = caught
  }
  expect(error).toBeInstanceOf(SandboxError)
  expect((error as SandboxError).message).toMatch(/up to 7 could be open at once/)
})

const MISUSE = `
import { SlidingWindow, TumblingWindow } from 'taureau:window'
const attempt = (run) => {
  try {
    run()
    return 'accepted'
  } catch (error) {
    return error.name + ': ' + error.message
  }
}
export default {
  onMessage() {
    const options = { sizeMs: 1000, init: () => 0, reduce: (sum, value) => sum + value }
    const saved = JSON.parse(JSON.stringify(new TumblingWindow(options)))
    const windows = new TumblingWindow(options)
    windows.add(1500, 1)
    return [
      attempt(() => new SlidingWindow({ ...options, slideMs: 2000 })),
      attempt(() => new TumblingWindow({ ...options, sizeMs: 0 })),
      attempt(() => new TumblingWindow({ ...options, reduce: undefined })),
      attempt(() => windows.add(Number.NaN, 1)),
      attempt(() => TumblingWindow.fromJSON(saved, { ...options, sizeMs: 2000 })),
      attempt(() => SlidingWindow.fromJSON(saved, { ...options, slideMs: 1000 })),
      attempt(() => TumblingWindow.fromJSON({ ...JSON.parse(JSON.stringify(windows)), windows: [[500, 1]] }, options)),
      attempt(() => TumblingWindow.fromJSON(JSON.parse(JSON.stringify(windows)), options)),
    ]
  },
}`

test('bad options, bad times and state saved by other windows are refused with clear errors', async () => {
  using sandbox = await createTenantSandbox({ tenantId: 'acme', memoryLimitBytes: 32 * MB })
  sandbox.compile('misuse', MISUSE, ['onMessage'])
  const { value } = sandbox.invoke('misuse', 'onMessage', [], info, 10_000)
  expect(value).toEqual([
    "RangeError: Cannot create windows as slideMs is longer than sizeMs: '2000'",
    "RangeError: Cannot create windows as sizeMs is not a whole number >= 1: '0'",
    "TypeError: Cannot create windows as reduce is not a function: 'undefined'",
    "RangeError: Cannot place an event in a window as its time is not a finite number: 'NaN'",
    "RangeError: Cannot restore windows as sizeMs differs from the saved one: '2000' against '1000'",
    'TypeError: Cannot restore windows as this value is not a saved SlidingWindow',
    'TypeError: Cannot restore windows as this value is not a saved TumblingWindow',
    'accepted',
  ])
})
