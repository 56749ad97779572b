import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Command, InvalidArgumentError, Option } from 'commander'
import packageJson from '../package.json' with { type: 'json' }
import { ApiError, type ApiTarget, callApi, followEvents, resolveApiTarget } from './api-client.ts'
import { portArg } from './cli-args.ts'
import { addCloudCommands } from './cli-cloud.ts'
import { addDemoCommand } from './cli-demo.ts'
import { addDoctorCommands } from './cli-doctor.ts'
import { closeOnSignals } from './cli-signals.ts'
import { addSimCommand } from './cli-sim.ts'
import type { ConfigLayer } from './config.ts'
import { GatewayError } from './errors.ts'
import type { FunctionVersion } from './function-store.ts'
import type { FunctionView, TestInvocation } from './functions.ts'

const program = new Command()
program
  .name('taureau')
  .description('Taureau edge serverless gateway: MQTT broker, tenant functions, private uplink')
  .version(packageJson.version)
  // Options before a command belong to the program, after it to the command: `fn invoke --version`.
  .enablePositionalOptions()
  .showHelpAfterError()

const countArg = (value: string): number => {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('must be a whole number')
  return Number(value)
}

program
  .command('gateway')
  .description('run the gateway: MQTT broker (TCP and WebSocket) and the HTTP API')
  .option('--data <dir>', 'data directory (env TAUREAU_DATA; default .taureau)')
  .option('--config <file>', 'YAML config file (env TAUREAU_CONFIG)')
  .option('--host <address>', 'address to listen on (env TAUREAU_HOST; default 0.0.0.0)')
  .option('--mqtt-port <port>', 'MQTT/TCP port, 0 for any (env TAUREAU_MQTT_PORT; default 1883)', portArg)
  .option('--ws-port <port>', 'MQTT/WebSocket port, 0 for any (env TAUREAU_WS_PORT; default 8083)', portArg)
  .option('--http-port <port>', 'API and UI port, 0 for any (env TAUREAU_HTTP_PORT; default 8080)', portArg)
  .option('--anonymous-tenant <tenant>', 'put clients without credentials in this tenant (development only)')
  .option('--cloud <host:port>', 'stream the outbox to this cloud receiver (env TAUREAU_CLOUD)')
  .option(
    '--cloud-key <key>',
    "the cloud receiver's public key, from `taureau keys` on its data dir (env TAUREAU_CLOUD_KEY)",
  )
  .addOption(
    new Option('--log-level <level>', 'log level (env TAUREAU_LOG_LEVEL)').choices([
      'fatal',
      'error',
      'warn',
      'info',
      'debug',
      'trace',
      'silent',
    ]),
  )
  .action(async (flags: Record<string, string | number | undefined>) => {
    const layer: ConfigLayer = {
      data: flags.data,
      host: flags.host,
      mqtt: { port: flags.mqttPort, wsPort: flags.wsPort, anonymousTenant: flags.anonymousTenant },
      http: { port: flags.httpPort },
      log: { level: flags.logLevel },
      uplink: { cloud: flags.cloud, cloudKey: flags.cloudKey },
    }
    // Loaded here so the API commands start without the broker's modules.
    const { loadConfig } = await import('./config.ts')
    const { createGateway } = await import('./gateway.ts')
    const config = loadConfig({ file: flags.config as string | undefined, flags: layer })
    const gateway = await createGateway({ config })
    const { host, mqttPort, wsPort, httpUrl } = gateway.addresses
    console.log(
      `taureau gateway listening on mqtt://${host}:${mqttPort} and ws://${host}:${wsPort}/mqtt; API and UI at ${httpUrl} (data ${config.data}, admin token in ${config.data}/admin-token)`,
    )
    closeOnSignals(() => gateway.close())
  })

interface ApiFlags {
  url?: string
  token?: string
  data?: string
  json?: boolean
}

/** Adds the options every API command shares. */
function apiCommand(parent: Command, name: string, description: string): Command {
  return parent
    .command(name)
    .description(description)
    .option('--url <url>', 'API base URL (env TAUREAU_URL; default from DATA/api-url)')
    .option('--token <token>', 'API token (env TAUREAU_TOKEN; default DATA/admin-token)')
    .option('--data <dir>', 'gateway data directory to find the URL and token in')
    .option('--json', 'print machine-readable JSON')
}

async function run(
  flags: ApiFlags,
  call: (target: ApiTarget) => Promise<unknown>,
  human: (result: unknown) => string,
) {
  const target = resolveApiTarget(flags)
  const result = await call(target)
  if (flags.json) console.log(JSON.stringify(result ?? { ok: true }, null, 2))
  else console.log(human(result))
}

function table(rows: Array<Record<string, unknown>>, columns: string[]): string {
  if (rows.length === 0) return '(none)'
  const cells = rows.map((row) => columns.map((column) => String(row[column] ?? '-')))
  const widths = columns.map((column, i) =>
    Math.max(column.length, ...cells.map((cell) => (cell[i] as string).length)),
  )
  const line = (values: string[]) =>
    values
      .map((value, i) => value.padEnd(widths[i] as number))
      .join('  ')
      .trimEnd()
  return [line(columns.map((column) => column.toUpperCase())), ...cells.map(line)].join('\n')
}

/** The quota options `tenant add` and `tenant quotas` take: flag, API key, help. */
const QUOTA_OPTIONS = [
  ['--max-connections <n>', 'maxConnections', 'connections at once'],
  ['--max-messages-per-sec <n>', 'maxMessagesPerSec', 'publishes per second'],
  ['--burst-messages <n>', 'burstMessages', 'burst above the rate'],
  ['--max-payload-bytes <n>', 'maxPayloadBytes', 'largest payload'],
  ['--max-retained-messages <n>', 'maxRetainedMessages', 'retained messages kept'],
  ['--max-persistent-sessions <n>', 'maxPersistentSessions', 'persistent sessions kept'],
  ['--max-functions <n>', 'maxFunctions', 'functions deployed'],
  ['--max-function-memory-mb <n>', 'maxFunctionMemoryMb', 'largest memory limit of a function, MiB'],
  ['--max-function-timeout-ms <n>', 'maxFunctionTimeoutMs', 'longest deadline of an invocation, ms'],
  ['--max-state-keys <n>', 'maxStateKeys', 'function state keys kept'],
  ['--max-state-bytes <n>', 'maxStateBytes', 'function state bytes kept'],
  ['--outbox-bytes <n>', 'outboxBytes', 'outbox bytes waiting for the uplink'],
  ['--outbox-ttl-ms <n>', 'outboxTtlMs', 'longest wait of an outbox record, ms'],
] as const

function withQuotaOptions(command: Command): Command {
  for (const [flag, , help] of QUOTA_OPTIONS) command.option(flag, help, countArg)
  command.option(
    '--outbox-policy <policy>',
    'at the outbox bound: refuse, drop-oldest or drop-lowest-priority',
  )
  command.option(
    '--outbox-priority <stream=n>',
    'priority of an outbox stream (repeatable; higher is kept longer)',
    (value: string, previous: Record<string, number> = {}) => {
      const match = /^([^=]+)=(-?\d+)$/.exec(value)
      if (match === null) throw new InvalidArgumentError('expected STREAM=N, N an integer')
      return { ...previous, [match[1] as string]: Number(match[2]) }
    },
  )
  return command
}

/** The quota values given as options, keyed as the API names them. */
function quotasFromFlags(flags: Record<string, unknown>): Record<string, unknown> {
  const quotas: Record<string, unknown> = {}
  for (const [, key] of QUOTA_OPTIONS) {
    const value = flags[key]
    if (typeof value === 'number') quotas[key] = value
  }
  if (typeof flags.outboxPolicy === 'string') quotas.outboxPolicy = flags.outboxPolicy
  if (flags.outboxPriority !== undefined) quotas.outboxStreamPriorities = flags.outboxPriority
  return quotas
}

const tenant = program.command('tenant').description('manage tenants')
withQuotaOptions(apiCommand(tenant, 'add', 'create a tenant').argument('<tenant>', 'tenant id')).action(
  (tenantId: string, flags: ApiFlags & Record<string, unknown>) => {
    const quotas = quotasFromFlags(flags)
    return run(
      flags,
      (target) => callApi(target, 'POST', '/tenants', { id: tenantId, quotas }),
      () => `created tenant ${tenantId}`,
    )
  },
)
apiCommand(tenant, 'list', 'list tenants').action((flags: ApiFlags) =>
  run(
    flags,
    (target) => callApi(target, 'GET', '/tenants'),
    (result) => {
      const tenants = (
        result as { tenants: Array<Record<string, unknown> & { quotas: Record<string, number> }> }
      ).tenants
      return table(
        tenants.map((t) => ({ ...t, ...t.quotas })),
        ['id', 'connections', 'maxConnections', 'maxMessagesPerSec', 'maxPayloadBytes', 'createdAt'],
      )
    },
  ),
)
apiCommand(tenant, 'remove', 'delete a tenant with its devices, sessions and retained messages')
  .argument('<tenant>', 'tenant id')
  .action((tenantId: string, flags: ApiFlags) =>
    run(
      flags,
      (target) => callApi(target, 'DELETE', `/tenants/${encodeURIComponent(tenantId)}`),
      () => `removed tenant ${tenantId}`,
    ),
  )

withQuotaOptions(
  apiCommand(tenant, 'quotas', "show a tenant's quotas, or set its own values with the options").argument(
    '<tenant>',
    'tenant id',
  ),
).action((tenantId: string, flags: ApiFlags & Record<string, unknown>) => {
  const given = quotasFromFlags(flags)
  const path = `/tenants/${encodeURIComponent(tenantId)}/quotas`
  return run(
    flags,
    async (target) => {
      if (Object.keys(given).length === 0) return callApi(target, 'GET', path)
      const current = (await callApi(target, 'GET', path)) as { quotaOverrides: Record<string, unknown> }
      return callApi(target, 'PUT', path, { ...current.quotaOverrides, ...given })
    },
    (result) => {
      const { quotas, quotaOverrides } = result as {
        quotas: Record<string, unknown>
        quotaOverrides: Record<string, unknown>
      }
      return Object.entries(quotas)
        .map(
          ([key, value]) =>
            `${key}: ${typeof value === 'object' ? JSON.stringify(value) : value}${key in quotaOverrides ? '' : ' (default)'}`,
        )
        .join('\n')
    },
  )
})

const acl = program.command('acl').description('read or replace the ACL rules of a tenant or one device')
const aclPath = (tenantId: string, deviceId?: string) =>
  `/tenants/${encodeURIComponent(tenantId)}${deviceId === undefined ? '' : `/devices/${encodeURIComponent(deviceId)}`}/acl`
const showRules = (result: unknown): string =>
  table((result as { rules: Array<Record<string, unknown>> }).rules, ['permission', 'action', 'filter'])
apiCommand(acl, 'get', 'print the rules in evaluation order')
  .argument('<tenant>', 'tenant id')
  .argument('[device]', "a device id for the device's own rules")
  .action((tenantId: string, deviceId: string | undefined, flags: ApiFlags) =>
    run(flags, (target) => callApi(target, 'GET', aclPath(tenantId, deviceId)), showRules),
  )
apiCommand(acl, 'set', 'replace the rules with those of a JSON file: [{ "action", "filter", "permission" }]')
  .argument('<tenant>', 'tenant id')
  .argument('[device]', "a device id to set the device's own rules")
  .requiredOption('--file <file>', "JSON file with the rules, or '-' for standard input")
  .action(async (tenantId: string, deviceId: string | undefined, flags: ApiFlags & { file: string }) => {
    let text: string
    try {
      text = flags.file === '-' ? await readStdin() : readFileSync(flags.file, 'utf8')
    } catch (cause) {
      throw new ApiError(
        `Cannot read the rules file ${flags.file}: ${(cause as Error).message}`,
        0,
        'invalid_input',
      )
    }
    let rules: unknown
    try {
      rules = JSON.parse(text)
    } catch (cause) {
      throw new ApiError(
        `Cannot read the rules as ${flags.file} is not JSON: ${(cause as Error).message}`,
        0,
        'invalid_input',
      )
    }
    const body = Array.isArray(rules) ? { rules } : rules
    return run(flags, (target) => callApi(target, 'PUT', aclPath(tenantId, deviceId), body), showRules)
  })

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

const device = program.command('device').description("manage a tenant's devices")
const devicePath = (tenantId: string, deviceId = '') =>
  `/tenants/${encodeURIComponent(tenantId)}/devices${deviceId === '' ? '' : `/${encodeURIComponent(deviceId)}`}`
const credentials = (result: unknown): string => {
  const { username, secret } = result as { username: string; secret: string }
  return `username: ${username}\nsecret:   ${secret}\n(the secret is shown only now; store it on the device)`
}
apiCommand(device, 'add', 'add a device; prints its username and secret once')
  .argument('<tenant>', 'tenant id')
  .argument('<device>', 'device id')
  .action((tenantId: string, deviceId: string, flags: ApiFlags) =>
    run(flags, (target) => callApi(target, 'POST', devicePath(tenantId), { id: deviceId }), credentials),
  )
apiCommand(device, 'list', "list a tenant's devices")
  .argument('<tenant>', 'tenant id')
  .action((tenantId: string, flags: ApiFlags) =>
    run(
      flags,
      (target) => callApi(target, 'GET', devicePath(tenantId)),
      (result) =>
        table((result as { devices: Array<Record<string, unknown>> }).devices, [
          'id',
          'username',
          'connections',
          'lastSeenAt',
          'createdAt',
        ]),
    ),
  )
apiCommand(device, 'remove', 'remove a device and disconnect it')
  .argument('<tenant>', 'tenant id')
  .argument('<device>', 'device id')
  .action((tenantId: string, deviceId: string, flags: ApiFlags) =>
    run(
      flags,
      (target) => callApi(target, 'DELETE', devicePath(tenantId, deviceId)),
      () => `removed device ${deviceId}`,
    ),
  )
apiCommand(device, 'rotate', 'give a device a new secret; its connections close')
  .argument('<tenant>', 'tenant id')
  .argument('<device>', 'device id')
  .action((tenantId: string, deviceId: string, flags: ApiFlags) =>
    run(flags, (target) => callApi(target, 'POST', `${devicePath(tenantId, deviceId)}/rotate`), credentials),
  )

const user = program.command('user').description('manage the people who sign in to the web UI')
/** The password of `--password-stdin`, or a new random one that is printed once. */
async function passwordOf(flags: {
  passwordStdin?: boolean
}): Promise<{ password: string; generated: boolean }> {
  if (flags.passwordStdin) return { password: (await readStdin()).replace(/\r?\n$/, ''), generated: false }
  return { password: randomBytes(15).toString('base64url'), generated: true }
}
apiCommand(user, 'add', 'add a user: an administrator, or with --tenant a user of one tenant')
  .argument('<name>', 'user name (what they type at sign-in)')
  .option('--tenant <tenant>', 'the one tenant the user sees and manages')
  .option('--password-stdin', 'read the password from stdin (default: make one and print it once)')
  .action(async (name: string, flags: ApiFlags & { tenant?: string; passwordStdin?: boolean }) => {
    const { password, generated } = await passwordOf(flags)
    await run(
      flags,
      (target) => callApi(target, 'POST', '/users', { name, password, tenant: flags.tenant ?? null }),
      () =>
        `added ${flags.tenant === undefined ? 'administrator' : `user of tenant ${flags.tenant}`} ${name}` +
        (generated ? `\npassword: ${password}\n(shown only now)` : ''),
    )
  })
apiCommand(user, 'list', 'list users').action((flags: ApiFlags) =>
  run(
    flags,
    (target) => callApi(target, 'GET', '/users'),
    (result) =>
      table((result as { users: Array<Record<string, unknown>> }).users, ['name', 'tenant', 'createdAt']),
  ),
)
apiCommand(user, 'password', "set a user's password; their sessions end")
  .argument('<name>', 'user name')
  .option('--password-stdin', 'read the password from stdin (default: make one and print it once)')
  .action(async (name: string, flags: ApiFlags & { passwordStdin?: boolean }) => {
    const { password, generated } = await passwordOf(flags)
    await run(
      flags,
      (target) => callApi(target, 'PUT', `/users/${encodeURIComponent(name)}/password`, { password }),
      () => `set the password of ${name}${generated ? `\npassword: ${password}\n(shown only now)` : ''}`,
    )
  })
apiCommand(user, 'remove', 'remove a user; their sessions end')
  .argument('<name>', 'user name')
  .action((name: string, flags: ApiFlags) =>
    run(
      flags,
      (target) => callApi(target, 'DELETE', `/users/${encodeURIComponent(name)}`),
      () => `removed user ${name}`,
    ),
  )

const token = program.command('token').description('manage API tokens')
apiCommand(token, 'add', 'make an API token (admin, or with --tenant one tenant); prints it once')
  .argument('<label>', 'what the token is for')
  .option('--tenant <tenant>', 'the one tenant the token may use')
  .action((label: string, flags: ApiFlags & { tenant?: string }) =>
    run(
      flags,
      (target) => callApi(target, 'POST', '/tokens', { label, tenant: flags.tenant ?? null }),
      (result) => {
        const { token: made, secret } = result as { token: { id: number }; secret: string }
        return `token ${made.id}: ${secret}\n(shown only now)`
      },
    ),
  )
apiCommand(token, 'list', 'list API tokens (never their secrets)').action((flags: ApiFlags) =>
  run(
    flags,
    (target) => callApi(target, 'GET', '/tokens'),
    (result) =>
      table((result as { tokens: Array<Record<string, unknown>> }).tokens, [
        'id',
        'label',
        'tenant',
        'createdAt',
      ]),
  ),
)
apiCommand(token, 'revoke', 'revoke an API token; sessions made with it end')
  .argument('<id>', 'token id (from token list)')
  .action((id: string, flags: ApiFlags) =>
    run(
      flags,
      (target) => callApi(target, 'DELETE', `/tokens/${encodeURIComponent(id)}`),
      () => `revoked token ${id}`,
    ),
  )

const fn = program.command('fn').description("manage a tenant's functions")
const fnPath = (tenantId: string, name = '', rest = '') =>
  `/tenants/${encodeURIComponent(tenantId)}/functions${name === '' ? '' : `/${encodeURIComponent(name)}`}${rest}`
const collect = (value: string, previous: string[] = []): string[] => [...previous, value]
const describeTriggers = (triggers: FunctionView['triggers']): string =>
  triggers
    .map((trigger) =>
      'topic' in trigger
        ? trigger.topic
        : 'every' in trigger
          ? `every ${trigger.every}`
          : 'state' in trigger
            ? `state ${trigger.state}`
            : `cron ${trigger.cron}${trigger.timezone === undefined ? '' : ` (${trigger.timezone})`}`,
    )
    .join(', ')
/** A kept version as the API lists it. */
type KeptVersion = FunctionVersion['spec'] & { version: number; current: boolean; createdAt: string }
const showFunction = (result: unknown): string => {
  const view = (result as { function: FunctionView }).function
  return [
    `function ${view.name}: version ${view.version} (latest ${view.latestVersion}), ${view.state}`,
    `triggers: ${describeTriggers(view.triggers)}`,
    `output:   ${view.output ?? '(none)'}`,
    `limits:   ${view.limits.memoryMb} MiB, ${view.limits.timeoutMs} ms`,
    ...(view.problem === null ? [] : [`problem:  ${view.problem}`]),
  ].join('\n')
}
/** `--config key=value`: the value is read as JSON when it parses, else taken as a string. */
const configValues = (pairs: string[]): Record<string, unknown> => {
  const config: Record<string, unknown> = {}
  for (const pair of pairs) {
    const at = pair.indexOf('=')
    if (at <= 0) throw new ApiError(`Cannot read --config ${pair}: expected KEY=VALUE`, 0, 'invalid_input')
    const text = pair.slice(at + 1)
    let value: unknown = text
    try {
      value = JSON.parse(text)
    } catch {}
    config[pair.slice(0, at)] = value
  }
  return config
}
const readSource = async (file: string): Promise<string> => {
  try {
    return file === '-' ? await readStdin() : readFileSync(file, 'utf8')
  } catch (cause) {
    throw new ApiError(
      `Cannot read the function source ${file}: ${(cause as Error).message}`,
      0,
      'invalid_input',
    )
  }
}

apiCommand(fn, 'deploy', 'deploy a function from a JavaScript file (a new version each time)')
  .argument('<tenant>', 'tenant id')
  .argument('<file>', "the function's source (an ES module), or '-' for standard input")
  .requiredOption('--name <name>', 'function name')
  .option('--trigger <filter>', 'run on messages matching this MQTT topic filter (repeatable)', collect)
  .option('--every <duration>', "run onSchedule every interval, e.g. '10s', '5m' (repeatable)", collect)
  .option('--cron <expression>', 'run onSchedule on a cron schedule (repeatable)', collect)
  .option(
    '--on-state <namespace>',
    'run onState on changes to this shared state namespace and those below it (repeatable)',
    collect,
  )
  .option('--timezone <zone>', "IANA time zone of the --cron schedules (default UTC), e.g. 'Europe/Paris'")
  .option('--output <topic>', "publish onMessage's return value to this topic")
  .option('--memory <mb>', 'memory limit, MiB', countArg)
  .option('--timeout <ms>', 'CPU deadline per invocation, ms', countArg)
  .option('--config <key=value>', 'a config value for ctx.config; JSON or text (repeatable)', collect)
  .option('--disabled', 'store the version without running it')
  .action(
    async (
      tenantId: string,
      file: string,
      flags: ApiFlags & {
        name: string
        trigger?: string[]
        every?: string[]
        cron?: string[]
        onState?: string[]
        timezone?: string
        output?: string
        memory?: number
        timeout?: number
        config?: string[]
        disabled?: boolean
      },
    ) => {
      const triggers = [
        ...(flags.trigger ?? []).map((topic) => ({ topic })),
        ...(flags.every ?? []).map((every) => ({ every })),
        ...(flags.cron ?? []).map((cron) =>
          flags.timezone === undefined ? { cron } : { cron, timezone: flags.timezone },
        ),
        ...(flags.onState ?? []).map((state) => ({ state })),
      ]
      if (flags.timezone !== undefined && (flags.cron ?? []).length === 0) {
        throw new ApiError(
          'Cannot use --timezone without --cron: it is the time zone of the cron schedules',
          0,
          'invalid_input',
        )
      }
      if (triggers.length === 0) {
        throw new ApiError(
          'Cannot deploy without a trigger: give --trigger, --every, --cron or --on-state',
          0,
          'invalid_input',
        )
      }
      const limits = {
        ...(flags.memory === undefined ? {} : { memoryMb: flags.memory }),
        ...(flags.timeout === undefined ? {} : { timeoutMs: flags.timeout }),
      }
      const body = {
        name: flags.name,
        source: await readSource(file),
        triggers,
        ...(flags.output === undefined ? {} : { output: flags.output }),
        ...(Object.keys(limits).length === 0 ? {} : { limits }),
        ...(flags.config === undefined ? {} : { config: configValues(flags.config) }),
        ...(flags.disabled ? { enabled: false } : {}),
      }
      return run(
        flags,
        (target) => callApi(target, 'POST', fnPath(tenantId), body),
        (result) => {
          const view = (result as { function: { name: string; version: number } }).function
          return `deployed ${view.name} version ${view.version}\n${showFunction(result)}`
        },
      )
    },
  )
apiCommand(fn, 'list', "list a tenant's functions")
  .argument('<tenant>', 'tenant id')
  .action((tenantId: string, flags: ApiFlags) =>
    run(
      flags,
      (target) => callApi(target, 'GET', fnPath(tenantId)),
      (result) =>
        table(
          (result as { functions: FunctionView[] }).functions.map((view) => ({
            ...view,
            triggers: describeTriggers(view.triggers),
            ok: view.stats.invocations,
            errors: view.stats.errors,
          })),
          ['name', 'version', 'state', 'triggers', 'output', 'ok', 'errors'],
        ),
    ),
  )
apiCommand(fn, 'show', 'show a function and its current source')
  .argument('<tenant>', 'tenant id')
  .argument('<name>', 'function name')
  .action((tenantId: string, name: string, flags: ApiFlags) =>
    run(
      flags,
      (target) => callApi(target, 'GET', fnPath(tenantId, name)),
      (result) => `${showFunction(result)}\n\n${(result as { source: string }).source}`,
    ),
  )
apiCommand(fn, 'versions', "list a function's kept versions, or show one with its source")
  .argument('<tenant>', 'tenant id')
  .argument('<name>', 'function name')
  .argument('[version]', 'a kept version to show with its source', countArg)
  .action((tenantId: string, name: string, version: number | undefined, flags: ApiFlags) =>
    version !== undefined
      ? run(
          flags,
          (target) => callApi(target, 'GET', fnPath(tenantId, name, `/versions/${version}`)),
          (result) => {
            const shown = (result as { version: KeptVersion & { source: string } }).version
            return [
              `version ${shown.version}${shown.current ? ' (current)' : ''}, deployed ${shown.createdAt}`,
              `triggers: ${describeTriggers(shown.triggers)}`,
              `output:   ${shown.output ?? '(none)'}`,
              `limits:   ${shown.limits.memoryMb} MiB, ${shown.limits.timeoutMs} ms`,
              `config:   ${JSON.stringify(shown.config)}`,
              '',
              shown.source,
            ].join('\n')
          },
        )
      : run(
          flags,
          (target) => callApi(target, 'GET', fnPath(tenantId, name, '/versions')),
          (result) =>
            table(
              (result as { versions: KeptVersion[] }).versions.map((kept) => ({
                ...kept,
                current: kept.current ? '*' : '',
                triggers: describeTriggers(kept.triggers),
              })),
              ['version', 'current', 'createdAt', 'triggers', 'output'],
            ),
        ),
  )
apiCommand(fn, 'rollback', 'make a kept version the one that runs')
  .argument('<tenant>', 'tenant id')
  .argument('<name>', 'function name')
  .argument('<version>', 'version number', countArg)
  .action((tenantId: string, name: string, version: number, flags: ApiFlags) =>
    run(
      flags,
      (target) => callApi(target, 'POST', fnPath(tenantId, name, '/rollback'), { version }),
      showFunction,
    ),
  )
for (const [verb, help] of [
  ['enable', 'start running a function again'],
  ['disable', 'stop running a function; its versions are kept'],
] as const) {
  apiCommand(fn, verb, help)
    .argument('<tenant>', 'tenant id')
    .argument('<name>', 'function name')
    .action((tenantId: string, name: string, flags: ApiFlags) =>
      run(flags, (target) => callApi(target, 'POST', fnPath(tenantId, name, `/${verb}`)), showFunction),
    )
}
apiCommand(fn, 'remove', 'delete a function with its versions and dead letters')
  .argument('<tenant>', 'tenant id')
  .argument('<name>', 'function name')
  .action((tenantId: string, name: string, flags: ApiFlags) =>
    run(
      flags,
      (target) => callApi(target, 'DELETE', fnPath(tenantId, name)),
      () => `removed function ${name}`,
    ),
  )
apiCommand(fn, 'invoke', 'run a function on a sample message; nothing it does takes effect')
  .argument('<tenant>', 'tenant id')
  .argument('<name>', 'function name')
  .option('--topic <topic>', "the sample message's topic (default: from the first trigger)")
  .option('--payload <payload>', 'the payload: JSON, or text when it does not parse')
  .option('--device <device>', 'the publishing device id')
  .option('--schedule', 'run onSchedule instead of onMessage')
  .option('--version <n>', 'run a kept version instead of the current one', countArg)
  .action(
    (
      tenantId: string,
      name: string,
      flags: ApiFlags & {
        topic?: string
        payload?: string
        device?: string
        schedule?: boolean
        version?: number
      },
    ) => {
      let payload: unknown = flags.payload
      if (flags.payload !== undefined) {
        try {
          payload = JSON.parse(flags.payload)
        } catch {}
      }
      const message = {
        ...(flags.topic === undefined ? {} : { topic: flags.topic }),
        ...(payload === undefined ? {} : { payload }),
        ...(flags.device === undefined ? {} : { device: flags.device }),
      }
      const body = {
        ...(flags.schedule ? { handler: 'onSchedule' } : { message }),
        ...(flags.version === undefined ? {} : { version: flags.version }),
      }
      return run(
        flags,
        // A function that fails exits 1, with --json too: scripts test the exit code.
        async (target) => {
          const result = await callApi(target, 'POST', fnPath(tenantId, name, '/invoke'), body)
          if (!(result as { invocation: TestInvocation }).invocation.ok) process.exitCode = 1
          return result
        },
        (result) => {
          const invocation = (result as { invocation: TestInvocation }).invocation
          if (!invocation.ok) return `failed (${invocation.error.code}): ${invocation.error.message}`
          const lines = [
            `ok in ${invocation.durationMs.toFixed(2)} ms, memory ${(invocation.memoryBytes / 1048576).toFixed(1)} MiB`,
            `value: ${JSON.stringify(invocation.value)}`,
          ]
          if (invocation.output !== null)
            lines.push(`output ${invocation.output.topic}: ${invocation.output.payload}`)
          for (const publish of invocation.publishes)
            lines.push(`publish ${publish.topic}: ${publish.payload}`)
          for (const emit of invocation.emits)
            lines.push(`emit [${emit.stream}]: ${JSON.stringify(emit.record)}`)
          for (const line of invocation.logs) lines.push(`log: ${line}`)
          return lines.join('\n')
        },
      )
    },
  )
apiCommand(fn, 'logs', "print a function's recent log lines; --follow streams new ones")
  .argument('<tenant>', 'tenant id')
  .argument('<name>', 'function name')
  .option('--follow', 'keep streaming new lines until interrupted')
  .action(async (tenantId: string, name: string, flags: ApiFlags & { follow?: boolean }) => {
    const format = (line: { ts: number; version: number; level: string; message: string }) =>
      flags.json
        ? JSON.stringify(line)
        : `${new Date(line.ts).toISOString()} v${line.version} ${line.level === 'error' ? 'ERROR ' : ''}${line.message}`
    const target = resolveApiTarget(flags)
    if (!flags.follow) {
      const { logs } = (await callApi(target, 'GET', fnPath(tenantId, name, '/logs'))) as {
        logs: Array<{ ts: number; version: number; level: string; message: string }>
      }
      for (const line of logs) console.log(format(line))
      return
    }
    // Log lines come as `log` and `error` events; `end` says why the gateway ended the stream.
    await followEvents(target, fnPath(tenantId, name, '/logs?follow=true'), (event, data) => {
      if (event === 'end') console.error(`taureau: the log stream ended: ${data}`)
      else console.log(format(JSON.parse(data)))
    })
  })

const deadLetters = program
  .command('dead-letters')
  .description("list, replay or purge a tenant's dead letters")
apiCommand(deadLetters, 'list', 'list the newest dead letters')
  .argument('<tenant>', 'tenant id')
  .option('--function <name>', 'only those of one function')
  .option('--limit <n>', 'how many (default 100)', countArg)
  .action((tenantId: string, flags: ApiFlags & { function?: string; limit?: number }) => {
    const query = new URLSearchParams()
    if (flags.function !== undefined) query.set('function', flags.function)
    if (flags.limit !== undefined) query.set('limit', String(flags.limit))
    return run(
      flags,
      (target) => callApi(target, 'GET', `/tenants/${encodeURIComponent(tenantId)}/dead-letters?${query}`),
      (result) =>
        table((result as { deadLetters: Array<Record<string, unknown>> }).deadLetters, [
          'id',
          'function',
          'version',
          'reason',
          'error',
          'createdAt',
        ]),
    )
  })
apiCommand(deadLetters, 'purge', 'delete dead letters')
  .argument('<tenant>', 'tenant id')
  .option('--function <name>', 'only those of one function')
  .action((tenantId: string, flags: ApiFlags & { function?: string }) => {
    const query = flags.function === undefined ? '' : `?function=${encodeURIComponent(flags.function)}`
    return run(
      flags,
      (target) => callApi(target, 'DELETE', `/tenants/${encodeURIComponent(tenantId)}/dead-letters${query}`),
      (result) => `purged ${(result as { purged: number }).purged} dead letters`,
    )
  })
apiCommand(deadLetters, 'replay', "run dead letters again on their function's current version")
  .argument('<tenant>', 'tenant id')
  .option('--function <name>', 'only those of one function')
  .option('--id <n>', 'only this dead letter (repeatable)', (value: string, previous: number[] = []) => [
    ...previous,
    countArg(value),
  ])
  .action((tenantId: string, flags: ApiFlags & { function?: string; id?: number[] }) =>
    run(
      flags,
      (target) =>
        callApi(target, 'POST', `/tenants/${encodeURIComponent(tenantId)}/dead-letters/replay`, {
          ...(flags.function === undefined ? {} : { function: flags.function }),
          ...(flags.id === undefined ? {} : { ids: flags.id }),
        }),
      (result) => {
        const { replayed, skipped } = result as { replayed: number; skipped: number }
        const kept =
          skipped === 0 ? '' : `; ${skipped} kept (schedule ticks, or their function is not running)`
        return `replayed ${replayed} dead letters${kept}`
      },
    ),
  )

// Function state. A function's private namespace is @NAME; shared namespaces are paths (site/line1).
const state = program.command('state').description("list, read and edit a tenant's function state")
const statePath = (tenantId: string, what: string, query: Record<string, string | undefined>) => {
  const params = new URLSearchParams()
  for (const [name, value] of Object.entries(query)) if (value !== undefined) params.set(name, value)
  return `/tenants/${encodeURIComponent(tenantId)}/state${what}?${params}`
}
const showStateValue = (result: unknown) => {
  if (result === undefined) return 'set (its ttl has already run out)'
  const entry = result as { value: unknown; bytes: number; expiresAt: string | null }
  const expiry = entry.expiresAt === null ? '' : `, expires ${entry.expiresAt}`
  return `${JSON.stringify(entry.value)}\n(${entry.bytes} bytes${expiry})`
}
apiCommand(state, 'list', 'list the namespaces with their usage, or the keys of one with --namespace')
  .argument('<tenant>', 'tenant id')
  .option('--namespace <ns>', "list the keys of this namespace (@NAME for a function's own)")
  .option('--prefix <prefix>', 'only keys that start with this')
  .option('--after <key>', 'the page after this key')
  .option('--limit <n>', 'how many keys (default 100, at most 1000)', countArg)
  .action(
    (
      tenantId: string,
      flags: ApiFlags & { namespace?: string; prefix?: string; after?: string; limit?: number },
    ) => {
      if (flags.namespace === undefined) {
        return run(
          flags,
          (target) => callApi(target, 'GET', statePath(tenantId, '', {})),
          (result) => {
            const { usage, namespaces } = result as {
              usage: { keys: number; bytes: number; maxKeys: number; maxBytes: number }
              namespaces: Array<Record<string, unknown>>
            }
            const total = `${usage.keys} of ${usage.maxKeys} keys, ${usage.bytes} of ${usage.maxBytes} bytes`
            const rows = namespaces.map((row) => ({ ...row, lease: row.leaseExpiresAt }))
            return `${table(rows, ['namespace', 'keys', 'bytes', 'lease'])}\n${total}`
          },
        )
      }
      const query = {
        namespace: flags.namespace,
        prefix: flags.prefix,
        after: flags.after,
        limit: flags.limit === undefined ? undefined : String(flags.limit),
      }
      return run(
        flags,
        (target) => callApi(target, 'GET', statePath(tenantId, '/keys', query)),
        (result) => {
          const { keys, next } = result as { keys: Array<Record<string, unknown>>; next: string | null }
          const more = next === null ? '' : `\n(more: --after ${JSON.stringify(next)})`
          return `${table(keys, ['key', 'bytes', 'expiresAt', 'updatedAt'])}${more}`
        },
      )
    },
  )
/** A state command on one key: TENANT NAMESPACE KEY. */
const stateKeyCommand = (name: string, description: string) =>
  apiCommand(state, name, description)
    .argument('<tenant>', 'tenant id')
    .argument('<namespace>', "@NAME for a function's own, or a shared path")
    .argument('<key>', 'key')
stateKeyCommand('get', "print a key's JSON value").action(
  (tenantId: string, namespace: string, key: string, flags: ApiFlags) =>
    run(
      flags,
      (target) => callApi(target, 'GET', statePath(tenantId, '/value', { namespace, key })),
      showStateValue,
    ),
)
stateKeyCommand('set', 'set a key to a value: JSON, or text when it does not parse')
  .argument('<value>', 'the value')
  .option('--ttl-ms <n>', 'delete the key this long after it is set', countArg)
  .action(
    (
      tenantId: string,
      namespace: string,
      key: string,
      text: string,
      flags: ApiFlags & { ttlMs?: number },
    ) => {
      let value: unknown = text
      try {
        value = JSON.parse(text)
      } catch {}
      const body = flags.ttlMs === undefined ? { value } : { value, ttlMs: flags.ttlMs }
      return run(
        flags,
        (target) => callApi(target, 'PUT', statePath(tenantId, '/value', { namespace, key }), body),
        showStateValue,
      )
    },
  )
stateKeyCommand('delete', 'delete a key').action(
  (tenantId: string, namespace: string, key: string, flags: ApiFlags) =>
    run(
      flags,
      (target) => callApi(target, 'DELETE', statePath(tenantId, '/value', { namespace, key })),
      () => `deleted ${key} from ${namespace}`,
    ),
)

addCloudCommands(program)
addSimCommand(program)
addDemoCommand(program)
addDoctorCommands(program)

try {
  await program.parseAsync(process.argv)
} catch (error) {
  // SyncError (by name: sync/ loads only for the cloud commands) and RangeError: their refusals,
  // such as a taken gateway name or a key that is not one.
  if (
    error instanceof GatewayError ||
    error instanceof ApiError ||
    (error instanceof Error && error.name === 'SyncError') ||
    error instanceof RangeError
  ) {
    console.error(`taureau: ${error.message}`)
    process.exitCode = error instanceof GatewayError && error.code === 'invalid_config' ? 2 : 1
  } else {
    throw error
  }
}
