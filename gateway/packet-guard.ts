import { isUtf8 } from 'node:buffer'
import { quote } from './errors.ts'

/**
 * Why a connection was closed by the packet guard, one stable value per kind of violation of MQTT
 * 3.1.1 (OASIS standard, 29 October 2014). The gateway uses them as metric labels, so the set is
 * closed and no value carries data from the wire.
 */
export const PACKET_VIOLATIONS = {
  /** mqtt-packet itself could not decode the bytes (bad fixed-header flags, QoS 3, a Remaining
   * Length of more than four bytes, a field that runs past the packet, bad SUBSCRIBE options). */
  malformedPacket: 'malformed_packet',
  /** A packet type a client never sends to a server, or a reserved type (2.2.1). */
  packetType: 'packet_type',
  /** A packet before CONNECT, or a second CONNECT ([MQTT-3.1.0-1], [MQTT-3.1.0-2]). */
  protocolSequence: 'protocol_sequence',
  /** A Remaining Length the packet type does not allow, or fields that do not fill it exactly. */
  remainingLength: 'remaining_length',
  /** A Remaining Length above the gateway's bound (`maxRemainingLengthBytes`): a policy, not a rule. */
  packetTooLarge: 'packet_too_large',
  /** Fixed-header flags mqtt-packet lets through: DUP set on a QoS 0 PUBLISH ([MQTT-3.3.1-2]). */
  headerFlags: 'header_flags',
  /** A CONNECT whose protocol name is neither 'MQTT' nor 'MQIsdp' ([MQTT-3.1.2-1]). */
  protocolName: 'protocol_name',
  /** A CONNECT with a protocol level the gateway does not speak ([MQTT-3.1.2-2]). */
  protocolLevel: 'protocol_level',
  /** CONNECT flags that contradict each other or set the reserved bit ([MQTT-3.1.2-3] and others). */
  connectFlags: 'connect_flags',
  /** A UTF-8 string field that is not well-formed UTF-8 ([MQTT-1.5.3-1]). */
  malformedUtf8: 'malformed_utf8',
  /** A UTF-8 string field that contains U+0000 ([MQTT-1.5.3-2]). */
  nullCharacter: 'null_character',
  /** A topic name that is empty or contains a wildcard ([MQTT-4.7.3-1], [MQTT-3.3.2-2]). */
  topicName: 'topic_name',
  /** A topic filter that is empty or places a wildcard wrongly ([MQTT-4.7.3-1], [MQTT-4.7.1-2], [MQTT-4.7.1-3]). */
  topicFilter: 'topic_filter',
  /** A SUBSCRIBE or UNSUBSCRIBE without any topic filter ([MQTT-3.8.3-3], [MQTT-3.10.3-2]). */
  noTopicFilter: 'no_topic_filter',
  /** A packet identifier of 0 where one is required ([MQTT-2.3.1-1]). */
  packetIdentifier: 'packet_identifier',
} as const

/** One of {@link PACKET_VIOLATIONS}. */
export type PacketViolation = (typeof PACKET_VIOLATIONS)[keyof typeof PACKET_VIOLATIONS]

/**
 * The error the guarded parser emits when it rejects input. aedes turns any parser error into the
 * close of that one connection (and a `connectionError`/`clientError` event on the broker), so the
 * gateway can log `message` and count `reason`.
 */
export class PacketGuardError extends Error {
  override readonly name = 'PacketGuardError'
  /** Which rule the input broke. */
  readonly reason: PacketViolation

  constructor(reason: PacketViolation, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.reason = reason
  }
}

/**
 * The packet being decoded, as mqtt-packet 9.0.x's parser builds it (its `Packet` class plus the
 * fields its `_parse*` methods add). Only the fields the guard reads are listed.
 */
export interface MqttPacketParserPacket {
  cmd: string | null
  /** The Remaining Length; -1 until it has been decoded. */
  length: number
  qos: number
  dup: boolean
  retain: boolean
  topic?: string | null
  messageId?: number
  subscriptions?: Array<{ topic: string; qos: number }>
  unsubscriptions?: string[]
  clientId?: string
  will?: { topic: string; qos: number; retain: boolean }
  username?: string
}

/**
 * The internals of an mqtt-packet 9.0.x `Parser` (node_modules/mqtt-packet/parser.js) that the guard
 * reads and replaces. aedes 1 creates one per connection as `client._parser`.
 *
 * This is coupled to mqtt-packet 9.0.x on purpose: aedes exposes no hook between decoding and
 * dispatch, and the checks must run there: before aedes acts on a packet (which it does
 * concurrently for all packets of one socket read), with the packet's raw bytes still at hand (to
 * tell a well-formed U+FFFD from a decoding error), and before mqtt-packet buffers a body whose
 * length alone is already a violation. The guard relies on: `parse()` driving a state loop that
 * calls `this._parsePayload()` once the fixed header is decoded and that stops when it returns false
 * or `error` is set; `_parsePayload()` decoding the body from `_list` (a `bl` BufferList holding
 * the body at offset 0) only once `_list.length >= packet.length`, leaving `_pos` just past the
 * last field it read; `_parseString()` reading one length-prefixed string at `_pos`; and every
 * error going through `_emitError()`. {@link installPacketGuard} checks that these members exist and
 * the guard's tests exercise the rest, so an upgrade of mqtt-packet that changes them fails there.
 */
export interface MqttPacketParser {
  packet: MqttPacketParserPacket
  error: Error | null
  /** Offset in `_list` of the next byte to decode, relative to the start of the body. */
  _pos: number
  /** The received bytes not yet consumed; during `_parsePayload` the body starts at offset 0. */
  _list: {
    readonly length: number
    readUInt8(offset: number): number
    readUInt16BE(offset: number): number
    slice(start: number, end: number): Buffer
  }
  parse(buf: Buffer): number
  _parsePayload(): boolean
  _parseString(): string | null
  _emitError(error: Error): void
}

/** Fields that every packet decoded by mqtt-packet 9.0.x has. */
interface _GuardedPacketBase {
  /** The Remaining Length. */
  readonly length: number
}

/** A CONNECT that passed the guard: protocol 'MQTT' level 4 or 'MQIsdp' level 3. */
export interface GuardedConnectPacket extends _GuardedPacketBase {
  cmd: 'connect'
  protocolId: 'MQTT' | 'MQIsdp'
  protocolVersion: 3 | 4
  clean: boolean
  keepalive: number
  clientId: string
  will?: { topic: string; payload: Buffer; qos: 0 | 1 | 2; retain: boolean }
  username?: string
  password?: Buffer
}

/** A PUBLISH that passed the guard: a non-empty topic name without wildcards. */
export interface GuardedPublishPacket extends _GuardedPacketBase {
  cmd: 'publish'
  topic: string
  payload: Buffer
  qos: 0 | 1 | 2
  dup: boolean
  retain: boolean
  /** Present (and non-zero) when `qos` is 1 or 2. */
  messageId?: number
}

/** A SUBSCRIBE that passed the guard: at least one well-formed topic filter. */
export interface GuardedSubscribePacket extends _GuardedPacketBase {
  cmd: 'subscribe'
  messageId: number
  subscriptions: Array<{ topic: string; qos: 0 | 1 | 2 }>
}

/** An UNSUBSCRIBE that passed the guard: at least one well-formed topic filter. */
export interface GuardedUnsubscribePacket extends _GuardedPacketBase {
  cmd: 'unsubscribe'
  messageId: number
  unsubscriptions: string[]
}

/** A PUBACK, PUBREC, PUBREL or PUBCOMP that passed the guard: a non-zero packet identifier. */
export interface GuardedAckPacket extends _GuardedPacketBase {
  cmd: 'puback' | 'pubrec' | 'pubrel' | 'pubcomp'
  messageId: number
}

/** A PINGREQ or DISCONNECT that passed the guard: an empty body. */
export interface GuardedEmptyPacket extends _GuardedPacketBase {
  cmd: 'pingreq' | 'disconnect'
}

/**
 * A packet that passed every check, as {@link PacketGuardOptions.onPacket} sees it. It is the very
 * object aedes receives next, so changes made to it are what aedes acts on.
 */
export type GuardedPacket =
  | GuardedConnectPacket
  | GuardedPublishPacket
  | GuardedSubscribePacket
  | GuardedUnsubscribePacket
  | GuardedAckPacket
  | GuardedEmptyPacket

/** What {@link PacketGuardOptions.onUnsupportedProtocolLevel} learns about the refused CONNECT. */
export interface UnsupportedProtocolLevel {
  /** The protocol name, which the guard has checked already. */
  readonly protocolName: 'MQTT' | 'MQIsdp'
  /** The Protocol Level byte as sent, including bit 7 that bridges set (0x83, 0x84). */
  readonly protocolLevel: number
}

/** Options of {@link installPacketGuard}. */
export interface PacketGuardOptions {
  /**
   * Called when the first CONNECT names a protocol level other than 4 ('MQTT') or 3 ('MQIsdp').
   * [MQTT-3.1.2-2] requires a CONNACK with return code 0x01 before the close, and the parser cannot
   * write to the socket, so this must write it synchronously (`socket.write(<20 02 00 01>)`): the
   * guard emits the parser error right after it returns and aedes destroys the socket at once.
   */
  readonly onUnsupportedProtocolLevel: (connect: UnsupportedProtocolLevel) => void
  /** Called once per rejected connection, before the parser error is emitted, with the reason. */
  readonly onViolation?: (reason: PacketViolation) => void
  /**
   * Called for every packet that passed the checks, synchronously before the parser emits it to
   * aedes. The packet is the object aedes handles next: a new `unsubscriptions` array (or topic) set
   * here is what aedes uses. Not called for rejected packets nor after a rejection.
   */
  readonly onPacket?: (packet: GuardedPacket) => void
  /**
   * Largest Remaining Length accepted, checked before the body is buffered. Defaults to the
   * protocol's 268,435,455 (2.2.3): MQTT 3.1.1 has no way to tell a client the server's limit, so a
   * smaller bound closes the connection of a client that exceeds it.
   */
  readonly maxRemainingLengthBytes?: number
}

/** The largest value four Remaining Length bytes can encode (2.2.3, Table 2.4). */
const MAX_REMAINING_LENGTH = 268_435_455

/**
 * The longest CONNECT that MQTT 3.1.1 can express (3.1): protocol name 'MQIsdp' (8 bytes), level,
 * flags and keep alive (4 bytes), then at most five length-prefixed fields (client identifier, will
 * topic, will message, user name, password) of at most 2 + 65,535 bytes each.
 */
const MAX_CONNECT_REMAINING_LENGTH = 12 + 5 * (2 + 65_535)

const _MQTT = [0x4d, 0x51, 0x54, 0x54] // 'MQTT'
const _MQISDP = [0x4d, 0x51, 0x49, 0x73, 0x64, 0x70] // 'MQIsdp'

// CONNECT flags (3.1.2.3, Figure 3.4).
const _FLAG_USERNAME = 0x80
const _FLAG_PASSWORD = 0x40
const _FLAG_WILL_RETAIN = 0x20
const _FLAG_WILL = 0x04
const _FLAG_RESERVED = 0x01

// Character codes the topic checks look for.
const _SLASH = 0x2f
const _PLUS = 0x2b
const _HASH = 0x23

const _guardedParsers = new WeakSet<object>()

/**
 * Makes an mqtt-packet parser reject, by emitting a {@link PacketGuardError}, every input that MQTT
 * 3.1.1 requires a server to reject and that mqtt-packet 9 or aedes 1 let through or catch too late.
 * aedes closes only the connection whose parser errs; after an error the parser ignores all further
 * input, so no later packet of that connection reaches aedes. Call it on `client._parser` right
 * after `broker.handle(socket)`, before any byte is read:
 *
 * ```ts
 * const client = broker.handle(socket) as unknown as { _parser: MqttPacketParser }
 * installPacketGuard(client._parser, { onUnsupportedProtocolLevel: () => socket.write(connack01) })
 * ```
 *
 * PUBLISH stays cheap: a few comparisons, a scan of the topic name for U+FFFD and U+0000 (the full
 * UTF-8 validation runs only when U+FFFD is present) and one for wildcards; no allocation.
 *
 * @throws {TypeError} when `parser` does not look like an mqtt-packet 9.0 parser, has already read
 * bytes, or is already guarded.
 * @throws {RangeError} when `maxRemainingLengthBytes` is not an integer in 0..268,435,455.
 */
export function installPacketGuard(parser: MqttPacketParser, options: PacketGuardOptions): void {
  _assertParser(parser)
  const maxRemainingLength = options.maxRemainingLengthBytes ?? MAX_REMAINING_LENGTH
  if (
    !Number.isInteger(maxRemainingLength) ||
    maxRemainingLength < 0 ||
    maxRemainingLength > MAX_REMAINING_LENGTH
  ) {
    throw new RangeError(
      `Cannot install the packet guard as maxRemainingLengthBytes is not an integer in 0..${MAX_REMAINING_LENGTH}: ${maxRemainingLength}`,
    )
  }
  _guardedParsers.add(parser)
  const { onUnsupportedProtocolLevel, onViolation, onPacket } = options
  const parse = parser.parse
  const parsePayload = parser._parsePayload
  const parseString = parser._parseString
  const emitError = parser._emitError

  /** Set by the first error (ours or mqtt-packet's); from then on the parser takes no input. */
  let rejected = false
  /** Whether the connection's CONNECT has passed; decides what may come next (3.1.0). */
  let connectAccepted = false
  // The first string field of the packet being decoded that breaks 1.5.3, as the string hook found
  // it: kept in scalars so that the hook allocates nothing.
  let badString: string | undefined
  let badStringIsUtf8 = true
  let badStringStart = 0
  let badStringEnd = 0

  function reject(reason: PacketViolation, message: string, cause?: unknown): false {
    rejected = true
    let hookError: unknown
    try {
      onViolation?.(reason)
    } catch (error) {
      hookError = error
    }
    // A hook that throws is a gateway bug; its exception must not escape into aedes' socket read
    // loop (it would crash the process), so it travels as the cause of the error aedes reports.
    emitError.call(parser, new PacketGuardError(reason, message, { cause: hookError ?? cause }))
    return false
  }

  parser.parse = (buf) => (rejected ? 0 : parse.call(parser, buf))

  parser._emitError = (error) => {
    // mqtt-packet's own decoding errors come through here. After a rejection it may still call this
    // for the same packet; the connection is closing already, so only the first error counts.
    if (rejected) return
    reject(
      PACKET_VIOLATIONS.malformedPacket,
      `Cannot decode ${_typeName(parser.packet.cmd)} as mqtt-packet rejects it: ${error.message}`,
      error,
    )
  }

  parser._parseString = () => {
    const start = parser._pos
    const value = parseString.call(parser)
    if (value === null || badString !== undefined) return value
    // [MQTT-1.5.3-1]: ill-formed UTF-8 (overlong forms, UTF-16 surrogates, code points past U+10FFFF,
    // truncated sequences) must close the connection. Node's decoder turns each of them into U+FFFD,
    // so only a string containing U+FFFD needs the full check, which tells a well-formed U+FFFD
    // (EF BF BD) from a decoding error.
    if (value.indexOf('\uFFFD') !== -1 && !isUtf8(parser._list.slice(start + 2, parser._pos))) {
      badString = value
      badStringIsUtf8 = false
      badStringStart = start + 2
      badStringEnd = parser._pos
    } else if (value.indexOf('\u0000') !== -1) {
      // [MQTT-1.5.3-2], [MQTT-4.7.3-2]: U+0000 must close the connection.
      badString = value
      badStringIsUtf8 = true
    }
    return value
  }

  parser._parsePayload = () => {
    const packet = parser.packet
    if (!checkBeforeBody(packet)) return false
    badString = undefined
    const complete = parsePayload.call(parser)
    if (!complete || parser.error !== null) return complete
    if (!checkDecoded(packet)) return false
    if (onPacket !== undefined) {
      try {
        onPacket(packet as unknown as GuardedPacket)
      } catch (cause) {
        rejected = true
        emitError.call(
          parser,
          new Error(`Cannot accept ${_typeName(packet.cmd)} as the onPacket hook threw`, { cause }),
        )
        return false
      }
    }
    return true
  }

  /**
   * Checks what the fixed header alone decides, before mqtt-packet waits for (and buffers) the
   * body. Runs again each time more of the body arrives; every check is cheap and idempotent.
   */
  function checkBeforeBody(packet: MqttPacketParserPacket): boolean {
    const length = packet.length
    switch (packet.cmd) {
      case 'publish':
        // [MQTT-3.3.1-2]: the DUP flag must be 0 on QoS 0; a flag combination the spec forbids is an
        // invalid flag, and [MQTT-2.2.2-2] says to close the connection. (QoS 3 is mqtt-packet's.)
        if (packet.dup && packet.qos === 0) {
          return reject(
            PACKET_VIOLATIONS.headerFlags,
            'Cannot accept PUBLISH as it has the DUP flag set at QoS 0',
          )
        }
        break
      case 'puback':
      case 'pubrec':
      case 'pubrel':
      case 'pubcomp':
        // 3.4.1, 3.5.1, 3.6.1, 3.7.1: the Remaining Length is 2, the packet identifier alone;
        // mqtt-packet would read one from the next packet's bytes, or make it -1 [MQTT-4.8.0-1].
        if (length !== 2) return rejectRemainingLength(packet.cmd, length, 'is not 2')
        break
      case 'subscribe':
      case 'unsubscribe':
        break
      case 'pingreq':
      case 'disconnect':
        // 3.12.1, 3.14.1: the Remaining Length is 0; mqtt-packet would skip any body [MQTT-4.8.0-1].
        if (length !== 0) return rejectRemainingLength(packet.cmd, length, 'is not 0')
        break
      case 'connect':
        // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation; aedes catches it only once the
        // first CONNECT is handled, and goes on handling the packets it queued behind it.
        if (connectAccepted) {
          return reject(
            PACKET_VIOLATIONS.protocolSequence,
            'Cannot accept CONNECT as the client sent one already',
          )
        }
        if (length > MAX_CONNECT_REMAINING_LENGTH) {
          return rejectRemainingLength(
            'connect',
            length,
            `exceeds the ${MAX_CONNECT_REMAINING_LENGTH} bytes a CONNECT can hold`,
          )
        }
        if (parser._list.length >= length && !checkConnectPrelude(length)) return false
        break
      default:
        // 2.2.1, Table 2.1: CONNACK, SUBACK, UNSUBACK and PINGRESP flow from server to client only,
        // and types 0 and 15 are reserved (AUTH is MQTT 5); receiving one is a protocol violation
        // [MQTT-4.8.0-1]. Checked here so that the body is not buffered first.
        return reject(
          PACKET_VIOLATIONS.packetType,
          packet.cmd === 'reserved' || packet.cmd === 'auth'
            ? `Cannot accept packet type ${packet.cmd === 'auth' ? 15 : 0} as it is reserved`
            : `Cannot accept ${_typeName(packet.cmd)} as a client never sends it to a server`,
        )
    }
    // [MQTT-3.1.0-1]: the first packet must be CONNECT. aedes would close too, but only after the
    // body is buffered and decoded.
    if (!connectAccepted && packet.cmd !== 'connect') {
      return reject(
        PACKET_VIOLATIONS.protocolSequence,
        `Cannot accept ${_typeName(packet.cmd)} as no CONNECT came first`,
      )
    }
    if (length > maxRemainingLength) {
      return reject(
        PACKET_VIOLATIONS.packetTooLarge,
        `Cannot accept ${_typeName(packet.cmd)} as its remaining length ${length} exceeds the limit of ${maxRemainingLength} bytes`,
      )
    }
    return true
  }

  /**
   * Checks a CONNECT's protocol name, level and flags from its raw bytes, before mqtt-packet decodes
   * it: mqtt-packet closes on levels other than 3, 4 and 5 with no chance to send the CONNACK 0x01
   * that [MQTT-3.1.2-2] requires, and it lets some flag combinations through. `length` bytes of
   * body are in `parser._list`.
   */
  function checkConnectPrelude(length: number): boolean {
    const list = parser._list
    const nameEnd = length >= 2 ? 2 + list.readUInt16BE(0) : 2
    let protocolName: 'MQTT' | 'MQIsdp' | undefined
    if (nameEnd <= length) {
      if (_bytesAre(list, 2, nameEnd, _MQTT)) protocolName = 'MQTT'
      else if (_bytesAre(list, 2, nameEnd, _MQISDP)) protocolName = 'MQIsdp'
    }
    if (protocolName === undefined) {
      // [MQTT-3.1.2-1]: with another protocol name the server may close, or process the CONNECT by
      // another specification; the gateway speaks MQTT 3.1.1 (and 3.1, 'MQIsdp') only, so it closes.
      return reject(
        PACKET_VIOLATIONS.protocolName,
        `Cannot accept CONNECT as its protocol name is not 'MQTT' or 'MQIsdp': ${quote(_utf8(list, 2, Math.min(nameEnd, length)))}`,
      )
    }
    if (nameEnd >= length) return rejectRemainingLength('connect', length, 'ends before the protocol level')
    const level = list.readUInt8(nameEnd)
    const expectedLevel = protocolName === 'MQTT' ? 4 : 3
    if (level !== expectedLevel) {
      // [MQTT-3.1.2-2]: an unsupported Protocol Level gets CONNACK 0x01, then the close. 'MQTT' is
      // level 4 (3.1.2.2) and 'MQIsdp' level 3 (MQTT 3.1, whose CONNACK 0x01 means the same); any
      // other pair, MQTT 5 and the bridge levels 0x83/0x84 (bit 7 set) are not supported.
      let hookError: unknown
      try {
        onUnsupportedProtocolLevel({ protocolName, protocolLevel: level })
      } catch (error) {
        hookError = error
      }
      return reject(
        PACKET_VIOLATIONS.protocolLevel,
        `Cannot accept CONNECT as protocol level ${level} is not supported with protocol name '${protocolName}'`,
        hookError,
      )
    }
    if (nameEnd + 4 > length) return rejectRemainingLength('connect', length, 'ends before the keep alive')
    // [MQTT-3.1.4-1]: a CONNECT that does not conform to 3.1 is closed without a CONNACK.
    const flags = list.readUInt8(nameEnd + 1)
    const flagProblem = _connectFlagsProblem(flags)
    if (flagProblem !== undefined) {
      return reject(PACKET_VIOLATIONS.connectFlags, `Cannot accept CONNECT as ${flagProblem}`)
    }
    return true
  }

  /** Checks a packet mqtt-packet has decoded, before it is emitted. */
  function checkDecoded(packet: MqttPacketParserPacket): boolean {
    const end = parser._pos
    const length = packet.length
    switch (packet.cmd) {
      case 'publish': {
        // The payload is whatever follows the variable header, so the fields only must not run past
        // the Remaining Length (a QoS 1/2 packet identifier read from the next packet's bytes).
        if (end > length) return rejectOverrun('publish', length)
        if (badString !== undefined) return rejectBadString('PUBLISH', 'topic name')
        const topic = packet.topic ?? ''
        // [MQTT-4.7.3-1]: topic names are at least one character long.
        if (topic.length === 0) {
          return reject(PACKET_VIOLATIONS.topicName, 'Cannot accept PUBLISH as its topic name is empty')
        }
        // [MQTT-3.3.2-2], [MQTT-4.7.1-1]: a topic name contains no wildcard. aedes rejects these
        // too, but only when it handles the packet, alongside later packets of the same read.
        if (topic.indexOf('+') !== -1 || topic.indexOf('#') !== -1) {
          return reject(
            PACKET_VIOLATIONS.topicName,
            `Cannot accept PUBLISH as its topic name contains a wildcard: ${quote(topic)}`,
          )
        }
        return packet.qos === 0 || checkPacketIdentifier('PUBLISH', packet.messageId)
      }
      case 'puback':
      case 'pubrec':
      case 'pubrel':
      case 'pubcomp':
        return checkPacketIdentifier(_typeName(packet.cmd), packet.messageId)
      case 'subscribe':
      case 'unsubscribe': {
        const typeName = _typeName(packet.cmd)
        if (end !== length) {
          return end > length ? rejectOverrun(packet.cmd, length) : rejectTrailing(packet.cmd, end, length)
        }
        if (!checkPacketIdentifier(typeName, packet.messageId)) return false
        if (badString !== undefined) return rejectBadString(typeName, 'topic filter')
        const subscriptions = packet.subscriptions
        const count =
          subscriptions !== undefined ? subscriptions.length : (packet.unsubscriptions?.length ?? 0)
        // [MQTT-3.8.3-3], [MQTT-3.10.3-2]: at least one topic filter. (Reserved option bits and QoS 3
        // in SUBSCRIBE, [MQTT-3.8.3-4], are mqtt-packet's.)
        if (count === 0) {
          return reject(
            PACKET_VIOLATIONS.noTopicFilter,
            `Cannot accept ${typeName} as it has no topic filter`,
          )
        }
        for (let i = 0; i < count; i++) {
          const filter = subscriptions !== undefined ? subscriptions[i]?.topic : packet.unsubscriptions?.[i]
          const problem = _topicFilterProblem(filter ?? '')
          if (problem !== undefined) {
            return reject(
              PACKET_VIOLATIONS.topicFilter,
              `Cannot accept ${typeName} as its topic filter ${problem}: ${quote(filter)}`,
            )
          }
        }
        return true
      }
      case 'connect': {
        // [MQTT-3.1.2-9], [MQTT-3.1.2-11], [MQTT-3.1.2-18..21], [MQTT-3.1.4-1]: the payload holds
        // exactly the fields the flags announce; a missing one is mqtt-packet's error, an extra one
        // ends up here.
        if (end !== length) {
          return end > length ? rejectOverrun('connect', length) : rejectTrailing('connect', end, length)
        }
        if (badString !== undefined) {
          const field =
            badString === packet.clientId
              ? 'client identifier'
              : badString === packet.will?.topic
                ? 'will topic'
                : 'user name'
          return rejectBadString('CONNECT', field)
        }
        const willTopic = packet.will?.topic
        if (willTopic !== undefined) {
          // The will topic is a topic name: non-empty [MQTT-4.7.3-1], without wildcards [MQTT-4.7.1-1].
          if (willTopic.length === 0) {
            return reject(PACKET_VIOLATIONS.topicName, 'Cannot accept CONNECT as its will topic is empty')
          }
          if (willTopic.indexOf('+') !== -1 || willTopic.indexOf('#') !== -1) {
            return reject(
              PACKET_VIOLATIONS.topicName,
              `Cannot accept CONNECT as its will topic contains a wildcard: ${quote(willTopic)}`,
            )
          }
        }
        // An empty client identifier with clean session 0 is not rejected here: [MQTT-3.1.3-8]
        // requires CONNACK 0x02 for it, which the gateway's connect hook sends.
        connectAccepted = true
        return true
      }
      default:
        // PINGREQ and DISCONNECT: their Remaining Length of 0 was checked before the body.
        return true
    }
  }

  /** [MQTT-2.3.1-1]: packets that carry a packet identifier carry a non-zero one. */
  function checkPacketIdentifier(typeName: string, messageId: number | undefined): boolean {
    if (messageId !== undefined && messageId > 0) return true
    if (messageId === 0) {
      return reject(
        PACKET_VIOLATIONS.packetIdentifier,
        `Cannot accept ${typeName} as its packet identifier is 0`,
      )
    }
    // mqtt-packet sets -1 when the Remaining Length ends before the packet identifier.
    return reject(
      PACKET_VIOLATIONS.remainingLength,
      `Cannot accept ${typeName} as its remaining length ends before its packet identifier`,
    )
  }

  function rejectRemainingLength(cmd: string, length: number, problem: string): false {
    return reject(
      PACKET_VIOLATIONS.remainingLength,
      `Cannot accept ${_typeName(cmd)} as its remaining length ${length} ${problem}`,
    )
  }

  // [MQTT-4.8.0-1]: fields that claim bytes past the Remaining Length, or bytes left over after the
  // last field, are protocol violations; mqtt-packet lets both through in places (2-byte numbers are
  // read from whatever follows, and trailing bytes are skipped).
  function rejectOverrun(cmd: string, length: number): false {
    return rejectRemainingLength(cmd, length, 'ends inside its fields')
  }

  function rejectTrailing(cmd: string, end: number, length: number): false {
    const left = length - end
    return rejectRemainingLength(
      cmd,
      length,
      `leaves ${left} byte${left === 1 ? '' : 's'} after its last field`,
    )
  }

  function rejectBadString(typeName: string, field: string): false {
    const value = badString ?? ''
    if (badStringIsUtf8) {
      return reject(
        PACKET_VIOLATIONS.nullCharacter,
        `Cannot accept ${typeName} as its ${field} contains U+0000: ${quote(value)}`,
      )
    }
    return reject(
      PACKET_VIOLATIONS.malformedUtf8,
      `Cannot accept ${typeName} as its ${field} is not well-formed UTF-8: ${quote(value)} (bytes ${_hex(parser._list.slice(badStringStart, badStringEnd))})`,
    )
  }
}

/** Checks that `parser` has the mqtt-packet 9.0 internals {@link MqttPacketParser} describes. */
function _assertParser(parser: MqttPacketParser): void {
  const candidate = parser as Partial<Record<keyof MqttPacketParser, unknown>> | null
  const fits =
    typeof candidate === 'object' &&
    candidate !== null &&
    typeof candidate.parse === 'function' &&
    typeof candidate._parsePayload === 'function' &&
    typeof candidate._parseString === 'function' &&
    typeof candidate._emitError === 'function' &&
    typeof candidate.packet === 'object' &&
    candidate.packet !== null &&
    typeof (candidate._list as MqttPacketParser['_list'] | undefined)?.readUInt16BE === 'function'
  if (!fits) {
    throw new TypeError(
      'Cannot install the packet guard as the parser does not have the internals of mqtt-packet 9.0',
    )
  }
  if (_guardedParsers.has(parser)) {
    throw new TypeError('Cannot install the packet guard as the parser has one already')
  }
  if (parser._list.length !== 0 || parser.packet.cmd !== null) {
    throw new TypeError('Cannot install the packet guard as the parser has received bytes already')
  }
}

/**
 * Why a CONNECT flags byte (3.1.2.3) is not allowed, or undefined. A CONNECT that breaks 3.1 is closed
 * without a CONNACK [MQTT-3.1.4-1].
 */
function _connectFlagsProblem(flags: number): string | undefined {
  // [MQTT-3.1.2-3]: the reserved flag is 0.
  if ((flags & _FLAG_RESERVED) !== 0) return 'its reserved connect flag is set'
  const willQos = (flags >> 3) & 3
  if ((flags & _FLAG_WILL) !== 0) {
    // [MQTT-3.1.2-14]: will QoS 3 is not allowed.
    if (willQos === 3) return 'its will QoS is 3'
  } else {
    // [MQTT-3.1.2-11], [MQTT-3.1.2-13]: without the will flag, will QoS is 0.
    if (willQos !== 0) return `its will QoS is ${willQos} without the will flag`
    // [MQTT-3.1.2-11], [MQTT-3.1.2-15]: without the will flag, will retain is 0.
    if ((flags & _FLAG_WILL_RETAIN) !== 0) return 'its will retain flag is set without the will flag'
  }
  // [MQTT-3.1.2-22]: without the user name flag, the password flag is 0.
  if ((flags & _FLAG_PASSWORD) !== 0 && (flags & _FLAG_USERNAME) === 0) {
    return 'its password flag is set without the user name flag'
  }
  return undefined
}

/**
 * Why a topic filter (4.7) is malformed, or undefined. aedes' own check (lib/utils.js validateTopic)
 * misses filters such as 'a#', '+a' and 'a+'.
 */
function _topicFilterProblem(filter: string): string | undefined {
  const last = filter.length - 1
  // [MQTT-4.7.3-1]: topic filters are at least one character long.
  if (last < 0) return 'is empty'
  for (let i = 0; i <= last; i++) {
    const code = filter.charCodeAt(i)
    if (code === _HASH) {
      // [MQTT-4.7.1-2]: '#' stands alone or follows a '/', and is the last character.
      if (i !== last) return "has '#' before its last character"
      if (i > 0 && filter.charCodeAt(i - 1) !== _SLASH) return "has a '#' that is not a whole level"
    } else if (code === _PLUS) {
      // [MQTT-4.7.1-3]: '+' occupies a whole level.
      if (
        (i > 0 && filter.charCodeAt(i - 1) !== _SLASH) ||
        (i < last && filter.charCodeAt(i + 1) !== _SLASH)
      ) {
        return "has a '+' that is not a whole level"
      }
    }
  }
  return undefined
}

/** Whether `list[start..end)` holds exactly `expected`. */
function _bytesAre(
  list: MqttPacketParser['_list'],
  start: number,
  end: number,
  expected: readonly number[],
): boolean {
  if (end - start !== expected.length) return false
  for (let i = 0; i < expected.length; i++) {
    if (list.readUInt8(start + i) !== expected[i]) return false
  }
  return true
}

/** A protocol name (it may be any bytes) for an error message, from at most 64 bytes. */
function _utf8(list: MqttPacketParser['_list'], start: number, end: number): string {
  return end > start ? list.slice(start, Math.min(end, start + 64)).toString('utf8') : ''
}

/** Bytes as spaced hex for an error message, at most 32 of them. */
function _hex(bytes: Buffer): string {
  const shown = bytes
    .subarray(0, 32)
    .toString('hex')
    .replace(/(..)(?!$)/g, '$1 ')
  return bytes.length > 32 ? `${shown} …` : shown
}

/** The packet type as the specification writes it ('PUBLISH'), for messages. */
function _typeName(cmd: string | null): string {
  return cmd === null ? 'a packet' : cmd.toUpperCase()
}
