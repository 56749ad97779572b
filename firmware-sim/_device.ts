// One simulated device: its own MQTT connection, sensor, clock, offline queue and reconnect backoff,
// behaving as device firmware does. The fleet drives it through a shared scheduler.
import mqtt, { type MqttClient } from 'mqtt'
import type { Random } from './_random.ts'
import type { DeviceCredentials } from './credentials.ts'
import { encodeReading, encodeReadingJson, type Reading } from './reading-codec.ts'
import type { SensorKind, SensorModel } from './sensor-models.ts'

/** Readings a device has published and not yet had acknowledged, at most; more wait in its queue. */
export const MAX_IN_FLIGHT = 32
/** A connection that stayed up this long resets the reconnect backoff to its first step. */
export const STABLE_CONNECTION_MS = 10_000
/** How long a device waits for its CONNACK before it gives the attempt up (mqtt.js `connectTimeout`). */
const CONNECT_TIMEOUT_MS = 30_000
/** MQTT keep alive, seconds [MQTT-3.1.2.10]. */
const KEEPALIVE_SEC = 30

/** The counters of a fleet, updated by its devices as things happen. */
export interface FleetCounters {
  /** Devices connected now. */
  connected: number
  /** Readings published (each once, however often it was resent). */
  sent: number
  /** Readings acknowledged (QoS 1 PUBACK, or QoS 0 written). */
  acked: number
  /** Readings waiting on their device for a connection or for room in its in-flight window. */
  queued: number
  /** Readings lost: QoS 0 without a connection, or the oldest of a full queue. */
  dropped: number
  /** Connections that came back after being lost. */
  reconnects: number
  /** Connection attempts that failed. */
  connectFailures: number
  /** Injected vibration anomalies (whether or not they were delivered). */
  anomalies: number
}

/** Per-kind counters of a fleet. */
export interface KindCounters {
  devices: number
  sent: number
  acked: number
}

/** Bounds the CONNECTs of a fleet awaiting their CONNACK; `start` runs when a slot is free. */
export interface ConnectGate {
  request(start: () => void): void
  release(): void
}

/** What a device needs from its fleet. */
export interface DeviceContext {
  credentials: DeviceCredentials
  kind: SensorKind
  model: SensorModel
  /** Device clock: maps wall-clock ms to this device's idea of the time. */
  deviceTime(wallMs: number): number
  /** Timing draws (phase, arrivals, backoff jitter), a stream apart from the model's. */
  random: Random
  url: string
  qos: 0 | 1
  format: 'json' | 'binary'
  burst: number
  arrivals: 'steady' | 'poisson'
  /** Mean time between bursts, ms. */
  burstIntervalMs: number
  topic: string
  statusTopic: string
  offlineQueueLimit: number
  reconnectMinMs: number
  reconnectMaxMs: number
  counters: FleetCounters
  kindCounters: KindCounters
  gate: ConnectGate
  /** Runs `task` at `atMs` on the monotonic clock (`performance.now()`). */
  schedule(atMs: number, task: () => void): void
  onAck(seq: number, sentAt: number, ackedAt: number): void
  onConnectFailure(reason: string): void
}

/** A simulated device; see {@link createSimDevice}. */
export interface SimDevice {
  /** Powers on: connects (through the gate) and starts sampling. */
  boot(): void
  /**
   * Stops sampling, sends what is queued while the connection holds (until `deadlineMs` on the
   * monotonic clock), publishes `offline` and disconnects; a device that cannot do this in time
   * drops its connection (the gateway then publishes its will).
   */
  stop(deadlineMs: number): Promise<void>
}

interface Pending {
  seq: number
  payload: Buffer
  /** Wall-clock ms of the first send; undefined until then. */
  sentAt: number | undefined
}

/** Creates a device that does nothing until {@link SimDevice.boot}. */
export function createSimDevice(context: DeviceContext): SimDevice {
  const { counters, kindCounters, credentials } = context
  const queue: Pending[] = []
  let client: MqttClient | undefined
  /** A connection attempt holds a gate slot from its start to its CONNACK or its failure. */
  let attempting = false
  let online = false
  let everOnline = false
  let connectedAtMs = 0
  let backoffStep = 0
  let lastError: string | undefined
  let readingsInFlight = 0
  let statusInFlight = 0
  let seq = 0
  let stopped = false
  /** Called when something stop() waits on may have changed: an ack, a closed connection. */
  let wake: (() => void) | undefined

  /** Publishes the retained status (`online`/`offline`) at QoS 1, whatever the readings' QoS. */
  const publishStatus = (status: 'online' | 'offline'): void => {
    statusInFlight++
    ;(client as MqttClient).publish(context.statusTopic, status, { qos: 1, retain: true }, () => {
      statusInFlight--
      wake?.()
    })
  }

  const enqueue = (pending: Pending): void => {
    if (online && queue.length === 0 && readingsInFlight < MAX_IN_FLIGHT) {
      send(pending)
      return
    }
    if (context.qos === 0 && !online) {
      // Firmware keeps only what it must deliver: a QoS 0 reading without a connection is lost.
      counters.dropped++
      return
    }
    if (queue.length >= context.offlineQueueLimit) {
      // The bound of the queue: the oldest reading goes (the newest are worth more), counted.
      counters.dropped++
      if (queue.length === 0) return
      queue.shift()
      counters.queued--
    }
    queue.push(pending)
    counters.queued++
  }

  const send = (pending: Pending): void => {
    readingsInFlight++
    if (pending.sentAt === undefined) {
      pending.sentAt = Date.now()
      counters.sent++
      kindCounters.sent++
    }
    ;(client as MqttClient).publish(context.topic, pending.payload, { qos: context.qos }, (error) => {
      readingsInFlight--
      // mqtt.js answers null, not undefined, for success.
      if (!error) {
        const ackedAt = Date.now()
        counters.acked++
        kindCounters.acked++
        context.onAck(pending.seq, pending.sentAt as number, ackedAt)
      } else if (stopped || queue.length >= context.offlineQueueLimit) {
        counters.dropped++
      } else {
        // mqtt.js gave the message up (not for a lost connection: those it resends itself); it is
        // the oldest reading, so it goes back to the head of the queue.
        queue.unshift(pending)
        counters.queued++
      }
      pump()
      wake?.()
    })
  }

  /** Publishes queued readings while connected and the in-flight window has room. */
  function pump(): void {
    while (online && readingsInFlight < MAX_IN_FLIGHT && queue.length > 0) {
      counters.queued--
      send(queue.shift() as Pending)
    }
  }

  const takeReadings = (): void => {
    for (let i = 0; i < context.burst; i++) {
      const ts = Math.round(context.deviceTime(Date.now()))
      const sample = context.model.read(ts)
      if (sample.anomaly) counters.anomalies++
      seq = (seq + 1) >>> 0
      const reading = { kind: context.kind, seq, ts, ...sample.fields } as Reading
      const payload =
        context.format === 'json' ? Buffer.from(encodeReadingJson(reading)) : encodeReading(reading)
      enqueue({ seq, payload, sentAt: undefined })
    }
    pump()
  }

  const nextGapMs = (): number =>
    context.arrivals === 'poisson'
      ? context.random.exponential(context.burstIntervalMs)
      : context.burstIntervalMs

  const sampleAt = (atMs: number): void => {
    context.schedule(atMs, () => {
      if (stopped) return
      takeReadings()
      // A late scheduler catches up at most one second of readings, as a firmware timer would.
      sampleAt(Math.max(atMs + nextGapMs(), performance.now() - 1000))
    })
  }

  const onConnect = (): void => {
    if (stopped || !attempting) return
    attempting = false
    context.gate.release()
    online = true
    connectedAtMs = performance.now()
    counters.connected++
    if (everOnline) counters.reconnects++
    everOnline = true
    publishStatus('online')
    pump()
  }

  const onClose = (): void => {
    const failedAttempt = attempting
    if (attempting) {
      attempting = false
      context.gate.release()
    }
    if (online) {
      online = false
      counters.connected--
      if (performance.now() - connectedAtMs >= STABLE_CONNECTION_MS) backoffStep = 0
    }
    wake?.()
    if (stopped) return
    if (failedAttempt) {
      counters.connectFailures++
      context.onConnectFailure(lastError ?? 'the connection closed before CONNACK')
    }
    lastError = undefined
    // Exponential backoff with full jitter (Brooker, "Exponential Backoff And Jitter", AWS 2015):
    // a fleet that lost its gateway comes back spread out instead of all at once.
    const ceilingMs = Math.min(context.reconnectMaxMs, context.reconnectMinMs * 2 ** backoffStep)
    backoffStep = Math.min(backoffStep + 1, 30)
    context.schedule(performance.now() + context.random.uniform(0, ceilingMs), () => {
      if (!stopped) context.gate.request(connect)
    })
  }

  function connect(): void {
    if (stopped) {
      context.gate.release()
      return
    }
    attempting = true
    if (client === undefined) {
      client = mqtt.connect(context.url, {
        clientId: credentials.id,
        username: credentials.username,
        password: credentials.password,
        protocolVersion: 4,
        // A persistent session: with the same client id, what the broker holds for it survives.
        clean: false,
        keepalive: KEEPALIVE_SEC,
        connectTimeout: CONNECT_TIMEOUT_MS,
        // Reconnects are ours (backoff with jitter); mqtt.js only has a fixed period.
        reconnectPeriod: 0,
        // QoS 0 readings are never handed to mqtt.js without a connection (see enqueue).
        queueQoSZero: false,
        resubscribe: false,
        will: { topic: context.statusTopic, payload: Buffer.from('offline'), qos: 1, retain: true },
      })
      client.on('connect', onConnect)
      client.on('close', onClose)
      client.on('error', (error) => {
        lastError = error.message
      })
    } else {
      // Keep the stores: mqtt.js resends the unacknowledged QoS 1 publishes it holds there when
      // the session resumes (a plain reconnect() would replace them with empty ones).
      client.reconnect({ incomingStore: client.incomingStore, outgoingStore: client.outgoingStore })
    }
  }

  /** Resolves when `done()` holds or at `deadlineMs`; re-checked on every wake. */
  const waitFor = (done: () => boolean, deadlineMs: number): Promise<boolean> =>
    new Promise((resolve) => {
      const check = (): void => {
        if (!done() && performance.now() < deadlineMs) return
        clearTimeout(timer)
        wake = undefined
        resolve(done())
      }
      const timer = setTimeout(check, Math.max(0, deadlineMs - performance.now()))
      wake = check
      check()
    })

  const end = (force: boolean): Promise<void> =>
    new Promise((resolve) => (client as MqttClient).end(force, () => resolve()))

  return {
    boot() {
      context.gate.request(connect)
      sampleAt(
        performance.now() +
          (context.arrivals === 'poisson' ? nextGapMs() : context.random.uniform(0, context.burstIntervalMs)),
      )
    },
    async stop(deadlineMs) {
      if (stopped) return
      stopped = true
      if (client === undefined) return
      if (!online) {
        await end(true)
        return
      }
      const drained = await waitFor(
        () => !online || (queue.length === 0 && readingsInFlight === 0),
        deadlineMs,
      )
      if (online && drained) publishStatus('offline')
      const clean = await waitFor(() => !online || statusInFlight === 0, deadlineMs)
      // A clean DISCONNECT discards the will [MQTT-3.1.2-10], which is why `offline` was sent first.
      await end(!(online && drained && clean))
    },
  }
}
