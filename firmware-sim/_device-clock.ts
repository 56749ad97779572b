/** What makes a device's clock wrong: where it started and how fast it runs. */
export interface DeviceClockOptions {
  /** How far off the clock is at `startWallMs`, ms. */
  offsetMs: number
  /** How fast it gains (positive) or loses (negative) time, parts per million (a crystal: ±10-100). */
  driftPpm: number
  /** Wall-clock ms at which the clock was `offsetMs` off. */
  startWallMs: number
}

/** A device's clock: `wall + offset + drift × (wall - start)`, in ms since 1970. */
export function createDeviceClock(options: DeviceClockOptions): (wallMs: number) => number {
  const { offsetMs, driftPpm, startWallMs } = options
  return (wallMs) => wallMs + offsetMs + driftPpm * 1e-6 * (wallMs - startWallMs)
}
