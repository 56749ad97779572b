// Seeded randomness for the simulator: every draw of a fleet comes from here, so a seed replays
// the same devices, readings and timings.

/** A seeded pseudo-random source. */
export interface Random {
  /** Uniform in [0, 1). */
  next(): number
  /** Uniform in [min, max). */
  uniform(min: number, max: number): number
  /** Standard normal (mean 0, standard deviation 1). */
  normal(): number
  /** Exponential with this mean (the gaps of a Poisson process). */
  exponential(mean: number): number
}

const TWO_POW_32 = 4_294_967_296

/** splitmix32: spreads a 32-bit seed over the generator's state, so nearby seeds do not correlate. */
function splitmix32(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x9e3779b9) >>> 0
    let z = state
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad)
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97)
    return (z ^ (z >>> 15)) >>> 0
  }
}

/**
 * Creates a {@link Random} from a seed and a stream number: sfc32 (Doty-Humphrey's small fast
 * counting generator, which passes PractRand), its state filled by splitmix32. Different streams of
 * one seed are independent, so a device's readings do not shift when its timing draws change.
 */
export function createRandom(seed: number, stream = 0): Random {
  const fill = splitmix32(hashInts(seed, stream))
  let a = fill()
  let b = fill()
  let c = fill()
  let counter = 1
  const nextUint32 = (): number => {
    const t = (((a + b) | 0) + counter) | 0
    counter = (counter + 1) | 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) | 0
    c = (c << 21) | (c >>> 11)
    c = (c + t) | 0
    return t >>> 0
  }
  // The first outputs of a fresh state are discarded, as the generator's author advises.
  for (let i = 0; i < 12; i++) nextUint32()
  const next = (): number => nextUint32() / TWO_POW_32
  let spareNormal: number | undefined
  return {
    next,
    uniform: (min, max) => min + (max - min) * next(),
    normal() {
      if (spareNormal !== undefined) {
        const value = spareNormal
        spareNormal = undefined
        return value
      }
      // Box-Muller; 1 - next() is in (0, 1], so the logarithm is finite.
      const radius = Math.sqrt(-2 * Math.log(1 - next()))
      const angle = 2 * Math.PI * next()
      spareNormal = radius * Math.sin(angle)
      return radius * Math.cos(angle)
    },
    exponential: (mean) => -mean * Math.log(1 - next()),
  }
}

/** A 32-bit hash of a string (FNV-1a), to derive a device's seed from its id. */
export function hashString(text: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash >>> 0
}

/** Combines integers into one 32-bit seed (boost's hash_combine with the golden ratio). */
export function hashInts(...values: number[]): number {
  let hash = 0
  for (const value of values) {
    const low = value >>> 0
    const high = Math.floor(value / TWO_POW_32) >>> 0
    for (const part of [low, high]) hash = (hash ^ (part + 0x9e3779b9 + (hash << 6) + (hash >>> 2))) >>> 0
  }
  return hash
}
