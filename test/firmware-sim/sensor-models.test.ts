import { describe, expect, test } from 'vitest'
import {
  createSensorModel,
  type SensorKind,
  type SensorModel,
  type SensorSample,
} from '../../firmware-sim/sensor-models.ts'

const START_MS = Date.UTC(2024, 0, 1)
const MINUTE_MS = 60_000

/** Reads a model every `stepMs` for `count` readings from START_MS. */
function series<K extends SensorKind>(model: SensorModel<K>, stepMs: number, count: number) {
  const readings: Array<SensorSample<K> & { atMs: number }> = []
  for (let i = 0; i < count; i++) {
    const atMs = START_MS + i * stepMs
    readings.push({ ...model.read(atMs), atMs })
  }
  return readings
}

/** Mean of `value` by UTC hour of day over several seeds, every 10 min for 4 days. */
function hourlyMeans(kind: 'temperature' | 'humidity', value: (fields: any) => number, utcOffsetMinutes = 0) {
  const sums = new Array<number>(24).fill(0)
  const counts = new Array<number>(24).fill(0)
  for (let seed = 1; seed <= 6; seed++) {
    const model = createSensorModel(kind, { seed, utcOffsetMinutes })
    for (const reading of series(model, 10 * MINUTE_MS, 4 * 144)) {
      const hour = new Date(reading.atMs).getUTCHours()
      sums[hour] = (sums[hour] as number) + value(reading.fields)
      counts[hour] = (counts[hour] as number) + 1
    }
  }
  return sums.map((sum, hour) => sum / (counts[hour] as number))
}

const argMin = (values: number[]) => values.indexOf(Math.min(...values))
const argMax = (values: number[]) => values.indexOf(Math.max(...values))

describe('sensor models', () => {
  test('the same seed and read times give the same readings, another seed others', () => {
    for (const kind of ['temperature', 'humidity', 'vibration', 'power', 'gps'] as const) {
      const first = series(createSensorModel(kind, { seed: 7, utcOffsetMinutes: 0 }), 1000, 50)
      const again = series(createSensorModel(kind, { seed: 7, utcOffsetMinutes: 0 }), 1000, 50)
      const other = series(createSensorModel(kind, { seed: 8, utcOffsetMinutes: 0 }), 1000, 50)
      expect(again, kind).toEqual(first)
      expect(other, kind).not.toEqual(first)
    }
  })

  test('temperature follows a daily cycle, coolest around 05:00 and warmest around 17:00 local time', () => {
    const utc = hourlyMeans('temperature', (fields) => fields.c)
    expect(argMin(utc)).toBeGreaterThanOrEqual(4)
    expect(argMin(utc)).toBeLessThanOrEqual(6)
    expect(argMax(utc)).toBeGreaterThanOrEqual(16)
    expect(argMax(utc)).toBeLessThanOrEqual(18)
    // Amplitude: the mean day swings several degrees, within what air does.
    expect(Math.max(...utc) - Math.min(...utc)).toBeGreaterThan(4)
    expect(Math.max(...utc) - Math.min(...utc)).toBeLessThan(20)
    // A device two hours east of UTC is coolest at 05:00 its time, 03:00 UTC.
    const east = hourlyMeans('temperature', (fields) => fields.c, 120)
    expect(argMin(east)).toBeGreaterThanOrEqual(2)
    expect(argMin(east)).toBeLessThanOrEqual(4)
  })

  test('temperature readings stay within what outdoor air does and have two decimals', () => {
    const values: number[] = []
    for (let seed = 1; seed <= 20; seed++) {
      for (const { fields } of series(createSensorModel('temperature', { seed }), 5 * MINUTE_MS, 2000)) {
        values.push(fields.c)
      }
    }
    expect(Math.min(...values)).toBeGreaterThan(-10)
    expect(Math.max(...values)).toBeLessThan(40)
    expect(values.filter((c) => Math.round(c * 100) / 100 !== c)).toEqual([])
  })

  test('humidity falls as the air warms (highest at dawn) and is clamped to 0-100 %RH', () => {
    const utc = hourlyMeans('humidity', (fields) => fields.rh)
    expect(argMax(utc)).toBeGreaterThanOrEqual(3)
    expect(argMax(utc)).toBeLessThanOrEqual(7)
    expect(argMin(utc)).toBeGreaterThanOrEqual(15)
    expect(argMin(utc)).toBeLessThanOrEqual(19)
    const values: number[] = []
    for (let seed = 1; seed <= 40; seed++) {
      for (const { fields } of series(createSensorModel('humidity', { seed }), 10 * MINUTE_MS, 1000)) {
        values.push(fields.rh)
      }
    }
    expect(Math.min(...values)).toBeGreaterThanOrEqual(0)
    expect(Math.max(...values)).toBe(100)
    // Damp dawns of some devices reach the bound: the clamp is exercised, not just never needed.
    expect(values.filter((rh) => rh === 100).length).toBeGreaterThan(0)
  })

  test('vibration injects anomalies at the configured rate, several times the normal level', () => {
    const readings = series(createSensorModel('vibration', { seed: 3, anomalyRate: 0.05 }), 1000, 20_000)
    const anomalies = readings.filter((reading) => reading.anomaly)
    expect(anomalies.length).toBeGreaterThan(800)
    expect(anomalies.length).toBeLessThan(1200)
    const normal = readings.filter((reading) => !reading.anomaly).map((reading) => reading.fields.rms)
    normal.sort((a, b) => a - b)
    const median = normal[normal.length >> 1] as number
    for (const { fields } of anomalies) expect(fields.rms).toBeGreaterThan(3 * median)
    expect(readings.filter(({ fields }) => !(fields.rms > 0 && fields.peak >= fields.rms))).toEqual([])
    expect(normal.every((rms) => rms < 3 * median)).toBe(true)
    const none = series(createSensorModel('vibration', { seed: 3, anomalyRate: 0 }), 1000, 5000)
    expect(none.some((reading) => reading.anomaly)).toBe(false)
    expect(() => createSensorModel('vibration', { seed: 3, anomalyRate: 2 })).toThrow(RangeError)
  })

  test('the power meter energy counter never decreases, even when the clock goes back, and integrates power', () => {
    const model = createSensorModel('power', { seed: 5 })
    const first = model.read(START_MS)
    let previous = first
    let expectedWh = first.fields.wh
    const decreases: number[] = []
    const negative: number[] = []
    for (let i = 1; i <= 86_400; i++) {
      // One reading per second for a day, and now and then a clock set back by a minute.
      const setBack = i % 5000 === 0
      const reading = model.read(START_MS + i * 1000 - (setBack ? 60_000 : 0))
      if (reading.fields.wh < previous.fields.wh) decreases.push(i)
      if (reading.fields.w < 0) negative.push(i)
      // A reading at an earlier time counts as no time passed: no energy for it.
      if (!setBack) expectedWh += (previous.fields.w + reading.fields.w) / 2 / 3600
      previous = reading
    }
    expect(decreases).toEqual([])
    expect(negative).toEqual([])
    // The counter is the integral of the power readings (to their rounding): a day of 80 W or more.
    expect(Math.abs(previous.fields.wh - expectedWh)).toBeLessThan(0.01 * (expectedWh - first.fields.wh))
    expect(previous.fields.wh - first.fields.wh).toBeGreaterThan(80 * 24)
  })

  test('a GPS tracker walks from its own start point at plausible speeds', () => {
    const starts = new Set<string>()
    for (let seed = 1; seed <= 10; seed++) {
      const readings = series(createSensorModel('gps', { seed }), 1000, 3600)
      const first = readings[0]!.fields
      starts.add(`${first.lat},${first.lon}`)
      expect(Math.abs(first.lat - 45.764)).toBeLessThan(0.1)
      expect(Math.abs(first.lon - 4.8357)).toBeLessThan(0.1)
      const implausible = readings.slice(1).filter((reading, i) => {
        const { lat, lon, speed, heading } = reading.fields
        const before = readings[i]!.fields
        // One second at 40 m/s at most: 40 m is about 0.00036° of latitude, 0.00052° of longitude here.
        return !(
          heading >= 0 &&
          heading < 360 &&
          speed >= 0 &&
          speed <= 40 &&
          Math.abs(lat - before.lat) < 0.0004 &&
          Math.abs(lon - before.lon) < 0.0006
        )
      })
      expect(implausible).toEqual([])
      const last = readings.at(-1)!.fields
      expect(last.lat !== first.lat || last.lon !== first.lon).toBe(true)
    }
    expect(starts.size).toBe(10)
  })

  test('an unknown kind is refused', () => {
    expect(() => createSensorModel('pressure' as SensorKind, { seed: 1 })).toThrow(
      "Cannot create a sensor model as its kind 'pressure' is not one of temperature, humidity, vibration, power, gps",
    )
  })
})
