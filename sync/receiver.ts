import { createServer, type Server, type Socket } from 'node:net'
import {
  CELL_TYPES,
  checkCellBytes,
  createRecordUnpacker,
  DEFAULT_CELL_BYTES,
  encodeAcks,
  seqsToRanges,
} from './cell-codec.ts'
import { type CellSession, createCellSession } from './cell-session.ts'
import type { CloudStore, IncomingRecord } from './cloud-store.ts'
import { SYNC_ERROR_CODES, SyncError } from './errors.ts'
import { encodeKey } from './identity.ts'
import { createResponder, type KeyPair, sodiumReady } from './noise-ik.ts'
import { createShaper, type ShaperClock, type ShaperMode } from './shaper.ts'
import { decodeRecordContent, MAX_RECORD_CONTENT_BYTES } from './uplink-record.ts'
import {
  createUnitReader,
  decodeMessage1Payload,
  encodeMessage2Payload,
  prologueOf,
  secureRandom,
} from './wire.ts'

export interface ReceiverOptions {
  store: CloudStore
  identity: KeyPair
  /** Must match the gateways' (default 1024). */
  cellBytes?: number
  host?: string
  /** 0 picks a free port. */
  port: number
  /** When cells go back to a gateway (acks or dummies); default one every 250 ms. */
  schedule?: ShaperMode
  handshakeTimeoutMs?: number
  /** A session that sends nothing for this long is closed (default 5 min; gateways send at least once a minute). */
  idleTimeoutMs?: number
  /** Largest record accepted (default 1 MiB). */
  maxRecordBytes?: number
  /** Connections at once (default 1000); more are closed at once. */
  maxConnections?: number
  /**
   * Connections still in their handshake at once (default 64): a peer that opens connections and
   * sends nothing cannot take every slot from the gateways.
   */
  maxHandshakes?: number
  /** The RATCHET cell (secretstream rekey) of the receiver's stream goes after each period (default 60 s). */
  rekeyMs?: number
  onEvent?: (event: ReceiverEvent) => void
  clock?: { now(): number }
}

export type ReceiverEvent =
  | { type: 'session'; gateway: string; remote: string }
  | { type: 'stored'; gateway: string; stored: number; duplicates: number }
  | { type: 'closed'; gateway: string | undefined; remote: string; reason: string }
  | { type: 'refused'; remote: string; reason: string }

export interface Receiver {
  readonly port: number
  readonly sessions: number
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** Units read and not yet handled per connection before the socket is paused. */
const MAX_UNHANDLED_UNITS = 256
/** Sealed cells the socket may hold unsent: past it the gateway is not reading. */
const MAX_UNSENT_CELLS = 256
/** Records stored and waiting for their ack cell, per connection. */
const MAX_ACKABLE = 1 << 16

export const DEFAULT_RECEIVER_SCHEDULE: ShaperMode = { mode: 'clock', intervalMs: 250, poisson: false }

const realClock: ShaperClock = {
  now: () => performance.now(),
  setTimer(atMs, fn) {
    const timer = setTimeout(fn, Math.max(0, atMs - performance.now()))
    return { cancel: () => clearTimeout(timer) }
  },
}

/**
 * The cloud receiver: accepts gateways whose static keys are registered in the store, opens their
 * cells, stores their records (deduplicated by gateway and sequence number, one transaction per
 * batch) and only then acknowledges them, in cells on its own schedule. A gateway that fails any
 * check is disconnected; an unknown key or a replayed handshake gets no answer at all.
 */
export async function createReceiver(options: ReceiverOptions): Promise<Receiver> {
  await sodiumReady()
  const cellBytes = checkCellBytes(options.cellBytes ?? DEFAULT_CELL_BYTES)
  const prologue = prologueOf(cellBytes)
  const { store } = options
  const now = options.clock?.now ?? Date.now
  const schedule = options.schedule ?? DEFAULT_RECEIVER_SCHEDULE
  const maxRecordBytes = options.maxRecordBytes ?? MAX_RECORD_CONTENT_BYTES
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000
  const idleTimeoutMs = options.idleTimeoutMs ?? 300_000
  const maxConnections = options.maxConnections ?? 1000
  const maxHandshakes = options.maxHandshakes ?? 64
  const rekeyMs = options.rekeyMs ?? 60_000
  let handshaking = 0
  const sockets = new Set<Socket>()
  const report = (event: ReceiverEvent): void => {
    try {
      options.onEvent?.(event)
    } catch {
      // The operator's log must not break the receiver.
    }
  }

  const serve = (socket: Socket): void => {
    const remote = `${socket.remoteAddress}:${socket.remotePort}`
    if (sockets.size >= maxConnections || handshaking >= maxHandshakes) {
      socket.destroy()
      report({
        type: 'refused',
        remote,
        reason: sockets.size >= maxConnections ? 'too many connections' : 'too many handshakes at once',
      })
      return
    }
    sockets.add(socket)
    handshaking++
    let counted = true
    const handshakeDone = (): void => {
      if (counted) handshaking--
      counted = false
      clearTimeout(handshakeDeadline)
    }
    socket.setNoDelay(true)
    // The whole handshake has a deadline, not only each pause in it: a peer trickling bytes is cut.
    const handshakeDeadline = setTimeout(() => fail('the handshake took too long', true), handshakeTimeoutMs)
    /** When the gateway last sent a unit: it sends one every slot, so a long silence is a dead link. */
    let lastHeardAt = performance.now()
    /** Units read and not yet handled; past a bound the socket is paused. */
    let unhandled = 0
    let rekeyAt = performance.now() + rekeyMs
    const reader = createUnitReader(cellBytes)
    const responder = createResponder({ staticKeyPair: options.identity, prologue })
    let phase: 'hello' | 'header' | 'open' | 'closed' = 'hello'
    let gateway: string | undefined
    let cells: CellSession | undefined
    const unpacker = createRecordUnpacker({ maxRecordBytes })
    /** Stored and not yet acknowledged, in arrival order. */
    let ackable: number[] = []
    let shaper: ReturnType<typeof createShaper> | undefined
    // Units are handled one at a time, in order, across the store's awaits.
    let queue: Promise<void> = Promise.resolve()

    const fail = (reason: string, quietly = false): void => {
      if (phase === 'closed') return
      phase = 'closed'
      shaper?.stop()
      socket.destroy()
      if (quietly) report({ type: 'refused', remote, reason })
    }

    const hello = async (unit: Uint8Array): Promise<void> => {
      const { payload, remoteStaticKey } = responder.readMessage1(unit)
      const timestamp = decodeMessage1Payload(payload, cellBytes)
      const found = await store.gatewayByKey(encodeKey(remoteStaticKey))
      if (found === undefined) throw new SyncError(SYNC_ERROR_CODES.unknownPeer, 'an unknown gateway key')
      if (!(await store.acceptHandshake(found.name, timestamp, now()))) {
        throw new SyncError(
          SYNC_ERROR_CODES.replayedHandshake,
          `a replayed handshake of gateway '${found.name}'`,
        )
      }
      gateway = found.name
      socket.write(responder.writeMessage2(encodeMessage2Payload(cellBytes)))
      const keys = responder.result()
      cells = createCellSession({ sendKey: keys.sendKey, receiveKey: keys.receiveKey, cellBytes })
      socket.write(cells.headerUnit)
      phase = 'header'
    }

    const opened = (): void => {
      handshakeDone()
      phase = 'open'
      report({ type: 'session', gateway: gateway as string, remote })
      shaper = createShaper({
        schedule,
        clock: realClock,
        random: secureRandom,
        send: (count) => {
          if (phase !== 'open' || cells === undefined) return
          // Checked at each slot, whatever happens: a gateway gone quiet, or one that does not read.
          if (performance.now() - lastHeardAt > idleTimeoutMs) {
            report({
              type: 'closed',
              gateway,
              remote,
              reason: `the gateway sent nothing for ${idleTimeoutMs} ms`,
            })
            fail('quiet')
            return
          }
          if (socket.writableLength > MAX_UNSENT_CELLS * cellBytes) {
            report({ type: 'closed', gateway, remote, reason: 'the gateway does not read its cells' })
            fail('not reading')
            return
          }
          const units: Uint8Array[] = []
          for (let i = 0; i < count; i++) {
            if (performance.now() >= rekeyAt) {
              units.push(cells.seal(CELL_TYPES.RATCHET, new Uint8Array(0), { rekey: true }))
              rekeyAt = performance.now() + rekeyMs
              continue
            }
            if (ackable.length === 0) {
              units.push(cells.seal(CELL_TYPES.DUMMY, new Uint8Array(0)))
              continue
            }
            const { body, rest } = encodeAcks(
              seqsToRanges([...ackable].sort((a, b) => a - b)),
              cells.plaintextBytes,
            )
            ackable = rest.flatMap(([from, to]) => Array.from({ length: to - from + 1 }, (_, k) => from + k))
            units.push(cells.seal(CELL_TYPES.ACK, body))
          }
          socket.write(Buffer.concat(units))
        },
        backlogCells: () => (ackable.length === 0 ? 0 : 1),
      })
      shaper.start()
    }

    const data = async (unit: Uint8Array): Promise<void> => {
      const cell = (cells as CellSession).open(unit)
      switch (cell.type) {
        case CELL_TYPES.DATA: {
          const records = unpacker.push(cell.body)
          if (records.length === 0) return
          const incoming: IncomingRecord[] = records.map(({ seq, body }) => {
            const content = decodeRecordContent(seq, body)
            return {
              seq,
              tenant: content.tenant,
              function: content.function,
              stream: content.stream,
              createdAt: content.createdAt,
              body: JSON.stringify(content.record ?? null),
            }
          })
          const result = await store.storeRecords(gateway as string, incoming, now())
          report({ type: 'stored', gateway: gateway as string, ...result })
          for (const record of incoming) ackable.push(record.seq)
          // A gateway keeps at most its window in flight; this many waiting means it is not one.
          if (ackable.length > MAX_ACKABLE)
            throw new SyncError(
              SYNC_ERROR_CODES.badRecord,
              'too many records waiting for their acknowledgement',
            )
          return
        }
        case CELL_TYPES.DUMMY:
        case CELL_TYPES.RATCHET:
          return
        case CELL_TYPES.CLOSE:
          phase = 'closed'
          shaper?.stop()
          socket.end()
          report({ type: 'closed', gateway, remote, reason: 'the gateway ended the session' })
          return
        default:
          throw new SyncError(SYNC_ERROR_CODES.badCell, `a cell of type ${cell.type} from a gateway`)
      }
    }

    const handle = async (unit: Uint8Array): Promise<void> => {
      if (phase === 'closed') return
      try {
        if (phase === 'hello') await hello(unit)
        else if (phase === 'header') {
          ;(cells as CellSession).acceptHeaderUnit(unit)
          opened()
        } else await data(unit)
      } catch (error) {
        const code = error instanceof SyncError ? error.code : SYNC_ERROR_CODES.store
        // Handshake failures get no answer, so a scanner cannot tell a receiver from a closed port.
        const quietly = phase === 'hello'
        if (!quietly)
          report({ type: 'closed', gateway, remote, reason: `${code}: ${(error as Error).message}` })
        fail(`${code}: ${(error as Error).message}`, quietly)
      }
    }

    socket.on('data', (chunk: Buffer) => {
      lastHeardAt = performance.now()
      for (const unit of reader.push(chunk)) {
        unhandled++
        queue = queue
          .then(() => handle(unit))
          .finally(() => {
            unhandled--
            if (unhandled < MAX_UNHANDLED_UNITS / 2 && socket.isPaused()) socket.resume()
          })
      }
      // The store is slower than the gateway: stop reading until it caught up (TCP holds the rest).
      if (unhandled >= MAX_UNHANDLED_UNITS) socket.pause()
    })
    socket.on('error', () => {})
    socket.on('close', () => {
      sockets.delete(socket)
      handshakeDone()
      if (phase !== 'closed') {
        const partial = reader.pendingBytes > 0 ? ` with ${reader.pendingBytes} bytes of a unit` : ''
        report({ type: 'closed', gateway, remote, reason: `the connection closed${partial}` })
      }
      phase = 'closed'
      shaper?.stop()
    })
  }

  const server: Server = createServer(serve)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port, options.host ?? '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const address = server.address()
  const port = typeof address === 'object' && address !== null ? address.port : options.port
  let closed: Promise<void> | undefined
  const receiver: Receiver = {
    port,
    get sessions() {
      return sockets.size
    },
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve())
        for (const socket of sockets) socket.destroy()
      })
      return closed
    },
    [Symbol.asyncDispose]: () => receiver.close(),
  }
  return receiver
}
