import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { afterEach, expect, test } from 'vitest'
import {
  type CloudStore,
  createReceiver,
  createSqliteCloudStore,
  encodeKey,
  loadIdentity,
  type Receiver,
} from '../../sync/index.ts'
import { connect, metricsText, startGateway, tempDir, until } from '../helpers/gateway.ts'
import { spawnGateway } from '../helpers/gateway-process.ts'
import { startTcpProxy } from '../helpers/tcp-proxy.ts'

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

async function startCloud(
  port = 0,
): Promise<{ receiver: Receiver; store: CloudStore; key: string; dir: string }> {
  const dir = tempDir()
  const identity = await loadIdentity(dir)
  const store = await createSqliteCloudStore({ file: join(dir, 'cloud.db') })
  const receiver = await createReceiver({
    store,
    identity,
    port,
    cellBytes: 512,
    schedule: { mode: 'clock', intervalMs: 20, poisson: false },
  })
  cleanups.push(async () => {
    await receiver.close()
    await store.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return { receiver, store, key: encodeKey(identity.publicKey), dir }
}

const EMITTER =
  'export default { onMessage(msg, ctx) { ctx.emit({ n: msg.payload.n }, { stream: "readings" }) } }'

test('function output reaches the cloud store once, and leaves the outbox once the cloud acknowledged it', async () => {
  const cloud = await startCloud()
  const gatewayDir = tempDir()
  const gatewayKey = encodeKey((await loadIdentity(gatewayDir)).publicKey)
  await cloud.store.addGateway('site-a', gatewayKey)
  await using gw = await startGateway(
    {
      uplink: {
        cloud: `127.0.0.1:${cloud.receiver.port}`,
        cloudKey: cloud.key,
        cellBytes: 512,
        shaper: { mode: 'clock', intervalMs: 5 },
      },
    },
    gatewayDir,
  )
  const secrets = await gw.provision('acme', ['sensor'])
  const deployed = await gw.api('POST', '/tenants/acme/functions', {
    name: 'relay',
    source: EMITTER,
    triggers: [{ topic: 'readings/#' }],
  })
  expect(deployed.status).toBe(201)
  const device = await connect(gw.mqttUrl, { username: 'sensor@acme', password: secrets.sensor as string })
  for (let n = 0; n < 50; n++) await device.publishAsync('readings/t1', JSON.stringify({ n }), { qos: 1 })
  await device.endAsync()
  await until(() => gw.uplink?.status().delivered === 50, 'the cloud acknowledgements', 20_000)
  const records = await cloud.store.records({ gateway: 'site-a' })
  expect(records.map((r) => JSON.parse(r.body).n).sort((a, b) => a - b)).toEqual(
    Array.from({ length: 50 }, (_, n) => n),
  )
  expect(new Set(records.map((r) => r.seq)).size).toBe(50)
  expect(records[0]).toMatchObject({
    gateway: 'site-a',
    tenant: 'acme',
    function: 'relay',
    stream: 'readings',
  })
  expect(gw.outbox.usage('acme').records).toBe(0)
  const status = gw.uplink?.status()
  expect(status).toMatchObject({ state: 'connected', sessions: 1, inFlight: 0 })
  // The link carries cover cells when no record waits (the worker reports its counters each second).
  await until(() => (gw.uplink?.status().wire.cellsDummy ?? 0) > 0, 'cover cells', 5000)
})

test('every acknowledged device message reaches the cloud store once, through a cut link, a receiver restart and gateway SIGKILLs', async () => {
  // The receiver keeps its store file across its restart, on a new port behind the same proxy.
  const cloudDir = tempDir()
  const cloudIdentity = await loadIdentity(cloudDir)
  const storeFile = join(cloudDir, 'cloud.db')
  let store = await createSqliteCloudStore({ file: storeFile })
  const startReceiver = () =>
    createReceiver({
      store,
      identity: cloudIdentity,
      port: 0,
      cellBytes: 512,
      schedule: { mode: 'clock', intervalMs: 20, poisson: false },
    })
  let receiver = await startReceiver()
  const proxy = await startTcpProxy(receiver.port)
  cleanups.push(async () => {
    await proxy.close()
    await receiver.close()
    await store.close()
    rmSync(cloudDir, { recursive: true, force: true })
  })
  const gatewayDir = tempDir()
  cleanups.push(() => rmSync(gatewayDir, { recursive: true, force: true }))
  await store.addGateway('site-a', encodeKey((await loadIdentity(gatewayDir)).publicKey))
  const configFile = join(gatewayDir, 'uplink.yaml')
  writeFileSync(
    configFile,
    [
      'uplink:',
      `  cloud: 127.0.0.1:${proxy.port}`,
      `  cloudKey: ${encodeKey(cloudIdentity.publicKey)}`,
      '  cellBytes: 512',
      '  shaper: { mode: clock, intervalMs: 2 }',
      '  backoffMinMs: 50',
      '  backoffMaxMs: 300',
      '',
    ].join('\n'),
  )
  let gateway = await spawnGateway({ dataDir: gatewayDir, args: ['--config', configFile] })
  const ports = { mqttPort: gateway.mqttPort, httpPort: gateway.httpPort }
  cleanups.push(() => gateway.kill())
  await gateway.api('POST', '/tenants', {
    id: 'acme',
    quotas: { maxMessagesPerSec: 10_000, burstMessages: 10_000 },
  })
  const { secret } = await gateway.api('POST', '/tenants/acme/devices', { id: 'sensor' })
  await gateway.api('POST', '/tenants/acme/functions', {
    name: 'relay',
    source: EMITTER,
    triggers: [{ topic: 'readings/#' }],
  })

  // One device, persistent session, QoS 1, reconnecting on its own; `acked` holds what it saw acknowledged.
  const device = mqtt.connect(`mqtt://127.0.0.1:${ports.mqttPort}`, {
    username: 'sensor@acme',
    password: secret,
    clientId: 'sensor-1',
    clean: false,
    reconnectPeriod: 100,
    connectTimeout: 2000,
    protocolVersion: 4,
  })
  device.on('error', () => {})
  cleanups.push(() => {
    device.end(true)
  })
  const acked = new Set<number>()
  let running = true
  const publishing = (async () => {
    let n = 0
    const inFlight = new Set<Promise<void>>()
    while (running) {
      if (inFlight.size >= 10) {
        await Promise.race(inFlight)
        continue
      }
      const id = n++
      const sent = device
        .publishAsync('readings/t1', JSON.stringify({ n: id }), { qos: 1 })
        .then(
          () => {
            acked.add(id)
          },
          () => {},
        )
        .finally(() => inFlight.delete(sent))
      inFlight.add(sent)
      await new Promise((resolve) => setTimeout(resolve, 2))
    }
    await Promise.allSettled(inFlight)
  })()
  const delivered = async () => (await store.count({ gateway: 'site-a' })) as number
  const progress = async (what: string) => {
    const before = await delivered()
    await until(async () => (await delivered()) > before + 20, what, 20_000)
  }

  // Gateway SIGKILLs first: a restarted gateway sends its whole outbox again, which would hide
  // a link that forgets what it had in flight; the cut and the receiver restart come after.
  await progress('records before the first SIGKILL')
  for (let kill = 0; kill < 2; kill++) {
    await new Promise((resolve) => setTimeout(resolve, 200 + Math.random() * 400))
    await gateway.kill()
    gateway = await spawnGateway({ dataDir: gatewayDir, ...ports, args: ['--config', configFile] })
    await progress(`records after SIGKILL ${kill + 1}`)
  }
  proxy.cut()
  await new Promise((resolve) => setTimeout(resolve, 700))
  proxy.restore()
  await progress('records after the cut')
  await receiver.close()
  await store.close()
  store = await createSqliteCloudStore({ file: storeFile })
  receiver = await startReceiver()
  proxy.retarget(receiver.port)
  await progress('records after the receiver restart')
  running = false
  await publishing
  expect(acked.size).toBeGreaterThan(100)
  await until(
    async () => (await gateway.api('GET', '/uplink')).inFlight === 0 && (await delivered()) >= acked.size,
    'the last acknowledgements',
    30_000,
  )
  const records = await store.records({ gateway: 'site-a', limit: 10_000 })
  const counts = new Map<number, number>()
  for (const record of records) {
    const n = JSON.parse(record.body).n as number
    counts.set(n, (counts.get(n) ?? 0) + 1)
  }
  expect([...counts].filter(([, count]) => count > 1)).toEqual([])
  expect([...acked].filter((n) => !counts.has(n))).toEqual([])
  expect((await gateway.api('GET', '/tenants/acme/outbox')).usage.records).toBe(0)
}, 120_000)

test('a record the cloud would refuse is removed and counted instead of sent, and the records after it arrive', async () => {
  const cloud = await startCloud()
  const gatewayDir = tempDir()
  await cloud.store.addGateway('site-a', encodeKey((await loadIdentity(gatewayDir)).publicKey))
  await using gw = await startGateway(
    {
      uplink: {
        cloud: `127.0.0.1:${cloud.receiver.port}`,
        cloudKey: cloud.key,
        cellBytes: 512,
        shaper: { mode: 'clock', intervalMs: 5 },
      },
    },
    gatewayDir,
  )
  const secrets = await gw.provision('acme', ['sensor'])
  await gw.api('POST', '/tenants/acme/functions', {
    name: 'streams',
    source:
      'export default { onMessage(msg, ctx) { ctx.emit({ n: msg.payload.n }, { stream: msg.payload.s }) } }',
    triggers: [{ topic: 'readings/#' }],
  })
  const device = await connect(gw.mqttUrl, { username: 'sensor@acme', password: secrets.sensor as string })
  const streams = ['ok', 'tab\there', 'x'.repeat(300), 'fine']
  for (const [n, s] of streams.entries())
    await device.publishAsync('readings/t1', JSON.stringify({ n, s }), { qos: 1 })
  await device.endAsync()
  await until(() => gw.uplink?.status().delivered === 2, 'the good records', 20_000)
  await until(() => gw.outbox.usage('acme').records === 0, 'an empty outbox', 5000)
  const records = await cloud.store.records({ gateway: 'site-a' })
  expect(records.map((r) => r.stream)).toEqual(['ok', 'fine'])
  expect(await metricsText(gw)).toMatch(/^taureau_uplink_unreadable_records_total 2$/m)
})
