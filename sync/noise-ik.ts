/**
 * The uplink's handshake: Noise `IK` with X25519, ChaCha20-Poly1305 and BLAKE2b, written against the
 * Noise Protocol Framework, revision 34 (https://noiseprotocol.org/noise.html), on libsodium only.
 * Section numbers in the comments refer to that document.
 *
 *   <- s
 *   ...
 *   -> e, es, s, ss
 *   <- e, ee, se
 *
 * The gateway is the initiator and knows the cloud's static key in advance; the cloud learns the
 * gateway's static key from message 1 and decides whether it is registered.
 */
import sodium from 'libsodium-wrappers'
import { SyncError } from './errors.ts'
import { generateKeyPair, type KeyPair } from './x25519.ts'

export { generateKeyPair, type KeyPair, publicKeyOf } from './x25519.ts'

/** What a completed handshake yields: one transport key per direction and the handshake hash. */
export interface HandshakeResult {
  /** 32-byte key for what this side sends. */
  sendKey: Uint8Array
  /** 32-byte key for what this side receives. */
  receiveKey: Uint8Array
  /** The final `h` (64 bytes), the same on both sides; binds a session to this handshake (section 11.2). */
  handshakeHash: Uint8Array
}

/** Options of {@link createInitiator}. */
export interface InitiatorOptions {
  /** The gateway's long-term key pair; never wiped, the caller owns it. */
  staticKeyPair: KeyPair
  /** The responder's static public key, known in advance (the `<- s` pre-message). */
  remoteStaticKey: Uint8Array
  /** Bytes both sides must agree on, mixed into `h` before any message (section 6). */
  prologue?: Uint8Array
  /** A fixed ephemeral key pair, for tests only; a fresh one is generated otherwise. */
  ephemeralKeyPair?: KeyPair
}

/** Options of {@link createResponder}. */
export interface ResponderOptions {
  /** The cloud's long-term key pair; never wiped, the caller owns it. */
  staticKeyPair: KeyPair
  /** Bytes both sides must agree on, mixed into `h` before any message (section 6). */
  prologue?: Uint8Array
  /** A fixed ephemeral key pair, for tests only; a fresh one is generated otherwise. */
  ephemeralKeyPair?: KeyPair
}

/** The initiator's side of one handshake. Use each method once, in order. */
export interface Initiator {
  /** Writes message 1: `e(32) || enc(s)(48) || enc(payload)(payload + 16)`. */
  writeMessage1(payload: Uint8Array): Uint8Array
  /** Reads message 2 and returns its payload; throws `SyncError('bad_handshake')` if it is not valid. */
  readMessage2(message: Uint8Array): Uint8Array
  /** Hands over the transport keys once: the initiator sends with Split()'s first key. */
  result(): HandshakeResult
}

/** The responder's side of one handshake. Use each method once, in order. */
export interface Responder {
  /** Reads message 1; throws `SyncError('bad_handshake')` if it is not valid. */
  readMessage1(message: Uint8Array): { payload: Uint8Array; remoteStaticKey: Uint8Array }
  /** Writes message 2: `e(32) || enc(payload)(payload + 16)`. */
  writeMessage2(payload: Uint8Array): Uint8Array
  /** Hands over the transport keys once: the responder sends with Split()'s second key. */
  result(): HandshakeResult
}

const PROTOCOL_NAME = 'Noise_IK_25519_ChaChaPoly_BLAKE2b'
const HASHLEN = 64
/** BLAKE2b's block length, which HMAC pads its key to (section 4.3). */
const BLOCKLEN = 128
const DHLEN = 32
const KEYLEN = 32
const TAGLEN = 16
/** Section 3: no Noise message is longer than 65535 bytes. */
const MAX_MESSAGE_BYTES = 65535

/** Bytes message 1 adds to its payload: the ephemeral key, the encrypted static key and a tag. */
export const MESSAGE1_OVERHEAD = DHLEN + DHLEN + TAGLEN + TAGLEN
/** Bytes message 2 adds to its payload: the ephemeral key and a tag. */
export const MESSAGE2_OVERHEAD = DHLEN + TAGLEN

/**
 * Waits until libsodium's WebAssembly is loaded. Everything else in this module, and in
 * `secret-stream.ts`, is synchronous and must not run before this resolves.
 */
export async function sodiumReady(): Promise<void> {
  await sodium.ready
}

/** Creates the initiator (gateway) side of one `IK` handshake. */
export function createInitiator(options: InitiatorOptions): Initiator {
  _assertReady()
  _assertKeyPair(options.staticKeyPair, 'static')
  _assertLength(options.remoteStaticKey, DHLEN, "the responder's static key")
  const staticKeyPair = options.staticKeyPair
  const remoteStaticKey = Uint8Array.from(options.remoteStaticKey)
  const ephemeral = _ephemeral(options.ephemeralKeyPair)
  const state = new _SymmetricState(options.prologue ?? new Uint8Array(0))
  // The pre-message `<- s` (section 7.1): both sides hash the responder's static key first.
  state.mixHash(remoteStaticKey)
  let phase: 'start' | 'sent1' | 'done' | 'taken' | 'failed' = 'start'
  let handshakeResult: HandshakeResult | undefined

  return {
    writeMessage1(payload) {
      _assertPhase(phase, 'start', 'write message 1')
      _assertPayload(payload, MESSAGE1_OVERHEAD)
      try {
        // -> e, es, s, ss
        state.mixHash(ephemeral.publicKey)
        state.mixKey(_dh(ephemeral.secretKey, remoteStaticKey))
        const encryptedStatic = state.encryptAndHash(staticKeyPair.publicKey)
        state.mixKey(_dh(staticKeyPair.secretKey, remoteStaticKey))
        const encryptedPayload = state.encryptAndHash(payload)
        phase = 'sent1'
        return _concat(ephemeral.publicKey, encryptedStatic, encryptedPayload)
      } catch (error) {
        // Only an invalid responder key (a low-order point) can fail here: not the network's fault.
        phase = 'failed'
        _wipe(ephemeral.secretKey)
        state.wipe()
        throw error
      }
    },

    readMessage2(message) {
      _assertPhase(phase, 'sent1', 'read message 2')
      try {
        if (message.length < MESSAGE2_OVERHEAD || message.length > MAX_MESSAGE_BYTES) throw _badHandshake(2)
        // <- e, ee, se
        const remoteEphemeral = message.subarray(0, DHLEN)
        state.mixHash(remoteEphemeral)
        state.mixKey(_dh(ephemeral.secretKey, remoteEphemeral))
        state.mixKey(_dh(staticKeyPair.secretKey, remoteEphemeral))
        const payload = state.decryptAndHash(message.subarray(DHLEN), 2)
        const [sendKey, receiveKey] = state.split()
        handshakeResult = { sendKey, receiveKey, handshakeHash: state.handshakeHash() }
        phase = 'done'
        return payload
      } catch (error) {
        phase = 'failed'
        throw error
      } finally {
        _wipe(ephemeral.secretKey)
        state.wipe()
      }
    },

    result() {
      _assertPhase(phase, 'done', 'take the handshake result')
      phase = 'taken'
      const taken = handshakeResult as HandshakeResult
      handshakeResult = undefined
      return taken
    },
  }
}

/** Creates the responder (cloud) side of one `IK` handshake. */
export function createResponder(options: ResponderOptions): Responder {
  _assertReady()
  _assertKeyPair(options.staticKeyPair, 'static')
  const staticKeyPair = options.staticKeyPair
  const ephemeral = _ephemeral(options.ephemeralKeyPair)
  const state = new _SymmetricState(options.prologue ?? new Uint8Array(0))
  state.mixHash(staticKeyPair.publicKey)
  let phase: 'start' | 'read1' | 'done' | 'taken' | 'failed' = 'start'
  let remoteStaticKey: Uint8Array | undefined
  let remoteEphemeral: Uint8Array | undefined
  let handshakeResult: HandshakeResult | undefined

  const fail = (error: unknown): never => {
    phase = 'failed'
    _wipe(ephemeral.secretKey)
    state.wipe()
    throw error
  }

  return {
    readMessage1(message) {
      _assertPhase(phase, 'start', 'read message 1')
      try {
        if (message.length < MESSAGE1_OVERHEAD || message.length > MAX_MESSAGE_BYTES) throw _badHandshake(1)
        // -> e, es, s, ss
        remoteEphemeral = Uint8Array.from(message.subarray(0, DHLEN))
        state.mixHash(remoteEphemeral)
        state.mixKey(_dh(staticKeyPair.secretKey, remoteEphemeral))
        const initiatorStatic = state.decryptAndHash(message.subarray(DHLEN, 2 * DHLEN + TAGLEN), 1)
        state.mixKey(_dh(staticKeyPair.secretKey, initiatorStatic))
        const payload = state.decryptAndHash(message.subarray(2 * DHLEN + TAGLEN), 1)
        remoteStaticKey = initiatorStatic
        phase = 'read1'
        return { payload, remoteStaticKey: Uint8Array.from(initiatorStatic) }
      } catch (error) {
        return fail(error)
      }
    },

    writeMessage2(payload) {
      _assertPhase(phase, 'read1', 'write message 2')
      _assertPayload(payload, MESSAGE2_OVERHEAD)
      try {
        // <- e, ee, se
        state.mixHash(ephemeral.publicKey)
        state.mixKey(_dh(ephemeral.secretKey, remoteEphemeral as Uint8Array))
        state.mixKey(_dh(ephemeral.secretKey, remoteStaticKey as Uint8Array))
        const encryptedPayload = state.encryptAndHash(payload)
        const [receiveKey, sendKey] = state.split()
        handshakeResult = { sendKey, receiveKey, handshakeHash: state.handshakeHash() }
        phase = 'done'
        _wipe(ephemeral.secretKey)
        state.wipe()
        return _concat(ephemeral.publicKey, encryptedPayload)
      } catch (error) {
        return fail(error)
      }
    },

    result() {
      _assertPhase(phase, 'done', 'take the handshake result')
      phase = 'taken'
      const taken = handshakeResult as HandshakeResult
      handshakeResult = undefined
      return taken
    },
  }
}

/**
 * The SymmetricState object of section 5.2 with its CipherState (section 5.1) inlined, since `IK`
 * never uses a CipherState on its own before Split().
 */
class _SymmetricState {
  #chainingKey: Uint8Array
  #hash: Uint8Array
  #cipherKey: Uint8Array | undefined
  #nonce = 0

  /** InitializeSymmetric(protocol_name) then MixHash(prologue), section 5.3. */
  constructor(prologue: Uint8Array) {
    const name = sodium.from_string(PROTOCOL_NAME)
    // The name fits in HASHLEN bytes, so it is zero-padded rather than hashed (section 5.2).
    this.#hash = new Uint8Array(HASHLEN)
    if (name.length <= HASHLEN) this.#hash.set(name)
    else this.#hash = _hash(name)
    this.#chainingKey = Uint8Array.from(this.#hash)
    this.mixHash(prologue)
  }

  mixHash(data: Uint8Array): void {
    this.#hash = _hash(_concat(this.#hash, data))
  }

  /** MixKey(ikm): a new chaining key and a new cipher key, nonce back to zero. Wipes `ikm`. */
  mixKey(inputKeyMaterial: Uint8Array): void {
    const [chainingKey, tempKey] = _hkdf(this.#chainingKey, inputKeyMaterial)
    _wipe(inputKeyMaterial, this.#chainingKey, this.#cipherKey)
    this.#chainingKey = chainingKey
    // HASHLEN is 64, so the 64-byte output is truncated to the cipher's 32 (section 5.2).
    this.#cipherKey = tempKey.slice(0, KEYLEN)
    _wipe(tempKey)
    this.#nonce = 0
  }

  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    // Every EncryptAndHash of `IK` follows a MixKey, so the "no key: plaintext passes" case never occurs.
    const ciphertext = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
      plaintext,
      this.#hash,
      null,
      this.#nextNonce(),
      this.#key(),
    )
    this.mixHash(ciphertext)
    return ciphertext
  }

  decryptAndHash(ciphertext: Uint8Array, messageNumber: 1 | 2): Uint8Array {
    if (ciphertext.length < TAGLEN) throw _badHandshake(messageNumber)
    let plaintext: Uint8Array
    try {
      plaintext = sodium.crypto_aead_chacha20poly1305_ietf_decrypt(
        null,
        ciphertext,
        this.#hash,
        this.#nextNonce(),
        this.#key(),
      )
    } catch {
      // libsodium's message is dropped on purpose: the peer learns nothing about which check failed.
      throw _badHandshake(messageNumber)
    }
    this.mixHash(ciphertext)
    return plaintext
  }

  /** Split(), section 5.2: two 32-byte keys, the first for initiator to responder. */
  split(): [Uint8Array, Uint8Array] {
    const [first, second] = _hkdf(this.#chainingKey, new Uint8Array(0))
    const keys: [Uint8Array, Uint8Array] = [first.slice(0, KEYLEN), second.slice(0, KEYLEN)]
    _wipe(first, second)
    return keys
  }

  handshakeHash(): Uint8Array {
    return Uint8Array.from(this.#hash)
  }

  /** Zeroes the secrets; the object is unusable afterwards. `h` is not secret and is kept. */
  wipe(): void {
    _wipe(this.#chainingKey, this.#cipherKey)
    this.#cipherKey = undefined
  }

  #key(): Uint8Array {
    if (this.#cipherKey === undefined) throw new TypeError('Cannot use the cipher as it has no key')
    return this.#cipherKey
  }

  /** Section 5.1's ChaChaPoly nonce: 4 zero bytes, then the 64-bit counter little-endian. */
  #nextNonce(): Uint8Array {
    const nonce = new Uint8Array(12)
    new DataView(nonce.buffer).setBigUint64(4, BigInt(this.#nonce), true)
    this.#nonce += 1
    return nonce
  }
}

/** HASH(), section 4.3: BLAKE2b with a 64-byte output. */
function _hash(data: Uint8Array): Uint8Array {
  return sodium.crypto_generichash(HASHLEN, data, null)
}

/** HMAC-BLAKE2b per RFC 2104, the only HMAC Noise uses (section 4.3). */
function _hmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  // Keys longer than a block are hashed first (RFC 2104); ours are always HASHLEN bytes.
  const blockKey = new Uint8Array(BLOCKLEN)
  blockKey.set(key.length > BLOCKLEN ? _hash(key) : key)
  const innerPad = blockKey.map((byte) => byte ^ 0x36)
  const outerPad = blockKey.map((byte) => byte ^ 0x5c)
  const innerInput = _concat(innerPad, data)
  const inner = _hash(innerInput)
  const outerInput = _concat(outerPad, inner)
  const mac = _hash(outerInput)
  _wipe(blockKey, innerPad, outerPad, innerInput, inner, outerInput)
  return mac
}

/** HKDF(chaining_key, input_key_material, 2), section 4.3. `IK` never needs the third output. */
function _hkdf(chainingKey: Uint8Array, inputKeyMaterial: Uint8Array): [Uint8Array, Uint8Array] {
  const tempKey = _hmac(chainingKey, inputKeyMaterial)
  const output1 = _hmac(tempKey, Uint8Array.of(0x01))
  const output2Input = _concat(output1, Uint8Array.of(0x02))
  const output2 = _hmac(tempKey, output2Input)
  _wipe(tempKey, output2Input)
  return [output1, output2]
}

/**
 * DH(), section 4.1, with the all-zero check of section 12.1's note on invalid public keys:
 * a low-order point would make the result public, so the handshake is refused. libsodium
 * already throws on an all-zero result; the explicit check keeps us safe if it ever stops.
 */
function _dh(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  let shared: Uint8Array
  try {
    shared = sodium.crypto_scalarmult(secretKey, publicKey)
  } catch {
    throw _badHandshake()
  }
  if (sodium.is_zero(shared)) throw _badHandshake()
  return shared
}

function _badHandshake(messageNumber?: 1 | 2): SyncError {
  const what = messageNumber === undefined ? 'a key' : `message ${messageNumber}`
  return new SyncError(
    'bad_handshake',
    `Cannot complete the handshake as ${what} is malformed or not authentic`,
  )
}

function _ephemeral(given: KeyPair | undefined): KeyPair {
  if (given === undefined) return generateKeyPair()
  _assertKeyPair(given, 'ephemeral')
  // Copied, because the handshake wipes its ephemeral secret and the caller's buffer is not ours.
  return { publicKey: Uint8Array.from(given.publicKey), secretKey: Uint8Array.from(given.secretKey) }
}

function _assertReady(): void {
  if (typeof sodium.crypto_scalarmult !== 'function') {
    throw new TypeError('Cannot use the handshake as libsodium is not ready: await sodiumReady() first')
  }
}

function _assertPhase(phase: string, expected: string, action: string): void {
  if (phase !== expected) {
    throw new TypeError(`Cannot ${action} as the handshake is in state '${phase}', not '${expected}'`)
  }
}

function _assertLength(bytes: Uint8Array, expectedBytes: number, what: string): void {
  if (!(bytes instanceof Uint8Array) || bytes.length !== expectedBytes) {
    const actual = bytes instanceof Uint8Array ? `${bytes.length} bytes` : typeof bytes
    throw new RangeError(`Cannot use ${what} as it has ${actual}, not ${expectedBytes} bytes`)
  }
}

function _assertKeyPair(keyPair: KeyPair, kind: 'static' | 'ephemeral'): void {
  _assertLength(keyPair.publicKey, DHLEN, `the ${kind} public key`)
  _assertLength(keyPair.secretKey, DHLEN, `the ${kind} secret key`)
}

function _assertPayload(payload: Uint8Array, overheadBytes: number): void {
  if (!(payload instanceof Uint8Array))
    throw new TypeError('Cannot write the message as its payload is not bytes')
  if (payload.length + overheadBytes > MAX_MESSAGE_BYTES) {
    throw new RangeError(
      `Cannot write the message as its payload has ${payload.length} bytes, over ${MAX_MESSAGE_BYTES - overheadBytes}`,
    )
  }
}

function _concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((total, part) => total + part.length, 0))
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}

function _wipe(...buffers: (Uint8Array | undefined)[]): void {
  for (const buffer of buffers) if (buffer !== undefined) sodium.memzero(buffer)
}
