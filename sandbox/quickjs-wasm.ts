// The bytes of QuickJS's WebAssembly build. From the sources they are read from the npm package;
// `npm run build` copies the file beside the bundles and replaces this module with one that reads
// that copy (gateway/build.ts), so that an install needs no node_modules for it.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

/** The package file the bytes come from; the bundler embeds the same file. */
export const QUICKJS_WASM_SPECIFIER = '@jitl/quickjs-wasmfile-release-sync/wasm'

/** QuickJS's WebAssembly binary. */
export function quickJSWasmBytes(): Uint8Array<ArrayBuffer> {
  return new Uint8Array(readFileSync(createRequire(import.meta.url).resolve(QUICKJS_WASM_SPECIFIER)))
}
