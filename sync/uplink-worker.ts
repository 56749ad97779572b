// The uplink's worker thread: it owns the socket, the handshake, the cells and the shaper, so that
// the main thread's pauses (commits, functions) never show in when cells leave. The main side only
// hands it records and hears of acks.
import { randomInt } from 'node:crypto'
import { connect, type Socket } from 'node:net'
import { parentPort, workerData } from 'node:worker_threads'
import {
  CELL_HEADER_BYTES,
  CELL_TYPES,
  checkCellBytes,
  createRecordPacker,
  decodeAcks,
} from './cell-codec.ts'
import { type CellSession, createCellSession } from './cell-session.ts'
import { createInitiator, sodiumReady } from './noise-ik.ts'
import { createShaper, type ShaperClock } from './shaper.ts'
import {
  emptyWireStats,
  UPLINK_CLOSING_REASON,
  type UplinkCommand,
  type UplinkEvent,
  type UplinkWireStats,
  type UplinkWorkerData,
} from './uplink-protocol.ts'
import {
  checkMessage2Payload,
  createHandshakeClock,
  createUnitReader,
  encodeMessage1Payload,
  prologueOf,
  secureRandom,
} from './wire.ts'

const data = (workerData as { data: UplinkWorkerData }).data
const port = parentPort
if (port === null) throw new Error('Cannot run the uplink worker outside a worker thread')
const cellBytes = checkCellBytes(data.cellBytes)
const prologue = prologueOf(cellBytes)
const stamp = createHandshakeClock()
/** Sealed cells the socket may hold unsent before slots are skipped. */
const MAX_UNSENT_CELLS = 64
/**
 * A receiver sends a cell at least every 10 s (its ack interval is at most that): a link silent
 * for this long is dead, even if TCP has not noticed (a half-open connection behind NAT).
 */
const RECEIVER_SILENCE_MS = 60_000

const post = (event: UplinkEvent): void => port.postMessage(event)
const stats: UplinkWireStats = emptyWireStats()

const clock: ShaperClock = {
  now: () => performance.now(),
  setTimer(atMs, fn) {
    const timer = setTimeout(fn, Math.max(0, atMs - performance.now()))
    return { cancel: () => clearTimeout(timer) }
  },
}

let closing = false
let attempt = 0
let session = 0
let current: Link | undefined
let reconnect: NodeJS.Timeout | undefined

interface Link {
  socket: Socket
  session: number
  cells: CellSession | undefined
  packer: ReturnType<typeof createRecordPacker> | undefined
  shaper: ReturnType<typeof createShaper> | undefined
  timers: NodeJS.Timeout[]
  rekeyDue: boolean
  lastHeardAt: number
  /** Set when the session is to end: the next slot carries CLOSE. */
  ending: boolean
  open: boolean
}

function start(): void {
  reconnect = undefined
  if (closing) return
  const socket = connect({ host: data.host, port: data.port })
  socket.setNoDelay(true)
  const link: Link = {
    socket,
    session: 0,
    cells: undefined,
    packer: undefined,
    shaper: undefined,
    timers: [],
    rekeyDue: false,
    lastHeardAt: performance.now(),
    ending: false,
    open: false,
  }
  current = link
  const initiator = createInitiator({
    staticKeyPair: { publicKey: data.publicKey, secretKey: data.secretKey },
    remoteStaticKey: data.cloudKey,
    prologue,
  })
  const reader = createUnitReader(cellBytes)
  let phase: 'reply' | 'header' | 'open' = 'reply'
  const handshakeTimer = setTimeout(
    () => socket.destroy(new Error(`the handshake took over ${data.handshakeTimeoutMs} ms`)),
    data.handshakeTimeoutMs,
  )
  link.timers.push(handshakeTimer)
  socket.on('connect', () => {
    socket.write(initiator.writeMessage1(encodeMessage1Payload(stamp(), cellBytes)))
  })
  socket.on('data', (chunk: Buffer) => {
    link.lastHeardAt = performance.now()
    try {
      for (const unit of reader.push(chunk)) {
        if (phase === 'reply') {
          checkMessage2Payload(initiator.readMessage2(unit), cellBytes)
          const keys = initiator.result()
          link.cells = createCellSession({ sendKey: keys.sendKey, receiveKey: keys.receiveKey, cellBytes })
          socket.write(link.cells.headerUnit)
          phase = 'header'
        } else if (phase === 'header') {
          link.cells?.acceptHeaderUnit(unit)
          phase = 'open'
          clearTimeout(handshakeTimer)
          established(link)
        } else received(link, unit)
      }
    } catch (error) {
      socket.destroy(error as Error)
    }
  })
  socket.on('error', () => {})
  socket.on('close', () => lost(link, socket.errored?.message ?? 'the connection closed'))
}

/** The handshake is done: cells flow from the next slot. */
function established(link: Link): void {
  const cells = link.cells as CellSession
  attempt = 0
  link.session = ++session
  link.open = true
  link.packer = createRecordPacker({
    plaintextBytes: cells.plaintextBytes,
    maxQueuedBytes: data.maxQueuedBytes,
  })
  link.shaper = createShaper({
    schedule: data.schedule,
    clock,
    random: secureRandom,
    send: (count) => sendSlot(link, count),
    backlogCells: () => backlogCells(link),
    alarmCells: data.alarmCells,
    onAlarm: (backlog) => post({ type: 'alarm', backlogCells: backlog }),
  })
  link.timers.push(
    setInterval(() => {
      link.rekeyDue = true
    }, data.rekeyMs),
  )
  const jitter = 1 + (secureRandom() * 2 - 1) * data.sessionJitter
  link.timers.push(
    setTimeout(() => {
      link.ending = true
    }, data.sessionMs * jitter),
  )
  link.shaper.start()
  post({ type: 'connected', session: link.session })
}

/** Cells the queued records fill: each DATA cell carries its plaintext less the cell header. */
function backlogCells(link: Link): number {
  const carried = (link.cells?.plaintextBytes ?? cellBytes) - CELL_HEADER_BYTES
  return Math.ceil((link.packer?.queuedBytes ?? 0) / carried)
}

/** A slot of `count` cells: each is the rekey, the close, records, or a dummy; all sealed alike. */
function sendSlot(link: Link, count: number): void {
  const { socket, cells, packer } = link
  if (!link.open || cells === undefined || packer === undefined) return
  if (performance.now() - link.lastHeardAt > RECEIVER_SILENCE_MS) {
    socket.destroy(new Error(`the receiver sent nothing for ${RECEIVER_SILENCE_MS} ms`))
    return
  }
  if (socket.writableLength > MAX_UNSENT_CELLS * cellBytes) {
    stats.slotsSkipped += count
    return
  }
  const units: Uint8Array[] = []
  let end = false
  for (let i = 0; i < count && !end; i++) {
    if (link.ending) {
      units.push(cells.seal(CELL_TYPES.CLOSE, new Uint8Array(0), { final: true }))
      stats.cellsControl++
      end = true
    } else if (link.rekeyDue) {
      units.push(cells.seal(CELL_TYPES.RATCHET, new Uint8Array(0), { rekey: true }))
      link.rekeyDue = false
      stats.cellsControl++
    } else {
      const before = packer.queuedBytes
      const plaintext = packer.nextCell()
      if (plaintext === undefined) {
        units.push(cells.seal(CELL_TYPES.DUMMY, new Uint8Array(0)))
        stats.cellsDummy++
      } else {
        units.push(cells.sealPlaintext(plaintext))
        stats.cellsData++
        stats.recordBytes += before - packer.queuedBytes
      }
    }
  }
  const bytes = Buffer.concat(units)
  stats.wireBytes += bytes.length
  stats.backlogCells = backlogCells(link)
  socket.write(bytes)
  if (end) {
    link.open = false
    socket.end()
  }
}

/** A cell from the cloud: acks and dummies; anything else ends the session. */
function received(link: Link, unit: Uint8Array): void {
  const cell = (link.cells as CellSession).open(unit)
  switch (cell.type) {
    case CELL_TYPES.ACK:
      post({ type: 'acked', session: link.session, ranges: decodeAcks(cell.body) })
      return
    case CELL_TYPES.DUMMY:
    case CELL_TYPES.RATCHET:
      return
    case CELL_TYPES.CLOSE:
      link.open = false
      link.socket.end()
      return
    default:
      throw new Error(`the cloud sent a cell of type ${cell.type}, which it never sends`)
  }
}

/** The connection ended: its queued records are dropped (the main side sends them again). */
function lost(link: Link, reason: string): void {
  if (current !== link) return
  current = undefined
  link.open = false
  link.shaper?.stop()
  for (const timer of link.timers) clearTimeout(timer)
  if (link.session !== 0) {
    post({ type: 'disconnected', session: link.session, reason: closing ? UPLINK_CLOSING_REASON : reason })
  }
  if (closing) {
    post({ type: 'closed' })
    return
  }
  // A session that ended on schedule starts again at once; a failure backs off, with full jitter.
  const planned = link.ending && link.session !== 0
  const delay = planned
    ? 0
    : randomInt(
        data.backoff.minMs,
        Math.max(data.backoff.minMs + 1, Math.min(data.backoff.maxMs, data.backoff.minMs * 2 ** attempt)),
      )
  if (!planned) attempt++
  reconnect = setTimeout(start, delay)
}

port.on('message', (command: UplinkCommand) => {
  if (command.type === 'close') {
    closing = true
    if (reconnect !== undefined) clearTimeout(reconnect)
    const link = current
    if (link === undefined) {
      post({ type: 'closed' })
      return
    }
    if (link.open) link.ending = true
    else link.socket.destroy()
    // A CLOSE waits for the next slot; past a second the socket goes anyway.
    setTimeout(() => link.socket.destroy(), 1000).unref()
    return
  }
  const link = current
  if (link?.packer === undefined || command.session !== link.session || !link.open) return
  for (const record of command.records) {
    // The main side's window keeps within the bound; past it, the session starts again rather
    // than lose a record (the main side sends everything unacknowledged on the next one).
    if (!link.packer.push(record.seq, record.body)) {
      link.socket.destroy(new Error('the record queue passed its bound'))
      return
    }
  }
  // Only the `off` schedule listens: it sends when data waits, which is why it hides nothing.
  link.shaper?.kick()
})

setInterval(() => post({ type: 'stats', stats: { ...stats } }), 1000).unref()

await sodiumReady()
start()
