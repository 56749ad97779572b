// `npm run build`: the CLI (gateway, cloud receiver, demo, simulator) and its worker threads as
// plain JavaScript bundles, so that a running gateway loads no TypeScript compiler. Without it, each
// thread of the process (the main one, the sandbox workers, the uplink's) registers tsx, which costs
// tens of MB of memory apiece. The npm packages are bundled too, except better-sqlite3 (a native
// addon, built for each runtime and architecture) and optional modules the code never loads: an
// install needs the bundles with their chunks and QuickJS's binary, `ui/dist`, the demo's functions
// and better-sqlite3 (gateway/package.ts).

import { copyFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { basename, join, relative } from 'node:path'
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
/** The licence texts of the npm packages inside the bundles, which the .deb ships. */
export const THIRD_PARTY_LICENSES = join(BUNDLE_DIR, 'THIRD-PARTY-LICENSES.txt')

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

/** QuickJS's WebAssembly binary beside the bundles, which read it from there when a sandbox starts. */
export const QUICKJS_WASM_FILE = join(BUNDLE_DIR, 'quickjs.wasm')

/**
 * Replaces sandbox/quickjs-wasm.ts with a module that reads {@link QUICKJS_WASM_FILE}, relative to
 * the bundle (the chunks sit beside it). Embedded in the bundle instead, the binary was a 700 KB
 * string of base64 held by every thread that loaded the sandbox's code, the main one included.
 */
const readQuickJSWasmBeside: Plugin = {
  name: 'read-quickjs-wasm-beside',
  setup(builder) {
    builder.onLoad({ filter: /[\\/]sandbox[\\/]quickjs-wasm\.ts$/ }, () => ({
      contents: [
        "import { readFileSync } from 'node:fs'",
        `export const QUICKJS_WASM_SPECIFIER = ${JSON.stringify(QUICKJS_WASM_SPECIFIER)}`,
        'export function quickJSWasmBytes() {',
        `  return new Uint8Array(readFileSync(new URL(${JSON.stringify(`./${basename(QUICKJS_WASM_FILE)}`)}, import.meta.url)))`,
        '}',
      ].join('\n'),
      loader: 'js',
      resolveDir: ROOT,
    }))
  },
}

/**
 * Leaves zod's translations of its messages out, English (its default) apart: every module that
 * imports `zod` otherwise carries all 60-odd locales, 300 KB of code the gateway never runs.
 * `z.locales` then holds `en` only.
 */
const zodEnglishOnly: Plugin = {
  name: 'zod-english-only',
  setup(builder) {
    builder.onLoad({ filter: /[\\/]node_modules[\\/]zod[\\/]v4[\\/]locales[\\/]index\.js$/ }, () => ({
      contents: 'export { default as en } from "./en.js"',
      loader: 'js',
    }))
  },
}

/** Builds the bundles into {@link BUNDLE_DIR}; returns each output file with its size in bytes. */
export async function buildGateway(): Promise<Array<{ file: string; bytes: number }>> {
  for (const file of readdirSync(BUNDLE_DIR)) {
    if (/\.mjs(\.map)?$/.test(file)) rmSync(join(BUNDLE_DIR, file), { force: true })
  }
  copyFileSync(createRequire(import.meta.url).resolve(QUICKJS_WASM_SPECIFIER), QUICKJS_WASM_FILE)
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: ENTRY_POINTS,
    outdir: BUNDLE_DIR,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    // What a command imports when it runs (`await import(...)`) goes in chunks of its own, and the
    // code the entry points share in shared ones: `taureau gateway` then parses and holds neither
    // the simulator, the receiver nor libsodium (the uplink's worker loads that).
    splitting: true,
    chunkNames: 'chunk-[hash]',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: EXTERNAL_PACKAGES,
    plugins: [readQuickJSWasmBeside, zodEnglishOnly],
    banner: { js: COMMONJS_SHIM },
    sourcemap: 'linked',
    // Every thread holds the source text of what it loaded for as long as it runs: minified, that is
    // about half. Functions and classes keep their names (errors and logs name them); the source
    // maps beside the bundles give back the rest.
    minify: true,
    keepNames: true,
    legalComments: 'none',
    metafile: true,
    logLevel: 'warning',
  })
  writeFileSync(THIRD_PARTY_LICENSES, licenseTexts(Object.keys(result.metafile.inputs)))
  return Object.entries(result.metafile.outputs)
    .filter(([file]) => file.endsWith('.mjs'))
    .map(([file, output]) => ({ file: relative(ROOT, join(ROOT, file)), bytes: output.bytes }))
}

/**
 * Each bundled package's name, version, declared licence and licence files, from the bundles'
 * inputs (paths relative to the checkout). A package without a licence file says so.
 */
export function licenseTexts(inputs: readonly string[]): string {
  const packages = new Set<string>()
  for (const input of inputs) {
    const match = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input)
    if (match?.[1] !== undefined) packages.add(match[1])
  }
  const sections: string[] = []
  for (const dir of [...packages].sort((a, b) => _packageName(a).localeCompare(_packageName(b)))) {
    const manifest = JSON.parse(readFileSync(join(ROOT, dir, 'package.json'), 'utf8')) as {
      name: string
      version: string
      license?: string
    }
    const files = readdirSync(join(ROOT, dir)).filter((file) => /^(licen[cs]e|copying)/i.test(file))
    const texts = files.map((file) => readFileSync(join(ROOT, dir, file), 'utf8').trim())
    sections.push(
      [
        `${manifest.name} ${manifest.version} (${manifest.license ?? 'no licence declared'})`,
        texts.length > 0 ? texts.join('\n\n') : 'The package has no licence file; see its package.json.',
      ].join('\n\n'),
    )
  }
  return `The npm packages inside Taureau's bundles (bin/*.mjs), with their licences.\n\n${sections.join(`\n\n${'='.repeat(72)}\n\n`)}\n`
}

function _packageName(dir: string): string {
  return dir.slice(dir.lastIndexOf('node_modules/') + 'node_modules/'.length)
}

if (process.argv[1] === import.meta.filename) {
  for (const { file, bytes } of await buildGateway()) {
    console.log(`${file.padEnd(28)} ${(bytes / 1024).toFixed(1).padStart(8)} KiB`)
  }
}
