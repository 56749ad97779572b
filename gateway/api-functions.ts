import type { Context, Hono } from 'hono'
import { streamSSE } from 'hono/streaming'
import { type Env, parseBody } from './api.ts'
import { replaySchema } from './api-schemas.ts'
import { GATEWAY_ERROR_CODES, GatewayError, quote } from './errors.ts'
import { deploySchema, invokeSchema, rollbackSchema } from './function-spec.ts'
import type { FunctionStore, FunctionVersion } from './function-store.ts'
import type { Functions, LogLine } from './functions.ts'
import type { Outbox } from './outbox.ts'
import { orderedWriter } from './sse.ts'

/** What the function routes need from the API. */
interface FunctionRouteOptions {
  runtime: Functions
  store: FunctionStore
  outbox: Outbox
  /** The `:tenant` path parameter, checked against the caller's token and the store. */
  tenantParam(c: Context<Env>): string
}

/** Refusals a compile check answers with `ok: false` (200) rather than as an error. */
const CHECK_VERDICTS = new Set<string>([GATEWAY_ERROR_CODES.invalidInput, GATEWAY_ERROR_CODES.limitReached])

/** Log lines a live stream may have waiting for a slow client before the stream ends. */
const MAX_UNWRITTEN_LINES = 1_000

/**
 * The routes of tenant functions under `/api/v1/tenants/:tenant`: deploy, list, show, versions,
 * rollback, enable, disable, delete, test-invoke, logs (JSON or a live SSE stream), dead letters
 * and the outbox.
 */
export function mountFunctionRoutes(api: Hono<Env>, options: FunctionRouteOptions): void {
  const { runtime, store, tenantParam } = options
  const base = '/tenants/:tenant/functions'
  const nameOf = (c: Context<Env>) => c.req.param('name') ?? ''

  const versionView = (version: FunctionVersion, current: number, withSource: boolean) => ({
    version: version.version,
    current: version.version === current,
    createdAt: new Date(version.createdAt).toISOString(),
    ...version.spec,
    ...(withSource ? { source: version.source } : {}),
  })
  const integerQuery = (c: Context<Env>, name: string, fallback: number, max: number): number => {
    const raw = c.req.query(name)
    if (raw === undefined) return fallback
    if (!/^\d+$/.test(raw) || Number(raw) > max) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.invalidInput,
        `Cannot accept the request as '${name}' must be a whole number up to ${max}, got ${quote(raw)}`,
        { field: name },
      )
    }
    return Number(raw)
  }

  api.get(base, (c) => c.json({ functions: runtime.list(tenantParam(c)) }))
  api.post(base, async (c) => {
    const tenantId = tenantParam(c)
    const request = await parseBody(c, deploySchema)
    return c.json({ function: await runtime.deploy(tenantId, request) }, 201)
  })
  // No POST route takes a function name at this level, so `check` cannot clash with one.
  api.post(`${base}/check`, async (c) => {
    const tenantId = tenantParam(c)
    const request = await parseBody(c, deploySchema)
    try {
      await runtime.check(tenantId, request)
    } catch (error) {
      // A source or spec the deploy would refuse is the answer to the question, not a failed request.
      if (error instanceof GatewayError && CHECK_VERDICTS.has(error.code)) {
        const { code, message, field, line, column } = error
        return c.json({ ok: false, error: { code, message, field, line, column } })
      }
      throw error
    }
    return c.json({ ok: true })
  })
  api.get(`${base}/:name`, (c) => {
    const tenantId = tenantParam(c)
    const view = runtime.view(tenantId, nameOf(c))
    const source = store.version(tenantId, view.name, view.version)?.source ?? null
    return c.json({ function: view, source })
  })
  api.delete(`${base}/:name`, async (c) => {
    await runtime.remove(tenantParam(c), nameOf(c))
    return c.body(null, 204)
  })
  api.get(`${base}/:name/versions`, (c) => {
    const tenantId = tenantParam(c)
    const view = runtime.view(tenantId, nameOf(c))
    const versions = runtime.versions(tenantId, view.name)
    return c.json({ versions: versions.map((version) => versionView(version, view.version, false)) })
  })
  api.get(`${base}/:name/versions/:version`, (c) => {
    const tenantId = tenantParam(c)
    const view = runtime.view(tenantId, nameOf(c))
    const number = Number(c.req.param('version'))
    const version = Number.isInteger(number) ? store.version(tenantId, view.name, number) : undefined
    if (version === undefined) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.notFound,
        `Cannot find version ${quote(c.req.param('version'))} of function ${quote(view.name)}`,
      )
    }
    return c.json({ version: versionView(version, view.version, true) })
  })
  api.post(`${base}/:name/rollback`, async (c) => {
    const tenantId = tenantParam(c)
    const { version } = await parseBody(c, rollbackSchema)
    return c.json({ function: await runtime.rollback(tenantId, nameOf(c), version) })
  })
  api.post(`${base}/:name/enable`, async (c) =>
    c.json({ function: await runtime.setEnabled(tenantParam(c), nameOf(c), true) }),
  )
  api.post(`${base}/:name/disable`, async (c) =>
    c.json({ function: await runtime.setEnabled(tenantParam(c), nameOf(c), false) }),
  )
  api.post(`${base}/:name/invoke`, async (c) => {
    const tenantId = tenantParam(c)
    const text = await c.req.text()
    // An empty body runs the handler on a default sample.
    const body = text.trim() === '' ? {} : await parseBody(c, invokeSchema)
    return c.json({ invocation: await runtime.testInvoke(tenantId, nameOf(c), body) })
  })
  api.get(`${base}/:name/logs`, (c) => {
    const tenantId = tenantParam(c)
    const name = nameOf(c)
    const lines = runtime.logs(tenantId, name)
    const follow =
      c.req.query('follow') === 'true' || (c.req.header('accept') ?? '').includes('text/event-stream')
    if (!follow) return c.json({ logs: lines })
    return streamSSE(c, async (stream) => {
      // A client that stops reading would make the writes wait without end, so past a bound of
      // unwritten lines the stream ends.
      const writer = orderedWriter(stream)
      const { enqueue } = writer
      const send = (line: LogLine) =>
        enqueue(() => stream.writeSSE({ event: line.level, data: JSON.stringify(line), id: String(line.ts) }))
      for (const line of lines) send(line)
      await new Promise<void>((resolve) => {
        const end = (reason: string | null) => {
          unsubscribe()
          if (reason !== null) enqueue(() => stream.writeSSE({ event: 'end', data: reason }))
          void writer.finish().then(() => resolve())
        }
        const unsubscribe = runtime.followLogs(tenantId, name, (line) => {
          if (line === null) end('the function was removed')
          else if (writer.unwritten >= MAX_UNWRITTEN_LINES) end('the client is not reading fast enough')
          else send(line)
        })
        stream.onAbort(() => end(null))
      })
    })
  })

  api.get('/tenants/:tenant/dead-letters', (c) => {
    const tenantId = tenantParam(c)
    const name = c.req.query('function')
    const limit = integerQuery(c, 'limit', 100, 1000)
    const before = integerQuery(c, 'before', Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)
    const letters = store.deadLetters(tenantId, name, limit, before)
    return c.json({
      deadLetters: letters.map((letter) => ({
        ...letter,
        createdAt: new Date(letter.createdAt).toISOString(),
      })),
    })
  })
  api.post('/tenants/:tenant/dead-letters/replay', async (c) => {
    const tenantId = tenantParam(c)
    const body = await parseBody(c, replaySchema)
    const result = await runtime.replayDeadLetters(tenantId, { name: body.function, ids: body.ids })
    return c.json(result)
  })
  api.delete('/tenants/:tenant/dead-letters', (c) => {
    const tenantId = tenantParam(c)
    return c.json({ purged: store.purgeDeadLetters(tenantId, c.req.query('function')) })
  })
  api.get('/tenants/:tenant/outbox', (c) => {
    const tenantId = tenantParam(c)
    const after = integerQuery(c, 'after', 0, Number.MAX_SAFE_INTEGER)
    const limit = integerQuery(c, 'limit', 100, 1000)
    const records = options.outbox.list(tenantId, after, limit)
    return c.json({
      records: records.map((record) => ({
        ...record,
        createdAt: new Date(record.createdAt).toISOString(),
        expiresAt: new Date(record.expiresAt).toISOString(),
      })),
      usage: options.outbox.usage(tenantId),
    })
  })
  api.get('/tenants/:tenant/outbox/drops', (c) => {
    const tenantId = tenantParam(c)
    const before = integerQuery(c, 'before', Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)
    const limit = integerQuery(c, 'limit', 100, 1000)
    return c.json({
      drops: options.outbox
        .drops(tenantId, limit, before)
        .map((drop) => ({ ...drop, at: new Date(drop.at).toISOString() })),
    })
  })
}
