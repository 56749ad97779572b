import { createHash } from 'node:crypto'
import type Database from 'better-sqlite3'

/**
 * One device connection as the journal sees it. After a reconnect a device sends again, first,
 * the QoS 1/2 messages it saw no acknowledgement for, under their packet ids; once it sends one
 * the journal has not seen, the resends are over.
 */
export interface PublishConnection {
  /** Unique across restarts (see {@link PublishIds.connection}). */
  readonly id: number
  /** A persistent session (clean session 0): only its client resends after a reconnect. */
  readonly persistent: boolean
  resending: boolean
  /**
   * Set once one of its messages was refused or could not be journaled: every later one is
   * refused too, so the device resends them all in order and none is journaled twice.
   */
  refused: boolean
}

/** Where a device's QoS 1/2 message came from: what tells a resend from a new message. */
export interface PublishSource {
  clientId: string
  packetId: number
  /** The DUP flag: the client says it may have sent this message before. */
  dup: boolean
  connection: PublishConnection
}

/**
 * The packet ids of journaled messages, per client: how the journal knows a message a device sends
 * again after a reconnect from a new one. A device resends what it saw no PUBACK for, with the same
 * packet id, whether or not the gateway had journaled it (the gateway may have crashed between the
 * commit and the PUBACK, or the PUBACK may have been lost); many clients (mqtt.js among them) do
 * not set the DUP flag on these resends. So a message is a resend when, while its connection is
 * still resending, a message of the same client with the same packet id and the same digest (topic,
 * QoS, retain flag, payload) was journaled on an earlier connection. A false match needs a device
 * that reconnects and sends, as its first messages, one identical to a message it sent before under
 * the same packet id and saw acknowledged: with packet ids counting up, after 65,535 messages.
 */
export interface PublishIds {
  /** A new connection's record; `id` continues from the ids stored. */
  connection(persistent: boolean): PublishConnection
  /** Digest of a message's content, as stored. */
  digest(topic: string, qos: number, retain: boolean, payload: Buffer): Buffer
  /** Whether the message is a resend of one journaled on an earlier connection. */
  isResend(tenantId: string, source: PublishSource, digest: Buffer): boolean
  /** Records a journaled message's packet id (inside the journal's transaction). */
  record(tenantId: string, source: PublishSource, digest: Buffer): void
  /** Forgets the ids the client's earlier connections left (inside the journal's transaction). */
  forgetEarlier(tenantId: string, source: PublishSource): void
}

/** Creates the packet id record on the store's `publish_ids` table. */
export function createPublishIds(db: Database.Database): PublishIds {
  const sql = {
    find: db.prepare<[string, string, number], { digest: Buffer; connection: number }>(
      'SELECT digest, connection FROM publish_ids WHERE tenant_id = ? AND client_id = ? AND packet_id = ?',
    ),
    upsert: db.prepare(
      `INSERT INTO publish_ids (tenant_id, client_id, packet_id, digest, connection) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (tenant_id, client_id, packet_id) DO UPDATE SET digest = excluded.digest, connection = excluded.connection`,
    ),
    forget: db.prepare('DELETE FROM publish_ids WHERE tenant_id = ? AND client_id = ? AND connection != ?'),
    last: db.prepare<[], { last: number | null }>('SELECT MAX(connection) AS last FROM publish_ids'),
  }
  let nextId = (sql.last.get()?.last ?? 0) + 1
  return {
    connection: (persistent) => ({ id: nextId++, persistent, resending: true, refused: false }),
    digest(topic, qos, retain, payload) {
      return createHash('sha256')
        .update(`${topic}\u0000${qos}\u0000${retain ? 1 : 0}\u0000`)
        .update(payload)
        .digest()
        .subarray(0, 16)
    },
    isResend(tenantId, source, digest) {
      // With a clean session the client starts afresh (its packet ids too, for many firmwares):
      // only a persistent session's client resends, or one that sets the DUP flag.
      if (!source.connection.persistent && !source.dup) return false
      const row = sql.find.get(tenantId, source.clientId, source.packetId)
      return row !== undefined && row.connection !== source.connection.id && digest.equals(row.digest)
    },
    record(tenantId, source, digest) {
      sql.upsert.run(tenantId, source.clientId, source.packetId, digest, source.connection.id)
    },
    forgetEarlier(tenantId, source) {
      sql.forget.run(tenantId, source.clientId, source.connection.id)
    },
  }
}
