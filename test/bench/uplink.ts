// The uplink benchmark (`npm run bench:uplink`, also run by `npm run bench`; see
// docs/benchmark-methods.md#uplink). Three questions:
//  1. Encryption and framing throughput, in process: records packed into fixed-size cells, sealed
//     with secretstream, opened and unpacked on the other side, per cell size, against the same
//     records each sealed on their own with XChaCha20-Poly1305 (what per-record, TLS-like framing
//     does) and against copying them through a length-prefixed buffer (no crypto at all).
//  2. Bandwidth overhead of each shaper mode for a steady ETL load: a gateway child
//     (`taureau gateway --config FILE`) streams to a real receiver in this process through a
//     counting TCP proxy; wire bytes (both directions) over the raw bytes of the records' JSON.
//  3. Delivery latency per mode: the device's publish time travels in the record, and the
//     receiver's store is wrapped to stamp each record when its batch is stored.
// Progress goes to stderr, the results tables to stdout and a section file (see _section.ts) to
// test/bench/results.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect as connectTcp, createServer, type Server, type Socket } from 'node:net'
import { arch, cpus, loadavg, platform, tmpdir, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import sodium from 'libsodium-wrappers'
import mqtt, { type MqttClient } from 'mqtt'
import {
  CELL_HEADER_BYTES,
  CELL_TYPES,
  type CellBytes,
  checkCellBytes,
  createRecordPacker,
  createRecordUnpacker,
} from '../../sync/cell-codec.ts'
import { createCellSession } from '../../sync/cell-session.ts'
import {
  type CloudStore,
  createReceiver,
  createSqliteCloudStore,
  encodeKey,
  encodeRecordContent,
  type IncomingRecord,
  loadIdentity,
  type Receiver,
  type ShaperMode,
} from '../../sync/index.ts'
import { sodiumReady } from '../../sync/noise-ik.ts'
import { STREAM_OVERHEAD_BYTES } from '../../sync/secret-stream.ts'
import { formatNumber, plural, sectionSummary } from './_markdown.ts'
import { byMode } from './_quick.ts'
import { type BenchFigure, type BenchPlot, type BenchSection, cdfPoints, writeSection } from './_section.ts'
import { median, percentiles } from './_stats.ts'

const BIN = resolve(import.meta.dirname, '../../bin/taureau')
const TENANT = 'bench'
const DEVICE = 'meter-1'
const FUNCTION_NAME = 'etl'
const STREAM = 'readings'
/**
 * The ETL step: renames and keeps the reading's fields, adds the site. No arithmetic, so the
 * record's JSON can be computed here too (`etlRecord`) and checked against what the cloud stored.
 */
const FUNCTION_SOURCE = `export default { onMessage(msg, ctx) {
  const r = msg.payload
  ctx.emit({ device: r.dev, at: r.t, seq: r.seq, temperatureC: r.temp, humidityPct: r.hum, pm25: r.pm25, batteryV: r.bat, site: 'plant-3' }, { stream: '${STREAM}' })
} }`
/** Record sizes of the throughput part: a small JSON reading, and a 1 KiB batch of samples. */
const RECORD_SIZES = [120, 1024] as const
const THROUGHPUT_CELL_SIZES: readonly CellBytes[] = [512, 1024, 1200]
/** Distinct record bodies cycled through in the throughput part. */
const POOL_RECORDS = 512
const BATCH_RECORDS = 256
/** Publish pacing: the device publishes what is due every tick and never catches up more than 1 s. */
const PUBLISH_TICK_MS = 5
const API_TIMEOUT_MS = 15_000
const CONNECT_TIMEOUT_MS = 20_000
/** After the load stops, delivery is waited for until nothing arrives for this long, or the cap. */
const DRAIN_STALL_MS = 3000
const DRAIN_MAX_MS = 60_000
/** How long to wait for the gateway's uplink counters to change (they are posted once a second). */
const FRESH_STATS_TIMEOUT_MS = 1300
const FRESH_STATS_POLL_MS = 15
/** Rate margin of the load-sized schedules over the cells the load needs. */
const SIZING_MARGIN = 1.5

// Quick mode (`--quick`, BENCH_QUICK=1) only shortens the defaults; explicit values still win.
const { values: flags } = parseArgs({
  options: {
    parts: { type: 'string', default: process.env.BENCH_UPLINK_PARTS ?? 'throughput,network' },
    'throughput-ms': {
      type: 'string',
      default: process.env.BENCH_UPLINK_THROUGHPUT_MS ?? byMode('300', '100'),
    },
    'throughput-rounds': {
      type: 'string',
      default: process.env.BENCH_UPLINK_THROUGHPUT_ROUNDS ?? byMode('5', '1'),
    },
    seconds: { type: 'string', default: process.env.BENCH_UPLINK_SECONDS ?? byMode('12', '3') },
    'warmup-seconds': {
      type: 'string',
      default: process.env.BENCH_UPLINK_WARMUP_SECONDS ?? byMode('2', '1'),
    },
    rounds: { type: 'string', default: process.env.BENCH_UPLINK_ROUNDS ?? '1' },
    rate: { type: 'string', default: process.env.BENCH_UPLINK_RATE ?? '50' },
    'cell-bytes': { type: 'string', default: process.env.BENCH_UPLINK_CELL_BYTES ?? '1024' },
    modes: { type: 'string', default: process.env.BENCH_UPLINK_MODES ?? 'all' },
    'results-dir': { type: 'string', default: process.env.BENCH_UPLINK_RESULTS_DIR ?? 'test/bench/results' },
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
})

const positive = (name: string, value: string | undefined, allowZero = false): number => {
  const number = Number(value)
  if (!Number.isFinite(number) || number < 0 || (!allowZero && number === 0))
    throw new RangeError(`Cannot run the benchmark as --${name} '${value}' is not a positive number`)
  return number
}
const PARTS = new Set((flags.parts as string).split(',').map((part) => part.trim()))
for (const part of PARTS) {
  if (part !== 'throughput' && part !== 'network')
    throw new RangeError(`Cannot run the benchmark as part '${part}' is not one of: throughput, network`)
}
const THROUGHPUT_MS = positive('throughput-ms', flags['throughput-ms'])
const THROUGHPUT_ROUNDS = positive('throughput-rounds', flags['throughput-rounds'])
const SECONDS = positive('seconds', flags.seconds)
const WARMUP_SECONDS = positive('warmup-seconds', flags['warmup-seconds'], true)
const ROUNDS = positive('rounds', flags.rounds)
const RATE = positive('rate', flags.rate)
const CELL_BYTES = checkCellBytes(positive('cell-bytes', flags['cell-bytes']), '--cell-bytes')

const log = (line: string) => process.stderr.write(`${line}\n`)
/** Wall-clock milliseconds with sub-millisecond resolution; the gateway child is on the same machine. */
const wallNow = (): number => performance.timeOrigin + performance.now()
const fixed = (value: number, digits = 0) =>
  Number.isFinite(value)
    ? value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : 'n/a'

// ---------------------------------------------------------------------------------------------
// Part 1: encryption and framing throughput, in process.

/** A JSON text of exactly `bytes` bytes: a sensor reading (plus samples when large), padded in `note`. */
function jsonOfBytes(bytes: number, index: number): Uint8Array {
  const reading: Record<string, unknown> = {
    dev: `meter-${String(index % 1000).padStart(4, '0')}`,
    t: 1_764_000_000_000 + index * 20,
    seq: index,
    temp: Number((18 + (index % 97) / 10).toFixed(2)),
    hum: Number((40 + (index % 31) / 3).toFixed(1)),
  }
  if (bytes > 200) {
    const samples: number[] = []
    while (JSON.stringify({ ...reading, samples }).length < bytes - 40)
      samples.push(((index * 7919 + samples.length) % 4096) / 16)
    samples.pop()
    reading.samples = samples
  }
  const base = JSON.stringify({ ...reading, note: '' })
  if (base.length > bytes)
    throw new RangeError(`Cannot make a ${bytes}-byte record as the reading alone is ${base.length}`)
  return new TextEncoder().encode(JSON.stringify({ ...reading, note: 'x'.repeat(bytes - base.length) }))
}

type ThroughputPath = 'copy' | 'aead-per-record' | `cells-${CellBytes}`

interface ThroughputRun {
  recordBytes: number
  path: ThroughputPath
  round: number
  records: number
  ms: number
  recordsPerSec: number
  payloadMBPerSec: number
  /** Bytes that would go on the wire per byte of record payload (cells, AEAD tags, length prefixes). */
  wirePerPayloadByte: number
}

/** Copies each record behind a 4-byte length into a buffer and back out: framing without crypto. */
function runCopy(pool: readonly Uint8Array[], durationMs: number) {
  const chunk = new Uint8Array(1 << 20)
  const view = new DataView(chunk.buffer)
  let records = 0
  let payload = 0
  let wire = 0
  let next = 0
  const started = performance.now()
  while (performance.now() - started < durationMs) {
    let at = 0
    for (let i = 0; i < BATCH_RECORDS; i++) {
      const body = pool[next++ % pool.length] as Uint8Array
      view.setUint32(at, body.length)
      chunk.set(body, at + 4)
      at += 4 + body.length
    }
    wire += at
    let read = 0
    while (read < at) {
      const length = view.getUint32(read)
      const copy = chunk.slice(read + 4, read + 4 + length)
      payload += copy.length
      records++
      read += 4 + length
    }
  }
  return { records, payload, wire, ms: performance.now() - started }
}

/** Seals each record on its own (XChaCha20-Poly1305 IETF, counter nonces) and opens it. */
function runAeadPerRecord(pool: readonly Uint8Array[], durationMs: number) {
  const key = sodium.randombytes_buf(32)
  const sealNonce = new Uint8Array(24)
  const openNonce = new Uint8Array(24)
  let records = 0
  let payload = 0
  let wire = 0
  let next = 0
  const started = performance.now()
  while (performance.now() - started < durationMs) {
    for (let i = 0; i < BATCH_RECORDS; i++) {
      const body = pool[next++ % pool.length] as Uint8Array
      const sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(body, null, null, sealNonce, key)
      sodium.increment(sealNonce)
      // A per-record frame carries its length (4) and, unless both sides count, its nonce (24).
      wire += 4 + 24 + sealed.length
      const opened = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, sealed, null, openNonce, key)
      sodium.increment(openNonce)
      if (opened.length !== body.length)
        throw new Error('Cannot benchmark as a record opened to another length')
      payload += opened.length
      records++
    }
  }
  return { records, payload, wire, ms: performance.now() - started }
}

/**
 * The uplink's path: records packed into cells (`createRecordPacker`), sealed by one cell session,
 * opened by its peer and unpacked (`createRecordUnpacker`). Only full cells are sent while the run
 * lasts, as under load; the rest goes in one last, padded cell. The first batch is compared byte
 * for byte, and every run must get back as many records and bytes as it sent.
 */
function runCells(pool: readonly Uint8Array[], cellBytes: CellBytes, durationMs: number) {
  const sendKey = sodium.randombytes_buf(32)
  const receiveKey = sodium.randombytes_buf(32)
  const gateway = createCellSession({ sendKey, receiveKey, cellBytes })
  const cloud = createCellSession({ sendKey: receiveKey, receiveKey: sendKey, cellBytes })
  gateway.acceptHeaderUnit(cloud.headerUnit)
  cloud.acceptHeaderUnit(gateway.headerUnit)
  const capacity = gateway.plaintextBytes - CELL_HEADER_BYTES
  const packer = createRecordPacker({
    plaintextBytes: gateway.plaintextBytes,
    maxQueuedBytes: 64 * 1024 * 1024,
  })
  const unpacker = createRecordUnpacker({ maxRecordBytes: 1024 * 1024 })
  let seq = 0
  let sent = 0
  let sentBytes = 0
  let records = 0
  let payload = 0
  let wire = 0
  let next = 0
  // The first batch is compared byte for byte; later ones by count and bytes.
  const expected = new Map<number, Uint8Array>()
  const carry = (): void => {
    const plaintext = packer.nextCell()
    if (plaintext === undefined) return
    const unit = gateway.sealPlaintext(plaintext)
    wire += unit.length
    const cell = cloud.open(unit)
    if (cell.type !== CELL_TYPES.DATA)
      throw new Error(`Cannot benchmark as a cell opened as type ${cell.type}`)
    for (const record of unpacker.push(cell.body)) {
      if (record.seq <= BATCH_RECORDS) {
        const original = expected.get(record.seq)
        if (original === undefined || Buffer.compare(original, record.body) !== 0)
          throw new Error(`Cannot benchmark as record ${record.seq} came back changed`)
        expected.delete(record.seq)
      }
      records++
      payload += record.body.length
    }
  }
  const started = performance.now()
  while (performance.now() - started < durationMs) {
    for (let i = 0; i < BATCH_RECORDS; i++) {
      const body = pool[next++ % pool.length] as Uint8Array
      seq++
      if (seq <= BATCH_RECORDS) expected.set(seq, body)
      if (!packer.push(seq, body)) throw new Error('Cannot benchmark as the packer refused a record')
      sent++
      sentBytes += body.length
    }
    while (packer.queuedBytes >= capacity) carry()
  }
  while (packer.queuedBytes > 0) carry()
  const ms = performance.now() - started
  if (records !== sent || payload !== sentBytes || expected.size > 0)
    throw new Error(`Cannot benchmark as ${sent} records went into cells and ${records} came out`)
  return { records, payload, wire, ms }
}

function runPath(path: ThroughputPath, pool: readonly Uint8Array[], durationMs: number) {
  if (path === 'copy') return runCopy(pool, durationMs)
  if (path === 'aead-per-record') return runAeadPerRecord(pool, durationMs)
  return runCells(pool, Number(path.slice('cells-'.length)) as CellBytes, durationMs)
}

async function throughputPart() {
  await sodiumReady()
  await sodium.ready
  const paths: ThroughputPath[] = [
    'copy',
    'aead-per-record',
    ...THROUGHPUT_CELL_SIZES.map((cellBytes) => `cells-${cellBytes}` as const),
  ]
  const runs: ThroughputRun[] = []
  for (const recordBytes of RECORD_SIZES) {
    const pool = Array.from({ length: POOL_RECORDS }, (_, index) => jsonOfBytes(recordBytes, index))
    // Unmeasured: lets the JIT settle on every path before the rounds.
    for (const path of paths) runPath(path, pool, Math.min(200, THROUGHPUT_MS))
    for (let round = 1; round <= THROUGHPUT_ROUNDS; round++) {
      // Paths alternate within a round, so a noisy second hits them all alike.
      for (const path of paths) {
        const measured = runPath(path, pool, THROUGHPUT_MS)
        runs.push({
          recordBytes,
          path,
          round,
          records: measured.records,
          ms: measured.ms,
          recordsPerSec: measured.records / (measured.ms / 1000),
          payloadMBPerSec: measured.payload / 1e6 / (measured.ms / 1000),
          wirePerPayloadByte: measured.wire / measured.payload,
        })
      }
    }
    const line = paths
      .map((path) => {
        const rate = median(
          runs.filter((r) => r.recordBytes === recordBytes && r.path === path).map((r) => r.recordsPerSec),
        )
        return `${path} ${fixed(rate)}/s`
      })
      .join(', ')
    log(`throughput, ${recordBytes}-byte records: ${line}`)
  }
  const rows = RECORD_SIZES.flatMap((recordBytes) =>
    paths.map((path) => {
      const mine = runs.filter((run) => run.recordBytes === recordBytes && run.path === path)
      // Ratios per round: the paths of one round ran within a second or two of each other.
      const ratioTo = (peer: ThroughputPath) =>
        median(
          mine.map((run) => {
            const other = runs.find(
              (o) => o.recordBytes === recordBytes && o.path === peer && o.round === run.round,
            )
            return other === undefined ? Number.NaN : run.recordsPerSec / other.recordsPerSec
          }),
        )
      return {
        recordBytes,
        path,
        recordsPerSec: median(mine.map((run) => run.recordsPerSec)),
        recordsPerSecRounds: mine.map((run) => Math.round(run.recordsPerSec)),
        payloadMBPerSec: median(mine.map((run) => run.payloadMBPerSec)),
        ratioToAead: ratioTo('aead-per-record'),
        ratioToCopy: ratioTo('copy'),
        wirePerPayloadByte: median(mine.map((run) => run.wirePerPayloadByte)),
      }
    }),
  )
  return { rows, runs }
}

// ---------------------------------------------------------------------------------------------
// Parts 2 and 3: a gateway child, a receiver and a device, per shaper mode.

/** One shaper configuration under test. */
interface BenchMode {
  name: string
  shaper: ShaperMode
  /** Why these settings. */
  note: string
  /** The latency floor the others are divided by. */
  peer?: true
}

/** What one record of the load takes in the cell stream, and the cells per second the load needs. */
function loadSizing() {
  const record = etlRecord(reading(1, wallNow()))
  const rawBytes = Buffer.byteLength(JSON.stringify(record))
  const framedBytes =
    encodeRecordContent({
      tenant: TENANT,
      function: FUNCTION_NAME,
      stream: STREAM,
      createdAt: Date.now(),
      record,
    }).length + 12
  const capacity = CELL_BYTES - STREAM_OVERHEAD_BYTES - CELL_HEADER_BYTES
  return { rawBytes, framedBytes, cellsPerSec: (RATE * framedBytes) / capacity }
}

function benchModes(cellsPerSec: number): BenchMode[] {
  const sizedCells = Math.max(1, Math.ceil(cellsPerSec * SIZING_MARGIN))
  const intervalMs = Math.max(1, Math.floor(1000 / (cellsPerSec * SIZING_MARGIN)))
  return [
    // `off` sends as data arrives, no cover: the floor the shaped modes are compared with.
    { name: 'off', shaper: { mode: 'off' }, note: 'as data comes, no cover', peer: true },
    {
      name: 'epoch-default',
      shaper: { mode: 'epoch', epochMs: 1000, cellsPerEpoch: 8 },
      note: 'the config default',
    },
    {
      name: 'epoch',
      shaper: { mode: 'epoch', epochMs: 1000, cellsPerEpoch: sizedCells },
      note: `sized: ${SIZING_MARGIN}x the cells the load needs`,
    },
    {
      name: 'clock',
      shaper: { mode: 'clock', intervalMs, poisson: false },
      note: `sized: ${SIZING_MARGIN}x the cells the load needs`,
    },
    {
      name: 'tiered',
      shaper: { mode: 'tiered', epochMs: 1000, tiers: [2, 8, 32], dwellMs: 5000 },
      note: 'default tiers; dwell 5 s instead of 10 min, so it adapts within the run',
    },
    // Stands in for `off` as the floor when `off` delivers nothing (see the problems list).
    {
      name: 'clock-1ms',
      shaper: { mode: 'clock', intervalMs: 1, poisson: false },
      note: 'one cell per ms: a latency floor with cover',
    },
  ]
}

/** The most cells per second a schedule sends (`tiered`: its top tier); unbounded for `off`. */
function scheduleCellsPerSec(shaper: ShaperMode): number {
  switch (shaper.mode) {
    case 'off':
      return Number.POSITIVE_INFINITY
    case 'epoch':
      return ((shaper.cellsPerEpoch ?? 8) * 1000) / (shaper.epochMs ?? 1000)
    case 'clock':
      return 1000 / (shaper.intervalMs ?? 125)
    case 'tiered':
      return (Math.max(...shaper.tiers) * 1000) / shaper.epochMs
  }
}

function describeShaper(shaper: ShaperMode): string {
  switch (shaper.mode) {
    case 'off':
      return 'off'
    case 'epoch':
      return `epoch ${shaper.cellsPerEpoch} cells / ${shaper.epochMs} ms`
    case 'clock':
      return `clock 1 cell / ${shaper.intervalMs} ms${shaper.poisson ? ' (Poisson)' : ''}`
    case 'tiered':
      return `tiered [${shaper.tiers.join(', ')}] cells / ${shaper.epochMs} ms, dwell ${shaper.dwellMs} ms`
  }
}

/** The device's reading: about 100 bytes of JSON, its publish time in `t` (ms, wall clock). */
function reading(seq: number, publishedAt: number) {
  return {
    dev: DEVICE,
    t: publishedAt,
    seq,
    temp: Number((18 + (seq % 97) / 10).toFixed(2)),
    hum: Number((40 + (seq % 31) / 3).toFixed(1)),
    pm25: seq % 53,
    bat: Number((3.6 + (seq % 11) / 100).toFixed(2)),
  }
}

/** What the function emits for a reading (FUNCTION_SOURCE does the same). */
function etlRecord(payload: ReturnType<typeof reading>) {
  return {
    device: payload.dev,
    at: payload.t,
    seq: payload.seq,
    temperatureC: payload.temp,
    humidityPct: payload.hum,
    pm25: payload.pm25,
    batteryV: payload.bat,
    site: 'plant-3',
  }
}

const CLOCK_TICKS_PER_SEC = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
})()

/** User + system CPU seconds of a process, from `/proc/<pid>/stat`; NaN where there is no /proc. */
function processCpuSeconds(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SEC
  } catch {
    return Number.NaN
  }
}

/** A TCP proxy that counts the bytes of each direction: what an observer of the link would see. */
async function startCountingProxy(targetPort: number) {
  const counts = { up: 0, down: 0, connections: 0 }
  const sockets = new Set<Socket>()
  const server: Server = createServer((inbound) => {
    counts.connections++
    const outbound = connectTcp({ host: '127.0.0.1', port: targetPort })
    for (const socket of [inbound, outbound]) {
      socket.setNoDelay(true)
      sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => {
        sockets.delete(socket)
        inbound.destroy()
        outbound.destroy()
      })
    }
    inbound.on('data', (chunk: Buffer) => {
      counts.up += chunk.length
    })
    outbound.on('data', (chunk: Buffer) => {
      counts.down += chunk.length
    })
    inbound.pipe(outbound)
    outbound.pipe(inbound)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('Cannot start the proxy: no port')
  return {
    port: address.port,
    counts,
    async close() {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((done) => server.close(() => done()))
    },
  }
}

/** What the receiver stored for one run: the stamp of each device seq when its batch was stored. */
interface Collector {
  storedAt: Map<number, number>
  publishedAt: Map<number, number>
  rawBytes: Map<number, number>
  duplicates: number
  mismatches: string[]
}

/** The cloud store, observed: each stored batch is stamped once the store's transaction is done. */
function observedStore(inner: CloudStore, collectors: Map<string, Collector>): CloudStore {
  const store: CloudStore = {
    addGateway: (name, publicKey) => inner.addGateway(name, publicKey),
    removeGateway: (name) => inner.removeGateway(name),
    listGateways: () => inner.listGateways(),
    gatewayByKey: (publicKey) => inner.gatewayByKey(publicKey),
    acceptHandshake: (name, timestamp, at) => inner.acceptHandshake(name, timestamp, at),
    async storeRecords(gateway: string, records: readonly IncomingRecord[], receivedAt: number) {
      const result = await inner.storeRecords(gateway, records, receivedAt)
      const storedAt = wallNow()
      const collector = collectors.get(gateway)
      if (collector !== undefined) {
        for (const record of records) {
          const body = JSON.parse(record.body) as { seq: number; at: number }
          if (collector.storedAt.has(body.seq)) {
            collector.duplicates++
            continue
          }
          collector.storedAt.set(body.seq, storedAt)
          const expectedBytes = collector.rawBytes.get(body.seq)
          const bytes = Buffer.byteLength(record.body)
          if (expectedBytes !== bytes && collector.mismatches.length < 5)
            collector.mismatches.push(`record ${body.seq} is ${bytes} bytes, ${expectedBytes} expected`)
        }
      }
      return result
    },
    records: (query) => inner.records(query),
    count: (query) => inner.count(query),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  }
  return store
}

/** The uplink's counters from the gateway's Prometheus text. */
function uplinkFigures(text: string) {
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN)
  return {
    connected: value('taureau_uplink_connected'),
    dataCells: value('taureau_uplink_data_cells'),
    dummyCells: value('taureau_uplink_dummy_cells'),
    wireBytes: value('taureau_uplink_wire_bytes'),
    recordBytes: value('taureau_uplink_record_bytes'),
    backlogCells: value('taureau_uplink_backlog_cells'),
    delivered: value('taureau_uplink_delivered_records'),
  }
}
type UplinkFigures = ReturnType<typeof uplinkFigures>

/** A gateway child with the uplink pointed at `cloudPort`, the tenant, device and function provisioned. */
async function startGatewayChild(mode: BenchMode, cloudPort: number, cloudKey: string, name: string) {
  const root = mkdtempSync(join(tmpdir(), 'taureau-uplink-bench-'))
  const dataDir = join(root, 'data')
  mkdirSync(dataDir, { recursive: true })
  // The child loads this same key file, so the receiver can know the gateway before it starts.
  const publicKey = encodeKey((await loadIdentity(dataDir)).publicKey)
  const configFile = join(root, 'gateway.yaml')
  const config = {
    uplink: { cloud: `127.0.0.1:${cloudPort}`, cloudKey, cellBytes: CELL_BYTES, shaper: mode.shaper },
  }
  // JSON is YAML.
  writeFileSync(configFile, `${JSON.stringify(config)}\n`)
  const child: ChildProcess = spawn(
    BIN,
    [
      'gateway',
      '--config',
      configFile,
      '--data',
      dataDir,
      '--host',
      '127.0.0.1',
      '--mqtt-port',
      '0',
      '--ws-port',
      '0',
      '--http-port',
      '0',
    ],
    { env: { ...process.env, TAUREAU_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const logLines: string[] = []
  const logCounts = { errors: 0, warnings: 0 }
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (line) => {
    const level = Number(/"level":(\d+)/.exec(line)?.[1] ?? 50)
    if (level >= 50) logCounts.errors++
    else if (level >= 40) logCounts.warnings++
    if (logLines.length < 20) {
      logLines.push(line)
      process.stderr.write(`  [gateway ${name}] ${line}\n`)
    }
  })
  const exited = once(child, 'exit')
  const stop = async (): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    const [code] = (await exited) as [number | null]
    rmSync(root, { recursive: true, force: true })
    return code
  }
  try {
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
    const [line] = (await Promise.race([
      once(lines, 'line'),
      exited.then(() => {
        throw new Error(`Cannot start the gateway child: it exited (${logLines.join(' | ')})`)
      }),
    ])) as [string]
    const mqttPort = Number(/mqtt:\/\/127\.0\.0\.1:(\d+)/.exec(line)?.[1])
    const httpUrl = /API and UI at (http:\/\/\S+)/.exec(line)?.[1] as string
    const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()
    const request = async (method: string, path: string, body?: unknown) => {
      const response = await fetch(`${httpUrl}${path}`, {
        method,
        signal: AbortSignal.timeout(API_TIMEOUT_MS),
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      })
      if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`)
      return response
    }
    const api = async (method: string, path: string, body?: unknown) =>
      (await (await request(method, `/api/v1${path}`, body)).json()) as Record<string, unknown>
    await api('POST', '/tenants', { id: TENANT })
    const device = (await api('POST', `/tenants/${TENANT}/devices`, { id: DEVICE })) as { secret: string }
    await api('POST', `/tenants/${TENANT}/functions`, {
      name: FUNCTION_NAME,
      source: FUNCTION_SOURCE,
      triggers: [{ topic: 'readings/#' }],
    })
    return {
      pid: child.pid as number,
      publicKey,
      mqttPort,
      secret: device.secret,
      logLines,
      logCounts,
      uplink: async () => uplinkFigures(await (await request('GET', '/metrics')).text()),
      stop,
    }
  } catch (error) {
    await stop()
    throw error
  }
}
type GatewayChild = Awaited<ReturnType<typeof startGatewayChild>>

/** Everything read at one edge of the measured window. */
interface Edge {
  at: number
  uplink: UplinkFigures
  up: number
  down: number
  cpuSec: number
  /** Whether the uplink's counters were seen to change, so they are at most a poll old. */
  fresh: boolean
}

/**
 * Reads the edge of a window at a moment the worker's counters were just posted (once a second):
 * polls until they change, so counters, proxy bytes and time belong to the same instant.
 */
async function readEdge(
  gateway: GatewayChild,
  proxy: Awaited<ReturnType<typeof startCountingProxy>>,
): Promise<Edge> {
  const first = await gateway.uplink()
  const deadline = performance.now() + FRESH_STATS_TIMEOUT_MS
  const key = (figures: UplinkFigures) => `${figures.dataCells}/${figures.dummyCells}/${figures.wireBytes}`
  for (;;) {
    const at = wallNow()
    const up = proxy.counts.up
    const down = proxy.counts.down
    const cpuSec = processCpuSeconds(gateway.pid)
    const uplink = await gateway.uplink()
    const fresh = key(uplink) !== key(first)
    if (fresh || performance.now() > deadline) return { at, uplink, up, down, cpuSec, fresh }
    await sleep(FRESH_STATS_POLL_MS)
  }
}

interface NetworkRun {
  mode: string
  round: number
  measuredMs: number
  published: number
  publishedInWindow: number
  /** Records the store took during the window, whenever they were published. */
  storedInWindow: number
  delivered: number
  duplicates: number
  drainMs: number
  upBytesPerSec: number
  upBytesPerSecProxy: number
  downBytesPerSec: number
  rawBytesPerSec: number
  /** Bytes of records (envelope and 12-byte header included) carried in cells, per second. */
  framedBytesPerSec: number
  dataCellsPerSec: number
  dummyCellsPerSec: number
  backlogCellsAtStart: number
  backlogCellsAtEnd: number
  freshEdges: boolean
  gatewayCpuCores: number
  /** Publish-to-stored latencies of the records published in the window, ms. */
  latencies: number[]
  undelivered: number
  mismatches: string[]
  logErrors: number
}

/** One run: a fresh gateway child in `mode`, the device publishing at RATE, measured, drained, stopped. */
async function runMode(
  mode: BenchMode,
  round: number,
  receiver: Receiver,
  cloudKey: string,
  store: CloudStore,
  collectors: Map<string, Collector>,
): Promise<NetworkRun> {
  const proxy = await startCountingProxy(receiver.port)
  const name = `bench-${mode.name.replace(/[^a-z0-9]/g, '-')}-${round}`
  let gateway: GatewayChild | undefined
  let client: MqttClient | undefined
  let pacer: NodeJS.Timeout | undefined
  try {
    gateway = await startGatewayChild(mode, proxy.port, cloudKey, name)
    await store.addGateway(name, gateway.publicKey)
    const collector: Collector = {
      storedAt: new Map(),
      publishedAt: new Map(),
      rawBytes: new Map(),
      duplicates: 0,
      mismatches: [],
    }
    collectors.set(name, collector)
    const connectStarted = performance.now()
    while ((await gateway.uplink()).connected !== 1) {
      if (performance.now() - connectStarted > CONNECT_TIMEOUT_MS)
        throw new Error(
          `Cannot run mode ${mode.name} as the uplink did not connect in ${CONNECT_TIMEOUT_MS} ms`,
        )
      await sleep(20)
    }
    client = await mqtt.connectAsync(
      `mqtt://127.0.0.1:${gateway.mqttPort}`,
      {
        clientId: `bench-${name}`,
        username: `${DEVICE}@${TENANT}`,
        password: gateway.secret,
        clean: true,
        reconnectPeriod: 0,
        protocolVersion: 4,
      },
      false,
    )
    let failure: Error | undefined
    client.on('error', (error) => {
      failure ??= error
    })
    let seq = 0
    let scheduled = 0
    let acked = 0
    const device = client
    const publishOne = (): void => {
      seq++
      const publishedAt = wallNow()
      const payload = reading(seq, publishedAt)
      collector.publishedAt.set(seq, publishedAt)
      collector.rawBytes.set(seq, Buffer.byteLength(JSON.stringify(etlRecord(payload))))
      device.publish(`readings/${DEVICE}`, JSON.stringify(payload), { qos: 1 }, (error?: Error) => {
        if (error) failure ??= error
        else acked++
      })
    }
    const loadStarted = performance.now()
    const tick = (): void => {
      const due = Math.floor(((performance.now() - loadStarted) * RATE) / 1000)
      // Never more than a second's worth at once: a stalled generator shows as fewer publishes.
      if (due - scheduled > RATE) scheduled = due - RATE
      for (; scheduled < due; scheduled++) publishOne()
      pacer = setTimeout(tick, PUBLISH_TICK_MS)
    }
    tick()
    await sleep(WARMUP_SECONDS * 1000)
    const start = await readEdge(gateway, proxy)
    await sleep(SECONDS * 1000)
    const end = await readEdge(gateway, proxy)
    clearTimeout(pacer)
    pacer = undefined
    if (failure !== undefined) throw failure
    const published = seq
    const inWindow = [...collector.publishedAt].filter(([, at]) => at >= start.at && at < end.at)
    const storedInWindow = [...collector.storedAt.values()].filter(
      (at) => at >= start.at && at < end.at,
    ).length
    // Drain: wait for every record, while they keep arriving.
    const drainStarted = performance.now()
    let lastCount = collector.storedAt.size
    let lastProgress = drainStarted
    while (collector.storedAt.size < published && performance.now() - drainStarted < DRAIN_MAX_MS) {
      await sleep(20)
      if (collector.storedAt.size !== lastCount) {
        lastCount = collector.storedAt.size
        lastProgress = performance.now()
      } else if (performance.now() - lastProgress > DRAIN_STALL_MS) break
    }
    const drainMs = performance.now() - drainStarted
    const seconds = (end.at - start.at) / 1000
    const rawInWindow = inWindow.reduce((sum, [s]) => sum + (collector.rawBytes.get(s) ?? 0), 0)
    const latencies = inWindow.flatMap(([s, at]) => {
      const storedAt = collector.storedAt.get(s)
      return storedAt === undefined ? [] : [storedAt - at]
    })
    const run: NetworkRun = {
      mode: mode.name,
      round,
      measuredMs: end.at - start.at,
      published,
      publishedInWindow: inWindow.length,
      storedInWindow,
      delivered: collector.storedAt.size,
      duplicates: collector.duplicates,
      drainMs,
      upBytesPerSec: (end.uplink.wireBytes - start.uplink.wireBytes) / seconds,
      upBytesPerSecProxy: (end.up - start.up) / seconds,
      downBytesPerSec: (end.down - start.down) / seconds,
      rawBytesPerSec: rawInWindow / seconds,
      framedBytesPerSec: (end.uplink.recordBytes - start.uplink.recordBytes) / seconds,
      dataCellsPerSec: (end.uplink.dataCells - start.uplink.dataCells) / seconds,
      dummyCellsPerSec: (end.uplink.dummyCells - start.uplink.dummyCells) / seconds,
      backlogCellsAtStart: start.uplink.backlogCells,
      backlogCellsAtEnd: end.uplink.backlogCells,
      freshEdges: start.fresh && end.fresh,
      gatewayCpuCores: (end.cpuSec - start.cpuSec) / seconds,
      latencies,
      undelivered: published - collector.storedAt.size,
      mismatches: collector.mismatches,
      logErrors: gateway.logCounts.errors,
    }
    if (acked < published) log(`  ${mode.name}: ${published - acked} publishes had no PUBACK yet at the end`)
    return run
  } finally {
    if (pacer !== undefined) clearTimeout(pacer)
    await client?.endAsync(true).catch(() => {})
    const code = await gateway?.stop()
    if (code !== undefined && code !== 0)
      log(`  the gateway child of ${mode.name} round ${round} exited with ${code}`)
    await proxy.close()
    collectors.delete(name)
  }
}

async function networkPart(modes: readonly BenchMode[], sizing: ReturnType<typeof loadSizing>) {
  const cloudDir = mkdtempSync(join(tmpdir(), 'taureau-uplink-bench-cloud-'))
  const identity = await loadIdentity(cloudDir)
  const inner = await createSqliteCloudStore({ file: join(cloudDir, 'cloud.db') })
  const collectors = new Map<string, Collector>()
  const store = observedStore(inner, collectors)
  // The receiver's own schedule is its default: one cell (ack or dummy) every 250 ms.
  const receiver = await createReceiver({ store, identity, port: 0, cellBytes: CELL_BYTES })
  const runs: NetworkRun[] = []
  const problems: string[] = []
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const mode of modes) {
        const run = await runMode(mode, round, receiver, encodeKey(identity.publicKey), store, collectors)
        runs.push(run)
        const [p50, p99] = percentiles(Float64Array.from(run.latencies), run.latencies.length, [0.5, 0.99])
        log(
          `round ${round} ${mode.name} (${describeShaper(mode.shaper)}): up ${fixed(run.upBytesPerSec)} B/s, down ${fixed(run.downBytesPerSec)} B/s, ` +
            `raw ${fixed(run.rawBytesPerSec)} B/s, cells ${fixed(run.dataCellsPerSec, 1)} data + ${fixed(run.dummyCellsPerSec, 1)} cover /s, ` +
            `latency p50 ${fixed(p50 as number)} p99 ${fixed(p99 as number)} ms, ` +
            `${run.storedInWindow} stored / ${run.publishedInWindow} published in the window, ${run.delivered}/${run.published} in the end ` +
            `(${fixed(run.drainMs)} ms drain), backlog ${run.backlogCellsAtStart} -> ${run.backlogCellsAtEnd} cells`,
        )
        if (run.undelivered > 0)
          problems.push(
            `${mode.name} round ${round}: ${run.undelivered} of ${run.published} records never reached the cloud store ` +
              `(${fixed(run.drainMs)} ms after the load stopped; ${fixed(run.dataCellsPerSec + run.dummyCellsPerSec, 1)} cells/s went up in the window)`,
          )
        if (run.mismatches.length > 0)
          problems.push(
            `${mode.name} round ${round}: stored records differ from the ETL step: ${run.mismatches.join('; ')}`,
          )
        if (run.logErrors > 0)
          problems.push(`${mode.name} round ${round}: ${run.logErrors} error lines in the gateway's log`)
        if (!run.freshEdges && run.dataCellsPerSec + run.dummyCellsPerSec > 0)
          problems.push(`${mode.name} round ${round}: the uplink counters did not change at a window edge`)
      }
    }
  } finally {
    await receiver.close()
    await store.close()
    rmSync(cloudDir, { recursive: true, force: true })
  }

  const delivering = (name: string) => runs.some((run) => run.mode === name && run.latencies.length > 0)
  // The floor: `off` when it delivers, else the fastest shaped mode (clock-1ms).
  const declaredPeer = modes.find((mode) => mode.peer)?.name
  const peerName =
    declaredPeer !== undefined && delivering(declaredPeer)
      ? declaredPeer
      : modes.find((mode) => mode.name === 'clock-1ms' && delivering(mode.name))?.name
  const pooled = (name: string) => {
    const all = runs.filter((run) => run.mode === name).flatMap((run) => run.latencies)
    const [p50, p99, max] = percentiles(Float64Array.from(all), all.length, [0.5, 0.99, 1])
    return { p50: p50 as number, p99: p99 as number, max: max as number, samples: all.length }
  }
  const peerLatency = peerName === undefined ? undefined : pooled(peerName)
  const rows = modes.map((mode) => {
    const mine = runs.filter((run) => run.mode === mode.name)
    const med = (pick: (run: NetworkRun) => number) => median(mine.map(pick))
    const latency = pooled(mode.name)
    const up = med((run) => run.upBytesPerSec)
    const down = med((run) => run.downBytesPerSec)
    const raw = med((run) => run.rawBytesPerSec)
    const storedShare = med((run) => run.storedInWindow / run.publishedInWindow)
    const backlogGrowth = med((run) => run.backlogCellsAtEnd - run.backlogCellsAtStart)
    const capacity = scheduleCellsPerSec(mode.shaper)
    const undelivered = mine.reduce((sum, run) => sum + run.undelivered, 0)
    return {
      mode: mode.name,
      shaper: mode.shaper,
      settings: describeShaper(mode.shaper),
      note: mode.note,
      // Carried: the schedule has room for the cells the load needs, and every record arrived.
      // Not judged from one window: `tiered` swings between tiers, so a window that ends on a
      // high backlog says nothing about the long run; the in-window ratio is shown beside it.
      carriesLoad: capacity >= sizing.cellsPerSec && undelivered === 0,
      scheduleCellsPerSec: capacity,
      storedInWindowShare: storedShare,
      delivered: mine.reduce((sum, run) => sum + run.delivered, 0),
      published: mine.reduce((sum, run) => sum + run.published, 0),
      upBytesPerSec: up,
      downBytesPerSec: down,
      rawBytesPerSec: raw,
      framedBytesPerSec: med((run) => run.framedBytesPerSec),
      overhead: (up + down) / raw,
      overheadUp: up / raw,
      overheadRounds: mine.map((run) =>
        Number(((run.upBytesPerSec + run.downBytesPerSec) / run.rawBytesPerSec).toFixed(2)),
      ),
      framedOverRaw: med((run) => run.framedBytesPerSec / run.rawBytesPerSec),
      dataCellsPerSec: med((run) => run.dataCellsPerSec),
      dummyCellsPerSec: med((run) => run.dummyCellsPerSec),
      coverShare: med((run) => run.dummyCellsPerSec / (run.dataCellsPerSec + run.dummyCellsPerSec)),
      backlogGrowthCells: backlogGrowth,
      gatewayCpuCores: med((run) => run.gatewayCpuCores),
      latencyP50Ms: latency.p50,
      latencyP99Ms: latency.p99,
      latencyMaxMs: latency.max,
      latencySamples: latency.samples,
      latencyP50ToPeer: peerLatency === undefined ? Number.NaN : latency.p50 / peerLatency.p50,
      latencyP99ToPeer: peerLatency === undefined ? Number.NaN : latency.p99 / peerLatency.p99,
    }
  })
  const latencyCdfs = modes.map((mode) => ({
    name: mode.name,
    points: cdfPoints(
      runs
        .filter((run) => run.mode === mode.name)
        .flatMap((run) => run.latencies)
        .sort((a, b) => a - b),
    ),
  }))
  return {
    rows,
    peerName,
    problems,
    latencyCdfs,
    runs: runs.map(({ latencies, ...rest }) => ({
      ...rest,
      latencyP50Ms: percentiles(Float64Array.from(latencies), latencies.length, [0.5])[0],
      latencyP99Ms: percentiles(Float64Array.from(latencies), latencies.length, [0.99])[0],
    })),
  }
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const startedAt = new Date()
  const machine = {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 1024 ** 3),
    platform: `${platform()} ${arch()}`,
    node: process.version,
    loadAverageAtStart: loadavg(),
  }
  const sizing = loadSizing()
  const allModes = benchModes(sizing.cellsPerSec)
  const modes =
    flags.modes === 'all'
      ? allModes
      : (flags.modes as string).split(',').map((name) => {
          const mode = allModes.find((candidate) => candidate.name === name.trim())
          if (mode === undefined)
            throw new RangeError(
              `Cannot run the benchmark as mode '${name}' is not one of: ${allModes.map((m) => m.name).join(', ')}`,
            )
          return mode
        })
  log(
    `uplink benchmark: ${[...PARTS].join(' + ')}; throughput ${THROUGHPUT_ROUNDS} rounds x ${THROUGHPUT_MS} ms; ` +
      `network ${ROUNDS} round(s) of ${modes.map((mode) => mode.name).join(', ')} at ${RATE} msg/s, ` +
      `${WARMUP_SECONDS} s warm-up + ${SECONDS} s, ${CELL_BYTES}-byte cells; a record is ${sizing.rawBytes} bytes of JSON, ` +
      `${sizing.framedBytes} in the cell stream; the load needs ${fixed(sizing.cellsPerSec, 1)} cells/s`,
  )
  const throughput = PARTS.has('throughput') ? await throughputPart() : undefined
  const network = PARTS.has('network') ? await networkPart(modes, sizing) : undefined
  const problems = network?.problems ?? []

  const results = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: { ...machine, loadAverageAtEnd: loadavg() },
    settings: {
      parts: [...PARTS],
      throughputMs: THROUGHPUT_MS,
      throughputRounds: THROUGHPUT_ROUNDS,
      recordSizes: RECORD_SIZES,
      rounds: ROUNDS,
      seconds: SECONDS,
      warmupSeconds: WARMUP_SECONDS,
      ratePerSec: RATE,
      cellBytes: CELL_BYTES,
      receiverSchedule: 'clock 1 cell / 250 ms (the receiver default)',
      function: FUNCTION_SOURCE,
      recordRawBytes: sizing.rawBytes,
      recordFramedBytes: sizing.framedBytes,
      cellsPerSecNeeded: sizing.cellsPerSec,
    },
    throughput,
    network:
      network === undefined ? undefined : { rows: network.rows, peer: network.peerName, runs: network.runs },
    problems,
  }
  const section = uplinkSection(startedAt, sizing, throughput, network, problems)
  const file = writeSection(resolve(flags['results-dir'] as string), section, results)
  process.stdout.write(
    `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.platform}, Node ${machine.node}; ` +
      `load average at start ${machine.loadAverageAtStart.map((v) => v.toFixed(2)).join(' ')}, ` +
      `at end ${results.machine.loadAverageAtEnd.map((v) => v.toFixed(2)).join(' ')}\n\n` +
      `${sectionSummary(section)}\n\n` +
      (problems.length === 0
        ? 'Delivery check: every record reached the cloud store once.\n'
        : `Problems:\n${problems.map((p) => `- ${p}`).join('\n')}\n`),
  )
  log(`results in ${file}`)
  if (problems.length > 0) process.exitCode = 1
}

/** The uplink benchmark's results as a report section: each path and mode against raw data. */
function uplinkSection(
  startedAt: Date,
  sizing: ReturnType<typeof loadSizing>,
  throughput: Awaited<ReturnType<typeof throughputPart>> | undefined,
  network: Awaited<ReturnType<typeof networkPart>> | undefined,
  problems: readonly string[],
): BenchSection {
  const num = (value: number, digits = 0): number | string =>
    Number.isFinite(value) ? Number(value.toFixed(digits)) : 'n/a'
  const round = (value: number, digits: number): number => Number(value.toFixed(digits))
  const figures: BenchFigure[] = []
  const plots: BenchPlot[] = []
  const tables: BenchSection['tables'] = []
  if (throughput !== undefined) {
    const cellPath = THROUGHPUT_CELL_SIZES.includes(CELL_BYTES) ? `cells-${CELL_BYTES}` : 'cells-1024'
    for (const recordBytes of RECORD_SIZES) {
      const rowOf = (path: string) =>
        throughput.rows.find((row) => row.recordBytes === recordBytes && row.path === path)
      const cells = rowOf(cellPath)
      const aead = rowOf('aead-per-record')
      if (cells === undefined || aead === undefined) continue
      figures.push({
        name: `Records/s sealed and opened in ${cellPath.slice('cells-'.length)}-byte cells, ${recordBytes}-byte records`,
        value: Math.round(cells.recordsPerSec),
        unit: 'records/s',
        peer: {
          name: 'each record sealed on its own (XChaCha20-Poly1305)',
          value: Math.round(aead.recordsPerSec),
        },
        ratio: round(cells.recordsPerSec / aead.recordsPerSec, 3),
        note: `median per-round ratio ${formatNumber(cells.ratioToAead)}; wire/payload ${formatNumber(cells.wirePerPayloadByte)}`,
      })
    }
    tables.push({
      caption:
        `Encryption and framing, in process (seal + open, pack + unpack), one thread; medians of ${plural(THROUGHPUT_ROUNDS, 'round')} of ${THROUGHPUT_MS} ms. ` +
        'MB/s counts record payload (10^6 bytes); wire/payload: bytes on the wire per payload byte when cells are full',
      columns: ['record', 'path', 'records/s', 'MB/s', '/ aead-per-record', '/ copy', 'wire/payload'],
      rows: throughput.rows.map((row) => [
        `${row.recordBytes} B`,
        row.path,
        num(row.recordsPerSec),
        num(row.payloadMBPerSec, 1),
        num(row.ratioToAead, 2),
        num(row.ratioToCopy, 3),
        num(row.wirePerPayloadByte, 3),
      ]),
    })
    plots.push({
      id: 'uplink-throughput',
      title: 'Encryption and framing throughput by cell size, one thread',
      kind: 'line',
      x: { label: 'cell size (bytes)' },
      y: { label: 'records per second', log: true },
      series: RECORD_SIZES.flatMap((recordBytes) => {
        const mine = throughput.rows.filter((row) => row.recordBytes === recordBytes)
        const cellRows = mine.filter((row) => row.path.startsWith('cells-'))
        const xs = cellRows.map((row) => Number(row.path.slice('cells-'.length)))
        const flat = (path: string): Array<[number, number]> => {
          const rate = mine.find((row) => row.path === path)?.recordsPerSec ?? Number.NaN
          return xs.length === 0
            ? []
            : [
                [Math.min(...xs), rate],
                [Math.max(...xs), rate],
              ]
        }
        return [
          {
            name: `cells, ${recordBytes} B records`,
            points: cellRows.map((row, i) => [xs[i] as number, row.recordsPerSec]),
          },
          { name: `sealed one by one, ${recordBytes} B`, points: flat('aead-per-record') },
          { name: `copy only, ${recordBytes} B`, points: flat('copy') },
        ]
      }),
    })
  }
  if (network !== undefined) {
    const peer = network.rows.find((row) => row.mode === network.peerName)
    for (const row of network.rows) {
      figures.push({
        name: `Bytes on the wire (both ways) per second, ${row.mode} (${row.settings})`,
        value: Math.round(row.upBytesPerSec + row.downBytesPerSec),
        unit: 'B/s',
        peer: { name: "raw data (the records' JSON)", value: Math.round(row.rawBytesPerSec) },
        ratio: round(row.overhead, 3),
        note: row.carriesLoad ? 'carries the load' : 'does not carry the load',
      })
    }
    for (const row of network.rows) {
      if (peer === undefined || row.mode === peer.mode) continue
      for (const [label, value, peerValue] of [
        ['p50', row.latencyP50Ms, peer.latencyP50Ms],
        ['p99', row.latencyP99Ms, peer.latencyP99Ms],
      ] as const) {
        figures.push({
          name: `Delivery latency ${label}, ${row.mode}`,
          value: round(value, 1),
          unit: 'ms',
          peer: { name: `${peer.mode} (no shaping)`, value: round(peerValue, 1) },
          ratio: round(value / peerValue, 2),
        })
      }
    }
    tables.push({
      caption:
        `ETL load: 1 device, ${RATE} msg/s of ~100-byte JSON readings at QoS 1, one ${sizing.rawBytes}-byte record emitted per message ` +
        `(${sizing.framedBytes} bytes in the cell stream with its envelope); ${CELL_BYTES}-byte cells; the load needs ${formatNumber(sizing.cellsPerSec)} cells/s. ` +
        `${SECONDS} s measured after ${WARMUP_SECONDS} s; ${plural(ROUNDS, 'round')}, medians. Wire = TCP payload bytes both ways ` +
        "(receiver: 1 cell / 250 ms); raw = the records' JSON; framed/raw: record bytes in the cell stream over raw; " +
        'cover share: dummy cells over all cells sent',
      columns: [
        'mode',
        'settings',
        'cells/s at most',
        'carries load',
        'up B/s',
        'down B/s',
        'raw B/s',
        'wire/raw',
        'up/raw',
        'framed/raw',
        'data cells/s',
        'cover cells/s',
        'cover share',
        'gateway CPU',
      ],
      rows: network.rows.map((row) => [
        row.mode,
        row.settings,
        Number.isFinite(row.scheduleCellsPerSec) ? num(row.scheduleCellsPerSec, 1) : 'as needed',
        `${row.carriesLoad ? 'yes' : 'no'} (stored/published in window ${formatNumber(row.storedInWindowShare)}; ${row.delivered}/${row.published} in the end)`,
        num(row.upBytesPerSec),
        num(row.downBytesPerSec),
        num(row.rawBytesPerSec),
        num(row.overhead, 2),
        num(row.overheadUp, 2),
        num(row.framedOverRaw, 2),
        num(row.dataCellsPerSec, 1),
        num(row.dummyCellsPerSec, 1),
        `${formatNumber(row.coverShare * 100)}%`,
        num(row.gatewayCpuCores, 3),
      ]),
    })
    const peerLabel = network.peerName ?? 'peer'
    tables.push({
      caption: `Delivery latency, device publish to stored in the cloud store (pooled over rounds); / ${peerLabel}: ratio to the floor`,
      columns: [
        'mode',
        'settings',
        'p50 ms',
        'p99 ms',
        'max ms',
        'samples',
        `p50 / ${peerLabel}`,
        `p99 / ${peerLabel}`,
      ],
      rows: network.rows.map((row) => [
        row.mode,
        row.settings,
        num(row.latencyP50Ms),
        num(row.latencyP99Ms),
        num(row.latencyMaxMs),
        row.latencySamples,
        num(row.latencyP50ToPeer, 2),
        num(row.latencyP99ToPeer, 2),
      ]),
    })
    plots.push({
      id: 'uplink-latency',
      title: `Uplink delivery latency per shaper mode, ${RATE} msg/s, ${CELL_BYTES}-byte cells`,
      kind: 'cdf',
      x: { label: 'device publish to stored in the cloud (ms)', log: true },
      y: { label: 'fraction of records' },
      series: network.latencyCdfs,
    })
  }
  return {
    id: 'uplink',
    title: 'Private uplink: cells against raw data',
    command: 'npm run bench:uplink',
    startedAt: startedAt.toISOString(),
    durationSec: round((Date.now() - startedAt.getTime()) / 1000, 1),
    method:
      'In process, one thread: records packed into fixed-size cells, sealed with secretstream, opened and unpacked, against the same records ' +
      'each sealed on its own and against a plain copy. Over the network: per shaper mode, a fresh gateway child streams the records of an ETL ' +
      `function (${RATE} msg/s from one device) to a real receiver in this process through a counting TCP proxy; wire bytes both ways are ` +
      "compared with the raw bytes of the records' JSON, and each record's publish-to-stored latency with mode `off` (no shaping). " +
      'Long form: [benchmark-methods.md#uplink](benchmark-methods.md#uplink).',
    figures,
    tables,
    plots,
    notes:
      problems.length === 0
        ? ['Delivery check: every record reached the cloud store once.']
        : problems.map((problem) => `Problem: ${problem}`),
  }
}

function printHelp(): void {
  process.stdout.write(`npm run bench:uplink -- [flags]
  --parts a,b             throughput, network (BENCH_UPLINK_PARTS, throughput,network)
  --throughput-ms N       each in-process measurement (BENCH_UPLINK_THROUGHPUT_MS, 300)
  --throughput-rounds N   rounds of the in-process part (BENCH_UPLINK_THROUGHPUT_ROUNDS, 5)
  --seconds N             measured window per mode (BENCH_UPLINK_SECONDS, 12)
  --warmup-seconds N      load before the window (BENCH_UPLINK_WARMUP_SECONDS, 2)
  --rounds N              rounds of the network part; each runs every mode (BENCH_UPLINK_ROUNDS, 1)
  --rate N                device messages per second (BENCH_UPLINK_RATE, 50)
  --cell-bytes N          512, 1024 or 1200 for the network part (BENCH_UPLINK_CELL_BYTES, 1024)
  --modes a,b             subset of: off, epoch-default, epoch, clock, tiered, clock-1ms (BENCH_UPLINK_MODES, all)
  --results-dir DIR       where the section file goes (BENCH_UPLINK_RESULTS_DIR, test/bench/results)
  --quick                 shorter defaults, to check the pipeline (also BENCH_QUICK=1)
`)
}

if (flags.help) printHelp()
else await main()
