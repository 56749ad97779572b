// The password hasher's worker thread (see password-hasher.ts): Argon2id through libsodium, so that
// a burst of sign-ins never stalls the broker's event loop. It only hashes and verifies.
import { parentPort, workerData } from 'node:worker_threads'
import type sodiumApi from 'libsodium-wrappers'
// The sumo build: the standard one has no crypto_pwhash. Its API is a superset of the typed one.
import sumo from 'libsodium-wrappers-sumo'

const sodium = sumo as unknown as typeof sodiumApi
const { opsLimit, memLimitBytes } = workerData as { opsLimit: number; memLimitBytes: number }
const port = parentPort
if (port === null) throw new Error('The password hasher runs as a worker thread')

type Job =
  | { id: number; kind: 'hash'; secret: string }
  | { id: number; kind: 'verify'; hash: string; secret: string }

await sodium.ready
port.on('message', (job: Job | { kind: 'close' }) => {
  // Asked to stop: messages are handled in order, so every job sent before this one is done.
  if (job.kind === 'close') {
    port.close()
    return
  }
  try {
    const result =
      job.kind === 'hash'
        ? sodium.crypto_pwhash_str(job.secret, opsLimit, memLimitBytes)
        : sodium.crypto_pwhash_str_verify(job.hash, job.secret)
    port.postMessage({ id: job.id, result })
  } catch (error) {
    port.postMessage({ id: job.id, error: error instanceof Error ? error.message : String(error) })
  }
})
port.postMessage({ ready: true })
