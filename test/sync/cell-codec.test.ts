import { describe, expect, test } from 'vitest'
import {
  CELL_BYTES_CHOICES,
  CELL_HEADER_BYTES,
  CELL_TYPES,
  type CellType,
  cellPlaintextBytes,
  createRecordPacker,
  createRecordUnpacker,
  decodeAcks,
  decodeCell,
  dummyCell,
  encodeAcks,
  encodeCell,
  RECORD_HEADER_BYTES,
  type SeqRange,
  seqsToRanges,
  type UnpackedRecord,
} from '../../sync/cell-codec.ts'
import { SyncError } from '../../sync/errors.ts'
import { seededRandom } from '../../sync/shaper.ts'

const PLAINTEXT_SIZES = CELL_BYTES_CHOICES.map(cellPlaintextBytes)
const PLAINTEXT = cellPlaintextBytes(1024)
const CAPACITY = PLAINTEXT - CELL_HEADER_BYTES

const bytes = (length: number, seed = length) => {
  const random = seededRandom(seed)
  return Uint8Array.from({ length }, () => Math.floor(random() * 256))
}

/** Expects `fn` to throw a SyncError with `code`. */
const expectSyncError = (fn: () => unknown, code: string) => {
  let caught: unknown
  try {
    fn()
  } catch (error) {
    caught = error
  }
  expect(caught).toBeInstanceOf(SyncError)
  expect((caught as SyncError).code).toBe(code)
}

/** Packs `records` into cells, checks each is a well-formed DATA cell, and returns the cells. */
const packAll = (records: UnpackedRecord[], plaintextBytes = PLAINTEXT) => {
  const packer = createRecordPacker({ plaintextBytes, maxQueuedBytes: Number.MAX_SAFE_INTEGER })
  for (const { seq, body } of records) expect(packer.push(seq, body)).toBe(true)
  const cells: Uint8Array[] = []
  for (let cell = packer.nextCell(); cell !== undefined; cell = packer.nextCell()) {
    expect(cell.length).toBe(plaintextBytes)
    expect(decodeCell(cell, plaintextBytes).type).toBe(CELL_TYPES.DATA)
    cells.push(cell)
  }
  expect(packer.queuedBytes).toBe(0)
  return cells
}

const unpackAll = (cells: Uint8Array[], plaintextBytes = PLAINTEXT, maxRecordBytes = 1 << 20) => {
  const unpacker = createRecordUnpacker({ maxRecordBytes })
  const records = cells.flatMap((cell) => unpacker.push(decodeCell(cell, plaintextBytes).body))
  expect(unpacker.partialBytes).toBe(0)
  return records
}

/** A DATA cell body holding one record header with the given raw seq words and length. */
const recordHeader = (seqHigh: number, seqLow: number, length: number) => {
  const header = new Uint8Array(RECORD_HEADER_BYTES)
  const view = new DataView(header.buffer)
  view.setUint32(0, seqHigh)
  view.setUint32(4, seqLow)
  view.setUint32(8, length)
  return header
}

describe('cells', () => {
  test('plaintext sizes are the wire sizes less the 17 bytes of secretstream', () => {
    expect(PLAINTEXT_SIZES).toEqual([495, 1007, 1183])
    expect(() => cellPlaintextBytes(1000)).toThrow(RangeError)
  })

  test.each(PLAINTEXT_SIZES)('every cell type round-trips at %i plaintext bytes', (plaintextBytes) => {
    for (const type of Object.values(CELL_TYPES)) {
      for (const body of [new Uint8Array(0), bytes(1), bytes(plaintextBytes - CELL_HEADER_BYTES)]) {
        const cell = encodeCell(type, body, plaintextBytes)
        expect(cell.length).toBe(plaintextBytes)
        expect(decodeCell(cell, plaintextBytes)).toEqual({ type, flags: 0, body })
      }
    }
  })

  test('dummyCell() is an empty DUMMY cell of the same size as any other cell', () => {
    const cell = dummyCell(PLAINTEXT)
    expect(cell).toEqual(encodeCell(CELL_TYPES.DUMMY, new Uint8Array(0), PLAINTEXT))
    expect(decodeCell(cell, PLAINTEXT)).toEqual({ type: CELL_TYPES.DUMMY, flags: 0, body: new Uint8Array(0) })
  })

  test('encodeCell() refuses a body that does not fit, an unknown type and an impossible size', () => {
    expect(() => encodeCell(CELL_TYPES.DATA, bytes(CAPACITY + 1), PLAINTEXT)).toThrow(RangeError)
    expect(() => encodeCell(9 as CellType, bytes(1), PLAINTEXT)).toThrow(RangeError)
    expect(() => encodeCell(CELL_TYPES.DATA, bytes(1), 10)).toThrow(RangeError)
  })

  test('decodeCell() rejects every malformed cell with bad_cell', () => {
    const good = () => encodeCell(CELL_TYPES.DATA, bytes(10), PLAINTEXT)
    expectSyncError(() => decodeCell(good().subarray(1), PLAINTEXT), 'bad_cell')
    expectSyncError(() => decodeCell(new Uint8Array(PLAINTEXT + 1), PLAINTEXT), 'bad_cell')
    for (const type of [0, 6, 255]) {
      const cell = good()
      cell[0] = type
      expectSyncError(() => decodeCell(cell, PLAINTEXT), 'bad_cell')
    }
    const flagged = good()
    flagged[1] = 1
    expectSyncError(() => decodeCell(flagged, PLAINTEXT), 'bad_cell')
    const tooLong = good()
    new DataView(tooLong.buffer).setUint16(2, CAPACITY + 1)
    expectSyncError(() => decodeCell(tooLong, PLAINTEXT), 'bad_cell')
    const hidden = good()
    hidden[PLAINTEXT - 1] = 1
    expectSyncError(() => decodeCell(hidden, PLAINTEXT), 'bad_cell')
    // The last byte of the body is not padding: a len one short of it is caught as padding.
    const short = good()
    new DataView(short.buffer).setUint16(2, 9)
    expectSyncError(() => decodeCell(short, PLAINTEXT), 'bad_cell')
    expect(decodeCell(good(), PLAINTEXT).body).toEqual(bytes(10))
  })

  test('decodeCell() reads a cell that is a view into a larger buffer', () => {
    const backing = new Uint8Array(PLAINTEXT + 8)
    backing.set(encodeCell(CELL_TYPES.ACK, bytes(3), PLAINTEXT), 8)
    expect(decodeCell(backing.subarray(8), PLAINTEXT).body).toEqual(bytes(3))
  })
})

describe('records', () => {
  test.each(PLAINTEXT_SIZES)(
    'records of 0 and 1 bytes share one cell at %i plaintext bytes',
    (plaintextBytes) => {
      const records = [
        { seq: 1, body: new Uint8Array(0) },
        { seq: 2, body: bytes(1) },
        { seq: 3, body: new Uint8Array(0) },
      ]
      const cells = packAll(records, plaintextBytes)
      expect(cells).toHaveLength(1)
      expect(decodeCell(cells[0]!, plaintextBytes).body).toHaveLength(3 * RECORD_HEADER_BYTES + 1)
      expect(unpackAll(cells, plaintextBytes)).toEqual(records)
    },
  )

  test('a record that exactly fills a cell takes one cell and leaves no padding', () => {
    const records = [{ seq: 7, body: bytes(CAPACITY - RECORD_HEADER_BYTES) }]
    const cells = packAll(records)
    expect(cells).toHaveLength(1)
    expect(decodeCell(cells[0]!, PLAINTEXT).body).toHaveLength(CAPACITY)
    expect(unpackAll(cells)).toEqual(records)
  })

  test('a record spanning 5 cells comes back whole only from the fifth cell', () => {
    const body = bytes(5 * CAPACITY - RECORD_HEADER_BYTES)
    const cells = packAll([{ seq: 42, body }])
    expect(cells).toHaveLength(5)
    const unpacker = createRecordUnpacker({ maxRecordBytes: body.length })
    for (const cell of cells.slice(0, 4)) expect(unpacker.push(decodeCell(cell, PLAINTEXT).body)).toEqual([])
    expect(unpacker.partialBytes).toBe(4 * CAPACITY)
    expect(unpacker.push(decodeCell(cells[4]!, PLAINTEXT).body)).toEqual([{ seq: 42, body }])
  })

  test('a record header split across two cells is rebuilt', () => {
    // The first record leaves 5 bytes in the cell, so the second's header is split 5 + 7.
    const records = [
      { seq: 1, body: bytes(CAPACITY - RECORD_HEADER_BYTES - 5) },
      { seq: 2 ** 40 + 3, body: bytes(30) },
    ]
    const cells = packAll(records)
    expect(cells).toHaveLength(2)
    const unpacker = createRecordUnpacker({ maxRecordBytes: CAPACITY })
    expect(unpacker.push(decodeCell(cells[0]!, PLAINTEXT).body)).toEqual([records[0]])
    expect(unpacker.partialBytes).toBe(5)
    expect(unpacker.push(decodeCell(cells[1]!, PLAINTEXT).body)).toEqual([records[1]])
  })

  test.each(PLAINTEXT_SIZES)(
    '1,000 random records packed then unpacked at %i bytes come back in order',
    (plaintextBytes) => {
      const random = seededRandom(plaintextBytes)
      let seq = 0
      const records = Array.from({ length: 1000 }, () => {
        seq += 1 + Math.floor(random() * 3)
        // Mostly small, now and then several cells long.
        const length = random() < 0.05 ? Math.floor(random() * 5000) : Math.floor(random() * 64)
        return { seq, body: bytes(length, seq) }
      })
      const cells = packAll(records, plaintextBytes)
      const streamBytes = records.reduce((sum, record) => sum + RECORD_HEADER_BYTES + record.body.length, 0)
      // Back to back: only the last cell carries padding.
      expect(cells).toHaveLength(Math.ceil(streamBytes / (plaintextBytes - CELL_HEADER_BYTES)))
      expect(unpackAll(cells, plaintextBytes)).toEqual(records)
    },
  )

  test('the packer reports each record once its last byte is in a cell', () => {
    const sent: number[] = []
    const packer = createRecordPacker({
      plaintextBytes: PLAINTEXT,
      maxQueuedBytes: 100_000,
      onRecordSent: (seq) => sent.push(seq),
    })
    packer.push(1, bytes(10))
    packer.push(2, bytes(2 * CAPACITY))
    packer.push(3, new Uint8Array(0))
    expect(packer.sentThrough).toBe(0)
    packer.nextCell()
    expect([packer.sentThrough, sent]).toEqual([1, [1]])
    packer.nextCell()
    expect([packer.sentThrough, sent]).toEqual([1, [1]])
    packer.nextCell()
    expect([packer.sentThrough, sent]).toEqual([3, [1, 2, 3]])
    expect(packer.nextCell()).toBeUndefined()
  })

  test('the packer refuses a record past its byte bound until cells make room', () => {
    const packer = createRecordPacker({ plaintextBytes: PLAINTEXT, maxQueuedBytes: 2 * CAPACITY })
    expect(packer.push(1, bytes(CAPACITY - RECORD_HEADER_BYTES))).toBe(true)
    expect(packer.push(2, bytes(CAPACITY - RECORD_HEADER_BYTES))).toBe(true)
    expect(packer.queuedBytes).toBe(2 * CAPACITY)
    expect(packer.push(3, new Uint8Array(0))).toBe(false)
    expect(packer.queuedBytes).toBe(2 * CAPACITY)
    packer.nextCell()
    expect(packer.queuedBytes).toBe(CAPACITY)
    expect(packer.push(3, new Uint8Array(0))).toBe(true)
    // A record larger than the whole bound still goes through alone rather than stall for ever.
    const lone = createRecordPacker({ plaintextBytes: PLAINTEXT, maxQueuedBytes: 100 })
    expect(lone.push(1, bytes(1000))).toBe(true)
    expect(lone.push(2, bytes(1))).toBe(false)
  })

  test('the packer refuses seqs that are not positive, increasing safe integers', () => {
    const packer = createRecordPacker({ plaintextBytes: PLAINTEXT, maxQueuedBytes: 1000 })
    for (const seq of [0, -1, 1.5, 2 ** 53]) expect(() => packer.push(seq, bytes(1))).toThrow(RangeError)
    packer.push(5, bytes(1))
    expect(() => packer.push(5, bytes(1))).toThrow(RangeError)
    expect(() => packer.push(4, bytes(1))).toThrow(RangeError)
  })

  test('reset() drops the partial record so the next connection starts on a record boundary', () => {
    const packer = createRecordPacker({ plaintextBytes: PLAINTEXT, maxQueuedBytes: 100_000 })
    const first = { seq: 1, body: bytes(3 * CAPACITY) }
    packer.push(first.seq, first.body)
    packer.nextCell()
    packer.reset()
    expect([packer.queuedBytes, packer.sentThrough, packer.nextCell()]).toEqual([0, 0, undefined])
    // The caller re-pushes what was not acknowledged, from the lowest seq again.
    const records = [first, { seq: 2, body: bytes(5) }]
    for (const { seq, body } of records) packer.push(seq, body)
    const cells: Uint8Array[] = []
    for (let cell = packer.nextCell(); cell !== undefined; cell = packer.nextCell()) cells.push(cell)
    expect(unpackAll(cells)).toEqual(records)
  })

  test('the unpacker rejects a record over maxRecordBytes before allocating it', () => {
    const unpacker = createRecordUnpacker({ maxRecordBytes: 100 })
    expect(unpacker.push(recordHeader(0, 1, 100))).toEqual([])
    const fresh = createRecordUnpacker({ maxRecordBytes: 100 })
    expectSyncError(() => fresh.push(recordHeader(0, 1, 101)), 'bad_record')
    expectSyncError(
      () => createRecordUnpacker({ maxRecordBytes: 100 }).push(recordHeader(0, 1, 0xffffffff)),
      'bad_record',
    )
  })

  test('the unpacker rejects a seq of 0 or past the safe integers, and takes the largest safe one', () => {
    expectSyncError(
      () => createRecordUnpacker({ maxRecordBytes: 10 }).push(recordHeader(0, 0, 0)),
      'bad_record',
    )
    expectSyncError(
      () => createRecordUnpacker({ maxRecordBytes: 10 }).push(recordHeader(0x200000, 0, 0)),
      'bad_record',
    )
    expect(createRecordUnpacker({ maxRecordBytes: 10 }).push(recordHeader(0x1fffff, 0xffffffff, 0))).toEqual([
      { seq: Number.MAX_SAFE_INTEGER, body: new Uint8Array(0) },
    ])
  })
})

describe('acks', () => {
  test('ranges round-trip through an ACK cell', () => {
    const ranges: SeqRange[] = [
      [1, 1],
      [3, 10],
      [2 ** 40, Number.MAX_SAFE_INTEGER],
    ]
    const { body, rest } = encodeAcks(ranges, PLAINTEXT)
    expect(rest).toEqual([])
    const cell = encodeCell(CELL_TYPES.ACK, body, PLAINTEXT)
    expect(decodeAcks(decodeCell(cell, PLAINTEXT).body)).toEqual(ranges)
  })

  test.each(PLAINTEXT_SIZES)(
    'ranges that do not fit in %i bytes spill into rest, in order',
    (plaintextBytes) => {
      const ranges = Array.from({ length: 200 }, (_, index): SeqRange => [index * 10 + 1, index * 10 + 5])
      const fit = Math.floor((plaintextBytes - CELL_HEADER_BYTES - 2) / 16)
      const first = encodeAcks(ranges, plaintextBytes)
      expect(first.rest).toEqual(ranges.slice(fit))
      // Every batch fits in a cell, and the batches together are the whole list.
      const decoded = decodeAcks(first.body)
      let rest = first.rest
      while (rest.length > 0) {
        const next = encodeAcks(rest, plaintextBytes)
        encodeCell(CELL_TYPES.ACK, next.body, plaintextBytes)
        decoded.push(...decodeAcks(next.body))
        rest = next.rest
      }
      expect(decoded).toEqual(ranges)
    },
  )

  test('encodeAcks() refuses a range that is not two ordered positive seqs', () => {
    for (const range of [
      [0, 1],
      [5, 4],
      [1, 2 ** 53],
    ] as SeqRange[]) {
      expect(() => encodeAcks([range], PLAINTEXT)).toThrow(RangeError)
    }
  })

  test('decodeAcks() rejects a count that does not match, and unordered, zero or unsafe seqs', () => {
    const one = () => encodeAcks([[5, 9]], PLAINTEXT).body
    expectSyncError(() => decodeAcks(new Uint8Array(1)), 'bad_cell')
    expectSyncError(() => decodeAcks(one().subarray(0, 17)), 'bad_cell')
    const counted = one()
    counted[1] = 2
    expectSyncError(() => decodeAcks(counted), 'bad_cell')
    const write = (from: [number, number], to: [number, number]) => {
      const body = one()
      const view = new DataView(body.buffer)
      view.setUint32(2, from[0])
      view.setUint32(6, from[1])
      view.setUint32(10, to[0])
      view.setUint32(14, to[1])
      return body
    }
    expectSyncError(() => decodeAcks(write([0, 9], [0, 5])), 'bad_cell')
    expectSyncError(() => decodeAcks(write([0, 0], [0, 5])), 'bad_cell')
    expectSyncError(() => decodeAcks(write([0, 1], [0x200000, 0])), 'bad_cell')
    expect(decodeAcks(write([0, 1], [0, 1]))).toEqual([[1, 1]])
    expect(decodeAcks(new Uint8Array(2))).toEqual([])
  })

  test('seqsToRanges() merges sorted seqs, duplicates included, into the fewest ranges', () => {
    expect(seqsToRanges([])).toEqual([])
    expect(seqsToRanges([1, 2, 3, 3, 5, 7, 8, 10])).toEqual([
      [1, 3],
      [5, 5],
      [7, 8],
      [10, 10],
    ])
    expect(() => seqsToRanges([3, 2])).toThrow(RangeError)
    expect(() => seqsToRanges([0])).toThrow(RangeError)
  })
})
