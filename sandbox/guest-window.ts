/**
 * Source of the guest module `taureau:window`: tumbling and sliding windows by event time, for
 * a function to keep in its state. There are no timers in a sandbox, so nothing closes on its
 * own: a window closes when the watermark (the latest event time seen, minus the allowed
 * lateness) reaches its end, and the watermark moves only on `add()` and `advance()` (the latter
 * from `onSchedule`, when no events come). Written as plain JavaScript because it runs inside
 * QuickJS.
 */
export const GUEST_WINDOW = `
const quote = (value) => "'" + String(value) + "'"

function checkWholeMs(name, value, min) {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new RangeError('Cannot create windows as ' + name + ' is not a whole number >= ' + min + ': ' + quote(value))
  }
}

function checkTime(atMs) {
  if (!Number.isFinite(atMs)) throw new RangeError('Cannot place an event in a window as its time is not a finite number: ' + quote(atMs))
}

/**
 * Sliding windows by event time: windows [start, start + sizeMs) for every start that is a
 * multiple of slideMs, so an event joins each of the about sizeMs / slideMs windows covering it.
 * Each window's value is folded with reduce(acc, value, atMs) from init(); reduce may return a new
 * accumulator or update the one it is given and return nothing (so a sketch's add() does).
 *
 * Lateness: with W the watermark (latest event time seen minus latenessMs), a window closes once
 * W >= its end, and add() and advance() return the windows they close as [{ start, end, value }]
 * in order. An event joins those of its windows still open; one whose windows have all closed is
 * counted in 'dropped' and changes nothing else (as Flink counts late records dropped). So events
 * up to latenessMs behind the latest are never dropped.
 *
 * Memory: the open windows are those with start in (latest - latenessMs - sizeMs, latest], at
 * most ceil((sizeMs + latenessMs) / slideMs) of them, so the constructor refuses options that
 * would allow more than maxOpenWindows (default 1000) rather than fail in the middle of a stream.
 */
export class SlidingWindow {
  static type = 'SlidingWindow'
  // The open windows: their starts in ascending order (so also by end) and their accumulators.
  #starts = []
  #accumulators = new Map()
  #init
  #reduce

  constructor(options) {
    const { sizeMs, slideMs, latenessMs = 0, maxOpenWindows = 1000, init, reduce, revive } = options ?? {}
    checkWholeMs('sizeMs', sizeMs, 1)
    checkWholeMs('slideMs', slideMs, 1)
    checkWholeMs('latenessMs', latenessMs, 0)
    checkWholeMs('maxOpenWindows', maxOpenWindows, 1)
    // A slide longer than the size would leave gaps in which events join no window.
    if (slideMs > sizeMs) throw new RangeError('Cannot create windows as slideMs is longer than sizeMs: ' + quote(slideMs))
    for (const [name, fn] of [['init', init], ['reduce', reduce]]) {
      if (typeof fn !== 'function') throw new TypeError('Cannot create windows as ' + name + ' is not a function: ' + quote(fn))
    }
    if (revive !== undefined && typeof revive !== 'function') {
      throw new TypeError('Cannot create windows as revive is not a function: ' + quote(revive))
    }
    const mostOpen = Math.ceil((sizeMs + latenessMs) / slideMs)
    if (mostOpen > maxOpenWindows) {
      throw new RangeError(
        'Cannot create windows as up to ' + mostOpen + ' could be open at once, ceil((sizeMs + latenessMs) / slideMs), more than maxOpenWindows: ' + quote(maxOpenWindows),
      )
    }
    this.sizeMs = sizeMs
    this.slideMs = slideMs
    this.latenessMs = latenessMs
    this.maxOpenWindows = maxOpenWindows
    this.maxEventTimeMs = null
    this.dropped = 0
    this.#init = init
    this.#reduce = reduce
  }

  /** The latest event time seen minus latenessMs: windows ending at or before it are closed. */
  get watermark() {
    return this.maxEventTimeMs === null ? -Infinity : this.maxEventTimeMs - this.latenessMs
  }

  /** How many windows are open. */
  get openWindows() {
    return this.#starts.length
  }

  /** Adds an event at time atMs to its open windows; returns the windows this closes. */
  add(atMs, value) {
    checkTime(atMs)
    const watermark = this.watermark
    let joined = false
    // Newest window first: ends decrease, so once one is closed all the older ones are too.
    for (let start = Math.floor(atMs / this.slideMs) * this.slideMs; start > atMs - this.sizeMs; start -= this.slideMs) {
      if (start + this.sizeMs <= watermark) break
      this.#fold(start, value, atMs)
      joined = true
    }
    if (!joined) this.dropped++
    return this.advance(atMs)
  }

  #fold(start, value, atMs) {
    const open = this.#accumulators.has(start)
    const acc = open ? this.#accumulators.get(start) : this.#init()
    const next = this.#reduce(acc, value, atMs)
    this.#accumulators.set(start, next === undefined ? acc : next)
    // Placed once reduce has returned, so a reduce that throws leaves no half-made window.
    if (!open) this.#place(start)
  }

  #place(start) {
    const starts = this.#starts
    let at = starts.length
    while (at > 0 && starts[at - 1] > start) at--
    starts.splice(at, 0, start)
  }

  /**
   * Moves the watermark as an event at atMs would, without one (from onSchedule, when events
   * stop coming); returns the windows this closes. Times behind the latest change nothing.
   */
  advance(atMs) {
    checkTime(atMs)
    if (this.maxEventTimeMs === null || atMs > this.maxEventTimeMs) this.maxEventTimeMs = atMs
    const watermark = this.watermark
    const closed = []
    while (this.#starts.length > 0 && this.#starts[0] + this.sizeMs <= watermark) {
      const start = this.#starts.shift()
      closed.push({ start, end: start + this.sizeMs, value: this.#accumulators.get(start) })
      this.#accumulators.delete(start)
    }
    return closed
  }

  /** The state, open windows included; accumulators are serialized by their own toJSON(). */
  toJSON() {
    return {
      type: this.constructor.type, sizeMs: this.sizeMs, slideMs: this.slideMs, latenessMs: this.latenessMs,
      maxEventTimeMs: this.maxEventTimeMs, dropped: this.dropped,
      windows: this.#starts.map((start) => [start, this.#accumulators.get(start)]),
    }
  }

  /**
   * Restores windows saved with toJSON(). The functions cannot be saved, so options are given
   * again; each saved accumulator goes through options.revive (say CountMin.fromJSON) when given.
   * The sizes and lateness must be the saved ones, as they decide which windows exist.
   */
  static fromJSON(json, options) {
    const windows = new this(options)
    const what = 'a saved ' + this.type
    if (json?.type !== this.type || !Array.isArray(json.windows)) throw new TypeError('Cannot restore windows as this value is not ' + what)
    for (const name of ['sizeMs', 'slideMs', 'latenessMs']) {
      if (json[name] !== windows[name]) {
        throw new RangeError('Cannot restore windows as ' + name + ' differs from the saved one: ' + quote(windows[name]) + ' against ' + quote(json[name]))
      }
    }
    const maxEventTimeMs = json.maxEventTimeMs
    const watermark = maxEventTimeMs === null ? -Infinity : maxEventTimeMs - windows.latenessMs
    // The windows must be ones this class makes, in order, and still open at the saved watermark.
    const valid = json.windows.every(
      (entry, i) =>
        Array.isArray(entry) && Number.isSafeInteger(entry[0]) && entry[0] % windows.slideMs === 0 &&
        entry[0] + windows.sizeMs > watermark && (i === 0 || entry[0] > json.windows[i - 1][0]),
    )
    if (!valid || (maxEventTimeMs !== null && !Number.isFinite(maxEventTimeMs)) || !Number.isSafeInteger(json.dropped) || json.dropped < 0 || json.windows.length > windows.maxOpenWindows) {
      throw new TypeError('Cannot restore windows as this value is not ' + what)
    }
    const revive = options.revive ?? ((acc) => acc)
    windows.maxEventTimeMs = maxEventTimeMs
    windows.dropped = json.dropped
    for (const [start, acc] of json.windows) {
      windows.#starts.push(start)
      windows.#accumulators.set(start, revive(acc))
    }
    return windows
  }
}

/**
 * Tumbling windows by event time: [start, start + sizeMs) for start a multiple of sizeMs, each
 * event in exactly one. A SlidingWindow whose slide is its size; same options but slideMs, same
 * lateness rules and bound (ceil((sizeMs + latenessMs) / sizeMs) open windows at most).
 */
export class TumblingWindow extends SlidingWindow {
  static type = 'TumblingWindow'

  constructor(options) {
    super({ ...options, slideMs: options?.sizeMs })
  }
}
`
