import { useState } from 'preact/hooks'
import { createUserSchema, MIN_PASSWORD_CHARS, setPasswordSchema } from '../../../gateway/api-schemas.ts'
import { path, request } from '../api/client.ts'
import { useSignedIn } from '../api/session.tsx'
import type { Tenant, User } from '../api/types.ts'
import { Badge, Banner, Empty, FormError, LoadError, Loading } from '../components/feedback.tsx'
import { SelectField, TextField } from '../components/field.tsx'
import { PageHeader } from '../components/layout.tsx'
import { Dialog, useConfirm, useModal } from '../components/modal.tsx'
import { useForm } from '../lib/form.ts'
import { formatTime } from '../lib/format.ts'
import { useApi } from '../lib/use-api.ts'

/** The choices of a scope: the whole gateway, or one tenant. */
export function scopeOptions(tenants: readonly Tenant[] | undefined) {
  return [
    { value: '', label: 'Administrator (all tenants)' },
    ...(tenants ?? []).map((tenant) => ({ value: tenant.id, label: `Tenant ${tenant.id}` })),
  ]
}

/** A scope as a badge. */
export function ScopeBadge({ tenant }: { tenant: string | null }) {
  return tenant === null ? (
    <Badge tone="info">administrator</Badge>
  ) : (
    <Badge tone="muted">tenant {tenant}</Badge>
  )
}

/** People who sign in with a password (administrators). */
export function UsersPage() {
  const { isAdmin, session } = useSignedIn()
  const users = useApi<{ users: User[] }>(isAdmin ? 'users' : null)
  const tenants = useApi<{ tenants: Tenant[] }>('tenants')
  const [notice, setNotice] = useState<string | null>(null)
  const confirm = useConfirm()
  const { open } = useModal()
  const list = users.data?.users ?? []

  if (!isAdmin) return <Banner kind="error">Only administrators manage users.</Banner>

  const remove = (user: User) =>
    confirm({
      title: `Delete user ${user.name}?`,
      message: <p>They can no longer sign in; their open sessions end.</p>,
      confirmLabel: 'Delete user',
      danger: true,
      action: async () => {
        await request('DELETE', path`users/${user.name}`)
        setNotice(`User ${user.name} deleted.`)
        users.reload()
      },
    })
  const changePassword = (user: User) =>
    open((close) => (
      <PasswordDialog
        userName={user.name}
        onClose={close}
        onDone={() => {
          close()
          setNotice(`Password of ${user.name} changed.`)
          users.reload()
        }}
      />
    ))

  return (
    <>
      <PageHeader
        title="Users"
        sub="People who sign in with a name and password; a tenant's users see only that tenant."
      />
      {notice !== null && (
        <Banner kind="success" onDismiss={() => setNotice(null)}>
          {notice}
        </Banner>
      )}
      <AddUserForm
        tenants={tenants.data?.tenants}
        onAdded={(user) => {
          setNotice(`User ${user.name} added.`)
          users.reload()
        }}
      />
      <section class="card">
        <h2 class="card-title">User list</h2>
        {users.error !== null && <LoadError message={users.error} retry={users.reload} />}
        {users.data === undefined ? (
          users.error === null && <Loading />
        ) : list.length === 0 ? (
          <Empty title="No users yet">Until there are, sign in with the admin token or an API token.</Empty>
        ) : (
          <table class="table">
            <thead>
              <tr>
                <th scope="col">User name</th>
                <th scope="col">Scope</th>
                <th scope="col">Created</th>
                <th scope="col">Password changed</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((user) => (
                <tr key={user.name}>
                  <td>
                    {user.name}{' '}
                    {user.name === session.user && session.via === 'password' && (
                      <span class="muted">(you)</span>
                    )}
                  </td>
                  <td>
                    <ScopeBadge tenant={user.tenant} />
                  </td>
                  <td>{formatTime(user.createdAt)}</td>
                  <td>{formatTime(user.passwordChangedAt)}</td>
                  <td class="row-actions">
                    <button type="button" class="small" onClick={() => changePassword(user)}>
                      Set password
                    </button>
                    <button type="button" class="small danger-text" onClick={() => void remove(user)}>
                      Delete
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

function AddUserForm(props: { tenants: Tenant[] | undefined; onAdded: (user: User) => void }) {
  const [name, setName] = useState('')
  const [password, setPassword] = useState('')
  const [tenant, setTenant] = useState('')
  const form = useForm()
  const submit = async (event: Event) => {
    event.preventDefault()
    const body = { name: name.trim(), password, tenant: tenant === '' ? null : tenant }
    await form.submit(createUserSchema, body, async (data) => {
      const answer = await request<{ user: User }>('POST', 'users', { body: data })
      setName('')
      setPassword('')
      props.onAdded(answer.user)
    })
  }
  return (
    <section class="card">
      <h2 class="card-title">Add a user</h2>
      <form onSubmit={submit} noValidate>
        <div class="form-grid">
          <TextField
            id="user-name"
            label="User name"
            value={name}
            onValue={setName}
            error={form.errors.name}
            input={{ autoComplete: 'off' }}
          />
          <TextField
            id="user-password"
            label="Password"
            value={password}
            onValue={setPassword}
            error={form.errors.password}
            hint={`At least ${MIN_PASSWORD_CHARS} characters.`}
            input={{ type: 'password', autoComplete: 'new-password' }}
          />
          <SelectField
            id="user-scope"
            label="Scope"
            value={tenant}
            onValue={setTenant}
            error={form.errors.tenant}
            options={scopeOptions(props.tenants)}
          />
        </div>
        <FormError message={form.errors['']} />
        <div class="actions">
          <button type="submit" class="primary" disabled={form.busy}>
            Add user
          </button>
        </div>
      </form>
    </section>
  )
}

/** Sets a user's password: administrators for anyone, a user for themself. */
export function PasswordForm(props: { userName: string; onDone: () => void; onCancel?: () => void }) {
  const [password, setPassword] = useState('')
  const [repeat, setRepeat] = useState('')
  const form = useForm()
  const submit = async (event: Event) => {
    event.preventDefault()
    const extra = repeat === password ? {} : { repeat: 'does not match the new password' }
    await form.submit(
      setPasswordSchema,
      { password },
      async (body) => {
        await request('PUT', path`users/${props.userName}/password`, { body })
        setPassword('')
        setRepeat('')
        props.onDone()
      },
      extra,
    )
  }
  return (
    <form onSubmit={submit} noValidate>
      {/* Tells password managers whose password this is. */}
      <input type="text" name="username" autoComplete="username" value={props.userName} readOnly hidden />
      <TextField
        id="new-password"
        label="New password"
        value={password}
        onValue={setPassword}
        error={form.errors.password}
        hint={`At least ${MIN_PASSWORD_CHARS} characters.`}
        input={{ type: 'password', autoComplete: 'new-password', autoFocus: true }}
      />
      <TextField
        id="repeat-password"
        label="Confirm password"
        value={repeat}
        onValue={setRepeat}
        error={form.errors.repeat}
        input={{ type: 'password', autoComplete: 'new-password' }}
      />
      <FormError message={form.errors['']} />
      <div class="actions end">
        {props.onCancel !== undefined && (
          <button type="button" onClick={props.onCancel}>
            Cancel
          </button>
        )}
        <button type="submit" class="primary" disabled={form.busy}>
          Set password
        </button>
      </div>
    </form>
  )
}

function PasswordDialog(props: { userName: string; onClose: () => void; onDone: () => void }) {
  return (
    <Dialog title={`Set the password of ${props.userName}`} onClose={props.onClose}>
      <PasswordForm userName={props.userName} onDone={props.onDone} onCancel={props.onClose} />
    </Dialog>
  )
}
