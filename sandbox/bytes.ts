/**
 * Values cross the sandbox boundary as JSON; bytes (`Uint8Array`, `Buffer`) travel inside it as
 * `{ '$taureau:bytes': base64 }` and become `Uint8Array` again on the other side.
 */
export const BYTES_MARKER = '$taureau:bytes'

/** JSON text of `value`, with its byte arrays marked. */
export function toBoundaryJson(value: unknown): string {
  return JSON.stringify(
    value,
    function replace(this: Record<string, unknown>, key: string, current: unknown) {
      // JSON.stringify has already called Buffer#toJSON; the holder still has the original.
      const original = this[key]
      if (original instanceof Uint8Array)
        return {
          // A view, not a copy, of the bytes.
          [BYTES_MARKER]: Buffer.from(original.buffer, original.byteOffset, original.byteLength).toString(
            'base64',
          ),
        }
      return current
    },
  )
}

/** Parses JSON text from the guest, turning marked byte arrays back into `Uint8Array`. */
export function fromBoundaryJson(text: string): unknown {
  return JSON.parse(text, (_key, value: unknown) => {
    if (
      value !== null &&
      typeof value === 'object' &&
      typeof (value as Record<string, unknown>)[BYTES_MARKER] === 'string'
    ) {
      return new Uint8Array(Buffer.from((value as Record<string, string>)[BYTES_MARKER] as string, 'base64'))
    }
    return value
  })
}
