// Shared components and hooks. Every value shown goes through Preact as text or as an attribute
// value (escaped), never as HTML.
import { html, createContext, cloneElement, isValidElement, useState, useEffect, useRef, useCallback, useContext } from './lib.js'

/** What every page knows: the caller, the workspace, permission checks, navigation, notices. */
export const AppContext = createContext(null)
export const useApp = () => useContext(AppContext)

/** Runs `load` when `deps` change: {data, error, loading, reload}. */
export function useAsync (load, deps) {
  const [state, setState] = useState({ data: undefined, error: null, loading: true })
  const generation = useRef(0)
  const run = useCallback(() => {
    const mine = ++generation.current
    setState((previous) => ({ ...previous, loading: true }))
    Promise.resolve().then(load).then(
      (data) => { if (mine === generation.current) setState({ data, error: null, loading: false }) },
      (error) => { if (mine === generation.current) setState((previous) => ({ data: previous.data, error, loading: false })) })
  }, deps)
  useEffect(() => { run(); return () => { generation.current++ } }, [run])
  return { ...state, reload: run }
}

/** Like useAsync, and again every `intervalMs` while the tab is visible. */
export function usePoll (load, intervalMs, deps) {
  const result = useAsync(load, deps)
  useEffect(() => {
    const timer = setInterval(() => { if (!document.hidden) result.reload() }, intervalMs)
    return () => clearInterval(timer)
  }, [result.reload, intervalMs])
  return result
}

export function ErrorBox ({ error, title }) {
  if (!error) return null
  const details = error.details ? JSON.stringify(error.details, null, 2) : null
  return html`<div class="error-box" role="alert">
    <strong>${title || 'Something went wrong'}</strong>
    <p>${error.message}${error.code ? html` <code>${error.code}</code>` : null}</p>
    ${details ? html`<details><summary>Details</summary><pre>${details}</pre></details>` : null}
  </div>`
}

export const Loading = ({ label }) => html`<p class="muted" role="status">${label || 'Loading…'}</p>`
export const Empty = ({ children }) => html`<div class="empty">${children}</div>`

/** A page's heading; focused after navigation so keyboard and screen-reader users land on it. */
export function PageHeader ({ title, subtitle, actions }) {
  const heading = useRef(null)
  useEffect(() => { heading.current && heading.current.focus({ preventScroll: true }) }, [title])
  return html`<header class="page-header">
    <div><h1 tabindex="-1" ref=${heading}>${title}</h1>${subtitle ? html`<p class="muted">${subtitle}</p>` : null}</div>
    ${actions ? html`<div class="actions">${actions}</div>` : null}
  </header>`
}

const TONES = {
  running: 'good', delivered: 'good', active: 'good', applied: 'good', ok: 'good', accepted: 'good', passed: 'good', enabled: 'good', closed: 'good', released: 'good', approved: 'good',
  open: 'info', pending: 'info', queued: 'info', draft: 'info', allowed: 'info', flagged: 'warn', 'half-open': 'warn', half_open: 'warn',
  retrying: 'warn', quarantined: 'warn', disabled: 'muted', withdrawn: 'muted', expired: 'muted', revoked: 'muted', filtered: 'muted', discarded: 'muted', skipped: 'muted',
  error: 'bad', failed: 'bad', failing: 'bad', dlq: 'bad', rejected: 'bad', blocked: 'bad', denied: 'bad', failure: 'bad', broken: 'bad'
}

export function Badge ({ tone, children }) {
  const text = String(children ?? '')
  return html`<span class=${'badge badge-' + (tone || TONES[text.toLowerCase()] || 'muted')}>${text}</span>`
}

/**
 * A table: `columns` = [{key, label, render?(row), class?}], rows of objects. Keyboard users
 * reach row actions through the buttons and links the cells hold.
 */
export function Table ({ columns, rows, caption, empty, rowKey, rowClass }) {
  if (!rows || rows.length === 0) return html`<${Empty}>${empty || 'Nothing here yet.'}<//>`
  return html`<div class="table-wrap"><table>
    ${caption ? html`<caption>${caption}</caption>` : null}
    <thead><tr>${columns.map((column) => html`<th scope="col" class=${column.class || ''}>${column.label}</th>`)}</tr></thead>
    <tbody>${rows.map((row, index) => html`<tr key=${rowKey ? rowKey(row) : index} class=${rowClass ? rowClass(row) : ''}>
      ${columns.map((column) => html`<td class=${column.class || ''}>${column.render ? column.render(row) : display(row[column.key])}</td>`)}
    </tr>`)}</tbody>
  </table></div>`
}

/** A value as text: objects as compact JSON, absent as an em dash. */
export function display (value) {
  if (value === undefined || value === null || value === '') return '—'
  if (typeof value === 'object') return JSON.stringify(value)
  return String(value)
}

export const formatNumber = (value) => (value === undefined || value === null) ? '—' : Number(value).toLocaleString('en')

/** An ISO time, shown relative ("3 min ago") with the exact time on hover. */
export function Time ({ value }) {
  if (!value) return html`<span class="muted">never</span>`
  const date = new Date(typeof value === 'number' ? value : value)
  if (Number.isNaN(date.getTime())) return html`<span>${String(value)}</span>`
  return html`<time datetime=${date.toISOString()} title=${date.toISOString()}>${relative(date)}</time>`
}

export function relative (date) {
  const seconds = Math.round((Date.now() - date.getTime()) / 1000)
  const future = seconds < 0
  const magnitude = Math.abs(seconds)
  let text
  if (magnitude < 5) return 'just now'
  else if (magnitude < 60) text = `${magnitude} s`
  else if (magnitude < 3600) text = `${Math.round(magnitude / 60)} min`
  else if (magnitude < 86400) text = `${Math.round(magnitude / 3600)} h`
  else text = `${Math.round(magnitude / 86400)} d`
  return future ? `in ${text}` : `${text} ago`
}

/** Pretty JSON as text (untrusted values stay text). */
export const JsonView = ({ value, label }) => html`<pre class="json" tabindex="0" aria-label=${label || 'JSON'}>${JSON.stringify(value, null, 2)}</pre>`

export function Stat ({ label, value, tone, hint }) {
  return html`<div class=${'stat' + (tone ? ' stat-' + tone : '')}>
    <div class="stat-value">${value}</div><div class="stat-label">${label}</div>${hint ? html`<div class="stat-hint muted">${hint}</div>` : null}
  </div>`
}

let fieldCount = 0

/**
 * A labelled form control: the label names the control (`for`/`id`), the hint and the error
 * describe it (`aria-describedby`), so a screen reader reads all three and the name stays short.
 */
export function Field ({ label, hint, error, required, children, class: className }) {
  const [id] = useState(() => `field-${++fieldCount}`)
  const describedBy = [hint ? `${id}-hint` : '', error ? `${id}-error` : ''].filter(Boolean).join(' ') || undefined
  const control = isValidElement(children)
    ? cloneElement(children, { id, 'aria-describedby': describedBy, 'aria-invalid': error ? 'true' : undefined, required: children.props.required ?? required })
    : children
  return html`<div class=${'field ' + (className || '')}>
    <label class="field-label" for=${id}>${label}${required ? html`<span aria-hidden="true"> *</span>` : null}</label>
    ${control}
    ${hint ? html`<span class="field-hint" id=${`${id}-hint`}>${hint}</span>` : null}
    ${error ? html`<span class="field-error" id=${`${id}-error`} role="alert">${error}</span>` : null}
  </div>`
}

/** Tabs with the ARIA tab pattern: arrow keys move between tabs. */
export function Tabs ({ tabs, current, onChange, label }) {
  const keydown = (event) => {
    const index = tabs.findIndex((tab) => tab.id === current)
    const step = event.key === 'ArrowRight' ? 1 : event.key === 'ArrowLeft' ? -1 : 0
    if (!step) return
    event.preventDefault()
    const next = tabs[(index + step + tabs.length) % tabs.length]
    onChange(next.id)
    requestAnimationFrame(() => document.getElementById('tab-' + next.id)?.focus())
  }
  return html`<div class="tabs" role="tablist" aria-label=${label} onKeyDown=${keydown}>
    ${tabs.map((tab) => html`<button type="button" role="tab" id=${'tab-' + tab.id} aria-selected=${tab.id === current ? 'true' : 'false'}
      tabindex=${tab.id === current ? 0 : -1} onClick=${() => onChange(tab.id)}>${tab.label}</button>`)}
  </div>`
}

/** A modal dialog (the native <dialog>: focus stays inside, Escape closes). */
export function Dialog ({ open, title, onClose, children, wide }) {
  const ref = useRef(null)
  useEffect(() => {
    const dialog = ref.current
    if (!dialog) return
    if (open && !dialog.open) dialog.showModal()
    if (!open && dialog.open) dialog.close()
  }, [open])
  return html`<dialog ref=${ref} class=${wide ? 'wide' : ''} aria-label=${title} onClose=${onClose} onCancel=${onClose}>
    ${open ? html`<div class="dialog-head"><h2>${title}</h2><button type="button" class="ghost" aria-label="Close" onClick=${onClose}>✕</button></div>
    <div class="dialog-body">${children}</div>` : null}
  </dialog>`
}

/**
 * The outcome of a change that may need approval: 201/200 applied, 202 a change request was
 * opened instead (the workspace's `change_approval` policy).
 */
export function changeOutcome (result, workspace, what) {
  if (result.status === 202) {
    const request = result.data.change_request || result.data
    return { tone: 'info', proposed: request.id, message: `${what} proposed as change request ${request.id}: it applies once an approver approves it.`, link: `#/w/${encodeURIComponent(workspace)}/changes/${encodeURIComponent(request.id)}` }
  }
  return { tone: 'good', message: `${what} applied.` }
}

export function Outcome ({ outcome }) {
  if (!outcome) return null
  return html`<div class=${'notice notice-' + outcome.tone} role="status">${outcome.message}
    ${outcome.link ? html` <a href=${outcome.link}>Open the change request</a>` : null}</div>`
}

/** A button that runs an async action, disabled while it runs; errors go to `onError`. */
export function ActionButton ({ action, children, class: className, disabled, label, confirm: question, onError }) {
  const [busy, setBusy] = useState(false)
  const app = useApp()
  const click = async () => {
    if (question && !window.confirm(question)) return
    setBusy(true)
    try { await action() } catch (error) { (onError || app.notifyError)(error) } finally { setBusy(false) }
  }
  return html`<button type="button" class=${className || ''} disabled=${disabled || busy} aria-busy=${busy ? 'true' : 'false'}
    aria-label=${label} onClick=${click}>${children}</button>`
}

/**
 * The state of a dialog that creates something and then shows, once, what came back (a write
 * key, a token's secret): {form, setForm, set, created, error, close, submit}.
 */
export function useCreateForm (initial, create, { onCreated, onClose }) {
  const [form, setForm] = useState(initial)
  const [created, setCreated] = useState(null)
  const [error, setError] = useState(null)
  const set = (key) => (event) => setForm({ ...form, [key]: event.target.value })
  const close = () => { setCreated(null); setError(null); onClose() }
  const submit = async (event) => {
    event.preventDefault()
    setError(null)
    try {
      setCreated(await create(form))
      onCreated()
    } catch (failure) { setError(failure) }
  }
  return { form, setForm, set, created, error, close, submit }
}

/** Parses comma- or newline-separated text into a list. */
export const splitList = (text) => String(text || '').split(/[\n,]/).map((part) => part.trim()).filter(Boolean)

export function hrefFor (workspace, ...parts) {
  return '#/w/' + [workspace, ...parts].map((part) => encodeURIComponent(part)).join('/')
}
