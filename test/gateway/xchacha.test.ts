import { randomBytes } from 'node:crypto'
import sodium from 'libsodium-wrappers'
import { beforeAll, describe, expect, test } from 'vitest'
import { hchacha20, xchachaOpen, xchachaSeal } from '../../gateway/xchacha.ts'

beforeAll(async () => {
  await sodium.ready
})

describe('XChaCha20-Poly1305 from Node crypto', () => {
  test('HChaCha20 gives the test vector of draft-irtf-cfrg-xchacha section 2.2.1', () => {
    const key = Uint8Array.from({ length: 32 }, (_, i) => i)
    const input = Buffer.from('000000090000004a0000000031415927', 'hex')
    expect(hchacha20(key, input).toString('hex')).toBe(
      '82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc',
    )
  })

  test('seals byte for byte as libsodium does, and each opens what the other sealed', () => {
    for (let i = 0; i < 150; i++) {
      const key = randomBytes(32)
      const nonce = randomBytes(24)
      const plaintext = randomBytes(i * 13)
      const ad = randomBytes(i % 50)
      const ours = xchachaSeal(plaintext, ad, nonce, key)
      const theirs = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, null, nonce, key)
      expect(ours.equals(Buffer.from(theirs))).toBe(true)
      expect(xchachaOpen(theirs, ad, nonce, key).equals(plaintext)).toBe(true)
      expect(
        Buffer.from(sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, ours, ad, nonce, key)),
      ).toEqual(plaintext)
    }
  })

  test('a changed byte of the sealed bytes, the data, the nonce or the key does not open', () => {
    const key = randomBytes(32)
    const nonce = randomBytes(24)
    const ad = Buffer.from('taureau')
    const sealed = xchachaSeal(Buffer.from('a reading'), ad, nonce, key)
    const flipped = (bytes: Uint8Array, at: number) => {
      const copy = Buffer.from(bytes)
      copy[at] = (copy[at] as number) ^ 1
      return copy
    }
    for (let at = 0; at < sealed.length; at++) {
      expect(() => xchachaOpen(flipped(sealed, at), ad, nonce, key)).toThrow(/does not verify/)
    }
    expect(() => xchachaOpen(sealed, flipped(ad, 0), nonce, key)).toThrow(/does not verify/)
    // Both halves of the nonce count: the first 16 bytes make the subkey, the last 8 the inner nonce.
    expect(() => xchachaOpen(sealed, ad, flipped(nonce, 0), key)).toThrow(/does not verify/)
    expect(() => xchachaOpen(sealed, ad, flipped(nonce, 23), key)).toThrow(/does not verify/)
    expect(() => xchachaOpen(sealed, ad, nonce, flipped(key, 31))).toThrow(/does not verify/)
    expect(xchachaOpen(sealed, ad, nonce, key).toString()).toBe('a reading')
  })

  test('wrong sizes are a RangeError', () => {
    const key = randomBytes(32)
    expect(() => xchachaSeal(Buffer.alloc(1), Buffer.alloc(0), randomBytes(12), key)).toThrow(RangeError)
    expect(() => xchachaSeal(Buffer.alloc(1), Buffer.alloc(0), randomBytes(24), randomBytes(16))).toThrow(
      RangeError,
    )
    expect(() => xchachaOpen(Buffer.alloc(15), Buffer.alloc(0), randomBytes(24), key)).toThrow(RangeError)
    expect(() => hchacha20(key, Buffer.alloc(12))).toThrow(RangeError)
  })
})
