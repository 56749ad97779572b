// `taureau doctor` and `taureau ready`: checks of an install (runtime, SQLite addon, config, data dir,
// ports, clock, disk space) that say what to fix, and the wait for a gateway's health endpoint.
import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import {
  accessSync,
  constants,
  existsSync,
  readFileSync,
  statfsSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { userInfo } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { type GatewayConfig, type LoadConfigOptions, loadConfig } from './config.ts'
import { ADMIN_TOKEN_FILE } from './data-files.ts'
import { JEMALLOC_PACKAGE, jemallocLibrary, mapsJemalloc } from './runtime-settings.ts'

/** Lowest Node.js major version the gateway runs on (package.json `engines`). */
export const MIN_NODE_MAJOR = 20

/**
 * The earliest plausible system time. A board without a battery-backed clock boots in 1970 (or at
 * its image's build date) until NTP answers; a gateway started then stamps records with wrong times,
 * fires cron schedules at the wrong moments, and fails TLS (certificates look not yet valid).
 * Any date before this release cannot be right.
 */
export const CLOCK_LOWER_BOUND_MS = Date.UTC(2026, 0, 1)

/** Free space under which the disk check fails: SQLite cannot commit much more. */
export const DISK_FAIL_BYTES = 50_000_000
/** Free space under which the disk check warns (as does {@link DISK_WARN_FRACTION}). */
export const DISK_WARN_BYTES = 500_000_000
/** Free fraction of the filesystem under which the disk check warns. */
export const DISK_WARN_FRACTION = 0.1

/** How long the doctor waits for a running gateway's `/healthz`, ms. */
const HEALTH_PROBE_MS = 1000
/** How long the doctor waits for `timedatectl`, ms. */
const TIMEDATECTL_TIMEOUT_MS = 2000
/** Longest error text shown in a finding. */
const MAX_ERROR_CHARS = 400

/** Outcome of one check: `fail` makes `taureau doctor` exit 1. */
export type CheckStatus = 'ok' | 'warn' | 'fail'

/** One check's result: what was found and, when not ok, what to do about it. */
export interface CheckResult {
  /** The check: `runtime`, `addon`, `config`, `data dir`, `ports`, `clock` or `disk space`. */
  name: string
  status: CheckStatus
  /** One line saying what was found. */
  finding: string
  /** A concrete fix; set when the status is not ok. */
  fix?: string
}

function _result(name: string, status: CheckStatus, finding: string, fix?: string): CheckResult {
  return fix === undefined || status === 'ok' ? { name, status, finding } : { name, status, finding, fix }
}

/** One line of an error, for a finding. */
function _errorText(error: unknown): string {
  const text = (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ').trim()
  return text.length > MAX_ERROR_CHARS ? `${text.slice(0, MAX_ERROR_CHARS)}…` : text
}

function _worst(statuses: readonly CheckStatus[]): CheckStatus {
  if (statuses.includes('fail')) return 'fail'
  return statuses.includes('warn') ? 'warn' : 'ok'
}

/** Options of {@link checkRuntime}: the running Node.js unless given (for tests). */
export interface RuntimeOptions {
  version?: string
  execPath?: string
  arch?: string
}

/** Checks that Node.js is recent enough, and says which one runs and where it is. */
export function checkRuntime(options: RuntimeOptions = {}): CheckResult {
  const version = options.version ?? process.versions.node
  const execPath = options.execPath ?? process.execPath
  const arch = options.arch ?? process.arch
  const major = Number(version.split('.')[0])
  const finding = `Node.js v${version} at ${execPath} (${process.platform} ${arch})`
  if (Number.isInteger(major) && major >= MIN_NODE_MAJOR) return _result('runtime', 'ok', finding)
  return _result(
    'runtime',
    'fail',
    `${finding} is older than v${MIN_NODE_MAJOR}`,
    `install Node.js ${MIN_NODE_MAJOR} or later and make it the \`node\` on PATH`,
  )
}

/** Options of {@link checkAllocator}: this process's unless given (for tests). */
export interface AllocatorOptions {
  /** `/proc/self/maps`'s text. */
  maps?: string
  platform?: string
  arch?: string
  /** The environment, for jemalloc's `MALLOC_CONF`. */
  env?: NodeJS.ProcessEnv
}

/**
 * Says which malloc the process runs on, with jemalloc's settings. jemalloc (which /usr/bin/taureau
 * preloads) gives freed memory back to the system; on glibc's malloc the idle gateway holds about 10 MB
 * more.
 */
export function checkAllocator(options: AllocatorOptions = {}): CheckResult {
  const platform = options.platform ?? process.platform
  if (platform !== 'linux')
    return _result('allocator', 'ok', `the system's malloc (${platform}: not checked)`)
  let maps = options.maps
  if (maps === undefined) {
    try {
      maps = readFileSync('/proc/self/maps', 'utf8')
    } catch (error) {
      return _result('allocator', 'ok', `not checked as /proc/self/maps cannot be read: ${_errorText(error)}`)
    }
  }
  if (mapsJemalloc(maps)) {
    const conf = (options.env ?? process.env).MALLOC_CONF
    return _result('allocator', 'ok', `jemalloc, ${conf ? `MALLOC_CONF=${conf}` : 'its default settings'}`)
  }
  let library: string
  try {
    library = jemallocLibrary(options.arch ?? process.arch)
  } catch {
    return _result('allocator', 'ok', "glibc's malloc (no Debian jemalloc for this architecture)")
  }
  return _result(
    'allocator',
    'warn',
    "glibc's malloc: the idle gateway holds about 10 MB more than on jemalloc",
    `install ${JEMALLOC_PACKAGE} and run through /usr/bin/taureau, which preloads it (or LD_PRELOAD=${library})`,
  )
}

/** The folder above `gateway/` (sources) or `bin/` (bundles): the checkout or the installed package. */
const INSTALL_ROOT = resolve(import.meta.dirname, '..')

/** Options of {@link checkAddon}. */
export interface AddonOptions {
  /** The module to load; default `better-sqlite3`. */
  moduleId?: string
  /** Whether this runs from a git checkout (the fix differs); default: `.git` is next to the sources. */
  checkout?: boolean
}

/** Checks that better-sqlite3's native addon loads in this Node.js and opens an in-memory database. */
export function checkAddon(options: AddonOptions = {}): CheckResult {
  const moduleId = options.moduleId ?? 'better-sqlite3'
  try {
    const Database = createRequire(import.meta.url)(moduleId) as typeof import('better-sqlite3')
    // The addon loads at the first `new Database()`, not at require().
    const db = new Database(':memory:')
    try {
      const { version } = db.prepare('select sqlite_version() as version').get() as { version: string }
      return _result('addon', 'ok', `${moduleId} opens an in-memory database (SQLite ${version})`)
    } finally {
      db.close()
    }
  } catch (error) {
    const checkout = options.checkout ?? existsSync(join(INSTALL_ROOT, '.git'))
    const abi = `this Node.js needs NODE_MODULE_VERSION ${process.versions.modules}`
    return _result(
      'addon',
      'fail',
      `${moduleId} does not load: ${_errorText(error)}`,
      checkout
        ? `run \`npm rebuild ${moduleId}\` in ${INSTALL_ROOT} with the Node.js that runs Taureau (${abi})`
        : `reinstall the package (\`apt-get install --reinstall taureau\`): its addon must match this Node.js (${abi})`,
    )
  }
}

/** Loads the config as `taureau gateway` does; a failure is the check's finding. */
export function checkConfig(options: LoadConfigOptions): { result: CheckResult; config?: GatewayConfig } {
  const file = options.file ?? (options.env ?? process.env).TAUREAU_CONFIG
  const source = file === undefined || file === '' ? 'defaults, TAUREAU_* env and flags' : file
  try {
    const config = loadConfig(options)
    return { result: _result('config', 'ok', `loaded from ${source}`), config }
  } catch (error) {
    return {
      result: _result(
        'config',
        'fail',
        _errorText(error),
        `correct the value the message names (${file === undefined || file === '' ? '' : `in ${file}, `}a TAUREAU_* variable or a flag)`,
      ),
    }
  }
}

/** The path itself if it exists, else its closest ancestor that does. */
function _nearestExisting(path: string): string {
  let current = resolve(path)
  while (!existsSync(current) && dirname(current) !== current) current = dirname(current)
  return current
}

const _mode = (mode: number): string => `0${(mode & 0o777).toString(8).padStart(3, '0')}`

/**
 * Checks the data directory: it exists (or the current user may create it), belongs to the current
 * user, is not group or world writable, takes a new file, and its admin token is readable by its
 * owner only.
 */
export function checkDataDir(dataDir: string): CheckResult {
  const path = resolve(dataDir)
  const user = userInfo()
  if (!existsSync(path)) {
    const ancestor = _nearestExisting(path)
    try {
      if (!statSync(ancestor).isDirectory()) throw new Error(`${ancestor} is not a directory`)
      accessSync(ancestor, constants.W_OK | constants.X_OK)
    } catch (error) {
      return _result(
        'data dir',
        'fail',
        `${path} does not exist and ${user.username} cannot create it in ${ancestor}: ${_errorText(error)}`,
        `create it: \`mkdir -p ${path} && chown ${user.username} ${path} && chmod 700 ${path}\`, or pass --data`,
      )
    }
    return _result('data dir', 'ok', `${path} does not exist yet; the gateway creates it (mode 0700)`)
  }
  const stats = statSync(path)
  if (!stats.isDirectory()) {
    return _result('data dir', 'fail', `${path} is not a directory`, 'pass --data with a directory')
  }
  const problems: string[] = []
  const fixes: string[] = []
  const uid = process.getuid?.()
  if (uid !== undefined && stats.uid !== uid) {
    problems.push(`is owned by uid ${stats.uid}, not by ${user.username} (uid ${uid})`)
    fixes.push(`\`chown -R ${user.username} ${path}\` (or run as its owner)`)
  }
  if ((stats.mode & 0o022) !== 0) {
    problems.push(`is ${stats.mode & 0o002 ? 'world' : 'group'} writable (mode ${_mode(stats.mode)})`)
    fixes.push(`\`chmod 700 ${path}\``)
  }
  const probe = join(path, `.doctor-${process.pid}-${Date.now()}`)
  try {
    writeFileSync(probe, '', { flag: 'wx', mode: 0o600 })
    unlinkSync(probe)
  } catch (error) {
    problems.push(`does not take a new file: ${_errorText(error)}`)
    fixes.push(`make it writable by ${user.username}`)
  }
  const tokenFile = join(path, ADMIN_TOKEN_FILE)
  let tokenNote = ''
  if (existsSync(tokenFile)) {
    const tokenMode = statSync(tokenFile).mode
    if ((tokenMode & 0o777) !== 0o600) {
      problems.push(`${ADMIN_TOKEN_FILE} has mode ${_mode(tokenMode)}, not 0600`)
      fixes.push(`\`chmod 600 ${tokenFile}\``)
    } else {
      tokenNote = `, ${ADMIN_TOKEN_FILE} 0600`
    }
  }
  if (problems.length > 0)
    return _result('data dir', 'fail', `${path} ${problems.join('; ')}`, fixes.join('; '))
  return _result(
    'data dir',
    'ok',
    `${path} owned by ${user.username}, mode ${_mode(stats.mode)}, writable${tokenNote}`,
  )
}

/** Options of {@link probeHealth}. */
export interface ProbeOptions {
  timeoutMs: number
  /** Check the server's TLS certificate (default true); the doctor only asks whether it answers. */
  verifyTls?: boolean
}

/** GETs `url` once; resolves to the HTTP status, rejects on a network error or the timeout. */
export async function probeHealth(url: string, options: ProbeOptions): Promise<number> {
  const target = new URL(url)
  const request = target.protocol === 'https:' ? httpsRequest : httpRequest
  const req = request(target, {
    method: 'GET',
    // One request, no pooled keep-alive socket left behind.
    agent: false,
    timeout: options.timeoutMs,
    ...(options.verifyTls === false ? { rejectUnauthorized: false } : {}),
  })
  req.on('timeout', () => req.destroy(new Error(`no answer within ${options.timeoutMs} ms`)))
  req.end()
  const [response] = (await once(req, 'response')) as [IncomingMessage]
  response.resume()
  return response.statusCode ?? 0
}

/**
 * The base URL of the gateway the config describes, as a client on this machine reaches it:
 * `http(s)://HOST:PORT/BASEPATH`, with a wildcard host (`0.0.0.0`, `::`) as 127.0.0.1.
 * Throws a RangeError when `http.port` is 0 (any free port), which the config cannot tell.
 */
export function gatewayBaseUrl(config: GatewayConfig): string {
  if (config.http.port === 0) {
    throw new RangeError("Cannot find the gateway's URL as http.port is 0 (any free port): pass --url")
  }
  const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host
  const scheme = config.http.tls === null ? 'http' : 'https'
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${config.http.port}${config.http.basePath}`
}

/** A port of the config, with where it is set. */
interface PortSetting {
  key: string
  flag: string
  port: number
}

/** Why binding one port failed, with its fix; undefined when the port is free. */
async function _bindProblem(
  host: string,
  setting: PortSetting,
): Promise<{ problem: string; fix: string } | undefined> {
  const server = createServer()
  try {
    server.listen({ host, port: setting.port, exclusive: true })
    await once(server, 'listening')
    return undefined
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const where = `port ${setting.port} (${setting.key}) on ${host}`
    const change = `set ${setting.key} in the config (\`taureau gateway ${setting.flag}\`)`
    if (code === 'EADDRINUSE') {
      return {
        problem: `${where} is in use by another program`,
        fix: `stop that program (\`ss -ltnp 'sport = :${setting.port}'\` names it), or ${change}`,
      }
    }
    if (code === 'EACCES' && setting.port < 1024) {
      return {
        problem: `${where} is below 1024 and needs privileges`,
        fix: `give the service CAP_NET_BIND_SERVICE (AmbientCapabilities= in the unit), or ${change} to a port >= 1024`,
      }
    }
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') {
      return {
        problem: `host ${host} is not an address of this machine (${code})`,
        fix: 'set host in the config (`taureau gateway --host`) to one of its addresses, or 0.0.0.0',
      }
    }
    return { problem: `${where} cannot be bound: ${_errorText(error)}`, fix: change }
  } finally {
    if (server.listening) await new Promise((done) => server.close(done))
  }
}

/**
 * Checks that the MQTT, WebSocket and HTTP ports of the config can be bound on its host, or are
 * held by a Taureau gateway that answers `/healthz`. Port 0 (any free port) is skipped.
 */
export async function checkPorts(config: GatewayConfig): Promise<CheckResult> {
  const settings: PortSetting[] = [
    { key: 'mqtt.port', flag: '--mqtt-port', port: config.mqtt.port },
    { key: 'mqtt.wsPort', flag: '--ws-port', port: config.mqtt.wsPort },
    { key: 'http.port', flag: '--http-port', port: config.http.port },
  ].filter((setting) => setting.port !== 0)
  if (settings.length === 0) return _result('ports', 'ok', 'every port is 0: the system picks free ones')
  const list = settings.map((setting) => `${setting.port} (${setting.key})`).join(', ')
  if (config.http.port !== 0) {
    const url = `${gatewayBaseUrl(config)}/healthz`
    const status = await probeHealth(url, { timeoutMs: HEALTH_PROBE_MS, verifyTls: false }).catch(() => 0)
    if (status === 200)
      return _result('ports', 'ok', `${list} on ${config.host} are in use by a running gateway (${url})`)
  }
  const problems: string[] = []
  const fixes: string[] = []
  for (const [i, setting] of settings.entries()) {
    const twin = settings.slice(0, i).find((other) => other.port === setting.port)
    if (twin !== undefined) {
      problems.push(`${twin.key} and ${setting.key} are both ${setting.port}`)
      fixes.push(`set ${setting.key} in the config (\`taureau gateway ${setting.flag}\`) to another port`)
      continue
    }
    const failure = await _bindProblem(config.host, setting)
    if (failure === undefined) continue
    problems.push(failure.problem)
    fixes.push(failure.fix)
    // A host that is not this machine's fails every port alike.
    if (failure.problem.startsWith('host ')) break
  }
  if (problems.length > 0) return _result('ports', 'fail', problems.join('; '), fixes.join('; '))
  return _result('ports', 'ok', `${list} are free on ${config.host}`)
}

/** Options of {@link checkClock}. */
export interface ClockOptions {
  /** The time to judge, ms since the epoch; default now. */
  nowMs?: number
  /** The `timedatectl` to ask about NTP; default `timedatectl` on PATH. */
  timedatectl?: string
}

/** Checks that the system time is plausible and, where systemd can tell, synchronized by NTP. */
export function checkClock(options: ClockOptions = {}): CheckResult {
  const nowMs = options.nowMs ?? Date.now()
  const time = new Date(nowMs).toISOString()
  const bound = new Date(CLOCK_LOWER_BOUND_MS).toISOString().slice(0, 10)
  if (nowMs < CLOCK_LOWER_BOUND_MS) {
    return _result(
      'clock',
      'fail',
      `system time ${time} is before ${bound}: record times, cron schedules and TLS would be wrong`,
      'set the time (`timedatectl set-ntp true`, or `date -s`) and start the gateway after it',
    )
  }
  let answer: string
  try {
    answer = execFileSync(
      options.timedatectl ?? 'timedatectl',
      ['show', '-p', 'NTPSynchronized', '--value'],
      {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: TIMEDATECTL_TIMEOUT_MS,
      },
    ).trim()
  } catch (error) {
    const failure = error as NodeJS.ErrnoException & { stderr?: string }
    const why =
      failure.code === 'ENOENT'
        ? 'no timedatectl'
        : `timedatectl failed: ${_errorText(failure.stderr?.split('\n')[0] || failure.message)}`
    return _result('clock', 'ok', `system time ${time}; NTP sync state unknown (${why})`)
  }
  if (answer === 'no') {
    return _result(
      'clock',
      'warn',
      `system time ${time} is not synchronized by NTP`,
      'enable systemd-timesyncd: `timedatectl set-ntp true`',
    )
  }
  if (answer === 'yes') return _result('clock', 'ok', `system time ${time}, synchronized by NTP`)
  return _result('clock', 'ok', `system time ${time}; NTP sync state unknown (timedatectl said '${answer}')`)
}

const _megabytes = (bytes: number): string => `${Math.floor(bytes / 1_000_000)} MB`

/** Judges free space: fail under 50 MB, warn under 500 MB or under 10% of the filesystem. */
export function judgeDiskSpace(
  path: string,
  freeBytes: number,
  totalBytes: number,
  maxStoreBytes: number | null,
): CheckResult {
  const percent = totalBytes > 0 ? Math.floor((freeBytes / totalBytes) * 100) : 0
  const finding = `${_megabytes(freeBytes)} free of ${_megabytes(totalBytes)} (${percent}%) on ${path}`
  const bound = maxStoreBytes === null ? 'unbounded now' : `now ${_megabytes(maxStoreBytes)}`
  const fix = `free space there, or bound the store with durability.maxStoreBytes in the config (${bound})`
  if (freeBytes < DISK_FAIL_BYTES) return _result('disk space', 'fail', finding, fix)
  if (freeBytes < DISK_WARN_BYTES || freeBytes < totalBytes * DISK_WARN_FRACTION) {
    return _result('disk space', 'warn', finding, fix)
  }
  return _result('disk space', 'ok', finding)
}

/** Checks the free space of the filesystem that holds (or will hold) the data dir. */
export function checkDiskSpace(dataDir: string, maxStoreBytes: number | null): CheckResult {
  const path = _nearestExisting(dataDir)
  try {
    const stats = statfsSync(path)
    return judgeDiskSpace(path, stats.bavail * stats.bsize, stats.blocks * stats.bsize, maxStoreBytes)
  } catch (error) {
    return _result(
      'disk space',
      'warn',
      `cannot read the free space of ${path}: ${_errorText(error)}`,
      'check it with `df -h`',
    )
  }
}

/** Options of {@link runDoctor}: the config as `taureau gateway` takes it, and the clock check's. */
export interface DoctorOptions extends LoadConfigOptions, ClockOptions {}

/** Runs every check in order; checks that need the config are marked not run when it does not load. */
export async function runDoctor(options: DoctorOptions = {}): Promise<CheckResult[]> {
  const { nowMs, timedatectl, ...configOptions } = options
  const results = [checkRuntime(), checkAddon(), checkAllocator()]
  const { result, config } = checkConfig(configOptions)
  results.push(result)
  if (config === undefined) {
    for (const name of ['data dir', 'ports']) {
      results.push(_result(name, 'warn', 'not checked as the config does not load', 'fix the config first'))
    }
  } else {
    results.push(checkDataDir(config.data), await checkPorts(config))
  }
  results.push(
    checkClock({
      ...(nowMs === undefined ? {} : { nowMs }),
      ...(timedatectl === undefined ? {} : { timedatectl }),
    }),
  )
  results.push(
    config === undefined
      ? _result('disk space', 'warn', 'not checked as the config does not load', 'fix the config first')
      : checkDiskSpace(config.data, config.durability.maxStoreBytes),
  )
  return results
}

/** The results as aligned lines (a fix below each that is not ok) and a summary line. */
export function formatDoctorReport(results: readonly CheckResult[]): string {
  const width = Math.max(...results.map((result) => result.name.length))
  const lines: string[] = []
  for (const result of results) {
    const status = result.status === 'fail' ? 'FAIL' : result.status
    lines.push(`${status.padEnd(4)}  ${result.name.padEnd(width)}  ${result.finding}`)
    if (result.fix !== undefined) lines.push(`${' '.repeat(width + 8)}fix: ${result.fix}`)
  }
  const count = (status: CheckStatus) => results.filter((result) => result.status === status).length
  const failed = count('fail')
  const warned = count('warn')
  lines.push(
    failed === 0 && warned === 0
      ? `all ${results.length} checks ok`
      : `${results.length} checks: ${count('ok')} ok, ${warned} warning${warned === 1 ? '' : 's'}, ${failed} failed`,
  )
  return lines.join('\n')
}

/** Options of {@link waitForHealth}. */
export interface WaitForHealthOptions {
  timeoutMs: number
  /** Pause between attempts, ms; default 250. */
  intervalMs?: number
  signal?: AbortSignal
}

/** How a wait for `/healthz` ended. */
export type WaitForHealthResult = { ready: true; elapsedMs: number } | { ready: false; lastError: string }

/**
 * GETs `BASE/healthz` every `intervalMs` until it answers 200 or `timeoutMs` passes. For HTTPS the
 * certificate is checked as any client does (`NODE_EXTRA_CA_CERTS` for a private CA).
 */
export async function waitForHealth(
  baseUrl: string,
  options: WaitForHealthOptions,
): Promise<WaitForHealthResult> {
  const url = `${baseUrl.replace(/\/+$/, '')}/healthz`
  const intervalMs = options.intervalMs ?? 250
  const startMs = performance.now()
  let lastError = 'no attempt made'
  for (;;) {
    const remainingMs = options.timeoutMs - (performance.now() - startMs)
    if (remainingMs <= 0 || options.signal?.aborted) return { ready: false, lastError }
    try {
      const status = await probeHealth(url, { timeoutMs: Math.max(1, Math.ceil(remainingMs)) })
      if (status === 200) return { ready: true, elapsedMs: Math.round(performance.now() - startMs) }
      lastError = `${url} answered HTTP ${status}`
    } catch (error) {
      lastError = `${url}: ${_errorText(error)}`
    }
    const waitMs = Math.min(intervalMs, options.timeoutMs - (performance.now() - startMs))
    if (waitMs > 0) await sleep(waitMs, undefined, { signal: options.signal }).catch(() => {})
  }
}
