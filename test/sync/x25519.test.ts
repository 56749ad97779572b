import { randomBytes } from 'node:crypto'
import sodium from 'libsodium-wrappers'
import { beforeAll, expect, test } from 'vitest'
import { generateKeyPair, publicKeyOf } from '../../sync/x25519.ts'

beforeAll(async () => {
  await sodium.ready
})

test('public keys are what libsodium derives, for any 32 bytes as the secret (clamped alike)', () => {
  const secrets = [
    new Uint8Array(32).fill(0xff),
    new Uint8Array(32),
    ...Array.from({ length: 50 }, () => randomBytes(32)),
  ]
  for (const secret of secrets) {
    expect(Buffer.from(publicKeyOf(secret))).toEqual(Buffer.from(sodium.crypto_scalarmult_base(secret)))
  }
})

test('generated pairs agree on a shared secret with libsodium', () => {
  const ours = generateKeyPair()
  const theirs = sodium.crypto_box_keypair()
  expect(ours.secretKey).toHaveLength(32)
  expect(Buffer.from(sodium.crypto_scalarmult(ours.secretKey, theirs.publicKey))).toEqual(
    Buffer.from(sodium.crypto_scalarmult(theirs.privateKey, ours.publicKey)),
  )
  expect(Buffer.from(generateKeyPair().secretKey).equals(Buffer.from(ours.secretKey))).toBe(false)
})

test('a secret key that is not 32 bytes is a RangeError', () => {
  expect(() => publicKeyOf(new Uint8Array(31))).toThrow(/31 bytes, not 32/)
})
