/**
 * Source of the guest module `taureau:sketch`: streaming sketches a function can keep in its
 * state. Each is serializable (`toJSON()` / `fromJSON()`) and mergeable. Written as plain
 * JavaScript because it runs inside QuickJS. Quantiles and top-k come with the rest of the
 * functions issue.
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
    // xorshift32
    let x = this.state
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    this.state = x >>> 0
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
`
