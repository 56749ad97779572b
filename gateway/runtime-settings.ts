// How the installed gateway runs Node (the package's /usr/bin/taureau, gateway/package.ts), kept
// here so that the memory benchmark can run it the same way. Measured on the demo's gateway idle
// (2-core x86-64, Node 20, RSS): about 130 MB with Node's defaults, about 113–125 MB with these.
// Most of the gain is glibc's: each thread that allocates gets its own arena (up to 64 MB each) and
// freed memory stays in it; fewer arenas, trimmed sooner, return it.

/** Node and V8 options: one V8 helper thread (each holds an arena) and a small young generation. */
export const RUNTIME_NODE_FLAGS = ['--v8-pool-size=1', '--max-semi-space-size=1']

/** Environment of the process: glibc malloc's arenas and trim threshold (bytes). */
export const RUNTIME_ENV: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '2',
  MALLOC_TRIM_THRESHOLD_: '131072',
}
