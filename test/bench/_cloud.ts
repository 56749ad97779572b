// A cloud receiver in its own process (`taureau cloud`) for the benchmarks, with a gateway's key
// registered, as `taureau cloud gateway add` would.
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { createSqliteCloudStore, encodeKey, loadIdentity } from '../../sync/index.ts'
import { firstLine } from './_child.ts'

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
  const line = await firstLine(child, 'the cloud receiver')
  const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(line)?.[1])
  return { child, port, cloudKey }
}
