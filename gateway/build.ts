// `npm run build`: the CLI (gateway, cloud receiver, demo, simulator) and its worker threads as
// plain JavaScript bundles, so that a running gateway loads no TypeScript compiler. Without it, each
// thread of the process (the main one, the sandbox workers, the uplink's) registers tsx, which costs
// tens of MB of memory apiece. The npm packages stay outside the bundles, loaded from node_modules.
import { rmSync } from 'node:fs'
import { join, relative } from 'node:path'
import { build } from 'esbuild'

const ROOT = join(import.meta.dirname, '..')
/**
 * Where the bundles go: `bin/`, one level below the checkout like the sources, so that the paths
 * modules take relative to themselves (`../ui/dist/`, `../firmware-sim/demo/`) hold in both.
 */
export const BUNDLE_DIR = join(ROOT, 'bin')
/** The CLI's bundle: `node bin/taureau.mjs gateway`. */
export const CLI_BUNDLE = join(BUNDLE_DIR, 'taureau.mjs')

/** Entry points and their bundle names; workers' names match sandbox/module-worker.ts's callers. */
const ENTRY_POINTS = {
  taureau: 'gateway/cli.ts',
  'sandbox-worker': 'sandbox/worker-main.ts',
  'uplink-worker': 'sync/uplink-worker.ts',
  'cloud-store-worker': 'sync/cloud-store-thread-worker.ts',
}

/** Builds the bundles into {@link BUNDLE_DIR}; returns each output file with its size in bytes. */
export async function buildGateway(): Promise<Array<{ file: string; bytes: number }>> {
  for (const name of Object.keys(ENTRY_POINTS)) {
    rmSync(join(BUNDLE_DIR, `${name}.mjs`), { force: true })
    rmSync(join(BUNDLE_DIR, `${name}.mjs.map`), { force: true })
  }
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: ENTRY_POINTS,
    outdir: BUNDLE_DIR,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    sourcemap: 'linked',
    metafile: true,
    logLevel: 'warning',
  })
  return Object.entries(result.metafile.outputs)
    .filter(([file]) => file.endsWith('.mjs'))
    .map(([file, output]) => ({ file: relative(ROOT, join(ROOT, file)), bytes: output.bytes }))
}

if (process.argv[1] === import.meta.filename) {
  for (const { file, bytes } of await buildGateway()) {
    console.log(`${file.padEnd(28)} ${(bytes / 1024).toFixed(1).padStart(8)} KiB`)
  }
}
