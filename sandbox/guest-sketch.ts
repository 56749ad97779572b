/**
 * Source of the guest module `taureau:sketch`: streaming sketches a function can keep in its
 * state. Each is serializable (`toJSON()` / `fromJSON()`) and mergeable. Written as plain
 * JavaScript because it runs inside QuickJS. More sketches (quantiles, top-k, Bloom, reservoir,
 * EWMA) come with the rest of the functions issue.
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
`
