import type Database from 'better-sqlite3'
import type { Context, Hono } from 'hono'
import { STATE_LIMITS, stateKeyProblem } from '../sandbox/index.ts'
import { type Env, parseBody } from './api.ts'
import { putStateSchema } from './api-schemas.ts'
import { GATEWAY_ERROR_CODES, GatewayError, quote } from './errors.ts'
import {
  createStateStore,
  type StateChange,
  type StateEntry,
  type StateQuotas,
  type StateStore,
  StateWriteError,
  stateNamespaceRefusal,
} from './state-store.ts'

/** What the gateway hands the state routes: the store it shares with the functions, and triggers. */
export interface StateApiOptions {
  /** The state store; one is made on the API's database when none is given. */
  store?: StateStore
  /** Told of the changes an edit made, after it committed: functions triggered by state run on them. */
  /**
   * Told of an edit's changes inside its transaction (the functions journal the invocations they
   * trigger there, so a crash cannot keep the edit and lose them); what it returns runs after the
   * commit.
   */
  onChanges?: (tenantId: string, changes: StateChange[]) => (() => void) | undefined
}

/** What the state routes need from the API. */
interface StateRouteOptions extends StateApiOptions {
  db: Database.Database
  /** The `:tenant` path parameter, checked against the caller's token and the store. */
  tenantParam(c: Context<Env>): string
  quotasOf(tenantId: string): StateQuotas
}

/** Keys a page lists when the request does not say. */
const DEFAULT_PAGE = 100

/**
 * The routes of function state under `/api/v1/tenants/:tenant/state`: namespaces with their usage,
 * keys of a namespace (by prefix, in pages), and one key's value to read, set or delete. A
 * function's private namespace is `@` and its name.
 */
export function mountStateRoutes(api: Hono<Env>, options: StateRouteOptions): void {
  const { tenantParam, quotasOf } = options
  const store = options.store ?? createStateStore(options.db)
  const base = '/tenants/:tenant/state'

  const invalid = (field: string, why: string): never => {
    throw new GatewayError(
      GATEWAY_ERROR_CODES.invalidInput,
      `Cannot accept the request as '${field}' is invalid: ${why}`,
      { field },
    )
  }
  const namespaceQuery = (c: Context<Env>): string => {
    const namespace = c.req.query('namespace')
    if (namespace === undefined) return invalid('namespace', 'is required')
    const problem = stateNamespaceRefusal(namespace, null)
    return problem === undefined ? namespace : invalid('namespace', problem)
  }
  const keyQuery = (c: Context<Env>, name: 'key' | 'after'): string => {
    const key = c.req.query(name) ?? ''
    const problem = stateKeyProblem(key)
    return problem === undefined ? key : invalid(name, problem)
  }
  const limitQuery = (c: Context<Env>): number => {
    const raw = c.req.query('limit')
    if (raw === undefined) return DEFAULT_PAGE
    const max = STATE_LIMITS.maxListedKeys
    return /^\d+$/.test(raw) && Number(raw) >= 1 && Number(raw) <= max
      ? Number(raw)
      : invalid('limit', `must be a whole number from 1 to ${max}, got ${quote(raw)}`)
  }
  /** Runs a write; its refusal (quota, bad input) becomes the API's error, and triggers hear of it. */
  const edit = (tenantId: string, run: () => StateChange[]): void => {
    let after: (() => void) | undefined
    try {
      options.db.transaction(() => {
        const changes = run()
        if (changes.length > 0) after = options.onChanges?.(tenantId, changes)
      })()
    } catch (error) {
      if (error instanceof StateWriteError)
        throw new GatewayError(error.code, error.message, { cause: error })
      throw error
    }
    after?.()
  }
  const time = (at: number | null) => (at === null ? null : new Date(at).toISOString())
  const entryView = (entry: Omit<StateEntry, 'value'>) => ({
    key: entry.key,
    bytes: entry.bytes,
    expiresAt: time(entry.expiresAt),
    updatedAt: time(entry.updatedAt),
  })
  const valueView = (entry: StateEntry) => ({
    namespace: entry.namespace,
    ...entryView(entry),
    value: JSON.parse(entry.value) as unknown,
  })
  const found = (tenantId: string, namespace: string, key: string): StateEntry => {
    const entry = store.get(tenantId, namespace, key)
    if (entry === undefined) {
      throw new GatewayError(
        GATEWAY_ERROR_CODES.notFound,
        `Cannot find state key ${quote(key)} in namespace ${quote(namespace)} of tenant ${quote(tenantId)}`,
      )
    }
    return entry
  }

  api.get(base, (c) => {
    const tenantId = tenantParam(c)
    const quotas = quotasOf(tenantId)
    return c.json({
      usage: { ...store.usage(tenantId), maxKeys: quotas.maxStateKeys, maxBytes: quotas.maxStateBytes },
      namespaces: store.namespaces(tenantId).map((namespace) => ({
        ...namespace,
        leaseExpiresAt: time(namespace.leaseExpiresAt),
      })),
    })
  })
  api.get(`${base}/keys`, (c) => {
    const tenantId = tenantParam(c)
    const namespace = namespaceQuery(c)
    const prefix = c.req.query('prefix') ?? ''
    if (prefix.length > STATE_LIMITS.maxKeyChars) {
      invalid('prefix', `is longer than ${STATE_LIMITS.maxKeyChars} characters`)
    }
    const after = c.req.query('after') === undefined ? '' : keyQuery(c, 'after')
    const limit = limitQuery(c)
    const entries = store.list(tenantId, namespace, prefix, limit, after)
    const last = entries.length === limit ? entries[limit - 1] : undefined
    return c.json({ namespace, keys: entries.map(entryView), next: last === undefined ? null : last.key })
  })
  api.get(`${base}/value`, (c) => {
    const tenantId = tenantParam(c)
    return c.json(valueView(found(tenantId, namespaceQuery(c), keyQuery(c, 'key'))))
  })
  api.put(`${base}/value`, async (c) => {
    const tenantId = tenantParam(c)
    const namespace = namespaceQuery(c)
    const key = keyQuery(c, 'key')
    const body = await parseBody(c, putStateSchema)
    const json = JSON.stringify(body.value)
    const bytes = Buffer.byteLength(json)
    if (bytes > STATE_LIMITS.maxValueBytes) {
      invalid('value', `has ${bytes} bytes of JSON, more than ${STATE_LIMITS.maxValueBytes}`)
    }
    edit(tenantId, () => store.put(tenantId, namespace, key, json, body.ttlMs, quotasOf(tenantId)))
    // 204 only when the key's lease already ran out (a ttlMs shorter than the request).
    const entry = store.get(tenantId, namespace, key)
    return entry === undefined ? c.body(null, 204) : c.json(valueView(entry))
  })
  api.delete(`${base}/value`, (c) => {
    const tenantId = tenantParam(c)
    const namespace = namespaceQuery(c)
    const key = keyQuery(c, 'key')
    found(tenantId, namespace, key)
    edit(tenantId, () => store.delete(tenantId, namespace, key))
    return c.body(null, 204)
  })
}
