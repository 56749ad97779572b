import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { afterEach, describe, expect, test } from 'vitest'
import { collect, connackCode, connect, until } from '../helpers/gateway.ts'
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
    // Run from the data dir, as a service does: nothing may depend on the working directory.
    {
      cwd: dirname(dataDir),
      env: { ...process.env, TAUREAU_LOG_LEVEL: 'silent' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
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

  test('a function deployed with the CLI turns device messages into output messages', async () => {
    const dataDir = tempDir()
    dirs.push(dataDir)
    const { mqttPort } = await startCliGateway(dataDir)
    const url = `mqtt://127.0.0.1:${mqttPort}`
    await cli('tenant', 'add', 'acme', '--data', dataDir)
    const sensor = JSON.parse(
      (await cli('device', 'add', 'acme', 'sensor', '--data', dataDir, '--json')).stdout,
    )
    const watcher = JSON.parse(
      (await cli('device', 'add', 'acme', 'watcher', '--data', dataDir, '--json')).stdout,
    )
    const file = join(dataDir, 'celsius.js')
    writeFileSync(
      file,
      `export default {
  onMessage(msg, ctx) {
    ctx.log('reading', msg.payload.f)
    return { c: Math.round(((msg.payload.f - 32) * 5) / 9), site: ctx.config.site }
  },
}
`,
    )
    const deployed = await cli(
      'fn',
      'deploy',
      'acme',
      file,
      '--name',
      'celsius',
      '--trigger',
      'sensors/+/temp',
      '--output',
      'out/celsius',
      '--config',
      'site=north',
      '--data',
      dataDir,
    )
    expect(deployed.stdout).toMatch(/deployed celsius version 1/)
    expect(deployed.stdout).toMatch(/triggers: sensors\/\+\/temp/)

    const subscriber = await connect(url, { username: watcher.username, password: watcher.secret })
    await subscriber.subscribeAsync('out/#', { qos: 1 })
    const received = collect(subscriber)
    const device = await connect(url, { username: sensor.username, password: sensor.secret })
    await device.publishAsync('sensors/s1/temp', JSON.stringify({ f: 212 }), { qos: 1 })
    await until(() => received.length >= 1, 'the output')
    expect(received).toEqual([['out/celsius', JSON.stringify({ c: 100, site: 'north' })]])

    expect((await cli('fn', 'list', 'acme', '--data', dataDir)).stdout).toMatch(
      /celsius +1 +running +sensors\/\+\/temp +out\/celsius +1 +0/,
    )
    const invoked = await cli('fn', 'invoke', 'acme', 'celsius', '--payload', '{"f":32}', '--data', dataDir)
    expect(invoked.stdout).toMatch(/output out\/celsius: \{"c":0,"site":"north"\}/)
    expect(invoked.stdout).toMatch(/log: reading 32/)
    writeFileSync(file, 'export default { onMessage(msg) { return { raw: msg.payload.f } } }')
    await cli(
      'fn',
      'deploy',
      'acme',
      file,
      '--name',
      'celsius',
      '--trigger',
      'sensors/+/temp',
      '--output',
      'out/celsius',
      '--data',
      dataDir,
    )
    expect((await cli('fn', 'versions', 'acme', 'celsius', '--data', dataDir)).stdout).toMatch(
      /\n2 +\* [^\n]*\n1 /,
    )
    const shown = (await cli('fn', 'versions', 'acme', 'celsius', '1', '--data', dataDir)).stdout
    expect(shown).toMatch(
      /^version 1, deployed \S+\ntriggers: sensors\/\+\/temp\n[\s\S]*config: {3}\{"site":"north"\}\n\nexport default/,
    )
    const zoneless = await cli(
      'fn',
      'deploy',
      'acme',
      file,
      '--name',
      'z',
      '--trigger',
      'a',
      '--timezone',
      'Europe/Paris',
      '--data',
      dataDir,
    ).catch((error: unknown) => error)
    expect((zoneless as { stderr: string }).stderr).toMatch(/Cannot use --timezone without --cron/)
    expect((await cli('fn', 'rollback', 'acme', 'celsius', '1', '--data', dataDir)).stdout).toMatch(
      /version 1 \(latest 2\)/,
    )
    expect((await cli('fn', 'logs', 'acme', 'celsius', '--data', dataDir)).stdout).toMatch(/v1 reading 212/)
    // --version after the command is the command's: run the kept version 2 on a sample.
    const atTwo = JSON.parse(
      (
        await cli(
          'fn',
          'invoke',
          'acme',
          'celsius',
          '--version',
          '2',
          '--payload',
          '{"f":50}',
          '--json',
          '--data',
          dataDir,
        )
      ).stdout,
    )
    expect(atTwo.invocation).toMatchObject({ ok: true, version: 2, value: { raw: 50 } })
    const failedRun = await cli(
      'fn',
      'invoke',
      'acme',
      'celsius',
      '--payload',
      'null',
      '--json',
      '--data',
      dataDir,
    ).catch((error: unknown) => error)
    expect(failedRun).toMatchObject({ code: 1 })
    expect(JSON.parse((failedRun as { stdout: string }).stdout).invocation).toMatchObject({
      ok: false,
      error: { code: 'handler_threw' },
    })
    await device.publishAsync('sensors/s1/temp', 'null', { qos: 1 })
    // The failed invocation's dead letter is written when it settles; poll for it.
    let letters = ''
    for (let attempt = 0; attempt < 50 && !letters.includes('handler_threw'); attempt++) {
      letters = (await cli('dead-letters', 'list', 'acme', '--data', dataDir)).stdout
    }
    expect(letters).toMatch(/celsius +1 +handler_threw +Function 'celsius' threw TypeError/)
    writeFileSync(file, 'export default { onMessage(msg) { return msg.payload *** 2 } }')
    const refused = await cli(
      'fn',
      'deploy',
      'acme',
      file,
      '--name',
      'celsius',
      '--trigger',
      'a',
      '--data',
      dataDir,
    ).catch((error: unknown) => error)
    expect(refused).toMatchObject({ code: 1 })
    expect((refused as { stderr: string }).stderr).toMatch(
      /does not compile: SyntaxError: .*\(line 1, column \d+\)/,
    )
    // `fn logs --follow` prints lines as they come and ends when the function is removed.
    const follower = spawn(BIN, ['fn', 'logs', 'acme', 'celsius', '--follow', '--data', dataDir], {
      env: { ...process.env, TAUREAU_URL: '', TAUREAU_TOKEN: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    children.push(follower)
    const followed: string[] = []
    createInterface({ input: follower.stdout as NodeJS.ReadableStream }).on('line', (line) =>
      followed.push(line),
    )
    await until(
      () => followed.some((line) => line.includes('deployed version 2')),
      'the recent lines',
      10_000,
    )
    await device.publishAsync('sensors/s1/temp', JSON.stringify({ f: 50 }), { qos: 1 })
    await until(() => followed.some((line) => line.includes('reading 50')), 'a new line', 10_000)
    const followerExit = once(follower, 'exit')
    await cli('fn', 'remove', 'acme', 'celsius', '--data', dataDir)
    expect((await followerExit)[0]).toBe(0)
    expect(
      JSON.parse((await cli('fn', 'list', 'acme', '--data', dataDir, '--json')).stdout).functions,
    ).toEqual([])
    await device.endAsync()
    await subscriber.endAsync()
  }, 120_000)

  test('dead letters are replayed with the CLI on the fixed version', async () => {
    const dataDir = tempDir()
    dirs.push(dataDir)
    const { mqttPort } = await startCliGateway(dataDir)
    await cli('tenant', 'add', 'acme', '--data', dataDir)
    const sensor = JSON.parse(
      (await cli('device', 'add', 'acme', 'sensor', '--data', dataDir, '--json')).stdout,
    )
    const file = join(dataDir, 'half.js')
    const deployHalf = (source: string) => {
      writeFileSync(file, source)
      return cli(
        'fn',
        'deploy',
        'acme',
        file,
        '--name',
        'half',
        '--trigger',
        'in',
        '--output',
        'out',
        '--data',
        dataDir,
      )
    }
    await deployHalf('export default { onMessage(msg) { return msg.payload.v / 2 } }')
    const device = await connect(`mqtt://127.0.0.1:${mqttPort}`, {
      username: sensor.username,
      password: sensor.secret,
    })
    await device.subscribeAsync('out', { qos: 1 })
    const received = collect(device)
    await device.publishAsync('in', 'null', { qos: 1 })
    let letters = ''
    for (let attempt = 0; attempt < 100 && !letters.includes('handler_threw'); attempt++) {
      letters = (await cli('dead-letters', 'list', 'acme', '--data', dataDir)).stdout
    }
    expect(letters).toMatch(/half +1 +handler_threw/)
    await deployHalf('export default { onMessage(msg) { return (msg.payload?.v ?? 0) / 2 } }')
    const replayed = await cli('dead-letters', 'replay', 'acme', '--function', 'half', '--data', dataDir)
    expect(replayed.stdout).toBe('replayed 1 dead letters\n')
    await until(() => received.length === 1, 'the replayed output', 10_000)
    expect(received).toEqual([['out', '0']])
    const again = JSON.parse(
      (await cli('dead-letters', 'replay', 'acme', '--json', '--data', dataDir)).stdout,
    )
    expect(again).toEqual({ replayed: 0, skipped: 0 })
    await device.endAsync()
  }, 60_000)

  test('user and token commands make UI users and API tokens that sign in', async () => {
    const dataDir = tempDir()
    dirs.push(dataDir)
    const { httpUrl } = await startCliGateway(dataDir)
    await cli('tenant', 'add', 'acme', '--data', dataDir)
    const added = (await cli('user', 'add', 'ann', '--tenant', 'acme', '--data', dataDir)).stdout
    expect(added).toMatch(/added user of tenant acme ann\npassword: \S{20}\n/)
    const password = /password: (\S+)/.exec(added)?.[1] as string
    const signIn = await fetch(`${httpUrl}/api/v1/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'ann', password }),
    })
    expect((await signIn.json()).session).toMatchObject({ user: 'ann', tenant: 'acme' })
    expect((await cli('user', 'list', '--data', dataDir)).stdout).toMatch(/ann\s+acme/)

    const made = (await cli('token', 'add', 'grafana', '--tenant', 'acme', '--data', dataDir)).stdout
    const secret = /token \d+: (\S+)/.exec(made)?.[1] as string
    const tenants = await fetch(`${httpUrl}/api/v1/tenants`, {
      headers: { authorization: `Bearer ${secret}` },
    })
    expect((await tenants.json()).tenants.map((t: { id: string }) => t.id)).toEqual(['acme'])
    const listed = JSON.parse((await cli('token', 'list', '--data', dataDir, '--json')).stdout)
    const id = listed.tokens.find((t: { label: string }) => t.label === 'grafana').id
    expect((await cli('token', 'revoke', String(id), '--data', dataDir)).stdout).toMatch(/revoked token/)
    const revoked = await fetch(`${httpUrl}/api/v1/tenants`, {
      headers: { authorization: `Bearer ${secret}` },
    })
    expect(revoked.status).toBe(401)
    expect((await cli('user', 'remove', 'ann', '--data', dataDir)).stdout).toMatch(/removed user ann/)
  })

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
