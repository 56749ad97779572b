import { z } from 'zod'
import { CONTROL_CHARACTERS, MAX_RECORD_BODY_BYTES, MAX_RECORD_NAME_CHARS } from './cloud-store.ts'
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

// The cloud store's rules (cloud-store.ts): 1 to 256 characters, no control characters.
const NAME = z
  .string()
  .min(1)
  .max(MAX_RECORD_NAME_CHARS)
  .refine((name) => !CONTROL_CHARACTERS.test(name), 'has a control character')
const CONTENT = z.strictObject({
  tenant: NAME,
  function: NAME,
  stream: NAME,
  createdAt: z.number().int().nonnegative(),
  record: z.unknown(),
})

/** Largest encoded record the receiver takes (its `maxRecordBytes` default): the body plus the envelope. */
export const MAX_RECORD_CONTENT_BYTES = MAX_RECORD_BODY_BYTES + 4096

/** The bytes of a record in the cell stream: its content as JSON. */
export function encodeRecordContent(content: UplinkRecordContent): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(content))
}

/**
 * Why the receiver would refuse this record, or undefined when it takes it. The gateway checks
 * before sending: a record the cloud refuses would close every session at the same place, and
 * no record after it would ever be delivered.
 */
export function unsendable(content: UplinkRecordContent, encoded: Uint8Array): string | undefined {
  const parsed = CONTENT.safeParse(content)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    return `its ${issue?.path.join('.') || 'content'} ${issue?.message ?? 'is malformed'}`
  }
  if (encoded.length > MAX_RECORD_CONTENT_BYTES)
    return `it is ${encoded.length} bytes, more than ${MAX_RECORD_CONTENT_BYTES}`
  const body = JSON.stringify(content.record ?? null)
  if (Buffer.byteLength(body) > MAX_RECORD_BODY_BYTES)
    return `its record is more than ${MAX_RECORD_BODY_BYTES} bytes`
  return undefined
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
