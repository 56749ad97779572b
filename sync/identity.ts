import { randomBytes } from 'node:crypto'
import {
  closeSync,
  fsyncSync,
  linkSync,
  openSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs'
import { dirname, join } from 'node:path'
import { generateKeyPair, type KeyPair, publicKeyOf } from './x25519.ts'

/** The file in a data dir (gateway or cloud) that holds its static X25519 secret key, base64, mode 0600. */
export const IDENTITY_FILE = 'identity.key'
const KEY_BYTES = 32

/** A key as the CLI and config show it: standard base64 of its 32 bytes. */
export function encodeKey(key: Uint8Array): string {
  return Buffer.from(key).toString('base64')
}

/**
 * Reads a public key given by a user (base64 of 32 bytes, standard or URL-safe alphabet).
 * `what` names it in the error, e.g. "--cloud-key".
 */
export function decodeKey(text: string, what: string): Uint8Array {
  const trimmed = text.trim()
  const standard = trimmed.replace(/-/g, '+').replace(/_/g, '/')
  const padded = standard.padEnd(Math.ceil(standard.length / 4) * 4, '=')
  const key = Buffer.from(padded, 'base64')
  // Node's decoder skips what it cannot read; encoding again catches that and stray bits.
  if (trimmed === '' || !/^[A-Za-z0-9+/]+={0,2}$/.test(padded) || key.toString('base64') !== padded) {
    throw new RangeError(`Cannot use ${what} '${trimmed.slice(0, 60)}' as it is not base64`)
  }
  if (key.length !== KEY_BYTES) {
    throw new RangeError(`Cannot use ${what} as it decodes to ${key.length} bytes, not ${KEY_BYTES}`)
  }
  return new Uint8Array(key)
}

/**
 * The data dir's static key pair, made on first use. The file is written to a temp name and
 * linked into place, so two processes starting at once agree on one key and a crash never leaves
 * half a key under the real name.
 */
export async function loadIdentity(dataDir: string): Promise<KeyPair> {
  const file = join(dataDir, IDENTITY_FILE)
  if (!fileExists(file)) createSecretFile(file, `${encodeKey(generateKeyPair().secretKey)}\n`)
  const stat = statSync(file)
  if (!stat.isFile()) throw new Error(`Cannot load the identity key '${file}' as it is not a regular file`)
  if ((stat.mode & 0o077) !== 0) {
    throw new Error(
      `Cannot load the identity key '${file}' as others can read it (mode ${(stat.mode & 0o777).toString(8)}; run chmod 600)`,
    )
  }
  let secretKey: Uint8Array
  try {
    secretKey = decodeKey(readFileSync(file, 'utf8'), `the identity key '${file}'`)
  } catch (cause) {
    throw new Error(`Cannot load the identity key '${file}' as ${(cause as Error).message}`, { cause })
  }
  return { publicKey: publicKeyOf(secretKey), secretKey }
}

/** Whether `file` exists; other errors than ENOENT are thrown. */
export function fileExists(file: string): boolean {
  try {
    statSync(file)
    return true
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw error
  }
}

/**
 * Writes a secret (a key) to `file`, mode 0600, unless it exists: to a temp file (fsynced) that is
 * then linked into place, and the directory fsynced. `link` fails when the name exists, so two
 * processes starting at once agree on one secret, and a crash never leaves half of one.
 */
export function createSecretFile(file: string, contents: string | Uint8Array): void {
  const temp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
  const fd = openSync(temp, 'wx', 0o600)
  try {
    try {
      writeSync(fd, typeof contents === 'string' ? Buffer.from(contents) : contents)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    try {
      linkSync(temp, file)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
  } finally {
    unlinkSync(temp)
  }
  const dir = openSync(dirname(file), 'r')
  try {
    fsyncSync(dir)
  } finally {
    closeSync(dir)
  }
}
