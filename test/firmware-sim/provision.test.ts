import { describe, expect, test } from 'vitest'
import { SimError } from '../../firmware-sim/errors.ts'
import { deviceIds, provisionDevices } from '../../firmware-sim/provision.ts'
import { connackCode, startGateway } from '../helpers/gateway.ts'

describe('provisionDevices()', () => {
  test('creates the tenant when asked and new devices whose credentials sign in', async () => {
    await using gw = await startGateway()
    const devices = await provisionDevices({
      apiUrl: `${gw.addresses.httpUrl}/`,
      token: gw.adminToken,
      tenant: 'acme',
      ids: deviceIds(6),
      createTenant: true,
    })
    expect(devices.map((device) => device.id)).toEqual(deviceIds(6))
    expect(devices[0]).toMatchObject({ id: 'sim-0001', username: 'sim-0001@acme' })
    expect(new Set(devices.map((device) => device.password)).size).toBe(6)
    const listed = await gw.api('GET', '/tenants/acme/devices')
    expect(listed.body.devices.map((device: { id: string }) => device.id)).toEqual(deviceIds(6))
    for (const device of devices) {
      expect(await connackCode(gw.mqttUrl, { username: device.username, password: device.password })).toBe(0)
    }
    // The tenant exists now: asking again to create it is fine.
    await expect(
      provisionDevices({
        apiUrl: gw.addresses.httpUrl,
        token: gw.adminToken,
        tenant: 'acme',
        ids: [],
        createTenant: true,
      }),
    ).resolves.toEqual([])
  })

  test('gives existing devices a new secret, and their old one stops working', async () => {
    await using gw = await startGateway()
    const options = { apiUrl: gw.addresses.httpUrl, token: gw.adminToken, tenant: 'acme', createTenant: true }
    const [before] = await provisionDevices({ ...options, ids: ['pump-1'] })
    const after = await provisionDevices({ ...options, ids: ['pump-1', 'pump-2'] })
    expect(after.map((device) => device.id)).toEqual(['pump-1', 'pump-2'])
    expect(after[0]!.password).not.toBe(before!.password)
    expect(await connackCode(gw.mqttUrl, { username: 'pump-1@acme', password: before!.password })).toBe(5)
    expect(await connackCode(gw.mqttUrl, { username: 'pump-1@acme', password: after[0]!.password })).toBe(0)
  })

  test('a missing tenant (without createTenant) or a bad token fails naming the device and the reason', async () => {
    await using gw = await startGateway()
    const missing = provisionDevices({
      apiUrl: gw.addresses.httpUrl,
      token: gw.adminToken,
      tenant: 'ghost',
      ids: ['d'],
    })
    await expect(missing).rejects.toBeInstanceOf(SimError)
    await expect(missing).rejects.toMatchObject({
      code: 'provision_failed',
      message: "Cannot provision device 'd' in tenant 'ghost': Cannot find tenant 'ghost'",
      cause: expect.objectContaining({ status: 404 }),
    })
    const unauthorized = provisionDevices({
      apiUrl: gw.addresses.httpUrl,
      token: 'tau_admin_wrong',
      tenant: 'acme',
      ids: ['d'],
      createTenant: true,
    })
    await expect(unauthorized).rejects.toMatchObject({
      code: 'provision_failed',
      message: expect.stringMatching(/^Cannot create tenant 'acme': /),
      cause: expect.objectContaining({ status: 401 }),
    })
    // Nothing was made on the way.
    expect((await gw.api('GET', '/tenants')).body.tenants).toEqual([])
  })
})
