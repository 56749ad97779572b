import { useState } from 'preact/hooks'
import { createDeviceSchema } from '../../../gateway/api-schemas.ts'
import { path, request } from '../api/client.ts'
import { useSignedIn } from '../api/session.tsx'
import type { Device, DeviceSecret } from '../api/types.ts'
import { CopyBox } from '../components/copy.tsx'
import { Badge, Banner, Empty, FormError, LoadError, Loading } from '../components/feedback.tsx'
import { TextField } from '../components/field.tsx'
import { useConfirm } from '../components/modal.tsx'
import { useForm } from '../lib/form.ts'
import { formatAgo, formatTime } from '../lib/format.ts'
import { useApi } from '../lib/use-api.ts'
import type { SectionProps } from './tenant.tsx'

/** The shell command that publishes one message as the device, to try it at once. */
function mosquittoCommand(mqttPort: number, username: string, secret: string): string {
  const host = window.location.hostname.includes(':')
    ? `[${window.location.hostname}]`
    : window.location.hostname
  const quoted = `'${secret.replaceAll("'", "'\\''")}'`
  return `mosquitto_pub -h ${host} -p ${mqttPort} -u ${username} -P ${quoted} -t 'sensors/test' -m '{"c":21.5}'`
}

/** A device's secret, shown once after it is made or rotated. */
function SecretPanel({ shown, onDone }: { shown: DeviceSecret & { rotated: boolean }; onDone: () => void }) {
  const { gateway } = useSignedIn()
  return (
    <section class="card highlight" aria-labelledby="device-secret-title">
      <h2 class="card-title" id="device-secret-title">
        {shown.rotated ? `New secret of ${shown.device.id}` : `Device ${shown.device.id} added`}
      </h2>
      <Banner kind="warning">
        Copy the secret now: the gateway keeps only its hash and will not show it again.
      </Banner>
      <CopyBox label="Username">{shown.username}</CopyBox>
      <CopyBox label="Secret" testId="device-secret">
        {shown.secret}
      </CopyBox>
      <CopyBox label="Command" testId="mosquitto-command" block>
        {mosquittoCommand(gateway.mqttPort, shown.username, shown.secret)}
      </CopyBox>
      <div class="actions">
        <button type="button" onClick={onDone}>
          Done
        </button>
      </div>
    </section>
  )
}

/** The tenant's devices: status, add (secret shown once), rotate, remove. */
export function DevicesSection({ tenantId }: SectionProps) {
  const devices = useApi<{ devices: Device[] }>(path`tenants/${tenantId}/devices`, { pollMs: 10_000 })
  const [shown, setShown] = useState<(DeviceSecret & { rotated: boolean }) | null>(null)
  const [notice, setNotice] = useState<string | null>(null)
  const [id, setId] = useState('')
  const form = useForm()
  const confirm = useConfirm()
  const list = devices.data?.devices ?? []

  const add = async (event: Event) => {
    event.preventDefault()
    await form.submit(createDeviceSchema, { id: id.trim() }, async (body) => {
      const answer = await request<DeviceSecret>('POST', path`tenants/${tenantId}/devices`, { body })
      setShown({ ...answer, rotated: false })
      setNotice(null)
      setId('')
      devices.reload()
    })
  }
  const rotate = (device: Device) =>
    confirm({
      title: `Rotate the secret of ${device.id}?`,
      message: <p>A new secret replaces the old one now; the device's open connections are closed.</p>,
      confirmLabel: 'Rotate secret',
      action: async () => {
        const answer = await request<DeviceSecret>(
          'POST',
          path`tenants/${tenantId}/devices/${device.id}/rotate`,
        )
        setShown({ ...answer, rotated: true })
        devices.reload()
      },
    })
  const remove = (device: Device) =>
    confirm({
      title: `Remove device ${device.id}?`,
      message: (
        <p>The device is disconnected, and its secret, persistent sessions and ACL rules are removed.</p>
      ),
      confirmLabel: 'Remove device',
      danger: true,
      action: async () => {
        await request('DELETE', path`tenants/${tenantId}/devices/${device.id}`)
        setShown((current) => (current?.device.id === device.id ? null : current))
        setNotice(`Device ${device.id} removed.`)
        devices.reload()
      },
    })

  return (
    <>
      {shown !== null && <SecretPanel shown={shown} onDone={() => setShown(null)} />}
      {notice !== null && (
        <Banner kind="success" onDismiss={() => setNotice(null)}>
          {notice}
        </Banner>
      )}
      <section class="card">
        <h2 class="card-title">Add a device</h2>
        <form class="inline-form" onSubmit={add} noValidate>
          <TextField
            id="device-id"
            label="Device id"
            value={id}
            onValue={setId}
            error={form.errors.id}
            hint={`It signs in as DEVICE@${tenantId} with a generated secret.`}
            input={{ autoComplete: 'off', placeholder: 'sensor-1' }}
          />
          <button type="submit" class="primary" disabled={form.busy}>
            Add device
          </button>
        </form>
        <FormError message={form.errors['']} />
      </section>
      <section class="card">
        <h2 class="card-title">Devices</h2>
        {devices.error !== null && <LoadError message={devices.error} retry={devices.reload} />}
        {devices.data === undefined ? (
          devices.error === null && <Loading />
        ) : list.length === 0 ? (
          <Empty title="No devices yet">Add one above; its secret is shown once.</Empty>
        ) : (
          <table class="table">
            <thead>
              <tr>
                <th scope="col">Device id</th>
                <th scope="col">Username</th>
                <th scope="col">Status</th>
                <th scope="col">Last seen</th>
                <th scope="col">Created</th>
                <th scope="col">Secret rotated</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((device) => (
                <tr key={device.id}>
                  <td>{device.id}</td>
                  <td>
                    <code>{device.username}</code>
                  </td>
                  <td>
                    {device.connections > 0 ? (
                      <Badge tone="ok">online{device.connections > 1 ? ` ×${device.connections}` : ''}</Badge>
                    ) : (
                      <Badge tone="muted">offline</Badge>
                    )}
                  </td>
                  <td title={formatTime(device.lastSeenAt)}>{formatAgo(device.lastSeenAt)}</td>
                  <td>{formatTime(device.createdAt)}</td>
                  <td>{device.rotatedAt === null ? 'never' : formatTime(device.rotatedAt)}</td>
                  <td class="row-actions">
                    <button type="button" class="small" onClick={() => void rotate(device)}>
                      Rotate secret
                    </button>
                    <button type="button" class="small danger-text" onClick={() => void remove(device)}>
                      Remove
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
