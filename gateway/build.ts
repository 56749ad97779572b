// `npm run build`: the CLI (gateway, cloud receiver, demo, simulator) and its worker threads as
// plain JavaScript bundles, so that a running gateway loads no TypeScript compiler. Without it, each
// thread of the process (the main one, the sandbox workers, the uplink's) registers tsx, which costs
// tens of MB of memory apiece. The npm packages are bundled too, except better-sqlite3 (a native
// addon, built for each runtime and architecture) and optional modules the code never loads: an
// install needs the bundles, `ui/dist`, the demo's functions and better-sqlite3 (gateway/package.ts).

import { rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join, relative } from 'node:path'
import { build, type Plugin } from 'esbuild'
import { QUICKJS_WASM_SPECIFIER } from '../sandbox/quickjs-wasm.ts'

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
  'password-hasher-worker': 'gateway/password-hasher-worker.ts',
}

/**
 * Packages left out of the bundles: better-sqlite3, loaded from node_modules, and modules that
 * dependencies only try to load, doing without them when absent (pg's native driver, ws's
 * speed-ups, debug's colour detection).
 */
export const EXTERNAL_PACKAGES = [
  'better-sqlite3',
  'pg-native',
  'bufferutil',
  'utf-8-validate',
  'supports-color',
]

// CommonJS dependencies call require() for Node's modules and read __dirname: ES module bundles
// have neither, so each bundle defines them first.
const COMMONJS_SHIM = [
  "import { createRequire as __taureauCreateRequire } from 'node:module';",
  "import { fileURLToPath as __taureauFileURLToPath } from 'node:url';",
  'const require = __taureauCreateRequire(import.meta.url);',
  'const __filename = __taureauFileURLToPath(import.meta.url);',
  "const __dirname = __taureauFileURLToPath(new URL('.', import.meta.url));",
].join('\n')

/** Puts QuickJS's WebAssembly binary inside the sandbox worker's bundle (see sandbox/quickjs-wasm.ts). */
const embedQuickJSWasm: Plugin = {
  name: 'embed-quickjs-wasm',
  setup(builder) {
    const wasmFile = createRequire(import.meta.url).resolve(QUICKJS_WASM_SPECIFIER)
    builder.onLoad({ filter: /[\\/]sandbox[\\/]quickjs-wasm\.ts$/ }, () => ({
      contents: [
        `import bytes from ${JSON.stringify(wasmFile)}`,
        `export const QUICKJS_WASM_SPECIFIER = ${JSON.stringify(QUICKJS_WASM_SPECIFIER)}`,
        'export function quickJSWasmBytes() { return bytes }',
      ].join('\n'),
      loader: 'js',
      resolveDir: ROOT,
    }))
  },
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
    external: EXTERNAL_PACKAGES,
    loader: { '.wasm': 'binary' },
    plugins: [embedQuickJSWasm],
    banner: { js: COMMONJS_SHIM },
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
