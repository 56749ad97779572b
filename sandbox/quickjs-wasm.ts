// The bytes of QuickJS's WebAssembly build. From the sources they are read from the npm package;
// `npm run build` replaces this module with one that holds them (gateway/build.ts), so that a
// bundled gateway needs no `.wasm` file beside it.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

/** The package file the bytes come from; the bundler embeds the same file. */
export const QUICKJS_WASM_SPECIFIER = '@jitl/quickjs-wasmfile-release-sync/wasm'

/** QuickJS's WebAssembly binary. */
export function quickJSWasmBytes(): Uint8Array<ArrayBuffer> {
  return new Uint8Array(readFileSync(createRequire(import.meta.url).resolve(QUICKJS_WASM_SPECIFIER)))
}
