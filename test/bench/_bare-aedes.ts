// Bare aedes (1.x, in-memory persistence, no hooks) in its own plain Node process, without tsx:
// the peer whose CPU and memory the gateway's are compared with when the gateway runs its bundle.
import { type ChildProcess, spawn } from 'node:child_process'
import { join } from 'node:path'
import { firstLine, stopChild } from './_child.ts'

const SERVER = `
import { createServer } from 'node:net'
import { Aedes } from 'aedes'
const broker = await Aedes.createBroker()
const server = createServer({ noDelay: true }, broker.handle)
server.listen(0, '127.0.0.1', () => console.log(server.address().port))
process.on('SIGTERM', () => server.close(() => broker.close(() => process.exit(0))))
`

export interface BareAedesProcess {
  child: ChildProcess
  pid: number
  port: number
  close(): Promise<void>
}

/** Starts bare aedes on 127.0.0.1, any port; resolves once it listens. */
export async function startBareAedes(): Promise<BareAedesProcess> {
  // Run from the checkout so that `aedes` resolves from its node_modules.
  const child = spawn(process.execPath, ['--input-type=module', '-e', SERVER], {
    cwd: join(import.meta.dirname, '../..'),
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const line = await firstLine(child, 'bare aedes')
  return { child, pid: child.pid as number, port: Number(line), close: () => stopChild(child) }
}
