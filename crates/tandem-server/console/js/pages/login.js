import { html, useState, useRef, useEffect } from '../lib.js'
import { api } from '../api.js'

/** Email and password → a session (the HttpOnly `tandem_session` cookie) and its CSRF token. */
export function LoginPage ({ onLoggedIn }) {
  const [email, setEmail] = useState('')
  const [password, setPassword] = useState('')
  const [error, setError] = useState(null)
  const [busy, setBusy] = useState(false)
  const first = useRef(null)
  useEffect(() => { first.current && first.current.focus() }, [])

  const submit = async (event) => {
    event.preventDefault()
    setBusy(true)
    setError(null)
    try {
      const answer = await api.login(email.trim(), password)
      setPassword('')
      await onLoggedIn(answer)
    } catch (failure) {
      setError(failure.message)
    } finally {
      setBusy(false)
    }
  }

  return html`<main class="login">
    <form class="card login-card" onSubmit=${submit} aria-labelledby="login-title">
      <div class="login-brand"><img src="/console/icon.svg" alt="" width="40" height="40" /><h1 id="login-title">tandem console</h1></div>
      <p class="muted">Sign in with your tandem account.</p>
      <label class="field"><span class="field-label">Email</span>
        <input ref=${first} type="email" name="email" autocomplete="username" required value=${email} onInput=${(event) => setEmail(event.target.value)} /></label>
      <label class="field"><span class="field-label">Password</span>
        <input type="password" name="password" autocomplete="current-password" required value=${password} onInput=${(event) => setPassword(event.target.value)} /></label>
      ${error ? html`<p class="field-error" role="alert">${error}</p>` : null}
      <button type="submit" class="primary" disabled=${busy}>${busy ? 'Signing in…' : 'Sign in'}</button>
      <p class="muted small">No account yet? An organization admin creates one: <code>tandem users add --email you@example.com --role marketer</code></p>
    </form>
  </main>`
}
