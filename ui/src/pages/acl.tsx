import { useEffect, useState } from 'preact/hooks'
import { aclBodySchema } from '../../../gateway/api-schemas.ts'
import { path, request } from '../api/client.ts'
import type { AclRule, Device } from '../api/types.ts'
import { Banner, Empty, FormError, LoadError, Loading } from '../components/feedback.tsx'
import { SelectField, TextField } from '../components/field.tsx'
import { useForm } from '../lib/form.ts'
import { useApi } from '../lib/use-api.ts'
import type { SectionProps } from './tenant.tsx'

interface RuleRow extends AclRule {
  key: number
}

let ruleKeys = 0

function rowOf(rule: AclRule): RuleRow {
  ruleKeys++
  return { ...rule, key: ruleKeys }
}

/** Access rules of the tenant or of one device: ordered, first match decides, no match allows. */
export function AclSection({ tenantId }: SectionProps) {
  const [device, setDevice] = useState('')
  const devices = useApi<{ devices: Device[] }>(path`tenants/${tenantId}/devices`)
  const rulesPath =
    device === '' ? path`tenants/${tenantId}/acl` : path`tenants/${tenantId}/devices/${device}/acl`
  return (
    <section class="card">
      <h2 class="card-title">Access rules</h2>
      <p class="hint">
        A device's own rules come first, then the tenant's; the first rule whose filter matches decides, and
        no match allows. Denied subscriptions get SUBACK 0x80; denied publishes are acknowledged and dropped.
      </p>
      <div class="inline-form">
        <SelectField
          id="acl-scope"
          label="Rules of"
          value={device}
          onValue={setDevice}
          options={[
            { value: '', label: 'The tenant (all devices)' },
            ...(devices.data?.devices ?? []).map((entry) => ({
              value: entry.id,
              label: `Device ${entry.id}`,
            })),
          ]}
        />
      </div>
      <RulesEditor key={rulesPath} rulesPath={rulesPath} />
    </section>
  )
}

function RulesEditor({ rulesPath }: { rulesPath: string }) {
  const loaded = useApi<{ rules: AclRule[] }>(rulesPath)
  const [rows, setRows] = useState<RuleRow[] | null>(null)
  const [notice, setNotice] = useState<string | null>(null)
  const form = useForm()
  useEffect(() => {
    if (loaded.data !== undefined) setRows(loaded.data.rules.map(rowOf))
  }, [loaded.data])

  if (rows === null)
    return loaded.error === null ? <Loading /> : <LoadError message={loaded.error} retry={loaded.reload} />

  const update = (key: number, patch: Partial<AclRule>) =>
    setRows(rows.map((row) => (row.key === key ? { ...row, ...patch } : row)))
  const move = (index: number, by: number) => {
    const next = [...rows]
    const [row] = next.splice(index, 1)
    if (row !== undefined) next.splice(index + by, 0, row)
    setRows(next)
  }
  const save = async (event: Event) => {
    event.preventDefault()
    setNotice(null)
    const body = {
      rules: rows.map(({ action, filter, permission }) => ({ action, filter: filter.trim(), permission })),
    }
    await form.submit(aclBodySchema, body, async (data) => {
      const answer = await request<{ rules: AclRule[] }>('PUT', rulesPath, { body: data })
      setRows(answer.rules.map(rowOf))
      setNotice('Rules saved; they apply to new publishes and subscriptions now.')
    })
  }

  return (
    <form onSubmit={save} noValidate>
      {rows.length === 0 ? (
        <Empty title="No rules">Everything inside the tenant is allowed. Add a rule to restrict it.</Empty>
      ) : (
        <table class="table compact">
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Action</th>
              <th scope="col">Topic filter</th>
              <th scope="col">Permission</th>
              <th scope="col">
                <span class="sr-only">Order</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((row, index) => (
              <tr key={row.key}>
                <td class="num">{index + 1}</td>
                <td>
                  <SelectField
                    id={`acl-${row.key}-action`}
                    label={`Rule ${index + 1} action`}
                    value={row.action}
                    onValue={(action) => update(row.key, { action: action as AclRule['action'] })}
                    options={[
                      { value: 'publish', label: 'publish' },
                      { value: 'subscribe', label: 'subscribe' },
                      { value: 'all', label: 'all' },
                    ]}
                  />
                </td>
                <td>
                  <TextField
                    id={`acl-${row.key}-filter`}
                    label={`Rule ${index + 1} filter`}
                    value={row.filter}
                    onValue={(filter) => update(row.key, { filter })}
                    error={form.errors[`rules.${index}.filter`]}
                    input={{ class: 'mono', autoComplete: 'off' }}
                  />
                </td>
                <td>
                  <SelectField
                    id={`acl-${row.key}-permission`}
                    label={`Rule ${index + 1} permission`}
                    value={row.permission}
                    onValue={(permission) =>
                      update(row.key, { permission: permission as AclRule['permission'] })
                    }
                    options={[
                      { value: 'allow', label: 'allow' },
                      { value: 'deny', label: 'deny' },
                    ]}
                  />
                </td>
                <td class="row-actions">
                  <button
                    type="button"
                    class="small"
                    aria-label={`Move rule ${index + 1} up`}
                    disabled={index === 0}
                    onClick={() => move(index, -1)}
                  >
                    Up
                  </button>
                  <button
                    type="button"
                    class="small"
                    aria-label={`Move rule ${index + 1} down`}
                    disabled={index === rows.length - 1}
                    onClick={() => move(index, 1)}
                  >
                    Down
                  </button>
                  <button
                    type="button"
                    class="small danger-text"
                    aria-label={`Remove rule ${index + 1}`}
                    onClick={() => setRows(rows.filter((other) => other.key !== row.key))}
                  >
                    Remove
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <FormError message={form.errors[''] ?? form.errors.rules} />
      {notice !== null && <Banner kind="success">{notice}</Banner>}
      <div class="actions">
        <button
          type="button"
          onClick={() => setRows([...rows, rowOf({ action: 'all', filter: '', permission: 'deny' })])}
        >
          Add rule
        </button>
        <button type="submit" class="primary" disabled={form.busy}>
          Save rules
        </button>
      </div>
    </form>
  )
}
