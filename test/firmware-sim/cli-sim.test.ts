import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { afterEach, describe, expect, test } from 'vitest'
import { deviceIds, provisionDevices } from '../../firmware-sim/provision.ts'
import { startGateway, tempDir } from '../helpers/gateway.ts'

const BIN = join(import.meta.dirname, '../../bin/taureau')
const run = promisify(execFile)
// No API target from the environment, and no CI variable: a pipe alone makes the output plain.
const ENV = { ...process.env, TAUREAU_URL: '', TAUREAU_TOKEN: '', CI: '' }
const children: ChildProcess[] = []
const dirs: string[] = []

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL')
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

const PROGRESS_LINE =
  /^sim \d+s: \d+\/3 connected, sent \d+, acked \d+ \(\d+\.\d\/s\), queued \d+, dropped \d+, reconnects \d+, connect failures \d+$/

describe('taureau sim', () => {
  test('--provision --save makes the devices, runs for --duration and prints the summary as JSON', async () => {
    await using gw = await startGateway()
    const dir = tempDir()
    dirs.push(dir)
    const file = join(dir, 'fleet.json')
    const { stdout, stderr } = await run(
      BIN,
      [
        'sim',
        ...['--gateway', gw.mqttUrl, '--tenant', 'acme', '--devices', '3', '--rate', '5'],
        ...['--provision', '--create-tenant', '--url', gw.addresses.httpUrl, '--token', gw.adminToken],
        ...['--save', file, '--kinds', 'temperature,power', '--duration', '2s', '--json'],
      ],
      { env: ENV },
    )
    const summary = JSON.parse(stdout)
    expect(summary).toMatchObject({ devices: 3, connected: 0, dropped: 0, queued: 0, connectFailures: 0 })
    // 3 devices × 5/s × 2 s, less the ramp and the random phases.
    expect(summary.acked).toBeGreaterThan(15)
    expect(summary.acked).toBe(summary.sent)
    expect(summary.perKind).toEqual({
      temperature: { devices: 2, sent: expect.any(Number), acked: expect.any(Number) },
      power: { devices: 1, sent: expect.any(Number), acked: expect.any(Number) },
    })
    expect(summary.ackLatencyMs).toEqual({
      p50: expect.any(Number),
      p99: expect.any(Number),
      max: expect.any(Number),
    })
    expect(stderr).toMatch(/^sim: provisioned 3 devices in tenant acme in \d+\.\d s$/m)
    expect(statSync(file).mode & 0o777).toBe(0o600)
    const saved = JSON.parse(readFileSync(file, 'utf8'))
    expect(saved.map((device: { username: string }) => device.username)).toEqual(
      deviceIds(3).map((id) => `${id}@acme`),
    )
  })

  test('in a pipe it prints a plain line per --interval, and SIGINT stops it cleanly with a summary', async () => {
    await using gw = await startGateway()
    const dir = tempDir()
    dirs.push(dir)
    const file = join(dir, 'fleet.json')
    const devices = await provisionDevices({
      apiUrl: gw.addresses.httpUrl,
      token: gw.adminToken,
      tenant: 'acme',
      ids: deviceIds(3),
      createTenant: true,
    })
    writeFileSync(file, JSON.stringify(devices))
    const child = spawn(
      BIN,
      [
        'sim',
        '--gateway',
        gw.mqttUrl,
        '--credentials',
        file,
        '--tenant',
        'acme',
        '--rate',
        '10',
        '--interval',
        '300ms',
      ],
      { env: ENV, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    children.push(child)
    let stdout = ''
    child.stdout?.on('data', (chunk) => {
      stdout += chunk
    })
    const lines: string[] = []
    const stderr = createInterface({ input: child.stderr as NodeJS.ReadableStream })
    for await (const line of stderr) {
      lines.push(line)
      if (lines.length === 3) break
    }
    expect(lines).toHaveLength(3)
    for (const line of lines) expect(line).toMatch(PROGRESS_LINE)
    // Plain lines: no carriage returns or terminal escapes.
    expect(lines.join('')).not.toContain('\r')
    expect(lines.join('')).not.toContain('\u001b')
    child.kill('SIGINT')
    const [code] = await once(child, 'exit')
    expect(code).toBe(0)
    expect(stdout).toMatch(
      /^sim: 3 devices for \d+\.\d s: sent (\d+), acked \1, queued 0, dropped 0, reconnects 0, connect failures 0, anomalies \d+\n/,
    )
    expect(stdout).toMatch(/^ack latency: p50 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms$/m)
  })

  test('bad or missing flags exit 1 with a message that says what to fix', async () => {
    const dir = tempDir()
    dirs.push(dir)
    const badFile = join(dir, 'bad.json')
    writeFileSync(badFile, JSON.stringify([{ id: 'a', username: 'a@t' }]))
    const base = ['sim', '--gateway', 'mqtt://127.0.0.1:1', '--rate', '1']
    const cases: Array<[string[], RegExp]> = [
      [
        ['sim', '--gateway', 'mqtt://127.0.0.1:1', '--rate', 'fast'],
        /option '--rate <hz>' argument 'fast' is invalid/,
      ],
      [base, /pass --credentials FILE \(as written by --provision --save FILE\) or --provision/],
      [[...base, '--provision', '--kinds', 'temperature,pressure'], /'pressure' is not a sensor kind/],
      [[...base, '--credentials', badFile, '--save', 'x.json'], /--save only applies with --provision/],
      [[...base, '--credentials', badFile], /entry 0\.password is invalid/],
    ]
    const results = await Promise.all(
      cases.map(([args]) => run(BIN, args, { env: ENV }).catch((error: unknown) => error)),
    )
    results.forEach((result, i) => {
      const [args, message] = cases[i]!
      expect(result, args.join(' ')).toMatchObject({ code: 1 })
      expect((result as { stderr: string }).stderr, args.join(' ')).toMatch(message)
    })
  })
})
