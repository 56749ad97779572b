import type { QuotaOverrides, Quotas } from '../api/types.ts'
import type { FieldErrors } from '../lib/form.ts'
import { formatBytes, formatCount, formatDuration } from '../lib/format.ts'
import { SelectField, TextField } from './field.tsx'

type QuotaKey = keyof QuotaOverrides

/** A quota as forms and tables show it. */
interface QuotaField {
  key: QuotaKey
  label: string
  kind: 'count' | 'bytes' | 'mib' | 'ms' | 'policy' | 'priorities'
}

/** The tenant quotas, in the order the UI lists them. */
export const QUOTA_FIELDS: readonly QuotaField[] = [
  { key: 'maxConnections', label: 'Max connections', kind: 'count' },
  { key: 'maxMessagesPerSec', label: 'Max messages per second', kind: 'count' },
  { key: 'burstMessages', label: 'Burst messages', kind: 'count' },
  { key: 'maxPayloadBytes', label: 'Max payload bytes', kind: 'bytes' },
  { key: 'maxRetainedMessages', label: 'Max retained messages', kind: 'count' },
  { key: 'maxPersistentSessions', label: 'Max persistent sessions', kind: 'count' },
  { key: 'maxFunctions', label: 'Max functions', kind: 'count' },
  { key: 'maxFunctionMemoryMb', label: 'Max function memory (MiB)', kind: 'mib' },
  { key: 'maxFunctionTimeoutMs', label: 'Max function timeout (ms)', kind: 'ms' },
  { key: 'maxStateKeys', label: 'Max state keys', kind: 'count' },
  { key: 'maxStateBytes', label: 'Max state bytes', kind: 'bytes' },
  { key: 'outboxBytes', label: 'Outbox bytes', kind: 'bytes' },
  { key: 'outboxTtlMs', label: 'Outbox TTL (ms)', kind: 'ms' },
  { key: 'outboxPolicy', label: 'Outbox policy', kind: 'policy' },
  { key: 'outboxStreamPriorities', label: 'Outbox stream priorities (JSON)', kind: 'priorities' },
]

/** A quota's value for reading: `64 MiB`, `1,000`, `7 d`. */
export function formatQuota(field: QuotaField, value: unknown): string {
  if (value === undefined) return field.key === 'burstMessages' ? "one second's worth" : '–'
  if (typeof value === 'number') {
    if (field.kind === 'bytes') return formatBytes(value)
    if (field.kind === 'mib') return `${formatCount(value)} MiB`
    if (field.kind === 'ms') return formatDuration(value)
    return formatCount(value)
  }
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value)
    return entries.length === 0
      ? 'none'
      : entries.map(([stream, priority]) => `${stream}: ${priority}`).join(', ')
  }
  return String(value)
}

/** Form texts of a tenant's overrides: empty for the quotas it does not set. */
export function quotaTexts(overrides: QuotaOverrides = {}): Record<string, string> {
  const texts: Record<string, string> = {}
  for (const field of QUOTA_FIELDS) {
    const value = overrides[field.key]
    texts[field.key] =
      value === undefined ? '' : typeof value === 'object' ? JSON.stringify(value) : String(value)
  }
  return texts
}

/** The overrides the form texts say: empty fields are left out; bad JSON is an error of its field. */
export function quotaBody(texts: Record<string, string>): {
  body: Record<string, unknown>
  errors: FieldErrors
} {
  const body: Record<string, unknown> = {}
  const errors: FieldErrors = {}
  for (const field of QUOTA_FIELDS) {
    const text = (texts[field.key] ?? '').trim()
    if (text === '') continue
    if (field.kind === 'policy') body[field.key] = text
    else if (field.kind === 'priorities') {
      try {
        body[field.key] = JSON.parse(text)
      } catch {
        errors[field.key] = 'is not valid JSON: give an object like {"alerts": 10}'
      }
    } else body[field.key] = Number(text)
  }
  return { body, errors }
}

/**
 * Inputs for every quota override. An empty field follows the gateway's default, shown as its
 * placeholder when `defaults` are known. Errors are looked up under `errorPrefix` + the key.
 */
export function QuotaInputs(props: {
  idPrefix: string
  texts: Record<string, string>
  onTexts: (texts: Record<string, string>) => void
  errors: FieldErrors
  errorPrefix?: string
  defaults?: Quotas | undefined
}) {
  const set = (key: string, value: string) => props.onTexts({ ...props.texts, [key]: value })
  return (
    <div class="form-grid">
      {QUOTA_FIELDS.map((field) => {
        const id = `${props.idPrefix}-${field.key}`
        const at = `${props.errorPrefix ?? ''}${field.key}`
        // A stream's priority fails below its field (`outboxStreamPriorities.alerts`).
        const error =
          props.errors[at] ?? Object.entries(props.errors).find(([key]) => key.startsWith(`${at}.`))?.[1]
        const fallback = props.defaults?.[field.key]
        const placeholder =
          fallback === undefined
            ? 'default'
            : typeof fallback === 'object'
              ? JSON.stringify(fallback)
              : String(fallback)
        if (field.kind === 'policy') {
          return (
            <SelectField
              key={field.key}
              id={id}
              label={field.label}
              error={error}
              value={props.texts[field.key] ?? ''}
              onValue={(value) => set(field.key, value)}
              options={[
                { value: '', label: `Default${fallback === undefined ? '' : ` (${String(fallback)})`}` },
                { value: 'refuse', label: 'refuse' },
                { value: 'drop-oldest', label: 'drop-oldest' },
                { value: 'drop-lowest-priority', label: 'drop-lowest-priority' },
              ]}
            />
          )
        }
        return (
          <TextField
            key={field.key}
            id={id}
            label={field.label}
            error={error}
            value={props.texts[field.key] ?? ''}
            onValue={(value) => set(field.key, value)}
            input={{
              type: field.kind === 'priorities' ? 'text' : 'number',
              placeholder,
              class: field.kind === 'priorities' ? 'mono' : undefined,
            }}
          />
        )
      })}
    </div>
  )
}
