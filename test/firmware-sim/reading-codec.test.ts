import { describe, expect, test } from 'vitest'
import { SimError } from '../../firmware-sim/errors.ts'
import {
  decodeReading,
  encodeReading,
  encodeReadingJson,
  type Reading,
} from '../../firmware-sim/reading-codec.ts'

const TS = Date.UTC(2024, 5, 1, 12, 0, 0, 123)
const READINGS: Array<[Reading, number]> = [
  [{ kind: 'temperature', seq: 1, ts: TS, c: 21.37 }, 18],
  [{ kind: 'humidity', seq: 2, ts: TS, rh: 64.2 }, 18],
  [{ kind: 'vibration', seq: 3, ts: TS, rms: 1.23, peak: 2.61 }, 22],
  [{ kind: 'power', seq: 0xffff_ffff, ts: TS, w: 1834.5, wh: 48_211.417 }, 26],
  [{ kind: 'gps', seq: 5, ts: TS, lat: 45.764123, lon: -4.835701, speed: 12.3, heading: 359.9 }, 38],
]
const F32_FIELDS = new Set(['c', 'rh', 'rms', 'peak', 'w', 'speed', 'heading'])

describe('binary readings', () => {
  test('every kind round-trips: f64 fields exactly, f32 fields as the nearest float32', () => {
    for (const [reading, bytes] of READINGS) {
      const encoded = encodeReading(reading)
      expect(encoded.length, reading.kind).toBe(bytes)
      const expected = Object.fromEntries(
        Object.entries(reading).map(([name, value]) => [
          name,
          F32_FIELDS.has(name) ? Math.fround(value as number) : value,
        ]),
      )
      expect(decodeReading(encoded)).toEqual(expected)
      // A float32 keeps these readings to their printed precision.
      for (const name of F32_FIELDS) {
        const value = (reading as Record<string, unknown>)[name]
        if (typeof value === 'number') expect((decodeReading(encoded) as any)[name]).toBeCloseTo(value, 2)
      }
    }
  })

  test('the header is u8 0xF7 + version, u8 kind, u32 seq, f64 ts, big-endian', () => {
    const encoded = encodeReading({ kind: 'vibration', seq: 0x01020304, ts: TS, rms: 1, peak: 2 })
    expect([...encoded.subarray(0, 6)]).toEqual([0xf8, 3, 1, 2, 3, 4])
    expect(encoded.readDoubleBE(6)).toBe(TS)
    expect(encoded.readFloatBE(14)).toBe(1)
    expect(encoded.readFloatBE(18)).toBe(2)
    // Decoding works on a view into a larger buffer too (as a Buffer from a socket often is).
    const padded = Buffer.concat([Buffer.from([9, 9, 9]), encoded])
    expect(decodeReading(padded.subarray(3))).toMatchObject({ kind: 'vibration', seq: 0x01020304, ts: TS })
  })

  test('bytes that are not one reading are refused with an invalid_reading error saying why', () => {
    const good = encodeReading({ kind: 'temperature', seq: 1, ts: TS, c: 20 })
    const cases: Array<[Uint8Array, RegExp]> = [
      [good.subarray(0, 10), /has 10 bytes, fewer than the 14-byte header/],
      [Buffer.concat([Buffer.from([1]), good.subarray(1)]), /its first byte 0x01 is not 0xF8 \(version 1\)/],
      [Buffer.concat([Buffer.from([0xf8, 9]), good.subarray(2)]), /its kind code 9 is not one of 1-5/],
      [Buffer.concat([good, Buffer.from([0])]), /a temperature reading has 18 bytes, not 19/],
    ]
    for (const [bytes, message] of cases) {
      let error: unknown
      try {
        decodeReading(bytes)
      } catch (thrown) {
        error = thrown
      }
      expect(error).toBeInstanceOf(SimError)
      expect(error).toMatchObject({ code: 'invalid_reading', message: expect.stringMatching(message) })
      expect((error as Error).message).toMatch(/^Cannot decode a binary reading as /)
    }
  })

  test('a binary reading is never valid UTF-8, so the gateway hands it to functions as bytes', () => {
    const utf8 = new TextDecoder('utf-8', { fatal: true })
    let text = 0
    for (let seq = 1; seq <= 20_000; seq++) {
      const encoded = encodeReading({
        kind: 'temperature',
        seq,
        ts: TS + seq * 997,
        c: 15 + (seq % 1000) / 100,
      })
      try {
        utf8.decode(encoded)
        text++
      } catch {}
    }
    expect(text).toBe(0)
  })

  test('a seq that is not a u32 is misuse', () => {
    expect(() => encodeReading({ kind: 'temperature', seq: -1, ts: TS, c: 20 })).toThrow(RangeError)
    expect(() => encodeReading({ kind: 'temperature', seq: 2 ** 32, ts: TS, c: 20 })).toThrow(RangeError)
  })
})

describe('JSON readings', () => {
  test('the payload is seq, ts and the short field names, without the kind', () => {
    expect(encodeReadingJson({ kind: 'temperature', seq: 7, ts: TS, c: 21.5 })).toBe(
      `{"seq":7,"ts":${TS},"c":21.5}`,
    )
    expect(JSON.parse(encodeReadingJson(READINGS[4]![0]))).toEqual({
      seq: 5,
      ts: TS,
      lat: 45.764123,
      lon: -4.835701,
      speed: 12.3,
      heading: 359.9,
    })
  })
})
