import type { FunctionView, Trigger } from '../api/types.ts'
import { CheckField, SelectField, TextAreaField, TextField } from '../components/field.tsx'
import type { FieldErrors } from '../lib/form.ts'

/** One trigger row of the form. */
export interface TriggerRow {
  key: number
  kind: 'topic' | 'every' | 'cron' | 'state'
  value: string
  timezone: string
}

/** The deploy form's fields as typed, before validation. */
export interface Settings {
  name: string
  triggers: TriggerRow[]
  output: string
  memoryMb: string
  timeoutMs: string
  config: string
  enabled: boolean
}

let rowKeys = 0

function row(kind: TriggerRow['kind'], value: string, timezone = ''): TriggerRow {
  rowKeys++
  return { key: rowKeys, kind, value, timezone }
}

/** The sample a new function starts from. */
export const TEMPLATE_SOURCE = `export default {
  onMessage(msg, ctx) {
    return { device: msg.device, f: msg.payload.c * 1.8 + 32 }
  },
}
`

/** The form of a new function. */
export function newSettings(): Settings {
  return {
    name: '',
    triggers: [row('topic', 'sensors/#')],
    output: 'out/fahrenheit',
    memoryMb: '',
    timeoutMs: '',
    config: '',
    enabled: true,
  }
}

/** The form of a deployed function, from its current version. */
export function settingsOf(fn: FunctionView): Settings {
  return {
    name: fn.name,
    triggers: fn.triggers.map((trigger) => {
      if ('topic' in trigger) return row('topic', trigger.topic)
      if ('every' in trigger) return row('every', trigger.every)
      if ('cron' in trigger) return row('cron', trigger.cron, trigger.timezone ?? '')
      return row('state', trigger.state)
    }),
    output: fn.output ?? '',
    memoryMb: String(fn.limits.memoryMb),
    timeoutMs: String(fn.limits.timeoutMs),
    config: Object.keys(fn.config).length === 0 ? '' : JSON.stringify(fn.config, null, 2),
    enabled: fn.enabled,
  }
}

/** A trigger row as the API takes it. */
export function triggerOf(trigger: TriggerRow): Trigger {
  const value = trigger.value.trim()
  switch (trigger.kind) {
    case 'topic':
      return { topic: value }
    case 'every':
      return { every: value }
    case 'state':
      return { state: value }
    default:
      return trigger.timezone.trim() === ''
        ? { cron: value }
        : { cron: value, timezone: trigger.timezone.trim() }
  }
}

/** The deploy body the form says, and the errors found before the schema (config that is not JSON). */
export function deployBodyOf(
  settings: Settings,
  source: string,
): { body: Record<string, unknown>; errors: FieldErrors } {
  const body: Record<string, unknown> = {
    name: settings.name.trim(),
    source,
    triggers: settings.triggers.map(triggerOf),
    enabled: settings.enabled,
  }
  const errors: FieldErrors = {}
  if (settings.output.trim() !== '') body.output = settings.output.trim()
  const limits: Record<string, number> = {}
  if (settings.memoryMb.trim() !== '') limits.memoryMb = Number(settings.memoryMb)
  if (settings.timeoutMs.trim() !== '') limits.timeoutMs = Number(settings.timeoutMs)
  if (Object.keys(limits).length > 0) body.limits = limits
  if (settings.config.trim() !== '') {
    try {
      body.config = JSON.parse(settings.config)
    } catch (error) {
      errors.config = `is not valid JSON: ${(error as Error).message}`
    }
  }
  return { body, errors }
}

const KINDS = [
  { value: 'topic', label: 'Topic filter' },
  { value: 'every', label: 'Every (interval)' },
  { value: 'cron', label: 'Cron schedule' },
  { value: 'state', label: 'State namespace' },
] as const

const PLACEHOLDERS: Record<TriggerRow['kind'], string> = {
  topic: 'sensors/#',
  every: '10s',
  cron: '0 * * * *',
  state: 'rooms',
}

/** The settings of a deploy: name (new functions), triggers, output, limits, config, enabled. */
export function SettingsFields(props: {
  settings: Settings
  onSettings: (settings: Settings) => void
  errors: FieldErrors
  isNew: boolean
}) {
  const { settings, errors } = props
  const set = (patch: Partial<Settings>) => props.onSettings({ ...settings, ...patch })
  const setRow = (key: number, patch: Partial<TriggerRow>) =>
    set({
      triggers: settings.triggers.map((trigger) =>
        trigger.key === key ? { ...trigger, ...patch } : trigger,
      ),
    })

  return (
    <>
      {props.isNew && (
        <TextField
          id="fn-name"
          label="Function name"
          value={settings.name}
          onValue={(name) => set({ name })}
          error={errors.name}
          hint="Lower-case letters, digits, - and _."
          input={{ autoComplete: 'off', placeholder: 'fahrenheit' }}
        />
      )}
      <fieldset class="triggers">
        <legend>Triggers</legend>
        {settings.triggers.map((trigger, index) => {
          const id = `fn-trigger-${trigger.key}`
          const error =
            errors[`triggers.${index}.${trigger.kind}`] ??
            errors[`triggers.${index}`] ??
            errors[`triggers.${index}.timezone`]
          return (
            <div class="trigger-row" key={trigger.key}>
              <SelectField
                id={`${id}-kind`}
                label={`Trigger ${index + 1} type`}
                value={trigger.kind}
                onValue={(kind) => setRow(trigger.key, { kind: kind as TriggerRow['kind'] })}
                options={KINDS}
              />
              <TextField
                id={`${id}-value`}
                label={`Trigger ${index + 1} ${KINDS.find((kind) => kind.value === trigger.kind)?.label.toLowerCase() ?? ''}`}
                value={trigger.value}
                onValue={(value) => setRow(trigger.key, { value })}
                error={error}
                input={{ class: 'mono', placeholder: PLACEHOLDERS[trigger.kind], autoComplete: 'off' }}
              />
              {trigger.kind === 'cron' && (
                <TextField
                  id={`${id}-tz`}
                  label="Time zone"
                  value={trigger.timezone}
                  onValue={(timezone) => setRow(trigger.key, { timezone })}
                  input={{ placeholder: 'UTC', autoComplete: 'off' }}
                />
              )}
              <button
                type="button"
                class="small"
                aria-label={`Remove trigger ${index + 1}`}
                disabled={settings.triggers.length === 1}
                onClick={() =>
                  set({ triggers: settings.triggers.filter((other) => other.key !== trigger.key) })
                }
              >
                Remove
              </button>
            </div>
          )
        })}
        {errors.triggers !== undefined && <p class="field-error">{errors.triggers}</p>}
        <button
          type="button"
          class="small"
          onClick={() => set({ triggers: [...settings.triggers, row('topic', '')] })}
        >
          Add trigger
        </button>
      </fieldset>
      <TextField
        id="fn-output"
        label="Output topic"
        value={settings.output}
        onValue={(output) => set({ output })}
        error={errors.output}
        hint="The handler's return value is published here; empty for none."
        input={{ class: 'mono', placeholder: 'out/fahrenheit', autoComplete: 'off' }}
      />
      <div class="form-grid two">
        <TextField
          id="fn-memory"
          label="Memory (MiB)"
          value={settings.memoryMb}
          onValue={(memoryMb) => set({ memoryMb })}
          error={errors['limits.memoryMb']}
          input={{ type: 'number', min: 1, placeholder: 'default' }}
        />
        <TextField
          id="fn-timeout"
          label="Timeout (ms)"
          value={settings.timeoutMs}
          onValue={(timeoutMs) => set({ timeoutMs })}
          error={errors['limits.timeoutMs']}
          input={{ type: 'number', min: 1, placeholder: 'default' }}
        />
      </div>
      <TextAreaField
        id="fn-config"
        label="Config (JSON)"
        value={settings.config}
        onValue={(config) => set({ config })}
        error={errors.config ?? Object.entries(errors).find(([key]) => key.startsWith('config.'))?.[1]}
        hint="An object the handlers read as ctx.config."
        rows={3}
        mono
      />
      <CheckField
        id="fn-enabled"
        label="Enabled"
        checked={settings.enabled}
        onValue={(enabled) => set({ enabled })}
        error={errors.enabled}
      />
    </>
  )
}
