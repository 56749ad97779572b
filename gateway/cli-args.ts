// Parsers of the CLI's numeric flags, shared by its commands.
import { InvalidArgumentError } from 'commander'

/** A flag that takes a whole number from `min` to `max`; `what` names it in the error. */
export function wholeNumberArg(min: number, max = Number.MAX_SAFE_INTEGER, what?: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`
      throw new InvalidArgumentError(
        `must be a whole number ${range}${what === undefined ? '' : ` (${what})`}`,
      )
    }
    return Number(value)
  }
}

/** A port flag: 0 (any free port) to 65535. */
export function portArg(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) > 65_535)
    throw new InvalidArgumentError('must be a port number 0-65535')
  return Number(value)
}
