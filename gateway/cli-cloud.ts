// The CLI's `keys` and `cloud` commands: the cloud receiver and the identities of data dirs.
import { mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { type Command, InvalidArgumentError, Option } from 'commander'
import { portArg, wholeNumberArg } from './cli-args.ts'

const DEFAULT_CLOUD_DATA = '.taureau-cloud'
const CLOUD_STORE_FILE = 'cloud.db'

interface CloudFlags {
  data?: string
  store?: string
}

const dataDirOf = (flags: { data?: string }, fallback: string): string =>
  resolve(flags.data ?? process.env.TAUREAU_DATA ?? fallback)

/** The receiver's store: PostgreSQL when `--store` is a postgres URL, else SQLite in the data dir. */
async function openCloudStore(flags: CloudFlags, serving = false) {
  const { createPostgresCloudStore, createSqliteCloudStore, createThreadedSqliteCloudStore } = await import(
    '../sync/index.ts'
  )
  const url = flags.store ?? process.env.TAUREAU_CLOUD_STORE
  if (url !== undefined && /^postgres(ql)?:\/\//.test(url)) return createPostgresCloudStore({ url })
  if (url !== undefined) {
    throw new InvalidArgumentError(
      `Cannot open the store '${url}' as it is not a postgres:// URL (omit --store for SQLite in the data dir)`,
    )
  }
  const dir = dataDirOf(flags, DEFAULT_CLOUD_DATA)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const file = join(dir, CLOUD_STORE_FILE)
  // The receiver keeps SQLite's fsyncs off its own thread, where they would delay its cells.
  if (!serving) return createSqliteCloudStore({ file })
  return createThreadedSqliteCloudStore({
    file,
    // Without its store the receiver would refuse every gateway: better to stop and be restarted.
    onFailure(error) {
      console.error(`taureau: the store failed, stopping: ${error.message}`)
      process.exit(1)
    },
  })
}

const cellArg = (value: string): number => {
  if (!['512', '1024', '1200'].includes(value)) throw new InvalidArgumentError('must be 512, 1024 or 1200')
  return Number(value)
}

const sinceArg = (value: string): number => {
  const ms = /^\d+$/.test(value) ? Number(value) : Date.parse(value)
  if (!Number.isFinite(ms)) throw new InvalidArgumentError('must be an ISO date or ms since 1970')
  return ms
}

/** The options of every command that opens the receiver's store. */
function withStoreOptions(command: Command): Command {
  return command
    .option('--data <dir>', `data directory (env TAUREAU_DATA; default ${DEFAULT_CLOUD_DATA})`)
    .option(
      '--store <url>',
      'postgres://… to use one PostgreSQL shared by receivers (env TAUREAU_CLOUD_STORE; default SQLite in the data dir)',
    )
}

export function addCloudCommands(program: Command): void {
  program
    .command('keys')
    .description("print the public key of a data dir's identity (gateway or cloud), making it on first use")
    .option('--data <dir>', 'data directory (env TAUREAU_DATA; default .taureau)')
    .action(async (flags: { data?: string }) => {
      const { encodeKey, loadIdentity } = await import('../sync/index.ts')
      const dir = dataDirOf(flags, '.taureau')
      mkdirSync(dir, { recursive: true, mode: 0o700 })
      console.log(encodeKey((await loadIdentity(dir)).publicKey))
    })

  const cloud = withStoreOptions(
    program
      .command('cloud')
      .description('run the cloud receiver that gateways stream their outbox to, or manage it'),
  )
    .option('--host <address>', 'address to listen on (default 0.0.0.0)', '0.0.0.0')
    .option('--port <port>', 'port to listen on, 0 for any (default 7070)', portArg, 7070)
    .option(
      '--cell-bytes <n>',
      'bytes of every unit on the wire: 512, 1024 or 1200 (must match the gateways)',
      cellArg,
      1024,
    )
    .option(
      '--ack-interval-ms <ms>',
      'one cell back to each gateway per interval, acks or cover (1-10000; gateways drop a receiver silent for 60 s)',
      (value: string) => {
        const ms = wholeNumberArg(1, undefined, 'interval')(value)
        if (ms > 10_000) throw new InvalidArgumentError('must be at most 10000')
        return ms
      },
      250,
    )
    .action(
      async (
        flags: CloudFlags & { host: string; port: number; cellBytes: number; ackIntervalMs: number },
      ) => {
        const { createReceiver, loadIdentity, encodeKey } = await import('../sync/index.ts')
        const dir = dataDirOf(flags, DEFAULT_CLOUD_DATA)
        mkdirSync(dir, { recursive: true, mode: 0o700 })
        const identity = await loadIdentity(dir)
        const store = await openCloudStore(flags, true)
        const log = (line: Record<string, unknown>) =>
          console.log(JSON.stringify({ time: Date.now(), ...line }))
        const receiver = await createReceiver({
          store,
          identity,
          host: flags.host,
          port: flags.port,
          cellBytes: flags.cellBytes,
          schedule: { mode: 'clock', intervalMs: flags.ackIntervalMs, poisson: false },
          onEvent: (event) => {
            if (event.type !== 'stored') log({ ...event, msg: `receiver ${event.type}` })
          },
        })
        console.log(
          `taureau cloud listening on ${flags.host}:${receiver.port} (data ${dir}, public key ${encodeKey(identity.publicKey)})`,
        )
        let stopping = false
        const stop = (): void => {
          if (stopping) process.exit(130)
          stopping = true
          void receiver.close().then(() => store.close())
        }
        process.once('SIGINT', stop)
        process.once('SIGTERM', stop)
      },
    )

  const gateway = cloud.command('gateway').description('manage the gateways this receiver accepts')
  withStoreOptions(gateway.command('add <name> <publicKey>'))
    .description("accept a gateway's static public key (from `taureau keys` on the gateway)")
    .action(async (name: string, publicKey: string, _flags: unknown, command: Command) => {
      const { decodeKey, encodeKey } = await import('../sync/index.ts')
      const key = encodeKey(decodeKey(publicKey, 'the public key'))
      await withStore(command, async (store) => {
        const added = await store.addGateway(name, key)
        console.log(`added gateway ${added.name} (${added.publicKey})`)
      })
    })
  withStoreOptions(gateway.command('remove <name>'))
    .description('stop accepting a gateway (its records stay)')
    .action(async (name: string, _flags: unknown, command: Command) => {
      await withStore(command, async (store) => {
        if (!(await store.removeGateway(name))) {
          console.error(`taureau: Cannot remove gateway '${name}' as it is not registered`)
          process.exitCode = 1
          return
        }
        console.log(`removed gateway ${name}`)
      })
    })
  withStoreOptions(gateway.command('list'))
    .description('list the accepted gateways')
    .option('--json', 'print JSON')
    .action(async (flags: { json?: boolean }, command: Command) => {
      await withStore(command, async (store) => {
        const gateways = await store.listGateways()
        if (flags.json === true) console.log(JSON.stringify(gateways, null, 2))
        else if (gateways.length === 0) console.log('no gateways')
        else
          for (const g of gateways)
            console.log(
              `${g.name}\t${g.publicKey}\tlast handshake ${g.lastHandshakeAt === null ? 'never' : new Date(g.lastHandshakeAt).toISOString()}`,
            )
      })
    })

  withStoreOptions(cloud.command('records'))
    .description('print what arrived from gateways, oldest first')
    .option('--gateway <name>', 'only this gateway')
    .option('--tenant <tenant>', 'only this tenant')
    .option('--stream <stream>', 'only this stream')
    .option('--since <time>', 'created at or after (ISO date or ms since 1970)', sinceArg)
    .addOption(
      new Option('--limit <n>', 'at most this many (max 10000)')
        .argParser(wholeNumberArg(1, undefined, 'limit'))
        .default(1000),
    )
    .option('--json', 'print JSON, one record per line')
    .action(
      async (
        flags: {
          gateway?: string
          tenant?: string
          stream?: string
          since?: number
          limit: number
          json?: boolean
        },
        command: Command,
      ) => {
        await withStore(command, async (store) => {
          const records = await store.records({
            ...(flags.gateway === undefined ? {} : { gateway: flags.gateway }),
            ...(flags.tenant === undefined ? {} : { tenant: flags.tenant }),
            ...(flags.stream === undefined ? {} : { stream: flags.stream }),
            ...(flags.since === undefined ? {} : { since: flags.since }),
            limit: flags.limit,
          })
          for (const r of records) {
            if (flags.json === true) console.log(JSON.stringify({ ...r, body: JSON.parse(r.body) }))
            else
              console.log(
                `${new Date(r.createdAt).toISOString()}\t${r.gateway}#${r.seq}\t${r.tenant}/${r.function}/${r.stream}\t${r.body}`,
              )
          }
        })
      },
    )
}

/** Runs `work` on the store named by the `cloud` command's options, then closes it. */
async function withStore(
  command: Command,
  work: (store: Awaited<ReturnType<typeof openCloudStore>>) => Promise<void>,
): Promise<void> {
  const flags = command.optsWithGlobals() as CloudFlags
  const store = await openCloudStore(flags)
  try {
    await work(store)
  } finally {
    await store.close()
  }
}
