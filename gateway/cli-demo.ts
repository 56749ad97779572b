// The CLI's `demo` command: the whole system on one box, see gateway/demo.ts.
import { type Command, InvalidArgumentError, Option } from 'commander'
import { portArg, wholeNumberArg } from './cli-args.ts'
import { closeOnSignals } from './cli-signals.ts'

interface DemoFlags {
  data?: string
  cloudData?: string
  config?: string
  host?: string
  mqttPort?: number
  wsPort?: number
  httpPort?: number
  cloudPort: number
  devices: number
  rate: number
  interval: number
  logLevel: string
}

const rateArg = (value: string): number => {
  const rate = Number(value)
  if (value.trim() === '' || !Number.isFinite(rate) || rate <= 0 || rate > 1000)
    throw new InvalidArgumentError('must be a number of readings per second above 0, at most 1000')
  return rate
}

/** The address a browser on this machine or the LAN reaches for a listening address. */
function browserHost(host: string): string {
  return host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host
}

export function addDemoCommand(program: Command): void {
  program
    .command('demo')
    .description(
      'run the demo: a gateway, a cloud receiver paired with it, a tenant with sample functions and a simulated fleet',
    )
    .option('--data <dir>', "the gateway's data directory (env TAUREAU_DATA; default .taureau)")
    .option('--cloud-data <dir>', "the cloud receiver's data directory (default .taureau-cloud)")
    .option('--config <file>', 'YAML config file for the gateway (env TAUREAU_CONFIG)')
    .option('--host <address>', 'address the gateway listens on (env TAUREAU_HOST; default 0.0.0.0)')
    .option('--mqtt-port <port>', 'MQTT/TCP port, 0 for any (default 1883)', portArg)
    .option('--ws-port <port>', 'MQTT/WebSocket port, 0 for any (default 8083)', portArg)
    .option('--http-port <port>', 'API and UI port, 0 for any (default 8080)', portArg)
    .option('--cloud-port <port>', "the receiver's port on 127.0.0.1, 0 for any", portArg, 7070)
    .option('--devices <n>', 'simulated devices, 0 for none', wholeNumberArg(0, 10_000, 'devices'), 20)
    .option('--rate <hz>', 'readings per second of each device', rateArg, 1)
    .option('--interval <s>', 'seconds between status lines', wholeNumberArg(1, 3600, 'interval'), 10)
    .addOption(
      new Option('--log-level <level>', "the gateway's log level")
        .choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
        .default('warn'),
    )
    .action(async (flags: DemoFlags) => {
      const { startDemo, DEMO_TENANT, SAMPLE_FUNCTIONS } = await import('./demo.ts')
      const startedAt = performance.now()
      const demo = await startDemo({
        data: flags.data,
        cloudData: flags.cloudData,
        configFile: flags.config,
        host: flags.host,
        mqttPort: flags.mqttPort,
        wsPort: flags.wsPort,
        httpPort: flags.httpPort,
        cloudPort: flags.cloudPort,
        devices: flags.devices,
        rate: flags.rate,
        logLevel: flags.logLevel,
      })
      const { gateway } = demo
      const { host, mqttPort, httpPort } = gateway.addresses
      const data = gateway.config.data
      const fleetLine =
        demo.fleet === undefined
          ? 'no simulated devices (--devices 0)'
          : `${flags.devices} simulated devices at ${flags.rate}/s each on sensors/DEVICE/KIND`
      console.log(
        [
          `Taureau demo is running${demo.createdTenant ? '' : ` (tenant '${DEMO_TENANT}' from an earlier run, left as it was)`}`,
          `  web UI     http://${browserHost(host)}:${httpPort}/  (from another machine: http://THIS-BOX:${httpPort}/)`,
          `  sign in    with the admin token: ${gateway.adminToken}`,
          `             (it is also in ${data}/admin-token)`,
          `  MQTT       mqtt://${browserHost(host)}:${mqttPort}, tenant '${DEMO_TENANT}': ${fleetLine}`,
          `  functions  ${SAMPLE_FUNCTIONS.map((fn) => fn.name).join(', ')}`,
          `  cloud      a receiver on 127.0.0.1:${demo.receiver.port}; see what arrived with`,
          `             taureau cloud records --data ${demo.cloudDataDir} --tenant ${DEMO_TENANT}`,
          'Ctrl-C stops the demo; its data stays for the next start.',
        ].join('\n'),
      )

      let firstRecords = false
      const report = async (): Promise<void> => {
        const counts = await demo.cloudCounts()
        const total = Object.values(counts).reduce((sum, count) => sum + count, 0)
        const fleet = demo.fleet?.stats()
        const parts = [
          fleet === undefined
            ? undefined
            : `devices ${fleet.connected}/${fleet.devices} online, ${fleet.acked} readings acknowledged`,
          `cloud ${total} records (${Object.entries(counts)
            .map(([stream, count]) => `${stream} ${count}`)
            .join(', ')})`,
        ]
        if (!firstRecords && total > 0) {
          firstRecords = true
          console.log(
            `The first records reached the cloud store ${Math.round((performance.now() - startedAt) / 1000)} s after start.`,
          )
        }
        console.log(`[${new Date().toISOString().slice(11, 19)}] ${parts.filter(Boolean).join(' · ')}`)
      }
      const timer = setInterval(() => {
        report().catch((error: unknown) => console.error(`taureau demo: ${(error as Error).message}`))
      }, flags.interval * 1000)

      closeOnSignals(async () => {
        clearInterval(timer)
        await demo.close()
        console.log('The demo stopped.')
      })
    })
}
