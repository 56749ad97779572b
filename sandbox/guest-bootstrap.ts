/**
 * JavaScript evaluated once in every tenant context before any function. It keeps the tenant's
 * compiled functions in a registry and runs one invocation: it builds `ctx` inside the guest, so
 * no host object ever enters the sandbox, buffers the effects, and hands back one JSON string.
 * Effects of a handler that throws are discarded with it.
 */
export const GUEST_BOOTSTRAP = `
'use strict'
const functions = Object.create(null)
// Bytes cross the boundary as { '$taureau:bytes': base64 } inside the JSON (see bytes.ts).
const BYTES = '$taureau:bytes'
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
const decode = (text) => {
  const clean = text.replace(/=+$/, '')
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4))
  let bits = 0
  let value = 0
  let at = 0
  for (let i = 0; i < clean.length; i++) {
    value = (value << 6) | ALPHABET.indexOf(clean[i])
    bits += 6
    if (bits >= 8) {
      bits -= 8
      out[at++] = (value >> bits) & 0xff
    }
  }
  return out
}
const encode = (bytes) => {
  let text = ''
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0)
    text += ALPHABET[(n >> 18) & 63] + ALPHABET[(n >> 12) & 63]
    text += i + 1 < bytes.length ? ALPHABET[(n >> 6) & 63] : '='
    text += i + 2 < bytes.length ? ALPHABET[n & 63] : '='
  }
  return text
}
const revive = (_key, value) =>
  value !== null && typeof value === 'object' && typeof value[BYTES] === 'string' ? decode(value[BYTES]) : value
const replace = (_key, value) => (value instanceof Uint8Array ? { [BYTES]: encode(value) } : value)
let currentTime = 0
// Date.now() is the invocation's time: no clock finer than what the message carries.
Date.now = () => currentTime
globalThis.__taureau = Object.freeze({
  register(key, module) {
    functions[key] = module
  },
  unregister(key) {
    delete functions[key]
  },
  invoke(key, handler, argsJson, infoJson) {
    const module = functions[key]
    const info = JSON.parse(infoJson)
    const publishes = []
    const emits = []
    const logs = []
    const clone = (value) => (value === undefined ? undefined : JSON.parse(JSON.stringify(value, replace)))
    const ctx = Object.freeze({
      tenant: info.tenant,
      name: info.name,
      version: info.version,
      config: Object.freeze(clone(info.config) ?? {}),
      now: () => info.now,
      publish(topic, value, options) {
        publishes.push({ topic: String(topic), value: clone(value), qos: options?.qos ?? 0, retain: options?.retain === true })
      },
      emit(record, options) {
        emits.push({ record: clone(record), stream: options?.stream === undefined ? 'default' : String(options.stream) })
      },
      log(...parts) {
        logs.push(parts.map((part) => (typeof part === 'string' ? part : JSON.stringify(part))).join(' '))
      },
    })
    currentTime = info.now
    const args = JSON.parse(argsJson, revive)
    let value
    try {
      value = module[handler](...args, ctx)
    } catch (error) {
      const message = error instanceof Error ? error.name + ': ' + error.message : 'thrown: ' + String(error)
      return JSON.stringify({ ok: false, error: message, logs })
    }
    return JSON.stringify({ ok: true, value: clone(value), publishes, emits, logs })
  },
})
`
