import { useRef, useState } from 'preact/hooks'
import { aclBodySchema, publishSchema } from '../../../gateway/api-schemas.ts'
import { apiUrl, path, request } from '../api/client.ts'
import type { WatchedMessage } from '../api/types.ts'
import { Badge, Banner, FormError } from '../components/feedback.tsx'
import { CheckField, SelectField, TextAreaField, TextField } from '../components/field.tsx'
import { useForm, validate } from '../lib/form.ts'
import { formatBytes, formatClock } from '../lib/format.ts'
import { useEventSource } from '../lib/use-event-source.ts'
import type { SectionProps } from './tenant.tsx'

/** Messages the live list keeps, newest first. */
const MAX_MESSAGES = 500

interface Shown extends WatchedMessage {
  seq: number
}

/** The tenant's messages live on a topic filter, and a box to publish one. */
export function TopicsSection({ tenantId }: SectionProps) {
  return (
    <div class="stack">
      <LiveMessages tenantId={tenantId} />
      <PublishBox tenantId={tenantId} />
    </div>
  )
}

function LiveMessages({ tenantId }: { tenantId: string }) {
  const [filterText, setFilterText] = useState('#')
  const [filter, setFilter] = useState('#')
  const [paused, setPaused] = useState(false)
  const [messages, setMessages] = useState<Shown[]>([])
  const [missed, setMissed] = useState(0)
  const [filterError, setFilterError] = useState<string | undefined>(undefined)
  const seq = useRef(0)
  const pausedRef = useRef(paused)
  pausedRef.current = paused

  const stream = useEventSource(apiUrl(path`tenants/${tenantId}/messages`, { filter }), {
    message: (data) => {
      const message = JSON.parse(data) as WatchedMessage
      if (pausedRef.current) {
        setMissed((count) => count + 1 + (message.skipped ?? 0))
        return undefined
      }
      seq.current++
      const shown = { ...message, seq: seq.current }
      setMessages((kept) => [shown, ...kept].slice(0, MAX_MESSAGES))
      if ((message.skipped ?? 0) > 0) setMissed((count) => count + (message.skipped ?? 0))
      return undefined
    },
  })

  const watch = (event: Event) => {
    event.preventDefault()
    const next = filterText.trim() === '' ? '#' : filterText.trim()
    // A watched filter follows the rules of an ACL rule's filter.
    const checked = validate(aclBodySchema.shape.rules.element.shape.filter, next)
    setFilterError(checked.ok ? undefined : checked.errors[''])
    if (!checked.ok) return
    setFilterText(next)
    setFilter(next)
    setMessages([])
    setMissed(0)
    if (next === filter) stream.reconnect()
  }

  return (
    <section class="card" aria-labelledby="live-title">
      <div class="card-head">
        <h2 class="card-title" id="live-title">
          Live messages
        </h2>
        <span>
          {stream.status === 'open' && !paused && <Badge tone="ok">live</Badge>}
          {stream.status === 'open' && paused && <Badge tone="warn">paused</Badge>}
          {stream.status === 'connecting' && <Badge tone="warn">connecting</Badge>}
          {stream.status === 'closed' && <Badge tone="bad">not connected</Badge>}
        </span>
      </div>
      <form class="inline-form" onSubmit={watch} noValidate>
        <TextField
          id="topic-filter"
          label="Topic filter"
          value={filterText}
          onValue={setFilterText}
          error={filterError}
          hint="An MQTT filter of the tenant's topics: # for all, sensors/+/temp, ..."
          input={{ class: 'mono', autoComplete: 'off' }}
        />
        <button type="submit">Watch</button>
        <button type="button" onClick={() => setPaused(!paused)}>
          {paused ? 'Resume' : 'Pause'}
        </button>
        <button type="button" onClick={() => setMessages([])}>
          Clear
        </button>
      </form>
      {stream.status === 'closed' && (
        <Banner kind="warning">
          The live view is not connected: the filter may be invalid, or too many views are open.{' '}
          <button type="button" class="link-button" onClick={stream.reconnect}>
            Reconnect
          </button>
        </Banner>
      )}
      {missed > 0 && (
        <p class="hint">
          {missed} message{missed === 1 ? '' : 's'} not shown (paused, or arriving faster than the view
          reads).
        </p>
      )}
      <div class="table-scroll tall">
        <table class="table compact">
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Topic</th>
              <th scope="col">QoS</th>
              <th scope="col">Retain</th>
              <th scope="col" class="num">
                Size
              </th>
              <th scope="col">Payload</th>
            </tr>
          </thead>
          <tbody data-testid="topic-messages">
            {messages.length === 0 && (
              <tr>
                <td colSpan={6} class="muted">
                  Waiting for messages on <code>{filter}</code>…
                </td>
              </tr>
            )}
            {messages.map((message) => (
              <tr key={message.seq}>
                <td class="mono small-text">{formatClock(message.ts)}</td>
                <td class="mono">{message.topic}</td>
                <td>{message.qos}</td>
                <td>{message.retain ? 'yes' : ''}</td>
                <td class="num">{formatBytes(message.bytes ?? message.payloadBase64.length * 0.75)}</td>
                <td class="mono payload">
                  {message.payload ?? (
                    <>
                      <Badge tone="muted">base64</Badge> {message.payloadBase64}
                    </>
                  )}
                  {message.truncated === true && <span class="muted"> … (cut)</span>}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  )
}

function PublishBox({ tenantId }: { tenantId: string }) {
  const [topic, setTopic] = useState('sensors/test')
  const [payload, setPayload] = useState('{"c": 21.5}')
  const [qos, setQos] = useState('0')
  const [retain, setRetain] = useState(false)
  const [notice, setNotice] = useState<string | null>(null)
  const form = useForm()
  const publish = async (event: Event) => {
    event.preventDefault()
    setNotice(null)
    const body = { topic: topic.trim(), payload, qos: Number(qos), retain }
    await form.submit(publishSchema, body, async (data) => {
      const answer = await request<{ bytes?: number }>('POST', path`tenants/${tenantId}/publish`, {
        body: data,
      })
      setNotice(`Published ${formatBytes(answer.bytes ?? payload.length)} to ${data.topic}.`)
    })
  }
  return (
    <section class="card" aria-labelledby="publish-title">
      <h2 class="card-title" id="publish-title">
        Publish a message
      </h2>
      <form onSubmit={publish} noValidate>
        <div class="form-grid">
          <TextField
            id="publish-topic"
            label="Topic"
            value={topic}
            onValue={setTopic}
            error={form.errors.topic}
            input={{ class: 'mono', autoComplete: 'off' }}
          />
          <SelectField
            id="publish-qos"
            label="QoS"
            value={qos}
            onValue={setQos}
            error={form.errors.qos}
            options={[
              { value: '0', label: '0: at most once' },
              { value: '1', label: '1: at least once' },
              { value: '2', label: '2: exactly once' },
            ]}
          />
          <CheckField
            id="publish-retain"
            label="Retain"
            checked={retain}
            onValue={setRetain}
            error={form.errors.retain}
          />
        </div>
        <TextAreaField
          id="publish-payload"
          label="Payload"
          value={payload}
          onValue={setPayload}
          error={form.errors.payload}
          rows={3}
          mono
        />
        <FormError message={form.errors['']} />
        {notice !== null && <Banner kind="success">{notice}</Banner>}
        <div class="actions">
          <button type="submit" class="primary" disabled={form.busy} aria-busy={form.busy}>
            Publish
          </button>
        </div>
      </form>
    </section>
  )
}
