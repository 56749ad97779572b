import { SYNC_ERROR_CODES, SyncError } from './errors.ts'

/**
 * Types of a cell, carried in the first byte of its plaintext. Every cell on the wire has the same
 * size whatever its type; only the receiver, after decryption, can tell a DUMMY from a DATA cell.
 */
export const CELL_TYPES = {
  /** Part of the record byte stream (see {@link createRecordPacker}). */
  DATA: 1,
  /** Padding sent when a slot has no data; its body is empty. */
  DUMMY: 2,
  /** Inclusive seq ranges the receiver has stored (see {@link encodeAcks}). */
  ACK: 3,
  /** Asks the peer to rekey the secretstream. */
  RATCHET: 4,
  /** The sender is closing the session. */
  CLOSE: 5,
} as const

/** One of {@link CELL_TYPES}. */
export type CellType = (typeof CELL_TYPES)[keyof typeof CELL_TYPES]

/** Bytes secretstream adds to each cell's plaintext (1-byte tag + 16-byte MAC). */
export const CELL_OVERHEAD_BYTES = 17
/** Wire sizes a cell may have; one is chosen per link. */
export const CELL_BYTES_CHOICES = [512, 1024, 1200] as const
/** Cell sizes on the wire a user may choose. */
export const CELL_SIZES = CELL_BYTES_CHOICES
export type CellBytes = (typeof CELL_SIZES)[number]
export const DEFAULT_CELL_BYTES: CellBytes = 1024

/** Checks a configured cell size. */
export function checkCellBytes(cellBytes: number, what = 'cellBytes'): CellBytes {
  if (!(CELL_SIZES as readonly number[]).includes(cellBytes)) {
    throw new RangeError(`Cannot use ${what} ${cellBytes} as cells are ${CELL_SIZES.join(', ')} bytes`)
  }
  return cellBytes as CellBytes
}
/** Bytes of the inner header: type (1) | flags (1) | len (2, big-endian). */
export const CELL_HEADER_BYTES = 4
/** Bytes in front of each record in the DATA stream: seq (8, BE) | length (4, BE). */
export const RECORD_HEADER_BYTES = 12

const ACK_COUNT_BYTES = 2
const ACK_RANGE_BYTES = 16
// Small enough to stay sane, large enough that an ACK cell carries at least one range.
const MIN_PLAINTEXT_BYTES = CELL_HEADER_BYTES + ACK_COUNT_BYTES + ACK_RANGE_BYTES
// The inner `len` is a u16, so a body never exceeds 65,535 bytes.
const MAX_PLAINTEXT_BYTES = CELL_HEADER_BYTES + 0xffff
const MAX_RECORD_BODY_BYTES = 0xffffffff
const EMPTY = new Uint8Array(0)
const KNOWN_TYPES: ReadonlySet<number> = new Set(Object.values(CELL_TYPES))

/** The plaintext size of a cell whose wire size is `cellBytes` (one of {@link CELL_BYTES_CHOICES}). */
export function cellPlaintextBytes(cellBytes: number): number {
  if (!(CELL_BYTES_CHOICES as readonly number[]).includes(cellBytes)) {
    throw new RangeError(
      `Cannot size a cell as its wire size is not one of ${CELL_BYTES_CHOICES.join(', ')}: '${cellBytes}'`,
    )
  }
  return cellBytes - CELL_OVERHEAD_BYTES
}

/**
 * Builds a cell's plaintext: the inner header, `body`, then zeros up to `plaintextBytes`. The
 * result is always exactly `plaintextBytes` long, so the ciphertext size never depends on the body.
 */
export function encodeCell(type: CellType, body: Uint8Array, plaintextBytes: number): Uint8Array {
  _checkPlaintextBytes(plaintextBytes)
  if (!KNOWN_TYPES.has(type)) throw new RangeError(`Cannot encode a cell as its type is unknown: '${type}'`)
  if (body.length > plaintextBytes - CELL_HEADER_BYTES) {
    throw new RangeError(
      `Cannot encode a cell as its body does not fit in ${plaintextBytes - CELL_HEADER_BYTES} bytes: '${body.length}'`,
    )
  }
  const cell = new Uint8Array(plaintextBytes)
  cell[0] = type
  new DataView(cell.buffer).setUint16(2, body.length)
  cell.set(body, CELL_HEADER_BYTES)
  return cell
}

/** The plaintext of a DUMMY cell: an empty body and all-zero padding. */
export function dummyCell(plaintextBytes: number): Uint8Array {
  return encodeCell(CELL_TYPES.DUMMY, EMPTY, plaintextBytes)
}

/** A decoded cell; `body` is a view into the plaintext it came from. */
export interface DecodedCell {
  type: CellType
  flags: number
  body: Uint8Array
}

/**
 * Parses a decrypted cell. Anything but the exact format is rejected with `bad_cell`, including
 * non-zero flags (reserved so the format can grow) and non-zero padding (so nothing can hide there).
 */
export function decodeCell(plaintext: Uint8Array, plaintextBytes: number): DecodedCell {
  _checkPlaintextBytes(plaintextBytes)
  if (plaintext.length !== plaintextBytes) {
    throw _badCell(`it is not ${plaintextBytes} bytes long: '${plaintext.length}'`)
  }
  const type = plaintext[0] ?? 0
  const flags = plaintext[1] ?? 0
  if (!KNOWN_TYPES.has(type)) throw _badCell(`its type is unknown: '${type}'`)
  if (flags !== 0) throw _badCell(`its flags are not zero: '${flags}'`)
  const len = new DataView(plaintext.buffer, plaintext.byteOffset, plaintext.length).getUint16(2)
  const end = CELL_HEADER_BYTES + len
  if (end > plaintextBytes) throw _badCell(`its length runs past the end: '${len}'`)
  // OR every padding byte together instead of stopping at the first non-zero one: no early exit.
  let padding = 0
  for (let at = end; at < plaintextBytes; at++) padding |= plaintext[at] ?? 0
  if (padding !== 0) throw _badCell('its padding is not all zeros')
  return { type: type as CellType, flags, body: plaintext.subarray(CELL_HEADER_BYTES, end) }
}

/** Options of {@link createRecordPacker}. */
export interface RecordPackerOptions {
  plaintextBytes: number
  /** Bound on bytes (record headers included) waiting to go into cells; see {@link RecordPacker.push}. */
  maxQueuedBytes: number
  /** Called with each record's seq once its last byte is in a cell returned by `nextCell()`. */
  onRecordSent?: (seq: number) => void
}

/** Turns records into DATA cells; see {@link createRecordPacker}. */
export interface RecordPacker {
  /**
   * Queues a record. Returns false, queuing nothing, when it would take the queue past
   * `maxQueuedBytes`: the caller waits for `nextCell()` to make room. A record larger than the
   * bound is still taken when the queue is empty, so it cannot stall the link for ever. Seqs must
   * increase between resets (that is what makes `sentThrough` mean something). `body` is kept by
   * reference until it is sent: do not change it.
   */
  push(seq: number, body: Uint8Array): boolean
  /** A DATA cell's plaintext holding as many queued bytes as fit, or undefined when nothing is queued. */
  nextCell(): Uint8Array | undefined
  /** Bytes queued and not yet in a cell, record headers included. */
  readonly queuedBytes: number
  /** Seq of the last record wholly written into cells since the last reset, or 0. */
  readonly sentThrough: number
  /** Drops everything queued, partial record included; used when the connection is lost. */
  reset(): void
}

interface _QueuedRecord {
  seq: number
  header: Uint8Array
  body: Uint8Array
  /** Bytes of header + body already written into cells. */
  written: number
}

/**
 * Packs records back to back into DATA cells as one byte stream (`seq u64 | length u32 | body`
 * each), so a record may span many cells and a cell may end inside a record's header. Padding is
 * therefore only paid when the queue runs empty, not once per record.
 */
export function createRecordPacker(options: RecordPackerOptions): RecordPacker {
  const { plaintextBytes, maxQueuedBytes, onRecordSent } = options
  _checkPlaintextBytes(plaintextBytes)
  if (!Number.isSafeInteger(maxQueuedBytes) || maxQueuedBytes < 1) {
    throw new RangeError(
      `Cannot create a record packer as maxQueuedBytes is not a positive integer: '${maxQueuedBytes}'`,
    )
  }
  const capacity = plaintextBytes - CELL_HEADER_BYTES
  let queue: _QueuedRecord[] = []
  let head = 0
  let queuedBytes = 0
  let sentThrough = 0
  let lastSeq = 0

  return {
    push(seq, body) {
      if (!Number.isSafeInteger(seq) || seq <= lastSeq) {
        throw new RangeError(
          `Cannot queue a record as its seq is not a safe integer above ${lastSeq}: '${seq}'`,
        )
      }
      if (body.length > MAX_RECORD_BODY_BYTES) {
        throw new RangeError(`Cannot queue a record as its body is over 4 GiB: '${body.length}'`)
      }
      const framedBytes = RECORD_HEADER_BYTES + body.length
      if (queuedBytes > 0 && queuedBytes + framedBytes > maxQueuedBytes) return false
      const header = new Uint8Array(RECORD_HEADER_BYTES)
      const view = new DataView(header.buffer)
      _writeSeq(view, 0, seq)
      view.setUint32(8, body.length)
      queue.push({ seq, header, body, written: 0 })
      queuedBytes += framedBytes
      lastSeq = seq
      return true
    },

    nextCell() {
      if (queuedBytes === 0) return undefined
      const cell = new Uint8Array(plaintextBytes)
      cell[0] = CELL_TYPES.DATA
      let filled = 0
      for (;;) {
        const record = queue[head]
        if (record === undefined || filled === capacity) break
        const framedBytes = RECORD_HEADER_BYTES + record.body.length
        while (record.written < framedBytes && filled < capacity) {
          const inHeader = record.written < RECORD_HEADER_BYTES
          const source = inHeader ? record.header : record.body
          const from = inHeader ? record.written : record.written - RECORD_HEADER_BYTES
          const count = Math.min(source.length - from, capacity - filled)
          cell.set(source.subarray(from, from + count), CELL_HEADER_BYTES + filled)
          record.written += count
          filled += count
        }
        if (record.written < framedBytes) break
        head++
        sentThrough = record.seq
        onRecordSent?.(record.seq)
      }
      new DataView(cell.buffer).setUint16(2, filled)
      queuedBytes -= filled
      // Drop sent records from the front in batches, so the array does not grow without end.
      if (head === queue.length) {
        queue = []
        head = 0
      } else if (head >= 1024 && head * 2 >= queue.length) {
        queue = queue.slice(head)
        head = 0
      }
      return cell
    },

    get queuedBytes() {
      return queuedBytes
    },

    get sentThrough() {
      return sentThrough
    },

    reset() {
      queue = []
      head = 0
      queuedBytes = 0
      sentThrough = 0
      lastSeq = 0
    },
  }
}

/** Options of {@link createRecordUnpacker}. */
export interface RecordUnpackerOptions {
  /** Largest record body accepted; checked before the body is allocated. */
  maxRecordBytes: number
}

/** A record rebuilt from DATA cells. */
export interface UnpackedRecord {
  seq: number
  body: Uint8Array
}

/** Rebuilds records from DATA cells; see {@link createRecordUnpacker}. */
export interface RecordUnpacker {
  /**
   * Takes the body of the next DATA cell and returns the records it completed, in order. Throws
   * `bad_record` for a record over `maxRecordBytes` or a seq that is 0 or not a safe integer; the
   * stream cannot be resynchronised after that, so the session must close.
   */
  push(cellBody: Uint8Array): UnpackedRecord[]
  /** Bytes of an incomplete record held so far (its header included). */
  readonly partialBytes: number
}

/** The receiving half of {@link createRecordPacker}: parses the record byte stream across cells. */
export function createRecordUnpacker(options: RecordUnpackerOptions): RecordUnpacker {
  const { maxRecordBytes } = options
  if (!Number.isSafeInteger(maxRecordBytes) || maxRecordBytes < 0 || maxRecordBytes > MAX_RECORD_BODY_BYTES) {
    throw new RangeError(
      `Cannot create a record unpacker as maxRecordBytes is out of range: '${maxRecordBytes}'`,
    )
  }
  const header = new Uint8Array(RECORD_HEADER_BYTES)
  const headerView = new DataView(header.buffer)
  let headerFilled = 0
  let current: { seq: number; body: Uint8Array; filled: number } | undefined

  return {
    push(cellBody) {
      const records: UnpackedRecord[] = []
      let at = 0
      while (at < cellBody.length) {
        if (current === undefined) {
          const count = Math.min(RECORD_HEADER_BYTES - headerFilled, cellBody.length - at)
          header.set(cellBody.subarray(at, at + count), headerFilled)
          headerFilled += count
          at += count
          if (headerFilled < RECORD_HEADER_BYTES) break
          headerFilled = 0
          const seq = _readSeq(headerView, 0)
          if (seq === undefined) throw _badRecord('its seq is 0 or not a safe integer')
          const length = headerView.getUint32(8)
          if (length > maxRecordBytes) {
            throw _badRecord(`its length is over ${maxRecordBytes} bytes: '${length}'`)
          }
          current = { seq, body: new Uint8Array(length), filled: 0 }
        }
        const count = Math.min(current.body.length - current.filled, cellBody.length - at)
        current.body.set(cellBody.subarray(at, at + count), current.filled)
        current.filled += count
        at += count
        if (current.filled === current.body.length) {
          records.push({ seq: current.seq, body: current.body })
          current = undefined
        }
      }
      return records
    },

    get partialBytes() {
      return current === undefined ? headerFilled : RECORD_HEADER_BYTES + current.filled
    },
  }
}

/** An inclusive range of seqs, `[from, to]`. */
export type SeqRange = [from: number, to: number]

/**
 * Packs as many seq ranges as fit into an ACK cell's body (`count u16`, then `from u64 | to u64`
 * per range, big-endian) and returns the ones that did not fit, for the next ACK cell.
 */
export function encodeAcks(
  ranges: readonly SeqRange[],
  plaintextBytes: number,
): { body: Uint8Array; rest: SeqRange[] } {
  _checkPlaintextBytes(plaintextBytes)
  const fit = Math.floor((plaintextBytes - CELL_HEADER_BYTES - ACK_COUNT_BYTES) / ACK_RANGE_BYTES)
  const count = Math.min(ranges.length, fit)
  const body = new Uint8Array(ACK_COUNT_BYTES + count * ACK_RANGE_BYTES)
  const view = new DataView(body.buffer)
  view.setUint16(0, count)
  for (let index = 0; index < count; index++) {
    const [from, to] = ranges[index] ?? [0, 0]
    if (!_isSeq(from) || !_isSeq(to) || from > to) {
      throw new RangeError(`Cannot encode an ack as its range is not two ordered seqs: '${from}-${to}'`)
    }
    _writeSeq(view, ACK_COUNT_BYTES + index * ACK_RANGE_BYTES, from)
    _writeSeq(view, ACK_COUNT_BYTES + index * ACK_RANGE_BYTES + 8, to)
  }
  return { body, rest: ranges.slice(count) }
}

/** Parses an ACK cell's body; throws `bad_cell` unless every range is two ordered positive seqs. */
export function decodeAcks(body: Uint8Array): SeqRange[] {
  if (body.length < ACK_COUNT_BYTES) throw _badCell(`its ack body is too short: '${body.length}'`)
  const view = new DataView(body.buffer, body.byteOffset, body.length)
  const count = view.getUint16(0)
  if (body.length !== ACK_COUNT_BYTES + count * ACK_RANGE_BYTES) {
    throw _badCell(`its ack count does not match its length: '${count}'`)
  }
  const ranges: SeqRange[] = []
  for (let index = 0; index < count; index++) {
    const from = _readSeq(view, ACK_COUNT_BYTES + index * ACK_RANGE_BYTES)
    const to = _readSeq(view, ACK_COUNT_BYTES + index * ACK_RANGE_BYTES + 8)
    if (from === undefined || to === undefined || from > to) {
      throw _badCell(`its ack range ${index} is not two ordered positive seqs`)
    }
    ranges.push([from, to])
  }
  return ranges
}

/** Merges an ascending list of seqs (duplicates allowed) into the fewest inclusive ranges. */
export function seqsToRanges(seqs: readonly number[]): SeqRange[] {
  const ranges: SeqRange[] = []
  let last: SeqRange | undefined
  for (const seq of seqs) {
    if (!_isSeq(seq))
      throw new RangeError(`Cannot merge seqs as one is not a positive safe integer: '${seq}'`)
    if (last !== undefined && seq < last[1]) {
      throw new RangeError(`Cannot merge seqs as they are not in ascending order: '${seq}'`)
    }
    if (last !== undefined && seq <= last[1] + 1) last[1] = seq
    else {
      last = [seq, seq]
      ranges.push(last)
    }
  }
  return ranges
}

function _isSeq(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0
}

function _writeSeq(view: DataView, offset: number, seq: number): void {
  view.setUint32(offset, Math.floor(seq / 2 ** 32))
  view.setUint32(offset + 4, seq >>> 0)
}

/** Reads a u64 seq; undefined when it is 0 or past Number.MAX_SAFE_INTEGER (high word > 2^21 - 1). */
function _readSeq(view: DataView, offset: number): number | undefined {
  const high = view.getUint32(offset)
  if (high > 0x1fffff) return undefined
  const seq = high * 2 ** 32 + view.getUint32(offset + 4)
  return seq === 0 ? undefined : seq
}

function _checkPlaintextBytes(plaintextBytes: number): void {
  if (
    !Number.isSafeInteger(plaintextBytes) ||
    plaintextBytes < MIN_PLAINTEXT_BYTES ||
    plaintextBytes > MAX_PLAINTEXT_BYTES
  ) {
    throw new RangeError(
      `Cannot size a cell as plaintextBytes is not an integer from ${MIN_PLAINTEXT_BYTES} to ${MAX_PLAINTEXT_BYTES}: '${plaintextBytes}'`,
    )
  }
}

function _badCell(why: string): SyncError {
  return new SyncError(SYNC_ERROR_CODES.badCell, `Cannot decode cell as ${why}`)
}

function _badRecord(why: string): SyncError {
  return new SyncError(SYNC_ERROR_CODES.badRecord, `Cannot decode record as ${why}`)
}
