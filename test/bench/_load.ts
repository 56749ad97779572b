import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { histogramOf, type LatencyHistogram } from './_histogram.ts'
import type { BenchCredentials, BrokerCpuSample } from './_protocol.ts'
import { percentiles } from './_stats.ts'

/** How the publishers load the broker. */
export type LoadShape = 'saturating' | 'rate'

/** One benchmark scenario: a QoS and a load shape. */
export interface Scenario {
  name: string
  qos: 0 | 1
  shape: LoadShape
  /** `rate` shape: total msg/s offered; the run's `ratePerSec` option when absent. */
  ratePerSec?: number
}

/** Every scenario, in the order a round runs them. */
export const SCENARIOS: readonly Scenario[] = [
  { name: 'qos0-saturating', qos: 0, shape: 'saturating' },
  { name: 'qos1-saturating', qos: 1, shape: 'saturating' },
  { name: 'qos0-rate', qos: 0, shape: 'rate' },
  { name: 'qos1-rate', qos: 1, shape: 'rate' },
]

/**
 * The load sweep: one fixed-rate scenario per offered rate, all at one QoS, named
 * `qos1-offered-4000`. With the saturating scenario of that QoS they give delivered msg/s and
 * latency against offered load.
 */
export function sweepScenarios(ratesPerSec: readonly number[], qos: 0 | 1): Scenario[] {
  return ratesPerSec.map((ratePerSec) => ({
    name: `qos${qos}-offered-${ratePerSec}`,
    qos,
    shape: 'rate',
    ratePerSec,
  }))
}

/** Options of {@link runLoad}. */
export interface LoadOptions {
  port: number
  publishers: readonly BenchCredentials[]
  subscriber: BenchCredentials
  scenario: Scenario
  /** Load before the measured window, not measured: JIT, socket buffers, caches. */
  warmupMs: number
  measureMs: number
  /**
   * Messages each publisher may have outstanding: at QoS 1 published and not yet acknowledged
   * (PUBACK); at QoS 0 published and not yet received by the subscriber.
   */
  windowSize: number
  /** Total publish rate of the `rate` shape, all publishers together. */
  ratePerSec: number
  /** Reads the broker process's own cumulative CPU accounting. */
  sampleBroker(): Promise<BrokerCpuSample>
  /** Makes client ids unique per run. */
  runId: string
}

/** What one run measured; every figure but the totals covers the measured window only. */
export interface RunResult {
  measuredMs: number
  /** Messages the subscriber received in the window. */
  delivered: number
  msgsPerSec: number
  /** User + system CPU time of the broker process in the window. */
  brokerCpuMicros: number
  brokerCpuMicrosPerMsg: number
  /** Broker CPU time over wall time: 1.0 is one core busy. */
  brokerCpuCores: number
  /** Share of the window the broker's main thread was busy (event-loop utilization). */
  brokerEventLoopUtilization: number
  /** CPU time of this process (publishers and subscriber) over wall time. */
  loadGenCpuCores: number
  latencySamples: number
  /** Every latency of the window (up to the sample cap), in log bins: for CDFs over pooled rounds. */
  latencyHistogram: LatencyHistogram
  /** `rate` shape: total msg/s offered. */
  offeredPerSec?: number
  latencyP50Ms: number
  latencyP99Ms: number
  latencyMaxMs: number
  /** `rate` shape: messages due in the window that could not be sent (window full or generator behind). */
  rateShortfall: number
  /** Whole run, warm-up included. */
  totalSent: number
  totalReceived: number
  /** Sent but never received by the end of the drain (QoS 0 may lose; QoS 1 should not). */
  lost: number
  /** SUBSCRIBEs refused (SUBACK 0x80) before one was granted; see {@link subscribe}. */
  subscribeRetries: number
}

/** Bytes of the sensor-reading payload (JSON padded with spaces). */
export const PAYLOAD_BYTES = 64
const CONNECT_TIMEOUT_MS = 10_000
const CLOSE_TIMEOUT_MS = 2000
const SUBSCRIBE_ATTEMPTS = 5
const SUBSCRIBE_RETRY_MS = 50
const DRAIN_TIMEOUT_MS = 5000
/** QoS 0: a message not received this long after it was sent is written off, freeing its window slot. */
const WRITE_OFF_MS = 1000
/** A run in which nothing arrives for this long fails rather than hangs. */
const NO_PROGRESS_MS = 5000
const WATCHDOG_MS = 100
/** The rate shape schedules every millisecond, and never catches up more than 50 ms of backlog. */
const RATE_TICK_MS = 1
const RATE_MAX_BACKLOG_SEC = 0.05
/** Latencies kept per run (16 MiB of float64); more are not recorded. */
const MAX_LATENCY_SAMPLES = 1 << 21

interface Publisher {
  deviceId: string
  topic: string
  client: MqttClient
  seq: number
  sent: number
  acked: number
  received: number
  writtenOff: number
  /** When this publisher last saw progress (ack or receipt) or started a new window, `performance.now()`. */
  progressAt: number
  onAck: (error?: Error) => void
}

/** A 64-byte JSON sensor reading; `ts` is the publisher's `process.hrtime.bigint()`. */
function reading(deviceId: string, seq: number, ts: bigint): Buffer {
  const celsius = (18 + (seq % 80) / 10).toFixed(1)
  return Buffer.from(
    `{"dev":"${deviceId}","seq":${seq},"ts":"${ts}","temp":${celsius}}`.padEnd(PAYLOAD_BYTES),
  )
}

async function connectClient(
  port: number,
  credentials: BenchCredentials,
  clientId: string,
): Promise<MqttClient> {
  const options: IClientOptions = {
    clientId,
    clean: true,
    reconnectPeriod: 0,
    connectTimeout: CONNECT_TIMEOUT_MS,
    protocolVersion: 4,
    keepalive: 60,
  }
  if (credentials.username !== undefined) options.username = credentials.username
  if (credentials.password !== undefined) options.password = credentials.password
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, options, false)
  // Like the gateway's own sockets (and bare aedes' here): no Nagle delay, so the load generator
  // never holds back small packets waiting for an ACK (40 ms stalls with delayed ACKs).
  const socket = client.stream as unknown as Socket
  socket.setNoDelay(true)
  return client
}

async function closeClient(client: MqttClient): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const timedOut = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, CLOSE_TIMEOUT_MS)
  })
  await Promise.race([client.endAsync().catch(() => {}), timedOut])
  clearTimeout(timer)
  if (!client.disconnected) client.end(true)
}

/**
 * Subscribes to `sensors/#`; returns how many attempts were refused first. The gateway can refuse
 * (SUBACK 0x80) a SUBSCRIBE that arrives right after CONNACK: aedes 1.2 resumes reading the socket
 * before it sets `client.connected` (lib/handlers/connect.js, `emptyQueue`), and the gateway takes
 * a not-yet-connected client for a persistent session being restored. Retried, bounded, and counted.
 */
async function subscribe(client: MqttClient, qos: 0 | 1): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    try {
      const granted = await client.subscribeAsync('sensors/#', { qos })
      if (granted[0]?.qos !== qos) {
        throw new Error(
          `Cannot run as the broker granted QoS ${granted[0]?.qos} for 'sensors/#' instead of ${qos}`,
        )
      }
      return attempt
    } catch (error) {
      // mqtt.js 5 rejects with the SUBACK packet attached (ErrorWithSubackPacket).
      const refused = (error as { packet?: { granted?: unknown[] } }).packet?.granted?.[0] === 0x80
      if (!refused || attempt >= SUBSCRIBE_ATTEMPTS - 1) {
        const reason = (error as Error).message
        throw new Error(`Cannot subscribe to 'sensors/#' (attempt ${attempt + 1}): ${reason}`, {
          cause: error,
        })
      }
      await sleep(SUBSCRIBE_RETRY_MS)
    }
  }
}

/**
 * Runs one scenario against one broker: connects the subscriber (`sensors/#`) and the publishers
 * (`sensors/<device>/temp`), loads the broker for the warm-up, then samples the broker's CPU
 * accounting, loads it for the measured window, samples again, stops publishing and waits for
 * the last messages (bounded). Always disconnects its clients.
 */
export async function runLoad(options: LoadOptions): Promise<RunResult> {
  const { scenario, windowSize } = options
  const { qos } = scenario
  const ratePerSec = scenario.ratePerSec ?? options.ratePerSec
  const clients: MqttClient[] = []
  const publishers: Publisher[] = []
  const byDevice = new Map<string, Publisher>()
  const latenciesMicros = new Float64Array(MAX_LATENCY_SAMPLES)
  let latencyCount = 0
  let running = false
  let measuring = false
  let stopping = false
  let totalSent = 0
  let totalReceived = 0
  let shortfall = 0
  let lastReceiptAt = performance.now()
  let subscribeRetries = 0
  let rateTimer: NodeJS.Timeout | undefined
  let watchdog: NodeJS.Timeout | undefined

  let failure: Error | undefined
  let rejectRun: (error: Error) => void = () => {}
  const failed = new Promise<never>((_resolve, reject) => {
    rejectRun = reject
  })
  failed.catch(() => {})
  const fail = (error: Error): void => {
    if (failure !== undefined) return
    failure = error
    running = false
    rejectRun(error)
  }
  const within = <T>(promise: Promise<T>): Promise<T> => Promise.race([promise, failed])
  const watch = (client: MqttClient, who: string): void => {
    client.on('error', (error) =>
      fail(new Error(`Cannot continue the run as ${who} got an error: ${error.message}`)),
    )
    client.on('close', () => {
      if (!stopping) fail(new Error(`Cannot continue the run as the broker closed the connection of ${who}`))
    })
  }

  const outstanding = (publisher: Publisher): number =>
    qos === 1 ? publisher.sent - publisher.acked : publisher.sent - publisher.received - publisher.writtenOff
  const publishOne = (publisher: Publisher): void => {
    if (outstanding(publisher) <= 0) publisher.progressAt = performance.now()
    publisher.seq++
    publisher.sent++
    totalSent++
    const payload = reading(publisher.deviceId, publisher.seq, process.hrtime.bigint())
    if (qos === 1) publisher.client.publish(publisher.topic, payload, { qos: 1 }, publisher.onAck)
    else publisher.client.publish(publisher.topic, payload, { qos: 0 })
  }
  // Saturating shape: keep the window full, refilled by acks (QoS 1) or receipts (QoS 0).
  const refill = (publisher: Publisher): void => {
    while (running && outstanding(publisher) < windowSize) publishOne(publisher)
  }

  // Rate shape: one scheduler for all publishers, round-robin, paced by the clock.
  let rateStartedAt = 0
  let scheduled = 0
  let nextPublisher = 0
  const maxBacklog = Math.max(1, Math.ceil(ratePerSec * RATE_MAX_BACKLOG_SEC))
  const rateTick = (): void => {
    if (!running) return
    const due = Math.floor(((performance.now() - rateStartedAt) * ratePerSec) / 1000)
    let toSend = due - scheduled
    if (toSend > maxBacklog) {
      if (measuring) shortfall += toSend - maxBacklog
      scheduled += toSend - maxBacklog
      toSend = maxBacklog
    }
    for (; toSend > 0; toSend--) {
      scheduled++
      let sentOne = false
      for (let tries = 0; tries < publishers.length && !sentOne; tries++) {
        const publisher = publishers[nextPublisher] as Publisher
        nextPublisher = (nextPublisher + 1) % publishers.length
        if (outstanding(publisher) < windowSize) {
          publishOne(publisher)
          sentOne = true
        }
      }
      if (!sentOne && measuring) shortfall++
    }
    rateTimer = setTimeout(rateTick, RATE_TICK_MS)
  }

  const checkProgress = (): void => {
    const now = performance.now()
    if (running && now - lastReceiptAt > NO_PROGRESS_MS) {
      fail(new Error(`Cannot continue the run as the subscriber received nothing for ${NO_PROGRESS_MS} ms`))
      return
    }
    if (qos !== 0) return
    for (const publisher of publishers) {
      if (outstanding(publisher) > 0 && now - publisher.progressAt > WRITE_OFF_MS) {
        publisher.writtenOff += outstanding(publisher)
        publisher.progressAt = now
        if (scenario.shape === 'saturating') refill(publisher)
      }
    }
  }

  try {
    const subscriber = await within(
      connectClient(options.port, options.subscriber, `bench-sub-${options.runId}`),
    )
    clients.push(subscriber)
    watch(subscriber, 'the subscriber')
    subscribeRetries = await within(subscribe(subscriber, qos))
    subscriber.on('message', (_topic, payload) => {
      const receivedAt = process.hrtime.bigint()
      lastReceiptAt = performance.now()
      const message = JSON.parse(payload.toString()) as { dev: string; ts: string }
      const publisher = byDevice.get(message.dev)
      if (publisher === undefined) return
      publisher.received++
      publisher.progressAt = lastReceiptAt
      totalReceived++
      if (measuring && latencyCount < MAX_LATENCY_SAMPLES) {
        latenciesMicros[latencyCount++] = Number(receivedAt - BigInt(message.ts)) / 1000
      }
      if (qos === 0 && scenario.shape === 'saturating') refill(publisher)
    })

    for (const [index, credentials] of options.publishers.entries()) {
      const deviceId = `pub-${index + 1}`
      const client = await within(
        connectClient(options.port, credentials, `bench-${deviceId}-${options.runId}`),
      )
      clients.push(client)
      watch(client, `publisher ${deviceId}`)
      const publisher: Publisher = {
        deviceId,
        topic: `sensors/${deviceId}/temp`,
        client,
        seq: 0,
        sent: 0,
        acked: 0,
        received: 0,
        writtenOff: 0,
        progressAt: performance.now(),
        onAck: (error?: Error) => {
          if (error) {
            fail(new Error(`Cannot continue the run as a publish of ${deviceId} failed: ${error.message}`))
            return
          }
          publisher.acked++
          publisher.progressAt = performance.now()
          if (scenario.shape === 'saturating') refill(publisher)
        },
      }
      publishers.push(publisher)
      byDevice.set(deviceId, publisher)
    }

    running = true
    lastReceiptAt = performance.now()
    watchdog = setInterval(checkProgress, WATCHDOG_MS)
    if (scenario.shape === 'saturating') {
      for (const publisher of publishers) refill(publisher)
    } else {
      rateStartedAt = performance.now()
      rateTick()
    }
    await within(sleep(options.warmupMs))

    const loadGenCpuStart = process.cpuUsage()
    const brokerStart = await within(options.sampleBroker())
    const startedAt = performance.now()
    const receivedAtStart = totalReceived
    measuring = true
    await within(sleep(options.measureMs))
    const brokerEnd = await within(options.sampleBroker())
    const endedAt = performance.now()
    const delivered = totalReceived - receivedAtStart
    measuring = false
    const loadGenCpu = process.cpuUsage(loadGenCpuStart)

    running = false
    clearTimeout(rateTimer)
    const drainedBy = performance.now() + DRAIN_TIMEOUT_MS
    const settled = (): boolean =>
      publishers.every((publisher) =>
        qos === 1
          ? publisher.acked === publisher.sent && publisher.received >= publisher.sent
          : publisher.received + publisher.writtenOff >= publisher.sent,
      )
    while (!settled() && performance.now() < drainedBy) await within(sleep(10))

    const measuredMs = endedAt - startedAt
    const brokerCpuMicros =
      brokerEnd.userMicros + brokerEnd.systemMicros - (brokerStart.userMicros + brokerStart.systemMicros)
    const eluActiveMs = brokerEnd.eluActiveMs - brokerStart.eluActiveMs
    const eluIdleMs = brokerEnd.eluIdleMs - brokerStart.eluIdleMs
    const latencyHistogram = histogramOf(
      latenciesMicros.subarray(0, latencyCount).map((micros) => micros / 1000),
    )
    const [p50, p99, max] = percentiles(latenciesMicros, latencyCount, [0.5, 0.99, 1])
    return {
      measuredMs,
      delivered,
      msgsPerSec: (delivered * 1000) / measuredMs,
      brokerCpuMicros,
      brokerCpuMicrosPerMsg: delivered === 0 ? Number.NaN : brokerCpuMicros / delivered,
      brokerCpuCores: brokerCpuMicros / 1000 / measuredMs,
      brokerEventLoopUtilization: eluActiveMs / (eluActiveMs + eluIdleMs),
      loadGenCpuCores: (loadGenCpu.user + loadGenCpu.system) / 1000 / measuredMs,
      latencySamples: latencyCount,
      latencyHistogram,
      ...(scenario.shape === 'rate' ? { offeredPerSec: ratePerSec } : {}),
      latencyP50Ms: (p50 ?? Number.NaN) / 1000,
      latencyP99Ms: (p99 ?? Number.NaN) / 1000,
      latencyMaxMs: (max ?? Number.NaN) / 1000,
      rateShortfall: shortfall,
      totalSent,
      totalReceived,
      lost: totalSent - totalReceived,
      subscribeRetries,
    }
  } finally {
    running = false
    stopping = true
    clearTimeout(rateTimer)
    clearInterval(watchdog)
    await Promise.all(clients.map(closeClient))
  }
}
