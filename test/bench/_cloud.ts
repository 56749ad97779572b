// A cloud receiver in its own process (`taureau cloud`) for the benchmarks, with a gateway's key
// registered, as `taureau cloud gateway add` would.
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { createSqliteCloudStore, encodeKey, loadIdentity } from '../../sync/index.ts'

export interface CloudProcess {
  child: ChildProcess
  port: number
  /** The receiver's public key, for the gateway's `--cloud-key`. */
  cloudKey: string
}

/** Pairs the gateway of `gatewayDir` as `name` and starts the receiver on 127.0.0.1, any port. */
export async function startCloudProcess(options: {
  command: [string, ...string[]]
  cloudDir: string
  gatewayDir: string
  name: string
}): Promise<CloudProcess> {
  const { cloudDir, gatewayDir } = options
  for (const dir of [cloudDir, gatewayDir]) mkdirSync(dir, { recursive: true, mode: 0o700 })
  const store = await createSqliteCloudStore({ file: join(cloudDir, 'cloud.db') })
  await store.addGateway(options.name, encodeKey((await loadIdentity(gatewayDir)).publicKey))
  await store.close()
  const cloudKey = encodeKey((await loadIdentity(cloudDir)).publicKey)
  const [file, ...prefix] = options.command
  const child = spawn(file, [...prefix, 'cloud', '--data', cloudDir, '--host', '127.0.0.1', '--port', '0'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const exited = once(child, 'exit')
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
  const [line] = (await Promise.race([
    once(lines, 'line'),
    exited.then(([code]) => {
      throw new Error(`Cannot start the cloud receiver: it exited with ${code}`)
    }),
  ])) as [string]
  const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(line)?.[1])
  return { child, port, cloudKey }
}

/** Stops a child with SIGTERM and waits for it (SIGKILL after 10 s). */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}
