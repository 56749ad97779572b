import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import mqtt, { type MqttClient } from 'mqtt'
import { afterEach, describe, expect, test } from 'vitest'
import { type GatewayProcess, spawnGateway } from '../helpers/gateway-process.ts'
import { tempDir } from '../helpers/temp.ts'

// The durability promise, tested on a real gateway process: every message a device saw
// acknowledged is processed once and lands in the outbox once, through SIGKILLs at random moments
// and through a disk that refuses writes.

const children: GatewayProcess[] = []
const dirs: string[] = []
const clients: MqttClient[] = []

afterEach(async () => {
  for (const client of clients.splice(0)) client.end(true)
  for (const child of children.splice(0)) await child.kill()
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

interface Ports {
  mqtt: number
  http: number
}

/** Starts `taureau gateway` on the data dir; ports 0 the first time, the same ones after. */
async function startGateway(dataDir: string, ports: Ports | undefined, config?: string) {
  const gateway = await spawnGateway({
    dataDir,
    ...(ports === undefined ? {} : { mqttPort: ports.mqtt, httpPort: ports.http }),
    ...(config === undefined ? {} : { args: ['--config', config] }),
  })
  children.push(gateway)
  return { ...gateway, ports: { mqtt: gateway.mqttPort, http: gateway.httpPort } }
}

type Gateway = Awaited<ReturnType<typeof startGateway>>

/** Sets up a tenant with `devices` devices and the counting function; returns their secrets. */
async function provision(gateway: Gateway, devices: number): Promise<string[]> {
  await gateway.api('POST', '/tenants', {
    id: 'site',
    quotas: { maxMessagesPerSec: 100_000, burstMessages: 100_000 },
  })
  const secrets: string[] = []
  for (let i = 0; i < devices; i++) {
    const device = await gateway.api('POST', '/tenants/site/devices', { id: `d${i}` })
    secrets.push(device.secret)
  }
  await gateway.api('POST', '/tenants/site/functions', {
    name: 'count',
    source: `export default {
      onMessage(msg, ctx) {
        ctx.state.incr('count')
        ctx.emit({ id: msg.payload.id, pad: msg.payload.pad.length })
      },
    }`,
    triggers: [{ topic: 'readings/#' }],
  })
  return secrets
}

/**
 * Devices that publish QoS 1 messages with unique ids, each with a persistent session and a
 * bounded window of messages in flight, reconnecting on their own. `acked` holds the ids whose
 * publish saw its PUBACK.
 */
function startDevices(ports: Ports, secrets: string[], padBytes: number) {
  const acked = new Set<string>()
  const sent = new Set<string>()
  const rejected: string[] = []
  let running = true
  const loops = secrets.map(async (secret, index) => {
    const client = mqtt.connect(`mqtt://127.0.0.1:${ports.mqtt}`, {
      username: `d${index}@site`,
      password: secret,
      clientId: `device-${index}`,
      clean: false,
      reconnectPeriod: 100,
      connectTimeout: 2000,
      protocolVersion: 4,
    })
    client.on('error', () => {})
    clients.push(client)
    let seq = 0
    const inFlight = new Set<Promise<void>>()
    // mqtt.js refuses ('Connection closed') messages published while it resends its stored ones,
    // when the connection drops then: they were never sent, and the device sends them again.
    const again: string[] = []
    for (;;) {
      const more = running || again.length > 0
      if (!more && inFlight.size === 0) break
      if (!more || inFlight.size >= 20) {
        await Promise.race(inFlight)
        continue
      }
      const id = again.shift() ?? `${index}-${seq++}`
      sent.add(id)
      const publish = client
        .publishAsync('readings/t', JSON.stringify({ id, pad: 'x'.repeat(padBytes) }), { qos: 1 })
        .then(
          () => {
            acked.add(id)
          },
          (error: Error) => {
            rejected.push(`${id}: ${error.message}`)
            again.push(id)
          },
        )
        .finally(() => inFlight.delete(publish))
      inFlight.add(publish)
      await new Promise((resolve) => setTimeout(resolve, 2))
    }
  })
  return {
    acked,
    sent,
    rejected,
    /** Stops new messages; resolves when every message sent has its PUBACK, or at the deadline. */
    async stop(deadlineMs: number) {
      running = false
      const deadline = Date.now() + deadlineMs
      await Promise.race([Promise.all(loops), new Promise((resolve) => setTimeout(resolve, deadlineMs))])
      while (acked.size < sent.size && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    },
  }
}

/** Every outbox record of the tenant, paged through the API. */
async function outboxIds(gateway: Gateway): Promise<string[]> {
  const ids: string[] = []
  let after = 0
  for (;;) {
    const page = await gateway.api('GET', `/tenants/site/outbox?after=${after}&limit=1000`)
    for (const record of page.records) ids.push(record.record.id)
    if (page.records.length < 1000) return ids
    after = page.records[page.records.length - 1].seq
  }
}

/** Waits until the outbox holds `count` records (the replay and the queues are done). */
async function settled(gateway: Gateway, count: number, timeoutMs: number): Promise<string[]> {
  const deadline = Date.now() + timeoutMs
  let ids = await outboxIds(gateway)
  while (ids.length < count && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200))
    ids = await outboxIds(gateway)
  }
  // Anything still in flight would show up now.
  await new Promise((resolve) => setTimeout(resolve, 500))
  return outboxIds(gateway)
}

/** The function's counter, incremented once per message it ran on. */
async function counted(gateway: Gateway): Promise<number> {
  return (await gateway.api('GET', '/tenants/site/state/value?namespace=%40count&key=count')).value
}

function duplicates(ids: string[]): string[] {
  const seen = new Set<string>()
  return ids.filter((id) => {
    if (seen.has(id)) return true
    seen.add(id)
    return false
  })
}

describe('durability', () => {
  test('SIGKILL at random moments under QoS 1 load: every acknowledged message is in the outbox exactly once', async () => {
    const dataDir = tempDir()
    dirs.push(dataDir)
    let gateway = await startGateway(dataDir, undefined)
    const ports = gateway.ports
    const secrets = await provision(gateway, 4)
    const devices = startDevices(ports, secrets, 64)
    let kills = 0
    const ackedBeforeKill: number[] = []
    for (let round = 0; round < 4; round++) {
      await new Promise((resolve) => setTimeout(resolve, 400 + Math.random() * 800))
      ackedBeforeKill.push(devices.acked.size)
      expect(gateway.child.exitCode).toBe(null) // it did not fall over on its own
      await gateway.kill()
      kills++
      gateway = await startGateway(dataDir, ports)
    }
    await new Promise((resolve) => setTimeout(resolve, 500))
    await devices.stop(30_000)
    expect(kills).toBe(4)
    // The load ran between the kills: acknowledgements kept coming.
    expect(ackedBeforeKill[ackedBeforeKill.length - 1]).toBeGreaterThan(ackedBeforeKill[0] as number)
    expect(devices.acked.size).toBe(devices.sent.size)
    const ids = await settled(gateway, devices.acked.size, 30_000)
    expect(duplicates(ids)).toEqual([])
    const missing = [...devices.acked].filter((id) => !ids.includes(id))
    expect(missing).toEqual([])
    expect(ids.length).toBe(devices.acked.size)
    // The state counter, written in the same transactions, agrees.
    expect(await counted(gateway)).toBe(devices.acked.size)
    await gateway.kill()
  }, 120_000)

  test('a disk that refuses writes: the gateway stops acknowledging, and what it acknowledged is stored exactly once', async () => {
    const dataDir = tempDir()
    dirs.push(dataDir)
    let gateway = await startGateway(dataDir, undefined)
    const ports = gateway.ports
    const secrets = await provision(gateway, 2)
    await gateway.kill()
    // The store may grow by about 2 MiB more: the outbox fills it within a few seconds.
    const config = join(dataDir, 'small-disk.yaml')
    const storeBytes = readFileSync(join(dataDir, 'taureau.db')).length
    writeFileSync(config, `durability:\n  maxStoreBytes: ${storeBytes + 2 * 1024 * 1024}\n`)
    gateway = await startGateway(dataDir, ports, config)
    const devices = startDevices(ports, secrets, 2000)
    // Acknowledgements stop once the store is full.
    let last = -1
    let stopped = false
    const counts: number[] = []
    const deadline = Date.now() + 60_000
    while (!stopped && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 1500))
      stopped = devices.acked.size === last
      last = devices.acked.size
      counts.push(last)
    }
    expect(stopped, `messages acknowledged, every 1.5 s: ${counts.join(', ')}`).toBe(true)
    expect(devices.acked.size).toBeGreaterThan(100)
    expect(devices.sent.size).toBeGreaterThan(devices.acked.size)
    const whileFull = await outboxIds(gateway)
    expect(duplicates(whileFull)).toEqual([])
    // The gateway kept running with its store full, refusing instead of acknowledging.
    expect(gateway.child.exitCode).toBe(null)
    await gateway.kill()
    // With room again, the devices' resends go through, each once.
    gateway = await startGateway(dataDir, ports)
    await devices.stop(30_000)
    expect(devices.acked.size).toBe(devices.sent.size)
    const ids = await settled(gateway, devices.acked.size, 30_000)
    expect(duplicates(ids)).toEqual([])
    expect([...devices.acked].filter((id) => !ids.includes(id))).toEqual([])
    expect(ids.length).toBe(devices.acked.size)
    expect(await counted(gateway)).toBe(devices.acked.size)
    await gateway.kill()
  }, 180_000)
})
