import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { cpus } from 'node:os'
import { join, resolve } from 'node:path'
import { type ServerType, serve } from '@hono/node-server'
import { Hono } from 'hono'
import { type Logger, pino } from 'pino'
import packageJson from '../package.json' with { type: 'json' }
import { createWorkerPool, type WorkerPool } from '../sandbox/index.ts'
import type { Uplink } from '../sync/index.ts'
import { createAccounts } from './accounts.ts'
import { createApi, type Env, hashToken } from './api.ts'
import { type Broker, createBroker } from './broker.ts'
import { createSqlitePersistence, type SqlitePersistence } from './broker-persistence.ts'
import type { GatewayConfig, Quotas } from './config.ts'
import { ADMIN_TOKEN_FILE, API_URL_FILE, STORE_FILE } from './data-files.ts'
import { createFunctionStore, type FunctionStore } from './function-store.ts'
import { createFunctions, type Functions, type Scheduler } from './functions.ts'
import { createJournal, type Journal } from './journal.ts'
import { createLiveStats } from './live-stats.ts'
import { createMetrics, createOutboxMetrics, type Metrics } from './metrics.ts'
import { createOutbox, loadOutboxKey, OUTBOX_SWEEP_RECORDS, type Outbox } from './outbox.ts'
import { createPasswordHasher, type PasswordHasher, type PasswordHasherOptions } from './password-hasher.ts'
import { createPublishIds } from './publish-ids.ts'
import { createStateStore, type StateChange } from './state-store.ts'
import { createStore, type Store } from './store.ts'
import { DEFAULT_UI_DIR } from './ui-assets.ts'
import { startUplink } from './uplink.ts'

/** Options of {@link createGateway}. */
export interface GatewayOptions {
  config: GatewayConfig
  /** Where logs go; defaults to pino on stderr at the configured level. */
  logger?: Logger
  /** Argon2id cost and the hashing worker's idle time; tests lower the cost. */
  hasher?: PasswordHasherOptions
  /** Directory of the built UI; default `ui/dist` of this checkout. */
  uiDir?: string
  /** Runs the functions' `every` and `cron` triggers; tests fire ticks by hand. */
  scheduler?: Scheduler
}

/** The actual addresses a started gateway listens on (port 0 resolved). */
export interface GatewayAddresses {
  host: string
  mqttPort: number
  wsPort: number
  httpPort: number
  /** Base URL of the API and UI, e.g. `http://127.0.0.1:8080`. */
  httpUrl: string
}

/** One running gateway process: broker, store, API. */
export interface Gateway {
  readonly config: GatewayConfig
  readonly addresses: GatewayAddresses
  /** The admin token, also in `DATA/admin-token`. */
  readonly adminToken: string
  readonly store: Store
  readonly broker: Broker
  readonly metrics: Metrics
  readonly functions: Functions
  readonly functionStore: FunctionStore
  /** The sandbox worker pool the functions run in. */
  readonly pool: WorkerPool
  /** Records from `ctx.emit` waiting for the uplink. */
  readonly outbox: Outbox
  /** The group commit of messages and results. */
  readonly journal: Journal
  /** The private uplink; undefined when no cloud receiver is configured. */
  readonly uplink: Uplink | undefined
  /** Stops accepting, disconnects clients, then closes the store: children before parents. */
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/**
 * Starts a gateway: creates the data dir, opens (and migrates) the SQLite store, makes the admin
 * token on first start, then starts the broker (MQTT/TCP and MQTT/WebSocket) and the HTTP API.
 */
export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  const { config } = options
  const logger = options.logger ?? pino({ level: config.log.level }, pino.destination(2))
  const dataDir = resolve(config.data)
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })

  const opened: Array<() => Promise<void> | void> = []
  const closeOpened = async (): Promise<void> => {
    for (const close of opened.reverse()) await close()
  }
  try {
    const store = createStore({
      file: join(dataDir, STORE_FILE),
      durability: config.durability.mode,
      maxBytes: config.durability.maxStoreBytes,
    })
    opened.push(() => store.close())
    const adminToken = ensureAdminToken(dataDir, store)
    const persistence: SqlitePersistence = createSqlitePersistence({ db: store.db })
    // After the broker closes: wills published while clients close still reach the persistence,
    // which then refuses further calls instead of touching a closed database.
    opened.push(() => persistence.destroy())
    const hasher: PasswordHasher = createPasswordHasher(options.hasher ?? {})
    opened.push(() => hasher.close())
    const metrics = createMetrics()
    const anonymousTenant = config.mqtt.anonymousTenant
    if (anonymousTenant !== null && store.getTenant(anonymousTenant) === undefined) {
      store.createTenant(anonymousTenant)
      logger.warn(
        { tenant: anonymousTenant },
        'clients without credentials join this tenant (development only)',
      )
    }
    const pool: WorkerPool = createWorkerPool({
      size: config.functions.workers ?? Math.max(1, cpus().length - 1),
      memoryLimitBytes: config.functions.tenantMemoryMb * 1024 * 1024,
      // Workers read committed function state through their own read-only connections.
      stateDatabase: join(dataDir, STORE_FILE),
      idleEvictMs: config.functions.idleEvictMs,
      onWorkerError: (error) => logger.error({ err: error }, 'a sandbox worker crashed'),
    })
    opened.push(() => pool.close())
    metrics.observeSandbox(() => ({
      workers: pool.workers,
      restarts: pool.restarts,
      isolations: pool.isolations,
      evictions: pool.evictions,
    }))
    const functionStore = createFunctionStore(store.db, { deadLetterLimit: config.functions.deadLetterLimit })
    const journal = createJournal({
      db: store.db,
      commitWindowMs: config.durability.commitWindowMs,
      maxBatch: config.durability.maxBatch,
      logger,
      registry: metrics.registry,
    })
    // Closed after the functions (their last results), before the store.
    opened.push(() => journal.close())
    const quotasOf = (tenantId: string): Quotas | undefined => {
      const tenant = store.getTenant(tenantId)
      return tenant === undefined
        ? undefined
        : ({ ...config.tenantDefaults.quotas, ...tenant.quotaOverrides } as Quotas)
    }
    const publishIds = createPublishIds(store.db)
    const stateStore = createStateStore(store.db)
    const outboxMetrics = createOutboxMetrics(metrics.registry)
    let uplink: Uplink | undefined
    const outbox = await createOutbox({
      db: store.db,
      key: loadOutboxKey(dataDir),
      quotasOf: (tenantId) => quotasOf(tenantId),
      metrics: outboxMetrics,
      onAppend: () => uplink?.poke(),
    })
    opened.push(() => outbox.close())
    // Records past their TTL go once a minute, in bounded transactions, one per event-loop turn.
    const sweep = (): void => {
      try {
        if (outbox.sweep() === OUTBOX_SWEEP_RECORDS) setImmediate(sweep)
      } catch (error) {
        logger.error({ err: error }, 'cannot sweep the outbox')
      }
    }
    const sweeper = setInterval(sweep, OUTBOX_SWEEP_INTERVAL_MS)
    sweeper.unref()
    opened.push(() => clearInterval(sweeper))
    uplink = await startUplink({ config, dataDir, outbox, registry: metrics.registry, logger })
    if (uplink !== undefined) opened.push(() => uplink.close())
    const broker = await createBroker({
      store,
      persistence,
      hasher,
      metrics,
      logger,
      config,
      newConnection: publishIds.connection,
    })
    const functions = createFunctions({
      functionStore,
      broker,
      pool,
      metrics,
      logger,
      config: config.functions,
      journal,
      publishIds,
      outbox,
      state: stateStore,
      journalQos0: config.durability.journalQos0,
      journalMessages: config.durability.journal,
      quotas: quotasOf,
      ...(options.scheduler === undefined ? {} : { scheduler: options.scheduler }),
    })
    // Closed after the broker (no new messages), before the pool (invocations in flight finish).
    opened.push(() => functions.close())
    // Keys and namespaces whose lease ran out go every second; functions see those changes too.
    const stateSweeper = setInterval(() => {
      try {
        // The sweep and the journal rows of what its changes trigger commit together.
        const queue = store.db.transaction(() => {
          const byTenant = new Map<string, StateChange[]>()
          for (const change of stateStore.sweep()) {
            const ofTenant = byTenant.get(change.tenantId) ?? []
            ofTenant.push(change)
            byTenant.set(change.tenantId, ofTenant)
          }
          return [...byTenant].map(([tenantId, ofTenant]) => functions.stateChanged(tenantId, ofTenant))
        })()
        for (const run of queue) run()
      } catch (error) {
        logger.error({ err: error }, 'cannot sweep function state')
      }
    }, STATE_SWEEP_INTERVAL_MS)
    stateSweeper.unref()
    opened.push(() => clearInterval(stateSweeper))
    opened.push(() => broker.close())
    await functions.start()
    broker.setMessageHandler(functions.handleMessage)
    const brokerAddress = await broker.listen(config.host, config.mqtt.port, config.mqtt.wsPort)

    const liveStats = createLiveStats({ metrics })
    opened.push(() => liveStats.close())
    const sessionIdleMs = config.http.sessionIdleMinutes * 60_000
    const accounts = createAccounts(store.db, {
      sessionIdleMs,
      sessionMaxMs: config.http.sessionMaxHours * 3_600_000,
    })
    accounts.sweepSessions()
    const sessionSweeper = setInterval(() => {
      try {
        accounts.sweepSessions()
      } catch (error) {
        logger.error({ err: error }, 'cannot remove expired UI sessions')
      }
    }, SESSION_SWEEP_INTERVAL_MS)
    sessionSweeper.unref()
    opened.push(() => clearInterval(sessionSweeper))
    const adminTokenId = store.findToken(hashToken(adminToken))?.id
    const api = createApi({
      store,
      broker,
      hasher,
      metrics,
      accounts,
      liveStats,
      signIn: config.auth,
      basePath: config.http.basePath,
      trustProxy: config.http.trustProxy,
      sessionIdleMs,
      sessionMaxMs: config.http.sessionMaxHours * 3_600_000,
      gatewayInfo: () => ({
        version: packageJson.version,
        mqttPort: brokerAddress.mqttPort,
        wsPort: brokerAddress.wsPort,
      }),
      adminTokenId: () => adminTokenId,
      ...(config.http.ui ? { uiDir: options.uiDir ?? DEFAULT_UI_DIR } : {}),
      defaultQuotas: config.tenantDefaults.quotas,
      maxBodyBytes: config.http.maxBodyBytes,
      publicMetrics: config.http.publicMetrics,
      functions: { runtime: functions, store: functionStore, outbox },
      uplink: () => uplink?.status(),
      state: {
        store: stateStore,
        onChanges: (tenantId, changes) => functions.stateChanged(tenantId, changes),
      },
    })
    const app = config.http.basePath === '' ? api : new Hono<Env>().route(config.http.basePath, api)
    const tls = config.http.tls
    const http = await new Promise<ServerType>((resolvePromise, reject) => {
      const server = serve(
        {
          fetch: app.fetch,
          port: config.http.port,
          hostname: config.host,
          ...(tls === null
            ? {}
            : {
                createServer: createHttpsServer,
                serverOptions: { cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) },
              }),
        },
        () => resolvePromise(server),
      )
      server.once('error', reject)
    })
    opened.push(
      () =>
        new Promise<void>((resolveClose) => {
          http.close(() => resolveClose())
          ;(http as { closeAllConnections?: () => void }).closeAllConnections?.()
        }),
    )
    const httpPort = (http.address() as AddressInfo).port
    const urlHost = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host
    const addresses: GatewayAddresses = {
      host: config.host,
      mqttPort: brokerAddress.mqttPort,
      wsPort: brokerAddress.wsPort,
      httpPort,
      httpUrl: `${tls === null ? 'http' : 'https'}://${urlHost.includes(':') ? `[${urlHost}]` : urlHost}:${httpPort}${config.http.basePath}`,
    }
    writeFileSync(join(dataDir, API_URL_FILE), `${addresses.httpUrl}\n`, { mode: 0o600 })

    let closing: Promise<void> | undefined
    const gateway: Gateway = {
      config,
      addresses,
      adminToken,
      store,
      broker,
      metrics,
      functions,
      functionStore,
      pool,
      outbox,
      journal,
      uplink,
      close: () => {
        closing ??= closeOpened().then(() => logger.info('gateway stopped'))
        return closing
      },
      [Symbol.asyncDispose]: () => gateway.close(),
    }
    return gateway
  } catch (error) {
    await closeOpened()
    throw error
  }
}

/** How often state keys and namespaces whose lease ran out are removed. */
const STATE_SWEEP_INTERVAL_MS = 1000

/** How often UI sessions past their idle or absolute limit are removed. */
const SESSION_SWEEP_INTERVAL_MS = 10 * 60_000

/** How often records past their TTL are dropped from the outbox. */
const OUTBOX_SWEEP_INTERVAL_MS = 60_000

/** Reads `DATA/admin-token`, creating it (mode 0600) on first start, and registers its hash. */
function ensureAdminToken(dataDir: string, store: Store): string {
  const file = join(dataDir, ADMIN_TOKEN_FILE)
  let token: string
  if (existsSync(file)) {
    token = readFileSync(file, 'utf8').trim()
  } else {
    token = `tau_admin_${randomBytes(24).toString('base64url')}`
    writeFileSync(file, `${token}\n`, { mode: 0o600 })
  }
  chmodSync(file, 0o600)
  if (store.findToken(hashToken(token)) === undefined) store.createToken(hashToken(token), null, 'admin')
  return token
}
