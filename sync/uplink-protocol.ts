import type { ShaperMode } from './shaper.ts'

/** What the uplink's main side starts its worker with. */
/** The reason of the last `disconnected` event when the uplink was asked to close. */
export const UPLINK_CLOSING_REASON = 'the uplink is closing'

export interface UplinkWorkerData {
  host: string
  port: number
  /** The cloud receiver's static public key (pinned). */
  cloudKey: Uint8Array
  /** The gateway's static key pair. */
  publicKey: Uint8Array
  secretKey: Uint8Array
  cellBytes: number
  schedule: ShaperMode
  /** A RATCHET cell (secretstream rekey) goes at the first slot after each period. */
  rekeyMs: number
  /** A session ends (CLOSE, then a new handshake) after this, give or take `sessionJitter` of it. */
  sessionMs: number
  sessionJitter: number
  backoff: { minMs: number; maxMs: number }
  handshakeTimeoutMs: number
  /** Bytes of records the worker queues for cells (the main side's window is the same). */
  maxQueuedBytes: number
  /** Cells of records waiting past which the backlog alarm is raised. */
  alarmCells: number
}

/** Main side to worker. Records carry the session they were sent for: stale ones are dropped. */
export type UplinkCommand =
  | { type: 'records'; session: number; records: Array<{ seq: number; body: Uint8Array }> }
  | { type: 'close' }

/** Worker to main side. */
export type UplinkEvent =
  | { type: 'connected'; session: number }
  | { type: 'disconnected'; session: number; reason: string }
  | { type: 'acked'; session: number; ranges: Array<[number, number]> }
  | { type: 'alarm'; backlogCells: number }
  | { type: 'stats'; stats: UplinkWireStats }
  | { type: 'closed' }

/** Counters of what the worker put on the wire, since it started. */
export interface UplinkWireStats {
  cellsData: number
  cellsDummy: number
  cellsControl: number
  /** Bytes of records (headers included) carried in data cells. */
  recordBytes: number
  wireBytes: number
  /** Slots that passed unsent because the socket was not taking data. */
  slotsSkipped: number
  backlogCells: number
}

/** Counters at zero. */
export function emptyWireStats(): UplinkWireStats {
  return {
    cellsData: 0,
    cellsDummy: 0,
    cellsControl: 0,
    recordBytes: 0,
    wireBytes: 0,
    slotsSkipped: 0,
    backlogCells: 0,
  }
}
