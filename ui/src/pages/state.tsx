import { useEffect, useState } from 'preact/hooks'
import { putStateSchema } from '../../../gateway/api-schemas.ts'
import { path, request } from '../api/client.ts'
import type { StateKey, StateOverview, StateValue } from '../api/types.ts'
import { Banner, Empty, FormError, LoadError, Loading, Meter } from '../components/feedback.tsx'
import { TextAreaField, TextField } from '../components/field.tsx'
import { useConfirm } from '../components/modal.tsx'
import { numberOrUndefined, useForm } from '../lib/form.ts'
import { formatBytes, formatCount, formatTime } from '../lib/format.ts'
import { useApi } from '../lib/use-api.ts'
import type { SectionProps } from './tenant.tsx'

interface KeyPage {
  namespace: string
  keys: StateKey[]
  next: string | null
}

/** Function state: namespaces with their usage, the keys of one, and one value to read, set or delete. */
export function StateSection({ tenantId }: SectionProps) {
  const overview = useApi<StateOverview>(path`tenants/${tenantId}/state`)
  const [namespace, setNamespace] = useState<string | null>(null)
  const [key, setKey] = useState<string | null>(null)
  const [keysVersion, setKeysVersion] = useState(0)
  const namespaces = overview.data?.namespaces ?? []
  const changed = () => {
    overview.reload()
    setKeysVersion((n) => n + 1)
  }

  return (
    <div class="stack">
      <section class="card">
        <h2 class="card-title">Usage</h2>
        {overview.error !== null && <LoadError message={overview.error} retry={overview.reload} />}
        {overview.data === undefined ? (
          overview.error === null && <Loading />
        ) : (
          <div class="form-grid two">
            <Meter
              label="Keys"
              value={overview.data.usage.keys}
              max={overview.data.usage.maxKeys}
              format={formatCount}
            />
            <Meter
              label="Bytes"
              value={overview.data.usage.bytes}
              max={overview.data.usage.maxBytes}
              format={formatBytes}
            />
          </div>
        )}
      </section>
      <div class="split">
        <section class="card">
          <h2 class="card-title">Namespaces</h2>
          {overview.data !== undefined && namespaces.length === 0 ? (
            <Empty title="No state yet">
              Functions keep state with ctx.state; or set a key here. A function's own namespace is @ and its
              name.
            </Empty>
          ) : (
            <table class="table compact">
              <thead>
                <tr>
                  <th scope="col">Namespace</th>
                  <th scope="col" class="num">
                    Keys
                  </th>
                  <th scope="col" class="num">
                    Bytes
                  </th>
                  <th scope="col">Lease until</th>
                </tr>
              </thead>
              <tbody>
                {namespaces.map((entry) => (
                  <tr key={entry.namespace} class={entry.namespace === namespace ? 'selected' : undefined}>
                    <td>
                      <button
                        type="button"
                        class="link-button mono"
                        aria-pressed={entry.namespace === namespace}
                        onClick={() => {
                          setNamespace(entry.namespace)
                          setKey(null)
                        }}
                      >
                        {entry.namespace}
                      </button>
                    </td>
                    <td class="num">{formatCount(entry.keys)}</td>
                    <td class="num">{formatBytes(entry.bytes)}</td>
                    <td>{formatTime(entry.leaseExpiresAt)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
        <section class="card">
          {namespace === null ? (
            <>
              <h2 class="card-title">Keys</h2>
              <p class="muted">Choose a namespace to see its keys.</p>
            </>
          ) : (
            <KeyList
              key={`${namespace}/${keysVersion}`}
              tenantId={tenantId}
              namespace={namespace}
              selected={key}
              onSelect={setKey}
            />
          )}
        </section>
      </div>
      {namespace !== null && key !== null && (
        <ValueEditor
          key={`${namespace}/${key}`}
          tenantId={tenantId}
          namespace={namespace}
          stateKey={key}
          onChanged={changed}
          onDeleted={() => {
            setKey(null)
            changed()
          }}
        />
      )}
      <SetValueForm
        tenantId={tenantId}
        namespace={namespace}
        onSet={(at, setKeyName) => {
          setNamespace(at)
          setKey(setKeyName)
          changed()
        }}
      />
    </div>
  )
}

function KeyList(props: {
  tenantId: string
  namespace: string
  selected: string | null
  onSelect: (key: string) => void
}) {
  const [prefix, setPrefix] = useState('')
  const [after, setAfter] = useState<string | undefined>(undefined)
  const [keys, setKeys] = useState<StateKey[]>([])
  const query = new URLSearchParams({ namespace: props.namespace, prefix, limit: '100' })
  if (after !== undefined) query.set('after', after)
  const page = useApi<KeyPage>(`${path`tenants/${props.tenantId}/state/keys`}?${query}`)

  useEffect(() => {
    if (page.data === undefined) return
    const fresh = page.data.keys
    setKeys((kept) => (after === undefined ? fresh : [...kept, ...fresh]))
  }, [page.data, after])

  return (
    <>
      <h2 class="card-title">
        Keys of <code>{props.namespace}</code>
      </h2>
      <TextField
        id="state-prefix"
        label="Prefix"
        value={prefix}
        onValue={(value) => {
          setPrefix(value)
          setAfter(undefined)
        }}
        input={{ class: 'mono', autoComplete: 'off' }}
      />
      {page.error !== null && <LoadError message={page.error} retry={page.reload} />}
      {page.data === undefined && page.error === null && <Loading />}
      {page.data !== undefined && keys.length === 0 ? (
        <Empty title="No keys" />
      ) : (
        <table class="table compact">
          <thead>
            <tr>
              <th scope="col">Key</th>
              <th scope="col" class="num">
                Bytes
              </th>
              <th scope="col">Updated</th>
              <th scope="col">Expires</th>
            </tr>
          </thead>
          <tbody>
            {keys.map((entry) => (
              <tr key={entry.key} class={entry.key === props.selected ? 'selected' : undefined}>
                <td>
                  <button
                    type="button"
                    class="link-button mono"
                    aria-pressed={entry.key === props.selected}
                    onClick={() => props.onSelect(entry.key)}
                  >
                    {entry.key}
                  </button>
                </td>
                <td class="num">{formatBytes(entry.bytes)}</td>
                <td>{formatTime(entry.updatedAt)}</td>
                <td>{entry.expiresAt === null ? 'never' : formatTime(entry.expiresAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {page.data?.next != null && (
        <button type="button" class="small" onClick={() => setAfter(page.data?.next ?? undefined)}>
          Load more keys
        </button>
      )}
    </>
  )
}

function ValueEditor(props: {
  tenantId: string
  namespace: string
  stateKey: string
  onChanged: () => void
  onDeleted: () => void
}) {
  const query = new URLSearchParams({ namespace: props.namespace, key: props.stateKey })
  const url = `${path`tenants/${props.tenantId}/state/value`}?${query}`
  const value = useApi<StateValue>(url)
  const [text, setText] = useState<string | null>(null)
  const [ttl, setTtl] = useState('')
  const [notice, setNotice] = useState<string | null>(null)
  const form = useForm()
  const confirm = useConfirm()
  const shown = text ?? (value.data === undefined ? '' : JSON.stringify(value.data.value, null, 2))

  const save = async (event: Event) => {
    event.preventDefault()
    setNotice(null)
    let parsed: unknown
    const extra: Record<string, string> = {}
    try {
      parsed = JSON.parse(shown)
    } catch (error) {
      extra.value = `is not valid JSON: ${(error as Error).message}`
    }
    const body = { value: parsed, ...(ttl.trim() === '' ? {} : { ttlMs: numberOrUndefined(ttl) }) }
    await form.submit(
      putStateSchema,
      body,
      async (data) => {
        await request('PUT', `${path`tenants/${props.tenantId}/state/value`}?${query}`, { body: data })
        setText(null)
        setNotice('Saved.')
        value.reload()
        props.onChanged()
      },
      extra,
    )
  }
  const remove = () =>
    confirm({
      title: `Delete key ${props.stateKey}?`,
      message: (
        <p>
          The key is removed from namespace <code>{props.namespace}</code>; functions triggered by this
          namespace run on the change.
        </p>
      ),
      confirmLabel: 'Delete key',
      danger: true,
      action: async () => {
        await request('DELETE', `${path`tenants/${props.tenantId}/state/value`}?${query}`)
        props.onDeleted()
      },
    })

  return (
    <section class="card" aria-labelledby="state-value-title">
      <div class="card-head">
        <h2 class="card-title" id="state-value-title">
          <code>{props.namespace}</code> / <code>{props.stateKey}</code>
        </h2>
        <button type="button" class="small danger-outline" onClick={() => void remove()}>
          Delete key
        </button>
      </div>
      {value.error !== null && <LoadError message={value.error} retry={value.reload} />}
      {value.data === undefined ? (
        value.error === null && <Loading />
      ) : (
        <form onSubmit={save} noValidate>
          <p class="hint">
            {formatBytes(value.data.bytes)}, updated {formatTime(value.data.updatedAt)}, expires{' '}
            {value.data.expiresAt === null ? 'never' : formatTime(value.data.expiresAt)}
          </p>
          <TextAreaField
            id="state-value"
            label="Stored JSON"
            value={shown}
            onValue={setText}
            error={form.errors.value}
            rows={8}
            mono
          />
          <TextField
            id="state-value-ttl"
            label="Expire after (ms)"
            value={ttl}
            onValue={setTtl}
            error={form.errors.ttlMs}
            hint="Empty keeps the key until it is deleted."
            input={{ type: 'number', min: 1 }}
          />
          <FormError message={form.errors['']} />
          {notice !== null && <Banner kind="success">{notice}</Banner>}
          <div class="actions">
            <button type="submit" class="primary" disabled={form.busy}>
              Save value
            </button>
          </div>
        </form>
      )}
    </section>
  )
}

function SetValueForm(props: {
  tenantId: string
  namespace: string | null
  onSet: (namespace: string, key: string) => void
}) {
  const [namespace, setNamespace] = useState(props.namespace ?? '')
  const [key, setKey] = useState('')
  const [text, setText] = useState('')
  const [ttl, setTtl] = useState('')
  const form = useForm()
  useEffect(() => {
    if (props.namespace !== null) setNamespace(props.namespace)
  }, [props.namespace])

  const submit = async (event: Event) => {
    event.preventDefault()
    const extra: Record<string, string> = {}
    if (namespace.trim() === '') extra.namespace = 'is required'
    if (key === '') extra.key = 'is required'
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch (error) {
      extra.value =
        text.trim() === '' ? 'is required (any JSON value)' : `is not valid JSON: ${(error as Error).message}`
    }
    const body = { value: parsed, ...(ttl.trim() === '' ? {} : { ttlMs: numberOrUndefined(ttl) }) }
    const query = new URLSearchParams({ namespace: namespace.trim(), key })
    await form.submit(
      putStateSchema,
      body,
      async (data) => {
        await request('PUT', `${path`tenants/${props.tenantId}/state/value`}?${query}`, { body: data })
        setKey('')
        setText('')
        props.onSet(namespace.trim(), key)
      },
      extra,
    )
  }

  return (
    <section class="card" aria-labelledby="state-set-title">
      <h2 class="card-title" id="state-set-title">
        Set a key
      </h2>
      <form onSubmit={submit} noValidate>
        <div class="form-grid">
          <TextField
            id="state-set-namespace"
            label="Namespace"
            value={namespace}
            onValue={setNamespace}
            error={form.errors.namespace}
            input={{ class: 'mono', placeholder: 'rooms/kitchen', autoComplete: 'off' }}
          />
          <TextField
            id="state-set-key"
            label="Key"
            value={key}
            onValue={setKey}
            error={form.errors.key}
            input={{ class: 'mono', autoComplete: 'off' }}
          />
          <TextField
            id="state-set-ttl"
            label="TTL (ms)"
            value={ttl}
            onValue={setTtl}
            error={form.errors.ttlMs}
            input={{ type: 'number', min: 1 }}
          />
        </div>
        <TextAreaField
          id="state-set-value"
          label="Value (JSON)"
          value={text}
          onValue={setText}
          error={form.errors.value}
          rows={3}
          mono
        />
        <FormError message={form.errors['']} />
        <div class="actions">
          <button type="submit" class="primary" disabled={form.busy}>
            Set value
          </button>
        </div>
      </form>
    </section>
  )
}
