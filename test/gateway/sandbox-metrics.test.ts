// functions.idleEvictMs reaches the sandbox pool, and its evictions are counted in /metrics.
import { expect, test } from 'vitest'
import { collect, connect, metricsText, startGateway, until } from '../helpers/gateway.ts'

test('an idle tenant sandbox is evicted after functions.idleEvictMs, counted, and runs again after', async () => {
  await using gw = await startGateway({ functions: { idleEvictMs: 50 } })
  const secrets = await gw.provision('acme', ['d1'])
  const deployed = await gw.api('POST', '/tenants/acme/functions', {
    name: 'echo',
    source: 'export default { onMessage(msg) { return msg.payload } }',
    triggers: [{ topic: 'in' }],
    output: 'out',
  })
  expect(deployed.status).toBe(201)
  const device = await connect(gw.mqttUrl, { username: 'd1@acme', password: secrets.d1 as string })
  const received = collect(device)
  await device.subscribeAsync('out', { qos: 1 })
  const evictions = async () =>
    Number(/^taureau_sandbox_evictions_total (\d+)$/m.exec(await metricsText(gw))?.[1] ?? Number.NaN)
  await device.publishAsync('in', '1', { qos: 1 })
  await until(() => received.length === 1, 'the first output')
  await until(async () => (await evictions()) >= 1, 'an eviction')
  await device.publishAsync('in', '2', { qos: 1 })
  await until(() => received.length === 2, 'the output after the eviction')
  expect(received.map(([, payload]) => payload)).toEqual(['1', '2'])
  await device.endAsync()
})
