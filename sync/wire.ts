import { getRandomValues, randomFillSync } from 'node:crypto'
import type { CellBytes } from './cell-codec.ts'
import { SYNC_ERROR_CODES, SyncError } from './errors.ts'
import { MESSAGE1_OVERHEAD, MESSAGE2_OVERHEAD } from './noise-ik.ts'
import { STREAM_HEADER_BYTES } from './secret-stream.ts'

// What travels on the uplink's TCP connection, every unit exactly `cellBytes` long:
//   gateway → cloud: handshake message 1, the gateway's stream header, then cells
//   cloud → gateway: handshake message 2, the cloud's stream header, then cells
// Handshake messages carry their payload padded with zeros inside the encryption, and stream
// headers are followed by random bytes, so the first units look like every other unit.

/** The version byte at the start of both handshake payloads. */
export const PROTOCOL_VERSION = 1
const TIMESTAMP_BYTES = 12
/** TAI64 labels start at 2^62 (seconds since 1970 are added to it). */
const TAI64_BASE = 1n << 62n

/**
 * Uniform in [0, 1) from the OS's CSPRNG: the shaper's start jitter and gaps must not be
 * predictable by an observer (Math.random's state can be recovered from its outputs).
 */
export function secureRandom(): number {
  const [high, low] = getRandomValues(new Uint32Array(2)) as unknown as [number, number]
  return (high * 2 ** 21 + (low >>> 11)) / 2 ** 53
}

/** Binds the protocol and the cell size into the handshake: a peer with other settings fails it. */
export function prologueOf(cellBytes: CellBytes): Uint8Array {
  return new TextEncoder().encode(`taureau-uplink/${PROTOCOL_VERSION}/${cellBytes}`)
}

/**
 * Handshake timestamps in nanoseconds since 1970, strictly increasing within the process even if
 * the wall clock steps back. The receiver refuses a handshake whose timestamp is not newer than
 * the last it accepted from that gateway, so a recorded message 1 cannot be replayed.
 */
export function createHandshakeClock(now: () => number = Date.now): () => bigint {
  let last = 0n
  return () => {
    const stamp = BigInt(Math.floor(now())) * 1_000_000n
    last = stamp > last ? stamp : last + 1n
    return last
  }
}

/** Message 1's payload: version, TAI64N timestamp, zeros up to the size that makes the message one unit. */
export function encodeMessage1Payload(timestampNs: bigint, cellBytes: CellBytes): Uint8Array {
  const payload = new Uint8Array(cellBytes - MESSAGE1_OVERHEAD)
  const view = new DataView(payload.buffer)
  payload[0] = PROTOCOL_VERSION
  view.setBigUint64(1, TAI64_BASE + timestampNs / 1_000_000_000n)
  view.setUint32(9, Number(timestampNs % 1_000_000_000n))
  return payload
}

/** Reads message 1's payload; throws `bad_handshake` for another version, a bad timestamp or non-zero padding. */
export function decodeMessage1Payload(payload: Uint8Array, cellBytes: CellBytes): bigint {
  if (payload.length !== cellBytes - MESSAGE1_OVERHEAD || payload[0] !== PROTOCOL_VERSION) {
    throw badHandshake('its first message has another version or size')
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  const seconds = view.getBigUint64(1)
  const nanos = view.getUint32(9)
  if (seconds < TAI64_BASE || nanos >= 1_000_000_000 || !zeros(payload, 1 + TIMESTAMP_BYTES)) {
    throw badHandshake('its first message has a malformed timestamp or padding')
  }
  return (seconds - TAI64_BASE) * 1_000_000_000n + BigInt(nanos)
}

/** Message 2's payload: the version, then zeros. */
export function encodeMessage2Payload(cellBytes: CellBytes): Uint8Array {
  const payload = new Uint8Array(cellBytes - MESSAGE2_OVERHEAD)
  payload[0] = PROTOCOL_VERSION
  return payload
}

export function checkMessage2Payload(payload: Uint8Array, cellBytes: CellBytes): void {
  if (
    payload.length !== cellBytes - MESSAGE2_OVERHEAD ||
    payload[0] !== PROTOCOL_VERSION ||
    !zeros(payload, 1)
  ) {
    throw badHandshake('its second message has another version, size or padding')
  }
}

/** A stream header as one unit: the header, then random bytes. */
export function encodeHeaderUnit(header: Uint8Array, cellBytes: CellBytes): Uint8Array {
  const unit = new Uint8Array(cellBytes)
  unit.set(header)
  randomFillSync(unit, STREAM_HEADER_BYTES)
  return unit
}

export function decodeHeaderUnit(unit: Uint8Array): Uint8Array {
  return unit.slice(0, STREAM_HEADER_BYTES)
}

/**
 * Cuts a byte stream into units of exactly `unitBytes`. `push` returns the units completed by a
 * chunk; what is left waits for the next chunk. Bounded: at most one partial unit is kept.
 */
export function createUnitReader(unitBytes: number) {
  let partial = new Uint8Array(0)
  return {
    push(chunk: Uint8Array): Uint8Array[] {
      const data = partial.length === 0 ? chunk : concat(partial, chunk)
      const units: Uint8Array[] = []
      let offset = 0
      while (data.length - offset >= unitBytes) {
        units.push(data.slice(offset, offset + unitBytes))
        offset += unitBytes
      }
      partial = data.slice(offset)
      return units
    },
    /** Bytes of a unit not yet complete. */
    get pendingBytes() {
      return partial.length
    },
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const joined = new Uint8Array(a.length + b.length)
  joined.set(a)
  joined.set(b, a.length)
  return joined
}

function zeros(bytes: Uint8Array, from: number): boolean {
  for (let i = from; i < bytes.length; i++) if (bytes[i] !== 0) return false
  return true
}

function badHandshake(why: string): SyncError {
  return new SyncError(SYNC_ERROR_CODES.badHandshake, `Cannot complete the handshake as ${why}`)
}
