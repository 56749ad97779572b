/**
 * JavaScript evaluated once in every tenant context before any function. It keeps the tenant's
 * compiled functions in a registry and runs one invocation: it builds `ctx` inside the guest, so
 * no host object ever enters the sandbox, buffers the effects, and hands back one JSON string.
 * Effects of a handler that throws are discarded with it.
 */
export const GUEST_BOOTSTRAP = `
'use strict'
const functions = Object.create(null)
const realNow = Date.now
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
    const clone = (value) => (value === undefined ? undefined : JSON.parse(JSON.stringify(value)))
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
    const args = JSON.parse(argsJson)
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
void realNow
`
