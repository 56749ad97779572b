import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { expect, test } from 'vitest'
import { startGateway } from '../helpers/gateway.ts'

// Debian's mosquitto-clients as devices: an independent MQTT implementation shows the isolation.
const run = promisify(execFile)

test('mosquitto_pub and mosquitto_sub as devices of two tenants see only their own tenant', async () => {
  await using gw = await startGateway()
  const port = String(gw.addresses.mqttPort)
  const alpha = await gw.provision('alpha', ['pub', 'sub'])
  const beta = await gw.provision('beta', ['pub', 'sub'])
  const pub = (tenant: string, secret: string, payload: string, retain: boolean) =>
    run('mosquitto_pub', [
      ...['-h', '127.0.0.1', '-p', port, '-u', `pub@${tenant}`, '-P', secret, '-i', 'pub', '-q', '1'],
      ...['-t', 'sensors/temp', '-m', payload, ...(retain ? ['-r'] : [])],
    ])
  await pub('alpha', alpha.pub as string, 'alpha-retained', true)
  await pub('beta', beta.pub as string, 'beta-retained', true)

  const sub = spawn('mosquitto_sub', [
    ...['-h', '127.0.0.1', '-p', port, '-u', 'sub@alpha', '-P', alpha.sub as string, '-i', 'sub'],
    ...['-t', '#', '-v', '-q', '1', '-C', '2', '-W', '20'],
  ])
  const exited = once(sub, 'exit')
  const lines: string[] = []
  const reader = createInterface({ input: sub.stdout })
  reader.on('line', (line) => lines.push(line))
  // The retained message proves the subscription is in place before the live publishes.
  await once(reader, 'line')
  await pub('beta', beta.pub as string, 'beta-live', false)
  await pub('alpha', alpha.pub as string, 'alpha-live', false)
  const [code] = await exited
  expect(code).toBe(0)
  expect(lines).toEqual(['sensors/temp alpha-retained', 'sensors/temp alpha-live'])

  const wrong = await run('mosquitto_sub', [
    ...[
      '-h',
      '127.0.0.1',
      '-p',
      port,
      '-u',
      'sub@alpha',
      '-P',
      beta.sub as string,
      '-t',
      '#',
      '-C',
      '1',
      '-W',
      '5',
    ],
  ]).catch((error: unknown) => error)
  expect((wrong as { stderr: string }).stderr).toMatch(/not authori[sz]ed/i)
})
