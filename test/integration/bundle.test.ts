import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect, it } from 'vitest'
import {
  BUNDLE_DIR,
  buildGateway,
  CLI_BUNDLE,
  EXTERNAL_PACKAGES,
  QUICKJS_WASM_FILE,
} from '../../gateway/build.ts'
import { tempDir, until } from '../helpers/gateway.ts'
import { spawnDemo, spawnGateway } from '../helpers/gateway-process.ts'

it('the bundled CLI runs the demo end to end without tsx', async () => {
  const outputs = await buildGateway()
  // The entry points, and the chunks they share or load when a command runs.
  const files = outputs.map((output) => output.file)
  expect(files.filter((file) => !/^bin\/chunk-\w+\.mjs$/.test(file)).sort()).toEqual([
    'bin/cloud-store-worker.mjs',
    'bin/password-hasher-worker.mjs',
    'bin/sandbox-worker.mjs',
    'bin/taureau.mjs',
    'bin/uplink-worker.mjs',
  ])
  // QuickJS's binary sits beside them rather than inside, as 700 KB of base64 in every thread.
  expect(existsSync(QUICKJS_WASM_FILE)).toBe(true)
  const slice = readFileSync(QUICKJS_WASM_FILE).subarray(30_000, 30_048).toString('base64')
  for (const file of files) expect(readFileSync(file, 'utf8')).not.toContain(slice)
  // No TypeScript is left to load: a bundle that imported a .ts file would need tsx.
  for (const { file } of outputs) expect(readFileSync(file, 'utf8')).not.toMatch(/from "[^"]+\.ts"/)
  // Nor any npm package but the externals: an install holds the bundles and better-sqlite3 only.
  const packages = new Set<string>()
  for (const { file } of outputs) {
    const text = readFileSync(file, 'utf8')
    for (const [, specifier] of text.matchAll(/(?:from |import\(|require\d*\()"([^"./][^"]*)"/g)) {
      const name = specifier?.startsWith('@')
        ? specifier.split('/').slice(0, 2).join('/')
        : specifier?.split('/')[0]
      if (name !== undefined && !name.startsWith('node:') && !builtinModules.includes(name))
        packages.add(name)
    }
  }
  expect([...packages].filter((name) => !EXTERNAL_PACKAGES.includes(name))).toEqual([])
  const demo = spawnDemo({
    command: [process.execPath, CLI_BUNDLE],
    args: ['--data', tempDir(), '--cloud-data', tempDir(), '--interval', '1', '--devices', '5'],
  })
  try {
    await until(
      () => demo.output.some((line) => /devices 5\/5 online.*cloud [1-9]\d* records/.test(line)),
      'records in the cloud',
      60_000,
    )
    expect(demo.stderr()).toBe('')
  } finally {
    expect(await demo.stop()).toBe(0)
  }
}, 90_000)

it("the gateway's main thread loads only its own chunks: no libsodium, simulator or receiver", async () => {
  await buildGateway()
  // A module loader hook reports every file of bin/ that Node loads. Without --cloud and tenants,
  // no worker starts (the uplink's and the sandbox's load libsodium and QuickJS): what loads is the
  // main thread's.
  const hooks = `export async function load(url, context, next) {
    if (url.includes('/bin/')) process._rawDebug('loaded ' + url)
    return next(url, context)
  }`
  const register = `import { register } from 'node:module'
    register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)})`
  const gateway = await spawnGateway({
    command: [
      process.execPath,
      '--import',
      `data:text/javascript,${encodeURIComponent(register)}`,
      CLI_BUNDLE,
    ],
    dataDir: tempDir(),
    stderr: 'pipe',
  })
  const stderr: string[] = []
  gateway.child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk.toString()))
  try {
    await gateway.api('GET', '/tenants')
  } finally {
    await gateway.kill()
  }
  const loaded = [...stderr.join('').matchAll(/^loaded (file:\S+)$/gm)].map(([, url]) =>
    fileURLToPath(url as string),
  )
  expect(loaded.map((file) => basename(file))).toContain('taureau.mjs')
  expect(loaded.length).toBeGreaterThan(1)
  const all = readdirSync(BUNDLE_DIR).filter((file) => file.endsWith('.mjs'))
  const withText = (text: string) =>
    all.filter((file) => readFileSync(join(BUNDLE_DIR, file), 'utf8').includes(text))
  // Text of libsodium, of the receiver (sync/receiver.ts) and of the simulator (firmware-sim/).
  for (const marker of ['sodium_version_string', 'an unknown gateway key', 'Cannot start a fleet as its']) {
    expect(withText(marker).length).toBeGreaterThan(0)
    for (const file of loaded) expect(readFileSync(file, 'utf8')).not.toContain(marker)
  }
}, 60_000)
