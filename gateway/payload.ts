/**
 * Deepest nesting of arrays and objects a decoded payload may have. Deeper JSON is handed to the
 * function as text: the structured clone that carries it to a worker, and QuickJS's own parser,
 * recurse per level, and a 10 KB payload of `[[[...]]]` would otherwise overflow the host stack.
 */
export const MAX_JSON_DEPTH = 64

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** How deeply arrays and objects nest in JSON text (brackets inside strings do not count). */
export function jsonDepth(text: string): number {
  let depth = 0
  let deepest = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 92 /* \ */) i++
      else if (c === 34 /* " */) inString = false
    } else if (c === 34) {
      inString = true
    } else if (c === 123 /* { */ || c === 91 /* [ */) {
      if (++depth > deepest) deepest = depth
    } else if (c === 125 /* } */ || c === 93 /* ] */) {
      depth--
    }
  }
  return deepest
}

/** How deeply arrays and objects nest in a value, counting no further than `limit + 1`. */
export function valueDepth(value: unknown, limit = MAX_JSON_DEPTH): number {
  if (value === null || typeof value !== 'object') return 0
  if (limit < 0) return 1
  let deepest = 0
  for (const child of Object.values(value)) {
    const depth = valueDepth(child, limit - 1)
    if (depth > deepest) deepest = depth
    if (deepest > limit) break
  }
  return deepest + 1
}

/**
 * The payload as a function sees it: the parsed JSON value when the payload is valid JSON (nested
 * at most {@link MAX_JSON_DEPTH} deep), else the text when it is valid UTF-8, else the bytes.
 */
export function decodePayload(payload: Uint8Array): unknown {
  let text: string
  try {
    text = UTF8.decode(payload)
  } catch {
    return new Uint8Array(payload)
  }
  // Only text that can be a JSON value is parsed: a thrown SyntaxError costs more than the check.
  const trimmed = text.trim()
  const first = trimmed.charCodeAt(0)
  const jsonLike =
    first === 123 /* { */ ||
    first === 91 /* [ */ ||
    first === 34 /* " */ ||
    first === 45 /* - */ ||
    (first >= 48 && first <= 57) ||
    trimmed === 'true' ||
    trimmed === 'false' ||
    trimmed === 'null'
  if (jsonLike && jsonDepth(trimmed) <= MAX_JSON_DEPTH) {
    try {
      return JSON.parse(trimmed)
    } catch {}
  }
  return text
}

/** The bytes published for a value: bytes as they are, text as UTF-8, anything else as JSON. */
export function encodePayload(value: unknown): Buffer {
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  if (typeof value === 'string') return Buffer.from(value, 'utf8')
  return Buffer.from(JSON.stringify(value) ?? 'null', 'utf8')
}
