import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { type AddressInfo, createServer, type Server } from 'node:net'
import type { Duplex } from 'node:stream'
import { Aedes, type AedesPublishPacket, type Client, type PublishPacket, type Subscription } from 'aedes'
import mqttPacket from 'mqtt-packet'
import type { Logger } from 'pino'
import { createWebSocketStream, WebSocketServer } from 'ws'
import { type Acl, compileAcl } from './acl.ts'
import { type AuthThrottle, createAuthThrottle } from './auth-throttle.ts'
import type { SqlitePersistence } from './broker-persistence.ts'
import type { GatewayConfig, Quotas } from './config.ts'
import { GATEWAY_ERROR_CODES, GatewayError, quote } from './errors.ts'
import type { ConnectRefusal, DropReason, Metrics, TenantCounters } from './metrics.ts'
import { DEVICE_ID_PATTERN, TENANT_ID_PATTERN } from './names.ts'
import { installPacketGuard } from './packet-guard.ts'
import type { PasswordHasher } from './password-hasher.ts'
import type { PublishConnection, PublishSource } from './publish-ids.ts'
import type { AclRuleRecord, Store } from './store.ts'
import { filterCovers } from './topic-filter.ts'

// On its first write, mqtt-packet fills a cache with a two-byte Buffer for every number up to
// 65,535 (packet ids and lengths): 6.3 MB of heap that stays for the life of the process, the
// largest single item in an idle gateway's heap. Without it, each such number is a two-byte slice of
// Node's buffer pool, made as the packet is written.
mqttPacket.writeToStream.cacheNumbers = false

/**
 * Topic a refused QoS 0 or ACL-denied publish is routed to: MQTT 3.1.1 has no negative ack, and a
 * server that does not authorize a PUBLISH "MUST either make a positive acknowledgement ... or close
 * the Network Connection" [MQTT-3.3.5-2]. Nothing subscribes to it; `$` keeps it out of `#`.
 */
export const DROPPED_TOPIC = '$taureau/dropped'

/** Options of {@link createBroker}. */
export interface BrokerOptions {
  store: Store
  persistence: SqlitePersistence
  hasher: PasswordHasher
  metrics: Metrics
  logger: Logger
  config: Pick<GatewayConfig, 'mqtt' | 'auth' | 'tenantDefaults'>
  /** Longest a QoS 1/2 publish over the tenant's rate waits for a token before the device is disconnected. */
  maxThrottleWaitMs?: number
  now?: () => number
  /** A record per device connection (persistent session or not), for telling resends from new messages. */
  newConnection?: (persistent: boolean) => PublishConnection
}

/** A message the broker accepted, as the tenant sees it: for the functions' triggers. */
export interface BrokerMessage {
  tenantId: string
  /** Tenant-relative topic. */
  topic: string
  payload: Buffer
  qos: 0 | 1 | 2
  retain: boolean
  /** The publishing device; null for a will restored after a restart. */
  deviceId: string | null
  /** When the broker accepted it, ms since the epoch. */
  receivedAt: number
  /** The client, packet id and connection of a device's QoS 1/2 message. */
  source?: PublishSource
}

/**
 * Called for every message the broker accepts, before it is acknowledged or delivered. The broker
 * acknowledges the message (and delivers it) once `done(null)` is called; `done(error)` refuses it:
 * the device is disconnected without an acknowledgement and sends it again after reconnecting.
 */
export type MessageHandler = (message: BrokerMessage, done: (error: Error | null) => void) => void

/** A message seen by {@link Broker.watch}. */
export interface WatchedMessage {
  /** Tenant-relative topic. */
  topic: string
  payload: Buffer
  qos: 0 | 1 | 2
  retain: boolean
}

/** Where the broker listens. */
export interface BrokerAddress {
  mqttPort: number
  wsPort: number
}

/**
 * The multi-tenant MQTT broker: aedes with authentication of `DEVICE@TENANT`, tenant mounting of
 * topics and client ids, ACLs, quotas and strict packet checks, on MQTT/TCP and MQTT/WebSocket.
 */
export interface Broker {
  readonly aedes: Aedes
  listen(host: string, mqttPort: number, wsPort: number): Promise<BrokerAddress>
  /** Re-reads a tenant's quotas and ACL rules after a change through the API. */
  reloadTenant(tenantId: string): void
  /** Disconnects a deleted tenant's devices and erases its sessions and retained messages. */
  removeTenant(tenantId: string): void
  /**
   * Disconnects a rotated device's connections. Cut off by the server like any unexpected close,
   * they publish their wills.
   */
  disconnectDevice(tenantId: string, deviceId: string): void
  /**
   * Disconnects a removed device without publishing its wills (it is gone, not dead) and erases
   * the persistent sessions it opened (mounted client ids).
   */
  removeDevice(tenantId: string, deviceId: string, sessionClientIds: readonly string[]): void
  /** Sets the handler that sees every accepted message (the functions' dispatcher). */
  setMessageHandler(handler: MessageHandler | null): void
  /**
   * Publishes on behalf of the gateway (a function's output) to a tenant-relative topic: delivered
   * to the tenant's subscribers, retained within the tenant's quota. Returns false when the tenant
   * does not exist (any more).
   */
  publish(tenantId: string, topic: string, payload: Buffer, qos: 0 | 1 | 2, retain: boolean): boolean
  /**
   * Publishes as if one of the tenant's devices had (the management API's publish box): the
   * message goes to the functions first (journaled like a device's), then to the subscribers.
   * Resolves once it is delivered to aedes; rejects with `not_found` when the tenant is gone.
   */
  inject(tenantId: string, topic: string, payload: Buffer, qos: 0 | 1 | 2, retain: boolean): Promise<void>
  /**
   * Calls `listener` with every message published in the tenant on a topic that `filter` (tenant
   * relative) matches, until the returned function is called. For live views; no retained
   * messages are replayed.
   */
  watch(tenantId: string, filter: string, listener: (message: WatchedMessage) => void): () => void
  /** Connections open per tenant. */
  connections(tenantId: string): number
  /** Connections open per device of a tenant. */
  onlineDevices(tenantId: string): Map<string, number>
  close(): Promise<void>
}

interface TenantState {
  id: string
  prefix: string
  quotas: Quotas & { burstMessages: number }
  rules: AclRuleRecord[]
  tokens: number
  refilledAt: number
  clients: Set<Client>
  counters: TenantCounters
}

interface Pending {
  tenantId: string | null
  deviceId: string
  anonymous: boolean
  /** CONNACK return code to refuse with, decided before authentication. */
  rejectCode: number
  rejectReason: ConnectRefusal | null
  willTopic: string | null
  willBytes: number
}

interface Session {
  tenant: TenantState
  deviceId: string
  anonymous: boolean
  acl: Acl | null
  connection: PublishConnection | undefined
}

const CONNACK_UNACCEPTABLE_PROTOCOL = Buffer.from([0x20, 0x02, 0x00, 0x01])

// Per-connection state lives on aedes' Client under symbols: the hooks run per message and a
// property read is cheaper than a WeakMap lookup.
const SESSION = Symbol('taureau.session')
const PENDING = Symbol('taureau.pending')
const ADDRESS = Symbol('taureau.address')
const GRANTED = Symbol('taureau.granted')

/**
 * Levels a device's topic or filter may have: aedes and its matcher (qlobber) stop at 100, and the
 * tenant prefix is one more level.
 */
const MAX_LEVELS = 99
const MAX_CACHED_TOPICS = 1024
const MAX_CACHED_TOPIC_CHARS = 256

/** Whether a topic or filter has more than {@link MAX_LEVELS} levels; cheap for short topics. */
function tooDeep(topic: string): boolean {
  if (topic.length < MAX_LEVELS) return false
  let levels = 1
  for (let i = 0; i < topic.length; i++) {
    if (topic.charCodeAt(i) === 47 /* / */ && ++levels > MAX_LEVELS) return true
  }
  return false
}
/** aedes' Client with the internals the gateway reads (aedes 1.2, lib/client.js) and its own state. */
type GatewayClient = Client & {
  will: PublishPacket | null
  _will: PublishPacket | null
  subscriptions: Record<string, { qos: number }>
  _parser: Parameters<typeof installPacketGuard>[0]
  [SESSION]?: Session
  [PENDING]?: Pending
  [ADDRESS]?: string
  [GRANTED]?: Map<string, number>
}

class ConnectError extends Error {
  override readonly name = 'ConnectError'
  constructor(
    message: string,
    readonly returnCode: number,
  ) {
    super(message)
  }
}

/** Creates the broker; call `listen()` to accept connections. */
export async function createBroker(options: BrokerOptions): Promise<Broker> {
  const { store, hasher, metrics, logger, config } = options
  const now = options.now ?? Date.now
  const maxThrottleWaitMs = options.maxThrottleWaitMs ?? 1000
  const throttle: AuthThrottle = createAuthThrottle({
    freeFailures: config.auth.freeFailures,
    maxDelayMs: config.auth.maxDelayMs,
    now,
  })
  // A hash of a secret nobody has, verified when the device does not exist, so that a missing device
  // takes as long to refuse as a wrong secret (no device enumeration by timing).
  const dummyHash = hasher.hash(randomUUID())
  dummyHash.catch(() => {}) // a hasher closed before it finished; verify() reports that failure
  const tenants = new Map<string, TenantState>()
  let messageHandler: MessageHandler | null = null

  const loadTenant = (tenantId: string): TenantState | undefined => {
    const record = store.getTenant(tenantId)
    if (record === undefined) return undefined
    const quotas = { ...config.tenantDefaults.quotas, ...record.quotaOverrides } as Quotas
    const existing = tenants.get(tenantId)
    const state: TenantState = existing ?? {
      id: tenantId,
      prefix: `${tenantId}/`,
      quotas: { ...quotas, burstMessages: 0 },
      rules: [],
      tokens: 0,
      refilledAt: now(),
      clients: new Set(),
      counters: metrics.tenant(tenantId),
    }
    state.quotas = { ...quotas, burstMessages: quotas.burstMessages ?? quotas.maxMessagesPerSec }
    if (existing === undefined) state.tokens = state.quotas.burstMessages
    state.rules = store.listAclRules(tenantId, null)
    tenants.set(tenantId, state)
    return state
  }
  for (const tenant of store.listTenants()) loadTenant(tenant.id)
  const tenantState = (tenantId: string): TenantState | undefined =>
    tenants.get(tenantId) ?? loadTenant(tenantId)

  const refuse = (
    pending: Pending | undefined,
    reason: ConnectRefusal,
    returnCode: number,
    message: string,
  ): ConnectError => {
    // Only existing tenants become label values, so made-up names cannot grow the series.
    const tenantId = pending?.tenantId
    metrics.authFailure(
      reason,
      tenantId !== null && tenantId !== undefined && tenants.has(tenantId) ? tenantId : null,
    )
    return new ConnectError(message, returnCode)
  }

  const aedes = await Aedes.createBroker({
    persistence: options.persistence,
    connectTimeout: config.mqtt.connectTimeoutSec * 1000,
    queueLimit: config.mqtt.queueLimit,
    // Client ids are stored mounted (`tenant/id`); the 23-character limit of MQTT 3.1 is checked
    // on the device's own id in preConnect instead.
    maxClientsIdLength: 65_535 + 64,

    preConnect(client: GatewayClient, packet, callback) {
      // The packet hook read the claimed tenant when the CONNECT was parsed (see handle()).
      const pending = client[PENDING] ?? identify(packet.username, config.mqtt.anonymousTenant)
      client[PENDING] = pending
      const rawId = packet.clientId ?? ''
      if (rawId === '' && packet.clean === false) {
        // [MQTT-3.1.3-8]: a zero-byte client id needs clean session; CONNACK 0x02 then close.
        pending.rejectCode = 2
        pending.rejectReason = 'client_id'
      } else if (packet.protocolVersion === 3 && rawId.length > 23) {
        pending.rejectCode = 2
        pending.rejectReason = 'client_id'
      }
      if (pending.tenantId !== null) {
        const prefix = `${pending.tenantId}/`
        // Client ids are per tenant: two tenants may both use 'sensor-1' without taking over each other.
        packet.clientId = prefix + (rawId === '' ? `auto-${randomUUID()}` : rawId)
        if (packet.will) {
          pending.willTopic = packet.will.topic
          pending.willBytes = packet.will.payload?.length ?? 0
          packet.will.topic = prefix + packet.will.topic
        }
      }
      callback(null, true)
    },

    authenticate(client: GatewayClient, username, password, callback) {
      const pending = client[PENDING]
      if (pending === undefined || pending.tenantId === null || pending.rejectCode !== 0) {
        const code = pending?.rejectCode || 5
        const reason = pending?.rejectReason ?? 'bad_credentials'
        callback(refuse(pending, reason, code, 'Cannot connect as the client is not authorized'), false)
        return
      }
      const address = client[ADDRESS] ?? 'unknown'
      if (!throttle.enter(address)) {
        // Too many sign-ins from this address are being checked: refuse without hashing, so one
        // address cannot fill the hasher's queue and lock other devices out.
        throttle.recordRefused(address)
        callback(refuse(pending, 'busy', 3, 'Cannot connect as this address has sign-ins in progress'), false)
        return
      }
      const check = (): void => {
        if (client.closed) {
          // Gone while it waited out the delay: no hashing for a connection nobody will use.
          throttle.recordFailure(address)
          return
        }
        verify(pending, password).then(
          (device) => {
            if (client.closed) {
              throttle.recordFailure(address)
              return
            }
            if (device === null) {
              throttle.recordFailure(address)
              logger.info({ address, username }, 'refused CONNECT with bad credentials')
              callback(
                refuse(pending, 'bad_credentials', 5, 'Cannot connect as the credentials are wrong'),
                false,
              )
              return
            }
            throttle.recordSuccess(address)
            const tenant = tenants.get(pending.tenantId as string)
            // The device may have been removed or rotated while its secret was being checked.
            const current = pending.anonymous ? device : store.getDevice(tenant?.id ?? '', pending.deviceId)
            if (tenant === undefined || current === undefined || current.secretHash !== device.secretHash) {
              callback(refuse(pending, 'bad_credentials', 5, 'Cannot connect as the device changed'), false)
              return
            }
            // A reconnect with the same client id takes the old connection over, so it does not count.
            const replaced = (aedes as unknown as { clients: Record<string, Client> }).clients[client.id]
            const open =
              tenant.clients.size - (replaced !== undefined && tenant.clients.has(replaced) ? 1 : 0)
            if (open >= tenant.quotas.maxConnections) {
              logger.warn(
                { tenant: tenant.id, device: pending.deviceId },
                'refused CONNECT over the connection quota',
              )
              const message = `Cannot connect as tenant '${tenant.id}' is at its connection quota`
              callback(refuse(pending, 'connection_quota', 3, message), false)
              return
            }
            // A new persistent session past the tenant's bound is refused; an existing one resumes.
            if (
              !client.clean &&
              !options.persistence.hasSession(client.id) &&
              options.persistence.sessionCount(tenant.id) >= tenant.quotas.maxPersistentSessions
            ) {
              const message = `Cannot connect as tenant '${tenant.id}' is at its persistent session quota`
              callback(refuse(pending, 'session_quota', 3, message), false)
              return
            }
            const acl = compileAcl(
              pending.anonymous ? [] : store.listAclRules(tenant.id, pending.deviceId),
              tenant.rules,
            )
            if (pending.willTopic !== null && !willAllowed(pending, tenant, acl)) {
              callback(refuse(pending, 'will_denied', 5, 'Cannot connect as the will is not allowed'), false)
              return
            }
            if (!pending.anonymous) {
              try {
                if (!client.clean) store.recordDeviceSession(tenant.id, pending.deviceId, client.id)
              } catch (error) {
                // The device still connects (the journal refuses what it cannot store); only the
                // removal of this session with the device is lost, and the session quota bounds it.
                logger.error({ err: error, tenant: tenant.id }, 'cannot record a persistent session')
              }
              seen(tenant.id, pending.deviceId)
            }
            client[SESSION] = {
              tenant,
              deviceId: pending.deviceId,
              anonymous: pending.anonymous,
              acl,
              connection: options.newConnection?.(!client.clean),
            }
            tenant.clients.add(client)
            tenant.counters.connections = tenant.clients.size
            client.conn.once('close', () => {
              tenant.clients.delete(client)
              tenant.counters.connections = tenant.clients.size
              if (!pending.anonymous && tenants.get(tenant.id) === tenant) seen(tenant.id, pending.deviceId)
            })
            callback(null, true)
          },
          (error: unknown) => {
            throttle.recordFailure(address)
            logger.warn({ err: error }, 'could not verify a device secret')
            callback(
              refuse(pending, 'busy', 3, 'Cannot connect as the gateway is busy verifying other devices'),
              false,
            )
          },
        )
      }
      const delayMs = throttle.delayFor(address)
      if (delayMs > 0) setTimeout(check, delayMs)
      else check()
    },

    authorizePublish(client: GatewayClient | null, packet: PublishPacket, callback) {
      if (client === null || packet === client.will) {
        authorizeWill(client, packet, callback)
        return
      }
      const session = client[SESSION]
      if (session === undefined) {
        callback(new Error('Cannot publish as the client is not signed in'))
        return
      }
      const tenant = session.tenant
      const topic = packet.topic
      const bytes = packet.payload.length
      if (bytes > tenant.quotas.maxPayloadBytes) {
        drop(client, packet, tenant, 'payload_size', callback)
        return
      }
      if (topic.charCodeAt(0) === 36 /* $ */) {
        drop(client, packet, tenant, 'reserved_topic', callback)
        return
      }
      if (tooDeep(topic)) {
        callback(new Error(`Cannot accept the publish as its topic has more than ${MAX_LEVELS} levels`))
        return
      }
      if (session.acl !== null && !session.acl.publish(topic)) {
        drop(client, packet, tenant, 'acl', callback)
        return
      }
      const waitMs = takeToken(tenant, packet.qos)
      if (waitMs < 0) {
        drop(client, packet, tenant, 'rate', callback)
        return
      }
      packet.topic = tenant.prefix + topic
      tenant.counters.messagesIn++
      tenant.counters.bytesIn += bytes
      const source =
        packet.qos > 0 && session.connection !== undefined && typeof packet.messageId === 'number'
          ? {
              clientId: client.id,
              packetId: packet.messageId,
              dup: packet.dup === true,
              connection: session.connection,
            }
          : undefined
      accept(tenant, packet, session.deviceId, source, (error) => {
        if (error !== null || waitMs === 0) callback(error)
        else setTimeout(callback, waitMs, null)
      })
    },

    authorizeSubscribe(client: GatewayClient, sub: Subscription, callback) {
      // Filters arrive mounted: SUBSCRIBE filters are mounted by the packet hook before aedes sees
      // them (aedes stores a persistent session's whole SUBSCRIBE before this hook has run for all of
      // its filters), and restored filters were stored mounted.
      const session = client[SESSION]
      if (session === undefined) {
        callback(new Error('Cannot subscribe as the client is not signed in'), null)
        return
      }
      client[GRANTED]?.clear()
      const prefix = session.tenant.prefix
      const relative = sub.topic.startsWith(prefix) ? sub.topic.slice(prefix.length) : null
      let allowed =
        relative !== null &&
        relative.charCodeAt(0) !== 36 /* $ */ &&
        (session.acl === null || session.acl.subscribe(relative))
      if (allowed && client.subscriptions[sub.topic] === undefined) {
        allowed = Object.keys(client.subscriptions).length < config.mqtt.maxSubscriptionsPerClient
      }
      // The first stored filter makes a new persistent session: the tenant's bound applies here too,
      // as several new sessions may have passed the check at CONNECT before any subscribed.
      if (allowed && !client.clean && client.connected && !options.persistence.hasSession(client.id)) {
        allowed =
          options.persistence.sessionCount(session.tenant.id) < session.tenant.quotas.maxPersistentSessions
      }
      if (!allowed) {
        // aedes stores a persistent session's whole SUBSCRIBE, refused entries included, possibly
        // before this hook ran for them. At QoS 0 a refused entry queues nothing meanwhile; it is
        // removed from the store once the SUBACK is sent (see the 'subscribe' listener).
        sub.qos = 0
        callback(null, null) // SUBACK 0x80
        return
      }
      callback(null, sub)
    },

    authorizeForward(client: GatewayClient, packet: AedesPublishPacket) {
      const session = client[SESSION]
      if (session === undefined) return null
      const prefix = session.tenant.prefix
      const topic = packet.topic
      if (!topic.startsWith(prefix)) return null
      const relative = topic.slice(prefix.length)
      if (session.acl !== null && !session.acl.deliver(relative)) return null
      if (packet.qos > 0) packet.qos = grantedQos(client, topic, packet.qos) as typeof packet.qos
      // aedes hands this hook a packet of this delivery alone (a copy per subscription, per
      // retained message or per queued message), so it can be rewritten in place.
      packet.topic = relative
      session.tenant.counters.messagesOut++
      session.tenant.counters.bytesOut += packet.payload.length
      return packet
    },
  } as ConstructorParameters<typeof Aedes>[0])

  aedes.on('clientError', (client: Client, error: Error) => {
    logger.debug({ client: client.id, err: error.message }, 'client error')
  })
  aedes.on('connectionError', (_client: Client, error: Error) => {
    logger.debug({ err: error.message }, 'connection error')
  })
  // aedes reports failures of its own background work (stored wills, persistence) here; without a
  // listener an EventEmitter 'error' would end the process.
  const events = aedes as unknown as NodeJS.EventEmitter
  events.on('error', (error: Error) => {
    logger.error({ err: error }, 'broker error')
  })
  // The granted-QoS cache of a client is stale once its subscriptions change.
  events.on('unsubscribe', (_topics: unknown, client: GatewayClient) => client[GRANTED]?.clear())
  // After SUBACK (every filter decided and stored): erase refused filters that aedes stored with the
  // session's SUBSCRIBE, so refusals take no room in the store, and clear the granted-QoS cache.
  events.on('subscribe', (subs: Array<{ topic: string; qos: number }>, client: GatewayClient) => {
    client[GRANTED]?.clear()
    if (client.clean) return
    const refused = subs
      .filter((sub) => sub.qos === 128 && client.subscriptions[sub.topic] === undefined)
      .map((sub) => sub.topic)
    if (refused.length === 0) return
    options.persistence.removeSubscriptions(client, refused).catch((error: unknown) => {
      logger.warn({ err: error }, 'could not erase refused subscriptions')
    })
  })

  /** Verifies a device's secret; resolves with the device record, or null when it does not match. */
  async function verify(
    pending: Pending,
    password: Buffer | undefined,
  ): Promise<{ secretHash: string } | null> {
    const tenantId = pending.tenantId as string
    if (pending.anonymous) return tenantState(tenantId) === undefined ? null : { secretHash: '' }
    const device = tenants.has(tenantId) ? store.getDevice(tenantId, pending.deviceId) : undefined
    const secret = password === undefined ? '' : password.toString('utf8')
    const ok = await hasher.verify(device?.secretHash ?? (await dummyHash), secret)
    return ok && device !== undefined && password !== undefined ? device : null
  }

  function willAllowed(pending: Pending, tenant: TenantState, acl: Acl | null): boolean {
    const topic = pending.willTopic as string
    return (
      topic.charCodeAt(0) !== 36 &&
      !tooDeep(topic) &&
      pending.willBytes <= tenant.quotas.maxPayloadBytes &&
      (acl === null || acl.publish(topic))
    )
  }

  /**
   * Lets a will through only while its tenant exists and its rules still allow it: a will stored by
   * an earlier run (`client` null) or one of a device whose tenant or rules changed is routed
   * nowhere instead. Refusing with an error would make aedes retry a stored will forever.
   */
  function authorizeWill(
    client: GatewayClient | null,
    packet: PublishPacket,
    callback: (error: Error | null) => void,
  ): void {
    const tenant = willTenant(client, packet)
    if (tenant === undefined) {
      routeNowhere(packet)
      callback(null)
      return
    }
    accept(tenant, packet, client?.[SESSION]?.deviceId ?? null, undefined, (error) => {
      if (error === null) {
        callback(null)
        return
      }
      // Refusing a will would make aedes try a stored one again forever: it goes nowhere instead.
      logger.warn({ err: error, tenant: tenant.id }, 'a will could not be journaled and was not published')
      routeNowhere(packet)
      callback(null)
    })
  }

  /** The tenant a will (topic mounted) may be published in; undefined when it may not be. */
  function willTenant(client: GatewayClient | null, packet: PublishPacket): TenantState | undefined {
    if (client === null) {
      const slash = packet.topic.indexOf('/')
      return slash > 0 ? tenants.get(packet.topic.slice(0, slash)) : undefined
    }
    const session = client[SESSION]
    const tenant = session?.tenant
    if (session === undefined || tenant === undefined || tenants.get(tenant.id) !== tenant) return undefined
    if (!packet.topic.startsWith(tenant.prefix)) return undefined
    const allowed = session.acl === null || session.acl.publish(packet.topic.slice(tenant.prefix.length))
    return allowed ? tenant : undefined
  }

  /**
   * What happens to every message the broker lets through (its topic mounted): the retained bound,
   * then the functions (which journal it), and `done` when it may be acknowledged. A failure of the
   * handler itself is logged and the message refused: it must not reach aedes, which would end the
   * process, nor be acknowledged when it may not have been stored.
   */
  function accept(
    tenant: TenantState,
    packet: PublishPacket,
    deviceId: string | null,
    source: PublishSource | undefined,
    done: (error: Error | null) => void,
  ): void {
    capRetained(tenant, packet)
    if (messageHandler === null) {
      done(null)
      return
    }
    let answered = false
    const once = (error: Error | null) => {
      if (answered) return
      answered = true
      done(error)
    }
    try {
      messageHandler(
        {
          tenantId: tenant.id,
          topic: packet.topic.slice(tenant.prefix.length),
          payload: packet.payload as Buffer,
          qos: packet.qos,
          retain: packet.retain,
          deviceId,
          receivedAt: now(),
          ...(source === undefined ? {} : { source }),
        },
        once,
      )
    } catch (error) {
      logger.error({ err: error, tenant: tenant.id }, 'cannot hand a message to the functions')
      once(new Error('Cannot accept the publish as the gateway failed to take it'))
    }
  }

  /** Records when a device was last seen; a store that refuses the write only loses that time. */
  function seen(tenantId: string, deviceId: string): void {
    try {
      store.markDeviceSeen(tenantId, deviceId)
    } catch (error) {
      logger.warn({ err: error, tenant: tenantId, device: deviceId }, 'cannot record when a device was seen')
    }
  }

  /** Sends a publish nowhere: to {@link DROPPED_TOPIC}, never stored as retained. */
  function routeNowhere(packet: PublishPacket): void {
    packet.topic = DROPPED_TOPIC
    packet.retain = false
  }

  /**
   * Past the tenant's retained bound a new retained topic is still delivered, only not kept.
   * `packet.topic` is mounted.
   */
  function capRetained(tenant: TenantState, packet: PublishPacket): void {
    if (!packet.retain || packet.payload.length === 0) return
    const persistence = options.persistence
    if (persistence.retainedCount(tenant.id) < tenant.quotas.maxRetainedMessages) return
    if (persistence.hasRetained(packet.topic)) return
    packet.retain = false
    tenant.counters.drops.retained_quota++
  }

  function takeToken(tenant: TenantState, qos: number): number {
    const at = now()
    const rate = tenant.quotas.maxMessagesPerSec
    tenant.tokens = Math.min(
      tenant.quotas.burstMessages,
      tenant.tokens + ((at - tenant.refilledAt) * rate) / 1000,
    )
    tenant.refilledAt = at
    if (tenant.tokens >= 1) {
      tenant.tokens -= 1
      return 0
    }
    // QoS 0 may be dropped; a QoS 1/2 publish waits for its token (the socket is not read meanwhile,
    // so the device is slowed by TCP back-pressure), up to a bound.
    if (qos === 0) return -1
    const waitMs = ((1 - tenant.tokens) * 1000) / rate
    if (waitMs > maxThrottleWaitMs) return -1
    tenant.tokens -= 1
    return Math.ceil(waitMs)
  }

  function drop(
    client: GatewayClient,
    packet: PublishPacket,
    tenant: TenantState,
    reason: DropReason,
    callback: (error: Error | null) => void,
  ): void {
    tenant.counters.drops[reason]++
    const session = client[SESSION]
    logger.debug(
      { tenant: tenant.id, device: session?.deviceId, topic: packet.topic, reason },
      'dropped a publish',
    )
    if (packet.qos > 0 && (reason === 'rate' || reason === 'payload_size')) {
      // Never acknowledge what a quota refused: a device that saw PUBACK trusts the message is
      // delivered. Closing without an ack makes it resend after reconnecting.
      callback(new Error(`Cannot accept the publish as it is over tenant '${tenant.id}' quota (${reason})`))
      return
    }
    routeNowhere(packet)
    callback(null)
  }

  // aedes caps QoS only for an exact-topic subscription; compute the largest QoS granted by any of
  // this client's matching subscriptions (MQTT 3.1.1 section 3.8.4: min(published, granted)). The
  // answer per topic is cached until the client's subscriptions change.
  function grantedQos(client: GatewayClient, topic: string, qos: number): number {
    let cache = client[GRANTED]
    if (cache === undefined) {
      cache = new Map()
      client[GRANTED] = cache
    }
    let granted = cache.get(topic)
    if (granted === undefined) {
      const subscriptions = client.subscriptions
      granted = subscriptions[topic]?.qos ?? -1
      if (granted < 2) {
        for (const filter in subscriptions) {
          const sub = subscriptions[filter] as { qos: number }
          if (sub.qos > granted && filterCovers(filter, topic)) granted = sub.qos
        }
      }
      if (topic.length <= MAX_CACHED_TOPIC_CHARS) {
        if (cache.size >= MAX_CACHED_TOPICS) cache.clear()
        cache.set(topic, granted)
      }
    }
    return granted < 0 ? qos : Math.min(qos, granted)
  }

  function clientsOf(tenantId: string, deviceId: string): GatewayClient[] {
    const clients = (tenants.get(tenantId)?.clients ?? new Set()) as Set<GatewayClient>
    return [...clients].filter((client) => client[SESSION]?.deviceId === deviceId)
  }

  function closeWithoutWill(client: GatewayClient): void {
    client.will = null
    client._will = null
    // aedes deletes a stored will only when it publishes it: delete it here, or a restart (a new
    // broker id) would publish it as the will of a dead broker.
    options.persistence.delWill({ id: client.id }).catch((error: unknown) => {
      logger.warn({ err: error }, 'could not delete a will')
    })
    client.close()
  }

  const servers: Array<Server | WebSocketServer> = []

  function handle(stream: Duplex, address: string, req?: IncomingMessage): void {
    const client = aedes.handle(stream, req as IncomingMessage) as GatewayClient
    client[ADDRESS] = address
    installPacketGuard(client._parser, {
      maxRemainingLengthBytes: config.mqtt.maxPacketBytes,
      // [MQTT-3.1.2-2]: an unsupported protocol level gets CONNACK 0x01 before the close.
      onUnsupportedProtocolLevel: () => {
        stream.write(CONNACK_UNACCEPTABLE_PROTOCOL)
      },
      onViolation: (reason) => {
        metrics.protocolViolation()
        logger.debug({ address, reason }, 'closed a connection for a protocol violation')
      },
      onPacket: (packet) => {
        switch (packet.cmd) {
          case 'connect':
            // The tenant a client names, read as its CONNECT is parsed: later packets of the same read
            // are parsed before aedes runs the connect hooks, and their filters must be mounted.
            client[PENDING] = identify(packet.username, config.mqtt.anonymousTenant)
            break
          case 'subscribe':
          case 'unsubscribe': {
            // aedes has no hook for UNSUBSCRIBE, and stores a persistent session's SUBSCRIBE before
            // its authorizeSubscribe hook has seen every filter: mount the filters here, once, with
            // the tenant named at CONNECT (the connection closes unless that tenant signs it in).
            const tenantId = client[PENDING]?.tenantId
            const prefix = tenantId === null || tenantId === undefined ? '\u0000/' : `${tenantId}/`
            const filters = packet.cmd === 'subscribe' ? packet.subscriptions : packet.unsubscriptions
            if (filters.length > config.mqtt.maxFiltersPerSubscribe) {
              throw new Error(
                `Cannot accept ${packet.cmd.toUpperCase()} as it has ${filters.length} topic filters, more than ${config.mqtt.maxFiltersPerSubscribe}`,
              )
            }
            if (packet.cmd === 'subscribe') {
              for (const sub of packet.subscriptions) {
                if (tooDeep(sub.topic))
                  throw new Error(`Cannot accept SUBSCRIBE as a filter has over ${MAX_LEVELS} levels`)
                sub.topic = prefix + sub.topic
              }
            } else {
              packet.unsubscriptions = packet.unsubscriptions.map((filter: string) => prefix + filter)
            }
            break
          }
        }
      },
    })
  }

  const broker: Broker = {
    aedes,
    async listen(host, mqttPort, wsPort) {
      const tcp = createServer((socket) => {
        socket.setNoDelay(true)
        handle(socket, socket.remoteAddress ?? 'unknown')
      })
      servers.push(tcp)
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject)
        tcp.listen(mqttPort, host, () => {
          tcp.off('error', reject)
          resolve()
        })
      })
      const ws = new WebSocketServer({
        host,
        port: wsPort,
        maxPayload: 64 * 1024 * 1024,
        // MQTT over WebSocket uses the 'mqtt' subprotocol (MQTT 3.1.1 section 6).
        handleProtocols: (protocols) =>
          protocols.has('mqtt') ? 'mqtt' : protocols.has('mqttv3.1') ? 'mqttv3.1' : false,
      })
      servers.push(ws)
      await new Promise<void>((resolve, reject) => {
        ws.once('error', reject)
        ws.once('listening', () => {
          ws.off('error', reject)
          resolve()
        })
      })
      ws.on('connection', (socket, req) => {
        const stream = createWebSocketStream(socket)
        stream.on('error', () => socket.terminate())
        handle(stream, req.socket.remoteAddress ?? 'unknown', req)
      })
      return { mqttPort: (tcp.address() as AddressInfo).port, wsPort: (ws.address() as AddressInfo).port }
    },
    reloadTenant(tenantId) {
      const tenant = loadTenant(tenantId)
      if (tenant === undefined) return
      for (const client of tenant.clients as Set<GatewayClient>) {
        const session = client[SESSION]
        if (session === undefined) continue
        session.acl = compileAcl(
          session.anonymous ? [] : store.listAclRules(tenantId, session.deviceId),
          tenant.rules,
        )
      }
    },
    removeTenant(tenantId) {
      const tenant = tenants.get(tenantId)
      // Forgotten first, so wills published while the clients close are routed nowhere.
      tenants.delete(tenantId)
      if (tenant !== undefined)
        for (const client of tenant.clients as Set<GatewayClient>) closeWithoutWill(client)
      options.persistence.deleteClientsWithPrefix(`${tenantId}/`)
      metrics.removeTenant(tenantId)
    },
    disconnectDevice(tenantId, deviceId) {
      for (const client of clientsOf(tenantId, deviceId)) client.close()
    },
    removeDevice(tenantId, deviceId, sessionClientIds) {
      for (const client of clientsOf(tenantId, deviceId)) closeWithoutWill(client)
      for (const clientId of sessionClientIds) options.persistence.deleteClient(clientId)
    },
    setMessageHandler(handler) {
      messageHandler = handler
    },
    publish(tenantId, topic, payload, qos, retain) {
      const tenant = tenants.get(tenantId)
      if (tenant === undefined) return false
      const packet = gatewayPacket(tenant, topic, payload, qos, retain)
      capRetained(tenant, packet)
      aedes.publish(packet, () => {})
      return true
    },
    inject(tenantId, topic, payload, qos, retain) {
      const tenant = tenants.get(tenantId)
      if (tenant === undefined) {
        return Promise.reject(
          new GatewayError(GATEWAY_ERROR_CODES.notFound, `Cannot find tenant ${quote(tenantId)}`),
        )
      }
      const packet = gatewayPacket(tenant, topic, payload, qos, retain)
      return new Promise<void>((resolve, reject) => {
        accept(tenant, packet, null, undefined, (error) => {
          if (error !== null) {
            reject(error)
            return
          }
          aedes.publish(packet, (publishError) => (publishError ? reject(publishError) : resolve()))
        })
      })
    },
    watch(tenantId, filter, listener) {
      const prefix = `${tenantId}/`
      const deliver = (packet: AedesPublishPacket, callback: () => void): void => {
        try {
          listener({
            topic: packet.topic.slice(prefix.length),
            payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
            qos: packet.qos,
            retain: packet.retain,
          })
        } finally {
          callback()
        }
      }
      aedes.subscribe(prefix + filter, deliver, () => {})
      return () => aedes.unsubscribe(prefix + filter, deliver, () => {})
    },
    connections: (tenantId) => tenants.get(tenantId)?.clients.size ?? 0,
    onlineDevices(tenantId) {
      const online = new Map<string, number>()
      for (const client of (tenants.get(tenantId)?.clients ?? []) as Iterable<GatewayClient>) {
        const deviceId = client[SESSION]?.deviceId
        if (deviceId !== undefined) online.set(deviceId, (online.get(deviceId) ?? 0) + 1)
      }
      return online
    },
    async close() {
      // Stop accepting first; a server's close callback waits for its open connections, which
      // end only when aedes closes its clients, so the callbacks are awaited after that.
      const stopped = servers.map(
        (server) =>
          new Promise<void>((resolve) => (server as { close(cb: () => void): void }).close(() => resolve())),
      )
      await new Promise<void>((resolve) => aedes.close(() => resolve()))
      await Promise.all(stopped)
    },
  }
  return broker
}

/** Reads `DEVICE@TENANT` (split at the last `@`), or the anonymous tenant for a client without a username. */
function identify(username: string | undefined, anonymousTenant: string | null): Pending {
  const pending: Pending = {
    tenantId: null,
    deviceId: '',
    anonymous: false,
    rejectCode: 0,
    rejectReason: null,
    willTopic: null,
    willBytes: 0,
  }
  if (username === undefined) {
    if (anonymousTenant !== null) {
      pending.tenantId = anonymousTenant
      pending.deviceId = 'anonymous'
      pending.anonymous = true
    }
    return pending
  }
  const at = username.lastIndexOf('@')
  const tenantId = username.slice(at + 1)
  const deviceId = username.slice(0, at)
  // A malformed username names no tenant, so nothing is mounted under it and authentication fails.
  if (at <= 0 || !TENANT_ID_PATTERN.test(tenantId) || !DEVICE_ID_PATTERN.test(deviceId)) return pending
  pending.deviceId = deviceId
  pending.tenantId = tenantId
  return pending
}

/** A PUBLISH the gateway itself makes in a tenant (mounted topic). */
function gatewayPacket(
  tenant: TenantState,
  topic: string,
  payload: Buffer,
  qos: 0 | 1 | 2,
  retain: boolean,
): AedesPublishPacket {
  return {
    cmd: 'publish',
    topic: tenant.prefix + topic,
    payload,
    qos,
    retain,
    dup: false,
  } as AedesPublishPacket
}
