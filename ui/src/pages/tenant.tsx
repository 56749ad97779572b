import { useLocation } from 'wouter-preact'
import { path } from '../api/client.ts'
import { useSignedIn } from '../api/session.tsx'
import type { Tenant } from '../api/types.ts'
import { Badge, LoadError, Loading } from '../components/feedback.tsx'
import { PageHeader } from '../components/layout.tsx'
import { formatCount, formatTime } from '../lib/format.ts'
import { useApi } from '../lib/use-api.ts'
import { AclSection } from './acl.tsx'
import { DeadLettersSection } from './dead-letters.tsx'
import { DevicesSection } from './devices.tsx'
import { FunctionEditorLoader } from './function-editor-loader.tsx'
import { FunctionsSection } from './functions.tsx'
import { OutboxSection } from './outbox.tsx'
import { QuotasSection } from './quotas.tsx'
import { StateSection } from './state.tsx'
import { useDeleteTenant } from './tenants.tsx'
import { TopicsSection } from './topics.tsx'

/** The sections of a tenant, in tab order. */
const SECTIONS = [
  ['devices', 'Devices'],
  ['functions', 'Functions'],
  ['topics', 'Topics'],
  ['state', 'State'],
  ['dead-letters', 'Dead letters'],
  ['outbox', 'Outbox'],
  ['quotas', 'Quotas'],
  ['acl', 'ACL'],
] as const

/** What a section of a tenant gets. */
export interface SectionProps {
  tenantId: string
  tenant: Tenant
  /** Fetch the tenant again (quotas changed). */
  reloadTenant: () => void
}

/** One tenant: its header and the tabs of its sections; the function editor opens in Functions. */
export function TenantPage(props: {
  tenantId: string
  section: string
  editing?: { isNew: true } | { isNew: false; name: string }
}) {
  const { tenantId, section } = props
  const { isAdmin } = useSignedIn()
  const [, navigate] = useLocation()
  const tenant = useApi<{ tenant: Tenant }>(path`tenants/${tenantId}`)
  const deleteTenant = useDeleteTenant()
  const base = `/tenants/${encodeURIComponent(tenantId)}`

  const body = () => {
    const data = tenant.data?.tenant
    if (data === undefined) return tenant.error === null ? <Loading /> : null
    const sectionProps: SectionProps = { tenantId, tenant: data, reloadTenant: tenant.reload }
    if (props.editing !== undefined) {
      return (
        <FunctionEditorLoader tenantId={tenantId} name={props.editing.isNew ? null : props.editing.name} />
      )
    }
    switch (section) {
      case 'devices':
        return <DevicesSection {...sectionProps} />
      case 'functions':
        return <FunctionsSection {...sectionProps} />
      case 'topics':
        return <TopicsSection {...sectionProps} />
      case 'state':
        return <StateSection {...sectionProps} />
      case 'dead-letters':
        return <DeadLettersSection {...sectionProps} />
      case 'outbox':
        return <OutboxSection {...sectionProps} />
      case 'quotas':
        return <QuotasSection {...sectionProps} />
      case 'acl':
        return <AclSection {...sectionProps} />
      default:
        return (
          <p>
            This tenant has no section <code>{section}</code>.
          </p>
        )
    }
  }

  const data = tenant.data?.tenant
  return (
    <>
      <PageHeader
        title={`Tenant ${tenantId}`}
        sub={
          data === undefined ? undefined : (
            <>
              <Badge tone={data.connections > 0 ? 'ok' : 'muted'}>
                {formatCount(data.connections)} connected
              </Badge>{' '}
              created {formatTime(data.createdAt)}
            </>
          )
        }
      >
        {isAdmin && (
          <button
            type="button"
            class="danger-outline"
            onClick={() => void deleteTenant(tenantId, () => navigate('/tenants'))}
          >
            Delete tenant
          </button>
        )}
      </PageHeader>
      <nav class="tabs" aria-label="Tenant sections">
        {SECTIONS.map(([key, label]) => (
          <a key={key} href={`#${base}/${key}`} aria-current={key === section ? 'page' : undefined}>
            {label}
          </a>
        ))}
      </nav>
      {tenant.error !== null && <LoadError message={tenant.error} retry={tenant.reload} />}
      {body()}
    </>
  )
}
