import { z } from 'zod'
import { SYNC_ERROR_CODES, SyncError } from './errors.ts'

/** What a record carries to the cloud, besides its sequence number. */
export interface UplinkRecordContent {
  tenant: string
  function: string
  stream: string
  /** When the function emitted it, ms since 1970, by the gateway's clock. */
  createdAt: number
  record: unknown
}

const NAME = z.string().min(1).max(256)
const CONTENT = z.strictObject({
  tenant: NAME,
  function: NAME,
  stream: NAME,
  createdAt: z.number().int().nonnegative(),
  record: z.unknown(),
})

/** The bytes of a record in the cell stream: its content as JSON. */
export function encodeRecordContent(content: UplinkRecordContent): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(content))
}

/** Reads a record's content; throws `bad_record` when it is not what a gateway sends. */
export function decodeRecordContent(seq: number, body: Uint8Array): UplinkRecordContent {
  let value: unknown
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body))
  } catch (cause) {
    throw new SyncError(SYNC_ERROR_CODES.badRecord, `Cannot read record ${seq} as it is not JSON`, { cause })
  }
  const parsed = CONTENT.safeParse(value)
  if (!parsed.success || !('record' in (value as object))) {
    throw new SyncError(
      SYNC_ERROR_CODES.badRecord,
      `Cannot read record ${seq} as ${parsed.success ? 'it has no record' : (parsed.error.issues[0]?.message ?? 'it is malformed')}`,
    )
  }
  return parsed.data as UplinkRecordContent
}
