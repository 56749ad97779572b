import type { Context, Hono } from 'hono'
import { streamSSE } from 'hono/streaming'
import { isValidFilter } from './acl.ts'
import { type Env, parseBody } from './api.ts'
import { publishSchema } from './api-schemas.ts'
import type { Broker, WatchedMessage } from './broker.ts'
import { GATEWAY_ERROR_CODES, GatewayError, quote } from './errors.ts'
import type { LiveStats } from './live-stats.ts'
import { orderedWriter } from './sse.ts'

/** What the live routes need from the API. */
interface LiveRouteOptions {
  broker: Broker
  liveStats: LiveStats
  tenantParam(c: Context<Env>): string
  requireAdmin(c: Context<Env>): void
  maxPayloadBytes(tenantId: string): number
}

/** Live message streams open at once per tenant, and in the whole gateway. */
export const MAX_WATCHERS_PER_TENANT = 8
export const MAX_WATCHERS = 64
/** Messages a live stream may have waiting for a slow client; past it, messages are skipped and counted. */
const MAX_UNWRITTEN = 256
/** Payload bytes a live stream shows of one message. */
const MAX_SHOWN_BYTES = 16 * 1024

/**
 * The routes behind the UI's live views: `GET /stats` (the gateway) and `GET /tenants/:t/stats`
 * (one tenant) for the charts; `GET /tenants/:t/messages` (an SSE stream of the tenant's messages
 * on a filter) and `POST /tenants/:t/publish` for the topics page.
 */
export function mountLiveRoutes(api: Hono<Env>, options: LiveRouteOptions): void {
  const { broker, liveStats, tenantParam } = options
  const watchers = new Map<string, number>()
  let watching = 0

  const since = (c: Context<Env>): number => {
    const raw = c.req.query('since')
    if (raw === undefined) return 0
    if (!/^\d{1,15}$/.test(raw)) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.invalidInput,
        `Cannot accept the request as 'since' must be a time in ms since the epoch, got ${quote(raw)}`,
        { field: 'since' },
      )
    }
    return Number(raw)
  }
  const statsView = (tenantId: string | null, c: Context<Env>) => ({
    intervalMs: liveStats.intervalMs,
    samples: liveStats.samples(tenantId, since(c)),
  })

  api.get('/stats', (c) => {
    options.requireAdmin(c)
    return c.json(statsView(null, c))
  })
  api.get('/tenants/:tenant/stats', (c) => c.json(statsView(tenantParam(c), c)))

  api.post('/tenants/:tenant/publish', async (c) => {
    const tenantId = tenantParam(c)
    const body = await parseBody(c, publishSchema)
    const payload =
      body.payloadBase64 !== undefined
        ? Buffer.from(body.payloadBase64, 'base64')
        : Buffer.from(body.payload ?? '')
    const max = options.maxPayloadBytes(tenantId)
    if (payload.length > max) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.invalidInput,
        `Cannot publish ${payload.length} bytes: the tenant's maxPayloadBytes is ${max}`,
        { field: 'payload' },
      )
    }
    await broker.inject(tenantId, body.topic, payload, body.qos ?? 0, body.retain ?? false)
    return c.json({ published: true, bytes: payload.length }, 202)
  })

  api.get('/tenants/:tenant/messages', (c) => {
    const tenantId = tenantParam(c)
    const filter = c.req.query('filter') ?? '#'
    if (filter.length > 1024 || !isValidFilter(filter) || filter.startsWith('$')) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.invalidInput,
        `Cannot watch ${quote(filter)}: it is not an MQTT topic filter (or it starts with '$')`,
        { field: 'filter' },
      )
    }
    if ((watchers.get(tenantId) ?? 0) >= MAX_WATCHERS_PER_TENANT || watching >= MAX_WATCHERS) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.limitReached,
        `Cannot open another live view: ${MAX_WATCHERS_PER_TENANT} per tenant and ${MAX_WATCHERS} in all are open`,
      )
    }
    watchers.set(tenantId, (watchers.get(tenantId) ?? 0) + 1)
    watching++
    return streamSSE(c, async (stream) => {
      const writer = orderedWriter(stream)
      const { enqueue } = writer
      let skipped = 0
      const send = (message: WatchedMessage): void => {
        if (writer.unwritten >= MAX_UNWRITTEN) {
          skipped++
          return
        }
        const data = JSON.stringify({ ...messageView(message), skipped })
        skipped = 0
        enqueue(() => stream.writeSSE({ event: 'message', data }))
      }
      enqueue(() => stream.writeSSE({ event: 'ready', data: JSON.stringify({ filter }) }))
      await new Promise<void>((resolve) => {
        const stop = broker.watch(tenantId, filter, send)
        stream.onAbort(() => {
          stop()
          const left = (watchers.get(tenantId) ?? 1) - 1
          if (left > 0) watchers.set(tenantId, left)
          else watchers.delete(tenantId)
          watching--
          void writer.finish().then(() => resolve())
        })
      })
    })
  })
}

/** A message as a live view shows it: the payload as text when it is UTF-8, and always as base64. */
function messageView(message: WatchedMessage) {
  const shown = message.payload.subarray(0, MAX_SHOWN_BYTES)
  let text: string | null
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(shown)
  } catch {
    text = null
  }
  return {
    topic: message.topic,
    payload: text,
    payloadBase64: shown.toString('base64'),
    bytes: message.payload.length,
    truncated: shown.length < message.payload.length,
    qos: message.qos,
    retain: message.retain,
    ts: Date.now(),
  }
}
