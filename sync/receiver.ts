import { createServer, type Server, type Socket } from 'node:net'
import { CELL_TYPES, createRecordUnpacker, encodeAcks } from './cell-codec.ts'
import { type CellSession, createCellSession } from './cell-session.ts'
import type { CloudStore, IncomingRecord } from './cloud-store.ts'
import { SYNC_ERROR_CODES, SyncError } from './errors.ts'
import { encodeKey } from './identity.ts'
import { createResponder, type KeyPair, sodiumReady } from './noise-ik.ts'
import { createShaper, type ShaperClock, type ShaperMode } from './shaper.ts'
import { decodeRecordContent } from './uplink-record.ts'
import {
  checkCellBytes,
  createUnitReader,
  DEFAULT_CELL_BYTES,
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
  /** A session that sends nothing for this long is closed (default 60 s). */
  idleTimeoutMs?: number
  /** Largest record accepted (default 1 MiB). */
  maxRecordBytes?: number
  /** Connections at once (default 1000); more are closed at once. */
  maxConnections?: number
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
  const maxRecordBytes = options.maxRecordBytes ?? 1024 * 1024
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000
  const idleTimeoutMs = options.idleTimeoutMs ?? 60_000
  const maxConnections = options.maxConnections ?? 1000
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
    if (sockets.size >= maxConnections) {
      socket.destroy()
      report({ type: 'refused', remote, reason: 'too many connections' })
      return
    }
    sockets.add(socket)
    socket.setNoDelay(true)
    socket.setTimeout(handshakeTimeoutMs)
    // The whole handshake has a deadline, not only each pause in it: a peer trickling bytes is cut.
    const handshakeDeadline = setTimeout(() => fail('the handshake took too long', true), handshakeTimeoutMs)
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
      clearTimeout(handshakeDeadline)
      phase = 'open'
      socket.setTimeout(idleTimeoutMs)
      report({ type: 'session', gateway: gateway as string, remote })
      shaper = createShaper({
        schedule,
        clock: realClock,
        random: secureRandom,
        send: (count) => {
          if (phase !== 'open' || cells === undefined) return
          const units: Uint8Array[] = []
          for (let i = 0; i < count; i++) {
            if (ackable.length === 0) {
              units.push(cells.seal(CELL_TYPES.DUMMY, new Uint8Array(0)))
              continue
            }
            const { body, rest } = encodeAcks(rangesOf(ackable), cells.plaintextBytes)
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
              body: JSON.stringify(content.record),
            }
          })
          const result = await store.storeRecords(gateway as string, incoming, now())
          report({ type: 'stored', gateway: gateway as string, ...result })
          for (const record of incoming) ackable.push(record.seq)
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
      for (const unit of reader.push(chunk)) queue = queue.then(() => handle(unit))
    })
    socket.on('timeout', () => fail('the peer went quiet'))
    socket.on('error', () => {})
    socket.on('close', () => {
      sockets.delete(socket)
      clearTimeout(handshakeDeadline)
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

/** Sorted, merged inclusive ranges of seqs. */
function rangesOf(seqs: number[]): Array<[number, number]> {
  const sorted = [...new Set(seqs)].sort((a, b) => a - b)
  const ranges: Array<[number, number]> = []
  for (const seq of sorted) {
    const last = ranges.at(-1)
    if (last !== undefined && last[1] + 1 === seq) last[1] = seq
    else ranges.push([seq, seq])
  }
  return ranges
}
