/**
 * Whether the benchmarks run in quick mode (`BENCH_QUICK=1` in the environment, or `--quick` on
 * the command line): fewer rounds and shorter windows, to check the pipeline end to end in a few
 * minutes, not to quote figures. Each benchmark only changes its defaults: flags and `BENCH_*`
 * variables given explicitly still win. The mode is recorded with every section.
 */
export function isQuickMode(argv: readonly string[] = process.argv): boolean {
  const flag = process.env.BENCH_QUICK
  return (flag !== undefined && flag !== '' && flag !== '0') || argv.includes('--quick')
}

/** `quick` in quick mode, else `full`: picks a default by mode. */
export function byMode<T>(full: T, quick: T): T {
  return isQuickMode() ? quick : full
}
