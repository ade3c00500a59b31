// The quarantine: events a plan held aside, with their violations; release (re-checked against
// the plan as it is now, then stored like any event) or discard. Forcing a release past the plan
// needs ManageTrackingPlans.
import { html, useState } from '../lib.js'
import { workspaceApi } from '../api.js'
import { useApp, useAsync, usePoll, PageHeader, ErrorBox, Loading, Table, Badge, JsonView, Field, Dialog, ActionButton, Time, formatNumber } from '../ui.js'

export default function QuarantinePage ({ workspace }) {
  const app = useApp()
  const ws = workspaceApi(workspace)
  const [filter, setFilter] = useState({ event: '', source: '' })
  const entries = usePoll(() => ws.quarantine.list(Object.fromEntries(Object.entries(filter).filter(([, value]) => value))), 5000, [workspace, filter.event, filter.source])
  const [selected, setSelected] = useState({})
  const [inspecting, setInspecting] = useState(null)
  const [report, setReport] = useState(null)
  const canRelease = app.can('ReleaseQuarantine')
  const canForce = app.can('ManageTrackingPlans')
  const list = entries.data ? (entries.data.entries || entries.data.quarantine || []) : []
  const ids = Object.keys(selected).filter((key) => selected[key]).map(Number)

  const release = (force) => async () => {
    const answer = await ws.quarantine.release(ids.length ? { ids, force } : { ...selectionOf(filter), force })
    setReport(answer)
    setSelected({})
    entries.reload()
  }
  const discard = async () => {
    const answer = await ws.quarantine.discard(ids.length ? { ids } : selectionOf(filter))
    setReport(answer)
    setSelected({})
    entries.reload()
  }
  return html`<section>
    <${PageHeader} title="Quarantine" subtitle="Events a tracking plan held aside. Fix the plan or the sender, then release them: each is checked again first." />
    <div class="toolbar">
      <${Field} label="Event"><input value=${filter.event} onInput=${(event) => setFilter({ ...filter, event: event.target.value })} /><//>
      <${Field} label="Source"><input value=${filter.source} onInput=${(event) => setFilter({ ...filter, source: event.target.value })} /><//>
      ${canRelease ? html`<${ActionButton} class="primary" action=${release(false)} disabled=${list.length === 0}>${ids.length ? `Release selected (${ids.length})` : 'Release all shown'}<//>
        ${canForce ? html`<${ActionButton} action=${release(true)} disabled=${list.length === 0} confirm="Store them even if they still violate the plan (with their violations)?">Force release<//>` : null}
        <${ActionButton} class="danger" action=${discard} disabled=${list.length === 0} confirm="Discard these events for good?">${ids.length ? 'Discard selected' : 'Discard all shown'}<//>` : null}
    </div>
    ${report ? html`<div class="notice notice-info" role="status"><${JsonView} value=${report} label="Release report" /></div>` : null}
    <${ErrorBox} error=${entries.error} />
    ${!entries.data ? html`<${Loading} />` : html`<${Table} rows=${list} rowKey=${(entry) => entry.id} empty="Nothing is held."
      columns=${[
        ...(canRelease ? [{ key: 'select', label: html`<span class="visually-hidden">Select</span>`, render: (entry) => html`<input type="checkbox" aria-label=${`Select ${entry.id}`} checked=${!!selected[entry.id]} onChange=${(event) => setSelected({ ...selected, [entry.id]: event.target.checked })} />` }] : []),
        { key: 'id', label: 'Entry', render: (entry) => html`<code>${entry.id}</code>` },
        { key: 'event', label: 'Event' },
        { key: 'source', label: 'Source' },
        { key: 'plan', label: 'Plan' },
        { key: 'violations', label: 'Violations', class: 'num', render: (entry) => formatNumber(Array.isArray(entry.violations) ? entry.violations.length : entry.violations) },
        { key: 'received_at', label: 'Held since', render: (entry) => html`<${Time} value=${entry.received_at || entry.received_at_ms} />` },
        { key: 'inspect', label: html`<span class="visually-hidden">Inspect</span>`, render: (entry) => html`<button type="button" class="small" onClick=${() => setInspecting(entry.id)}>Inspect</button>` }
      ]} />`}
    <${EntryDialog} workspace=${workspace} entry=${inspecting} onClose=${() => setInspecting(null)} />
  </section>`
}

const selectionOf = (filter) => {
  const selection = {}
  if (filter.event) selection.event = filter.event
  if (filter.source) selection.source = filter.source
  if (!filter.event && !filter.source) selection.all = true
  return selection
}

function EntryDialog ({ workspace, entry, onClose }) {
  const detail = useAsync(() => entry !== null ? workspaceApi(workspace).quarantine.get(entry) : Promise.resolve(null), [entry])
  return html`<${Dialog} open=${entry !== null} title=${`Quarantined event ${entry}`} onClose=${onClose} wide>
    ${detail.error ? html`<${ErrorBox} error=${detail.error} />` : !detail.data ? html`<${Loading} />` : html`<div>
      <p>Status <${Badge}>${detail.data.status}<//>, plan <code>${detail.data.plan}</code> version ${detail.data.plan_version ?? detail.data.planVersion}</p>
      <${Table} rows=${detail.data.violations || []} columns=${[{ key: 'field', label: 'Field', render: (row) => html`<code>${row.field}</code>` }, { key: 'rule', label: 'Rule' }, { key: 'message', label: 'Message' }]} />
      <${JsonView} value=${detail.data.event} label="The held event" />
    </div>`}
  <//>`
}
