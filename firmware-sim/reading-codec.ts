// The payloads simulated devices publish: JSON, or a compact fixed binary layout per kind.
import { SIM_ERROR_CODES, SimError } from './errors.ts'
import { type ReadingFieldsByKind, SENSOR_KINDS, type SensorKind } from './sensor-models.ts'

/** One reading as a device sends it: its kind, sequence number, device-clock time and fields. */
export type Reading = {
  [K in SensorKind]: { kind: K; seq: number; ts: number } & ReadingFieldsByKind[K]
}[SensorKind]

/** Version of the binary layout {@link encodeReading} writes. */
export const BINARY_READING_VERSION = 1
/**
 * The first byte is `0xF7 + version` (0xF8 for version 1). Bytes 0xF5-0xFF never occur in UTF-8
 * (RFC 3629 §1), so a binary reading is never mistaken for text by a consumer that tries UTF-8
 * first, as the gateway does for functions; with a small first byte, about 0.2 % of readings
 * would happen to be valid UTF-8 and reach a function as a string.
 */
const VERSION_BASE = 0xf7

type FieldType = 'f32' | 'f64'

/**
 * The binary layout: a 14-byte header (u8 0xF7 + version, u8 kind code, u32 seq, f64 ts), then the
 * kind's fields in this order, all big-endian.
 */
const LAYOUTS: {
  [K in SensorKind]: { code: number; fields: Array<[keyof ReadingFieldsByKind[K], FieldType]> }
} = {
  temperature: { code: 1, fields: [['c', 'f32']] },
  humidity: { code: 2, fields: [['rh', 'f32']] },
  vibration: {
    code: 3,
    fields: [
      ['rms', 'f32'],
      ['peak', 'f32'],
    ],
  },
  // The energy counter is f64: at tens of thousands of Wh a float32 would lose each second's increment.
  power: {
    code: 4,
    fields: [
      ['w', 'f32'],
      ['wh', 'f64'],
    ],
  },
  gps: {
    code: 5,
    fields: [
      ['lat', 'f64'],
      ['lon', 'f64'],
      ['speed', 'f32'],
      ['heading', 'f32'],
    ],
  },
}

const HEADER_BYTES = 14
const FIELD_BYTES: Record<FieldType, number> = { f32: 4, f64: 8 }
const KIND_BY_CODE = new Map(SENSOR_KINDS.map((kind) => [LAYOUTS[kind].code, kind]))
const fieldsOf = (kind: SensorKind): Array<[string, FieldType]> =>
  LAYOUTS[kind].fields as Array<[string, FieldType]>
const bytesOf = (kind: SensorKind): number =>
  fieldsOf(kind).reduce((total, [, type]) => total + FIELD_BYTES[type], HEADER_BYTES)

/**
 * Encodes a reading in the binary layout (big-endian): u8 0xF7 + version (0xF8), u8 kind (1 temperature,
 * 2 humidity, 3 vibration, 4 power, 5 gps), u32 seq, f64 ts, then the fields: temperature f32 c;
 * humidity f32 rh; vibration f32 rms, f32 peak; power f32 w, f64 wh; gps f64 lat, f64 lon,
 * f32 speed, f32 heading. 18 to 38 bytes.
 */
export function encodeReading(reading: Reading): Buffer {
  const layout = LAYOUTS[reading.kind]
  if (layout === undefined)
    throw new RangeError(`Cannot encode a reading of unknown kind '${String(reading.kind)}'`)
  if (!Number.isInteger(reading.seq) || reading.seq < 0 || reading.seq > 0xffff_ffff) {
    throw new RangeError(`Cannot encode a reading as its seq ${reading.seq} is not a u32`)
  }
  const bytes = Buffer.alloc(bytesOf(reading.kind))
  bytes.writeUInt8(VERSION_BASE + BINARY_READING_VERSION, 0)
  bytes.writeUInt8(layout.code, 1)
  bytes.writeUInt32BE(reading.seq, 2)
  bytes.writeDoubleBE(reading.ts, 6)
  let offset = HEADER_BYTES
  const values = reading as unknown as Record<string, number>
  for (const [name, type] of fieldsOf(reading.kind)) {
    const value = values[name] as number
    if (type === 'f32') bytes.writeFloatBE(value, offset)
    else bytes.writeDoubleBE(value, offset)
    offset += FIELD_BYTES[type]
  }
  return bytes
}

/**
 * Decodes a binary reading (see {@link encodeReading}); f32 fields come back as the nearest
 * float32. Throws a {@link SimError} `invalid_reading` when the bytes are not one reading.
 */
export function decodeReading(bytes: Uint8Array): Reading {
  const fail = (why: string): never => {
    throw new SimError(SIM_ERROR_CODES.invalidReading, `Cannot decode a binary reading as ${why}`)
  }
  if (bytes.length < HEADER_BYTES)
    fail(`it has ${bytes.length} bytes, fewer than the ${HEADER_BYTES}-byte header`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const first = view.getUint8(0)
  if (first !== VERSION_BASE + BINARY_READING_VERSION) {
    const hex = (byte: number): string => `0x${byte.toString(16).toUpperCase().padStart(2, '0')}`
    fail(
      `its first byte ${hex(first)} is not ${hex(VERSION_BASE + BINARY_READING_VERSION)} (version ${BINARY_READING_VERSION})`,
    )
  }
  const code = view.getUint8(1)
  const kind = KIND_BY_CODE.get(code) ?? fail(`its kind code ${code} is not one of 1-${SENSOR_KINDS.length}`)
  const expected = bytesOf(kind)
  if (bytes.length !== expected) fail(`a ${kind} reading has ${expected} bytes, not ${bytes.length}`)
  const reading: Record<string, unknown> = { kind, seq: view.getUint32(2), ts: view.getFloat64(6) }
  let offset = HEADER_BYTES
  for (const [name, type] of fieldsOf(kind)) {
    reading[name] = type === 'f32' ? view.getFloat32(offset) : view.getFloat64(offset)
    offset += FIELD_BYTES[type]
  }
  return reading as Reading
}

/** The JSON payload of a reading: `{"seq":N,"ts":MS,...fields}` (the kind is in the topic). */
export function encodeReadingJson(reading: Reading): string {
  const { kind: _kind, ...payload } = reading
  return JSON.stringify(payload)
}
