// Device credentials: what provisioning returns, what `taureau sim --save` writes and `--credentials` reads.
import { z } from 'zod'
import { SIM_ERROR_CODES, SimError } from './errors.ts'

/** How one simulated device signs in: its id (also its MQTT client id) and MQTT username and password. */
export interface DeviceCredentials {
  id: string
  /** `DEVICE@TENANT` for a Taureau gateway. */
  username: string
  password: string
}

/**
 * True when `text` can be one level of a topic name a device publishes to: not empty, and without
 * the separator `/`, the wildcards `+` and `#` [MQTT-3.3.2-2] or U+0000 [MQTT-1.5.3-2]. Device ids
 * become such a level (`sensors/ID/KIND`).
 */
export function isTopicLevel(text: string): boolean {
  return text.length > 0 && !['/', '+', '#', '\u0000'].some((character) => text.includes(character))
}

const deviceIdSchema = z
  .string()
  .max(128)
  .refine(isTopicLevel, { message: "must not be empty or contain '/', '+', '#' or NUL" })

const credentialsSchema = z
  .array(z.object({ id: deviceIdSchema, username: z.string().min(1), password: z.string().min(1) }).strict())
  .min(1, { message: 'must list at least one device' })

/**
 * Checks a parsed credentials list (a JSON array of `{ id, username, password }`, as
 * `taureau sim --provision --save FILE` writes) and returns it. Throws a {@link SimError}
 * `invalid_credentials` naming the first bad entry, or a repeated id (two connections with one
 * client id would take each other over).
 */
export function parseDeviceCredentials(value: unknown): DeviceCredentials[] {
  const result = credentialsSchema.safeParse(value)
  if (!result.success) {
    const issue = result.error.issues[0]
    const where =
      issue === undefined || issue.path.length === 0 ? 'the list' : `entry ${issue.path.join('.')}`
    throw new SimError(
      SIM_ERROR_CODES.invalidCredentials,
      `Cannot use the device credentials as ${where} is invalid: ${issue?.message ?? 'unknown problem'}`,
    )
  }
  const seen = new Set<string>()
  for (const device of result.data) {
    if (seen.has(device.id)) {
      throw new SimError(
        SIM_ERROR_CODES.invalidCredentials,
        `Cannot use the device credentials as the id '${device.id}' appears twice`,
      )
    }
    seen.add(device.id)
  }
  return result.data
}
