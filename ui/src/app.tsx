import { useEffect } from 'preact/hooks'
import { Redirect, Route, Router, Switch, useLocation } from 'wouter-preact'
import { useHashLocation } from 'wouter-preact/use-hash-location'
import { SessionProvider, useSession } from './api/session.tsx'
import { Banner, Loading } from './components/feedback.tsx'
import { Layout, PageHeader } from './components/layout.tsx'
import { ModalProvider } from './components/modal.tsx'
import { AccountPage } from './pages/account.tsx'
import { OverviewPage } from './pages/overview.tsx'
import { SignInPage } from './pages/sign-in.tsx'
import { TenantPage } from './pages/tenant.tsx'
import { TenantsPage } from './pages/tenants.tsx'
import { TokensPage } from './pages/tokens.tsx'
import { UsersPage } from './pages/users.tsx'

/** The management console: hash routes, so it works from any path prefix. */
export function App() {
  return (
    <Router hook={useHashLocation}>
      <SessionProvider>
        <ModalProvider>
          <Screens />
        </ModalProvider>
      </SessionProvider>
    </Router>
  )
}

/** Where to go back to after signing in. */
let returnTo = '/'

function decode(segment: string | undefined): string {
  try {
    return decodeURIComponent(segment ?? '')
  } catch {
    return segment ?? ''
  }
}

function Screens() {
  const { state, retry } = useSession()
  const [location] = useLocation()

  useEffect(() => {
    document.title = state.status === 'signed-in' ? `Taureau · ${state.session.user}` : 'Taureau'
  }, [state])

  if (state.status === 'loading') {
    return (
      <div class="center-screen">
        <Loading what="Connecting to the gateway" />
      </div>
    )
  }
  if (state.status === 'unreachable') {
    return (
      <div class="center-screen">
        <div class="card narrow">
          <h1>Cannot reach the gateway</h1>
          <Banner kind="error">{state.message}</Banner>
          <button type="button" class="primary" onClick={retry}>
            Try again
          </button>
        </div>
      </div>
    )
  }
  if (state.status === 'signed-out') {
    if (location !== '/sign-in') {
      returnTo = state.keepPlace ? location : '/'
      return <Redirect to="/sign-in" replace />
    }
    return <SignInPage notice={state.notice} />
  }
  if (location === '/sign-in') {
    const to = returnTo
    returnTo = '/'
    return <Redirect to={to} replace />
  }
  const { session } = state
  if (session.kind === 'tenant') {
    // A tenant's user sees only that tenant: gateway-wide pages lead to it.
    const own = `/tenants/${encodeURIComponent(session.tenant ?? '')}`
    const tenantInPath = /^\/tenants(?:\/([^/]+))?/.exec(location)
    if (
      location === '/users' ||
      location === '/tokens' ||
      (tenantInPath !== null && decode(tenantInPath[1]) !== session.tenant)
    ) {
      return <Redirect to={own} replace />
    }
  }

  return (
    <Layout>
      <Switch>
        <Route path="/">
          <OverviewPage />
        </Route>
        <Route path="/tenants">
          <TenantsPage />
        </Route>
        <Route path="/tenants/:tenant">
          {(params) => <Redirect to={`/tenants/${params.tenant}/devices`} replace />}
        </Route>
        <Route path="/tenants/:tenant/functions/new">
          {(params) => (
            <TenantPage tenantId={decode(params.tenant)} section="functions" editing={{ isNew: true }} />
          )}
        </Route>
        <Route path="/tenants/:tenant/functions/:name">
          {(params) => (
            <TenantPage
              tenantId={decode(params.tenant)}
              section="functions"
              editing={{ isNew: false, name: decode(params.name) }}
            />
          )}
        </Route>
        <Route path="/tenants/:tenant/:section">
          {(params) => <TenantPage tenantId={decode(params.tenant)} section={decode(params.section)} />}
        </Route>
        <Route path="/users">
          <UsersPage />
        </Route>
        <Route path="/tokens">
          <TokensPage />
        </Route>
        <Route path="/account">
          <AccountPage />
        </Route>
        <Route>
          <PageHeader title="Page not found" />
          <p>
            Nothing lives at <code>#{location}</code>. <a href="#/">Go to the overview</a>.
          </p>
        </Route>
      </Switch>
    </Layout>
  )
}
