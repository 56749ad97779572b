// The CLI's `sim` command: a fleet of simulated sensor devices publishing to a gateway.
import { closeSync, fchmodSync, openSync, readFileSync, writeSync } from 'node:fs'
import { type Command, InvalidArgumentError, Option } from 'commander'
import type { DeviceCredentials, FleetStats, FleetSummary, SensorKind } from '../firmware-sim/index.ts'
import { ApiError, resolveApiTarget } from './api-client.ts'
import { wholeNumberArg } from './cli-args.ts'
import { parseDuration } from './duration.ts'

/** Usage errors exit 1, like every command of the CLI (commander's own code for them). */
const USAGE_EXIT_CODE = 1
/** How often the progress line is redrawn on a terminal, ms. */
const TTY_REDRAW_MS = 500
/** Sensor kinds, repeated here so that `--help` and flag parsing do not load the simulator. */
const KINDS: readonly SensorKind[] = ['temperature', 'humidity', 'vibration', 'power', 'gps']

interface SimFlags {
  gateway: string
  tenant?: string
  devices?: number
  rate: number
  credentials?: string
  provision?: boolean
  createTenant?: boolean
  save?: string
  url?: string
  token?: string
  data?: string
  qos: '0' | '1'
  format: 'json' | 'binary'
  burst: number
  arrivals: 'steady' | 'poisson'
  kinds?: SensorKind[]
  prefix: string
  duration?: number
  seed: number
  interval: number
  connectConcurrency: number
  json?: boolean
}

const rateArg = (value: string): number => {
  const rate = Number(value)
  if (value.trim() === '' || !Number.isFinite(rate) || rate <= 0) {
    throw new InvalidArgumentError('must be a number of readings per second above 0, e.g. 1 or 0.2')
  }
  return rate
}

/** `500ms`, `10s`, `5m`, `1h`; a bare number is seconds. */
const durationArg = (value: string): number => {
  const ms = parseDuration(/^\d+(\.\d+)?$/.test(value) ? `${value}s` : value) ?? Number.NaN
  if (!(ms > 0)) throw new InvalidArgumentError("must be a time above 0 such as '500ms', '10s', '5m' or '1h'")
  return ms
}

const gatewayArg = (value: string): string => {
  let protocol: string | undefined
  try {
    protocol = new URL(value).protocol
  } catch {}
  if (protocol === undefined || !['mqtt:', 'mqtts:', 'ws:', 'wss:'].includes(protocol)) {
    throw new InvalidArgumentError(
      'must be an MQTT URL: mqtt://HOST:PORT, mqtts://, ws://HOST:PORT/mqtt or wss://',
    )
  }
  return value
}

const kindsArg = (value: string): SensorKind[] => {
  const kinds = value.split(',').map((kind) => kind.trim())
  const unknown = kinds.find((kind) => !KINDS.includes(kind as SensorKind))
  if (unknown !== undefined) {
    throw new InvalidArgumentError(
      `'${unknown}' is not a sensor kind; use a comma-separated list of ${KINDS.join(', ')}`,
    )
  }
  return kinds as SensorKind[]
}

const seedArg = (value: string): number => {
  if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError('must be a whole number')
  return Number(value)
}

/** One line of counters: the live progress line and the periodic lines say the same. */
function progressLine(stats: FleetStats): string {
  return (
    `sim ${Math.round(stats.elapsedMs / 1000)}s: ${stats.connected}/${stats.devices} connected, ` +
    `sent ${stats.sent}, acked ${stats.acked} (${stats.ratePerSec.toFixed(1)}/s), queued ${stats.queued}, ` +
    `dropped ${stats.dropped}, reconnects ${stats.reconnects}, connect failures ${stats.connectFailures}`
  )
}

function summaryText(summary: FleetSummary): string {
  const kinds = Object.entries(summary.perKind)
    .map(
      ([kind, counts]) => `  ${kind}: ${counts.devices} devices, sent ${counts.sent}, acked ${counts.acked}`,
    )
    .join('\n')
  const { p50, p99, max } = summary.ackLatencyMs
  return [
    `sim: ${summary.devices} devices for ${(summary.elapsedMs / 1000).toFixed(1)} s: sent ${summary.sent}, acked ${summary.acked}, ` +
      `queued ${summary.queued}, dropped ${summary.dropped}, reconnects ${summary.reconnects}, ` +
      `connect failures ${summary.connectFailures}, anomalies ${summary.anomalies}`,
    `ack latency: p50 ${p50} ms, p99 ${p99} ms, max ${max} ms`,
    kinds,
  ].join('\n')
}

/** Writes the credentials readable by the owner only (they hold every device's secret). */
function saveCredentials(file: string, devices: DeviceCredentials[]): void {
  const fd = openSync(file, 'w', 0o600)
  try {
    // An existing file keeps its mode through open(): narrow it before the secrets go in.
    fchmodSync(fd, 0o600)
    writeSync(fd, `${JSON.stringify(devices, null, 2)}\n`)
  } finally {
    closeSync(fd)
  }
}

/** The devices to simulate: from `--credentials FILE`, or provisioned now with `--provision`. */
async function devicesOf(flags: SimFlags, usage: (message: string) => never): Promise<DeviceCredentials[]> {
  const { deviceIds, parseDeviceCredentials, provisionDevices, SimError } = await import(
    '../firmware-sim/index.ts'
  )
  if (flags.credentials !== undefined) {
    let devices: DeviceCredentials[]
    try {
      devices = parseDeviceCredentials(JSON.parse(readFileSync(flags.credentials, 'utf8')))
    } catch (error) {
      const why =
        error instanceof SimError
          ? error.message
          : `Cannot read ${flags.credentials}: ${(error as Error).message}`
      return usage(`error: ${why}`)
    }
    if (flags.devices !== undefined && flags.devices > devices.length) {
      usage(
        `error: --devices ${flags.devices} asks for more devices than the ${devices.length} in ${flags.credentials}`,
      )
    }
    const wrongTenant =
      flags.tenant === undefined
        ? undefined
        : devices.find((device) => !device.username.endsWith(`@${flags.tenant}`))
    if (wrongTenant !== undefined) {
      usage(
        `error: device '${wrongTenant.id}' in ${flags.credentials} signs in as '${wrongTenant.username}', not in tenant '${flags.tenant}'`,
      )
    }
    return devices.slice(0, flags.devices ?? devices.length)
  }
  if (flags.tenant === undefined || flags.devices === undefined) {
    return usage('error: --provision needs --tenant and --devices')
  }
  let ids: string[] = []
  try {
    ids = deviceIds(flags.devices, flags.prefix)
  } catch (error) {
    usage(`error: --prefix: ${(error as Error).message}`)
  }
  const target = resolveApiTarget(flags)
  const startMs = performance.now()
  const devices = await provisionDevices({
    apiUrl: target.url,
    token: target.token,
    tenant: flags.tenant,
    ids,
    createTenant: flags.createTenant === true,
  })
  const seconds = ((performance.now() - startMs) / 1000).toFixed(1)
  console.error(`sim: provisioned ${devices.length} devices in tenant ${flags.tenant} in ${seconds} s`)
  if (flags.save !== undefined) saveCredentials(flags.save, devices)
  return devices
}

/** Shows the fleet's counters: one line redrawn in place on a terminal, else a line per interval. */
function startProgress(stats: () => FleetStats, intervalMs: number, lastFailure: () => string | undefined) {
  const stream = process.stderr
  const live = stream.isTTY === true && (process.env.CI ?? '') === ''
  let failuresShown = 0
  const line = (): string => {
    const current = stats()
    const failure = lastFailure()
    const withFailure =
      failure !== undefined && current.connectFailures > failuresShown ? `; last failure: ${failure}` : ''
    if (!live) failuresShown = current.connectFailures
    return progressLine(current) + withFailure
  }
  const timer = live
    ? setInterval(
        // Cut to the terminal's width: a wrapped line could not be redrawn in place (a pty without a size says 0).
        () => stream.write(`\r\x1b[2K${line().slice(0, (stream.columns > 0 ? stream.columns : 80) - 1)}`),
        TTY_REDRAW_MS,
      )
    : setInterval(() => stream.write(`${line()}\n`), intervalMs)
  return {
    stop() {
      clearInterval(timer)
      if (live) stream.write('\r\x1b[2K')
    },
  }
}

async function runSim(flags: SimFlags, usage: (message: string) => never): Promise<void> {
  const devices = await devicesOf(flags, usage)
  const { startFleet } = await import('../firmware-sim/index.ts')
  let lastFailure: string | undefined
  const fleet = startFleet({
    url: flags.gateway,
    devices,
    ratePerSec: flags.rate,
    qos: flags.qos === '0' ? 0 : 1,
    format: flags.format,
    burst: flags.burst,
    arrivals: flags.arrivals,
    seed: flags.seed,
    connectConcurrency: flags.connectConcurrency,
    ...(flags.kinds === undefined ? {} : { kinds: flags.kinds }),
    ...(flags.duration === undefined ? {} : { durationMs: flags.duration }),
    onConnectFailure(failure) {
      lastFailure = `${failure.device}: ${failure.reason}`
    },
  })
  const progress = startProgress(fleet.stats, flags.interval, () => lastFailure)
  let stopping = false
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      console.error(`taureau: ${signal} again, exiting now`)
      process.exit(130)
    }
    stopping = true
    void fleet.stop()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const summary = await fleet.done
  progress.stop()
  process.off('SIGINT', onSignal)
  process.off('SIGTERM', onSignal)
  console.log(flags.json ? JSON.stringify(summary, null, 2) : summaryText(summary))
  if (summary.acked === 0 && summary.connectFailures > 0) {
    console.error(`taureau: no device could connect to ${flags.gateway}; last failure: ${lastFailure}`)
    process.exitCode = 1
  }
}

/** Adds `taureau sim` to the program. */
export function addSimCommand(program: Command): void {
  const command = program
    .command('sim')
    .description('simulate a fleet of sensor devices publishing to a gateway (see docs/simulator.md)')
    .requiredOption('--gateway <url>', 'the MQTT URL: mqtt://HOST:PORT or ws://HOST:PORT/mqtt', gatewayArg)
    .requiredOption('--rate <hz>', 'mean readings per second per device (0.2 is one every 5 s)', rateArg)
    .option(
      '--devices <n>',
      'how many devices (with --credentials: the first N of the file)',
      wholeNumberArg(1),
    )
    .option('--tenant <tenant>', 'the tenant (with --credentials: checked against the usernames)')
    .addOption(
      new Option('--credentials <file>', 'JSON list of {id, username, password}, as --save writes').conflicts(
        'provision',
      ),
    )
    .option('--provision', "make the devices through the gateway's API (existing ones get a new secret)")
    .option('--create-tenant', 'with --provision: create the tenant when it does not exist')
    .option('--save <file>', 'with --provision: write the credentials to this file (mode 0600)')
    .option('--url <url>', 'with --provision: API base URL (env TAUREAU_URL; default from DATA/api-url)')
    .option('--token <token>', 'with --provision: API token (env TAUREAU_TOKEN; default DATA/admin-token)')
    .option('--data <dir>', "with --provision: the gateway's data directory, to find the URL and token in")
    .option('--prefix <prefix>', 'with --provision: device ids are PREFIX-0001, PREFIX-0002, …', 'sim')
    .addOption(new Option('--qos <qos>', 'QoS of the readings').choices(['0', '1']).default('1'))
    .addOption(new Option('--format <format>', 'payload format').choices(['json', 'binary']).default('json'))
    .option(
      '--burst <n>',
      'readings sent back to back per burst (the mean rate stays --rate)',
      wholeNumberArg(1),
      1,
    )
    .addOption(
      new Option('--arrivals <arrivals>', 'times between bursts')
        .choices(['steady', 'poisson'])
        .default('steady'),
    )
    .option('--kinds <list>', `sensor kinds assigned round-robin (default all: ${KINDS.join(',')})`, kindsArg)
    .option(
      '--duration <time>',
      "stop after this long, e.g. '60s' or '5m' (default: until SIGINT/SIGTERM)",
      durationArg,
    )
    .option('--seed <n>', 'seed of every random draw', seedArg, 1)
    .addOption(
      new Option('--interval <time>', 'progress line interval when stderr is not a terminal')
        .argParser(durationArg)
        .default(10_000, '10s'),
    )
    .option('--connect-concurrency <n>', 'connection attempts awaiting CONNACK at once', wholeNumberArg(1), 3)
    .option('--json', 'print the summary as JSON on stdout')
  command.action(async (flags: SimFlags) => {
    const usage = (message: string): never => command.error(message, { exitCode: USAGE_EXIT_CODE })
    if (flags.provision !== true) {
      const needsProvision = (['createTenant', 'save', 'url', 'token', 'data'] as const).find(
        (name) => flags[name] !== undefined,
      )
      if (needsProvision !== undefined) {
        const flag = `--${needsProvision.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`
        usage(`error: ${flag} only applies with --provision`)
      }
      if (flags.credentials === undefined) {
        usage(
          'error: pass --credentials FILE (as written by --provision --save FILE) or --provision to make the devices',
        )
      }
    }
    try {
      await runSim(flags, usage)
    } catch (error) {
      // Refusals of the API and of the simulator are one line, not a stack.
      if (error instanceof ApiError || (error instanceof Error && error.name === 'SimError')) {
        console.error(`taureau: ${error.message}`)
        process.exitCode = 1
        return
      }
      throw error
    }
  })
}
