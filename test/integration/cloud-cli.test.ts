import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { afterEach, expect, test } from 'vitest'
import { connect } from '../helpers/gateway.ts'
import { BIN, type GatewayProcess, spawnGateway } from '../helpers/gateway-process.ts'
import { tempDir } from '../helpers/temp.ts'

const run = promisify(execFile)
const children: ChildProcess[] = []
const gateways: GatewayProcess[] = []
const dirs: string[] = []

afterEach(async () => {
  for (const gateway of gateways.splice(0)) await gateway.kill()
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL')
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

const taureau = async (...args: string[]) => (await run(BIN, args)).stdout.trim()

/** `taureau cloud` as a user starts it; resolves with its port once it listens. */
async function startCloud(dataDir: string): Promise<number> {
  const child = spawn(
    BIN,
    [
      'cloud',
      '--data',
      dataDir,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--cell-bytes',
      '512',
      '--ack-interval-ms',
      '20',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  children.push(child)
  const [line] = (await once(createInterface({ input: child.stdout as NodeJS.ReadableStream }), 'line')) as [
    string,
  ]
  const port = /listening on 127\.0\.0\.1:(\d+)/.exec(line)?.[1]
  if (port === undefined) throw new Error(`unexpected first line: ${line}`)
  return Number(port)
}

test('keys, cloud gateway add, cloud and --cloud/--cloud-key deliver a function output that cloud records prints', async () => {
  const cloudDir = tempDir()
  const gatewayDir = tempDir()
  dirs.push(cloudDir, gatewayDir)
  const cloudKey = await taureau('keys', '--data', cloudDir)
  expect(cloudKey).toMatch(/^[A-Za-z0-9+/]{43}=$/)
  // The identity is made once and kept, readable by its owner only.
  expect(await taureau('keys', '--data', cloudDir)).toBe(cloudKey)
  expect(statSync(join(cloudDir, 'identity.key')).mode & 0o777).toBe(0o600)
  const gatewayKey = await taureau('keys', '--data', gatewayDir)
  expect(gatewayKey).not.toBe(cloudKey)

  expect(await taureau('cloud', 'gateway', 'add', 'site-a', gatewayKey, '--data', cloudDir)).toBe(
    `added gateway site-a (${gatewayKey})`,
  )
  // A second registration of the key, and a key that is not one, are refused with a clear message.
  const refused = await run(BIN, ['cloud', 'gateway', 'add', 'site-b', gatewayKey, '--data', cloudDir]).catch(
    (error: { code: number; stderr: string }) => error,
  )
  expect(refused).toMatchObject({ code: 1, stderr: expect.stringMatching(/^taureau: Cannot .*site-b/) })
  const bad = await run(BIN, ['cloud', 'gateway', 'add', 'site-c', 'not-a-key', '--data', cloudDir]).catch(
    (error: { code: number; stderr: string }) => error,
  )
  expect(bad).toMatchObject({
    code: 1,
    stderr: expect.stringMatching(/^taureau: Cannot use the public key .* base64/),
  })
  expect(await taureau('cloud', 'gateway', 'list', '--data', cloudDir)).toMatch(
    /^site-a\t.*\tlast handshake never$/,
  )

  const cloudPort = await startCloud(cloudDir)
  const config = join(gatewayDir, 'uplink.yaml')
  writeFileSync(config, 'uplink:\n  cellBytes: 512\n  shaper: { mode: clock, intervalMs: 5 }\n')
  const gateway = await spawnGateway({
    dataDir: gatewayDir,
    args: ['--config', config, '--cloud', `127.0.0.1:${cloudPort}`, '--cloud-key', cloudKey],
  })
  gateways.push(gateway)
  await gateway.api('POST', '/tenants', { id: 'acme' })
  const { secret } = await gateway.api('POST', '/tenants/acme/devices', { id: 'sensor' })
  await gateway.api('POST', '/tenants/acme/functions', {
    name: 'celsius',
    source:
      'export default { onMessage(msg, ctx) { ctx.emit({ c: (msg.payload.f - 32) / 1.8 }, { stream: "temps" }) } }',
    triggers: [{ topic: 'temp/#' }],
  })
  const device = await connect(`mqtt://127.0.0.1:${gateway.mqttPort}`, {
    username: 'sensor@acme',
    password: secret,
  })
  await device.publishAsync('temp/room1', JSON.stringify({ f: 212 }), { qos: 1 })
  await device.endAsync()

  const deadline = Date.now() + 15_000
  let lines: string[] = []
  while (lines.length === 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200))
    const out = await taureau('cloud', 'records', '--data', cloudDir, '--tenant', 'acme', '--json')
    lines = out === '' ? [] : out.split('\n')
  }
  expect(lines.map((line) => JSON.parse(line))).toEqual([
    expect.objectContaining({
      gateway: 'site-a',
      tenant: 'acme',
      function: 'celsius',
      stream: 'temps',
      body: { c: 100 },
    }),
  ])
  expect(await taureau('cloud', 'records', '--data', cloudDir, '--stream', 'other')).toBe('')
  const uplink = await gateway.api('GET', '/uplink')
  expect(uplink).toMatchObject({ state: 'connected', cellBytes: 512, schedule: { mode: 'clock' } })
  expect(await taureau('cloud', 'gateway', 'list', '--data', cloudDir)).not.toMatch(/last handshake never/)
}, 60_000)

test('a gateway given a cloud without its key, or a key that is not one, refuses to start with a clear error', async () => {
  const gatewayDir = tempDir()
  dirs.push(gatewayDir)
  for (const [args, message] of [
    [['--cloud', '127.0.0.1:7070'], /uplink\.cloudKey \(--cloud-key KEY\) is not set/],
    [
      ['--cloud', '127.0.0.1:7070', '--cloud-key', 'abc'],
      /Cannot use uplink\.cloudKey as it decodes to 2 bytes, not 32/,
    ],
    [['--cloud', 'nowhere', '--cloud-key', 'abc'], /HOST:PORT/],
  ] as const) {
    const result = await run(BIN, [
      'gateway',
      '--data',
      gatewayDir,
      '--http-port',
      '0',
      '--mqtt-port',
      '0',
      '--ws-port',
      '0',
      ...args,
    ]).catch((error: { code: number; stderr: string }) => error)
    expect(result).toMatchObject({ code: 2, stderr: expect.stringMatching(message) })
  }
})
