/**
 * One direction of the uplink's transport: libsodium's `crypto_secretstream_xchacha20poly1305`
 * (https://doc.libsodium.org/secret-key_cryptography/secretstream), keyed with one of the keys the
 * Noise handshake splits. The stream numbers its messages itself, so a reordered, replayed, dropped
 * or truncated cell fails authentication without any counter on the wire.
 */
import sodium from 'libsodium-wrappers'
import { SyncError } from './errors.ts'

/** Bytes of the header the sealer makes and the opener needs (`..._HEADERBYTES`). */
export const STREAM_HEADER_BYTES = 24
/** Bytes each sealed message adds to its plaintext: one encrypted tag byte and a 16-byte MAC (`..._ABYTES`). */
export const STREAM_OVERHEAD_BYTES = 17
const STREAM_KEY_BYTES = 32

/** Options of {@link Sealer.seal}. */
export interface SealOptions {
  /** Both sides derive a new key after this message, so a later key leak cannot read earlier cells. */
  rekey?: boolean
  /** This is the last message; the opener refuses anything after it. */
  final?: boolean
}

/** The sending end of one stream. */
export interface Sealer {
  /** The stream's random header; send it to the opener once, before the first message. */
  readonly header: Uint8Array
  /** Encrypts the next message; its ciphertext is `plaintext.length + STREAM_OVERHEAD_BYTES` long. */
  seal(plaintext: Uint8Array, options?: SealOptions): Uint8Array
}

/** What {@link Opener.open} returns: the plaintext and the tag's meaning. */
export interface OpenedMessage {
  plaintext: Uint8Array
  /** The sender rekeyed after this message; libsodium has already done the same on this side. */
  rekey: boolean
  /** The sender ended the stream with this message. */
  final: boolean
}

/** The receiving end of one stream. */
export interface Opener {
  /** Decrypts the next message; throws `SyncError('bad_cell')` if it is not the next authentic one. */
  open(ciphertext: Uint8Array): OpenedMessage
}

/** Creates the sending end of a stream with a 32-byte key. libsodium must be ready (`sodiumReady()`). */
export function createSealer(key: Uint8Array): Sealer {
  _assertReady()
  _assertKey(key)
  const { state, header } = sodium.crypto_secretstream_xchacha20poly1305_init_push(key)
  let ended = false

  return {
    header,
    seal(plaintext, options = {}) {
      if (ended) throw new TypeError('Cannot seal the message as the stream has ended')
      if (options.rekey === true && options.final === true) {
        throw new TypeError('Cannot seal the message as it asks for both rekey and final')
      }
      let tag = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
      if (options.rekey === true) tag = sodium.crypto_secretstream_xchacha20poly1305_TAG_REKEY
      if (options.final === true) {
        tag = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
        ended = true
      }
      return sodium.crypto_secretstream_xchacha20poly1305_push(state, plaintext, null, tag)
    },
  }
}

/**
 * Creates the receiving end of a stream from the key and the sealer's header. Once a message fails
 * or the final one has been read, every later `open` fails too: the stream cannot resynchronise, and
 * the session must close.
 */
export function createOpener(key: Uint8Array, header: Uint8Array): Opener {
  _assertReady()
  _assertKey(key)
  if (!(header instanceof Uint8Array) || header.length !== STREAM_HEADER_BYTES) {
    throw new RangeError(`Cannot open the stream as its header is not ${STREAM_HEADER_BYTES} bytes`)
  }
  const state = sodium.crypto_secretstream_xchacha20poly1305_init_pull(header, key)
  let broken: string | undefined

  return {
    open(ciphertext) {
      if (broken !== undefined) throw new SyncError('bad_cell', `Cannot open the cell as ${broken}`)
      if (ciphertext.length < STREAM_OVERHEAD_BYTES) {
        broken = 'an earlier cell was too short'
        throw new SyncError(
          'bad_cell',
          `Cannot open the cell as it has ${ciphertext.length} bytes, under ${STREAM_OVERHEAD_BYTES}`,
        )
      }
      let opened: { message: Uint8Array; tag: number } | false
      try {
        opened = sodium.crypto_secretstream_xchacha20poly1305_pull(state, ciphertext, null)
      } catch {
        opened = false
      }
      // libsodium-wrappers returns false on a bad MAC rather than throwing; both mean the same.
      if (opened === false) {
        broken = 'an earlier cell failed authentication'
        throw new SyncError('bad_cell', 'Cannot open the cell as it failed authentication')
      }
      const final = opened.tag === sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
      if (final) broken = 'the stream has ended'
      return {
        plaintext: opened.message,
        rekey: opened.tag === sodium.crypto_secretstream_xchacha20poly1305_TAG_REKEY,
        final,
      }
    },
  }
}

function _assertReady(): void {
  if (typeof sodium.crypto_secretstream_xchacha20poly1305_init_push !== 'function') {
    throw new TypeError('Cannot create the stream as libsodium is not ready: await sodiumReady() first')
  }
}

function _assertKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== STREAM_KEY_BYTES) {
    const actual = key instanceof Uint8Array ? `${key.length} bytes` : typeof key
    throw new RangeError(`Cannot create the stream as its key has ${actual}, not ${STREAM_KEY_BYTES}`)
  }
}
