// A fleet of simulated devices in one process: one MQTT connection per device, one timer for all.
import { type AckRate, createAckRate } from './_ack-rate.ts'
import {
  type ConnectGate,
  createSimDevice,
  type FleetCounters,
  type KindCounters,
  type SimDevice,
} from './_device.ts'
import { createDeviceClock } from './_device-clock.ts'
import { createDueQueue } from './_due-queue.ts'
import { createLatencyHistogram } from './_latency-histogram.ts'
import { createRandom, hashInts, hashString } from './_random.ts'
import { type DeviceCredentials, isTopicLevel } from './credentials.ts'
import { createSensorModel, SENSOR_KINDS, type SensorKind } from './sensor-models.ts'

/** Options of {@link startFleet}. */
export interface FleetOptions {
  /** The gateway: `mqtt://host:port` (or `mqtts://`), or `ws://host:port/mqtt` (or `wss://`). */
  url: string
  /** One connection per device, each with its own credentials; the id is also the MQTT client id. */
  devices: DeviceCredentials[]
  /** Mean readings per second per device; may be fractional (0.2 is one every 5 s). */
  ratePerSec: number
  /** Sensor kind per device, assigned round-robin over the devices; default all five. */
  kinds?: SensorKind[]
  /** QoS of the readings; default 1. Status messages are always QoS 1. */
  qos?: 0 | 1
  /** Payload format, see docs/simulator.md; default 'json'. */
  format?: 'json' | 'binary'
  /** Readings sent back to back per burst; bursts come `burst` times less often. Default 1. */
  burst?: number
  /** Times between bursts: 'steady' (each device at a random phase) or 'poisson'. Default 'steady'. */
  arrivals?: 'steady' | 'poisson'
  /** Readings go to `${topicPrefix}/${device.id}/${kind}`; default 'sensors'. */
  topicPrefix?: string
  /**
   * Each device publishes a retained `online` to `${statusPrefix}/${device.id}` when it connects and
   * `offline` before a clean stop; its will is a retained `offline` there. Default 'status'.
   */
  statusPrefix?: string
  /** Each device's clock runs fast or slow by a rate drawn uniformly in ±this, ppm; default 50. */
  clockDriftPpm?: number
  /** Each device's clock starts off by up to ±this, ms; default 2000. */
  clockOffsetMs?: number
  /** Probability that a vibration reading is an injected anomaly; default 0.01. */
  anomalyRate?: number
  /**
   * Readings a device keeps while it cannot send them (offline, or its in-flight window full); past
   * it the oldest is dropped and counted. QoS 0 readings taken offline are dropped. Default 1000.
   */
  offlineQueueLimit?: number
  /** Reconnect backoff: exponential from `minMs` to `maxMs` with full jitter; default 1000 / 30000. */
  reconnect?: { minMs?: number; maxMs?: number }
  /** The first connections are spread over this long, ms; default min(devices × 20 ms, 10 s). */
  rampMs?: number
  /**
   * CONNECTs awaiting their CONNACK at once, fleet-wide; default 3. The devices of one simulator
   * share an address, and a Taureau gateway slows down an address with more than 3 sign-ins in
   * progress (`auth.freeFailures`); real devices, each on its own address, never meet that bound.
   */
  connectConcurrency?: number
  /** Seed of every random draw (models, clocks, phases, jitter); default 1. */
  seed?: number
  /** Stops by itself after this long, ms (then `done` resolves). */
  durationMs?: number
  /**
   * Called when a reading is acknowledged: QoS 1 on its PUBACK, QoS 0 once written to the socket.
   * Times are wall-clock ms; `sentAt` is the first send (a resend keeps it). Must not throw.
   */
  onAck?(ack: { device: string; kind: SensorKind; seq: number; sentAt: number; ackedAt: number }): void
  /** Called when a connection attempt fails (refused CONNACK, network error, timeout). Must not throw. */
  onConnectFailure?(failure: { device: string; reason: string }): void
}

/** A fleet's counters at one moment. */
export interface FleetStats extends FleetCounters {
  devices: number
  /** Acks per second over the last ~5 s (once stopping: the last ~5 s before `stop()`). */
  ratePerSec: number
  /** Since `startFleet()`; once stopped, until the fleet had stopped. */
  elapsedMs: number
}

/** A fleet's counters when it stopped; `sent - acked` were in flight then. */
export interface FleetSummary extends FleetStats {
  perKind: Record<string, { devices: number; sent: number; acked: number }>
  /** From the first send of each reading to its ack. */
  ackLatencyMs: { p50: number; p99: number; max: number }
}

/** A running fleet; see {@link startFleet}. */
export interface Fleet extends AsyncDisposable {
  /** The counters now; cheap enough to call every frame. */
  stats(): FleetStats
  /** Resolves with the summary when the fleet has stopped (after `durationMs`, or `stop()`). */
  readonly done: Promise<FleetSummary>
  /**
   * Stops sampling, lets each connected device send what it holds (up to 5 s), publish `offline`
   * and disconnect, then resolves with the summary. Idempotent.
   */
  stop(): Promise<FleetSummary>
}

/** How long stop() lets devices flush their queues and sign off before dropping the connections. */
const STOP_DRAIN_MS = 5000

/** Options with their defaults applied. */
type Settings = Required<Omit<FleetOptions, 'durationMs' | 'onAck' | 'onConnectFailure' | 'reconnect'>> & {
  reconnectMinMs: number
  reconnectMaxMs: number
}

const fail = (what: string, value: unknown, why: string): never => {
  throw new RangeError(`Cannot start a fleet as its ${what} ${JSON.stringify(value)} ${why}`)
}

/** Checks every option (misuse throws RangeError) and fills in the defaults. */
function settingsOf(options: FleetOptions): Settings {
  let url: URL | undefined
  try {
    url = new URL(options.url)
  } catch {}
  if (url === undefined || !['mqtt:', 'mqtts:', 'ws:', 'wss:'].includes(url.protocol)) {
    fail('url', options.url, 'is not an mqtt://, mqtts://, ws:// or wss:// URL')
  }
  if (!Array.isArray(options.devices) || options.devices.length === 0)
    fail('devices', options.devices, 'is empty')
  const ids = new Set<string>()
  for (const device of options.devices) {
    if (typeof device.id !== 'string' || !isTopicLevel(device.id)) {
      fail('device id', device.id, "is not a non-empty string without '/', '+', '#' or NUL")
    }
    if (typeof device.username !== 'string' || typeof device.password !== 'string') {
      fail('device', device.id, 'has no username and password strings')
    }
    if (ids.has(device.id))
      fail('device id', device.id, 'appears twice (one client id would take the other over)')
    ids.add(device.id)
  }
  const positive = (what: string, value: number): void => {
    if (!(Number.isFinite(value) && value > 0)) fail(what, value, 'is not a number above 0')
  }
  const atLeast = (what: string, value: number, min: number): void => {
    if (!(Number.isFinite(value) && value >= min)) fail(what, value, `is not a number >= ${min}`)
  }
  const integer = (what: string, value: number, min: number): void => {
    if (!(Number.isInteger(value) && value >= min)) fail(what, value, `is not a whole number >= ${min}`)
  }
  const topicPrefix = (what: string, value: string): void => {
    // A prefix may have several levels, but no empty one, wildcard or NUL, and no leading '$' [MQTT-4.7.2].
    if (typeof value !== 'string' || value.startsWith('$') || !value.split('/').every(isTopicLevel)) {
      fail(what, value, "is not a topic without empty levels, wildcards, NUL or a leading '$'")
    }
  }
  const reconnectMinMs = options.reconnect?.minMs ?? 1000
  const reconnectMaxMs = options.reconnect?.maxMs ?? 30_000
  const settings: Settings = {
    url: options.url,
    devices: options.devices,
    ratePerSec: options.ratePerSec,
    kinds: options.kinds ?? [...SENSOR_KINDS],
    qos: options.qos ?? 1,
    format: options.format ?? 'json',
    burst: options.burst ?? 1,
    arrivals: options.arrivals ?? 'steady',
    topicPrefix: options.topicPrefix ?? 'sensors',
    statusPrefix: options.statusPrefix ?? 'status',
    clockDriftPpm: options.clockDriftPpm ?? 50,
    clockOffsetMs: options.clockOffsetMs ?? 2000,
    anomalyRate: options.anomalyRate ?? 0.01,
    offlineQueueLimit: options.offlineQueueLimit ?? 1000,
    rampMs: options.rampMs ?? Math.min(options.devices.length * 20, 10_000),
    connectConcurrency: options.connectConcurrency ?? 3,
    seed: options.seed ?? 1,
    reconnectMinMs,
    reconnectMaxMs,
  }
  positive('ratePerSec', settings.ratePerSec)
  if (settings.kinds.length === 0) fail('kinds', settings.kinds, 'is empty')
  for (const kind of settings.kinds) {
    if (!SENSOR_KINDS.includes(kind)) fail('kind', kind, `is not one of ${SENSOR_KINDS.join(', ')}`)
  }
  if (settings.qos !== 0 && settings.qos !== 1) fail('qos', settings.qos, 'is not 0 or 1')
  if (settings.format !== 'json' && settings.format !== 'binary')
    fail('format', settings.format, "is not 'json' or 'binary'")
  if (settings.arrivals !== 'steady' && settings.arrivals !== 'poisson') {
    fail('arrivals', settings.arrivals, "is not 'steady' or 'poisson'")
  }
  integer('burst', settings.burst, 1)
  topicPrefix('topicPrefix', settings.topicPrefix)
  topicPrefix('statusPrefix', settings.statusPrefix)
  atLeast('clockDriftPpm', settings.clockDriftPpm, 0)
  atLeast('clockOffsetMs', settings.clockOffsetMs, 0)
  if (!(settings.anomalyRate >= 0 && settings.anomalyRate <= 1))
    fail('anomalyRate', settings.anomalyRate, 'is not in [0, 1]')
  integer('offlineQueueLimit', settings.offlineQueueLimit, 0)
  positive('reconnect.minMs', reconnectMinMs)
  atLeast('reconnect.maxMs', reconnectMaxMs, reconnectMinMs)
  atLeast('rampMs', settings.rampMs, 0)
  integer('connectConcurrency', settings.connectConcurrency, 1)
  if (!Number.isFinite(settings.seed)) fail('seed', settings.seed, 'is not a finite number')
  if (options.durationMs !== undefined) positive('durationMs', options.durationMs)
  return settings
}

/** A {@link ConnectGate} that can be closed: then nothing waiting starts. */
function createConnectGate(limit: number): ConnectGate & { close(): void } {
  let open = 0
  let closed = false
  const waiting: Array<() => void> = []
  return {
    request(start) {
      if (closed) return
      if (open < limit) {
        open++
        start()
      } else {
        waiting.push(start)
      }
    },
    release() {
      const next = closed ? undefined : waiting.shift()
      if (next === undefined) open--
      else next()
    },
    close() {
      closed = true
      waiting.length = 0
    },
  }
}

/** One timer for a whole fleet: tasks wait in a heap by due time (monotonic ms). */
function createScheduler() {
  const queue = createDueQueue<() => void>()
  let timer: NodeJS.Timeout | undefined
  let timerAtMs = Number.POSITIVE_INFINITY
  let closed = false
  const arm = (atMs: number): void => {
    clearTimeout(timer)
    timerAtMs = atMs
    timer = setTimeout(run, Math.max(0, atMs - performance.now()))
  }
  function run(): void {
    timer = undefined
    timerAtMs = Number.POSITIVE_INFINITY
    // Node's timers have 1 ms resolution: a task due within it runs now rather than in a 0 ms timer.
    const horizonMs = performance.now() + 1
    for (
      let atMs = queue.peekAt();
      atMs !== undefined && atMs <= horizonMs && !closed;
      atMs = queue.peekAt()
    ) {
      ;(queue.pop() as { item: () => void }).item()
    }
    const nextMs = queue.peekAt()
    if (nextMs !== undefined && !closed) arm(nextMs)
  }
  return {
    schedule(atMs: number, task: () => void): void {
      if (closed) return
      queue.push(atMs, task)
      if (atMs < timerAtMs) arm(atMs)
    },
    close(): void {
      closed = true
      clearTimeout(timer)
    },
  }
}

/**
 * Starts a fleet of simulated devices publishing sensor readings to a gateway, each as real
 * firmware would: its own MQTT 3.1.1 connection with a persistent session, a retained status and
 * a will, reconnects with exponential backoff and jitter, a bounded queue of readings kept while
 * offline, a drifting clock, and a deterministic sensor model (see docs/simulator.md). Misuse
 * (an impossible option) throws a RangeError; connection failures are counted, never thrown.
 */
export function startFleet(options: FleetOptions): Fleet {
  const settings = settingsOf(options)
  const startedAtMs = performance.now()
  const startWallMs = Date.now()
  const counters: FleetCounters = {
    connected: 0,
    sent: 0,
    acked: 0,
    queued: 0,
    dropped: 0,
    reconnects: 0,
    connectFailures: 0,
    anomalies: 0,
  }
  const perKind = new Map<SensorKind, KindCounters>()
  const latencies = createLatencyHistogram()
  const ackRate: AckRate = createAckRate(startedAtMs)
  const scheduler = createScheduler()
  const gate = createConnectGate(settings.connectConcurrency)
  const fleetRandom = createRandom(settings.seed, 0)
  const burstIntervalMs = (1000 * settings.burst) / settings.ratePerSec

  const devices: SimDevice[] = settings.devices.map((credentials, index) => {
    const kind = settings.kinds[index % settings.kinds.length] as SensorKind
    const kindCounters = perKind.get(kind) ?? { devices: 0, sent: 0, acked: 0 }
    perKind.set(kind, kindCounters)
    kindCounters.devices++
    // Each device's draws depend on the seed and its id only, not on its place in the list.
    const deviceSeed = hashInts(settings.seed, hashString(credentials.id))
    const clockRandom = createRandom(deviceSeed, 3)
    return createSimDevice({
      credentials,
      kind,
      model: createSensorModel(kind, { seed: deviceSeed, anomalyRate: settings.anomalyRate }),
      deviceTime: createDeviceClock({
        offsetMs: clockRandom.uniform(-settings.clockOffsetMs, settings.clockOffsetMs),
        driftPpm: clockRandom.uniform(-settings.clockDriftPpm, settings.clockDriftPpm),
        startWallMs,
      }),
      random: createRandom(deviceSeed, 2),
      url: settings.url,
      qos: settings.qos,
      format: settings.format,
      burst: settings.burst,
      arrivals: settings.arrivals,
      burstIntervalMs,
      topic: `${settings.topicPrefix}/${credentials.id}/${kind}`,
      statusTopic: `${settings.statusPrefix}/${credentials.id}`,
      offlineQueueLimit: settings.offlineQueueLimit,
      reconnectMinMs: settings.reconnectMinMs,
      reconnectMaxMs: settings.reconnectMaxMs,
      counters,
      kindCounters,
      gate,
      schedule: scheduler.schedule,
      onAck(seq, sentAt, ackedAt) {
        latencies.record(ackedAt - sentAt)
        ackRate.record(performance.now())
        options.onAck?.({ device: credentials.id, kind, seq, sentAt, ackedAt })
      },
      onConnectFailure(reason) {
        options.onConnectFailure?.({ device: credentials.id, reason })
      },
    })
  })

  // Boot times spread evenly over the ramp, each at a random point of its slot.
  const slotMs = settings.rampMs / devices.length
  devices.forEach((device, index) => {
    scheduler.schedule(startedAtMs + slotMs * (index + fleetRandom.next()), device.boot)
  })

  let stopRequestedAtMs: number | undefined
  let stoppedAtMs: number | undefined
  const round = (value: number): number => Math.round(value * 100) / 100
  const stats = (): FleetStats => {
    const nowMs = stoppedAtMs ?? performance.now()
    return {
      devices: devices.length,
      ...counters,
      // The rate while the fleet ran: the drain at the end would only pull it down.
      ratePerSec: round(ackRate.perSec(stopRequestedAtMs ?? nowMs)),
      elapsedMs: Math.round(nowMs - startedAtMs),
    }
  }
  const summary = (): FleetSummary => ({
    ...stats(),
    perKind: Object.fromEntries([...perKind].map(([kind, kindCounters]) => [kind, { ...kindCounters }])),
    ackLatencyMs: {
      p50: round(latencies.quantile(0.5)),
      p99: round(latencies.quantile(0.99)),
      max: round(latencies.maxMs),
    },
  })

  let resolveDone: (summary: FleetSummary) => void = () => {}
  const done = new Promise<FleetSummary>((resolve) => {
    resolveDone = resolve
  })
  let stopping: Promise<FleetSummary> | undefined
  const durationTimer =
    options.durationMs === undefined ? undefined : setTimeout(() => void stop(), options.durationMs)
  function stop(): Promise<FleetSummary> {
    stopping ??= (async () => {
      stopRequestedAtMs = performance.now()
      clearTimeout(durationTimer)
      scheduler.close()
      gate.close()
      const deadlineMs = performance.now() + STOP_DRAIN_MS
      await Promise.all(devices.map((device) => device.stop(deadlineMs)))
      stoppedAtMs = performance.now()
      const result = summary()
      resolveDone(result)
      return result
    })()
    return stopping
  }

  return {
    stats,
    done,
    stop,
    async [Symbol.asyncDispose]() {
      await stop()
    },
  }
}
