import type { Worker } from 'node:worker_threads'
import { _startWorker } from './_worker.ts'
import { type CellBytes, checkCellBytes, DEFAULT_CELL_BYTES } from './cell-codec.ts'
import { createShaper, type ShaperMode } from './shaper.ts'
import {
  emptyWireStats,
  type UplinkCommand,
  type UplinkEvent,
  type UplinkWireStats,
  type UplinkWorkerData,
} from './uplink-protocol.ts'
import type { KeyPair } from './x25519.ts'

/** A record for the cloud: the outbox's sequence number and the bytes to deliver. */
export interface UplinkRecord {
  seq: number
  body: Uint8Array
}

/** Where the uplink reads what to send and says what the cloud stored (the gateway's outbox). */
export interface UplinkSource {
  /** Records with `seq > afterSeq`, in seq order, at most `limit`. */
  read(afterSeq: number, limit: number): UplinkRecord[]
  /** The cloud stored these: they may go. */
  delivered(seqs: number[]): void
}

export interface UplinkOptions {
  source: UplinkSource
  cloud: { host: string; port: number; publicKey: Uint8Array }
  identity: KeyPair
  /** Bytes of every unit on the wire: 512, 1024 (default) or 1200. */
  cellBytes?: number
  /** When cells leave; default `epoch`, 8 cells every 1000 ms. */
  schedule?: ShaperMode
  /** Secretstream rekey period (default 60 s). */
  rekeyMs?: number
  /** A new handshake after this (default 1 h), give or take `sessionJitter` (default 0.2) of it. */
  sessionMs?: number
  sessionJitter?: number
  /** Reconnect backoff, full jitter between `minMs` and a doubling cap up to `maxMs` (default 500 ms–60 s). */
  backoff?: { minMs: number; maxMs: number }
  handshakeTimeoutMs?: number
  /** Bytes of records sent and not yet acknowledged (default 1 MiB). */
  windowBytes?: number
  /** How often the source is read for new records (default 200 ms); `poke()` reads at once. */
  pollMs?: number
  /** Cells of records waiting in the worker past which the backlog alarm is raised (default 512). */
  alarmCells?: number
  /** Told of what happens, for the operator's log. */
  onEvent?: (event: UplinkLogEvent) => void
}

export type UplinkLogEvent =
  | { type: 'connected'; session: number }
  | { type: 'disconnected'; session: number; reason: string }
  | { type: 'alarm'; backlogCells: number }
  | { type: 'error'; error: Error }

export interface UplinkStatus {
  state: 'connecting' | 'connected' | 'closed'
  sessions: number
  /** Records sent in this session and not yet acknowledged. */
  inFlight: number
  delivered: number
  lastAckAt: number | null
  /** Raised when the worker's backlog passed `alarmCells`; cleared once the window empties. */
  alarm: boolean
  schedule: ShaperMode
  cellBytes: CellBytes
  wire: UplinkWireStats
}

export interface Uplink {
  status(): UplinkStatus
  /** Reads the source now (new records were committed). */
  poke(): void
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** The default schedule: exactly 8 cells every second, after a random start. */
export const DEFAULT_SCHEDULE: ShaperMode = { mode: 'epoch', epochMs: 1000, cellsPerEpoch: 8 }
/** Bytes a record takes in the cell stream besides its body: seq (8) and length (4). */
const RECORD_HEADER_BYTES = 12
/** Most records read from the source at once; fewer when the window has less room (see pump). */
const READ_BATCH = 256

const WORKER_ENTRY = { source: new URL('./uplink-worker.ts', import.meta.url), bundled: 'uplink-worker.mjs' }

/**
 * The gateway's side of the private uplink. Records are read from the source in seq order and
 * handed to the worker within a window; the cloud's acks remove them from the source. On every new
 * session the reading starts again from the first record still in the source, so whatever the last
 * session sent and did not see acknowledged is sent again (the cloud drops what it already has).
 */
export function createUplink(options: UplinkOptions): Uplink {
  const cellBytes = checkCellBytes(options.cellBytes ?? DEFAULT_CELL_BYTES)
  const schedule = options.schedule ?? DEFAULT_SCHEDULE
  const windowBytes = options.windowBytes ?? 1024 * 1024
  const { source } = options
  const data: UplinkWorkerData = {
    host: options.cloud.host,
    port: options.cloud.port,
    cloudKey: options.cloud.publicKey,
    publicKey: options.identity.publicKey,
    secretKey: options.identity.secretKey,
    cellBytes,
    schedule,
    rekeyMs: options.rekeyMs ?? 60_000,
    sessionMs: options.sessionMs ?? 3_600_000,
    sessionJitter: options.sessionJitter ?? 0.2,
    backoff: options.backoff ?? { minMs: 500, maxMs: 60_000 },
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
    // The worker never holds more than the window; the margin covers record headers.
    maxQueuedBytes: windowBytes + 64 * 1024,
    alarmCells: options.alarmCells ?? 512,
  }
  // A schedule the shaper refuses is the caller's mistake: said here, not in the worker later.
  createShaper({
    schedule,
    clock: { now: () => 0, setTimer: () => ({ cancel() {} }) },
    random: () => 0,
    send() {},
    backlogCells: () => 0,
    alarmCells: data.alarmCells,
  })
  let worker: Worker
  let state: UplinkStatus['state'] = 'connecting'
  let session = 0
  let sessions = 0
  /** The last seq handed to the worker in this session. */
  let cursor = 0
  const inFlight = new Map<number, number>()
  let inFlightBytes = 0
  /** Running average of a record's bytes in the cell stream. */
  let averageBytes = 256
  let delivered = 0
  let lastAckAt: number | null = null
  let alarm = false
  let wire: UplinkWireStats = emptyWireStats()
  let closed: Promise<void> | undefined
  let onClosed: (() => void) | undefined

  const send = (command: UplinkCommand): void => worker.postMessage(command)
  let restart: NodeJS.Timeout | undefined
  const report = (event: UplinkLogEvent): void => {
    try {
      options.onEvent?.(event)
    } catch {
      // The operator's log must not break the uplink.
    }
  }

  /** Hands the worker what fits in the window. */
  const pump = (): void => {
    if (state !== 'connected') return
    try {
      while (inFlightBytes < windowBytes) {
        // Read about what the window has room for, by the records' average size so far: the source
        // opens and encodes every record it returns, on the main thread.
        const room = Math.floor((windowBytes - inFlightBytes) / averageBytes)
        const records = source.read(cursor, Math.max(1, Math.min(READ_BATCH, room)))
        if (records.length === 0) return
        const batch: UplinkRecord[] = []
        for (const record of records) {
          const bytes = record.body.length + RECORD_HEADER_BYTES
          if (inFlightBytes + bytes > windowBytes && inFlight.size > 0) break
          averageBytes += (bytes - averageBytes) / 16
          batch.push(record)
          inFlight.set(record.seq, bytes)
          inFlightBytes += bytes
          cursor = record.seq
        }
        if (batch.length > 0) send({ type: 'records', session, records: batch })
        if (batch.length < records.length) return
      }
    } catch (error) {
      report({ type: 'error', error: error as Error })
    }
  }

  const acked = (ranges: Array<[number, number]>): void => {
    const seqs: number[] = []
    for (const [from, to] of ranges) {
      // Ranges may be wide (the cloud merges what it has); only records in flight are looked up.
      if (to - from < inFlight.size) {
        for (let seq = from; seq <= to; seq++) if (inFlight.has(seq)) seqs.push(seq)
      } else {
        for (const seq of inFlight.keys()) if (seq >= from && seq <= to) seqs.push(seq)
      }
    }
    if (seqs.length === 0) return
    try {
      source.delivered(seqs)
    } catch (error) {
      // Not removed: sent again next session, and dropped by the cloud as a duplicate.
      report({ type: 'error', error: error as Error })
      return
    }
    for (const seq of seqs) {
      inFlightBytes -= inFlight.get(seq) ?? 0
      inFlight.delete(seq)
    }
    delivered += seqs.length
    lastAckAt = Date.now()
    if (inFlight.size === 0) alarm = false
    pump()
  }

  const onMessage = (event: UplinkEvent): void => {
    switch (event.type) {
      case 'connected':
        if (closed !== undefined) return
        state = 'connected'
        session = event.session
        sessions++
        cursor = 0
        inFlight.clear()
        inFlightBytes = 0
        report(event)
        pump()
        return
      case 'disconnected':
        if (closed === undefined) state = 'connecting'
        report(event)
        return
      case 'acked':
        if (event.session === session) acked(event.ranges)
        return
      case 'alarm':
        alarm = true
        report(event)
        return
      case 'stats':
        wire = event.stats
        return
      case 'closed':
        onClosed?.()
        return
    }
  }
  /** Starts the worker; one that dies is replaced a second later (the outbox keeps what it had). */
  const startWorker = (): void => {
    worker = _startWorker(WORKER_ENTRY, data)
    const own = worker
    own.on('message', (event: UplinkEvent) => {
      if (worker === own) onMessage(event)
    })
    own.on('error', (error) => report({ type: 'error', error }))
    own.on('exit', () => {
      // After close() nothing starts again, whatever the worker said last.
      if (worker !== own || closed !== undefined) return
      state = 'connecting'
      session = -1
      report({ type: 'error', error: new Error('the uplink worker stopped; it starts again in 1 s') })
      restart = setTimeout(startWorker, 1000)
    })
  }
  startWorker()
  const poll = setInterval(pump, options.pollMs ?? 200)

  const uplink: Uplink = {
    status: () => ({
      state,
      sessions,
      inFlight: inFlight.size,
      delivered,
      lastAckAt,
      alarm,
      schedule,
      cellBytes,
      wire,
    }),
    poke: pump,
    close() {
      closed ??= (async () => {
        clearInterval(poll)
        if (restart !== undefined) clearTimeout(restart)
        state = 'closed'
        await new Promise<void>((resolve) => {
          onClosed = resolve
          const timer = setTimeout(resolve, 2000)
          timer.unref()
          send({ type: 'close' })
        })
        await worker.terminate()
      })()
      return closed
    },
    [Symbol.asyncDispose]: () => uplink.close(),
  }
  return uplink
}
