// The audit log: every change, login, token use and denied request, newest first, filtered;
// and whether the hash chain verifies (an edited, deleted or missing entry is named).
import { html, useState } from '../lib.js'
import { api } from '../api.js'
import { useAsync, PageHeader, ErrorBox, Loading, Table, Badge, Field, JsonView, Dialog, Time } from '../ui.js'

export default function AuditPage () {
  const [filter, setFilter] = useState({ actor: '', action: '', workspace: '' })
  const [applied, setApplied] = useState(filter)
  const [pages, setPages] = useState([null])
  const before = pages[pages.length - 1]
  const entries = useAsync(() => api.audit.list({ ...clean(applied), order: 'newest', limit: 100, before: before ?? undefined }), [applied, before])
  const verify = useAsync(() => api.audit.verify(), [])
  const [inspecting, setInspecting] = useState(null)
  const submit = (event) => { event.preventDefault(); setPages([null]); setApplied(filter) }
  const list = entries.data ? entries.data.entries : []
  return html`<section>
    <${PageHeader} title="Audit log" subtitle="Append-only and hash-chained: every change, login, token use and refusal." />
    ${verify.error ? html`<${ErrorBox} error=${verify.error} title="The chain could not be verified" />` : !verify.data ? html`<${Loading} label="Verifying the hash chain…" />`
      : verify.data.ok ? html`<p class="notice notice-good" role="status">Chain verified: ${verify.data.entries} entries, head <code>${shortHead(verify.data.head)}</code>.</p>`
      : html`<p class="notice notice-bad" role="alert">The chain is broken at entry ${verify.data.first_bad && verify.data.first_bad.seq} (line ${verify.data.first_bad && verify.data.first_bad.line}): ${verify.data.first_bad && (verify.data.first_bad.why || verify.data.first_bad.reason)}</p>`}
    <form class="toolbar" onSubmit=${submit} role="search" aria-label="Filter the audit log">
      <${Field} label="Actor"><input value=${filter.actor} onInput=${(event) => setFilter({ ...filter, actor: event.target.value })} placeholder="email, token id, kind" /><//>
      <${Field} label="Action"><input value=${filter.action} onInput=${(event) => setFilter({ ...filter, action: event.target.value })} placeholder="auth.login, destination." /><//>
      <${Field} label="Workspace"><input value=${filter.workspace} onInput=${(event) => setFilter({ ...filter, workspace: event.target.value })} /><//>
      <button type="submit" class="primary">Filter</button>
    </form>
    <${ErrorBox} error=${entries.error} />
    ${!entries.data ? html`<${Loading} />` : html`<${Table} rows=${list} rowKey=${(entry) => entry.seq} empty="No entry matches."
      columns=${[
        { key: 'seq', label: '#', class: 'num' },
        { key: 'at', label: 'When', render: (entry) => html`<${Time} value=${entry.at} />` },
        { key: 'actor', label: 'Who', render: (entry) => html`${entry.actor.name} <span class="muted small">${entry.actor.role || entry.actor.kind}</span>` },
        { key: 'action', label: 'Action', render: (entry) => html`<code>${entry.action}</code>` },
        { key: 'outcome', label: 'Outcome', render: (entry) => html`<${Badge}>${entry.outcome}<//>` },
        { key: 'workspace', label: 'Workspace' },
        { key: 'resource', label: 'Resource' },
        { key: 'inspect', label: html`<span class="visually-hidden">Details</span>`, render: (entry) => html`<button type="button" class="small" onClick=${() => setInspecting(entry)}>Details</button>` }
      ]} />
      <div class="form-actions">
        ${pages.length > 1 ? html`<button type="button" onClick=${() => setPages(pages.slice(0, -1))}>Newer</button>` : null}
        ${entries.data.next_before ? html`<button type="button" onClick=${() => setPages([...pages, entries.data.next_before])}>Older</button>` : null}
      </div>`}
    <${Dialog} open=${!!inspecting} title=${inspecting ? `Audit entry ${inspecting.seq}` : ''} onClose=${() => setInspecting(null)} wide>
      ${inspecting ? html`<${JsonView} value=${inspecting} label="Audit entry" />` : null}
    <//>
  </section>`
}

const clean = (filter) => Object.fromEntries(Object.entries(filter).filter(([, value]) => value && value.trim()).map(([key, value]) => [key, value.trim()]))
const shortHead = (head) => head && typeof head === 'object' ? `${head.seq}:${String(head.sha256 || '').slice(0, 12)}` : String(head || '').slice(0, 16)
