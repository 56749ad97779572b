// A broker under test, in its own process so that its CPU accounting is its own and the load
// generator cannot steal its core. Started by `_broker-process.ts` with
// `fork(this file, [kind, publisherCount], { execArgv: ['--import', 'tsx'] })`; it answers
// CPU-sample requests over IPC until told to close or until the parent goes away.
import { mkdtempSync, rmSync } from 'node:fs'
import { type AddressInfo, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import type { BenchCredentials, BrokerKind, ChildMessage, ParentMessage } from './_protocol.ts'

interface StartedBroker {
  port: number
  publishers: BenchCredentials[]
  subscriber: BenchCredentials
  close(): Promise<void>
}

/** Tenant the gateway's bench devices belong to. */
const TENANT_ID = 'bench'
/** Longest the child waits for its broker to close before exiting anyway. */
const CLOSE_TIMEOUT_MS = 5000

function send(message: ChildMessage): void {
  if (process.connected) process.send?.(message)
}

/** Bare aedes 1.2: default in-memory persistence, no hooks. */
async function startBare(publisherCount: number): Promise<StartedBroker> {
  const { Aedes } = await import('aedes')
  const broker = await Aedes.createBroker()
  // noDelay as the gateway sets on its sockets, so that both brokers' TCP behaves alike.
  const server = createServer({ noDelay: true }, broker.handle)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  return {
    port: (server.address() as AddressInfo).port,
    publishers: Array.from({ length: publisherCount }, () => ({})),
    subscriber: {},
    close: async () => {
      await new Promise<void>((resolve) => broker.close(() => resolve()))
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/**
 * The gateway with everything on the message path: authentication of `DEVICE@TENANT`, the tenant
 * mount, a tenant ACL rule (so every publish and delivery is checked against a rule list), quotas
 * set high enough not to throttle, and its SQLite broker persistence in a temp data dir.
 */
async function startGateway(publisherCount: number): Promise<StartedBroker> {
  const { createGateway, loadConfig } = await import('../../gateway/index.ts')
  const dataDir = mkdtempSync(join(tmpdir(), 'taureau-bench-'))
  try {
    const config = loadConfig({
      env: {},
      flags: {
        data: dataDir,
        host: '127.0.0.1',
        mqtt: { port: 0, wsPort: 0 },
        http: { port: 0 },
        log: { level: 'silent' },
      },
    })
    const gateway = await createGateway({ config })
    const close = async (): Promise<void> => {
      await gateway.close()
      rmSync(dataDir, { recursive: true, force: true })
    }
    try {
      const api = async (method: string, path: string, body: unknown): Promise<unknown> => {
        const response = await fetch(`${gateway.addresses.httpUrl}/api/v1${path}`, {
          method,
          headers: { authorization: `Bearer ${gateway.adminToken}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(30_000),
        })
        const text = await response.text()
        if (!response.ok) {
          throw new Error(
            `Cannot provision the gateway as ${method} ${path} answered ${response.status}: ${text}`,
          )
        }
        return text === '' ? undefined : JSON.parse(text)
      }
      await api('POST', '/tenants', {
        id: TENANT_ID,
        quotas: { maxMessagesPerSec: 10_000_000, maxConnections: 1000 },
      })
      await api('PUT', `/tenants/${TENANT_ID}/acl`, {
        rules: [{ action: 'publish', filter: 'admin/#', permission: 'deny' }],
      })
      const addDevice = async (deviceId: string): Promise<BenchCredentials> => {
        const created = (await api('POST', `/tenants/${TENANT_ID}/devices`, { id: deviceId })) as {
          username: string
          secret: string
        }
        return { username: created.username, password: created.secret }
      }
      const publishers: BenchCredentials[] = []
      for (let index = 1; index <= publisherCount; index++) publishers.push(await addDevice(`pub-${index}`))
      const subscriber = await addDevice('sub-1')
      return { port: gateway.addresses.mqttPort, publishers, subscriber, close }
    } catch (error) {
      await close()
      throw error
    }
  } catch (error) {
    rmSync(dataDir, { recursive: true, force: true })
    throw error
  }
}

async function main(): Promise<void> {
  if (process.send === undefined) {
    throw new Error(
      'Cannot run the broker child as it has no IPC channel: it is started by test/bench/run.ts',
    )
  }
  const kind = process.argv[2] as BrokerKind
  const publisherCount = Number(process.argv[3])
  if (kind !== 'bare' && kind !== 'gateway') throw new RangeError(`Cannot start broker kind '${kind}'`)
  if (!Number.isInteger(publisherCount) || publisherCount < 1 || publisherCount > 100) {
    throw new RangeError(`Cannot start with publisher count '${process.argv[3]}'`)
  }

  let closing: Promise<void> | undefined
  let broker: StartedBroker | undefined
  const shutdown = (): Promise<void> => {
    closing ??= (async () => {
      // Bounded: a broker that does not close in time is abandoned; the process exits regardless.
      const timer = setTimeout(() => process.exit(1), CLOSE_TIMEOUT_MS)
      try {
        await broker?.close()
      } finally {
        clearTimeout(timer)
        send({ type: 'closed' })
        if (process.connected) process.disconnect()
        // Let the loop drain (so --cpu-prof writes its profile); exit anyway if a handle lingers.
        setTimeout(() => process.exit(0), 1000).unref()
      }
    })()
    return closing
  }
  process.on('message', (message: ParentMessage) => {
    if (message.type === 'sample') {
      const cpu = process.cpuUsage()
      const elu = performance.eventLoopUtilization()
      send({
        type: 'sample',
        id: message.id,
        userMicros: cpu.user,
        systemMicros: cpu.system,
        eluActiveMs: elu.active,
        eluIdleMs: elu.idle,
      })
    } else if (message.type === 'close') {
      void shutdown()
    }
  })
  // The parent died or closed the channel: never outlive it.
  process.on('disconnect', () => void shutdown())
  // Ctrl-C reaches the whole process group: close the broker and remove its data dir first.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void shutdown())

  broker = kind === 'bare' ? await startBare(publisherCount) : await startGateway(publisherCount)
  send({ type: 'ready', port: broker.port, publishers: broker.publishers, subscriber: broker.subscriber })
}

main().catch((error: unknown) => {
  const failure = error instanceof Error ? error : new Error(String(error))
  send({ type: 'failed', message: failure.message, stack: failure.stack ?? '' })
  process.exitCode = 1
  if (process.connected) process.disconnect()
})
