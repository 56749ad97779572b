import sodium from 'libsodium-wrappers'
import { beforeAll, describe, expect, test } from 'vitest'
import { SyncError } from '../../sync/errors.ts'
import { sodiumReady } from '../../sync/noise-ik.ts'
import {
  createOpener,
  createSealer,
  STREAM_HEADER_BYTES,
  STREAM_OVERHEAD_BYTES,
} from '../../sync/secret-stream.ts'

const bytes = (text: string) => new TextEncoder().encode(text)

function expectBadCell(run: () => unknown): void {
  let thrown: unknown
  try {
    run()
  } catch (error) {
    thrown = error
  }
  expect(thrown).toBeInstanceOf(SyncError)
  expect((thrown as SyncError).code).toBe('bad_cell')
  expect((thrown as SyncError).message).toMatch(/^Cannot open the cell as /)
}

let key: Uint8Array
beforeAll(async () => {
  await sodiumReady()
  key = sodium.randombytes_buf(32)
})

describe('createSealer() and createOpener()', () => {
  test('many messages of many sizes round-trip in order', () => {
    const sealer = createSealer(key)
    expect(sealer.header.length).toBe(STREAM_HEADER_BYTES)
    const opener = createOpener(key, sealer.header)
    for (let index = 0; index < 500; index++) {
      const plaintext = sodium.randombytes_buf(index % 97)
      const ciphertext = sealer.seal(plaintext)
      expect(ciphertext.length).toBe(plaintext.length + STREAM_OVERHEAD_BYTES)
      expect(opener.open(ciphertext)).toEqual({ plaintext, rekey: false, final: false })
    }
  })

  test('the constants match libsodium', () => {
    expect(STREAM_HEADER_BYTES).toBe(sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES)
    expect(STREAM_OVERHEAD_BYTES).toBe(sodium.crypto_secretstream_xchacha20poly1305_ABYTES)
  })

  test('a flipped bit anywhere in a message fails with bad_cell', () => {
    const sealer = createSealer(key)
    const ciphertext = sealer.seal(bytes('a cell of telemetry'))
    for (let index = 0; index < ciphertext.length; index++) {
      const tampered = Uint8Array.from(ciphertext)
      tampered[index]! ^= 0x01
      expectBadCell(() => createOpener(key, sealer.header).open(tampered))
    }
    expect(createOpener(key, sealer.header).open(ciphertext).plaintext).toEqual(bytes('a cell of telemetry'))
  })

  test('a wrong key or a wrong header fails with bad_cell', () => {
    const sealer = createSealer(key)
    const ciphertext = sealer.seal(bytes('cell'))
    expectBadCell(() => createOpener(sodium.randombytes_buf(32), sealer.header).open(ciphertext))
    expectBadCell(() => createOpener(key, createSealer(key).header).open(ciphertext))
  })

  test('a reordered message fails with bad_cell', () => {
    const sealer = createSealer(key)
    sealer.seal(bytes('first'))
    const second = sealer.seal(bytes('second'))
    expectBadCell(() => createOpener(key, sealer.header).open(second))
  })

  test('a replayed message fails with bad_cell, and so does everything after it', () => {
    const sealer = createSealer(key)
    const opener = createOpener(key, sealer.header)
    const first = sealer.seal(bytes('first'))
    const second = sealer.seal(bytes('second'))
    opener.open(first)
    expectBadCell(() => opener.open(first))
    // The failure closes the stream for good, even for the message that was next in line.
    expectBadCell(() => opener.open(second))
  })

  test('a message shorter than the overhead fails with bad_cell', () => {
    const sealer = createSealer(key)
    expectBadCell(() => createOpener(key, sealer.header).open(new Uint8Array(STREAM_OVERHEAD_BYTES - 1)))
    expectBadCell(() => createOpener(key, sealer.header).open(new Uint8Array(0)))
  })

  test('a rekey tag keeps both sides in step across many rekeys', () => {
    const sealer = createSealer(key)
    const opener = createOpener(key, sealer.header)
    for (let index = 0; index < 50; index++) {
      const rekey = index % 3 === 0
      const plaintext = bytes(`cell ${index}`)
      expect(opener.open(sealer.seal(plaintext, { rekey }))).toEqual({ plaintext, rekey, final: false })
    }
  })

  test('after a final message, open fails with bad_cell and seal with a TypeError', () => {
    const sealer = createSealer(key)
    const opener = createOpener(key, sealer.header)
    const last = sealer.seal(bytes('bye'), { final: true })
    expect(opener.open(last)).toEqual({ plaintext: bytes('bye'), rekey: false, final: true })
    expectBadCell(() => opener.open(last))
    expect(() => sealer.seal(bytes('more'))).toThrow(TypeError)
  })

  test('asking for both rekey and final is a TypeError', () => {
    expect(() => createSealer(key).seal(bytes('x'), { rekey: true, final: true })).toThrow(TypeError)
  })

  test('a key that is not 32 bytes, or a header that is not 24, is a RangeError', () => {
    expect(() => createSealer(new Uint8Array(31))).toThrow(RangeError)
    expect(() => createSealer(new Uint8Array(33))).toThrow(RangeError)
    expect(() => createOpener(new Uint8Array(16), new Uint8Array(STREAM_HEADER_BYTES))).toThrow(RangeError)
    expect(() => createOpener(key, new Uint8Array(STREAM_HEADER_BYTES - 1))).toThrow(RangeError)
  })
})
