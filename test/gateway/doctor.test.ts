import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { createServer as createHttpServer } from 'node:http'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { afterEach, describe, expect, test } from 'vitest'
import { type ConfigLayer, loadConfig } from '../../gateway/config.ts'
import {
  CLOCK_LOWER_BOUND_MS,
  checkAddon,
  checkAllocator,
  checkClock,
  checkConfig,
  checkDataDir,
  checkDiskSpace,
  checkPorts,
  checkRuntime,
  judgeDiskSpace,
  runDoctor,
} from '../../gateway/doctor.ts'
import { startGateway } from '../helpers/gateway.ts'
import { BIN } from '../helpers/gateway-process.ts'
import { tempDir } from '../helpers/temp.ts'

const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

function dir(): string {
  const path = tempDir('taureau-doctor-')
  dirs.push(path)
  return path
}

/** A TCP server on 127.0.0.1 holding a port, closed on dispose. */
async function occupyPort(): Promise<{ port: number } & AsyncDisposable> {
  const server: Server = createServer((socket) => socket.destroy())
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    port: (server.address() as { port: number }).port,
    [Symbol.asyncDispose]: () => new Promise<void>((done) => server.close(() => done())),
  }
}

/** A port nothing listens on (just released by the system). */
async function freePort(): Promise<number> {
  await using held = await occupyPort()
  return held.port
}

const configOf = (layer: ConfigLayer) => loadConfig({ env: {}, flags: layer })
const localPorts = (mqtt: number, wsPort: number, http: number) =>
  configOf({ host: '127.0.0.1', mqtt: { port: mqtt, wsPort }, http: { port: http } })

/** The environment of CLI children, without the TAUREAU_* variables of the one running the tests. */
const CLI_ENV = Object.fromEntries(
  Object.entries(process.env).filter(([name]) => !name.startsWith('TAUREAU_')),
)

/** Runs bin/taureau to its exit. */
async function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(BIN, args, { env: CLI_ENV, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString()
  })
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  const [code] = (await once(child, 'close')) as [number | null]
  return { code, stdout, stderr }
}

describe('checkAllocator()', () => {
  const glibcMaps = '7f0000000000-7f0000020000 r-xp 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6\n'
  const jemallocMaps = `${glibcMaps}7f1000000000-7f1000010000 r-xp 00000000 08:01 43 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n`

  test('passes a process with jemalloc loaded, with its settings', () => {
    expect(
      checkAllocator({ maps: jemallocMaps, platform: 'linux', env: { MALLOC_CONF: 'narenas:1' } }),
    ).toEqual({
      name: 'allocator',
      status: 'ok',
      finding: 'jemalloc, MALLOC_CONF=narenas:1',
    })
    expect(checkAllocator({ maps: jemallocMaps, platform: 'linux', env: {} }).finding).toBe(
      'jemalloc, its default settings',
    )
  })

  test("warns on glibc's malloc and names the package and the library for the architecture", () => {
    const result = checkAllocator({ maps: glibcMaps, platform: 'linux', arch: 'arm64' })
    expect(result.status).toBe('warn')
    expect(result.fix).toContain('libjemalloc2')
    expect(result.fix).toContain('/usr/lib/aarch64-linux-gnu/libjemalloc.so.2')
  })

  test('does not judge other systems or architectures Debian has no jemalloc path for here', () => {
    expect(checkAllocator({ maps: glibcMaps, platform: 'darwin' }).status).toBe('ok')
    expect(checkAllocator({ maps: glibcMaps, platform: 'linux', arch: 'riscv64' }).status).toBe('ok')
  })

  test('reads this process by default', () => {
    expect(['ok', 'warn']).toContain(checkAllocator().status)
    expect(checkAllocator().finding).toMatch(/jemalloc|glibc/)
  })
})

describe('checkRuntime()', () => {
  test('passes the running Node.js and names its path and arch', () => {
    const result = checkRuntime()
    expect(result).toEqual({
      name: 'runtime',
      status: 'ok',
      finding: `Node.js v${process.versions.node} at ${process.execPath} (${process.platform} ${process.arch})`,
    })
  })

  test('fails a Node.js older than 20 and says what to install', () => {
    const result = checkRuntime({ version: '18.19.1', execPath: '/usr/bin/node', arch: 'arm64' })
    expect(result.status).toBe('fail')
    expect(result.finding).toBe(
      `Node.js v18.19.1 at /usr/bin/node (${process.platform} arm64) is older than v20`,
    )
    expect(result.fix).toContain('install Node.js 20 or later')
  })
})

describe('checkAddon()', () => {
  test('opens an in-memory database with better-sqlite3', () => {
    const result = checkAddon()
    expect(result.status).toBe('ok')
    expect(result.finding).toMatch(/^better-sqlite3 opens an in-memory database \(SQLite \d+\.\d+\.\d+\)$/)
  })

  test('fails with the load error, and the fix fits a checkout or the package', () => {
    const moduleId = 'taureau-no-such-addon'
    const inCheckout = checkAddon({ moduleId, checkout: true })
    expect(inCheckout.status).toBe('fail')
    expect(inCheckout.finding).toMatch(
      /^taureau-no-such-addon does not load: Cannot find module 'taureau-no-such-addon'/,
    )
    expect(inCheckout.fix).toContain(`npm rebuild ${moduleId}`)
    expect(inCheckout.fix).toContain(`NODE_MODULE_VERSION ${process.versions.modules}`)
    const inPackage = checkAddon({ moduleId, checkout: false })
    expect(inPackage.fix).toMatch(/^reinstall the package \(`apt-get install --reinstall taureau`\)/)
  })
})

describe('checkConfig()', () => {
  test('fails a config file that is not YAML with the loader’s message', () => {
    const file = join(dir(), 'taureau.yaml')
    writeFileSync(file, 'mqtt:\n  port: [1\n')
    let loaderMessage = ''
    try {
      loadConfig({ file, env: {} })
    } catch (error) {
      loaderMessage = (error as Error).message.replace(/\s+/g, ' ').trim()
    }
    const { result, config } = checkConfig({ file, env: {} })
    expect(config).toBeUndefined()
    expect(result.status).toBe('fail')
    expect(loaderMessage).toMatch(/^Cannot load configuration as the file .* is not valid YAML/)
    expect(result.finding).toBe(loaderMessage)
    expect(result.fix).toContain(file)
  })

  test('fails an unknown key, naming it, and passes a valid file', () => {
    const file = join(dir(), 'taureau.yaml')
    writeFileSync(file, 'mqtt:\n  prot: 1884\n')
    expect(checkConfig({ file, env: {} }).result.finding).toBe(
      `Cannot load configuration as 'mqtt' is invalid: Unrecognized key: "prot" (from file ${file})`,
    )
    writeFileSync(file, 'mqtt:\n  port: 1884\n')
    const { result, config } = checkConfig({ file, env: {} })
    expect(result).toEqual({ name: 'config', status: 'ok', finding: `loaded from ${file}` })
    expect(config?.mqtt.port).toBe(1884)
  })
})

describe('checkDataDir()', () => {
  test('fails a world- or group-writable data dir and says to chmod it', () => {
    const dataDir = dir()
    chmodSync(dataDir, 0o777)
    const result = checkDataDir(dataDir)
    expect(result.status).toBe('fail')
    expect(result.finding).toBe(`${dataDir} is world writable (mode 0777)`)
    expect(result.fix).toBe(`\`chmod 700 ${dataDir}\``)
    chmodSync(dataDir, 0o770)
    expect(checkDataDir(dataDir).finding).toBe(`${dataDir} is group writable (mode 0770)`)
  })

  test('fails an admin token readable by others', () => {
    const dataDir = dir()
    writeFileSync(join(dataDir, 'admin-token'), 'tau_admin_x\n', { mode: 0o644 })
    chmodSync(join(dataDir, 'admin-token'), 0o644)
    const result = checkDataDir(dataDir)
    expect(result.status).toBe('fail')
    expect(result.finding).toBe(`${dataDir} admin-token has mode 0644, not 0600`)
    expect(result.fix).toBe(`\`chmod 600 ${join(dataDir, 'admin-token')}\``)
  })

  test('passes a private data dir with a private token and leaves no probe file behind', () => {
    const dataDir = dir()
    writeFileSync(join(dataDir, 'admin-token'), 'tau_admin_x\n', { mode: 0o600 })
    const result = checkDataDir(dataDir)
    expect(result.status).toBe('ok')
    expect(result.finding).toMatch(
      new RegExp(`^${dataDir} owned by .+, mode 0700, writable, admin-token 0600$`),
    )
    expect(readdirSync(dataDir)).toEqual(['admin-token'])
  })

  test('passes a missing data dir whose parent the user can write', () => {
    const dataDir = join(dir(), 'var', 'taureau')
    const result = checkDataDir(dataDir)
    expect(result).toEqual({
      name: 'data dir',
      status: 'ok',
      finding: `${dataDir} does not exist yet; the gateway creates it (mode 0700)`,
    })
  })

  test('fails a missing data dir that cannot be created under a file', () => {
    const file = join(dir(), 'not-a-dir')
    writeFileSync(file, '')
    const result = checkDataDir(join(file, 'data'))
    expect(result.status).toBe('fail')
    expect(result.finding).toContain(`${join(file, 'data')} does not exist and`)
    expect(result.finding).toContain(`${file} is not a directory`)
  })
})

describe('checkPorts()', () => {
  test('fails a port another program holds, naming the port, its config key and flag', async () => {
    await using held = await occupyPort()
    const result = await checkPorts(localPorts(held.port, 0, 0))
    expect(result.status).toBe('fail')
    expect(result.finding).toBe(`port ${held.port} (mqtt.port) on 127.0.0.1 is in use by another program`)
    expect(result.fix).toContain('set mqtt.port in the config (`taureau gateway --mqtt-port`)')
  })

  test('fails an HTTP port held by something that is not a gateway', async () => {
    await using held = await occupyPort()
    const result = await checkPorts(localPorts(0, 0, held.port))
    expect(result.status).toBe('fail')
    expect(result.finding).toBe(`port ${held.port} (http.port) on 127.0.0.1 is in use by another program`)
    expect(result.fix).toContain('--http-port')
  })

  test('passes free ports and skips port 0', async () => {
    const mqttPort = await freePort()
    const httpPort = await freePort()
    const result = await checkPorts(localPorts(mqttPort, 0, httpPort))
    expect(result).toEqual({
      name: 'ports',
      status: 'ok',
      finding: `${mqttPort} (mqtt.port), ${httpPort} (http.port) are free on 127.0.0.1`,
    })
  })

  test('fails two keys set to one port', async () => {
    const port = await freePort()
    const result = await checkPorts(localPorts(port, port, 0))
    expect(result.status).toBe('fail')
    expect(result.finding).toBe(`mqtt.port and mqtt.wsPort are both ${port}`)
  })

  test('passes ports held by a running gateway that answers /healthz', async () => {
    await using gw = await startGateway({ http: { basePath: '/taureau' } })
    const { mqttPort, wsPort, httpPort } = gw.addresses
    const config = configOf({
      host: '127.0.0.1',
      mqtt: { port: mqttPort, wsPort },
      http: { port: httpPort, basePath: '/taureau' },
    })
    const result = await checkPorts(config)
    expect(result).toEqual({
      name: 'ports',
      status: 'ok',
      finding: `${mqttPort} (mqtt.port), ${wsPort} (mqtt.wsPort), ${httpPort} (http.port) on 127.0.0.1 are in use by a running gateway (http://127.0.0.1:${httpPort}/taureau/healthz)`,
    })
  })
})

describe('checkClock()', () => {
  test('fails a system time before the lower bound', () => {
    const result = checkClock({ nowMs: Date.UTC(1970, 0, 1, 0, 0, 42) })
    expect(result.status).toBe('fail')
    expect(result.finding).toBe(
      'system time 1970-01-01T00:00:42.000Z is before 2026-01-01: record times, cron schedules and TLS would be wrong',
    )
  })

  test('warns when timedatectl says NTP is not synchronized, and passes when it says it is', () => {
    const scripts = dir()
    const nowMs = CLOCK_LOWER_BOUND_MS + 1000
    for (const answer of ['no', 'yes']) {
      writeFileSync(join(scripts, answer), `#!/bin/sh\necho ${answer}\n`, { mode: 0o755 })
    }
    const unsynced = checkClock({ nowMs, timedatectl: join(scripts, 'no') })
    expect(unsynced.status).toBe('warn')
    expect(unsynced.finding).toBe('system time 2026-01-01T00:00:01.000Z is not synchronized by NTP')
    expect(unsynced.fix).toBe('enable systemd-timesyncd: `timedatectl set-ntp true`')
    const synced = checkClock({ nowMs, timedatectl: join(scripts, 'yes') })
    expect(synced).toEqual({
      name: 'clock',
      status: 'ok',
      finding: 'system time 2026-01-01T00:00:01.000Z, synchronized by NTP',
    })
  })

  test('says the sync state is unknown without timedatectl', () => {
    const result = checkClock({ nowMs: CLOCK_LOWER_BOUND_MS, timedatectl: join(dir(), 'missing') })
    expect(result).toEqual({
      name: 'clock',
      status: 'ok',
      finding: 'system time 2026-01-01T00:00:00.000Z; NTP sync state unknown (no timedatectl)',
    })
  })
})

describe('disk space', () => {
  test('fails under 50 MB free, warns under 500 MB or 10%, and names durability.maxStoreBytes', () => {
    const total = 100_000_000_000
    const fail = judgeDiskSpace('/var/lib/taureau', 40_000_000, total, null)
    expect(fail.status).toBe('fail')
    expect(fail.finding).toBe('40 MB free of 100000 MB (0%) on /var/lib/taureau')
    expect(fail.fix).toBe(
      'free space there, or bound the store with durability.maxStoreBytes in the config (unbounded now)',
    )
    expect(judgeDiskSpace('/d', 400_000_000, total, null).status).toBe('warn')
    const tenth = judgeDiskSpace('/d', 9_000_000_000, total, 1_000_000_000)
    expect(tenth.status).toBe('warn')
    expect(tenth.fix).toContain('(now 1000 MB)')
    expect(judgeDiskSpace('/d', 600_000_000, 1_000_000_000, null).status).toBe('ok')
    expect(judgeDiskSpace('/d', 50_000_000_000, total, null)).toEqual({
      name: 'disk space',
      status: 'ok',
      finding: '50000 MB free of 100000 MB (50%) on /d',
    })
  })

  test('reads the filesystem of the nearest existing parent of a missing data dir', () => {
    const parent = dir()
    const result = checkDiskSpace(join(parent, 'a', 'b'), null)
    expect(result.finding).toMatch(new RegExp(`^\\d+ MB free of \\d+ MB \\(\\d+%\\) on ${parent}$`))
  })
})

describe('runDoctor()', () => {
  test('runs every check in order, and those needing the config are not run when it does not load', async () => {
    const file = join(dir(), 'taureau.yaml')
    writeFileSync(file, 'host: [\n')
    const results = await runDoctor({ file, env: {} })
    expect(results.map((result) => [result.name, result.status])).toEqual([
      ['runtime', 'ok'],
      ['addon', 'ok'],
      ['allocator', expect.stringMatching(/^(ok|warn)$/)],
      ['config', 'fail'],
      ['data dir', 'warn'],
      ['ports', 'warn'],
      ['clock', expect.stringMatching(/^(ok|warn)$/)],
      ['disk space', 'warn'],
    ])
    expect(results[4]?.finding).toBe('not checked as the config does not load')
  })
})

describe('taureau doctor (CLI)', () => {
  test('prints a line per check and a summary, and exits 1 when a port is taken', async () => {
    await using held = await occupyPort()
    const root = dir()
    const file = join(root, 'taureau.yaml')
    writeFileSync(file, `host: 127.0.0.1\nmqtt:\n  port: ${held.port}\n  wsPort: 0\nhttp:\n  port: 0\n`)
    const dataDir = join(root, 'data')
    const { code, stdout, stderr } = await cli(['doctor', '--config', file, '--data', dataDir])
    expect(stderr).toBe('')
    expect(code).toBe(1)
    const lines = stdout.trimEnd().split('\n')
    expect(lines).toContain(`ok    config      loaded from ${file}`)
    expect(lines).toContain(
      `ok    data dir    ${dataDir} does not exist yet; the gateway creates it (mode 0700)`,
    )
    expect(lines).toContain(
      `FAIL  ports       port ${held.port} (mqtt.port) on 127.0.0.1 is in use by another program`,
    )
    expect(stdout).toMatch(/\n {18}fix: stop that program .* or set mqtt\.port in the config/)
    expect(lines.at(-1)).toMatch(/^8 checks: \d ok, \d warnings?, 1 failed$/)
  })

  test('--json prints the results and exits 0 when nothing fails', async () => {
    const root = dir()
    const file = join(root, 'taureau.yaml')
    writeFileSync(file, 'mqtt:\n  port: 0\n  wsPort: 0\nhttp:\n  port: 0\n')
    const { code, stdout } = await cli(['doctor', '--config', file, '--data', join(root, 'data'), '--json'])
    const results = JSON.parse(stdout) as Array<{ name: string; status: string; finding: string }>
    expect(results.map((result) => result.name)).toEqual([
      'runtime',
      'addon',
      'allocator',
      'config',
      'data dir',
      'ports',
      'clock',
      'disk space',
    ])
    expect(results.filter((result) => result.status === 'fail')).toEqual([])
    expect(results[5]).toEqual({
      name: 'ports',
      status: 'ok',
      finding: 'every port is 0: the system picks free ones',
    })
    expect(code).toBe(0)
  })
})

describe('taureau ready (CLI)', () => {
  test('exits 0 once a running gateway answers, with the URL taken from the config', async () => {
    await using gw = await startGateway({ http: { basePath: '/taureau' } })
    const file = join(dir(), 'taureau.yaml')
    // A wildcard host is reached at 127.0.0.1.
    writeFileSync(file, `host: 0.0.0.0\nhttp:\n  port: ${gw.addresses.httpPort}\n  basePath: /taureau\n`)
    const { code, stdout, stderr } = await cli(['ready', '--config', file])
    expect(stderr).toBe('')
    expect(code).toBe(0)
    expect(stdout).toMatch(
      new RegExp(`^ready at http://127\\.0\\.0\\.1:${gw.addresses.httpPort}/taureau after \\d+ ms\\n$`),
    )
  })

  test('polls until /healthz answers 200', async () => {
    let requests = 0
    const server = createHttpServer((request, response) => {
      requests++
      response.statusCode = request.url === '/healthz' && requests >= 3 ? 200 : 503
      response.end()
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    try {
      const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`
      const { code, stdout } = await cli(['ready', '--url', url, '--timeout', '20s'])
      expect(code).toBe(0)
      expect(requests).toBe(3)
      // Two pauses of 250 ms before the third attempt.
      expect(Number(/after (\d+) ms/.exec(stdout)?.[1])).toBeGreaterThanOrEqual(500)
    } finally {
      await new Promise((done) => server.close(done))
    }
  })

  test('exits 1 with the last error when nothing answers within --timeout', async () => {
    const port = await freePort()
    const { code, stdout, stderr } = await cli([
      'ready',
      '--url',
      `http://127.0.0.1:${port}`,
      '--timeout',
      '1s',
    ])
    expect(code).toBe(1)
    expect(stdout).toBe('')
    expect(stderr).toBe(
      `taureau: Cannot see the gateway ready as /healthz did not answer 200 within 1000 ms: http://127.0.0.1:${port}/healthz: connect ECONNREFUSED 127.0.0.1:${port}\n`,
    )
  })
})
