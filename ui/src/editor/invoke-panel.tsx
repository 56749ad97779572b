import { useState } from 'preact/hooks'
import { invokeSchema } from '../../../gateway/api-schemas.ts'
import { path, request } from '../api/client.ts'
import type { FunctionView, TestInvocation } from '../api/types.ts'
import { Badge, FormError } from '../components/feedback.tsx'
import { SelectField, TextAreaField, TextField } from '../components/field.tsx'
import { useForm } from '../lib/form.ts'
import { formatBytes, formatNumber } from '../lib/format.ts'

const HANDLERS = [
  { value: '', label: 'Default for its triggers' },
  { value: 'onMessage', label: 'onMessage' },
  { value: 'onSchedule', label: 'onSchedule' },
  { value: 'onState', label: 'onState' },
]

function json(value: unknown): string {
  return JSON.stringify(value, null, 2) ?? 'undefined'
}

/** Runs the deployed function on a sample message; nothing it does takes effect. */
export function InvokePanel({ tenantId, fn }: { tenantId: string; fn: FunctionView }) {
  const [handler, setHandler] = useState('')
  const [topic, setTopic] = useState('sensors/test')
  const [payload, setPayload] = useState('{"c": 21.5}')
  const [device, setDevice] = useState('sensor-1')
  const [result, setResult] = useState<TestInvocation | null>(null)
  const form = useForm()

  const invoke = async (event: Event) => {
    event.preventDefault()
    const message: Record<string, unknown> = {}
    const extra: Record<string, string> = {}
    if (topic.trim() !== '') message.topic = topic.trim()
    if (device.trim() !== '') message.device = device.trim()
    if (payload.trim() !== '') {
      try {
        message.payload = JSON.parse(payload)
      } catch (error) {
        extra['message.payload'] = `is not valid JSON: ${(error as Error).message}`
      }
    }
    const body = { ...(handler === '' ? {} : { handler }), message }
    await form.submit(
      invokeSchema,
      body,
      async (data) => {
        const answer = await request<{ invocation: TestInvocation }>(
          'POST',
          path`tenants/${tenantId}/functions/${fn.name}/invoke`,
          { body: data },
        )
        setResult(answer.invocation)
      },
      extra,
    )
  }

  return (
    <section class="card" aria-labelledby="invoke-title">
      <h3 class="card-title" id="invoke-title">
        Test invoke
      </h3>
      <p class="hint">
        Runs the current version (v{fn.version}) on this sample; nothing it publishes, emits or writes is
        kept.
      </p>
      <form onSubmit={invoke} noValidate>
        <SelectField
          id="invoke-handler"
          label="Handler"
          value={handler}
          onValue={setHandler}
          options={HANDLERS}
          error={form.errors.handler}
        />
        <TextField
          id="invoke-topic"
          label="Sample topic"
          value={topic}
          onValue={setTopic}
          error={form.errors['message.topic']}
          input={{ class: 'mono', autoComplete: 'off' }}
        />
        <TextAreaField
          id="invoke-payload"
          label="Sample payload (JSON)"
          value={payload}
          onValue={setPayload}
          error={form.errors['message.payload']}
          rows={3}
          mono
        />
        <TextField
          id="invoke-device"
          label="Sample device"
          value={device}
          onValue={setDevice}
          error={form.errors['message.device']}
          input={{ autoComplete: 'off' }}
        />
        <FormError message={form.errors[''] ?? form.errors.message} />
        <div class="actions">
          <button type="submit" class="primary" disabled={form.busy} aria-busy={form.busy}>
            Invoke
          </button>
        </div>
      </form>
      {result !== null && <InvocationResult result={result} />}
    </section>
  )
}

function InvocationResult({ result }: { result: TestInvocation }) {
  if (!result.ok) {
    return (
      <div class="invoke-result" data-testid="invoke-result">
        <p>
          <Badge tone="bad">failed</Badge> v{result.version} {result.handler}:{' '}
          <code>{result.error.code}</code>
        </p>
        <pre class="block bad-text">{result.error.message}</pre>
      </div>
    )
  }
  return (
    <div class="invoke-result" data-testid="invoke-result">
      <p>
        <Badge tone="ok">ok</Badge> v{result.version} {result.handler} in {formatNumber(result.durationMs)}{' '}
        ms, memory {formatBytes(result.memoryBytes)}
      </p>
      <h4>Returned value</h4>
      <pre class="block">{json(result.value)}</pre>
      {result.output !== null && (
        <>
          <h4>
            Output on <code>{result.output.topic}</code>
          </h4>
          <pre class="block">{result.output.payload}</pre>
        </>
      )}
      {result.publishes.length > 0 && (
        <>
          <h4>Publishes</h4>
          <pre class="block">
            {result.publishes
              .map(
                (publish) =>
                  `${publish.topic} (QoS ${publish.qos}${publish.retain ? ', retained' : ''}): ${publish.payload}`,
              )
              .join('\n')}
          </pre>
        </>
      )}
      {result.emits.length > 0 && (
        <>
          <h4>Outbox emits</h4>
          <pre class="block">
            {result.emits.map((emit) => `${emit.stream}: ${JSON.stringify(emit.record)}`).join('\n')}
          </pre>
        </>
      )}
      {result.state.length > 0 && (
        <>
          <h4>State writes</h4>
          <pre class="block">
            {result.state
              .map(
                (write) =>
                  `${write.op} ${write.namespace}/${write.key}${'value' in write ? ` = ${JSON.stringify(write.value)}` : ''}`,
              )
              .join('\n')}
          </pre>
        </>
      )}
      <h4>Logs</h4>
      {result.logs.length === 0 ? (
        <p class="muted">Nothing logged.</p>
      ) : (
        <pre class="block">{result.logs.join('\n')}</pre>
      )}
    </div>
  )
}
