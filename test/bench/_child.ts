// Child processes of the benchmarks: the line a server prints when it listens, and a clean stop.
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'

/** The first line the child prints on stdout; rejects, naming `what`, if it exits before. */
export async function firstLine(child: ChildProcess, what: string): Promise<string> {
  const exited = once(child, 'exit')
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
  const [line] = (await Promise.race([
    once(lines, 'line'),
    exited.then(([code]) => {
      throw new Error(`Cannot start ${what}: it exited with ${code}`)
    }),
  ])) as [string]
  return line
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
