// CPU and memory of another process, read from Linux's /proc: what the scale and memory benchmarks
// report for the gateway and its peers (all threads of the process: main, workers, libuv, GC).
import { readFileSync } from 'node:fs'

/** Clock ticks per second of /proc/PID/stat's times (`getconf CLK_TCK`, 100 on Linux). */
const CLOCK_TICKS_PER_SECOND = 100

/** User plus system CPU time the process has used, in seconds. */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // The command name (field 2) may hold spaces and parentheses: fields are counted after its ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state (field 3).
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND
}

/** The process's resident set size, in bytes. */
export function processRssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]
  if (kib === undefined)
    throw new Error(`Cannot read the RSS of process ${pid}: no VmRSS in /proc/${pid}/status`)
  return Number(kib) * 1024
}

/** One reading of a process. */
export interface ProcessSample {
  /** `performance.now()` of this process at the reading. */
  atMs: number
  cpuSeconds: number
  rssBytes: number
}

/** Readings of a process at a fixed interval, until stopped. */
export interface ProcessSampler {
  readonly samples: readonly ProcessSample[]
  /** Takes a last reading and stops. */
  stop(): ProcessSample[]
}

/** Reads the process now and every `everyMs` after. */
export function sampleProcess(pid: number, everyMs = 1000): ProcessSampler {
  const samples: ProcessSample[] = []
  const read = (): void => {
    samples.push({
      atMs: performance.now(),
      cpuSeconds: processCpuSeconds(pid),
      rssBytes: processRssBytes(pid),
    })
  }
  read()
  const timer = setInterval(read, everyMs)
  return {
    samples,
    stop() {
      clearInterval(timer)
      read()
      return samples
    },
  }
}

/** CPU cores the process used on average between the first and last reading. */
export function coresUsed(samples: readonly ProcessSample[]): number {
  const first = samples[0]
  const last = samples.at(-1)
  if (first === undefined || last === undefined || last.atMs <= first.atMs) return Number.NaN
  return (last.cpuSeconds - first.cpuSeconds) / ((last.atMs - first.atMs) / 1000)
}

/** Bytes to MiB with one decimal. */
export const mib = (bytes: number): number => Math.round((bytes / 2 ** 20) * 10) / 10
