// The physics of the simulated sensors: what each kind of device measures over time. Every model
// is a deterministic function of its seed and the times it is read at.
import { createRandom, type Random } from './_random.ts'

/** The kinds of simulated sensor; each device has one. */
export type SensorKind = 'temperature' | 'humidity' | 'vibration' | 'power' | 'gps'

/** Every {@link SensorKind}, in the order fleets assign them to devices. */
export const SENSOR_KINDS: readonly SensorKind[] = Object.freeze([
  'temperature',
  'humidity',
  'vibration',
  'power',
  'gps',
])

/**
 * What one reading of each kind holds; the short names are those of the JSON payload:
 * `c` in °C; `rh` in %RH (0-100); `rms` and `peak` vibration velocity in mm/s; `w` instant power in
 * W and `wh` the meter's energy counter in Wh (never decreases); `lat` and `lon` in degrees (WGS 84),
 * `speed` in m/s and `heading` in degrees clockwise from north, in [0, 360).
 */
export interface ReadingFieldsByKind {
  temperature: { c: number }
  humidity: { rh: number }
  vibration: { rms: number; peak: number }
  power: { w: number; wh: number }
  gps: { lat: number; lon: number; speed: number; heading: number }
}

/** What a model measures at one instant, and whether it was an injected anomaly. */
export interface SensorSample<K extends SensorKind = SensorKind> {
  fields: ReadingFieldsByKind[K]
  /** True for a vibration reading made an anomaly on purpose (see `anomalyRate`). */
  anomaly: boolean
}

/** A simulated sensor: read it at non-decreasing device times. */
export interface SensorModel<K extends SensorKind = SensorKind> {
  readonly kind: K
  /**
   * Measures at `deviceTimeMs` (ms since 1970 on the device's clock). A time before the last read
   * counts as no time passed, so counters never run backwards when a clock is set back.
   */
  read(deviceTimeMs: number): SensorSample<K>
}

/** Options of {@link createSensorModel}. */
export interface SensorModelOptions {
  /** Seed of this one sensor; the same seed and read times give the same readings. */
  seed: number
  /**
   * Offset of the device's local time from UTC, in minutes, for the daily cycle (temperature is
   * lowest around 05:00 local time). Default: the host's time zone at each reading.
   */
  utcOffsetMinutes?: number
  /** Probability that a vibration reading is an injected anomaly; default 0.01. */
  anomalyRate?: number
}

const MS_PER_HOUR = 3_600_000
const MS_PER_DAY = 24 * MS_PER_HOUR
/** Where GPS trackers start: within a few km of this point (Lyon, France). */
const GPS_ORIGIN = { lat: 45.764, lon: 4.8357 }
const METRES_PER_DEGREE_LAT = 111_320

const round = (value: number, decimals: number): number => {
  const scale = 10 ** decimals
  return Math.round(value * scale) / scale
}

/**
 * An Ornstein-Uhlenbeck process: noise that wanders around 0 with standard deviation `sigma` and
 * forgets its past over `tauMs`. Updated with the exact discretisation, so the result does not
 * depend on how often it is sampled.
 */
function createWander(random: Random, sigma: number, tauMs: number): (dtMs: number) => number {
  let value = sigma * random.normal()
  return (dtMs) => {
    const decay = Math.exp(-dtMs / tauMs)
    value = value * decay + sigma * Math.sqrt(1 - decay * decay) * random.normal()
    return value
  }
}

/** Hours since local midnight, in [0, 24). */
function localHour(deviceTimeMs: number, utcOffsetMinutes: number | undefined): number {
  const offsetMinutes = utcOffsetMinutes ?? -new Date(deviceTimeMs).getTimezoneOffset()
  const localMs = deviceTimeMs + offsetMinutes * 60_000
  return (((localMs % MS_PER_DAY) + MS_PER_DAY) % MS_PER_DAY) / MS_PER_HOUR
}

/** Air temperature in °C: a daily cycle (coolest at 05:00, warmest at 17:00) plus weather. */
function createAirTemperature(random: Random, utcOffsetMinutes: number | undefined) {
  const meanC = random.uniform(10, 22)
  const amplitudeC = random.uniform(3, 7)
  const weather = createWander(random, 0.8, 2 * MS_PER_HOUR)
  return {
    meanC,
    at(deviceTimeMs: number, dtMs: number): number {
      const hour = localHour(deviceTimeMs, utcOffsetMinutes)
      return meanC - amplitudeC * Math.cos((2 * Math.PI * (hour - 5)) / 24) + weather(dtMs)
    },
  }
}

type ModelStep<K extends SensorKind> = (deviceTimeMs: number, dtMs: number) => SensorSample<K>

function temperatureModel(random: Random, options: SensorModelOptions): ModelStep<'temperature'> {
  const air = createAirTemperature(random, options.utcOffsetMinutes)
  return (deviceTimeMs, dtMs) => ({
    // Sensor noise of a typical digital thermometer (SHT3x-class: ±0.1 °C).
    fields: { c: round(air.at(deviceTimeMs, dtMs) + 0.05 * random.normal(), 2) },
    anomaly: false,
  })
}

function humidityModel(random: Random, options: SensorModelOptions): ModelStep<'humidity'> {
  const air = createAirTemperature(random, options.utcOffsetMinutes)
  const baseRh = random.uniform(50, 75)
  const rhPerC = random.uniform(2.5, 4.5)
  const moisture = createWander(random, 3, MS_PER_HOUR)
  return (deviceTimeMs, dtMs) => {
    // Warmer air holds more water, so relative humidity falls as the same air warms up.
    const rh = baseRh - rhPerC * (air.at(deviceTimeMs, dtMs) - air.meanC) + moisture(dtMs)
    // A real sensor saturates at 0 and 100 %RH (dew at dawn reads 100).
    return { fields: { rh: round(Math.min(100, Math.max(0, rh)), 1) }, anomaly: false }
  }
}

function vibrationModel(random: Random, anomalyRate: number): ModelStep<'vibration'> {
  // Velocity RMS of a healthy machine, ISO 10816 zones A/B for small machines.
  const baselineRms = random.uniform(0.5, 2.5)
  return () => {
    const anomaly = random.next() < anomalyRate
    // A fault (imbalance, a loose mount, a failing bearing) several times the normal level.
    const factor = anomaly ? random.uniform(4, 8) : Math.exp(0.15 * random.normal())
    const crest = anomaly ? random.uniform(2.5, 4) : random.uniform(1.4, 2.2)
    const rms = round(baselineRms * factor, 2)
    return { fields: { rms, peak: round(rms * crest, 2) }, anomaly }
  }
}

function powerModel(random: Random): ModelStep<'power'> {
  const standbyW = random.uniform(80, 400)
  const applianceW = random.uniform(500, 2500)
  const meanOnMs = 20 * 60_000
  const meanOffMs = 40 * 60_000
  let applianceOn = random.next() < meanOnMs / (meanOnMs + meanOffMs)
  // The meter has been running for a while before the simulation starts.
  let energyWh = random.uniform(0, 50_000)
  let lastW: number | undefined
  return (_deviceTimeMs, dtMs) => {
    // A two-state Markov process: the appliance switches with probability 1 - e^(-dt / mean time).
    if (random.next() < 1 - Math.exp(-dtMs / (applianceOn ? meanOnMs : meanOffMs))) applianceOn = !applianceOn
    const w = Math.max(0, (standbyW + (applianceOn ? applianceW : 0)) * (1 + 0.02 * random.normal()))
    // Trapezoidal integration of power over the time since the last reading.
    energyWh += ((((lastW ?? w) + w) / 2) * dtMs) / MS_PER_HOUR
    lastW = w
    return { fields: { w: round(w, 1), wh: round(energyWh, 3) }, anomaly: false }
  }
}

function gpsModel(random: Random): ModelStep<'gps'> {
  let lat = GPS_ORIGIN.lat + random.uniform(-0.05, 0.05)
  let lon = GPS_ORIGIN.lon + random.uniform(-0.07, 0.07)
  let heading = random.uniform(0, 360)
  const meanSpeed = random.uniform(3, 15)
  const speedWander = createWander(random, 4, 2 * 60_000)
  return (_deviceTimeMs, dtMs) => {
    const speed = Math.min(40, Math.max(0, meanSpeed + speedWander(dtMs)))
    // The heading turns by a random walk of 3° per square root of a second.
    heading = (((heading + 3 * Math.sqrt(dtMs / 1000) * random.normal()) % 360) + 360) % 360
    const metres = (speed * dtMs) / 1000
    const radians = (heading * Math.PI) / 180
    lat = Math.min(85, Math.max(-85, lat + (metres * Math.cos(radians)) / METRES_PER_DEGREE_LAT))
    const metresPerDegreeLon = METRES_PER_DEGREE_LAT * Math.cos((lat * Math.PI) / 180)
    lon = ((((lon + (metres * Math.sin(radians)) / metresPerDegreeLon + 180) % 360) + 360) % 360) - 180
    return {
      fields: {
        lat: round(lat, 6),
        lon: round(lon, 6),
        speed: round(speed, 1),
        heading: round(heading, 1) % 360,
      },
      anomaly: false,
    }
  }
}

/**
 * Creates the model of one sensor of `kind`: temperature with a daily cycle and weather;
 * relative humidity that falls as the same air warms, clamped to 0-100; machine vibration with
 * injected anomalies; a power meter whose energy counter never decreases; a GPS tracker on a
 * random walk from its own start point.
 */
export function createSensorModel<K extends SensorKind>(
  kind: K,
  options: SensorModelOptions,
): SensorModel<K> {
  if (!SENSOR_KINDS.includes(kind)) {
    throw new RangeError(
      `Cannot create a sensor model as its kind '${String(kind)}' is not one of ${SENSOR_KINDS.join(', ')}`,
    )
  }
  const anomalyRate = options.anomalyRate ?? 0.01
  if (!(anomalyRate >= 0 && anomalyRate <= 1)) {
    throw new RangeError(`Cannot create a sensor model as its anomalyRate ${anomalyRate} is not in [0, 1]`)
  }
  const random = createRandom(options.seed, 1)
  const steps: { [Kind in SensorKind]: () => ModelStep<Kind> } = {
    temperature: () => temperatureModel(random, options),
    humidity: () => humidityModel(random, options),
    vibration: () => vibrationModel(random, anomalyRate),
    power: () => powerModel(random),
    gps: () => gpsModel(random),
  }
  const step = steps[kind]() as ModelStep<K>
  let lastTimeMs: number | undefined
  return {
    kind,
    read(deviceTimeMs) {
      const dtMs = lastTimeMs === undefined ? 0 : Math.max(0, deviceTimeMs - lastTimeMs)
      lastTimeMs = Math.max(lastTimeMs ?? deviceTimeMs, deviceTimeMs)
      return step(lastTimeMs, dtMs)
    },
  }
}
