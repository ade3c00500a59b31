// The console's shell: session, hash router, navigation, workspace switcher, notices.
//
// Routes (the hash, so the server serves one page and the API keeps its paths):
//   #/login                         log in
//   #/w/<workspace>/<page>/<rest…>  a page of the registry (pages.js) in a workspace
// Organization pages (users, audit) still carry the workspace the user was in, so the switcher
// and the navigation stay put.
import { html, render, useState, useEffect, useCallback, useMemo, useRef } from './lib.js'
import { api, setCsrfToken, whenUnauthorized } from './api.js'
import { AppContext, ErrorBox, Loading, PageHeader } from './ui.js'
import { SECTIONS, PAGES, pageById, refusal, visiblePages } from './pages.js'
import { LoginPage } from './pages/login.js'

function parseHash () {
  const raw = location.hash.replace(/^#\/?/, '')
  const [pathPart, queryPart] = raw.split('?')
  const parts = pathPart.split('/').filter(Boolean).map((part) => { try { return decodeURIComponent(part) } catch { return part } })
  const query = Object.fromEntries(new URLSearchParams(queryPart || ''))
  if (parts[0] === 'login') return { login: true, query }
  if (parts[0] === 'w' && parts.length >= 2) return { workspace: parts[1], page: parts[2] || null, rest: parts.slice(3), query }
  return { workspace: null, page: null, rest: [], query }
}

function useHashRoute () {
  const [route, setRoute] = useState(parseHash)
  useEffect(() => {
    const changed = () => setRoute(parseHash())
    addEventListener('hashchange', changed)
    return () => removeEventListener('hashchange', changed)
  }, [])
  return route
}

const go = (hash) => { if (location.hash !== hash) location.hash = hash }

function App () {
  const route = useHashRoute()
  const [session, setSession] = useState({ state: 'loading' })
  const [notices, setNotices] = useState([])

  const notify = useCallback((message, tone = 'good') => {
    const id = Math.random().toString(36).slice(2)
    setNotices((list) => [...list.slice(-3), { id, message, tone }])
    setTimeout(() => setNotices((list) => list.filter((notice) => notice.id !== id)), tone === 'bad' ? 12000 : 6000)
  }, [])
  const notifyError = useCallback((error) => notify(error.message + (error.code ? ` (${error.code})` : ''), 'bad'), [notify])

  const loadSession = useCallback(async () => {
    try {
      const me = await api.me()
      setCsrfToken(me.csrf_token)
      let workspaces
      if (me.workspace) workspaces = [{ id: me.workspace, name: me.workspace }]
      else {
        try { workspaces = (await api.workspaces()).workspaces } catch { workspaces = [] }
      }
      setSession({ state: 'in', me, workspaces })
    } catch (error) {
      setSession(error.status === 401 ? { state: 'out' } : { state: 'error', error })
    }
  }, [])

  useEffect(() => { loadSession() }, [loadSession])
  useEffect(() => whenUnauthorized(() => { setCsrfToken(null); setSession({ state: 'out' }) }), [])

  if (session.state === 'loading') return html`<${Loading} label="Loading the tandem console…" />`
  if (session.state === 'error') return html`<main class="center"><${ErrorBox} error=${session.error} title="The console could not start" /></main>`
  if (session.state === 'out' || route.login) {
    if (session.state === 'in') { go('#/'); return null }
    return html`<${LoginPage} onLoggedIn=${async (answer) => { setCsrfToken(answer.csrf_token); await loadSession(); go(route.query.next || '#/') }} />`
  }
  return html`<${Shell} session=${session} route=${route} notify=${notify} notifyError=${notifyError} notices=${notices}
    onLogout=${async () => { try { await api.logout() } catch (error) { notifyError(error) } setCsrfToken(null); setSession({ state: 'out' }); go('#/login') }} />`
}

function Shell ({ session, route, notify, notifyError, notices, onLogout }) {
  const { me, workspaces } = session
  const workspace = route.workspace || me.workspace || (workspaces[0] && workspaces[0].id)
  const pages = visiblePages(me)
  const page = route.page ? pageById(route.page) : pages[0]
  const [menuOpen, setMenuOpen] = useState(false)

  useEffect(() => {
    if (!workspace) return
    if (!route.workspace || !route.page) go(`#/w/${encodeURIComponent(workspace)}/${page ? page.id : 'flow'}`)
  }, [workspace, route.workspace, route.page])
  useEffect(() => setMenuOpen(false), [route.page, route.workspace])

  const held = useMemo(() => new Set(me.permissions || []), [me])
  const context = {
    me,
    workspace,
    workspaces,
    can: (permission) => held.has(permission) && (!me.workspace || me.workspace === workspace),
    canOrganization: (permission) => held.has(permission) && !me.workspace,
    go,
    notify,
    notifyError
  }

  if (!workspace) {
    return html`<main class="center"><${ErrorBox} error=${{ message: 'No workspace is visible to this account.' }} /></main>`
  }
  const switchWorkspace = (event) => go(`#/w/${encodeURIComponent(event.target.value)}/${page ? page.id : 'flow'}`)

  return html`<${AppContext.Provider} value=${context}>
    <div class="shell">
      <header class="topbar">
        <button type="button" class="ghost menu-toggle" aria-expanded=${menuOpen ? 'true' : 'false'} aria-controls="main-nav" onClick=${() => setMenuOpen(!menuOpen)}>☰<span class="visually-hidden"> Menu</span></button>
        <a class="brand" href=${`#/w/${encodeURIComponent(workspace)}/flow`}><img src="/console/icon.svg" alt="" width="24" height="24" /> tandem</a>
        <label class="workspace-switcher">
          <span class="visually-hidden">Workspace</span>
          <select onChange=${switchWorkspace} value=${workspace} disabled=${workspaces.length < 2} aria-label="Workspace">
            ${workspaces.map((item) => html`<option value=${item.id}>${item.name && item.name !== item.id ? `${item.name} (${item.id})` : item.id}</option>`)}
          </select>
        </label>
        <div class="whoami">
          <span class="who">${me.user ? me.user.email : me.name}</span>
          <span class="badge badge-info" title="role">${me.role}</span>
          ${me.workspace ? html`<span class="badge badge-muted" title="scope">${me.workspace}</span>` : html`<span class="badge badge-muted" title="scope">organization</span>`}
          <button type="button" class="ghost" onClick=${onLogout}>Log out</button>
        </div>
      </header>
      <nav id="main-nav" class=${menuOpen ? 'open' : ''} aria-label="Main">
        ${SECTIONS.map((section) => {
          const items = pages.filter((item) => item.section === section)
          if (items.length === 0) return null
          return html`<div class="nav-section"><h2>${section}</h2><ul>
            ${items.map((item) => html`<li><a href=${`#/w/${encodeURIComponent(workspace)}/${item.id}`} aria-current=${page && page.id === item.id ? 'page' : undefined}>${item.title}</a></li>`)}
          </ul></div>`
        })}
      </nav>
      <main id="main">
        ${page ? html`<${PageHost} key=${page.id + '@' + workspace} page=${page} workspace=${workspace} route=${route} me=${me} />`
          : html`<${PageHeader} title="Page not found" /><p>There is no page <code>${route.page}</code>. <a href=${`#/w/${encodeURIComponent(workspace)}/flow`}>Go to the flow map</a>.</p>`}
      </main>
      <div class="notices" role="status" aria-live="polite">
        ${notices.map((notice) => html`<div key=${notice.id} class=${'notice notice-' + notice.tone}>${notice.message}</div>`)}
      </div>
    </div>
  <//>`
}

/** Loads a page's module on first use and renders it, or says why the caller may not see it. */
function PageHost ({ page, workspace, route, me }) {
  const [module, setModule] = useState(null)
  const [error, setError] = useState(null)
  const refused = refusal(page, me)
  useEffect(() => {
    if (refused) return
    let live = true
    page.load().then((loaded) => live && setModule(() => loaded.default), (failure) => live && setError(failure))
    return () => { live = false }
  }, [page.id])
  if (refused) {
    return html`<section class="refused" aria-labelledby="refused-title">
      <${PageHeader} title=${'Not available: ' + page.title} />
      <p id="refused-title" class="notice notice-bad" role="alert">${refused}</p>
      <p>Ask an organization admin for a role that holds it. <a href=${`#/w/${encodeURIComponent(workspace)}/flow`}>Back to the flow map</a></p>
    </section>`
  }
  if (error) return html`<${ErrorBox} error=${error} title="This page could not be loaded" />`
  if (!module) return html`<${Loading} />`
  const Page = module
  return html`<${Page} workspace=${workspace} path=${route.rest || []} query=${route.query || {}} />`
}

render(html`<${App} />`, document.getElementById('app'))

export { PAGES }
