import { useEffect, useState } from 'preact/hooks'
import { useLocation } from 'wouter-preact'
import { deploySchema } from '../../../gateway/api-schemas.ts'
import { ApiError, isQuiet, messageOf, path, request } from '../api/client.ts'
import type { FunctionView } from '../api/types.ts'
import { Banner, FormError, LoadError, Loading } from '../components/feedback.tsx'
import { useConfirm } from '../components/modal.tsx'
import { errorsOfFailure, useForm, validate } from '../lib/form.ts'
import { formatTime } from '../lib/format.ts'
import { useApi } from '../lib/use-api.ts'
import { FunctionState } from '../pages/functions.tsx'
import { CodeEditor, type SourceProblem } from './code-editor.tsx'
import {
  deployBodyOf,
  newSettings,
  type Settings,
  SettingsFields,
  settingsOf,
  TEMPLATE_SOURCE,
  triggerOf,
} from './function-form.tsx'
import { InvokePanel } from './invoke-panel.tsx'
import { LogsPanel } from './logs-panel.tsx'
import { VersionsPanel } from './versions-panel.tsx'

const CHECK_DELAY_MS = 500

/** A deploy's success, shown by the editor of that version (made anew after the deploy). */
let flash: { key: string; message: string } | null = null

/** The function editor page: a new function (`name` null) or a deployed one. */
export function FunctionEditor({ tenantId, name }: { tenantId: string; name: string | null }) {
  const fn = useApi<{ function: FunctionView; source: string | null }>(
    name === null ? null : path`tenants/${tenantId}/functions/${name}`,
  )
  if (name === null)
    return <EditorBody tenantId={tenantId} fn={null} source={TEMPLATE_SOURCE} onChanged={() => {}} />
  if (fn.data === undefined) {
    if (fn.error === null) return <Loading what="Loading the function" />
    return (
      <>
        <LoadError message={fn.error} retry={fn.reload} />
        <a href={`#/tenants/${encodeURIComponent(tenantId)}/functions`}>Back to the functions</a>
      </>
    )
  }
  const view = fn.data.function
  return (
    <>
      {/* A new version remakes the editor with that version's code and settings. */}
      <EditorBody
        key={view.version}
        tenantId={tenantId}
        fn={view}
        source={fn.data.source ?? ''}
        onChanged={fn.reload}
      />
      <div class="panel-grid">
        <VersionsPanel tenantId={tenantId} fn={view} onRolledBack={fn.reload} />
        <InvokePanel tenantId={tenantId} fn={view} />
        <LogsPanel tenantId={tenantId} name={view.name} />
      </div>
    </>
  )
}

type Check =
  | { state: 'idle' | 'checking' | 'ok' }
  | { state: 'error'; problem: SourceProblem }
  | { state: 'unavailable'; message: string }

/** The check's body: the form's values where they are valid, stand-ins where not yet. */
function checkBodyOf(settings: Settings, source: string): Record<string, unknown> {
  const shape = deploySchema.shape
  const name = validate(shape.name, settings.name.trim())
  const triggers = validate(shape.triggers, settings.triggers.map(triggerOf))
  const { body } = deployBodyOf(settings, source)
  const limits = validate(shape.limits, body.limits)
  const output = validate(shape.output, body.output)
  return {
    name: name.ok ? name.data : 'check',
    source,
    triggers: triggers.ok ? triggers.data : [{ topic: '#' }],
    ...(limits.ok && limits.data !== undefined ? { limits: limits.data } : {}),
    ...(output.ok && output.data !== undefined ? { output: output.data } : {}),
  }
}

/** What `functions/check` answers: compiles, or the refusal a deploy would get. */
type CheckAnswer =
  | { ok: true }
  | { ok: false; error: { code: string; message: string; field?: string; line?: number; column?: number } }

/** A check's refusal: a problem of the source goes in the editor, others under it. */
function checkOf(error: {
  message: string
  field?: string | undefined
  line?: number | undefined
  column?: number | undefined
}): Check {
  if (error.field !== 'source') return { state: 'unavailable', message: error.message }
  return { state: 'error', problem: { line: error.line, column: error.column, message: error.message } }
}

function problemText(problem: SourceProblem): string {
  if (problem.line === undefined) return problem.message
  return `Line ${problem.line}${problem.column === undefined ? '' : `, column ${problem.column}`}: ${problem.message}`
}

function EditorBody(props: {
  tenantId: string
  fn: FunctionView | null
  source: string
  onChanged: () => void
}) {
  const { tenantId, fn } = props
  const isNew = fn === null
  const [, navigate] = useLocation()
  const confirm = useConfirm()
  const [settings, setSettings] = useState<Settings>(() => (fn === null ? newSettings() : settingsOf(fn)))
  const [source, setSource] = useState(props.source)
  const [check, setCheck] = useState<Check>({ state: 'idle' })
  const [notice, setNotice] = useState<string | null>(() => {
    const shown = fn !== null && flash?.key === `${tenantId}/${fn.name}/${fn.version}` ? flash.message : null
    flash = null
    return shown
  })
  const [actionError, setActionError] = useState<string | null>(null)
  const form = useForm()
  const triggersKey = JSON.stringify(settings.triggers.map(triggerOf))
  const limitsKey = `${settings.memoryMb}|${settings.timeoutMs}`

  // The compile check runs a moment after the last keystroke, and again when triggers change
  // (they decide which handlers the module must export).
  useEffect(() => {
    const controller = new AbortController()
    setCheck((current) => (current.state === 'error' ? current : { state: 'checking' }))
    const timer = setTimeout(() => {
      request<CheckAnswer>('POST', path`tenants/${tenantId}/functions/check`, {
        body: checkBodyOf(settings, source),
        signal: controller.signal,
      })
        .then((answer) => setCheck(answer.ok ? { state: 'ok' } : checkOf(answer.error)))
        .catch((error: unknown) => {
          if (isQuiet(error)) return
          // Gateways that answer a refusal with an error status say the same thing.
          const refusal = error instanceof ApiError && error.status !== 0
          setCheck(refusal ? checkOf(error) : { state: 'unavailable', message: messageOf(error) })
        })
    }, CHECK_DELAY_MS)
    return () => {
      clearTimeout(timer)
      controller.abort()
    }
  }, [tenantId, source, triggersKey, limitsKey])

  const deploy = async (event: Event) => {
    event.preventDefault()
    setNotice(null)
    const { body, errors } = deployBodyOf(settings, source)
    await form.submit(
      deploySchema,
      body,
      async (data) => {
        try {
          const answer = await request<{ function: FunctionView }>(
            'POST',
            path`tenants/${tenantId}/functions`,
            {
              body: data,
            },
          )
          const deployed = answer.function
          flash = {
            key: `${tenantId}/${deployed.name}/${deployed.version}`,
            message: `Deployed version v${deployed.version} of ${deployed.name}.`,
          }
          if (isNew)
            navigate(
              `/tenants/${encodeURIComponent(tenantId)}/functions/${encodeURIComponent(deployed.name)}`,
              {
                replace: true,
              },
            )
          else props.onChanged()
        } catch (error) {
          if (error instanceof ApiError && error.field === 'source') {
            setCheck({
              state: 'error',
              problem: { line: error.line, column: error.column, message: error.message },
            })
          }
          throw error
        }
      },
      errors,
    )
  }

  const setEnabled = async (enabled: boolean) => {
    if (fn === null) return
    setActionError(null)
    try {
      await request('POST', path`tenants/${tenantId}/functions/${fn.name}/${enabled ? 'enable' : 'disable'}`)
      setSettings((current) => ({ ...current, enabled }))
      setNotice(`${fn.name} is ${enabled ? 'enabled' : 'disabled'}.`)
      props.onChanged()
    } catch (error) {
      setActionError(Object.values(errorsOfFailure(error))[0] ?? null)
    }
  }
  const remove = () =>
    fn !== null &&
    confirm({
      title: `Delete function ${fn.name}?`,
      message: <p>Its versions, logs and dead letters go with it; messages stop reaching it at once.</p>,
      confirmLabel: 'Delete function',
      danger: true,
      action: async () => {
        await request('DELETE', path`tenants/${tenantId}/functions/${fn.name}`)
        navigate(`/tenants/${encodeURIComponent(tenantId)}/functions`)
      },
    })

  const problem = check.state === 'error' ? check.problem : null
  return (
    <form onSubmit={deploy} noValidate>
      <div class="section-head">
        <h2>
          {fn === null ? 'New function' : `Function ${fn.name}`}{' '}
          {fn !== null && (
            <>
              <FunctionState fn={fn} />{' '}
              <span class="muted small-text">
                v{fn.version}, updated {formatTime(fn.updatedAt)}
              </span>
            </>
          )}
        </h2>
        {fn !== null && (
          <div class="actions">
            <button type="button" onClick={() => void setEnabled(!fn.enabled)}>
              {fn.enabled ? 'Disable' : 'Enable'}
            </button>
            <button type="button" class="danger-outline" onClick={() => void remove()}>
              Delete function
            </button>
          </div>
        )}
      </div>
      {fn?.problem != null && <Banner kind="error">This version cannot run: {fn.problem}</Banner>}
      {notice !== null && (
        <Banner kind="success" onDismiss={() => setNotice(null)}>
          {notice}
        </Banner>
      )}
      {actionError !== null && (
        <Banner kind="error" onDismiss={() => setActionError(null)}>
          {actionError}
        </Banner>
      )}
      <div class="editor-grid">
        <section class="card editor-card">
          <div class="card-head">
            <h3 class="card-title" id="fn-source-label">
              Source
            </h3>
            <span class="check-status" role="status">
              {check.state === 'checking' && <span class="muted">Checking…</span>}
              {check.state === 'ok' && <span class="ok-text">✓ Compiles</span>}
              {check.state === 'error' && <span class="bad-text">✗ Does not compile</span>}
              {check.state === 'unavailable' && <span class="warn-text">Not checked</span>}
            </span>
          </div>
          <CodeEditor source={source} revision={0} label="Source" problem={problem} onChange={setSource} />
          {problem !== null && (
            <p class="compile-error" data-testid="compile-error" role="alert">
              {problemText(problem)}
            </p>
          )}
          {check.state === 'unavailable' && <p class="hint">Not checked: {check.message}</p>}
          {problem === null && form.errors.source !== undefined && (
            <p class="field-error">Source {form.errors.source}</p>
          )}
        </section>
        <section class="card settings-card">
          <h3 class="card-title">Settings</h3>
          <SettingsFields settings={settings} onSettings={setSettings} errors={form.errors} isNew={isNew} />
          <FormError message={form.errors['']} />
          <div class="actions">
            <button type="submit" class="primary" disabled={form.busy} aria-busy={form.busy}>
              Deploy
            </button>
            <span class="hint">Each deploy is a new version; the last ones are kept for rollback.</span>
          </div>
        </section>
      </div>
    </form>
  )
}
