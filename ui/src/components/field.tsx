import type { ComponentChildren, JSX } from 'preact'

interface FieldProps {
  id: string
  label: string
  error?: string | undefined
  hint?: ComponentChildren
  /** Spans the whole row of a form grid. */
  wide?: boolean
}

/** A labelled control with its hint and error; the control gets `id` and the ARIA links. */
function Field(props: FieldProps & { children: ComponentChildren }) {
  return (
    <div class={`field${props.wide === true ? ' wide' : ''}${props.error === undefined ? '' : ' invalid'}`}>
      <label for={props.id}>{props.label}</label>
      {props.children}
      {props.hint !== undefined && (
        <p class="hint" id={`${props.id}-hint`}>
          {props.hint}
        </p>
      )}
      {props.error !== undefined && (
        <p class="field-error" id={`${props.id}-error`}>
          {props.error}
        </p>
      )}
    </div>
  )
}

function aria(props: FieldProps) {
  const described = [
    props.error === undefined ? '' : `${props.id}-error`,
    props.hint === undefined ? '' : `${props.id}-hint`,
  ]
    .filter(Boolean)
    .join(' ')
  return {
    id: props.id,
    'aria-invalid': props.error === undefined ? undefined : ('true' as const),
    'aria-describedby': described === '' ? undefined : described,
  }
}

type InputAttributes = Omit<JSX.InputHTMLAttributes<HTMLInputElement>, 'value' | 'id' | 'label'>

/** A text (or number, password) input with its label. */
export function TextField(
  props: FieldProps & { value: string; onValue: (value: string) => void; input?: InputAttributes },
) {
  return (
    <Field {...props}>
      <input
        type="text"
        {...props.input}
        {...aria(props)}
        value={props.value}
        onInput={(event) => props.onValue(event.currentTarget.value)}
      />
    </Field>
  )
}

/** A multi-line input with its label; `mono` for JSON and code. */
export function TextAreaField(
  props: FieldProps & { value: string; onValue: (value: string) => void; rows?: number; mono?: boolean },
) {
  return (
    <Field {...props}>
      <textarea
        {...aria(props)}
        class={props.mono === true ? 'mono' : undefined}
        rows={props.rows ?? 4}
        spellcheck={false}
        value={props.value}
        onInput={(event) => props.onValue(event.currentTarget.value)}
      />
    </Field>
  )
}

/** A choice among options with its label. */
export function SelectField(
  props: FieldProps & {
    value: string
    onValue: (value: string) => void
    options: ReadonlyArray<{ value: string; label: string }>
  },
) {
  return (
    <Field {...props}>
      <select
        {...aria(props)}
        value={props.value}
        onChange={(event) => props.onValue(event.currentTarget.value)}
      >
        {props.options.map((option) => (
          <option key={option.value} value={option.value}>
            {option.label}
          </option>
        ))}
      </select>
    </Field>
  )
}

/** A checkbox with its label after it. */
export function CheckField(
  props: Omit<FieldProps, 'hint'> & { checked: boolean; onValue: (checked: boolean) => void },
) {
  return (
    <div class={`field check${props.error === undefined ? '' : ' invalid'}`}>
      <input
        type="checkbox"
        {...aria(props)}
        checked={props.checked}
        onChange={(event) => props.onValue(event.currentTarget.checked)}
      />
      <label for={props.id}>{props.label}</label>
      {props.error !== undefined && (
        <p class="field-error" id={`${props.id}-error`}>
          {props.error}
        </p>
      )}
    </div>
  )
}
