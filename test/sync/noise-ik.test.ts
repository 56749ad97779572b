import { createRequire } from 'node:module'
import { beforeAll, describe, expect, test } from 'vitest'
import { SyncError } from '../../sync/errors.ts'
import {
  createInitiator,
  createResponder,
  generateKeyPair,
  type KeyPair,
  MESSAGE1_OVERHEAD,
  MESSAGE2_OVERHEAD,
  publicKeyOf,
  sodiumReady,
} from '../../sync/noise-ik.ts'

// noise-handshake (Holepunch, on sodium-universal) is an independent implementation used as the
// oracle. It ships no types, so the slice of it these tests touch is typed here.
interface OracleState {
  initialise(prologue: Uint8Array, remoteStatic?: Uint8Array): void
  send(payload: Uint8Array): Uint8Array
  recv(message: Uint8Array): Uint8Array
  complete: boolean
  /** The ephemeral key pair; preset it to fix the ephemeral key. */
  e: KeyPair | null
  /** The peer's static key, once known. */
  rs: Uint8Array | null
  /** Split()'s outputs: the initiator's tx is the first, the responder's tx the second. */
  tx: Uint8Array | null
  rx: Uint8Array | null
  hash: Uint8Array | null
}
const require = createRequire(import.meta.url)
const Noise = require('noise-handshake') as new (
  pattern: 'IK',
  initiator: boolean,
  staticKeyPair: KeyPair,
) => OracleState
const oracleCurve = require('noise-handshake/dh.js') as { generateKeyPair(): KeyPair }

const prologue = new TextEncoder().encode('taureau uplink v1')
const otherPrologue = new TextEncoder().encode('taureau uplink v2')
const bytes = (text: string) => new TextEncoder().encode(text)
const copyOf = (keyPair: KeyPair): KeyPair => ({
  publicKey: Uint8Array.from(keyPair.publicKey),
  secretKey: Uint8Array.from(keyPair.secretKey),
})

function expectBadHandshake(run: () => unknown): void {
  let thrown: unknown
  try {
    run()
  } catch (error) {
    thrown = error
  }
  expect(thrown).toBeInstanceOf(SyncError)
  expect((thrown as SyncError).code).toBe('bad_handshake')
  expect((thrown as SyncError).message).toMatch(/^Cannot complete the handshake as /)
}

/** A handshake between two of our own objects, with fixed ephemeral keys so messages repeat. */
function ourPair(keys: { initiator: KeyPair; responder: KeyPair; ie: KeyPair; re: KeyPair }) {
  const initiator = createInitiator({
    staticKeyPair: keys.initiator,
    remoteStaticKey: keys.responder.publicKey,
    prologue,
    ephemeralKeyPair: keys.ie,
  })
  const responder = createResponder({ staticKeyPair: keys.responder, prologue, ephemeralKeyPair: keys.re })
  return { initiator, responder }
}

let keys: { initiator: KeyPair; responder: KeyPair; ie: KeyPair; re: KeyPair }
beforeAll(async () => {
  await sodiumReady()
  keys = {
    initiator: generateKeyPair(),
    responder: generateKeyPair(),
    ie: generateKeyPair(),
    re: generateKeyPair(),
  }
})

describe('interoperability with noise-handshake', () => {
  test('our initiator completes a handshake with its responder, with equal keys and hashes', () => {
    const responderStatic = oracleCurve.generateKeyPair()
    const theirs = new Noise('IK', false, responderStatic)
    theirs.initialise(prologue)
    const ours = createInitiator({
      staticKeyPair: keys.initiator,
      remoteStaticKey: responderStatic.publicKey,
      prologue,
    })

    const message1 = ours.writeMessage1(bytes('hello from the gateway'))
    expect(message1.length).toBe(bytes('hello from the gateway').length + MESSAGE1_OVERHEAD)
    expect(Buffer.from(theirs.recv(message1)).toString()).toBe('hello from the gateway')
    expect(theirs.rs).toEqual(Buffer.from(keys.initiator.publicKey))

    const message2 = theirs.send(bytes('welcome'))
    expect(message2.length).toBe(bytes('welcome').length + MESSAGE2_OVERHEAD)
    expect(theirs.complete).toBe(true)
    expect(new TextDecoder().decode(ours.readMessage2(message2))).toBe('welcome')

    const result = ours.result()
    expect(result.sendKey).toEqual(new Uint8Array(theirs.rx!))
    expect(result.receiveKey).toEqual(new Uint8Array(theirs.tx!))
    expect(result.handshakeHash).toEqual(new Uint8Array(theirs.hash!))
    expect(result.handshakeHash.length).toBe(64)
    expect(result.sendKey).not.toEqual(result.receiveKey)
  })

  test('its initiator completes a handshake with our responder, with equal keys and hashes', () => {
    const initiatorStatic = oracleCurve.generateKeyPair()
    const theirs = new Noise('IK', true, initiatorStatic)
    theirs.initialise(prologue, Buffer.from(keys.responder.publicKey))
    const ours = createResponder({ staticKeyPair: keys.responder, prologue })

    const read = ours.readMessage1(theirs.send(bytes('hello from the gateway')))
    expect(new TextDecoder().decode(read.payload)).toBe('hello from the gateway')
    expect(read.remoteStaticKey).toEqual(new Uint8Array(initiatorStatic.publicKey))

    expect(Buffer.from(theirs.recv(ours.writeMessage2(bytes('welcome')))).toString()).toBe('welcome')
    expect(theirs.complete).toBe(true)

    const result = ours.result()
    expect(result.sendKey).toEqual(new Uint8Array(theirs.rx!))
    expect(result.receiveKey).toEqual(new Uint8Array(theirs.tx!))
    expect(result.handshakeHash).toEqual(new Uint8Array(theirs.hash!))
  })

  test('both messages are byte for byte those of noise-handshake given the same keys', () => {
    const ours = ourPair(keys)
    const theirInitiator = new Noise('IK', true, copyOf(keys.initiator))
    theirInitiator.initialise(prologue, Buffer.from(keys.responder.publicKey))
    theirInitiator.e = copyOf(keys.ie)
    const theirResponder = new Noise('IK', false, copyOf(keys.responder))
    theirResponder.initialise(prologue)
    theirResponder.e = copyOf(keys.re)

    const message1 = ours.initiator.writeMessage1(bytes('one'))
    expect(message1).toEqual(new Uint8Array(theirInitiator.send(bytes('one'))))
    ours.responder.readMessage1(message1)
    theirResponder.recv(message1)
    const message2 = ours.responder.writeMessage2(bytes('two'))
    expect(message2).toEqual(new Uint8Array(theirResponder.send(bytes('two'))))
  })

  test('an empty prologue and empty payloads interoperate too', () => {
    const theirs = new Noise('IK', false, copyOf(keys.responder))
    theirs.initialise(new Uint8Array(0))
    const ours = createInitiator({ staticKeyPair: keys.initiator, remoteStaticKey: keys.responder.publicKey })
    expect(theirs.recv(ours.writeMessage1(new Uint8Array(0))).length).toBe(0)
    expect(ours.readMessage2(theirs.send(new Uint8Array(0))).length).toBe(0)
    expect(ours.result().handshakeHash).toEqual(new Uint8Array(theirs.hash!))
  })
})

describe('createInitiator() and createResponder()', () => {
  test('the responder reports the initiator static key and both sides split keys pairwise', () => {
    const { initiator, responder } = ourPair(keys)
    const read = responder.readMessage1(initiator.writeMessage1(bytes('hi')))
    expect(read.remoteStaticKey).toEqual(keys.initiator.publicKey)
    expect(initiator.readMessage2(responder.writeMessage2(bytes('ho')))).toEqual(bytes('ho'))
    const initiatorResult = initiator.result()
    const responderResult = responder.result()
    expect(initiatorResult.sendKey).toEqual(responderResult.receiveKey)
    expect(initiatorResult.receiveKey).toEqual(responderResult.sendKey)
    expect(initiatorResult.handshakeHash).toEqual(responderResult.handshakeHash)
    expect(initiatorResult.sendKey.length).toBe(32)
  })

  test('publicKeyOf() derives the public key of a generated key pair', () => {
    expect(publicKeyOf(keys.initiator.secretKey)).toEqual(keys.initiator.publicKey)
  })

  test('the caller’s ephemeral key pair is copied, not wiped', () => {
    const ephemeral = copyOf(keys.ie)
    const { initiator, responder } = ourPair({ ...keys, ie: ephemeral })
    responder.readMessage1(initiator.writeMessage1(bytes('hi')))
    initiator.readMessage2(responder.writeMessage2(bytes('ho')))
    expect(ephemeral).toEqual(keys.ie)
  })

  test('tampering with any bit of message 1 fails at the responder with bad_handshake', () => {
    const message1 = ourPair(keys).initiator.writeMessage1(bytes('payload'))
    for (let index = 0; index < message1.length; index++) {
      // 0x80 of byte 31 is the bit X25519 ignores in `e`: only the hash of `e` catches that one.
      for (const mask of [0x01, 0x80]) {
        const tampered = Uint8Array.from(message1)
        tampered[index]! ^= mask
        expectBadHandshake(() => ourPair(keys).responder.readMessage1(tampered))
      }
    }
  })

  test('tampering with any bit of message 2 fails at the initiator with bad_handshake', () => {
    const honest = ourPair(keys)
    honest.responder.readMessage1(honest.initiator.writeMessage1(bytes('q')))
    const message2 = honest.responder.writeMessage2(bytes('answer'))
    for (let index = 0; index < message2.length; index++) {
      for (const mask of [0x01, 0x80]) {
        const { initiator, responder } = ourPair(keys)
        responder.readMessage1(initiator.writeMessage1(bytes('q')))
        expect(responder.writeMessage2(bytes('answer'))).toEqual(message2)
        const tampered = Uint8Array.from(message2)
        tampered[index]! ^= mask
        expectBadHandshake(() => initiator.readMessage2(tampered))
      }
    }
  })

  test('an initiator holding the wrong responder key fails at the responder', () => {
    const initiator = createInitiator({
      staticKeyPair: keys.initiator,
      remoteStaticKey: generateKeyPair().publicKey,
      prologue,
    })
    const responder = createResponder({ staticKeyPair: keys.responder, prologue })
    expectBadHandshake(() => responder.readMessage1(initiator.writeMessage1(bytes('hi'))))
  })

  test('a different prologue fails at the responder', () => {
    const initiator = createInitiator({
      staticKeyPair: keys.initiator,
      remoteStaticKey: keys.responder.publicKey,
      prologue: otherPrologue,
    })
    const responder = createResponder({ staticKeyPair: keys.responder, prologue })
    expectBadHandshake(() => responder.readMessage1(initiator.writeMessage1(bytes('hi'))))
  })

  test('messages of the wrong length fail with bad_handshake', () => {
    const message1 = ourPair(keys).initiator.writeMessage1(bytes('payload'))
    const lengths1 = [0, 32, MESSAGE1_OVERHEAD - 1, message1.length - 1]
    for (const length of lengths1) {
      expectBadHandshake(() => ourPair(keys).responder.readMessage1(message1.subarray(0, length)))
    }
    expectBadHandshake(() => ourPair(keys).responder.readMessage1(Uint8Array.of(...message1, 0)))
    expectBadHandshake(() => ourPair(keys).responder.readMessage1(new Uint8Array(65536)))

    for (const change of ['empty', 'short', 'truncated', 'extended'] as const) {
      const { initiator, responder } = ourPair(keys)
      responder.readMessage1(initiator.writeMessage1(bytes('q')))
      const message2 = responder.writeMessage2(bytes('answer'))
      const bad = {
        empty: new Uint8Array(0),
        short: message2.subarray(0, MESSAGE2_OVERHEAD - 1),
        truncated: message2.subarray(0, message2.length - 1),
        extended: Uint8Array.of(...message2, 0),
      }[change]
      expectBadHandshake(() => initiator.readMessage2(bad))
    }
  })

  test('a low-order ephemeral key (all-zero DH result) fails with bad_handshake', () => {
    const message1 = ourPair(keys).initiator.writeMessage1(bytes('payload'))
    // u = 0 and u = 1 are points of small order on Curve25519: X25519 with any scalar gives zero.
    for (const lowOrder of [new Uint8Array(32), Uint8Array.of(1, ...new Uint8Array(31))]) {
      const tampered = Uint8Array.from(message1)
      tampered.set(lowOrder, 0)
      expectBadHandshake(() => ourPair(keys).responder.readMessage1(tampered))
    }
    const initiator = createInitiator({
      staticKeyPair: keys.initiator,
      remoteStaticKey: new Uint8Array(32),
    })
    expectBadHandshake(() => initiator.writeMessage1(bytes('hi')))
  })

  test('using either side out of order throws a TypeError', () => {
    const { initiator, responder } = ourPair(keys)
    expect(() => initiator.readMessage2(new Uint8Array(64))).toThrow(TypeError)
    expect(() => initiator.result()).toThrow(TypeError)
    expect(() => responder.writeMessage2(bytes('x'))).toThrow(TypeError)
    expect(() => responder.result()).toThrow(TypeError)

    const message1 = initiator.writeMessage1(bytes('hi'))
    expect(() => initiator.writeMessage1(bytes('hi'))).toThrow(TypeError)
    responder.readMessage1(message1)
    expect(() => responder.readMessage1(message1)).toThrow(TypeError)
    initiator.readMessage2(responder.writeMessage2(bytes('ho')))
    expect(() => responder.writeMessage2(bytes('ho'))).toThrow(TypeError)

    initiator.result()
    expect(() => initiator.result()).toThrow(TypeError)
  })

  test('a side that failed refuses to be used again', () => {
    const responder = ourPair(keys).responder
    expectBadHandshake(() => responder.readMessage1(new Uint8Array(MESSAGE1_OVERHEAD)))
    const message1 = ourPair(keys).initiator.writeMessage1(bytes('hi'))
    expect(() => responder.readMessage1(message1)).toThrow(TypeError)
    expect(() => responder.writeMessage2(bytes('ho'))).toThrow(TypeError)
  })

  test('keys of the wrong length and oversized payloads are a RangeError', () => {
    expect(() => publicKeyOf(new Uint8Array(31))).toThrow(RangeError)
    expect(() =>
      createInitiator({ staticKeyPair: keys.initiator, remoteStaticKey: new Uint8Array(33) }),
    ).toThrow(RangeError)
    expect(() =>
      createResponder({ staticKeyPair: { publicKey: new Uint8Array(32), secretKey: new Uint8Array(16) } }),
    ).toThrow(RangeError)
    const { initiator } = ourPair(keys)
    expect(() => initiator.writeMessage1(new Uint8Array(65535 - MESSAGE1_OVERHEAD + 1))).toThrow(RangeError)
    expect(initiator.writeMessage1(new Uint8Array(65535 - MESSAGE1_OVERHEAD)).length).toBe(65535)
  })
})
