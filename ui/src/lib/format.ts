// How numbers, sizes and times read in the UI: compact, with units, in the viewer's time zone.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

/** Bytes in binary units: `512 B`, `1.5 KiB`, `64 MiB`. */
export function formatBytes(bytes: number): string {
  let value = bytes
  let unit = 0
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024
    unit++
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2
  return `${Number(value.toFixed(digits))} ${UNITS[unit]}`
}

/** A whole number with thousands separators. */
export function formatCount(value: number): string {
  return value.toLocaleString('en-US')
}

/** A rate or measure with about three significant digits. */
export function formatNumber(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–'
  if (value === 0) return '0'
  const abs = Math.abs(value)
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : 2
  return Number(value.toFixed(digits)).toLocaleString('en-US')
}

/** Milliseconds as `850 ms`, `12 s`, `5 min`, `3 h`, `7 d`. */
export function formatDuration(ms: number): string {
  const steps: Array<[number, string]> = [
    [86_400_000, 'd'],
    [3_600_000, 'h'],
    [60_000, 'min'],
    [1000, 's'],
  ]
  for (const [size, unit] of steps) {
    if (Math.abs(ms) >= size) return `${Number((ms / size).toFixed(ms % size === 0 ? 0 : 1))} ${unit}`
  }
  return `${ms} ms`
}

function pad(value: number): string {
  return String(value).padStart(2, '0')
}

/** A time (ISO string or epoch ms) as `2025-05-01 14:03:07`, local; `–` when there is none. */
export function formatTime(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return '–'
  const date = new Date(value)
  if (Number.isNaN(date.getTime())) return String(value)
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  )
}

/** A time as a clock reading, `14:03:07.120`, for live lists. */
export function formatClock(value: number): string {
  const date = new Date(value)
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${String(
    date.getMilliseconds(),
  ).padStart(3, '0')}`
}

/** How long ago a time was: `just now`, `42 s ago`, `3 min ago`; `never` when there is none. */
export function formatAgo(value: string | number | null | undefined, now = Date.now()): string {
  if (value === null || value === undefined) return 'never'
  const ms = now - new Date(value).getTime()
  if (!Number.isFinite(ms)) return '–'
  if (ms < 2000) return 'just now'
  return `${formatDuration(Math.round(ms / 1000) * 1000)} ago`
}

/** A JSON value on one line, cut to `max` characters. */
export function preview(value: unknown, max = 120): string {
  const text = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value))
  return text.length > max ? `${text.slice(0, max - 1)}…` : text
}

/** Base64 bytes as text when they are UTF-8, else null. */
export function decodeBase64(base64: string): string | null {
  try {
    const bytes = Uint8Array.from(atob(base64), (char) => char.charCodeAt(0))
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch {
    return null
  }
}
