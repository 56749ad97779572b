import { useState } from 'preact/hooks'
import { signInSchema } from '../../../gateway/api-schemas.ts'
import { useSession } from '../api/session.tsx'
import { Banner, FormError } from '../components/feedback.tsx'
import { TextField } from '../components/field.tsx'
import { useForm } from '../lib/form.ts'

type Method = 'password' | 'token'

const METHOD_KEY = 'taureau.signInMethod'

function savedMethod(): Method {
  try {
    return localStorage.getItem(METHOD_KEY) === 'password' ? 'password' : 'token'
  } catch {
    return 'token'
  }
}

/** Sign in with an API token (the admin token at first) or a user name and password. */
export function SignInPage({ notice }: { notice: string | null }) {
  const { signIn } = useSession()
  const [method, setMethod] = useState<Method>(savedMethod)
  const [token, setToken] = useState('')
  const [username, setUsername] = useState('')
  const [password, setPassword] = useState('')
  const form = useForm()

  const choose = (next: Method) => {
    setMethod(next)
    form.setErrors({})
  }
  const onSubmit = async (event: Event) => {
    event.preventDefault()
    // The union's branches, so each field's error names that field.
    const [byToken, byPassword] = signInSchema.options
    const done =
      method === 'token'
        ? await form.submit(byToken, { token: token.trim() }, signIn)
        : await form.submit(byPassword, { username: username.trim(), password }, signIn)
    if (done) {
      try {
        localStorage.setItem(METHOD_KEY, method)
      } catch {
        // Storage off: the choice is not remembered.
      }
    }
  }

  return (
    <div class="center-screen">
      <div class="card sign-in">
        <div class="sign-in-brand">
          <span class="brand-mark" aria-hidden="true">
            T
          </span>
          <div>
            <h1>Taureau</h1>
            <p class="muted">Sign in to manage this gateway.</p>
          </div>
        </div>
        {notice !== null && <Banner kind="info">{notice}</Banner>}
        <div class="segmented" role="tablist" aria-label="Sign-in method">
          <button
            type="button"
            role="tab"
            aria-selected={method === 'token'}
            aria-controls="sign-in-form"
            onClick={() => choose('token')}
          >
            API token
          </button>
          <button
            type="button"
            role="tab"
            aria-selected={method === 'password'}
            aria-controls="sign-in-form"
            onClick={() => choose('password')}
          >
            User and password
          </button>
        </div>
        <form id="sign-in-form" role="tabpanel" onSubmit={onSubmit} noValidate>
          {method === 'token' ? (
            <TextField
              id="sign-in-token"
              label="API token"
              value={token}
              onValue={setToken}
              error={form.errors.token}
              hint="The admin token is in DATA/admin-token on the gateway; tenants get API tokens from an administrator."
              input={{ type: 'password', autoComplete: 'off', autoFocus: true }}
            />
          ) : (
            <>
              <TextField
                id="sign-in-username"
                label="User name"
                value={username}
                onValue={setUsername}
                error={form.errors.username}
                input={{ autoComplete: 'username', autoFocus: true }}
              />
              <TextField
                id="sign-in-password"
                label="Password"
                value={password}
                onValue={setPassword}
                error={form.errors.password}
                input={{ type: 'password', autoComplete: 'current-password' }}
              />
            </>
          )}
          <FormError message={form.errors['']} />
          <button type="submit" class="primary block" disabled={form.busy}>
            Sign in
          </button>
        </form>
      </div>
    </div>
  )
}
