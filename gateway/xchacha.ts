// XChaCha20-Poly1305 (IETF), the AEAD of libsodium's crypto_aead_xchacha20poly1305_ietf_*, from
// Node's crypto: HChaCha20 derives a subkey from the key and the nonce's first 16 bytes, then
// ChaCha20-Poly1305 (RFC 8439) seals under that subkey and the nonce's last 8 bytes
// (draft-irtf-cfrg-xchacha). The outbox seals with it on the main thread, which thereby does not
// load libsodium (about 6 MB per thread); what it sealed before opens the same.
import { createCipheriv, createDecipheriv } from 'node:crypto'

export const XCHACHA_KEY_BYTES = 32
export const XCHACHA_NONCE_BYTES = 24
export const XCHACHA_TAG_BYTES = 16

/** "expand 32-byte k": ChaCha20's state words 0-3. */
const SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574] as const
const ZERO_BLOCK = Buffer.alloc(64)

/**
 * HChaCha20 of a 32-byte key and a 16-byte input. OpenSSL's `chacha20` takes a 16-byte IV that
 * fills state words 12-15, which is where HChaCha20 puts its input; a block of its keystream is
 * the 20 rounds' output plus the initial state, so subtracting the initial words 0-3 and 12-15
 * leaves HChaCha20's output.
 */
export function hchacha20(key: Uint8Array, input: Uint8Array): Buffer {
  if (key.length !== XCHACHA_KEY_BYTES || input.length !== 16) {
    throw new RangeError('Cannot run HChaCha20 as it takes a 32-byte key and a 16-byte input')
  }
  const block = createCipheriv('chacha20', key, input).update(ZERO_BLOCK)
  const inputWords = Buffer.from(input.buffer, input.byteOffset, 16)
  const out = Buffer.allocUnsafe(32)
  for (let i = 0; i < 4; i++) {
    out.writeUInt32LE((block.readUInt32LE(4 * i) - (SIGMA[i] as number)) >>> 0, 4 * i)
    out.writeUInt32LE((block.readUInt32LE(48 + 4 * i) - inputWords.readUInt32LE(4 * i)) >>> 0, 16 + 4 * i)
  }
  block.fill(0)
  return out
}

function _check(key: Uint8Array, nonce: Uint8Array): void {
  if (key.length !== XCHACHA_KEY_BYTES)
    throw new RangeError(`Cannot seal or open as the key is not ${XCHACHA_KEY_BYTES} bytes`)
  if (nonce.length !== XCHACHA_NONCE_BYTES) {
    throw new RangeError(`Cannot seal or open as the nonce is not ${XCHACHA_NONCE_BYTES} bytes`)
  }
}

/** The inner cipher: the subkey and the 12-byte nonce (4 zero bytes, then the nonce's last 8). */
function _inner(key: Uint8Array, nonce: Uint8Array): { subkey: Buffer; iv: Buffer } {
  const iv = Buffer.alloc(12)
  iv.set(nonce.subarray(16), 4)
  return { subkey: hchacha20(key, nonce.subarray(0, 16)), iv }
}

/** Seals `plaintext` bound to `ad`: the ciphertext followed by the 16-byte tag. */
export function xchachaSeal(
  plaintext: Uint8Array,
  ad: Uint8Array,
  nonce: Uint8Array,
  key: Uint8Array,
): Buffer {
  _check(key, nonce)
  const { subkey, iv } = _inner(key, nonce)
  try {
    const cipher = createCipheriv('chacha20-poly1305', subkey, iv, { authTagLength: XCHACHA_TAG_BYTES })
    cipher.setAAD(ad, { plaintextLength: plaintext.length })
    return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()])
  } finally {
    subkey.fill(0)
  }
}

/** Opens what {@link xchachaSeal} made; throws if it, `ad`, the nonce or the key differ. */
export function xchachaOpen(sealed: Uint8Array, ad: Uint8Array, nonce: Uint8Array, key: Uint8Array): Buffer {
  _check(key, nonce)
  if (sealed.length < XCHACHA_TAG_BYTES)
    throw new RangeError('Cannot open as the sealed bytes are shorter than a tag')
  const { subkey, iv } = _inner(key, nonce)
  try {
    const cut = sealed.length - XCHACHA_TAG_BYTES
    const decipher = createDecipheriv('chacha20-poly1305', subkey, iv, { authTagLength: XCHACHA_TAG_BYTES })
    decipher.setAuthTag(sealed.subarray(cut))
    decipher.setAAD(ad, { plaintextLength: cut })
    const plaintext = decipher.update(sealed.subarray(0, cut))
    try {
      decipher.final()
    } catch (cause) {
      plaintext.fill(0)
      throw new Error('Cannot open as the seal does not verify', { cause })
    }
    return plaintext
  } finally {
    subkey.fill(0)
  }
}
