import { useState } from 'preact/hooks'
import { createTenantSchema } from '../../../gateway/api-schemas.ts'
import { path, request } from '../api/client.ts'
import { useSignedIn } from '../api/session.tsx'
import type { Tenant } from '../api/types.ts'
import { Banner, Empty, FormError, LoadError, Loading } from '../components/feedback.tsx'
import { TextField } from '../components/field.tsx'
import { PageHeader } from '../components/layout.tsx'
import { useConfirm } from '../components/modal.tsx'
import { QuotaInputs, quotaBody } from '../components/quota-fields.tsx'
import { useForm } from '../lib/form.ts'
import { formatCount, formatTime } from '../lib/format.ts'
import { useApi } from '../lib/use-api.ts'

/** Asks for the tenant id to be typed, then deletes the tenant with everything it has. */
export function useDeleteTenant(): (tenantId: string, after: () => void) => Promise<boolean> {
  const confirm = useConfirm()
  return (tenantId, after) =>
    confirm({
      title: `Delete tenant ${tenantId}?`,
      message: (
        <p>
          This removes the tenant with its devices, sessions, retained messages, functions, state and outbox
          records, and disconnects its devices. It cannot be undone.
        </p>
      ),
      confirmLabel: 'Delete tenant',
      danger: true,
      typeToConfirm: { label: `Type ${tenantId} to confirm`, value: tenantId },
      action: async () => {
        await request('DELETE', path`tenants/${tenantId}`)
        after()
      },
    })
}

/** The tenants of the gateway: list, create, delete (administrators). */
export function TenantsPage() {
  const { isAdmin } = useSignedIn()
  const tenants = useApi<{ tenants: Tenant[] }>('tenants')
  const deleteTenant = useDeleteTenant()
  const [notice, setNotice] = useState<string | null>(null)
  const list = tenants.data?.tenants ?? []

  return (
    <>
      <PageHeader title="Tenants" sub="Each tenant owns its devices, topics, functions and quotas." />
      {notice !== null && (
        <Banner kind="success" onDismiss={() => setNotice(null)}>
          {notice}
        </Banner>
      )}
      {isAdmin && (
        <CreateTenantForm
          onCreated={(tenant) => {
            setNotice(`Tenant ${tenant.id} created.`)
            tenants.reload()
          }}
        />
      )}
      <section class="card">
        <h2 class="card-title">Tenant list</h2>
        {tenants.error !== null && <LoadError message={tenants.error} retry={tenants.reload} />}
        {tenants.data === undefined ? (
          tenants.error === null && <Loading />
        ) : list.length === 0 ? (
          <Empty title="No tenants yet">Create the first one above, then add its devices.</Empty>
        ) : (
          <table class="table">
            <thead>
              <tr>
                <th scope="col">Tenant id</th>
                <th scope="col" class="num">
                  Connections
                </th>
                <th scope="col" class="num">
                  Max connections
                </th>
                <th scope="col">Created</th>
                {isAdmin && (
                  <th scope="col">
                    <span class="sr-only">Actions</span>
                  </th>
                )}
              </tr>
            </thead>
            <tbody>
              {list.map((tenant) => (
                <tr key={tenant.id}>
                  <td>
                    <a href={`#/tenants/${encodeURIComponent(tenant.id)}/devices`}>{tenant.id}</a>
                  </td>
                  <td class="num">{formatCount(tenant.connections)}</td>
                  <td class="num">{formatCount(tenant.quotas.maxConnections)}</td>
                  <td>{formatTime(tenant.createdAt)}</td>
                  {isAdmin && (
                    <td class="row-actions">
                      <button
                        type="button"
                        class="small danger-text"
                        onClick={() =>
                          void deleteTenant(tenant.id, () => {
                            setNotice(`Tenant ${tenant.id} deleted.`)
                            tenants.reload()
                          })
                        }
                      >
                        Delete
                      </button>
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  )
}

function CreateTenantForm({ onCreated }: { onCreated: (tenant: Tenant) => void }) {
  const [id, setId] = useState('')
  const [quotas, setQuotas] = useState<Record<string, string>>({})
  const [showQuotas, setShowQuotas] = useState(false)
  const form = useForm()
  const quotaErrors = Object.keys(form.errors).some((key) => key.startsWith('quotas.'))
  const onSubmit = async (event: Event) => {
    event.preventDefault()
    const { body, errors } = quotaBody(quotas)
    const value = Object.keys(body).length === 0 ? { id: id.trim() } : { id: id.trim(), quotas: body }
    const prefixed = Object.fromEntries(
      Object.entries(errors).map(([key, message]) => [`quotas.${key}`, message]),
    )
    await form.submit(
      createTenantSchema,
      value,
      async (data) => {
        const answer = await request<{ tenant: Tenant }>('POST', 'tenants', { body: data })
        setId('')
        setQuotas({})
        onCreated(answer.tenant)
      },
      prefixed,
    )
  }
  return (
    <section class="card">
      <h2 class="card-title">Create a tenant</h2>
      <form onSubmit={onSubmit} noValidate>
        <div class="inline-form">
          <TextField
            id="tenant-id"
            label="Tenant id"
            value={id}
            onValue={setId}
            error={form.errors.id}
            hint="Lower-case letters, digits, - and _; devices sign in as DEVICE@TENANT."
            input={{ autoComplete: 'off', placeholder: 'acme' }}
          />
          <button type="submit" class="primary" disabled={form.busy}>
            Create tenant
          </button>
        </div>
        <details
          class="disclosure"
          open={showQuotas || quotaErrors}
          onToggle={(event) => setShowQuotas(event.currentTarget.open)}
        >
          <summary>Quota overrides (optional)</summary>
          <p class="hint">Empty fields follow the gateway's defaults.</p>
          <QuotaInputs
            idPrefix="new-tenant"
            texts={quotas}
            onTexts={setQuotas}
            errors={form.errors}
            errorPrefix="quotas."
          />
        </details>
        <FormError message={form.errors[''] ?? form.errors.quotas} />
      </form>
    </section>
  )
}
