import { useState } from 'preact/hooks'
import { replaySchema } from '../../../gateway/api-schemas.ts'
import { path, request } from '../api/client.ts'
import type { DeadLetter, FunctionView } from '../api/types.ts'
import { Banner, Empty, FormError, LoadError, Loading } from '../components/feedback.tsx'
import { SelectField } from '../components/field.tsx'
import { useConfirm } from '../components/modal.tsx'
import { useForm } from '../lib/form.ts'
import { decodeBase64, formatTime, preview } from '../lib/format.ts'
import { useApi } from '../lib/use-api.ts'
import type { SectionProps } from './tenant.tsx'

/** What a dead letter's input was: the topic and payload of its message, or its handler. */
function describeInput(kept: unknown): { topic: string; payload: string } {
  if (typeof kept !== 'object' || kept === null) return { topic: '–', payload: preview(kept) }
  const { handler, message } = kept as { handler?: unknown; message?: Record<string, unknown> }
  if (message === undefined || message === null)
    return { topic: `(${String(handler ?? 'no message')})`, payload: '' }
  const base64 = typeof message.payloadBase64 === 'string' ? message.payloadBase64 : ''
  const text = decodeBase64(base64)
  return {
    topic: typeof message.topic === 'string' ? message.topic : '–',
    payload: text === null ? `base64 ${preview(base64, 80)}` : preview(text, 120),
  }
}

/** Invocations that failed after their retries: inspect, replay or purge them. */
export function DeadLettersSection({ tenantId }: SectionProps) {
  const [fnFilter, setFnFilter] = useState('')
  const query = fnFilter === '' ? '' : `?${new URLSearchParams({ function: fnFilter })}`
  const letters = useApi<{ deadLetters: DeadLetter[] }>(`${path`tenants/${tenantId}/dead-letters`}${query}`, {
    pollMs: 5000,
  })
  const functions = useApi<{ functions: FunctionView[] }>(path`tenants/${tenantId}/functions`)
  const [checked, setChecked] = useState<ReadonlySet<number>>(new Set())
  const [notice, setNotice] = useState<string | null>(null)
  const form = useForm()
  const confirm = useConfirm()
  const list = letters.data?.deadLetters ?? []
  // Letters replayed or purged elsewhere leave the selection when the list comes again.
  const selected = list.filter((letter) => checked.has(letter.id)).map((letter) => letter.id)
  const scope = fnFilter === '' ? 'of the tenant' : `of ${fnFilter}`

  const toggle = (id: number) => {
    const next = new Set(checked)
    if (next.has(id)) next.delete(id)
    else next.add(id)
    setChecked(next)
  }
  const replay = async (body: { ids?: number[]; function?: string }) => {
    setNotice(null)
    await form.submit(replaySchema, body, async (data) => {
      const answer = await request<{ replayed: number; skipped: number }>(
        'POST',
        path`tenants/${tenantId}/dead-letters/replay`,
        { body: data },
      )
      setNotice(
        `Replayed ${answer.replayed} dead letter${answer.replayed === 1 ? '' : 's'}` +
          (answer.skipped > 0
            ? `; ${answer.skipped} skipped (their function is not running, or they cannot be replayed).`
            : '.'),
      )
      setChecked(new Set())
      letters.reload()
    })
  }
  const purge = () =>
    confirm({
      title: `Purge the dead letters ${scope}?`,
      message: <p>They are deleted and cannot be replayed afterwards.</p>,
      confirmLabel: 'Purge dead letters',
      danger: true,
      action: async () => {
        const answer = await request<{ purged: number }>(
          'DELETE',
          `${path`tenants/${tenantId}/dead-letters`}${query}`,
        )
        setNotice(`Purged ${answer.purged} dead letter${answer.purged === 1 ? '' : 's'}.`)
        setChecked(new Set())
        letters.reload()
      },
    })

  return (
    <section class="card">
      <div class="card-head">
        <h2 class="card-title">Dead letters</h2>
        <div class="actions">
          <button
            type="button"
            disabled={selected.length === 0 || form.busy}
            onClick={() => void replay({ ids: selected })}
          >
            Replay selected ({selected.length})
          </button>
          <button
            type="button"
            disabled={list.length === 0 || form.busy}
            onClick={() => void replay(fnFilter === '' ? {} : { function: fnFilter })}
          >
            Replay all
          </button>
          <button
            type="button"
            class="danger-outline"
            disabled={list.length === 0}
            onClick={() => void purge()}
          >
            Purge
          </button>
        </div>
      </div>
      <div class="inline-form">
        <SelectField
          id="dead-letters-function"
          label="Function"
          value={fnFilter}
          onValue={(value) => {
            setFnFilter(value)
            setChecked(new Set())
          }}
          options={[
            { value: '', label: 'All functions' },
            ...(functions.data?.functions ?? []).map((fn) => ({ value: fn.name, label: fn.name })),
          ]}
        />
      </div>
      <FormError message={form.errors[''] ?? Object.values(form.errors)[0]} />
      {notice !== null && (
        <Banner kind="success" onDismiss={() => setNotice(null)}>
          {notice}
        </Banner>
      )}
      {letters.error !== null && <LoadError message={letters.error} retry={letters.reload} />}
      {letters.data === undefined ? (
        letters.error === null && <Loading />
      ) : list.length === 0 ? (
        <Empty title="No dead letters">Invocations that still fail after their retries are kept here.</Empty>
      ) : (
        <table class="table compact">
          <thead>
            <tr>
              <th scope="col">
                <input
                  type="checkbox"
                  aria-label="Select all dead letters"
                  checked={selected.length === list.length}
                  onChange={(event) =>
                    setChecked(
                      event.currentTarget.checked ? new Set(list.map((letter) => letter.id)) : new Set(),
                    )
                  }
                />
              </th>
              <th scope="col">Id</th>
              <th scope="col">Time</th>
              <th scope="col">Function</th>
              <th scope="col">Reason</th>
              <th scope="col">Error</th>
              <th scope="col">Topic</th>
              <th scope="col">Payload</th>
            </tr>
          </thead>
          <tbody>
            {list.map((letter) => {
              const input = describeInput(letter.message)
              return (
                <tr key={letter.id} class={checked.has(letter.id) ? 'selected' : undefined}>
                  <td>
                    <input
                      type="checkbox"
                      aria-label={`Select dead letter ${letter.id}`}
                      checked={checked.has(letter.id)}
                      onChange={() => toggle(letter.id)}
                    />
                  </td>
                  <td class="num">{letter.id}</td>
                  <td>{formatTime(letter.createdAt)}</td>
                  <td>
                    {letter.function} <span class="muted">v{letter.version}</span>
                  </td>
                  <td>
                    <code>{letter.reason}</code>
                  </td>
                  <td class="small-text" title={letter.error}>
                    {preview(letter.error, 100)}
                  </td>
                  <td class="mono small-text">{input.topic}</td>
                  <td class="mono small-text payload">{input.payload}</td>
                </tr>
              )
            })}
          </tbody>
        </table>
      )}
    </section>
  )
}
