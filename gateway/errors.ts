/**
 * Stable error codes of the gateway. The HTTP API maps each code to a status in exactly one place
 * (`api.ts`), so a code is the contract with API clients and the CLI.
 */
export const GATEWAY_ERROR_CODES = {
  /** A request body, query or path parameter failed validation. */
  invalidInput: 'invalid_input',
  /** A configuration file, env variable or flag failed validation. */
  invalidConfig: 'invalid_config',
  /** The bearer token is missing or wrong. */
  unauthorized: 'unauthorized',
  /** The token is valid but does not grant this operation. */
  forbidden: 'forbidden',
  /** The named tenant, device or rule does not exist. */
  notFound: 'not_found',
  /** The thing being created exists already. */
  conflict: 'conflict',
  /** A bound was reached (queue, pool, quota). */
  limitReached: 'limit_reached',
  /** The store or another part of the gateway failed. */
  internal: 'internal',
} as const

/** One of {@link GATEWAY_ERROR_CODES}. */
export type GatewayErrorCode = (typeof GATEWAY_ERROR_CODES)[keyof typeof GATEWAY_ERROR_CODES]

/**
 * A domain error of the gateway: carries a stable {@link GatewayErrorCode}, an optional field path
 * for input errors, and the original failure in `cause`.
 */
export class GatewayError extends Error {
  override readonly name = 'GatewayError'
  readonly code: GatewayErrorCode
  readonly field: string | undefined
  /** Where in a function's source a compile error is (1-based), when known. */
  readonly line: number | undefined
  readonly column: number | undefined

  constructor(
    code: GatewayErrorCode,
    message: string,
    options: { cause?: unknown; field?: string; line?: number | undefined; column?: number | undefined } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.field = options.field
    this.line = options.line
    this.column = options.column
  }
}

/** Quotes a value taken from outside for an error message: truncated, control characters escaped. */
export function quote(value: unknown, maxChars = 64): string {
  const text = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value))
  const clipped = text.length > maxChars ? `${text.slice(0, maxChars)}…` : text
  // biome-ignore lint/suspicious/noControlCharactersInRegex: escaping control characters is the point
  return `'${clipped.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}'`
}
