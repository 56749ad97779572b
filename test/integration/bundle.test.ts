import { readFileSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { expect, it } from 'vitest'
import { buildGateway, CLI_BUNDLE, EXTERNAL_PACKAGES } from '../../gateway/build.ts'
import { tempDir, until } from '../helpers/gateway.ts'
import { spawnDemo } from '../helpers/gateway-process.ts'

it('the bundled CLI runs the demo end to end without tsx', async () => {
  const outputs = await buildGateway()
  expect(outputs.map((output) => output.file).sort()).toEqual([
    'bin/cloud-store-worker.mjs',
    'bin/password-hasher-worker.mjs',
    'bin/sandbox-worker.mjs',
    'bin/taureau.mjs',
    'bin/uplink-worker.mjs',
  ])
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
