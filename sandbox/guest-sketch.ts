/**
 * Source of the guest module `taureau:sketch`: streaming sketches a function can keep in its
 * state: Count-Min, HyperLogLog, Bloom filter, reservoir sample, EWMA, KLL quantiles
 * (`Quantiles`) and Space-Saving heavy hitters (`TopK`). Each is serializable (`toJSON()` /
 * `fromJSON()`), and all but the reservoir sample and the EWMA are mergeable. The ones that need
 * randomness draw it from a seeded generator kept in their state, so they replay exactly. Written
 * as plain JavaScript because it runs inside QuickJS.
 */
export const GUEST_SKETCH = `
// 32-bit FNV-1a over UTF-16 code units, seeded, with murmur3's finalizer for avalanche.
function hash32(text, seed) {
  let h = (2166136261 ^ Math.imul(seed + 1, 0x9e3779b1)) >>> 0
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 16777619)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

// xorshift32 (Marsaglia 2003): the next state of a seeded generator kept in a sketch's state, so a
// sketch restored from JSON draws the same numbers as the one that was saved.
function nextXorshift32(state) {
  let x = state
  x ^= x << 13
  x ^= x >>> 17
  x ^= x << 5
  return x >>> 0
}

function checkInteger(name, value, min, max) {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(name + ' must be an integer from ' + min + ' to ' + max + ', got ' + value)
  }
}

/**
 * Count-Min sketch (Cormode and Muthukrishnan 2005) with conservative update (Estan and Varghese
 * 2002): estimate(x) >= count(x), and estimate(x) <= count(x) + epsilon * total with probability
 * at least 1 - delta, where epsilon = e / width and delta = exp(-depth).
 */
export class CountMin {
  constructor({ width = 2048, depth = 5, conservative = true } = {}) {
    checkInteger('width', width, 1, 1 << 20)
    checkInteger('depth', depth, 1, 32)
    this.width = width
    this.depth = depth
    this.conservative = conservative !== false
    this.total = 0
    this.table = new Array(width * depth).fill(0)
  }

  /** A sketch sized for an additive error epsilon * total with probability 1 - delta. */
  static withError(epsilon, delta) {
    return new CountMin({ width: Math.ceil(Math.E / epsilon), depth: Math.ceil(Math.log(1 / delta)) })
  }

  #cells(key) {
    const text = String(key)
    const cells = []
    for (let row = 0; row < this.depth; row++) cells.push(row * this.width + (hash32(text, row) % this.width))
    return cells
  }

  add(key, count = 1) {
    if (!(count >= 0) || !Number.isFinite(count)) throw new RangeError('count must be a finite number >= 0')
    const cells = this.#cells(key)
    if (this.conservative) {
      let least = Infinity
      for (const cell of cells) least = Math.min(least, this.table[cell])
      const target = least + count
      for (const cell of cells) if (this.table[cell] < target) this.table[cell] = target
    } else {
      for (const cell of cells) this.table[cell] += count
    }
    this.total += count
    return this
  }

  estimate(key) {
    let least = Infinity
    for (const cell of this.#cells(key)) least = Math.min(least, this.table[cell])
    return least
  }

  /** Adds another sketch of the same shape (the sum stays an upper bound). */
  merge(other) {
    if (other.width !== this.width || other.depth !== this.depth) {
      throw new RangeError('Cannot merge Count-Min sketches of different shapes')
    }
    for (let i = 0; i < this.table.length; i++) this.table[i] += other.table[i]
    this.total += other.total
    return this
  }

  toJSON() {
    return { type: 'CountMin', width: this.width, depth: this.depth, conservative: this.conservative, total: this.total, table: this.table }
  }

  static fromJSON(json) {
    if (json?.type !== 'CountMin' || json.table?.length !== json.width * json.depth) {
      throw new TypeError('Cannot read a Count-Min sketch from this value')
    }
    const sketch = new CountMin(json)
    sketch.total = json.total
    sketch.table = json.table.slice()
    return sketch
  }
}

/**
 * HyperLogLog (Flajolet et al. 2007) with the small-range correction by linear counting: distinct
 * count with a relative standard error of about 1.04 / sqrt(2^precision).
 */
export class HyperLogLog {
  constructor({ precision = 12 } = {}) {
    checkInteger('precision', precision, 4, 16)
    this.precision = precision
    this.registers = new Array(1 << precision).fill(0)
  }

  add(value) {
    const h = hash32(String(value), 0x51ed27)
    const index = h >>> (32 - this.precision)
    const rest = (h << this.precision) | (1 << (this.precision - 1))
    const rank = Math.clz32(rest) + 1
    if (rank > this.registers[index]) this.registers[index] = rank
    return this
  }

  count() {
    const m = this.registers.length
    const alpha = m === 16 ? 0.673 : m === 32 ? 0.697 : m === 64 ? 0.709 : 0.7213 / (1 + 1.079 / m)
    let sum = 0
    let zeros = 0
    for (const register of this.registers) {
      sum += 2 ** -register
      if (register === 0) zeros++
    }
    const raw = (alpha * m * m) / sum
    if (raw <= 2.5 * m && zeros > 0) return Math.round(m * Math.log(m / zeros))
    return Math.round(raw)
  }

  merge(other) {
    if (other.precision !== this.precision) throw new RangeError('Cannot merge HyperLogLogs of different precision')
    for (let i = 0; i < this.registers.length; i++) {
      if (other.registers[i] > this.registers[i]) this.registers[i] = other.registers[i]
    }
    return this
  }

  toJSON() {
    return { type: 'HyperLogLog', precision: this.precision, registers: this.registers }
  }

  static fromJSON(json) {
    if (json?.type !== 'HyperLogLog' || json.registers?.length !== 1 << json.precision) {
      throw new TypeError('Cannot read a HyperLogLog from this value')
    }
    const sketch = new HyperLogLog(json)
    sketch.registers = json.registers.slice()
    return sketch
  }
}

/**
 * Bloom filter (Bloom 1970) sized for n items at false-positive rate p: no false negatives, and
 * false positives at about p once n items are in. Double hashing (Kirsch and Mitzenmacher 2006).
 */
export class BloomFilter {
  constructor({ items = 10000, falsePositiveRate = 0.01 } = {}) {
    checkInteger('items', items, 1, 1e8)
    if (!(falsePositiveRate > 0 && falsePositiveRate < 1)) throw new RangeError('falsePositiveRate must be in (0, 1)')
    this.bits = Math.max(8, Math.ceil((-items * Math.log(falsePositiveRate)) / (Math.LN2 * Math.LN2)))
    this.hashes = Math.max(1, Math.round((this.bits / items) * Math.LN2))
    this.words = new Array(Math.ceil(this.bits / 32)).fill(0)
  }

  #positions(value) {
    const text = String(value)
    const a = hash32(text, 0x1b873593)
    const b = hash32(text, 0x5c4bcea9) | 1
    const positions = []
    for (let i = 0; i < this.hashes; i++) positions.push(((a + Math.imul(i, b)) >>> 0) % this.bits)
    return positions
  }

  add(value) {
    for (const bit of this.#positions(value)) this.words[bit >>> 5] |= 1 << (bit & 31)
    return this
  }

  has(value) {
    return this.#positions(value).every((bit) => (this.words[bit >>> 5] & (1 << (bit & 31))) !== 0)
  }

  merge(other) {
    if (other.bits !== this.bits || other.hashes !== this.hashes) throw new RangeError('Cannot merge Bloom filters of different shapes')
    for (let i = 0; i < this.words.length; i++) this.words[i] |= other.words[i]
    return this
  }

  toJSON() {
    return { type: 'BloomFilter', bits: this.bits, hashes: this.hashes, words: this.words }
  }

  static fromJSON(json) {
    if (json?.type !== 'BloomFilter' || json.words?.length !== Math.ceil(json.bits / 32)) {
      throw new TypeError('Cannot read a Bloom filter from this value')
    }
    // Built by the constructor (private methods need it), then given the stored shape and bits.
    const filter = new BloomFilter({ items: 1, falsePositiveRate: 0.5 })
    filter.bits = json.bits
    filter.hashes = json.hashes
    filter.words = json.words.slice()
    return filter
  }
}

/**
 * Reservoir sample (Vitter's algorithm R): a uniform sample of 'size' items from a stream of any
 * length. Its random numbers come from a seeded generator kept in the sketch, so a sample in
 * function state replays the same way.
 */
export class ReservoirSample {
  constructor({ size = 100, seed = 1 } = {}) {
    checkInteger('size', size, 1, 100000)
    this.size = size
    this.seen = 0
    this.state = seed >>> 0 || 1
    this.items = []
  }

  #random() {
    this.state = nextXorshift32(this.state)
    return this.state / 4294967296
  }

  add(item) {
    this.seen++
    if (this.items.length < this.size) this.items.push(item)
    else {
      const slot = Math.floor(this.#random() * this.seen)
      if (slot < this.size) this.items[slot] = item
    }
    return this
  }

  sample() {
    return this.items.slice()
  }

  toJSON() {
    return { type: 'ReservoirSample', size: this.size, seen: this.seen, state: this.state, items: this.items }
  }

  static fromJSON(json) {
    if (json?.type !== 'ReservoirSample' || !Array.isArray(json.items)) throw new TypeError('Cannot read a reservoir sample from this value')
    const sample = new ReservoirSample({ size: json.size, seed: json.state })
    sample.seen = json.seen
    sample.items = json.items.slice()
    return sample
  }
}

/**
 * Exponentially weighted moving average by event time: a sample at time t moves the average by
 * 1 - exp(-(t - last) / tauMs), so irregular sampling is weighted by the time between samples.
 */
export class Ewma {
  constructor({ tauMs = 60000 } = {}) {
    if (!(tauMs > 0)) throw new RangeError('tauMs must be > 0')
    this.tauMs = tauMs
    this.value = null
    this.at = null
  }

  add(value, atMs) {
    if (!Number.isFinite(value) || !Number.isFinite(atMs)) throw new RangeError('value and atMs must be finite numbers')
    if (this.value === null) {
      this.value = value
    } else {
      const alpha = 1 - Math.exp(-Math.max(0, atMs - this.at) / this.tauMs)
      this.value += alpha * (value - this.value)
    }
    this.at = Math.max(atMs, this.at ?? atMs)
    return this
  }

  toJSON() {
    return { type: 'Ewma', tauMs: this.tauMs, value: this.value, at: this.at }
  }

  static fromJSON(json) {
    if (json?.type !== 'Ewma') throw new TypeError('Cannot read an EWMA from this value')
    const ewma = new Ewma({ tauMs: json.tauMs })
    ewma.value = json.value
    ewma.at = json.at
    return ewma
  }
}

// KLL's capacity ratio between a level and the one above it (the paper's c, in (1/2, 1)) and the
// smallest level capacity: the values of Apache DataSketches, so that the error bound it measured
// (Quantiles.rankError) applies here.
const KLL_RATIO = 2 / 3
const KLL_MIN_WIDTH = 8
const ascending = (a, b) => a - b

/**
 * Quantile sketch: KLL (Karnin, Lang and Liberty 2016, "Optimal quantile approximation in
 * streams"). Values are kept in levels; an item at level h stands for 2^h values. When the sketch
 * is full, a level is sorted and every other item (even or odd ones, by a coin flip) moves up,
 * which keeps about 3 k numbers for any stream length. The total weight always equals 'count', so
 * ranks are fractions of the values added. Error bound: for every query at once, |estimated rank -
 * true rank| <= rankError (2.296 / k^0.9723: 1.33% at k = 200) with 99% confidence, the fit
 * DataSketches measured for this same scheme (KllSketch.getNormalizedRankError); over 200 seeded
 * runs of 100,000 values this code's largest error was about 1.1% at k = 200. The coins come from a
 * seeded generator kept in the state, so a sketch restored from JSON replays the same way.
 */
export class Quantiles {
  // Items kept across all levels, and the total capacity that triggers a compaction.
  #retained = 0
  #limit = 0
  // The sorted items with their cumulative weights, for queries; null after any change.
  #view = null

  constructor({ k = 200, seed = 1 } = {}) {
    checkInteger('k', k, KLL_MIN_WIDTH, 65535)
    this.k = k
    this.count = 0
    this.min = null
    this.max = null
    this.state = seed >>> 0 || 1
    this.levels = [[]]
    this.#limit = this.#totalCapacity()
  }

  /** The normalized rank error this sketch stays within with 99% confidence (see the class). */
  get rankError() {
    return 2.296 / this.k ** 0.9723
  }

  // Levels shrink geometrically below the top one: only the top levels hold many items.
  #capacity(level) {
    const depth = this.levels.length - level - 1
    return Math.max(KLL_MIN_WIDTH, Math.ceil(this.k * KLL_RATIO ** depth))
  }

  #totalCapacity() {
    let total = 0
    for (let level = 0; level < this.levels.length; level++) total += this.#capacity(level)
    return total
  }

  add(value) {
    if (!Number.isFinite(value)) throw new RangeError('value must be a finite number, got ' + value)
    this.levels[0].push(value)
    this.count++
    if (this.min === null || value < this.min) this.min = value
    if (this.max === null || value > this.max) this.max = value
    this.#retained++
    this.#view = null
    if (this.#retained >= this.#limit) this.#compress()
    return this
  }

  // Lazy compaction (Ivkin et al. 2019, "Streaming quantiles algorithms with small space and
  // update time"): only when the whole sketch is full, the lowest level at or over its capacity
  // first, until the sketch is under its total capacity again. Some level must be at or over its
  // capacity, since the sizes add up to at least the capacities.
  #compress() {
    while (this.#retained >= this.#limit) {
      let level = 0
      while (this.levels[level].length < this.#capacity(level)) level++
      this.#compact(level)
    }
  }

  #compact(level) {
    if (level + 1 === this.levels.length) {
      this.levels.push([])
      this.#limit = this.#totalCapacity()
    }
    const items = this.levels[level].sort(ascending)
    // With an odd number of items the smallest stays behind, so each pair of weight 2^h becomes
    // one item of weight 2^(h+1) and the total weight stays exactly 'count'.
    const first = items.length % 2
    this.state = nextXorshift32(this.state)
    const coin = this.state >>> 31
    const above = this.levels[level + 1]
    for (let i = first + coin; i < items.length; i += 2) above.push(items[i])
    this.levels[level] = items.slice(0, first)
    this.#retained -= (items.length - first) / 2
  }

  // All retained items sorted, with the weight at or below each one; rebuilt after a change.
  #sorted() {
    if (this.#view === null) {
      const pairs = []
      this.levels.forEach((items, level) => {
        for (const value of items) pairs.push([value, 2 ** level])
      })
      pairs.sort((a, b) => a[0] - b[0])
      const values = []
      const weights = []
      let below = 0
      for (const [value, weight] of pairs) {
        below += weight
        values.push(value)
        weights.push(below)
      }
      this.#view = { values, weights }
    }
    return this.#view
  }

  /**
   * The value at fraction q of the values added (0 is the minimum, 1 the maximum, 0.5 the
   * median): the smallest kept value whose estimated rank reaches q. Null while empty.
   */
  quantile(q) {
    if (!(q >= 0 && q <= 1)) throw new RangeError('q must be a number from 0 to 1, got ' + q)
    if (this.count === 0) return null
    if (q === 0) return this.min
    if (q === 1) return this.max
    const { values, weights } = this.#sorted()
    const target = q * this.count
    let low = 0
    let high = values.length - 1
    while (low < high) {
      const middle = (low + high) >>> 1
      if (weights[middle] >= target) high = middle
      else low = middle + 1
    }
    return values[low]
  }

  /** The estimated fraction of the values added that are <= value (the CDF at value). */
  rank(value) {
    if (typeof value !== 'number' || Number.isNaN(value)) throw new RangeError('value must be a number, got ' + value)
    if (this.count === 0 || value < this.min) return 0
    if (value >= this.max) return 1
    const { values, weights } = this.#sorted()
    // The last kept value <= value carries the weight at or below it.
    let low = -1
    let high = values.length - 1
    while (low < high) {
      const middle = (low + high + 1) >> 1
      if (values[middle] <= value) low = middle
      else high = middle - 1
    }
    return low < 0 ? 0 : weights[low] / this.count
  }

  /**
   * Adds another sketch with the same k: the levels are concatenated (the weights stay those of
   * both streams) and compacted again; KLL sketches are mergeable, so the bound holds for the
   * union.
   */
  merge(other) {
    if (!(other instanceof Quantiles)) throw new TypeError('Cannot merge a quantile sketch with something else')
    if (other.k !== this.k) {
      throw new RangeError('Cannot merge quantile sketches as their k differ: ' + this.k + ' and ' + other.k)
    }
    if (other.count === 0) return this
    // Copies first, as 'other' may be this sketch.
    const incoming = other.levels.map((items) => items.slice())
    while (this.levels.length < incoming.length) this.levels.push([])
    incoming.forEach((items, level) => {
      for (const value of items) this.levels[level].push(value)
    })
    this.count += other.count
    this.min = this.min === null ? other.min : Math.min(this.min, other.min)
    this.max = this.max === null ? other.max : Math.max(this.max, other.max)
    this.#retained = this.levels.reduce((sum, items) => sum + items.length, 0)
    this.#limit = this.#totalCapacity()
    this.#view = null
    this.#compress()
    return this
  }

  toJSON() {
    return { type: 'Quantiles', k: this.k, count: this.count, min: this.min, max: this.max, state: this.state, levels: this.levels }
  }

  static fromJSON(json) {
    const levels = json?.type === 'Quantiles' && Array.isArray(json.levels) ? json.levels : []
    const valid = levels.length > 0 && levels.every((items) => Array.isArray(items) && items.every(Number.isFinite))
    // The weights must add up to the count, or the ranks would be fractions of the wrong total.
    const weight = valid ? levels.reduce((sum, items, level) => sum + items.length * 2 ** level, 0) : NaN
    const ends = json?.count === 0 ? json.min === null && json.max === null : Number.isFinite(json?.min) && json.min <= json.max
    if (!valid || weight !== json.count || !ends) {
      throw new TypeError('Cannot read a quantile sketch from this value')
    }
    const sketch = new Quantiles({ k: json.k, seed: json.state })
    sketch.count = json.count
    sketch.min = json.min
    sketch.max = json.max
    sketch.levels = levels.map((items) => items.slice())
    sketch.#retained = sketch.levels.reduce((sum, items) => sum + items.length, 0)
    sketch.#limit = sketch.#totalCapacity()
    return sketch
  }
}

/**
 * Heavy hitters: Space-Saving (Metwally, Agrawal and El Abbadi 2005) with 'capacity' counters.
 * A key not yet counted takes over the smallest counter, and that counter's old value becomes
 * its 'error'. With N the total added: the true count of a key is in [count - error, count],
 * error <= N / capacity, and every key counted more than N / capacity times is in the table.
 * Tables merge (Agarwal et al. 2012, "Mergeable summaries") and keep all three guarantees for the
 * union. Keys are compared as strings (String(key)), as they must survive JSON.
 */
export class TopK {
  // A min-heap of { key, count, error } ordered by count, then key, so the counter to take over
  // is the same whatever order the heap was built in (a restored copy evicts the same keys).
  #heap = []
  #slots = new Map()

  constructor({ capacity = 1000 } = {}) {
    checkInteger('capacity', capacity, 1, 1000000)
    this.capacity = capacity
    this.total = 0
  }

  /**
   * What a key not in the table may have been counted at most: the smallest counter once the
   * table is full. Before that no key was ever evicted, so a key not in it was never seen.
   */
  #floor() {
    return this.#heap.length < this.capacity ? 0 : this.#heap[0].count
  }

  #before(a, b) {
    return a.count < b.count || (a.count === b.count && a.key < b.key)
  }

  #swap(i, j) {
    const heap = this.#heap
    ;[heap[i], heap[j]] = [heap[j], heap[i]]
    this.#slots.set(heap[i].key, i)
    this.#slots.set(heap[j].key, j)
  }

  #up(i) {
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.#before(this.#heap[i], this.#heap[parent])) return
      this.#swap(i, parent)
      i = parent
    }
  }

  // Counts only grow, so an updated entry only moves down.
  #down(i) {
    const heap = this.#heap
    for (;;) {
      let least = i
      for (const child of [2 * i + 1, 2 * i + 2]) {
        if (child < heap.length && this.#before(heap[child], heap[least])) least = child
      }
      if (least === i) return
      this.#swap(i, least)
      i = least
    }
  }

  #insert(entry) {
    this.#heap.push(entry)
    this.#slots.set(entry.key, this.#heap.length - 1)
    this.#up(this.#heap.length - 1)
  }

  add(key, count = 1) {
    if (!(count >= 0) || !Number.isFinite(count)) throw new RangeError('count must be a finite number >= 0')
    const text = String(key)
    this.total += count
    const slot = this.#slots.get(text)
    if (slot !== undefined) {
      this.#heap[slot].count += count
      this.#down(slot)
    } else if (this.#heap.length < this.capacity) {
      this.#insert({ key: text, count, error: 0 })
    } else {
      const least = this.#heap[0]
      this.#slots.delete(least.key)
      this.#heap[0] = { key: text, count: least.count + count, error: least.count }
      this.#slots.set(text, 0)
      this.#down(0)
    }
    return this
  }

  /** An upper bound of the key's count: its counter, or the most a key not in the table can have. */
  estimate(key) {
    const slot = this.#slots.get(String(key))
    return slot === undefined ? this.#floor() : this.#heap[slot].count
  }

  /**
   * The n largest counters as [{ key, count, error }], largest first (ties by key). The true
   * count of each is in [count - error, count].
   */
  top(n = this.capacity) {
    checkInteger('n', n, 0, Number.MAX_SAFE_INTEGER)
    return this.#heap
      .map(({ key, count, error }) => ({ key, count, error }))
      .sort((a, b) => b.count - a.count || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      .slice(0, n)
  }

  /**
   * Adds another table of the same capacity, as parallel Space-Saving does (Cafaro, Pulimeno and
   * Tempesta 2016): a key missing from one side is given that side's floor as both count and
   * error, so each count stays an upper bound and count - error a lower one; then the 'capacity'
   * largest counters are kept. Those add up to at most N (a side's floor is at most any of its
   * counters), so the smallest, and with it every error and the new floor, is <= N / capacity.
   */
  merge(other) {
    if (!(other instanceof TopK)) throw new TypeError('Cannot merge a top-k table with something else')
    if (other.capacity !== this.capacity) {
      throw new RangeError('Cannot merge top-k tables as their capacities differ: ' + this.capacity + ' and ' + other.capacity)
    }
    const floor = this.#floor()
    const otherFloor = other.#floor()
    const merged = new Map()
    for (const { key, count, error } of this.#heap) merged.set(key, { key, count: count + otherFloor, error: error + otherFloor })
    for (const { key, count, error } of other.#heap) {
      const entry = merged.get(key)
      if (entry === undefined) merged.set(key, { key, count: count + floor, error: error + floor })
      else {
        entry.count += count - otherFloor
        entry.error += error - otherFloor
      }
    }
    this.total += other.total
    this.#rebuild([...merged.values()])
    return this
  }

  // Keeps the 'capacity' largest entries, dropping at the cut the ones eviction would take first.
  #rebuild(entries) {
    entries.sort((a, b) => (this.#before(a, b) ? 1 : this.#before(b, a) ? -1 : 0))
    this.#heap = []
    this.#slots = new Map()
    for (const entry of entries.slice(0, this.capacity)) this.#insert(entry)
  }

  toJSON() {
    return { type: 'TopK', capacity: this.capacity, total: this.total, entries: this.top().map(({ key, count, error }) => [key, count, error]) }
  }

  static fromJSON(json) {
    const entries = json?.type === 'TopK' && Array.isArray(json.entries) ? json.entries : null
    // Each entry is [key, count, error] with 0 <= error <= count, and no key twice.
    const valid =
      entries !== null &&
      entries.every((entry) => Array.isArray(entry) && typeof entry[0] === 'string' && Number.isFinite(entry[1]) && entry[2] >= 0 && entry[2] <= entry[1]) &&
      new Set(entries.map((entry) => entry[0])).size === entries.length
    if (!valid || entries.length > json.capacity || !(json.total >= 0)) {
      throw new TypeError('Cannot read a top-k table from this value')
    }
    const table = new TopK({ capacity: json.capacity })
    table.total = json.total
    table.#rebuild(entries.map(([key, count, error]) => ({ key, count, error })))
    return table
  }
}
`
