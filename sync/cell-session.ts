import { type CELL_TYPES, type CellBytes, cellPlaintextBytes, decodeCell, encodeCell } from './cell-codec.ts'
import { createOpener, createSealer } from './secret-stream.ts'
import { decodeHeaderUnit, encodeHeaderUnit } from './wire.ts'

export type CellType = (typeof CELL_TYPES)[keyof typeof CELL_TYPES]

/** A cell as read: its type and body, and the secretstream tags it came with. */
export interface OpenedCell {
  type: CellType
  body: Uint8Array
  rekey: boolean
  final: boolean
}

/**
 * Both directions of an established link: cells sealed with one secretstream, opened with the
 * other. Every sealed cell is exactly `cellBytes` long, whatever its type or body.
 */
export interface CellSession {
  readonly plaintextBytes: number
  /** Our stream's header as one unit: sent once, right after the handshake. */
  readonly headerUnit: Uint8Array
  /** Takes the peer's header unit; cells can be opened after it. */
  acceptHeaderUnit(unit: Uint8Array): void
  seal(type: CellType, body: Uint8Array, options?: { rekey?: boolean; final?: boolean }): Uint8Array
  /** Seals a cell plaintext made elsewhere (the record packer's DATA cells). */
  sealPlaintext(plaintext: Uint8Array): Uint8Array
  /** Opens one unit; throws `bad_cell` (the session must then close). */
  open(unit: Uint8Array): OpenedCell
}

export function createCellSession(options: {
  sendKey: Uint8Array
  receiveKey: Uint8Array
  cellBytes: CellBytes
}): CellSession {
  const { cellBytes, receiveKey } = options
  const plaintextBytes = cellPlaintextBytes(cellBytes)
  const sealer = createSealer(options.sendKey)
  let opener: ReturnType<typeof createOpener> | undefined
  return {
    plaintextBytes,
    headerUnit: encodeHeaderUnit(sealer.header, cellBytes),
    acceptHeaderUnit(unit) {
      if (opener !== undefined) throw new TypeError('Cannot take a second stream header')
      opener = createOpener(receiveKey, decodeHeaderUnit(unit))
    },
    seal(type, body, sealOptions = {}) {
      return sealer.seal(encodeCell(type, body, plaintextBytes), sealOptions)
    },
    sealPlaintext(plaintext) {
      if (plaintext.length !== plaintextBytes) {
        throw new RangeError(
          `Cannot seal a cell of ${plaintext.length} bytes as cells hold ${plaintextBytes}`,
        )
      }
      return sealer.seal(plaintext)
    },
    open(unit) {
      if (opener === undefined) throw new TypeError('Cannot open a cell before the stream header')
      const { plaintext, rekey, final } = opener.open(unit)
      const cell = decodeCell(plaintext, plaintextBytes)
      return { type: cell.type as CellType, body: cell.body, rekey, final }
    },
  }
}
