import { useState } from 'preact/hooks'
import { useSignedIn } from '../api/session.tsx'
import { Banner } from '../components/feedback.tsx'
import { PageHeader } from '../components/layout.tsx'
import { formatTime } from '../lib/format.ts'
import { PasswordForm, ScopeBadge } from './users.tsx'

/** Who is signed in, until when, and (for users) a new password. */
export function AccountPage() {
  const { session } = useSignedIn()
  const [done, setDone] = useState(false)
  return (
    <>
      <PageHeader title="Account" />
      <section class="card">
        <h2 class="card-title">This session</h2>
        <dl class="facts">
          <div>
            <dt>Signed in as</dt>
            <dd>{session.user}</dd>
          </div>
          <div>
            <dt>Scope</dt>
            <dd>
              <ScopeBadge tenant={session.tenant} />
            </dd>
          </div>
          <div>
            <dt>Signed in with</dt>
            <dd>{session.via === 'password' ? 'user name and password' : 'an API token'}</dd>
          </div>
          <div>
            <dt>Session ends</dt>
            <dd>{formatTime(session.expiresAt)} at the latest</dd>
          </div>
        </dl>
      </section>
      {session.via === 'password' ? (
        <section class="card narrow-card">
          <h2 class="card-title">Change your password</h2>
          {done && <Banner kind="success">Your password was changed.</Banner>}
          <PasswordForm userName={session.user} onDone={() => setDone(true)} />
        </section>
      ) : (
        <p class="muted">Signed in with a token: there is no password to change here.</p>
      )}
    </>
  )
}
