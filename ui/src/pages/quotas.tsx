import { useState } from 'preact/hooks'
import { quotaOverridesSchema } from '../../../gateway/api-schemas.ts'
import { path, request } from '../api/client.ts'
import { useSignedIn } from '../api/session.tsx'
import type { QuotaOverrides, Quotas } from '../api/types.ts'
import { Badge, Banner, FormError } from '../components/feedback.tsx'
import { formatQuota, QUOTA_FIELDS, QuotaInputs, quotaBody, quotaTexts } from '../components/quota-fields.tsx'
import { useForm } from '../lib/form.ts'
import type { SectionProps } from './tenant.tsx'

/** The tenant's effective quotas, where each comes from, and (administrators) its overrides to edit. */
export function QuotasSection({ tenantId, tenant, reloadTenant }: SectionProps) {
  const { isAdmin } = useSignedIn()
  const [editing, setEditing] = useState(false)
  const [notice, setNotice] = useState<string | null>(null)
  const overrides: QuotaOverrides = tenant.quotaOverrides
  const quotas: Quotas = tenant.quotas

  return (
    <div class="stack">
      {notice !== null && (
        <Banner kind="success" onDismiss={() => setNotice(null)}>
          {notice}
        </Banner>
      )}
      <section class="card">
        <div class="card-head">
          <h2 class="card-title">Quotas</h2>
          {isAdmin && !editing && (
            <button type="button" onClick={() => setEditing(true)}>
              Edit quotas
            </button>
          )}
        </div>
        <table class="table compact">
          <thead>
            <tr>
              <th scope="col">Quota</th>
              <th scope="col">Setting</th>
              <th scope="col" class="num">
                Effective value
              </th>
              <th scope="col">Source</th>
            </tr>
          </thead>
          <tbody>
            {QUOTA_FIELDS.map((field) => (
              <tr key={field.key}>
                <td>{field.label.replace(/ \((JSON|MiB|ms)\)$/, '')}</td>
                <td class="mono small-text">{field.key}</td>
                <td class="num">{formatQuota(field, quotas[field.key])}</td>
                <td>
                  {overrides[field.key] === undefined ? (
                    <Badge tone="muted">gateway default</Badge>
                  ) : (
                    <Badge tone="info">tenant override</Badge>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      {isAdmin && editing && (
        <QuotaEditor
          tenantId={tenantId}
          overrides={overrides}
          effective={quotas}
          onCancel={() => setEditing(false)}
          onSaved={() => {
            setEditing(false)
            setNotice('Quotas saved; connected devices follow them now.')
            reloadTenant()
          }}
        />
      )}
    </div>
  )
}

function QuotaEditor(props: {
  tenantId: string
  overrides: QuotaOverrides
  effective: Quotas
  onCancel: () => void
  onSaved: () => void
}) {
  const [texts, setTexts] = useState(() => quotaTexts(props.overrides))
  const form = useForm()
  const save = async (event: Event) => {
    event.preventDefault()
    const { body, errors } = quotaBody(texts)
    await form.submit(
      quotaOverridesSchema,
      body,
      async (data) => {
        await request('PUT', path`tenants/${props.tenantId}/quotas`, { body: data })
        props.onSaved()
      },
      errors,
    )
  }
  return (
    <section class="card" aria-labelledby="quota-edit-title">
      <h2 class="card-title" id="quota-edit-title">
        Edit quota overrides
      </h2>
      <p class="hint">
        Empty fields follow the gateway's defaults; saving replaces all of the tenant's overrides.
      </p>
      <form onSubmit={save} noValidate>
        <QuotaInputs
          idPrefix="quota"
          texts={texts}
          onTexts={setTexts}
          errors={form.errors}
          defaults={props.effective}
        />
        <FormError message={form.errors['']} />
        <div class="actions">
          <button type="submit" class="primary" disabled={form.busy}>
            Save quotas
          </button>
          <button type="button" onClick={props.onCancel}>
            Cancel
          </button>
        </div>
      </form>
    </section>
  )
}
