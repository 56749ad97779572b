import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { afterEach, describe, expect, test } from 'vitest'
import { connackCode } from '../helpers/gateway.ts'
import { tempDir } from '../helpers/temp.ts'

const BIN = join(import.meta.dirname, '../../bin/taureau')
const run = promisify(execFile)
const children: ChildProcess[] = []
const dirs: string[] = []

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL')
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

async function startCliGateway(dataDir: string, extra: string[] = []) {
  const child = spawn(
    BIN,
    [
      'gateway',
      '--data',
      dataDir,
      '--host',
      '127.0.0.1',
      '--mqtt-port',
      '0',
      '--ws-port',
      '0',
      '--http-port',
      '0',
      ...extra,
    ],
    { env: { ...process.env, TAUREAU_LOG_LEVEL: 'silent' }, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  children.push(child)
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
  const [line] = (await once(lines, 'line')) as [string]
  const mqttPort = Number(/mqtt:\/\/127\.0\.0\.1:(\d+)/.exec(line)?.[1])
  const httpUrl = /API and UI at (http:\/\/\S+)/.exec(line)?.[1] as string
  return { child, line, mqttPort, httpUrl }
}

const cli = (...args: string[]) =>
  run(BIN, args, { env: { ...process.env, TAUREAU_URL: '', TAUREAU_TOKEN: '' } })

describe('taureau CLI', () => {
  test('gateway prints where it listens, creates the data dir and token, and stops cleanly on SIGTERM', async () => {
    const dataDir = join(tempDir(), 'data')
    dirs.push(dataDir)
    const { child, line, mqttPort, httpUrl } = await startCliGateway(dataDir)
    expect(line).toMatch(
      /^taureau gateway listening on mqtt:\/\/127\.0\.0\.1:\d+ and ws:\/\/127\.0\.0\.1:\d+\/mqtt; API and UI at http/,
    )
    expect(mqttPort).toBeGreaterThan(0)
    expect((await fetch(`${httpUrl}/healthz`)).status).toBe(200)
    expect(statSync(join(dataDir, 'admin-token')).mode & 0o777).toBe(0o600)
    expect(statSync(join(dataDir, 'taureau.db')).isFile()).toBe(true)
    child.kill('SIGTERM')
    const [code] = await once(child, 'exit')
    expect(code).toBe(0)
  })

  test('tenant and device commands manage the gateway through its API, with --json', async () => {
    const dataDir = tempDir()
    dirs.push(dataDir)
    const { mqttPort } = await startCliGateway(dataDir)
    expect((await cli('tenant', 'add', 'acme', '--data', dataDir, '--max-connections', '3')).stdout).toMatch(
      /created tenant acme/,
    )
    const listed = JSON.parse((await cli('tenant', 'list', '--data', dataDir, '--json')).stdout)
    expect(listed.tenants).toMatchObject([{ id: 'acme', quotas: { maxConnections: 3 } }])
    const added = JSON.parse(
      (await cli('device', 'add', 'acme', 'sensor-1', '--data', dataDir, '--json')).stdout,
    )
    expect(added.username).toBe('sensor-1@acme')
    const human = (await cli('device', 'add', 'acme', 'sensor-2', '--data', dataDir)).stdout
    expect(human).toMatch(/username: sensor-2@acme\nsecret: {3}\S{32}/)
    expect((await cli('device', 'list', 'acme', '--data', dataDir)).stdout).toMatch(
      /sensor-1@acme[\s\S]*sensor-2@acme/,
    )
    expect(
      await connackCode(`mqtt://127.0.0.1:${mqttPort}`, {
        username: 'sensor-1@acme',
        password: added.secret,
      }),
    ).toBe(0)
    const rotated = JSON.parse(
      (await cli('device', 'rotate', 'acme', 'sensor-1', '--data', dataDir, '--json')).stdout,
    )
    expect(rotated.secret).not.toBe(added.secret)
    await cli('device', 'remove', 'acme', 'sensor-2', '--data', dataDir)
    expect(
      JSON.parse((await cli('device', 'list', 'acme', '--data', dataDir, '--json')).stdout).devices,
    ).toHaveLength(1)
    const quotas = (await cli('tenant', 'quotas', 'acme', '--data', dataDir, '--max-payload-bytes', '2048'))
      .stdout
    expect(quotas).toMatch(/maxConnections: 3\n/)
    expect(quotas).toMatch(/maxPayloadBytes: 2048\n/)
    expect(quotas).toMatch(/maxMessagesPerSec: 1000 \(default\)/)
    const rulesFile = join(dataDir, 'rules.json')
    writeFileSync(rulesFile, JSON.stringify([{ action: 'publish', filter: 'cmd/#', permission: 'deny' }]))
    expect(
      (await cli('acl', 'set', 'acme', 'sensor-1', '--file', rulesFile, '--data', dataDir)).stdout,
    ).toMatch(/deny +publish +cmd\/#/)
    const rules = JSON.parse(
      (await cli('acl', 'get', 'acme', 'sensor-1', '--data', dataDir, '--json')).stdout,
    )
    expect(rules.rules).toEqual([{ action: 'publish', filter: 'cmd/#', permission: 'deny' }])
    writeFileSync(rulesFile, JSON.stringify([{ action: 'publish', filter: 'a/#/b', permission: 'deny' }]))
    const refused = await cli('acl', 'set', 'acme', '--file', rulesFile, '--data', dataDir).catch(
      (e: unknown) => e,
    )
    expect((refused as { stderr: string }).stderr).toMatch(/'rules\.0\.filter' is invalid/)
    await cli('tenant', 'remove', 'acme', '--data', dataDir)
    expect(JSON.parse((await cli('tenant', 'list', '--data', dataDir, '--json')).stdout).tenants).toEqual([])
  }, 120_000)

  test('an API error is printed as one line and exits 1', async () => {
    const dataDir = tempDir()
    dirs.push(dataDir)
    await startCliGateway(dataDir)
    const failure = await cli('device', 'add', 'ghost', 'd', '--data', dataDir).catch(
      (error: unknown) => error,
    )
    expect(failure).toMatchObject({ code: 1, stderr: "taureau: Cannot find tenant 'ghost'\n" })
  })

  test('a bad config exits non-zero naming the key and the reason', async () => {
    const dataDir = tempDir()
    dirs.push(dataDir)
    const badEnv = await run(BIN, ['gateway', '--data', dataDir], {
      env: { ...process.env, TAUREAU_HTTP_PORT: 'eighty' },
    }).catch((error: unknown) => error)
    expect(badEnv).toMatchObject({ code: 2 })
    expect((badEnv as { stderr: string }).stderr).toMatch(/'http\.port' is invalid: .*\(from env\)/)
    const badFlag = await run(BIN, ['gateway', '--data', dataDir, '--mqtt-port', '99999']).catch(
      (error: unknown) => error,
    )
    expect(badFlag).toMatchObject({ code: 1 })
    expect((badFlag as { stderr: string }).stderr).toMatch(/--mqtt-port.*must be a port number/)
  })
})
