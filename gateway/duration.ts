// Durations as people write them in triggers and flags: `500ms`, `10s`, `5m`, `1h`, `1d`.

const DURATION_UNITS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
}

/** Milliseconds of a duration like `500ms`, `10s`, `5m`, `1h` or `1d`; undefined when it is not one. */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim())
  if (match === null) return undefined
  return Math.round(Number(match[1]) * (DURATION_UNITS[match[2] as string] as number))
}
