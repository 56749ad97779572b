import { rmSync } from 'node:fs'
import { expect, test } from 'vitest'
import { collect, connect, startGateway, tempDir, until } from '../helpers/gateway.ts'

test('a restart keeps tenants, devices, retained messages and the queued messages of persistent sessions', async () => {
  const dataDir = tempDir()
  try {
    let secrets: Record<string, string>
    let adminToken: string
    {
      await using gw = await startGateway({}, dataDir)
      gw.keepData()
      adminToken = gw.adminToken
      secrets = await gw.provision('acme', ['sub', 'pub'])
      const sub = await connect(gw.mqttUrl, {
        username: 'sub@acme',
        password: secrets.sub as string,
        clientId: 'keeper',
        clean: false,
      })
      await sub.subscribeAsync('alerts/#', { qos: 1 })
      await sub.endAsync()
      const pub = await connect(gw.mqttUrl, { username: 'pub@acme', password: secrets.pub as string })
      await pub.publishAsync('alerts/fire', 'queued-while-away', { qos: 1 })
      await pub.publishAsync('config/mode', 'eco', { qos: 1, retain: true })
      await pub.endAsync()
    }
    await using gw = await startGateway({}, dataDir)
    expect(gw.adminToken).toBe(adminToken)
    expect((await gw.api('GET', '/tenants')).body.tenants.map((t: { id: string }) => t.id)).toEqual(['acme'])
    expect(
      (await gw.api('GET', '/tenants/acme/devices')).body.devices.map((d: { id: string }) => d.id),
    ).toEqual(['pub', 'sub'])
    const sub = await connect(gw.mqttUrl, {
      username: 'sub@acme',
      password: secrets.sub as string,
      clientId: 'keeper',
      clean: false,
    })
    const got = collect(sub)
    await until(() => got.length === 1, 'the queued message')
    expect(got).toEqual([['alerts/fire', 'queued-while-away']])
    await sub.subscribeAsync('config/+', { qos: 1 })
    await until(() => got.length === 2, 'the retained message')
    expect(got[1]).toEqual(['config/mode', 'eco'])
    await sub.endAsync()
  } finally {
    rmSync(dataDir, { recursive: true, force: true })
  }
})

test('deleting a tenant erases its retained messages and sessions, so a new tenant of that name starts empty', async () => {
  await using gw = await startGateway()
  const first = await gw.provision('acme', ['d'])
  const pub = await connect(gw.mqttUrl, { username: 'd@acme', password: first.d as string })
  await pub.publishAsync('state', 'old', { qos: 1, retain: true })
  await pub.endAsync()
  expect((await gw.api('DELETE', '/tenants/acme')).status).toBe(204)
  const second = await gw.provision('acme', ['d'])
  const sub = await connect(gw.mqttUrl, { username: 'd@acme', password: second.d as string })
  const got = collect(sub)
  await sub.subscribeAsync('#', { qos: 1 })
  await sub.publishAsync('marker', 'm', { qos: 1 })
  await until(() => got.length >= 1, 'the marker')
  expect(got).toEqual([['marker', 'm']])
  await sub.endAsync()
})
