import { useState } from 'preact/hooks'
import type { z } from 'zod'
import { ApiError, isQuiet, messageOf } from '../api/client.ts'

/** Error messages by field path (`triggers.0.topic`); `''` is the form as a whole. */
export type FieldErrors = Record<string, string>

/** The outcome of {@link validate}: the parsed value, or an error per field. */
export type Validation<T> = { ok: true; data: T } | { ok: false; errors: FieldErrors }

type Issue = z.core.$ZodIssue

/** Error messages of zod issues by path, the first per field; union failures name their likeliest branch. */
export function issuesToErrors(issues: readonly Issue[], prefix: PropertyKey[] = []): FieldErrors {
  const errors: FieldErrors = {}
  for (const issue of issues) {
    const at = [...prefix, ...issue.path]
    if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      // The branch that got furthest: no unknown keys, fewest issues.
      const branches = [...issue.errors].sort((a, b) => rank(a) - rank(b))
      Object.assign(errors, { ...issuesToErrors(branches[0] ?? [], at), ...errors })
      continue
    }
    const key = at.map(String).join('.')
    const message =
      issue.code === 'unrecognized_keys' ? `has unknown key ${issue.keys.join(', ')}` : issue.message
    if (errors[key] === undefined) errors[key] = message
  }
  return errors
}

function rank(issues: readonly Issue[]): number {
  const unknownKeys = issues.some((issue) => issue.code === 'unrecognized_keys' || issue.path.length === 0)
  return (unknownKeys ? 1000 : 0) + issues.length
}

/** Validates a form's value with the API's own schema. */
export function validate<S extends z.ZodType>(schema: S, value: unknown): Validation<z.output<S>> {
  const result = schema.safeParse(value)
  return result.success
    ? { ok: true, data: result.data }
    : { ok: false, errors: issuesToErrors(result.error.issues) }
}

/** A form's errors and busy flag, and a submit that validates, sends and places the errors. */
export function useForm() {
  const [errors, setErrors] = useState<FieldErrors>({})
  const [busy, setBusy] = useState(false)

  /**
   * Validates `value` with `schema`; when it passes, runs `send` with the parsed value. Field
   * errors of the schema or of the API's answer go next to their fields, others in `errors['']`.
   * Resolves true when `send` succeeded.
   */
  async function submit<S extends z.ZodType>(
    schema: S,
    value: unknown,
    send: (data: z.output<S>) => Promise<void>,
    extra: FieldErrors = {},
  ): Promise<boolean> {
    const checked = validate(schema, value)
    const found = { ...(checked.ok ? {} : checked.errors), ...extra }
    setErrors(found)
    if (!checked.ok || Object.keys(extra).length > 0) return false
    setBusy(true)
    try {
      await send(checked.data)
      return true
    } catch (error) {
      setErrors(errorsOfFailure(error))
      return false
    } finally {
      setBusy(false)
    }
  }
  return { errors, setErrors, busy, submit }
}

/** Where the API's error goes: next to its field when it names one, else as the form's error. */
export function errorsOfFailure(error: unknown): FieldErrors {
  // A 401 is shown too: signing in expects it, and elsewhere the page leaves for sign-in anyway.
  if (isQuiet(error) && !(error instanceof ApiError)) return {}
  if (error instanceof ApiError && error.field !== undefined && error.field !== '(body)') {
    return { [error.field]: error.message }
  }
  return { '': messageOf(error) }
}

/** A number field's text as the API wants it: absent when empty. */
export function numberOrUndefined(text: string): number | undefined {
  return text.trim() === '' ? undefined : Number(text)
}

/** Parses JSON a user typed; the error message says where it went wrong. */
export function parseJson(text: string): { ok: true; value: unknown } | { ok: false; message: string } {
  try {
    return { ok: true, value: JSON.parse(text) as unknown }
  } catch (error) {
    return { ok: false, message: `is not valid JSON: ${messageOf(error)}` }
  }
}
