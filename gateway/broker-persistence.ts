import { Readable } from 'node:stream'
import type Database from 'better-sqlite3'
// @ts-expect-error qlobber ships no types.
import qlobber from 'qlobber'
// @ts-expect-error as above; its aedes matcher lives at a deep path.
import qlobberSub from 'qlobber/aedes/qlobber-sub.js'
import { GATEWAY_ERROR_CODES, GatewayError, quote } from './errors.ts'

// Both are CommonJS modules: their default import is their module.exports.
const QlobberSub = qlobberSub as new (options: _QlobberOptions) => _QlobberSub
const { QlobberTrue } = qlobber as { QlobberTrue: new (options: _QlobberOptions) => _QlobberTrue }

/** Default of {@link SqlitePersistenceOptions.maxQueuedPerClient}. */
export const DEFAULT_MAX_QUEUED_PER_CLIENT = 10_000

/** The MQTT client as the persistence sees it: its id, mounted as `<tenant>/<device's id>`. */
export interface PersistenceClient {
  readonly id: string
}

/**
 * The broker as the persistence sees it (an aedes instance fits): the id written into wills and
 * the counter that aedes-packet numbers packets with.
 */
export interface PersistenceBroker {
  readonly id: string
  counter: number
}

/**
 * A packet that aedes stores: a PUBLISH (retained, queued, incoming QoS 2), a will, or the PUBREL
 * that replaces a queued QoS 2 PUBLISH once the client sent PUBREC. The named fields are stored as
 * columns; other fields (a will's `clientId`, MQTT 5 `properties`) are kept in a JSON column.
 */
export interface PersistedPacket {
  cmd?: string | undefined
  topic?: string | undefined
  payload?: Buffer | Uint8Array | string | undefined
  qos?: number | undefined
  retain?: boolean | undefined
  dup?: boolean | undefined
  messageId?: number | undefined
  brokerId?: string | null | undefined
  brokerCounter?: number | undefined
  [field: string]: unknown
}

/** A subscription of a persistent session (clean=false), as in the SUBSCRIBE packet. */
export interface SubscriptionRecord {
  topic: string
  qos: number
  /** MQTT 5 retain handling; aedes 1.2 speaks MQTT 3.1.1, so it is usually undefined. */
  rh?: number | undefined
  /** MQTT 5 retain as published. */
  rap?: boolean | undefined
  /** MQTT 5 no local. */
  nl?: boolean | undefined
  /** MQTT 5 subscription identifier; present only when the subscription carried one. */
  subscriptionIdentifier?: number | undefined
}

/** A persistent session's QoS 1/2 subscription that matched a topic: where to queue a message. */
export interface TopicSubscription {
  clientId: string
  topic: string
  qos: number
  rh: number | undefined
  rap: boolean | undefined
  nl: boolean | undefined
}

/** Options of {@link createSqlitePersistence}. */
export interface SqlitePersistenceOptions {
  /**
   * An open database. The gateway owns it: it opens it, sets its pragmas (WAL, `synchronous`) and
   * closes it after the broker and this persistence are gone.
   */
  db: Database.Database
  /**
   * Most messages queued for one client (QoS 1/2 messages waiting for, or in flight to, a
   * persistent session). When a new message would exceed it the oldest queued message of that
   * client is dropped and {@link SqlitePersistence.droppedQueued} counts it: an offline device
   * gets the newest data, and one that never returns cannot fill the disk. Default
   * {@link DEFAULT_MAX_QUEUED_PER_CLIENT}.
   */
  maxQueuedPerClient?: number
}

/**
 * aedes' persistence (the async interface of aedes-persistence 11 that aedes 1.2 calls) on
 * better-sqlite3, so retained messages, the subscriptions of persistent sessions, their queued
 * QoS 1/2 messages, incoming QoS 2 packets and wills survive a restart of the gateway.
 *
 * Every write reaches SQLite before the returned promise settles (better-sqlite3 is synchronous);
 * it commits on its own, or with the caller's transaction if one is open on the connection.
 * Subscriptions are also held in memory (a qlobber trie), because aedes asks
 * `subscriptionsByTopic` on every QoS 1/2 PUBLISH. Streams yield {@link PersistedPacket}s,
 * except `getClientList`, which yields client ids.
 */
export interface SqlitePersistence {
  /** The broker given to `setup`, until then undefined. */
  readonly broker: PersistenceBroker | undefined
  /** Queued messages dropped by this instance at `maxQueuedPerClient`. */
  readonly droppedQueued: number
  setup(broker: PersistenceBroker): Promise<void>
  storeRetained(packet: PersistedPacket): Promise<void>
  createRetainedStream(pattern: string): Readable
  createRetainedStreamCombi(patterns: readonly string[]): Readable
  addSubscriptions(client: PersistenceClient, subs: readonly SubscriptionRecord[]): Promise<void>
  removeSubscriptions(client: PersistenceClient, topics: readonly string[]): Promise<void>
  subscriptionsByClient(client: PersistenceClient): Promise<SubscriptionRecord[]>
  countOffline(): Promise<{ subsCount: number; clientsCount: number }>
  subscriptionsByTopic(topic: string): Promise<TopicSubscription[]>
  cleanSubscriptions(client: PersistenceClient): Promise<void>
  outgoingEnqueue(sub: { clientId: string }, packet: PersistedPacket): Promise<void>
  outgoingEnqueueCombi(subs: readonly { clientId: string }[], packet: PersistedPacket): Promise<void>
  outgoingUpdate(client: PersistenceClient, packet: PersistedPacket): Promise<void>
  outgoingClearMessageId(
    client: PersistenceClient,
    packet: PersistedPacket,
  ): Promise<PersistedPacket | undefined>
  outgoingStream(client: PersistenceClient): Readable
  incomingStorePacket(client: PersistenceClient, packet: PersistedPacket): Promise<void>
  incomingGetPacket(client: PersistenceClient, packet: PersistedPacket): Promise<PersistedPacket>
  incomingDelPacket(client: PersistenceClient, packet: PersistedPacket): Promise<void>
  cleanIncoming(client: PersistenceClient): Promise<void>
  putWill(client: PersistenceClient, packet: PersistedPacket): Promise<void>
  getWill(client: PersistenceClient): Promise<PersistedPacket | undefined>
  delWill(client: PersistenceClient): Promise<PersistedPacket | undefined>
  streamWill(brokers?: Readonly<Record<string, unknown>>): Readable
  getClientList(topic: string): Readable
  /**
   * Erases the sessions (subscriptions, queued messages, incoming packets, wills) of every client
   * whose id starts with `prefix`, and every retained message whose topic starts with it: what a
   * deleted tenant leaves behind (`deleteClientsWithPrefix('acme/')`). One transaction.
   */
  /** Deletes everything stored for one client id: its subscriptions, queue, QoS 2 state and will. */
  deleteClient(clientId: string): void
  /** Whether a retained message is stored under `topic`. */
  hasRetained(topic: string): boolean
  /** Retained messages stored under the first topic level `level`. */
  retainedCount(level: string): number
  /** Persistent sessions with stored subscriptions whose client id's first level is `level`. */
  sessionCount(level: string): number
  /** Whether the client id has a persistent session with stored subscriptions. */
  hasSession(clientId: string): boolean
  deleteClientsWithPrefix(prefix: string): void
  /**
   * Releases the in-memory state; later calls reject. Does not close the database, which belongs
   * to the caller. aedes never calls it: call it after `broker.close()` and before closing the
   * database. Idempotent.
   */
  destroy(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/**
 * Creates the tables of the broker persistence if they do not exist. Part of the gateway's first
 * migration, and called by {@link createSqlitePersistence} too, so a database that only ever held
 * the broker works. A later change of these tables needs a new migration: `IF NOT EXISTS` leaves
 * an existing table as it is.
 */
export function migrateBrokerPersistence(db: Database.Database): void {
  // Packets are columns; `payload_is_text` remembers a string payload (aedes' publish() API takes
  // one) in a STRICT BLOB column; `extra` is JSON of the rare fields that have no column.
  const packetColumns = `
    cmd TEXT,
    payload BLOB,
    payload_is_text INTEGER NOT NULL DEFAULT 0,
    qos INTEGER,
    retain INTEGER,
    dup INTEGER,
    broker_id TEXT,
    broker_counter INTEGER,
    extra TEXT`
  db.exec(`
    CREATE TABLE IF NOT EXISTS mqtt_retained (
      topic TEXT PRIMARY KEY,
      message_id INTEGER,${packetColumns}
    ) STRICT;
    CREATE TABLE IF NOT EXISTS mqtt_subscriptions (
      seq INTEGER PRIMARY KEY,
      client_id TEXT NOT NULL,
      topic TEXT NOT NULL,
      qos INTEGER NOT NULL,
      rh INTEGER,
      rap INTEGER,
      nl INTEGER,
      subscription_identifier INTEGER,
      UNIQUE (client_id, topic)
    ) STRICT;
    CREATE TABLE IF NOT EXISTS mqtt_outgoing (
      seq INTEGER PRIMARY KEY,
      client_id TEXT NOT NULL,
      topic TEXT,
      message_id INTEGER,${packetColumns},
      UNIQUE (client_id, broker_id, broker_counter)
    ) STRICT;
    CREATE INDEX IF NOT EXISTS mqtt_outgoing_by_client ON mqtt_outgoing (client_id, seq);
    CREATE INDEX IF NOT EXISTS mqtt_outgoing_by_message_id ON mqtt_outgoing (client_id, message_id);
    CREATE TABLE IF NOT EXISTS mqtt_incoming (
      client_id TEXT NOT NULL,
      message_id INTEGER NOT NULL,
      topic TEXT,${packetColumns},
      PRIMARY KEY (client_id, message_id)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS mqtt_wills (
      client_id TEXT PRIMARY KEY,
      topic TEXT,
      message_id INTEGER,${packetColumns}
    ) STRICT;
  `)
}

/**
 * Creates aedes' persistence over `options.db` (see {@link SqlitePersistence}); pass it as
 * `Aedes.createBroker({ persistence })`. Creates its tables if needed and loads the subscriptions
 * of persistent sessions into memory.
 */
export function createSqlitePersistence(options: SqlitePersistenceOptions): SqlitePersistence {
  const maxQueuedPerClient = options.maxQueuedPerClient ?? DEFAULT_MAX_QUEUED_PER_CLIENT
  if (!Number.isSafeInteger(maxQueuedPerClient) || maxQueuedPerClient < 1) {
    throw new RangeError(
      `Cannot create the broker persistence as maxQueuedPerClient must be a positive integer: ${quote(maxQueuedPerClient)}`,
    )
  }
  migrateBrokerPersistence(options.db)
  return new _SqlitePersistence(options.db, maxQueuedPerClient)
}

// Same options as aedes-persistence's memory persistence, so topics match the same way.
const QLOBBER_OPTIONS: _QlobberOptions = { separator: '/', wildcard_one: '+', wildcard_some: '#' }

// Rows read per query by the streams: memory stays bounded however many rows match, and no
// statement stays open while aedes writes between two reads of a stream.
const PAGE_ROWS = 256

// Fields stored in columns of every packet table.
const COLUMN_FIELDS = new Set([
  'cmd',
  'topic',
  'payload',
  'qos',
  'retain',
  'dup',
  'messageId',
  'brokerId',
  'brokerCounter',
])

// Fields besides the columns that aedes-packet's Packet copies. The outgoing queue and the
// incoming store hold Packets (as the memory persistence does), so only these are kept there.
const PACKET_EXTRA_FIELDS = new Set(['clientId', 'nl', 'properties', 'messageExpiry'])

interface _QlobberOptions {
  separator: string
  wildcard_one: string
  wildcard_some: string
}

interface _QlobberSub {
  readonly subscriptionsCount: number
  add(topic: string, value: TopicSubscription): void
  remove(topic: string, value: { clientId: string; topic: string }): void
  match(topic: string): TopicSubscription[]
}

interface _QlobberTrue {
  add(topic: string): void
  test(topic: string): boolean
}

type _StoredSubscription = Omit<SubscriptionRecord, 'topic'>

interface _PacketColumns {
  cmd: string | null
  topic: string | null
  payload: Buffer | null
  payload_is_text: 0 | 1
  qos: number | null
  retain: 0 | 1 | null
  dup: 0 | 1 | null
  message_id: number | null
  broker_id: string | null
  broker_counter: number | null
  extra: string | null
}

interface _OutgoingRow extends _PacketColumns {
  seq: number
}

interface _RetainedRow extends _PacketColumns {
  topic: string
}

interface _WillRow extends _PacketColumns {
  client_id: string
}

interface _SubscriptionRow {
  client_id: string
  topic: string
  qos: number
  rh: number | null
  rap: number | null
  nl: number | null
  subscription_identifier: number | null
}

const PACKET_COLUMN_NAMES =
  'cmd, topic, payload, payload_is_text, qos, retain, dup, message_id, broker_id, broker_counter, extra'
const PACKET_COLUMN_PARAMS =
  '@cmd, @topic, @payload, @payload_is_text, @qos, @retain, @dup, @message_id, @broker_id, @broker_counter, @extra'

function _prepareStatements(db: Database.Database) {
  type Columns = _PacketColumns
  return {
    upsertRetained: db.prepare<[Columns]>(
      `INSERT OR REPLACE INTO mqtt_retained (${PACKET_COLUMN_NAMES}) VALUES (${PACKET_COLUMN_PARAMS})`,
    ),
    deleteRetained: db.prepare<[string]>('DELETE FROM mqtt_retained WHERE topic = ?'),
    hasRetained: db.prepare<[string], { one: number }>('SELECT 1 AS one FROM mqtt_retained WHERE topic = ?'),
    countRetainedByLevel: db.prepare<[], { level: string; n: number }>(
      `SELECT CASE WHEN instr(topic, '/') = 0 THEN topic ELSE substr(topic, 1, instr(topic, '/') - 1) END AS level,
              COUNT(*) AS n FROM mqtt_retained GROUP BY level`,
    ),
    retainedFrom: db.prepare<[string, string | Buffer, number], _RetainedRow>(
      'SELECT * FROM mqtt_retained WHERE topic >= ? AND topic < ? ORDER BY topic LIMIT ?',
    ),
    retainedAfter: db.prepare<[string, string | Buffer, number], _RetainedRow>(
      'SELECT * FROM mqtt_retained WHERE topic > ? AND topic < ? ORDER BY topic LIMIT ?',
    ),
    deleteRetainedRange: db.prepare<[string, string | Buffer]>(
      'DELETE FROM mqtt_retained WHERE topic >= ? AND topic < ?',
    ),

    loadSubscriptions: db.prepare<[], _SubscriptionRow>('SELECT * FROM mqtt_subscriptions ORDER BY seq'),
    upsertSubscription: db.prepare<[_SubscriptionRow]>(
      `INSERT INTO mqtt_subscriptions (client_id, topic, qos, rh, rap, nl, subscription_identifier)
       VALUES (@client_id, @topic, @qos, @rh, @rap, @nl, @subscription_identifier)
       ON CONFLICT (client_id, topic) DO UPDATE SET qos = excluded.qos, rh = excluded.rh,
         rap = excluded.rap, nl = excluded.nl, subscription_identifier = excluded.subscription_identifier`,
    ),
    deleteSubscription: db.prepare<[string, string]>(
      'DELETE FROM mqtt_subscriptions WHERE client_id = ? AND topic = ?',
    ),
    deleteSubscriptions: db.prepare<[string]>('DELETE FROM mqtt_subscriptions WHERE client_id = ?'),
    deleteSubscriptionsRange: db.prepare<[string, string | Buffer]>(
      'DELETE FROM mqtt_subscriptions WHERE client_id >= ? AND client_id < ?',
    ),

    countOutgoing: db.prepare<[], { client_id: string; count: number }>(
      'SELECT client_id, COUNT(*) AS count FROM mqtt_outgoing GROUP BY client_id',
    ),
    maxOutgoingCounter: db.prepare<[string], { counter: number | null }>(
      'SELECT MAX(broker_counter) AS counter FROM mqtt_outgoing WHERE broker_id = ?',
    ),
    // OR IGNORE: a message that matches two subscriptions of one client is queued once.
    insertOutgoing: db.prepare<[Columns & { client_id: string }]>(
      `INSERT OR IGNORE INTO mqtt_outgoing (client_id, ${PACKET_COLUMN_NAMES}) VALUES (@client_id, ${PACKET_COLUMN_PARAMS})`,
    ),
    deleteOldestOutgoing: db.prepare<[string]>(
      'DELETE FROM mqtt_outgoing WHERE seq = (SELECT seq FROM mqtt_outgoing WHERE client_id = ? ORDER BY seq LIMIT 1)',
    ),
    findOutgoingSame: db.prepare<[string, string | null, number | null], { seq: number }>(
      `SELECT seq FROM mqtt_outgoing WHERE client_id = ? AND broker_id IS ? AND broker_counter IS ?
       ORDER BY seq LIMIT 1`,
    ),
    findOutgoingOther: db.prepare<[string, number | null, string | null], { seq: number }>(
      `SELECT seq FROM mqtt_outgoing WHERE client_id = ? AND message_id IS ? AND broker_id IS NOT ?
       ORDER BY seq LIMIT 1`,
    ),
    setOutgoingMessageId: db.prepare<[number | null, number]>(
      'UPDATE mqtt_outgoing SET message_id = ? WHERE seq = ?',
    ),
    replaceOutgoing: db.prepare<[Columns & { seq: number }]>(
      `UPDATE mqtt_outgoing SET (${PACKET_COLUMN_NAMES}) = (${PACKET_COLUMN_PARAMS}) WHERE seq = @seq`,
    ),
    deleteOutgoingDuplicate: db.prepare<[string, string, number, number]>(
      'DELETE FROM mqtt_outgoing WHERE client_id = ? AND broker_id = ? AND broker_counter = ? AND seq <> ?',
    ),
    findOutgoingByMessageId: db.prepare<[string, number | null], _OutgoingRow>(
      'SELECT * FROM mqtt_outgoing WHERE client_id = ? AND message_id IS ? ORDER BY seq LIMIT 1',
    ),
    deleteOutgoing: db.prepare<[number]>('DELETE FROM mqtt_outgoing WHERE seq = ?'),
    lastOutgoingSeq: db.prepare<[string], { seq: number | null }>(
      'SELECT MAX(seq) AS seq FROM mqtt_outgoing WHERE client_id = ?',
    ),
    outgoingPage: db.prepare<[string, number, number, number], _OutgoingRow>(
      'SELECT * FROM mqtt_outgoing WHERE client_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?',
    ),
    deleteOutgoingRange: db.prepare<[string, string | Buffer]>(
      'DELETE FROM mqtt_outgoing WHERE client_id >= ? AND client_id < ?',
    ),

    upsertIncoming: db.prepare<[Columns & { client_id: string }]>(
      `INSERT OR REPLACE INTO mqtt_incoming (client_id, ${PACKET_COLUMN_NAMES}) VALUES (@client_id, ${PACKET_COLUMN_PARAMS})`,
    ),
    getIncoming: db.prepare<[string, number | null], Columns>(
      'SELECT * FROM mqtt_incoming WHERE client_id = ? AND message_id = ?',
    ),
    deleteIncoming: db.prepare<[string, number | null]>(
      'DELETE FROM mqtt_incoming WHERE client_id = ? AND message_id = ?',
    ),
    deleteIncomingOfClient: db.prepare<[string]>('DELETE FROM mqtt_incoming WHERE client_id = ?'),
    deleteOutgoingOfClient: db.prepare<[string]>('DELETE FROM mqtt_outgoing WHERE client_id = ?'),
    deleteIncomingRange: db.prepare<[string, string | Buffer]>(
      'DELETE FROM mqtt_incoming WHERE client_id >= ? AND client_id < ?',
    ),

    upsertWill: db.prepare<[Columns & { client_id: string }]>(
      `INSERT OR REPLACE INTO mqtt_wills (client_id, ${PACKET_COLUMN_NAMES}) VALUES (@client_id, ${PACKET_COLUMN_PARAMS})`,
    ),
    getWill: db.prepare<[string], _WillRow>('SELECT * FROM mqtt_wills WHERE client_id = ?'),
    deleteWill: db.prepare<[string]>('DELETE FROM mqtt_wills WHERE client_id = ?'),
    willsAfter: db.prepare<[string, number], _WillRow>(
      'SELECT * FROM mqtt_wills WHERE client_id > ? ORDER BY client_id LIMIT ?',
    ),
    deleteWillsRange: db.prepare<[string, string | Buffer]>(
      'DELETE FROM mqtt_wills WHERE client_id >= ? AND client_id < ?',
    ),
  }
}

/** The implementation of {@link SqlitePersistence}, modelled on aedes-persistence's `asyncPersistence.js`. */
class _SqlitePersistence implements SqlitePersistence {
  readonly #db: Database.Database
  readonly #maxQueuedPerClient: number
  readonly #statements: ReturnType<typeof _prepareStatements>
  readonly #enqueueTransaction: Database.Transaction<
    (
      subs: readonly { clientId: string }[],
      columns: _PacketColumns,
    ) => { counts: Map<string, number>; dropped: number }
  >
  // clientId -> topic -> subscription, in subscription order; mirrors mqtt_subscriptions.
  readonly #subscriptions = new Map<string, Map<string, _StoredSubscription>>()
  // Retained messages per first topic level (the gateway's tenant), kept exact by storeRetained.
  readonly #retainedPerLevel = new Map<string, number>()
  // Persistent sessions (client ids with stored subscriptions) per first level of the client id.
  readonly #sessionsPerLevel = new Map<string, number>()
  // QoS 1/2 subscriptions only: a QoS 0 subscription is restored on reconnect but queues nothing.
  readonly #trie = new QlobberSub(QLOBBER_OPTIONS)
  // clientId -> rows in mqtt_outgoing, so the bound costs no COUNT(*) per message.
  readonly #queued = new Map<string, number>()
  #broker: PersistenceBroker | undefined
  #droppedQueued = 0
  #destroyed = false

  constructor(db: Database.Database, maxQueuedPerClient: number) {
    this.#db = db
    this.#maxQueuedPerClient = maxQueuedPerClient
    this.#statements = _prepareStatements(db)
    // Prepared once: aedes queues on every QoS 1/2 PUBLISH that a persistent session subscribed to.
    // Counts are staged and applied after the commit, so a failed write leaves them right.
    this.#enqueueTransaction = db.transaction(
      (subs: readonly { clientId: string }[], columns: _PacketColumns) => {
        const s = this.#statements
        const counts = new Map<string, number>()
        let dropped = 0
        for (const { clientId } of subs) {
          if (s.insertOutgoing.run({ ...columns, client_id: clientId }).changes === 0) continue
          let count = (counts.get(clientId) ?? this.#queued.get(clientId) ?? 0) + 1
          if (count > this.#maxQueuedPerClient) {
            // The bound: drop the oldest message of this client, counted in droppedQueued.
            s.deleteOldestOutgoing.run(clientId)
            count--
            dropped++
          }
          counts.set(clientId, count)
        }
        return { counts, dropped }
      },
    )
    for (const row of this.#statements.countRetainedByLevel.iterate())
      this.#retainedPerLevel.set(row.level, row.n)
    for (const row of this.#statements.loadSubscriptions.iterate()) {
      const clientId = row.client_id
      let stored = this.#subscriptions.get(clientId)
      if (stored === undefined) {
        stored = new Map()
        this.#subscriptions.set(clientId, stored)
        this.#countSession(clientId, 1)
      }
      const record: _StoredSubscription = {
        qos: row.qos,
        rh: row.rh ?? undefined,
        rap: _toBoolean(row.rap),
        nl: _toBoolean(row.nl),
      }
      if (row.subscription_identifier !== null) record.subscriptionIdentifier = row.subscription_identifier
      stored.set(row.topic, record)
      if (row.qos > 0) this.#trie.add(row.topic, _trieValue(clientId, row.topic, record))
    }
    for (const row of this.#statements.countOutgoing.all()) this.#queued.set(row.client_id, row.count)
  }

  get broker(): PersistenceBroker | undefined {
    return this.#broker
  }

  get droppedQueued(): number {
    return this.#droppedQueued
  }

  // aedes refuses a persistence whose setup is not an AsyncFunction.
  async setup(broker: PersistenceBroker): Promise<void> {
    this.#assertOpen('set up the broker persistence')
    this.#broker = broker
    // Queued rows are keyed by (client, broker id, broker counter) and aedes restarts its counter
    // at 0. A broker whose id is the same as before a restart must not reuse a counter that a
    // queued message still has, or the new message would be taken for the old one.
    const stored = this.#statements.maxOutgoingCounter.get(broker.id)?.counter ?? 0
    if (stored > broker.counter) broker.counter = stored
  }

  async storeRetained(packet: PersistedPacket): Promise<void> {
    this.#assertOpen('store a retained message')
    const topic = _requireTopic(packet, 'store a retained message')
    const level = _firstLevel(topic)
    const count = this.#retainedPerLevel.get(level) ?? 0
    // [MQTT-3.3.1-10]: a retained message with an empty payload removes the retained message.
    if ((packet.payload?.length ?? 0) === 0) {
      if (this.#statements.deleteRetained.run(topic).changes > 0) this.#retainedPerLevel.set(level, count - 1)
      return
    }
    const existed = this.#statements.hasRetained.get(topic) !== undefined
    this.#statements.upsertRetained.run({ ..._encodePacket(packet, _allFields), topic })
    if (!existed) this.#retainedPerLevel.set(level, count + 1)
  }

  /** Whether a retained message is stored under `topic` (a mounted topic). */
  hasRetained(topic: string): boolean {
    this.#assertOpen('read retained messages')
    return this.#statements.hasRetained.get(topic) !== undefined
  }

  /** Retained messages stored under the first topic level `level` (a tenant id, for the gateway). */
  retainedCount(level: string): number {
    return this.#retainedPerLevel.get(level) ?? 0
  }

  /** Persistent sessions with stored subscriptions whose client id's first level is `level`. */
  sessionCount(level: string): number {
    return this.#sessionsPerLevel.get(level) ?? 0
  }

  /** Whether the client id has a persistent session with stored subscriptions. */
  hasSession(clientId: string): boolean {
    return this.#subscriptions.has(clientId)
  }

  createRetainedStream(pattern: string): Readable {
    return Readable.from(this.#retainedMatching([pattern]))
  }

  createRetainedStreamCombi(patterns: readonly string[]): Readable {
    return Readable.from(this.#retainedMatching([...patterns]))
  }

  async addSubscriptions(client: PersistenceClient, subs: readonly SubscriptionRecord[]): Promise<void> {
    this.#assertOpen('store subscriptions')
    const clientId = client.id
    // aedes calls this once per filter of a SUBSCRIBE, each time with the packet's whole list, so
    // only entries that differ from what is stored are written: N writes per SUBSCRIBE, not N².
    const known = this.#subscriptions.get(clientId)
    subs = subs.filter((sub) => {
      const stored = known?.get(sub.topic)
      return (
        stored === undefined ||
        stored.qos !== sub.qos ||
        stored.rh !== sub.rh ||
        stored.rap !== sub.rap ||
        stored.nl !== sub.nl ||
        stored.subscriptionIdentifier !== sub.subscriptionIdentifier
      )
    })
    if (subs.length === 0) return
    this.#transaction(() => {
      for (const sub of subs) {
        this.#statements.upsertSubscription.run({
          client_id: clientId,
          topic: sub.topic,
          qos: sub.qos,
          rh: sub.rh ?? null,
          rap: _fromBoolean(sub.rap),
          nl: _fromBoolean(sub.nl),
          subscription_identifier: sub.subscriptionIdentifier ?? null,
        })
      }
    })
    let stored = this.#subscriptions.get(clientId)
    if (stored === undefined) {
      stored = new Map()
      this.#subscriptions.set(clientId, stored)
      this.#countSession(clientId, 1)
    }
    for (const sub of subs) {
      const previous = stored.get(sub.topic)
      const record: _StoredSubscription = { qos: sub.qos, rh: sub.rh, rap: sub.rap, nl: sub.nl }
      if (sub.subscriptionIdentifier !== undefined) record.subscriptionIdentifier = sub.subscriptionIdentifier
      if (sub.qos > 0) {
        this.#trie.add(sub.topic, _trieValue(clientId, sub.topic, record))
      } else if (previous !== undefined && previous.qos > 0) {
        this.#trie.remove(sub.topic, { clientId, topic: sub.topic })
      }
      stored.set(sub.topic, record)
    }
  }

  async removeSubscriptions(client: PersistenceClient, topics: readonly string[]): Promise<void> {
    this.#assertOpen('remove subscriptions')
    const clientId = client.id
    const stored = this.#subscriptions.get(clientId)
    if (stored === undefined) return
    this.#transaction(() => {
      for (const topic of topics) this.#statements.deleteSubscription.run(clientId, topic)
    })
    for (const topic of topics) {
      const previous = stored.get(topic)
      if (previous === undefined) continue
      if (previous.qos > 0) this.#trie.remove(topic, { clientId, topic })
      stored.delete(topic)
    }
    if (stored.size === 0) {
      this.#subscriptions.delete(clientId)
      this.#countSession(clientId, -1)
    }
  }

  async subscriptionsByClient(client: PersistenceClient): Promise<SubscriptionRecord[]> {
    this.#assertOpen('read subscriptions')
    const subs: SubscriptionRecord[] = []
    for (const [topic, record] of this.#subscriptions.get(client.id) ?? []) subs.push({ topic, ...record })
    return subs
  }

  async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    this.#assertOpen('count subscriptions')
    return { subsCount: this.#trie.subscriptionsCount, clientsCount: this.#subscriptions.size }
  }

  async subscriptionsByTopic(topic: string): Promise<TopicSubscription[]> {
    this.#assertOpen('match subscriptions')
    return this.#trie.match(topic)
  }

  async cleanSubscriptions(client: PersistenceClient): Promise<void> {
    this.#assertOpen('remove subscriptions')
    const clientId = client.id
    this.#statements.deleteSubscriptions.run(clientId)
    this.#forgetSubscriptions(clientId)
  }

  async outgoingEnqueue(sub: { clientId: string }, packet: PersistedPacket): Promise<void> {
    this.#assertOpen('queue a message')
    this.#enqueue([sub], packet)
  }

  async outgoingEnqueueCombi(subs: readonly { clientId: string }[], packet: PersistedPacket): Promise<void> {
    this.#assertOpen('queue a message')
    // aedes calls this on every QoS 1/2 PUBLISH, usually with no persistent subscriber.
    if (subs.length > 0) this.#enqueue(subs, packet)
  }

  async outgoingUpdate(client: PersistenceClient, packet: PersistedPacket): Promise<void> {
    this.#assertOpen('update a queued message')
    // As the memory persistence: the first queued entry (in queue order) that is either the same
    // message (same broker id and counter), which gets the packet's messageId, or an entry of
    // another broker id with the packet's messageId, which the packet replaces (a PUBREL replaces
    // its PUBLISH, as a PUBREL has no broker id).
    const s = this.#statements
    const clientId = client.id
    const brokerId = packet.brokerId ?? null
    const messageId = packet.messageId ?? null
    const same = s.findOutgoingSame.get(clientId, brokerId, packet.brokerCounter ?? null)
    const other = s.findOutgoingOther.get(clientId, messageId, brokerId)
    if (same !== undefined && (other === undefined || same.seq < other.seq)) {
      s.setOutgoingMessageId.run(messageId, same.seq)
      return
    }
    if (other === undefined) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.notFound,
        `Cannot update a queued message of client ${quote(clientId)} as no queued message has messageId ${quote(messageId)}`,
      )
    }
    const columns = _encodePacket(packet, _allFields)
    const removed = this.#transaction(() => {
      let duplicates = 0
      // The replacement takes over the packet's (broker id, counter); the memory queue would then
      // hold that message twice, this table holds it once.
      if (columns.broker_id !== null && columns.broker_counter !== null) {
        duplicates = s.deleteOutgoingDuplicate.run(
          clientId,
          columns.broker_id,
          columns.broker_counter,
          other.seq,
        ).changes
      }
      s.replaceOutgoing.run({ ...columns, seq: other.seq })
      return duplicates
    })
    if (removed > 0) this.#countQueued(clientId, -removed)
  }

  async outgoingClearMessageId(
    client: PersistenceClient,
    packet: PersistedPacket,
  ): Promise<PersistedPacket | undefined> {
    this.#assertOpen('remove a queued message')
    const clientId = client.id
    // aedes calls this on every PUBACK/PUBCOMP, mostly for clients that have nothing queued (clean
    // sessions never do): the in-memory count answers those without a query.
    if (!this.#queued.has(clientId)) return undefined
    // aedes-persistence's own suite passes a bare number here; it must find nothing, not throw.
    const messageId = typeof packet === 'object' && packet !== null ? (packet.messageId ?? null) : null
    const row = this.#statements.findOutgoingByMessageId.get(clientId, messageId)
    if (row === undefined) return undefined
    this.#statements.deleteOutgoing.run(row.seq)
    this.#countQueued(clientId, -1)
    return _decodeOutgoing(row)
  }

  outgoingStream(client: PersistenceClient): Readable {
    const clientId = client.id
    // The memory persistence streams a copy of the queue as it is now. Rows queued later are left
    // out too: aedes streams the queue on reconnect while new messages are delivered live.
    const lastSeq = this.#destroyed ? 0 : (this.#statements.lastOutgoingSeq.get(clientId)?.seq ?? 0)
    return Readable.from(this.#outgoingRows(clientId, lastSeq))
  }

  async incomingStorePacket(client: PersistenceClient, packet: PersistedPacket): Promise<void> {
    this.#assertOpen('store an incoming packet')
    if (typeof packet.messageId !== 'number') {
      throw new TypeError(
        `Cannot store an incoming packet of client ${quote(client.id)} as it has no messageId: ${quote(packet.messageId)}`,
      )
    }
    const columns = { ..._encodePacket(_asPacket(packet), _packetFields), message_id: packet.messageId }
    this.#statements.upsertIncoming.run({ ...columns, client_id: client.id })
  }

  async incomingGetPacket(client: PersistenceClient, packet: PersistedPacket): Promise<PersistedPacket> {
    this.#assertOpen('read an incoming packet')
    const row = this.#statements.getIncoming.get(client.id, packet.messageId ?? null)
    if (row === undefined) throw _noIncoming(client, packet)
    return _decodeAsPacket(row, true)
  }

  async incomingDelPacket(client: PersistenceClient, packet: PersistedPacket): Promise<void> {
    this.#assertOpen('remove an incoming packet')
    if (this.#statements.deleteIncoming.run(client.id, packet.messageId ?? null).changes === 0) {
      throw _noIncoming(client, packet)
    }
  }

  async cleanIncoming(client: PersistenceClient): Promise<void> {
    this.#assertOpen('remove incoming packets')
    this.#statements.deleteIncomingOfClient.run(client.id)
  }

  async putWill(client: PersistenceClient, packet: PersistedPacket): Promise<void> {
    this.#assertOpen('store a will')
    // As the memory persistence, the will itself is marked: aedes hands over client.will.
    packet.brokerId = this.#broker?.id
    packet.clientId = client.id
    const columns = _encodePacket(packet, (field) => field !== 'clientId')
    this.#statements.upsertWill.run({ ...columns, client_id: client.id })
  }

  async getWill(client: PersistenceClient): Promise<PersistedPacket | undefined> {
    this.#assertOpen('read a will')
    const row = this.#statements.getWill.get(client.id)
    return row === undefined ? undefined : _decodeWill(row)
  }

  async delWill(client: PersistenceClient): Promise<PersistedPacket | undefined> {
    this.#assertOpen('remove a will')
    const row = this.#statements.getWill.get(client.id)
    if (row === undefined) return undefined
    this.#statements.deleteWill.run(client.id)
    return _decodeWill(row)
  }

  streamWill(brokers: Readonly<Record<string, unknown>> = {}): Readable {
    return Readable.from(this.#willsOfDeadBrokers(brokers))
  }

  getClientList(topic: string): Readable {
    return Readable.from(this.#clientsSubscribedTo(topic))
  }

  deleteClientsWithPrefix(prefix: string): void {
    this.#assertOpen('delete sessions')
    if (typeof prefix !== 'string' || prefix === '') {
      throw new TypeError(`Cannot delete sessions by prefix as the prefix is empty: ${quote(prefix)}`)
    }
    const s = this.#statements
    const upper = _prefixUpperBound(prefix)
    this.#transaction(() => {
      s.deleteSubscriptionsRange.run(prefix, upper)
      s.deleteOutgoingRange.run(prefix, upper)
      s.deleteIncomingRange.run(prefix, upper)
      s.deleteWillsRange.run(prefix, upper)
      s.deleteRetainedRange.run(prefix, upper)
    })
    this.#retainedPerLevel.clear()
    for (const row of s.countRetainedByLevel.iterate()) this.#retainedPerLevel.set(row.level, row.n)
    for (const clientId of [...this.#subscriptions.keys()]) {
      if (clientId.startsWith(prefix)) this.#forgetSubscriptions(clientId)
    }
    for (const clientId of [...this.#queued.keys()]) {
      if (clientId.startsWith(prefix)) this.#queued.delete(clientId)
    }
  }

  /** Deletes everything stored for one client id: its subscriptions, queue, QoS 2 state and will. */
  deleteClient(clientId: string): void {
    this.#assertOpen('delete a session')
    const s = this.#statements
    this.#transaction(() => {
      s.deleteSubscriptions.run(clientId)
      s.deleteOutgoingOfClient.run(clientId)
      s.deleteIncomingOfClient.run(clientId)
      s.deleteWill.run(clientId)
    })
    this.#forgetSubscriptions(clientId)
    this.#queued.delete(clientId)
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return
    this.#destroyed = true
    for (const clientId of [...this.#subscriptions.keys()]) this.#forgetSubscriptions(clientId)
    this.#queued.clear()
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.destroy()
  }

  #assertOpen(action: string): void {
    if (this.#destroyed) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.internal,
        `Cannot ${action} as the broker persistence is destroyed`,
      )
    }
  }

  #transaction<T>(work: () => T): T {
    // Nested in a transaction of the caller's, better-sqlite3 makes this a savepoint.
    return this.#db.transaction(work)()
  }

  #forgetSubscriptions(clientId: string): void {
    const stored = this.#subscriptions.get(clientId)
    if (stored === undefined) return
    for (const [topic, record] of stored) {
      if (record.qos > 0) this.#trie.remove(topic, { clientId, topic })
    }
    this.#subscriptions.delete(clientId)
    this.#countSession(clientId, -1)
  }

  #countSession(clientId: string, delta: number): void {
    const level = _firstLevel(clientId)
    const count = (this.#sessionsPerLevel.get(level) ?? 0) + delta
    if (count > 0) this.#sessionsPerLevel.set(level, count)
    else this.#sessionsPerLevel.delete(level)
  }

  #countQueued(clientId: string, delta: number): void {
    const count = (this.#queued.get(clientId) ?? 0) + delta
    if (count > 0) this.#queued.set(clientId, count)
    else this.#queued.delete(clientId)
  }

  #enqueue(subs: readonly { clientId: string }[], packet: PersistedPacket): void {
    const { counts, dropped } = this.#enqueueTransaction(
      subs,
      _encodePacket(_asPacket(packet), _packetFields),
    )
    for (const [clientId, count] of counts) this.#queued.set(clientId, count)
    this.#droppedQueued += dropped
  }

  *#outgoingRows(clientId: string, lastSeq: number): Generator<PersistedPacket> {
    this.#assertOpen('stream queued messages')
    let after = 0
    for (;;) {
      const rows = this.#statements.outgoingPage.all(clientId, after, lastSeq, PAGE_ROWS)
      for (const row of rows) yield _decodeOutgoing(row)
      const last = rows.at(-1)
      if (last === undefined || rows.length < PAGE_ROWS) return
      after = last.seq
    }
  }

  *#retainedMatching(patterns: string[]): Generator<PersistedPacket> {
    this.#assertOpen('stream retained messages')
    const s = this.#statements
    // As the memory persistence: pattern after pattern, so a message that matches two patterns of
    // one SUBSCRIBE is sent for each subscription. Only the topics that start with the pattern's
    // levels before its first wildcard are read, e.g. all of `acme/` for `acme/+/temp`.
    for (const pattern of patterns) {
      const matcher = new QlobberTrue(QLOBBER_OPTIONS)
      matcher.add(pattern)
      const literal = _literalPrefix(pattern)
      const upper = _prefixUpperBound(literal)
      let rows = s.retainedFrom.all(literal, upper, PAGE_ROWS)
      for (;;) {
        for (const row of rows) if (matcher.test(row.topic)) yield _decodePlain(row)
        const last = rows.at(-1)
        if (last === undefined || rows.length < PAGE_ROWS) break
        rows = s.retainedAfter.all(last.topic, upper, PAGE_ROWS)
      }
    }
  }

  *#clientsSubscribedTo(topic: string): Generator<string> {
    this.#assertOpen('list subscribed clients')
    for (const [clientId, stored] of [...this.#subscriptions]) if (stored.has(topic)) yield clientId
  }

  *#willsOfDeadBrokers(brokers: Readonly<Record<string, unknown>>): Generator<PersistedPacket> {
    this.#assertOpen('stream wills')
    let after = ''
    for (;;) {
      const rows = this.#statements.willsAfter.all(after, PAGE_ROWS)
      for (const row of rows) {
        // Own properties only: broker ids come from the wire, and `constructor` is not a live broker.
        const alive =
          row.broker_id !== null && Object.hasOwn(brokers, row.broker_id) && brokers[row.broker_id]
        if (!alive) yield _decodeWill(row)
      }
      const last = rows.at(-1)
      if (last === undefined || rows.length < PAGE_ROWS) return
      after = last.client_id
    }
  }
}

function _trieValue(clientId: string, topic: string, record: _StoredSubscription): TopicSubscription {
  return { clientId, topic, qos: record.qos, rh: record.rh, rap: record.rap, nl: record.nl }
}

function _toBoolean(value: number | null): boolean | undefined {
  return value === null ? undefined : value !== 0
}

function _fromBoolean(value: boolean | null | undefined): 0 | 1 | null {
  return value === undefined || value === null ? null : value ? 1 : 0
}

function _requireTopic(packet: PersistedPacket, action: string): string {
  if (typeof packet.topic !== 'string') {
    throw new TypeError(`Cannot ${action} as its topic is not a string: ${quote(packet.topic)}`)
  }
  return packet.topic
}

function _noIncoming(client: PersistenceClient, packet: PersistedPacket): GatewayError {
  // aedes reads this rejection as "not stored yet" (the QoS 2 duplicate check).
  return new GatewayError(
    GATEWAY_ERROR_CODES.notFound,
    `Cannot find incoming packet ${quote(packet.messageId)} of client ${quote(client.id)} as it is not stored`,
  )
}

/**
 * The levels of a topic filter before its first wildcard, e.g. `a/b` of `a/b/+/c`: every topic it
 * matches starts with them. Without the last `/`, as `a/b/#` also matches `a/b` [MQTT-4.7.1-2].
 */
function _literalPrefix(pattern: string): string {
  const levels = pattern.split('/')
  const wildcard = levels.findIndex((level) => level === '+' || level === '#')
  return wildcard === -1 ? pattern : levels.slice(0, wildcard).join('/')
}

/**
 * The least string greater than every string that starts with `prefix`, in SQLite's BINARY order
 * (UTF-8 bytes, which for valid text is code point order): the prefix with its last code point
 * incremented. For `''` (or all U+10FFFF) there is none; an empty BLOB then stands in, as SQLite
 * orders every TEXT value before every BLOB, so `text < x''` holds for all text.
 */
function _prefixUpperBound(prefix: string): string | Buffer {
  const codePoints = Array.from(prefix, (char) => char.codePointAt(0) ?? 0)
  while (codePoints.length > 0) {
    const last = codePoints.pop() ?? 0
    if (last < 0x10ffff) {
      // Skip the surrogate range, which valid text never holds.
      codePoints.push(last + 1 === 0xd800 ? 0xe000 : last + 1)
      return String.fromCodePoint(...codePoints)
    }
  }
  return Buffer.alloc(0)
}

const _allFields = (): boolean => true
const _packetFields = (field: string): boolean => PACKET_EXTRA_FIELDS.has(field)

/** A copy of `original` as aedes-packet's `new Packet(original)` makes it, without a broker. */
function _asPacket(original: PersistedPacket): PersistedPacket {
  const packet: PersistedPacket = {}
  for (const field of PACKET_EXTRA_FIELDS) if (Object.hasOwn(original, field)) packet[field] = original[field]
  packet.cmd = original.cmd || 'publish'
  packet.brokerId = original.brokerId || undefined
  packet.brokerCounter = original.brokerCounter || 0
  packet.topic = original.topic
  packet.payload = original.payload || Buffer.alloc(0)
  packet.qos = original.qos || 0
  packet.retain = original.retain || false
  packet.dup = original.dup || false
  // [MQTT-2.3.1-5]: aedes-packet clears the messageId of a packet that will be sent with a new one.
  if (packet.qos > 0 || packet.cmd !== 'publish') packet.messageId = undefined
  return packet
}

function _encodePacket(packet: PersistedPacket, keepExtra: (field: string) => boolean): _PacketColumns {
  let extra: Record<string, unknown> | undefined
  for (const [field, value] of Object.entries(packet)) {
    if (COLUMN_FIELDS.has(field) || value === undefined || typeof value === 'function' || !keepExtra(field))
      continue
    extra ??= {}
    extra[field] = value
  }
  const payload = packet.payload
  let payloadBytes: Buffer | null = null
  if (typeof payload === 'string') payloadBytes = Buffer.from(payload, 'utf8')
  else if (Buffer.isBuffer(payload)) payloadBytes = payload
  else if (payload instanceof Uint8Array)
    payloadBytes = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)
  else if (payload !== undefined && payload !== null) {
    throw new TypeError(
      `Cannot store a packet as its payload is neither bytes nor a string: ${quote(typeof payload)}`,
    )
  }
  return {
    cmd: packet.cmd ?? null,
    topic: packet.topic ?? null,
    payload: payloadBytes,
    payload_is_text: typeof payload === 'string' ? 1 : 0,
    qos: packet.qos ?? null,
    retain: _fromBoolean(packet.retain),
    dup: _fromBoolean(packet.dup),
    message_id: packet.messageId ?? null,
    broker_id: packet.brokerId ?? null,
    broker_counter: packet.brokerCounter ?? null,
    // Buffers inside (MQTT 5 correlation data) become {type:'Buffer',data} and are revived below.
    extra: extra === undefined ? null : JSON.stringify(extra),
  }
}

function _decodePayload(row: _PacketColumns): Buffer | string | undefined {
  if (row.payload === null) return undefined
  return row.payload_is_text === 1 ? row.payload.toString('utf8') : row.payload
}

function _decodeExtra(extra: string | null): PersistedPacket {
  if (extra === null) return {}
  return JSON.parse(extra, (_key, value: unknown) => {
    const bytes = value as { type?: unknown; data?: unknown } | null
    if (typeof bytes === 'object' && bytes !== null && bytes.type === 'Buffer' && Array.isArray(bytes.data)) {
      return Buffer.from(bytes.data as number[])
    }
    return value
  }) as PersistedPacket
}

/** A row as the fields that were stored: a NULL column is an absent field. */
function _decodePlain(row: _PacketColumns): PersistedPacket {
  const packet = _decodeExtra(row.extra)
  if (row.cmd !== null) packet.cmd = row.cmd
  if (row.topic !== null) packet.topic = row.topic
  const payload = _decodePayload(row)
  if (payload !== undefined) packet.payload = payload
  if (row.qos !== null) packet.qos = row.qos
  if (row.retain !== null) packet.retain = row.retain === 1
  if (row.dup !== null) packet.dup = row.dup === 1
  if (row.message_id !== null) packet.messageId = row.message_id
  if (row.broker_id !== null) packet.brokerId = row.broker_id
  if (row.broker_counter !== null) packet.brokerCounter = row.broker_counter
  return packet
}

/** A row in the shape of an aedes-packet Packet, every field present, as the memory persistence returns it. */
function _decodeAsPacket(row: _PacketColumns, withMessageId: boolean): PersistedPacket {
  const packet = _decodeExtra(row.extra)
  packet.cmd = row.cmd ?? 'publish'
  packet.brokerId = row.broker_id ?? undefined
  packet.brokerCounter = row.broker_counter ?? 0
  packet.topic = row.topic ?? undefined
  packet.payload = _decodePayload(row) ?? Buffer.alloc(0)
  packet.qos = row.qos ?? 0
  packet.retain = row.retain === 1
  packet.dup = row.dup === 1
  if (withMessageId || packet.qos > 0 || packet.cmd !== 'publish' || row.message_id !== null) {
    packet.messageId = row.message_id ?? undefined
  }
  return packet
}

function _decodeOutgoing(row: _PacketColumns): PersistedPacket {
  // A PUBREL that replaced its PUBLISH is returned as it was given, like a queued Packet.
  return row.cmd === 'publish' ? _decodeAsPacket(row, false) : _decodePlain(row)
}

function _decodeWill(row: _WillRow): PersistedPacket {
  const will = _decodePlain(row)
  will.clientId = row.client_id
  return will
}

function _firstLevel(topic: string): string {
  const slash = topic.indexOf('/')
  return slash === -1 ? topic : topic.slice(0, slash)
}
