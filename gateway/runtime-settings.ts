// How the installed gateway runs Node (the package's /usr/bin/taureau, gateway/package.ts), kept
// here so that the benchmarks can run it the same way.
//
// Measured on the demo's gateway idle (2-core x86-64, Node 20, RSS of the bundle, MB = 10^6 bytes,
// one run each, about ±2 MB of noise): the V8 options below took it from 104–106 MB to 98 MB on
// jemalloc; jemalloc holds 8–10 MB less than glibc's malloc (106.7 MB with the same options), which
// keeps freed memory in the middle of its heap (a malloc_trim(0) in the idle gateway gave back 18
// MB of a 27 MB arena with 8.7 MB in use). Under 800 readings/s the gateway used the same CPU on
// each (1.15–1.38 cores, run to run).

import { existsSync } from 'node:fs'

/**
 * Node and V8 options: one V8 helper thread; a small young generation; no baseline compiler
 * (Sparkplug: its code and the bytecode kept by the next option took 6–9 MB of the idle gateway,
 * while hot code still gets V8's optimising compiler); and the bytecode of functions not run since
 * the last full collection dropped, to be compiled again if they are called.
 */
export const RUNTIME_NODE_FLAGS = [
  '--v8-pool-size=1',
  '--max-semi-space-size=1',
  '--no-sparkplug',
  '--bytecode-old-age=1',
]

/**
 * glibc malloc's settings, for when jemalloc is not there: two arenas (each thread that allocates
 * gets its own otherwise, up to 8 per core), trimmed early. Ignored under jemalloc.
 */
export const RUNTIME_ENV: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '2',
  MALLOC_TRIM_THRESHOLD_: '131072',
}

/**
 * jemalloc's settings (its `MALLOC_CONF`): one arena for every thread (the gateway's few threads
 * seldom allocate at once), and unused pages given back to the system after 1 s in one step rather
 * than after 10 s in two. On the demo's idle gateway that held 1–2 MB less than jemalloc's
 * defaults, at the same CPU under 800 readings/s. No per-thread caches (`tcache:false`) with pages
 * given back at once (`dirty_decay_ms:0`) held 3 MB less again but took a third more CPU under
 * that load.
 */
export const JEMALLOC_CONF = 'narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0'

/** Debian's package of jemalloc, which the .deb depends on. */
export const JEMALLOC_PACKAGE = 'libjemalloc2'

const MULTIARCH: Readonly<Record<string, string>> = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' }

/** Where Debian installs jemalloc's shared library for a Node architecture (`process.arch`). */
export function jemallocLibrary(arch: string = process.arch): string {
  const triplet = MULTIARCH[arch]
  if (triplet === undefined) throw new Error(`no Debian multiarch name for the architecture ${arch}`)
  return `/usr/lib/${triplet}/libjemalloc.so.2`
}

/** Whether a process whose `/proc/PID/maps` text this is has jemalloc loaded. */
export function mapsJemalloc(maps: string): boolean {
  return /\/libjemalloc\.so[.\d]*$/m.test(maps)
}

/**
 * The environment /usr/bin/taureau gives the gateway, for a child process run here: `env` with
 * {@link RUNTIME_ENV}, and jemalloc preloaded with {@link JEMALLOC_CONF} when it is installed
 * (`jemalloc` undefined when not). Values already in `env` win, as in the wrapper.
 */
export function runtimeEnvironment(env: NodeJS.ProcessEnv = process.env): {
  env: NodeJS.ProcessEnv
  jemalloc: string | undefined
} {
  const merged: NodeJS.ProcessEnv = { ...RUNTIME_ENV, ...env }
  const library = MULTIARCH[process.arch] === undefined ? undefined : jemallocLibrary()
  if (library === undefined || !existsSync(library) || env.TAUREAU_JEMALLOC === '0') {
    return { env: merged, jemalloc: undefined }
  }
  merged.LD_PRELOAD = env.LD_PRELOAD ? `${library}:${env.LD_PRELOAD}` : library
  merged.MALLOC_CONF = env.MALLOC_CONF ?? JEMALLOC_CONF
  return { env: merged, jemalloc: library }
}
