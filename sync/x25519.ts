// X25519 key pairs from Node's crypto (OpenSSL). Apart from the handshake so that loading a data
// dir's identity does not load libsodium: each thread that imports it holds about 6 MB more.
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto'

/** An X25519 key pair: 32-byte public key and 32-byte secret scalar. */
export interface KeyPair {
  publicKey: Uint8Array
  secretKey: Uint8Array
}

/** Bytes of an X25519 key, public or secret. */
export const X25519_KEY_BYTES = 32

// An X25519 private key in PKCS #8 (RFC 8410) is this DER prefix followed by its 32 bytes.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex')

/** Generates a fresh X25519 key pair from the OS CSPRNG. */
export function generateKeyPair(): KeyPair {
  const secretKey = new Uint8Array(randomBytes(X25519_KEY_BYTES))
  return { publicKey: publicKeyOf(secretKey), secretKey }
}

/**
 * Derives the X25519 public key of a 32-byte secret key, e.g. one loaded from a file. Any 32
 * bytes are a secret key: the scalar is clamped, as libsodium's `crypto_scalarmult_base` does.
 */
export function publicKeyOf(secretKey: Uint8Array): Uint8Array {
  if (!(secretKey instanceof Uint8Array) || secretKey.length !== X25519_KEY_BYTES) {
    const actual = secretKey instanceof Uint8Array ? `${secretKey.length} bytes` : typeof secretKey
    throw new RangeError(`Cannot use the secret key as it has ${actual}, not ${X25519_KEY_BYTES} bytes`)
  }
  const der = Buffer.concat([PKCS8_PREFIX, secretKey])
  try {
    const jwk = createPublicKey(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })).export({
      format: 'jwk',
    })
    return new Uint8Array(Buffer.from(jwk.x as string, 'base64url'))
  } finally {
    der.fill(0)
  }
}
