// The CLI's `doctor` and `ready` commands: what the Debian package's postinst and systemd unit run.
import { type Command, InvalidArgumentError, Option } from 'commander'
import { parseDuration } from './duration.ts'

/** How long `taureau ready` waits by default, ms: a gateway on an SD card may migrate a large store first. */
const DEFAULT_READY_TIMEOUT_MS = 60_000

/** `500ms`, `10s`, `5m`: a duration above 0, in ms. */
const timeoutArg = (value: string): number => {
  const ms = parseDuration(value) ?? Number.NaN
  if (!(ms > 0)) throw new InvalidArgumentError("must be a time above 0 such as '500ms', '10s' or '5m'")
  return ms
}

const urlArg = (value: string): string => {
  let protocol: string | undefined
  try {
    protocol = new URL(value).protocol
  } catch {}
  if (protocol !== 'http:' && protocol !== 'https:') {
    throw new InvalidArgumentError('must be an http:// or https:// URL, e.g. http://127.0.0.1:8080')
  }
  return value
}

/** Adds `taureau doctor` and `taureau ready` to the program. */
export function addDoctorCommands(program: Command): void {
  program
    .command('doctor')
    .description(
      'check the install: Node.js, the SQLite addon, the config, the data dir, ports, clock and disk space',
    )
    .option('--config <file>', 'YAML config file (env TAUREAU_CONFIG), as for `taureau gateway`')
    .option('--data <dir>', 'data directory (env TAUREAU_DATA; default .taureau)')
    .option('--json', 'print the results as a JSON array')
    .addHelpText('after', '\nExits 1 when a check fails, 0 otherwise (warnings included).')
    .action(async (flags: { config?: string; data?: string; json?: boolean }) => {
      // Loaded here so that `--help` and the other commands do not load the checks.
      const { formatDoctorReport, runDoctor } = await import('./doctor.ts')
      const results = await runDoctor({ file: flags.config, flags: { data: flags.data } })
      console.log(flags.json ? JSON.stringify(results, null, 2) : formatDoctorReport(results))
      if (results.some((result) => result.status === 'fail')) process.exitCode = 1
    })

  program
    .command('ready')
    .description("wait until the gateway answers GET /healthz with 200 (the systemd unit's ExecStartPost)")
    .option(
      '--config <file>',
      'YAML config file (env TAUREAU_CONFIG) to take host, http.port and basePath from',
    )
    .option('--url <url>', "the gateway's base URL instead, e.g. http://127.0.0.1:8080/taureau", urlArg)
    .addOption(
      new Option('--timeout <time>', "give up after this long, e.g. '30s' or '2m'")
        .argParser(timeoutArg)
        .default(DEFAULT_READY_TIMEOUT_MS, '60s'),
    )
    .addHelpText(
      'after',
      [
        '',
        'Polls every 250 ms; exits 0 once ready, 1 at the timeout with the last error.',
        'With http.tls the URL is https:// and the certificate is checked: pass --url with the name',
        'the certificate holds, and NODE_EXTRA_CA_CERTS=FILE for a private CA.',
      ].join('\n'),
    )
    .action(async (flags: { config?: string; url?: string; timeout: number }) => {
      const { gatewayBaseUrl, waitForHealth } = await import('./doctor.ts')
      let baseUrl = flags.url
      if (baseUrl === undefined) {
        const { loadConfig } = await import('./config.ts')
        // Invalid config: a GatewayError, reported by the CLI's error handler in one line.
        baseUrl = gatewayBaseUrl(loadConfig({ file: flags.config }))
      }
      const outcome = await waitForHealth(baseUrl, { timeoutMs: flags.timeout })
      if (outcome.ready) {
        console.log(`ready at ${baseUrl} after ${outcome.elapsedMs} ms`)
        return
      }
      console.error(
        `taureau: Cannot see the gateway ready as /healthz did not answer 200 within ${flags.timeout} ms: ${outcome.lastError}`,
      )
      process.exitCode = 1
    })
}
