// How the long-running commands (gateway, demo) stop on SIGINT and SIGTERM.

/**
 * Calls `close` on the first SIGINT or SIGTERM and sets the exit code from its outcome (0, or 1
 * with the reason on stderr); a second signal exits at once with 130.
 */
export function closeOnSignals(close: () => Promise<void>): void {
  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) {
      console.error(`taureau: ${signal} again, exiting now`)
      process.exit(130)
    }
    stopping = true
    close().then(
      () => {
        process.exitCode = 0
      },
      (error: unknown) => {
        console.error(`taureau: shutdown failed: ${(error as Error).message}`)
        process.exitCode = 1
      },
    )
  }
  process.once('SIGINT', () => stop('SIGINT'))
  process.once('SIGTERM', () => stop('SIGTERM'))
}
