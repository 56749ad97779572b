import type { ComponentChildren } from 'preact'
import { useLocation } from 'wouter-preact'
import { useSession, useSignedIn } from '../api/session.tsx'

interface NavItem {
  to: string
  label: string
  /** Also active on the pages below it. */
  prefix?: boolean
}

/** The signed-in frame: header with who is signed in, the left navigation, and the footer. */
export function Layout({ children }: { children: ComponentChildren }) {
  const { session, gateway, isAdmin } = useSignedIn()
  const { signOut } = useSession()
  const [location] = useLocation()
  const items: NavItem[] = isAdmin
    ? [
        { to: '/', label: 'Overview' },
        { to: '/tenants', label: 'Tenants', prefix: true },
        { to: '/users', label: 'Users' },
        { to: '/tokens', label: 'API tokens' },
        { to: '/account', label: 'Account' },
      ]
    : [
        { to: '/', label: 'Overview' },
        { to: `/tenants/${session.tenant ?? ''}`, label: `Tenant ${session.tenant ?? ''}`, prefix: true },
        { to: '/account', label: 'Account' },
      ]
  const active = (item: NavItem) =>
    item.to === '/'
      ? location === '/'
      : location === item.to || (item.prefix === true && location.startsWith(`${item.to}/`))

  return (
    <div class="layout">
      <header class="topbar">
        <a class="brand" href="#/">
          <span class="brand-mark" aria-hidden="true">
            T
          </span>
          Taureau
        </a>
        <span class="topbar-version">gateway {gateway.version}</span>
        <span class="spacer" />
        <span class="who">
          Signed in as <strong>{session.user}</strong>{' '}
          <span class={`badge ${isAdmin ? 'info' : 'muted'}`}>
            {isAdmin ? 'administrator' : `tenant ${session.tenant ?? ''}`}
          </span>
        </span>
        <button type="button" class="small" onClick={() => void signOut()}>
          Sign out
        </button>
      </header>
      <nav class="sidebar" aria-label="Main">
        <ul>
          {items.map((item) => (
            <li key={item.to}>
              <a href={`#${item.to}`} aria-current={active(item) ? 'page' : undefined}>
                {item.label}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      <main class="content">{children}</main>
      <footer class="footer">
        <span>Taureau {gateway.version}</span>
        <span>
          MQTT port {gateway.mqttPort}, WebSocket port {gateway.wsPort}
        </span>
        <a href="api/openapi.json" target="_blank" rel="noreferrer">
          API description (OpenAPI)
        </a>
      </footer>
    </div>
  )
}

/** A page's title row: heading, a line under it, and the page's actions. */
export function PageHeader(props: {
  title: ComponentChildren
  sub?: ComponentChildren
  children?: ComponentChildren
}) {
  return (
    <div class="page-header">
      <div>
        <h1>{props.title}</h1>
        {props.sub !== undefined && <p class="muted page-sub">{props.sub}</p>}
      </div>
      {props.children !== undefined && <div class="actions">{props.children}</div>}
    </div>
  )
}
