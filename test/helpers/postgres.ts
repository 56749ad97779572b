import { execFile } from 'node:child_process'
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { tempDir } from './temp.ts'

const execFileAsync = promisify(execFile)
const POSTGRES_ROOT = '/usr/lib/postgresql'

/** A throwaway PostgreSQL server; `stop()` kills it and removes its files. */
export interface PostgresServer {
  /** URL of its `postgres` database as the `postgres` superuser (trust auth, no password). */
  url: string
  stop(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/**
 * Starts a real PostgreSQL server for a test file: a fresh cluster in a temp dir, listening on
 * 127.0.0.1 on a free port and on a unix socket inside the dir, fsync off. PostgreSQL refuses to
 * run as root, so under root initdb and the server run as the `postgres` OS user. Fails (never
 * skips) when the binaries are missing: `.ci/prepare` installs them.
 */
export async function startPostgres(): Promise<PostgresServer> {
  const bin = _findBinDir()
  const dir = tempDir('taureau-pg-')
  const data = join(dir, 'data')
  const socketDir = join(dir, 'socket')
  const log = join(dir, 'server.log')
  const asRoot = process.getuid?.() === 0
  const run = async (program: string, args: string[]): Promise<void> => {
    const path = join(bin, program)
    const [file, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', path, ...args]] : [path, args]
    // cwd inside the dir: the postgres user may not be allowed into the test's cwd.
    await execFileAsync(file, argv, { cwd: dir, timeout: 60_000, env: { ...process.env, LC_ALL: 'C' } })
  }
  try {
    mkdirSync(socketDir)
    if (asRoot) {
      const { uid, gid } = await _postgresUser()
      chownSync(dir, uid, gid)
      chownSync(socketDir, uid, gid)
    }
    await run('initdb', [
      '-D',
      data,
      '-U',
      'postgres',
      '-A',
      'trust',
      '-E',
      'UTF8',
      '--locale=C',
      '--no-sync',
    ])
    // The free port is released before the server binds it, so another process may take it in
    // between; a start that fails is retried on a new port.
    for (let attempt = 1; ; attempt++) {
      const port = await _freePort()
      const settings = [
        `-p ${port}`,
        '-c listen_addresses=127.0.0.1',
        `-c unix_socket_directories=${socketDir}`,
        '-c fsync=off',
        '-c synchronous_commit=off',
        '-c full_page_writes=off',
        '-c max_connections=200',
      ]
      try {
        // -w waits until the server accepts connections.
        await run('pg_ctl', ['start', '-w', '-t', '30', '-D', data, '-l', log, '-o', settings.join(' ')])
      } catch (cause) {
        if (attempt < 3) continue
        throw new Error(
          `Cannot start PostgreSQL for the tests as pg_ctl failed: ${(cause as Error).message}\n${_tail(log)}`,
          { cause },
        )
      }
      let stopping: Promise<void> | undefined
      const server: PostgresServer = {
        url: `postgres://postgres@127.0.0.1:${port}/postgres`,
        stop: () => {
          stopping ??= run('pg_ctl', ['stop', '-m', 'immediate', '-w', '-D', data]).finally(() =>
            rmSync(dir, { recursive: true, force: true }),
          )
          return stopping
        },
        [Symbol.asyncDispose]: () => server.stop(),
      }
      return server
    }
  } catch (cause) {
    rmSync(dir, { recursive: true, force: true })
    throw cause
  }
}

/** The bin dir of the highest installed PostgreSQL version (Debian layout). */
function _findBinDir(): string {
  const versions = existsSync(POSTGRES_ROOT)
    ? readdirSync(POSTGRES_ROOT)
        .filter((name) => /^\d+$/.test(name) && existsSync(join(POSTGRES_ROOT, name, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : []
  if (versions[0] === undefined) {
    throw new Error(
      `Cannot start PostgreSQL for the tests as no ${POSTGRES_ROOT}/*/bin/initdb exists: run .ci/prepare (Debian package 'postgresql')`,
    )
  }
  return join(POSTGRES_ROOT, versions[0], 'bin')
}

async function _postgresUser(): Promise<{ uid: number; gid: number }> {
  try {
    const id = async (flag: string) => Number((await execFileAsync('id', [flag, 'postgres'])).stdout.trim())
    return { uid: await id('-u'), gid: await id('-g') }
  } catch (cause) {
    throw new Error(
      "Cannot start PostgreSQL for the tests as root without the 'postgres' OS user: install Debian's 'postgresql'",
      { cause },
    )
  }
}

/** A port that was free a moment ago on 127.0.0.1. */
function _freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address()
      probe.close(() =>
        typeof address === 'object' && address !== null
          ? resolve(address.port)
          : reject(new Error('the probe has no port')),
      )
    })
  })
}

function _tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-20).join('\n')
  } catch {
    return '(no server log)'
  }
}
