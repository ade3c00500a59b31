// Change requests: what a marketer proposed (or any change the workspace's `change_approval`
// policy held back), with the diff of every object, the dry run on recent events, comments, and
// approve (which applies it, all or nothing) or reject by IT — never by the proposer. And the
// version history of the configuration, with rollback (itself a change).
import { html, useState } from '../lib.js'
import { workspaceApi } from '../api.js'
import { useApp, useAsync, usePoll, PageHeader, ErrorBox, Loading, Table, Badge, Field, Tabs, JsonView, Time, Empty, ActionButton, Outcome, changeOutcome, formatNumber, hrefFor } from '../ui.js'

const STATUSES = ['open', 'applied', 'rejected', 'failed', 'withdrawn', 'approved']

export default function ChangesPage ({ workspace, path, query }) {
  if (path[0] === 'history') return html`<${History} workspace=${workspace} query=${query} />`
  if (path[0]) return html`<${ChangeRequestView} key=${path[0]} workspace=${workspace} id=${path[0]} />`
  return html`<${ChangeRequestList} workspace=${workspace} query=${query} />`
}

function ChangeRequestList ({ workspace, query }) {
  const [status, setStatus] = useState(query.status || 'open')
  const requests = usePoll(() => workspaceApi(workspace).changes.list(status === 'all' ? {} : { status }), 5000, [workspace, status])
  const tabs = [...STATUSES.map((item) => ({ id: item, label: item })), { id: 'all', label: 'all' }]
  return html`<section>
    <${PageHeader} title="Change requests" subtitle="Changes waiting for approval, and what became of the others."
      actions=${html`<a class="button" href=${hrefFor(workspace, 'changes', 'history')}>Version history</a>`} />
    <${Tabs} label="Status" tabs=${tabs} current=${status} onChange=${setStatus} />
    <${ErrorBox} error=${requests.error} />
    ${!requests.data ? html`<${Loading} />` : html`<${Table} rows=${requests.data.change_requests || requests.data.requests || []} rowKey=${(row) => row.id}
      empty=${status === 'open' ? 'Nothing waits for approval.' : 'None.'}
      columns=${[
        { key: 'id', label: 'Request', render: (row) => html`<a href=${hrefFor(workspace, 'changes', row.id)}>${row.title || row.id}</a><div class="muted small mono">${row.id}</div>` },
        { key: 'status', label: 'Status', render: (row) => html`<${Badge}>${row.status}<//>` },
        { key: 'operations', label: 'Changes', render: (row) => row.operations.map((operation) => `${operation.action} ${operation.kind} ${operation.id}`).join('; ') },
        { key: 'proposed_by', label: 'Proposed by', render: (row) => `${row.proposed_by} (${row.proposed_by_role})` },
        { key: 'created_at', label: 'When', render: (row) => html`<${Time} value=${row.created_at} />` },
        { key: 'decided_by', label: 'Decided by' }
      ]} />`}
  </section>`
}

function ChangeRequestView ({ workspace, id }) {
  const app = useApp()
  const ws = workspaceApi(workspace)
  const request = useAsync(() => ws.changes.get(id), [workspace, id])
  const [comment, setComment] = useState('')
  const [outcome, setOutcome] = useState(null)
  const [error, setError] = useState(null)
  if (request.error) return html`<section><${PageHeader} title=${id} /><${ErrorBox} error=${request.error} /></section>`
  if (!request.data) return html`<${Loading} label="Loading the change request and its dry run…" />`
  const data = request.data.change_request || request.data
  const me = app.me.user ? `user:${app.me.user.email}` : app.me.kind === 'admin_token' ? 'admin-token' : `token:${app.me.id}`
  const own = data.proposed_by === me
  const open = data.status === 'open' || data.status === 'approved'
  const decide = (verb) => async () => {
    setError(null)
    try {
      const answer = await ws.changes[verb](id, comment || undefined)
      setComment('')
      setOutcome({ tone: verb === 'approve' ? 'good' : 'info', message: verb === 'approve' ? 'Approved and applied.' : verb === 'reject' ? 'Rejected.' : 'Withdrawn.' })
      request.reload()
      return answer
    } catch (failure) { setError(failure); request.reload() }
  }
  const addComment = async (event) => {
    event.preventDefault()
    if (!comment.trim()) return
    try { await ws.changes.comment(id, comment.trim()); setComment(''); request.reload() } catch (failure) { setError(failure) }
  }
  const impacts = new Map((request.data.impact || data.impact || []).map((item) => [`${item.kind}:${item.id}`, item.impact]))
  return html`<section>
    <${PageHeader} title=${data.title || `Change request ${id}`} subtitle=${`${id} — proposed by ${data.proposed_by} (${data.proposed_by_role})`}
      actions=${html`<${Badge}>${data.status}<//>`} />
    <${Outcome} outcome=${outcome} />
    <${ErrorBox} error=${error} title="Not done" />
    ${data.error ? html`<p class="notice notice-bad">${data.error}</p>` : null}
    ${data.operations.map((operation) => html`<div class="card" key=${operation.kind + operation.id}>
      <h2>${operation.action} ${operation.kind} <code>${operation.id}</code></h2>
      ${(operation.changes || []).length ? html`<p>Changed: <span class="path-list">${operation.changes.map((change) => html`<code>${pathText(change)}</code>`)}</span></p>` : null}
      <div class="diff">
        <div><h3>Before</h3>${operation.before ? html`<${JsonView} value=${operation.before} label="Before" />` : html`<p class="muted">(does not exist)</p>`}</div>
        <div><h3>After</h3>${operation.after ? html`<${JsonView} value=${operation.after} label="After" />` : html`<p class="muted">(deleted)</p>`}</div>
      </div>
      ${impacts.has(`${operation.kind}:${operation.id}`) ? html`<${Impact} impact=${impacts.get(`${operation.kind}:${operation.id}`)} />` : null}
    </div>`)}
    <div class="card">
      <h2>Discussion</h2>
      ${(data.comments || []).length === 0 ? html`<p class="muted">No comments.</p>` : html`<ul>${data.comments.map((item) => html`<li><strong>${item.by}</strong> <span class="muted small">${new Date(item.at_ms).toISOString()}</span><br />${item.text}</li>`)}</ul>`}
      ${app.can('ProposeChanges') || app.can('ApproveChanges') ? html`<form onSubmit=${addComment}>
        <${Field} label="Comment (also sent with approve or reject)"><textarea rows="2" value=${comment} onInput=${(event) => setComment(event.target.value)}></textarea><//>
        <div class="form-actions">
          ${app.can('ProposeChanges') ? html`<button type="submit" disabled=${!comment.trim()}>Comment</button>` : null}
          ${open && app.can('ApproveChanges') ? html`<${ActionButton} class="primary" action=${decide('approve')} disabled=${own}
            label=${own ? 'You cannot approve your own request' : undefined}>Approve and apply<//>
            <${ActionButton} class="danger" action=${decide('reject')} disabled=${own}>Reject<//>` : null}
          ${open && own && app.can('ProposeChanges') ? html`<${ActionButton} action=${decide('withdraw')}>Withdraw<//>` : null}
        </div>
        ${open && own && app.can('ApproveChanges') ? html`<p class="muted small">You proposed this: another approver decides.</p>` : null}
        ${open && !app.can('ApproveChanges') ? html`<p class="muted small">An approver (a workspace or organization admin) decides.</p>` : null}
      </form>` : null}
    </div>
  </section>`
}

/** The dry run: what the proposed (and current) connection does with recent events. */
function Impact ({ impact }) {
  if (!impact) return null
  if (impact.connections_using_it || impact.connections_reading_it) {
    const list = impact.connections_using_it || impact.connections_reading_it
    return html`<p><strong>Impact:</strong> ${list.length ? `connections affected: ${list.join(', ')}` : 'no connection uses it.'}</p>`
  }
  const rows = ['proposed', 'current'].filter((label) => impact[label]).map((label) => ({ label, ...impact[label] }))
  if (!rows.length) return null
  return html`<div><h3>Dry run on recent events</h3>
    <${Table} rows=${rows} rowKey=${(row) => row.label}
      columns=${[
        { key: 'label', label: '' },
        { key: 'events', label: 'Events', class: 'num', render: (row) => formatNumber(row.events) },
        { key: 'sent', label: 'Sent', class: 'num', render: (row) => formatNumber(row.sent) },
        { key: 'dropped_by_filter', label: 'Filtered', class: 'num', render: (row) => formatNumber(row.dropped_by_filter) },
        { key: 'dropped_by_transformation', label: 'Dropped by code', class: 'num', render: (row) => formatNumber(row.dropped_by_transformation) },
        { key: 'failed', label: 'Failed', class: 'num', render: (row) => formatNumber(row.failed) },
        { key: 'changed', label: 'Changed', class: 'num', render: (row) => formatNumber(row.changed) },
        { key: 'compile_error', label: 'Code', render: (row) => row.compile_error ? html`<${Badge} tone="bad">does not compile<//>` : row.error ? row.error : '—' }
      ]} />
    ${impact.proposed && impact.proposed.samples ? html`<details><summary>Samples</summary><${JsonView} value=${impact.proposed.samples} label="Dry-run samples" /></details>` : null}
  </div>`
}

function History ({ workspace, query }) {
  const app = useApp()
  const [filter, setFilter] = useState({ kind: query.kind || '', id: query.id || '' })
  const history = useAsync(() => workspaceApi(workspace).history(filter), [workspace, filter.kind, filter.id])
  const [outcome, setOutcome] = useState(null)
  const versions = history.data ? (history.data.versions || []).slice().reverse() : []
  const rollback = async (version) => {
    const result = await workspaceApi(workspace).rollback({ kind: version.kind, id: version.id, version: version.version })
    setOutcome(changeOutcome(result, workspace, `Rollback of ${version.kind} ${version.id} to version ${version.version}`))
    history.reload()
  }
  return html`<section>
    <${PageHeader} title="Version history" subtitle="Every API change of a source, destination or connection: who, when, which request." />
    <${Outcome} outcome=${outcome} />
    <div class="toolbar">
      <${Field} label="Kind"><select value=${filter.kind} onChange=${(event) => setFilter({ ...filter, kind: event.target.value })}><option value="">all</option><option>source</option><option>destination</option><option>connection</option></select><//>
      <${Field} label="Id"><input value=${filter.id} onInput=${(event) => setFilter({ ...filter, id: event.target.value })} /><//>
    </div>
    <${ErrorBox} error=${history.error} />
    ${!history.data ? html`<${Loading} />` : versions.length === 0 ? html`<${Empty}>No versions.<//>` : html`<${Table} rows=${versions} rowKey=${(row) => `${row.kind}:${row.id}:${row.version}`}
      columns=${[
        { key: 'object', label: 'Object', render: (row) => html`${row.kind} <code>${row.id}</code>` },
        { key: 'version', label: 'Version', class: 'num' },
        { key: 'reason', label: 'Change' },
        { key: 'changes', label: 'Paths', render: (row) => (row.changes || []).map(pathText).join(', ') },
        { key: 'by', label: 'By' },
        { key: 'at', label: 'When', render: (row) => html`<${Time} value=${row.at} />` },
        { key: 'change_request', label: 'Request', render: (row) => row.change_request ? html`<a href=${hrefFor(workspace, 'changes', row.change_request)}>${row.change_request}</a>` : '—' },
        { key: 'rollback', label: html`<span class="visually-hidden">Rollback</span>`, render: (row) => app.can('ProposeChanges') ? html`<${ActionButton} class="small" action=${() => rollback(row)} confirm=${`Make ${row.kind} ${row.id} what version ${row.version} left it?`}>Roll back to this<//>` : null }
      ]} />`}
  </section>`
}

/** A changed path as the API gives it (`{path, change}`), in words. */
function pathText (change) {
  if (typeof change === 'string') return change
  return `${change.path || '(the whole object)'} ${change.change || ''}`.trim()
}
