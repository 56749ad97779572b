/** Stable codes of the uplink's and the cloud receiver's errors. */
export const SYNC_ERROR_CODES = {
  /** A handshake message failed authentication or is malformed; the connection closes. */
  badHandshake: 'bad_handshake',
  /** The handshake's timestamp is not newer than the last one accepted from that gateway. */
  replayedHandshake: 'replayed_handshake',
  /** The peer's static key is not registered (never said to the peer). */
  unknownPeer: 'unknown_peer',
  /** A cell failed authentication, has the wrong size or breaks the cell format; the session closes. */
  badCell: 'bad_cell',
  /** A record inside the cells is malformed or over its bound. */
  badRecord: 'bad_record',
  /** Misuse of a store: a duplicate gateway name or key, an unknown gateway. */
  conflict: 'conflict',
  /** The store failed (disk, server); nothing was stored or acknowledged. */
  store: 'store',
  /** The link is closed or was lost. */
  closed: 'closed',
} as const

/** One of {@link SYNC_ERROR_CODES}. */
export type SyncErrorCode = (typeof SYNC_ERROR_CODES)[keyof typeof SYNC_ERROR_CODES]

/** An error of the uplink or the cloud receiver, with a stable code. */
export class SyncError extends Error {
  override readonly name = 'SyncError'
  readonly code: SyncErrorCode

  constructor(code: SyncErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
  }
}
