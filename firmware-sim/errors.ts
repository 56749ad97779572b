/** Stable codes of {@link SimError}. */
export const SIM_ERROR_CODES = {
  /** A binary reading is truncated, of an unknown version or kind, or the wrong length. */
  invalidReading: 'invalid_reading',
  /** A list of device credentials (a `--credentials` file) does not have the expected shape. */
  invalidCredentials: 'invalid_credentials',
  /** The management API refused or failed a provisioning call; the API's error is the `cause`. */
  provisionFailed: 'provision_failed',
} as const

/** One of {@link SIM_ERROR_CODES}. */
export type SimErrorCode = (typeof SIM_ERROR_CODES)[keyof typeof SIM_ERROR_CODES]

/** A domain error of the simulator, with a stable {@link SimErrorCode} and the original failure in `cause`. */
export class SimError extends Error {
  override readonly name = 'SimError'
  readonly code: SimErrorCode

  constructor(code: SimErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
  }
}
