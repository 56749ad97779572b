import { useState } from 'preact/hooks'
import { createTokenSchema } from '../../../gateway/api-schemas.ts'
import { path, request } from '../api/client.ts'
import { useSignedIn } from '../api/session.tsx'
import type { ApiToken, Tenant } from '../api/types.ts'
import { CopyBox } from '../components/copy.tsx'
import { Banner, Empty, FormError, LoadError, Loading } from '../components/feedback.tsx'
import { SelectField, TextField } from '../components/field.tsx'
import { PageHeader } from '../components/layout.tsx'
import { useConfirm } from '../components/modal.tsx'
import { useForm } from '../lib/form.ts'
import { formatTime } from '../lib/format.ts'
import { useApi } from '../lib/use-api.ts'
import { ScopeBadge, scopeOptions } from './users.tsx'

/** API tokens: for scripts, CI and the CLI (administrators). */
export function TokensPage() {
  const { isAdmin } = useSignedIn()
  const tokens = useApi<{ tokens: ApiToken[] }>('tokens')
  const tenants = useApi<{ tenants: Tenant[] }>('tenants')
  const [created, setCreated] = useState<{ token: ApiToken; secret: string } | null>(null)
  const [notice, setNotice] = useState<string | null>(null)
  const [label, setLabel] = useState('')
  const [tenant, setTenant] = useState('')
  const form = useForm()
  const confirm = useConfirm()
  const list = tokens.data?.tokens ?? []

  if (!isAdmin) return <Banner kind="error">Only administrators manage API tokens.</Banner>

  const create = async (event: Event) => {
    event.preventDefault()
    await form.submit(
      createTokenSchema,
      { label: label.trim(), tenant: tenant === '' ? null : tenant },
      async (body) => {
        const answer = await request<{ token: ApiToken; secret: string }>('POST', 'tokens', { body })
        setCreated(answer)
        setNotice(null)
        setLabel('')
        tokens.reload()
      },
    )
  }
  const revoke = (token: ApiToken) =>
    confirm({
      title: `Revoke token ${token.label}?`,
      message: <p>Requests and browser sessions made with it stop working at once.</p>,
      confirmLabel: 'Revoke token',
      danger: true,
      action: async () => {
        await request('DELETE', path`tokens/${token.id}`)
        setCreated((current) => (current?.token.id === token.id ? null : current))
        setNotice(`Token ${token.label} revoked.`)
        tokens.reload()
      },
    })

  return (
    <>
      <PageHeader
        title="API tokens"
        sub="Bearer tokens for scripts, CI and the CLI; they also sign in here."
      />
      {created !== null && (
        <section class="card highlight" aria-labelledby="token-secret-title">
          <h2 class="card-title" id="token-secret-title">
            Token {created.token.label} created
          </h2>
          <Banner kind="warning">
            Copy the token now: the gateway keeps only its hash and will not show it again.
          </Banner>
          <CopyBox label="Token" testId="token-secret">
            {created.secret}
          </CopyBox>
          <p class="hint">
            Use it as <code>Authorization: Bearer TOKEN</code>.
          </p>
          <div class="actions">
            <button type="button" onClick={() => setCreated(null)}>
              Done
            </button>
          </div>
        </section>
      )}
      {notice !== null && (
        <Banner kind="success" onDismiss={() => setNotice(null)}>
          {notice}
        </Banner>
      )}
      <section class="card">
        <h2 class="card-title">Create a token</h2>
        <form onSubmit={create} noValidate>
          <div class="form-grid">
            <TextField
              id="token-label"
              label="Label"
              value={label}
              onValue={setLabel}
              error={form.errors.label}
              hint="What it is for, e.g. ci-deploy."
              input={{ autoComplete: 'off' }}
            />
            <SelectField
              id="token-scope"
              label="Scope"
              value={tenant}
              onValue={setTenant}
              error={form.errors.tenant}
              options={scopeOptions(tenants.data?.tenants)}
            />
          </div>
          <FormError message={form.errors['']} />
          <div class="actions">
            <button type="submit" class="primary" disabled={form.busy}>
              Create token
            </button>
          </div>
        </form>
      </section>
      <section class="card">
        <h2 class="card-title">Token list</h2>
        {tokens.error !== null && <LoadError message={tokens.error} retry={tokens.reload} />}
        {tokens.data === undefined ? (
          tokens.error === null && <Loading />
        ) : list.length === 0 ? (
          <Empty title="No tokens" />
        ) : (
          <table class="table">
            <thead>
              <tr>
                <th scope="col" class="num">
                  Id
                </th>
                <th scope="col">Label</th>
                <th scope="col">Scope</th>
                <th scope="col">Created</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((token) => (
                <tr key={token.id}>
                  <td class="num">{token.id}</td>
                  <td>{token.label}</td>
                  <td>
                    <ScopeBadge tenant={token.tenant} />
                  </td>
                  <td>{formatTime(token.createdAt)}</td>
                  <td class="row-actions">
                    <button type="button" class="small danger-text" onClick={() => void revoke(token)}>
                      Revoke
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  )
}
