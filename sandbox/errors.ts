/** Stable codes of the sandbox's errors; the gateway maps them to HTTP and logs. */
export const SANDBOX_ERROR_CODES = {
  /** The function source does not compile, or lacks the default export or handlers it needs. */
  invalidFunction: 'invalid_function',
  /** The handler threw; the message carries the guest's error, never a host stack. */
  handlerThrew: 'handler_threw',
  /** The invocation ran past its CPU deadline. */
  deadline: 'deadline',
  /** The function's memory limit or the tenant's cap was reached; the tenant's sandbox must be rebuilt. */
  memory: 'memory',
  /** The handler's output broke a cap or the rules of `ctx` (size, counts, topics). */
  badOutput: 'bad_output',
  /** The sandbox is broken or disposed and must be rebuilt, or its worker was lost. */
  broken: 'broken',
  /** Too many invocations are waiting for the tenant or its worker; nothing was run. Retry later. */
  overloaded: 'overloaded',
} as const

/** One of {@link SANDBOX_ERROR_CODES}. */
export type SandboxErrorCode = (typeof SANDBOX_ERROR_CODES)[keyof typeof SANDBOX_ERROR_CODES]

/** An error of a tenant sandbox, with a stable code and, for compile errors, line and column. */
export class SandboxError extends Error {
  override readonly name = 'SandboxError'
  readonly code: SandboxErrorCode
  readonly line: number | undefined
  readonly column: number | undefined

  constructor(
    code: SandboxErrorCode,
    message: string,
    options: { cause?: unknown; line?: number | undefined; column?: number | undefined } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.line = options.line
    this.column = options.column
  }
}
