/**
 * JavaScript evaluated in every function's QuickJS context before the function itself. It
 * evaluates to a factory; the host calls it once with the sandbox's limits and the host's state
 * function, and keeps the returned object, so nothing of it is reachable from the global object.
 * It runs one invocation at a time: it builds `ctx` inside the guest (no host object enters the
 * sandbox but that function), buffers the effects as JSON text, and hands back one JSON string per
 * invocation.
 *
 * `ctx.state` is the one way out during a call: its methods call the host's state function
 * synchronously (a read may need committed state, which only the host has). The function is a
 * parameter of the factory, so only the closures below hold it: it is on no object the function
 * can reach, and `ctx.state`'s methods are frozen. It takes primitives only, never runs guest code,
 * checks every argument itself, and keeps the call's writes on the host side: whatever a function
 * does, it can neither forge a write nor name another namespace than the ones it asked for.
 *
 * The function's module is evaluated after this, in the same realm, and may replace any global or
 * prototype method. So everything used after setup is captured here first (`JSON.parse`,
 * `Reflect.apply`, ...), new properties are defined rather than assigned (an assignment would run a
 * setter planted on `Object.prototype` or `Array.prototype`), and the records handed to the host
 * are built as strings. Tampering can then only change what the function itself computes, never
 * the shape of `ctx` or of the outcome; the host checks every outcome regardless.
 *
 * One kind of tampering cannot be countered that way: QuickJS's own `JSON.stringify` pushes onto
 * an internal array with an ordinary assignment, so a setter planted on `Array.prototype[0]` or
 * `Object.prototype[0]` would break every serialization in the realm, ctx's included. So
 * `Object.prototype` and `Array.prototype` are made non-extensible: a function may still replace
 * their methods (the bootstrap does not use them) but cannot add properties to them, which also
 * rules out planted `toJSON`, `then` or index accessors. Adding methods to these prototypes is
 * rare in function code, and fails with a TypeError that says so.
 *
 * Other choices:
 * - `Date.now()` and `new Date()` give the invocation's time (the message's), so a function has no
 *   clock finer than what the message carries; both are locked so a function cannot swap them.
 * - `Math.random()` is sfc32 (Doty-Humphrey's Small Fast Counter), seeded with 128 bits the host
 *   draws from its CSPRNG for every runtime, and locked. QuickJS seeds its own generator with the
 *   wall clock in microseconds when a context is made, so two of its outputs would tell a function
 *   the host's time; the original is replaced before the function's code runs, so it is unreachable.
 * - `WeakRef` and `FinalizationRegistry` are removed: they make results depend on when the
 *   garbage collector runs, and finalizers would run as promise jobs, which never run here.
 * - Errors are described as `Name: message`, other thrown values as `a non-Error value: ...`, at
 *   most 1000 characters, never with a stack.
 */
export const GUEST_BOOTSTRAP = `
(function bootstrap(limitsJson, hostState) {
  'use strict'
  const G = globalThis
  const parse = JSON.parse
  const stringify = JSON.stringify
  const freeze = Object.freeze
  const isFrozen = Object.isFrozen
  const hasOwn = Object.hasOwn
  const defineProperty = Object.defineProperty
  const getPrototypeOf = Object.getPrototypeOf
  const getOwnPropertyDescriptor = Object.getOwnPropertyDescriptor
  const apply = Reflect.apply
  const construct = Reflect.construct
  const ownKeys = Reflect.ownKeys
  const toText = String
  const ErrorClass = Error
  const TypeErrorClass = TypeError
  const objectToString = Object.prototype.toString
  const charCodeAt = String.prototype.charCodeAt
  const fromCharCode = String.fromCharCode
  const stringSlice = String.prototype.slice
  const stringIncludes = String.prototype.includes
  const Bytes = Uint8Array
  const TypedArrayPrototype = getPrototypeOf(Uint8Array.prototype)
  // Internal-slot checks that a function cannot fake or redefine.
  const typedArrayTag = getOwnPropertyDescriptor(TypedArrayPrototype, Symbol.toStringTag).get
  const typedArrayLength = getOwnPropertyDescriptor(TypedArrayPrototype, 'length').get
  const HostDate = G.Date
  const dateToString = HostDate.prototype.toString
  const limits = parse(limitsJson)
  const MAX_EFFECTS = limits.maxEffects
  const MAX_LOGS = limits.maxLogs
  const MAX_STATE_VALUE = limits.maxStateValueBytes
  const MAX_TEXT = 1000

  const own = (value) => ({ __proto__: null, value, writable: true, enumerable: true, configurable: true })
  const locked = (value) => ({ __proto__: null, value, writable: false, enumerable: false, configurable: false })
  const clip = (text) => (text.length > MAX_TEXT ? apply(stringSlice, text, [0, MAX_TEXT]) + '...' : text)

  // Bytes cross the boundary as { '$taureau:bytes': base64 } inside the JSON (see bytes.ts).
  const BYTES = '$taureau:bytes'
  const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
  const SEXTETS = new Bytes(128).fill(255)
  for (let i = 0; i < 64; i++) SEXTETS[apply(charCodeAt, ALPHABET, [i])] = i
  const isBytes = (value) =>
    value !== null && typeof value === 'object' && apply(typedArrayTag, value, []) === 'Uint8Array'
  const decode = (text) => {
    let length = text.length
    while (length > 0 && apply(charCodeAt, text, [length - 1]) === 61) length--
    const out = new Bytes(Math.floor((length * 3) / 4))
    let bits = 0
    let value = 0
    let at = 0
    for (let i = 0; i < length; i++) {
      const code = apply(charCodeAt, text, [i])
      value = (value << 6) | (code < 128 ? SEXTETS[code] & 63 : 0)
      bits += 6
      if (bits >= 8) {
        bits -= 8
        out[at++] = (value >> bits) & 0xff
      }
    }
    return out
  }
  const encode = (bytes) => {
    const length = apply(typedArrayLength, bytes, [])
    let text = ''
    for (let i = 0; i < length; i += 3) {
      const n = (bytes[i] << 16) | ((i + 1 < length ? bytes[i + 1] : 0) << 8) | (i + 2 < length ? bytes[i + 2] : 0)
      text += ALPHABET[(n >> 18) & 63] + ALPHABET[(n >> 12) & 63]
      text += i + 1 < length ? ALPHABET[(n >> 6) & 63] : '='
      text += i + 2 < length ? ALPHABET[n & 63] : '='
    }
    return text
  }
  const revive = (_key, value) =>
    value !== null && typeof value === 'object' && hasOwn(value, BYTES) && typeof value[BYTES] === 'string'
      ? decode(value[BYTES])
      : value
  const replace = (_key, value) => (isBytes(value) ? { __proto__: null, [BYTES]: encode(value) } : value)

  const describe = (error) => {
    try {
      if (error !== null && typeof error === 'object' && error instanceof ErrorClass) {
        return clip(toText(error.name) + ': ' + toText(error.message))
      }
      return clip('a non-Error value: ' + toText(error))
    } catch {
      return 'a value that cannot be described'
    }
  }
  // Whether a value is a thenable, read without running getters (a planted Object.prototype.then
  // getter would otherwise decide what every result is).
  const isThenable = (value) => {
    for (let o = value; o !== null && (typeof o === 'object' || typeof o === 'function'); o = getPrototypeOf(o)) {
      const found = getOwnPropertyDescriptor(o, 'then')
      if (found !== undefined) return hasOwn(found, 'value') && typeof found.value === 'function'
    }
    return false
  }
  const deepFreeze = (value) => {
    if (value !== null && typeof value === 'object' && !isFrozen(value)) {
      freeze(value)
      const keys = ownKeys(value)
      for (let i = 0; i < keys.length; i++) deepFreeze(value[keys[i]])
    }
    return value
  }

  // The invocation's time; Date.now() and new Date() read it.
  let currentTime = 0
  function GuestDate(...args) {
    if (new.target === undefined) return apply(dateToString, new HostDate(currentTime), [])
    return construct(HostDate, args.length === 0 ? [currentTime] : args, new.target)
  }
  defineProperty(GuestDate, 'name', { __proto__: null, value: 'Date', writable: false, enumerable: false, configurable: true })
  defineProperty(GuestDate, 'length', locked(7))
  defineProperty(GuestDate, 'prototype', locked(HostDate.prototype))
  defineProperty(GuestDate, 'now', locked(function now() { return currentTime }))
  defineProperty(GuestDate, 'parse', own(HostDate.parse))
  defineProperty(GuestDate, 'UTC', own(HostDate.UTC))
  defineProperty(HostDate.prototype, 'constructor', { __proto__: null, value: GuestDate, writable: true, enumerable: false, configurable: true })
  defineProperty(G, 'Date', locked(GuestDate))

  // Math.random: sfc32 from the host's seed (four 32-bit words), 53 random bits per number.
  let s0 = limits.seed[0] | 0
  let s1 = limits.seed[1] | 0
  let s2 = limits.seed[2] | 0
  let s3 = limits.seed[3] | 0
  const next32 = () => {
    const t = (((s0 + s1) | 0) + s3) | 0
    s3 = (s3 + 1) | 0
    s0 = s1 ^ (s1 >>> 9)
    s1 = (s2 + (s2 << 3)) | 0
    s2 = (s2 << 21) | (s2 >>> 11)
    s2 = (s2 + t) | 0
    return t >>> 0
  }
  for (let i = 0; i < 15; i++) next32()
  const random = function random() {
    return ((next32() >>> 5) * 67108864 + (next32() >>> 6)) / 9007199254740992
  }
  freeze(random)
  defineProperty(G.Math, 'random', locked(random))
  delete G.WeakRef
  delete G.FinalizationRegistry
  Object.preventExtensions(Object.prototype)
  Object.preventExtensions(Array.prototype)

  // One invocation's effects, as JSON fragments.
  let exported = null
  let publishes = []
  let emits = []
  let logs = []
  let droppedLogs = 0
  let refused = ''
  const push = (list, item) => defineProperty(list, list.length, own(item))
  const join = (list) => {
    let text = ''
    for (let i = 0; i < list.length; i++) text += (i === 0 ? '' : ',') + list[i]
    return text
  }
  const serialize = (value) => {
    const json = stringify(value, replace)
    return json === undefined ? 'null' : json
  }
  const refuse = (reason, message) => {
    if (refused === '') refused = reason
    throw new TypeErrorClass(message)
  }

  // ctx's functions are made once and frozen; they act on the current invocation.
  const api = {
    now() {
      return currentTime
    },
    publish(topic, value, options) {
      if (publishes.length >= MAX_EFFECTS) {
        refuse('made more than ' + MAX_EFFECTS + ' publishes in one invocation', 'Cannot publish more than ' + MAX_EFFECTS + ' messages in one invocation')
      }
      const qos = options === undefined || options === null || options.qos === undefined ? 0 : options.qos
      const retain = options !== undefined && options !== null && options.retain === true
      const json = value === undefined ? '' : ',"value":' + serialize(value)
      push(publishes, '{"topic":' + stringify(toText(topic)) + json + ',"qos":' + (typeof qos === 'number' ? stringify(qos) : '-1') + ',"retain":' + retain + '}')
    },
    emit(record, options) {
      if (emits.length >= MAX_EFFECTS) {
        refuse('made more than ' + MAX_EFFECTS + ' emits in one invocation', 'Cannot emit more than ' + MAX_EFFECTS + ' records in one invocation')
      }
      const stream = options === undefined || options === null || options.stream === undefined ? 'default' : toText(options.stream)
      const json = record === undefined ? '' : ',"record":' + serialize(record)
      push(emits, '{"stream":' + stringify(stream) + json + '}')
    },
    log(...parts) {
      if (logs.length >= MAX_LOGS) {
        droppedLogs++
        return
      }
      let line = ''
      for (let i = 0; i < parts.length; i++) {
        const part = parts[i]
        line += (i === 0 ? '' : ' ') + (typeof part === 'string' ? part : toText(stringify(part, replace)))
      }
      push(logs, stringify(clip(line)))
    },
  }
  freeze(api.now)
  freeze(api.publish)
  freeze(api.emit)
  freeze(api.log)

  // ctx.state. The host answers with a tag and text: 'v' and JSON, 'u' for undefined, or 'e' and
  // the message of a TypeError. '' names the function's private namespace.
  const stateReply = (reply) => {
    if (typeof reply !== 'string') throw new TypeErrorClass('Cannot use ctx.state as the sandbox failed')
    const tag = apply(charCodeAt, reply, [0])
    if (tag === 117) return undefined
    const text = apply(stringSlice, reply, [1])
    if (tag === 101) throw new TypeErrorClass(text)
    return apply(stringIncludes, text, [BYTES]) ? parse(text, revive) : parse(text)
  }
  const option = (options, name) => (options === undefined || options === null ? undefined : options[name])
  const stateOf = (path) => {
    const state = {
      get(key) {
        return stateReply(hostState('get', path, key))
      },
      set(key, value, options) {
        const json = stringify(value, replace)
        // A value too large is told by its length: the host need not copy it out to refuse it.
        const sent = typeof json === 'string' && json.length > MAX_STATE_VALUE ? json.length : json
        stateReply(hostState('set', path, key, sent, option(options, 'ttlMs')))
      },
      delete(key) {
        stateReply(hostState('delete', path, key))
      },
      incr(key, by) {
        return stateReply(hostState('incr', path, key, by === undefined ? 1 : by))
      },
      keys(prefix, options) {
        const from = prefix === undefined ? '' : prefix
        return stateReply(hostState('keys', path, from, option(options, 'after'), option(options, 'limit')))
      },
      lease(ttlMs) {
        stateReply(hostState('lease', path, ttlMs))
      },
    }
    const names = ownKeys(state)
    for (let i = 0; i < names.length; i++) freeze(state[names[i]])
    return state
  }
  // ctx.state is the private namespace; ns(path) gives the same API on a tenant-shared one.
  const privateState = stateOf('')
  const ns = function ns(path) {
    stateReply(hostState('ns', path))
    const shared = stateOf(path)
    defineProperty(shared, 'namespace', own(path))
    return freeze(shared)
  }
  defineProperty(privateState, 'ns', own(freeze(ns)))
  freeze(privateState)
  let ctx = null

  return freeze({
    __proto__: null,
    /** Takes the function's module namespace; returns '' or why it cannot be deployed. */
    setModule(namespace, handlersJson) {
      // A module with top-level await evaluates to a promise of its namespace.
      if (apply(objectToString, namespace, []) !== '[object Module]') {
        return 'its top level awaits: handlers are synchronous, so top-level await is not supported'
      }
      const candidate = namespace.default
      if (candidate === null || typeof candidate !== 'object') return 'its source does not export a default object'
      const handlers = parse(handlersJson)
      for (let i = 0; i < handlers.length; i++) {
        const handler = candidate[handlers[i]]
        if (typeof handler !== 'function') return 'its default export has no ' + handlers[i] + '() handler'
        const kind = apply(objectToString, handler, [])
        if (kind !== '[object Function]') {
          return 'its ' + handlers[i] + '() handler is ' + (kind === '[object AsyncFunction]' ? 'async' : 'a generator') + ': handlers are synchronous and return their result'
        }
      }
      exported = candidate
      return ''
    },
    /** Sets what ctx tells about the function; the config is frozen all the way down. */
    setInfo(infoJson) {
      const info = parse(infoJson)
      ctx = freeze({
        tenant: limits.tenant,
        name: info.name,
        version: info.version,
        config: deepFreeze(info.config),
        now: api.now,
        publish: api.publish,
        emit: api.emit,
        log: api.log,
        state: privateState,
      })
    },
    /** Runs one invocation; callJson is [now, ...args]. Returns the outcome as JSON text. */
    run(handler, callJson, hasBytes) {
      publishes = []
      emits = []
      logs = []
      droppedLogs = 0
      refused = ''
      const call = hasBytes ? parse(callJson, revive) : parse(callJson)
      currentTime = call[0]
      const args = []
      for (let i = 1; i < call.length; i++) push(args, call[i])
      push(args, ctx)
      let value
      try {
        const target = exported === null ? undefined : exported[handler]
        if (typeof target !== 'function') return '{"ok":false,"kind":"missing","error":' + stringify('its default export has no ' + handler + '() handler') + '}'
        value = apply(target, exported, args)
      } catch (error) {
        if (refused !== '') return '{"ok":false,"kind":"refused","error":' + stringify(refused) + '}'
        return '{"ok":false,"kind":"threw","error":' + stringify(describe(error)) + '}'
      }
      // A refused effect fails the invocation even when the function caught the error.
      if (refused !== '') return '{"ok":false,"kind":"refused","error":' + stringify(refused) + '}'
      let valueJson
      try {
        if (isThenable(value)) {
          return '{"ok":false,"kind":"refused","error":' + stringify('returned a Promise from ' + handler + '(): handlers are synchronous and return their result') + '}'
        }
        valueJson = value === undefined ? '' : ',"value":' + serialize(value)
      } catch (error) {
        return '{"ok":false,"kind":"refused","error":' + stringify('returned a result that cannot be serialized as JSON: ' + describe(error)) + '}'
      }
      return '{"ok":true' + valueJson + ',"publishes":[' + join(publishes) + '],"emits":[' + join(emits) + '],"logs":[' + join(logs) + '],"droppedLogs":' + droppedLogs + '}'
    },
  })
})
`
