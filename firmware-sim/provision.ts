// Device ids and provisioning through the gateway's management API.
// These two gateway modules are imported directly, not through gateway/index.ts: the index loads
// the whole broker (aedes, SQLite, QuickJS; 1.6 s), which a simulator, often on another machine,
// has no use for. Both are leaves (no imports of their own beyond data-file names).
import { ApiError, callApi } from '../gateway/api-client.ts'
import { DEVICE_ID_PATTERN } from '../gateway/names.ts'
import type { DeviceCredentials } from './credentials.ts'
import { SIM_ERROR_CODES, SimError } from './errors.ts'

/** Options of {@link provisionDevices}. */
export interface ProvisionOptions {
  /** The gateway's API base URL, e.g. `http://127.0.0.1:8080` (without `/api/v1`). */
  apiUrl: string
  /** An API token allowed to manage the tenant's devices (the admin token to create a tenant). */
  token: string
  tenant: string
  /** Device ids to create, or to give a new secret when they exist. */
  ids: string[]
  /** Create the tenant first when it does not exist; default false (a missing tenant is an error). */
  createTenant?: boolean
}

/**
 * Provisioning calls in flight at once. The gateway hashes each new secret with Argon2id (tens of
 * ms, in one worker): more in parallel only queue there, and fewer keep its API responsive.
 */
const PROVISION_CONCURRENCY = 4

/**
 * Makes the devices `ids` in `tenant` and returns their credentials in the same order: a new
 * device gets its first secret; one that exists gets a new one (its old secret stops working and
 * its connections are closed). Throws a {@link SimError} `provision_failed` naming the device and
 * the API's answer (the `cause`).
 */
export async function provisionDevices(options: ProvisionOptions): Promise<DeviceCredentials[]> {
  const target = { url: options.apiUrl.replace(/\/+$/, ''), token: options.token }
  const tenantPath = `/tenants/${encodeURIComponent(options.tenant)}`
  const failed = (what: string, cause: unknown): SimError =>
    new SimError(SIM_ERROR_CODES.provisionFailed, `Cannot ${what}: ${(cause as Error).message}`, { cause })

  if (options.createTenant === true) {
    try {
      await callApi(target, 'POST', '/tenants', { id: options.tenant })
    } catch (error) {
      // 409: it exists, which is what was wanted.
      if (!(error instanceof ApiError && error.status === 409))
        throw failed(`create tenant '${options.tenant}'`, error)
    }
  }

  const provisionOne = async (id: string): Promise<DeviceCredentials> => {
    const devicePath = `${tenantPath}/devices`
    let answer: unknown
    try {
      answer = await callApi(target, 'POST', devicePath, { id })
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 409)) {
        throw failed(`provision device '${id}' in tenant '${options.tenant}'`, error)
      }
      try {
        answer = await callApi(target, 'POST', `${devicePath}/${encodeURIComponent(id)}/rotate`)
      } catch (rotateError) {
        throw failed(`give device '${id}' of tenant '${options.tenant}' a new secret`, rotateError)
      }
    }
    const { username, secret } = answer as { username?: unknown; secret?: unknown }
    if (typeof username !== 'string' || typeof secret !== 'string') {
      throw failed(`provision device '${id}'`, new Error('the API answered without a username and secret'))
    }
    return { id, username, password: secret }
  }

  const credentials: DeviceCredentials[] = new Array(options.ids.length)
  let next = 0
  let failure: unknown
  const worker = async (): Promise<void> => {
    // Workers take the next id until the list ends or one of them failed.
    while (next < options.ids.length && failure === undefined) {
      const index = next++
      try {
        credentials[index] = await provisionOne(options.ids[index] as string)
      } catch (error) {
        failure ??= error
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(PROVISION_CONCURRENCY, options.ids.length) }, worker))
  if (failure !== undefined) throw failure
  return credentials
}

/**
 * Device ids `${prefix}-0001`, `${prefix}-0002`, … `count` of them, zero-padded to the width of
 * `count` (at least 4 digits) so they sort in order. Default prefix 'sim'.
 */
export function deviceIds(count: number, prefix = 'sim'): string[] {
  if (!Number.isInteger(count) || count < 0) {
    throw new RangeError(`Cannot make device ids as the count ${count} is not a whole number >= 0`)
  }
  const width = Math.max(4, String(count).length)
  const ids = Array.from({ length: count }, (_, i) => `${prefix}-${String(i + 1).padStart(width, '0')}`)
  // The longest id is the one that can break the gateway's length rule.
  if (count > 0 && !DEVICE_ID_PATTERN.test(ids[ids.length - 1] as string)) {
    throw new RangeError(
      `Cannot make device ids with the prefix '${prefix}' as '${ids[ids.length - 1]}' is not a valid device id (letters, digits, ., :, - or _, starting with a letter or digit, at most 128)`,
    )
  }
  return ids
}
