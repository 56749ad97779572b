// The Debian packages (`npm run package`): each is built, unpacked into a scratch root, and its own
// Node runtime runs the gateway and a cloud receiver from it: a device publishes, a function runs,
// the record reaches the receiver's store. The amd64 package runs through its /usr/bin/taureau; the
// arm64 one under Debian's qemu-user. Building a package downloads its runtime from the npm registry
// and compiles better-sqlite3 (cached in .build/cache), so the first run takes minutes.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { cpSync, readFileSync, statSync } from 'node:fs'
import { type AddressInfo, createServer } from 'node:net'
import { join } from 'node:path'
import mqtt, { type MqttClient } from 'mqtt'
import { beforeAll, describe, expect, it } from 'vitest'
import { provisionDevices } from '../../firmware-sim/index.ts'
import type { ApiTarget } from '../../gateway/api-client.ts'
import { callApi } from '../../gateway/api-client.ts'
import { buildGateway } from '../../gateway/build.ts'
import { deploySampleFunctions, SAMPLE_FUNCTIONS } from '../../gateway/demo.ts'
import {
  buildPackage,
  DEFAULT_CONFIG,
  type DebianArch,
  INSTALL_PATHS,
  PACKAGED_NODE_VERSION,
  SYSTEMD_UNIT,
} from '../../gateway/package.ts'
import {
  JEMALLOC_CONF,
  JEMALLOC_PACKAGE,
  jemallocLibrary,
  RUNTIME_NODE_FLAGS,
} from '../../gateway/runtime-settings.ts'
import { type CloudRecord, createSqliteCloudStore, encodeKey, loadIdentity } from '../../sync/index.ts'
import { firstLine, stopChild } from '../bench/_child.ts'
import { startCloudProcess } from '../bench/_cloud.ts'
import { tempDir, until } from '../helpers/gateway.ts'
import { type GatewayProcess, spawnGateway } from '../helpers/gateway-process.ts'

const BUILD_TIMEOUT_MS = 15 * 60_000
const SMOKE_TIMEOUT_MS = 5 * 60_000

let bundled: Promise<unknown> | undefined
/** The bundles, built once for both packages. */
const bundles = () => {
  bundled ??= buildGateway()
  return bundled
}

/** Unpacks a .deb into a fresh scratch root, as dpkg would lay it out. */
function unpack(deb: string): string {
  const root = tempDir()
  execFileSync('dpkg-deb', ['-x', deb, root])
  return root
}

function control(deb: string, file: string): string {
  return execFileSync('dpkg-deb', ['-I', deb, file], { encoding: 'utf8' })
}

/**
 * On a gateway just started: tenant `site` with the demo's `to-fahrenheit`, and device `probe`
 * connected, its MQTT client returned.
 */
async function siteWithProbe(gateway: GatewayProcess, dataDir: string): Promise<MqttClient> {
  const api: ApiTarget = {
    url: gateway.httpUrl,
    token: readFileSync(join(dataDir, 'admin-token'), 'utf8').trim(),
  }
  await callApi(api, 'POST', '/tenants', { id: 'site' })
  await deploySampleFunctions(
    api,
    'site',
    SAMPLE_FUNCTIONS.filter((fn) => fn.name === 'to-fahrenheit'),
  )
  const [device] = await provisionDevices({
    apiUrl: api.url,
    token: api.token,
    tenant: 'site',
    ids: ['probe'],
  })
  if (device === undefined) throw new Error('no device was provisioned')
  return mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, {
    username: device.username,
    password: device.password,
    clientId: device.id,
    reconnectPeriod: 0,
    connectTimeout: 60_000,
  })
}

/** Device → function → uplink → receiver, with the gateway and receiver run by `command`. */
async function smoke(options: { command: [string, ...string[]] }): Promise<void> {
  const gatewayDir = tempDir()
  const cloudDir = tempDir()
  const cloud = await startCloudProcess({ command: options.command, cloudDir, gatewayDir, name: 'box' })
  const gateway = await spawnGateway({
    command: options.command,
    dataDir: gatewayDir,
    args: ['--cloud', `127.0.0.1:${cloud.port}`, '--cloud-key', cloud.cloudKey],
    logLevel: 'warn',
    apiTimeoutMs: 120_000,
  })
  const client = { end: () => undefined } as { end(force?: boolean): unknown }
  try {
    const mqttClient = await siteWithProbe(gateway, gatewayDir)
    client.end = (force) => mqttClient.end(force)
    await mqttClient.publishAsync(
      'sensors/probe/temperature',
      JSON.stringify({ c: 20, ts: 1_700_000_000_000 }),
      {
        qos: 1,
      },
    )
    const store = await createSqliteCloudStore({ file: join(cloudDir, 'cloud.db') })
    try {
      let payloads: unknown[] = []
      await until(
        async () => {
          const records = await store.records({ gateway: 'box', tenant: 'site', stream: 'temperature' })
          payloads = records.map((record) => JSON.parse(record.body))
          return payloads.length > 0
        },
        'the record in the cloud store',
        SMOKE_TIMEOUT_MS - 60_000,
      )
      expect(payloads).toEqual([{ device: 'probe', f: 68, ts: 1_700_000_000_000 }])
    } finally {
      await store.close()
    }
  } finally {
    client.end(true)
    await stopChild(gateway.child)
    await stopChild(cloud.child)
  }
}

/** `taureau doctor --json` run by `command` on a fresh data dir: the checks by name. */
function doctor(command: [string, ...string[]]): Map<string, { status: string; finding: string }> {
  const [file, ...prefix] = command
  const result = spawnSync(file, [...prefix, 'doctor', '--data', join(tempDir(), 'data'), '--json'], {
    encoding: 'utf8',
    timeout: 120_000,
  })
  if (result.stdout === '') throw new Error(`taureau doctor printed nothing: ${result.stderr}`)
  const checks = JSON.parse(result.stdout) as Array<{ name: string; status: string; finding: string }>
  return new Map(checks.map((check) => [check.name, check]))
}

describe.each(['amd64', 'arm64'] as DebianArch[])('the %s package', (arch) => {
  let deb: string
  let root: string
  beforeAll(async () => {
    await bundles()
    deb = await buildPackage(arch)
    root = unpack(deb)
  }, BUILD_TIMEOUT_MS)

  it('holds its runtime, the bundles, the addon for its architecture, a conffile and the unit', () => {
    const fields = control(deb, 'control')
    expect(fields).toMatch(new RegExp(`^Architecture: ${arch}$`, 'm'))
    expect(fields).toMatch(/^Package: taureau$/m)
    expect(control(deb, 'conffiles').trim()).toBe(INSTALL_PATHS.config)
    expect(control(deb, 'postinst')).toContain('useradd --system')
    const file = (path: string) => join(root, path)
    expect(readFileSync(file(INSTALL_PATHS.config), 'utf8')).toBe(DEFAULT_CONFIG)
    expect(readFileSync(file(INSTALL_PATHS.unit), 'utf8')).toBe(SYSTEMD_UNIT)
    expect(statSync(file(INSTALL_PATHS.cli)).mode & 0o111).not.toBe(0)
    const elfMachine = (path: string) => readFileSync(file(path)).readUInt16LE(18)
    const machine = arch === 'amd64' ? 0x3e : 0xb7
    expect(elfMachine(`${INSTALL_PATHS.home}/node/bin/node`)).toBe(machine)
    expect(
      elfMachine(`${INSTALL_PATHS.home}/app/node_modules/better-sqlite3/build/Release/better_sqlite3.node`),
    ).toBe(machine)
    // One WebAssembly file, QuickJS's, beside the bundles and their chunks.
    const listing = execFileSync('dpkg-deb', ['-c', deb], { encoding: 'utf8' })
    expect(listing.match(/\S+\.wasm$/gm)).toEqual([`.${INSTALL_PATHS.home}/app/bin/quickjs.wasm`])
    expect(listing).toMatch(new RegExp(`\\.${INSTALL_PATHS.home}/app/bin/chunk-\\w+\\.mjs$`, 'm'))
    expect(listing).toContain(`.${INSTALL_PATHS.home}/app/ui/dist/index.html`)
    // The bundled npm packages' licences ship with it.
    const licenses = readFileSync(file('usr/share/doc/taureau/THIRD-PARTY-LICENSES.txt'), 'utf8')
    for (const name of ['aedes', 'hono', 'libsodium-wrappers', 'quickjs-emscripten', 'zod']) {
      expect(licenses).toMatch(new RegExp(`^${name} \\d+\\.\\d+\\.\\d+ \\(`, 'm'))
    }
    // jemalloc: a dependency, preloaded by the wrapper from the architecture's library directory.
    expect(fields).toMatch(new RegExp(`^Depends: .*\\b${JEMALLOC_PACKAGE}\\b`, 'm'))
    const wrapper = readFileSync(file(INSTALL_PATHS.cli), 'utf8')
    expect(wrapper).toContain(`jemalloc=${jemallocLibrary(arch === 'amd64' ? 'x64' : 'arm64')}`)
    expect(wrapper).toContain(`MALLOC_CONF:-${JEMALLOC_CONF}`)
  })

  it('has a systemd unit that systemd accepts, with a low exposure score', () => {
    // systemd-analyze resolves the unit's dependencies (multi-user.target, ...) in the root it is
    // given: the host's units are copied beside the package's.
    cpSync('/lib/systemd/system', join(root, 'lib/systemd/system'), { recursive: true, force: false })
    const unit = join(root, INSTALL_PATHS.unit)
    const verify = spawnSync('systemd-analyze', ['verify', `--root=${root}`, unit], { encoding: 'utf8' })
    expect(verify.stderr).toBe('')
    expect(verify.status).toBe(0)
    const security = spawnSync('systemd-analyze', ['security', '--offline=true', `--root=${root}`, unit], {
      encoding: 'utf8',
    })
    // 0 is the most locked down, 10 an unprotected service; 'OK' is below 4.
    const exposure = Number(
      /Overall exposure level for taureau\.service: ([\d.]+)/.exec(security.stdout)?.[1],
    )
    expect(exposure).toBeLessThanOrEqual(2)
  })

  it(
    'runs a device publish through a function to a cloud receiver on its own runtime',
    async () => {
      const home = join(root, INSTALL_PATHS.home)
      // amd64 through the package's /usr/bin/taureau, which finds the unpacked tree (rather than
      // /usr/lib/taureau) through TAUREAU_HOME, inherited by every process the test starts. arm64
      // emulated: its runtime under qemu-user, with Debian's arm64 libraries as its root.
      process.env.TAUREAU_HOME = home
      const command: [string, ...string[]] =
        arch === 'amd64'
          ? ['sh', join(root, INSTALL_PATHS.cli)]
          : [
              'qemu-aarch64',
              '-L',
              '/usr/aarch64-linux-gnu',
              join(home, 'node/bin/node'),
              ...RUNTIME_NODE_FLAGS,
              join(home, 'app/bin/taureau.mjs'),
            ]
      const checks = doctor(command)
      expect(checks.get('runtime')).toMatchObject({ status: 'ok' })
      expect(checks.get('runtime')?.finding).toContain(`v${PACKAGED_NODE_VERSION}`)
      expect(checks.get('runtime')?.finding).toContain(arch === 'amd64' ? 'x64' : 'arm64')
      expect(checks.get('addon')).toMatchObject({ status: 'ok' })
      // The wrapper preloads jemalloc (installed here by .ci/prepare); the emulated arm64 runtime
      // has no arm64 jemalloc in its root.
      if (arch === 'amd64') {
        expect(checks.get('allocator')).toMatchObject({
          status: 'ok',
          finding: `jemalloc, MALLOC_CONF=${JEMALLOC_CONF}`,
        })
      }
      await smoke({ command })
    },
    SMOKE_TIMEOUT_MS,
  )
})

describe('an upgrade of the amd64 package', () => {
  it(
    'keeps tenants, functions, the journal and the outbox, and loses no acknowledged message',
    async () => {
      await bundles()
      // The previous version: no earlier release exists yet, so the same tree under a lower
      // version. What this checks is the upgrade itself, as dpkg runs it: the service stopped, the
      // files replaced over the same root, the new version started on the old data.
      const previous = await buildPackage('amd64', { version: '0.0.1' })
      const next = await buildPackage('amd64')
      const root = unpack(previous)
      const home = join(root, INSTALL_PATHS.home)
      process.env.TAUREAU_HOME = home
      const command: [string, ...string[]] = ['sh', join(root, INSTALL_PATHS.cli)]
      const appVersion = () => JSON.parse(readFileSync(join(home, 'app/package.json'), 'utf8')).version
      expect(appVersion()).toBe('0.0.1')

      // The receiver is down while the old version runs: its records wait in the outbox, and the
      // function's inputs may still be in the journal when the old version stops.
      const gatewayDir = tempDir()
      const cloudDir = tempDir()
      const cloudPort = await freePort()
      const cloudKey = await pairCloud(cloudDir, gatewayDir, 'box')
      const cloudArgs = ['--cloud', `127.0.0.1:${cloudPort}`, '--cloud-key', cloudKey]
      const old = await spawnGateway({ command, dataDir: gatewayDir, args: cloudArgs, logLevel: 'warn' })
      const readings = 200
      try {
        const client = await siteWithProbe(old, gatewayDir)
        // Every reading acknowledged (PUBACK) before the old version is stopped.
        await Promise.all(
          Array.from({ length: readings }, (_, index) =>
            client.publishAsync('sensors/probe/temperature', JSON.stringify({ c: index / 10, ts: index }), {
              qos: 1,
            }),
          ),
        )
        client.end(true)
      } finally {
        // The package's prerm: systemctl stop, a SIGTERM.
        await stopChild(old.child)
      }

      execFileSync('dpkg-deb', ['-x', next, root])
      expect(appVersion()).toBe(JSON.parse(readFileSync('package.json', 'utf8')).version)

      const upgraded = await spawnGateway({ command, dataDir: gatewayDir, args: cloudArgs, logLevel: 'warn' })
      const cloud = spawn(
        command[0],
        [
          ...command.slice(1),
          'cloud',
          '--data',
          cloudDir,
          '--host',
          '127.0.0.1',
          '--port',
          String(cloudPort),
        ],
        {
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      )
      try {
        await firstLine(cloud, 'the cloud receiver')
        const functions = await upgraded.api('GET', '/tenants/site/functions')
        expect(JSON.stringify(functions)).toContain('to-fahrenheit')
        const store = await createSqliteCloudStore({ file: join(cloudDir, 'cloud.db') })
        try {
          let stored: CloudRecord[] = []
          await until(
            async () => {
              stored = await store.records({
                gateway: 'box',
                tenant: 'site',
                stream: 'temperature',
                limit: 10_000,
              })
              return stored.length >= readings
            },
            `${readings} records in the cloud store`,
            120_000,
          )
          const received = stored.map((record) => JSON.parse(record.body) as { ts: number; f: number })
          // Each acknowledged reading exactly once, converted.
          expect(received.map((reading) => reading.ts).sort((a, b) => a - b)).toEqual(
            Array.from({ length: readings }, (_, index) => index),
          )
          for (const reading of received)
            expect(reading.f).toBe(Math.round(((reading.ts / 10) * 1.8 + 32) * 10) / 10)
        } finally {
          await store.close()
        }
      } finally {
        await stopChild(upgraded.child)
        await stopChild(cloud)
      }
    },
    BUILD_TIMEOUT_MS,
  )
})

/** A port no one listens on now, for a receiver started later. */
async function freePort(): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  server.close()
  await once(server, 'close')
  return port
}

/** Registers the gateway of `gatewayDir` with the receiver of `cloudDir`; returns the receiver's key. */
async function pairCloud(cloudDir: string, gatewayDir: string, name: string): Promise<string> {
  const store = await createSqliteCloudStore({ file: join(cloudDir, 'cloud.db') })
  await store.addGateway(name, encodeKey((await loadIdentity(gatewayDir)).publicKey))
  await store.close()
  return encodeKey((await loadIdentity(cloudDir)).publicKey)
}
