// Sources: the catalog of where events come from (owner, purpose, activity), creating one (the
// write key is shown once), enabling and disabling (a change request where approval is needed),
// and the traffic with unknown or disabled keys (shadow IT).
import { html, useState } from '../lib.js'
import { api, workspaceApi } from '../api.js'
import { useApp, usePoll, useCreateForm, PageHeader, ErrorBox, Loading, Table, Badge, Time, Field, Tabs, Dialog, ActionButton, Outcome, changeOutcome, formatNumber, hrefFor } from '../ui.js'
import { Chart, COLORS } from '../charts.js'

export default function SourcesPage ({ workspace, query }) {
  const app = useApp()
  const ws = workspaceApi(workspace)
  const [tab, setTab] = useState(query.tab === 'unknown' ? 'unknown' : 'sources')
  const sources = usePoll(() => ws.sources.list(), 5000, [workspace])
  const [creating, setCreating] = useState(false)
  const [outcome, setOutcome] = useState(null)
  const canManage = app.can('ManageSources')
  const tabs = [{ id: 'sources', label: 'Sources' }]
  if (app.canOrganization('ReadCatalog')) tabs.push({ id: 'unknown', label: 'Unknown keys (shadow IT)' })

  const toggle = async (source) => {
    const result = source.enabled ? await ws.sources.disable(source.id) : await ws.sources.enable(source.id)
    setOutcome(changeOutcome(result, workspace, `${source.enabled ? 'Disabling' : 'Enabling'} ${source.id}`))
    sources.reload()
  }
  const list = sources.data ? sources.data.sources : []
  const highlighted = query.source

  return html`<section>
    <${PageHeader} title="Sources" subtitle="Every app, site and server that sends events, with who answers for it."
      actions=${canManage ? html`<button type="button" class="primary" onClick=${() => setCreating(true)}>New source</button>` : null} />
    <${Outcome} outcome=${outcome} />
    ${tabs.length > 1 ? html`<${Tabs} label="Sources" tabs=${tabs} current=${tab} onChange=${setTab} />` : null}
    ${tab === 'unknown' ? html`<${UnknownKeys} />` : html`
      <${ErrorBox} error=${sources.error} />
      ${!sources.data ? html`<${Loading} />` : html`
        ${list.length ? html`<div class="card chart-card"><${Chart} size="small" label="Events accepted and rejected per source"
          option=${{
            animation: false,
            tooltip: { trigger: 'axis' },
            legend: { data: ['accepted', 'rejected'], top: 0 },
            grid: { left: 60, right: 20, top: 36, bottom: 30 },
            xAxis: { type: 'category', data: list.map((source) => source.id) },
            yAxis: { type: 'value' },
            series: [
              { name: 'accepted', type: 'bar', stack: 'all', data: list.map((source) => source.events_accepted), itemStyle: { color: COLORS.good } },
              { name: 'rejected', type: 'bar', stack: 'all', data: list.map((source) => source.events_rejected), itemStyle: { color: COLORS.bad } }
            ]
          }} /></div>` : null}
        <${Table} rows=${list} rowKey=${(source) => source.id} rowClass=${(source) => source.id === highlighted ? 'selected' : ''}
          empty="No sources yet: create one and send events with its write key."
          columns=${[
            { key: 'name', label: 'Source', render: (source) => html`<strong>${source.name}</strong><div class="muted small mono">${source.id}</div>` },
            { key: 'owner', label: 'Owner' },
            { key: 'purpose', label: 'Purpose' },
            { key: 'enabled', label: 'State', render: (source) => html`<${Badge}>${source.enabled ? 'enabled' : 'disabled'}<//>` },
            { key: 'events_accepted', label: 'Accepted', class: 'num', render: (source) => formatNumber(source.events_accepted) },
            { key: 'events_rejected', label: 'Rejected', class: 'num', render: (source) => formatNumber(source.events_rejected) },
            { key: 'last_seen_at', label: 'Last seen', render: (source) => html`<${Time} value=${source.last_seen_at} />` },
            { key: 'managed_by', label: 'Managed by' },
            {
              key: 'actions',
              label: html`<span class="visually-hidden">Actions</span>`,
              render: (source) => html`<div class="actions">
                ${app.can('ReadLiveEvents') ? html`<a class="button small" href=${hrefFor(workspace, 'live') + '?source=' + encodeURIComponent(source.id)}>Debug</a>` : null}
                ${canManage && source.managed_by === 'api' ? html`<${ActionButton} class="small" action=${() => toggle(source)}
                  confirm=${source.enabled ? `Disable ${source.id}? Its write key will be refused (401).` : null}>${source.enabled ? 'Disable' : 'Enable'}<//>` : null}
              </div>`
            }
          ]} />
      `}
    `}
    <${NewSourceDialog} open=${creating} workspace=${workspace} onClose=${() => setCreating(false)} onCreated=${() => sources.reload()} />
  </section>`
}

function NewSourceDialog ({ open, workspace, onClose, onCreated }) {
  const app = useApp()
  const { form, set, created, error, close, submit } = useCreateForm({ name: '', owner: app.me.user ? app.me.user.email : '', purpose: '' },
    async (values) => (await workspaceApi(workspace).sources.create({ name: values.name, owner: values.owner, purpose: values.purpose || undefined })).data,
    { onCreated, onClose })
  return html`<${Dialog} open=${open} title="New source" onClose=${close}>
    ${created ? html`<div>
      <p class="notice notice-good" role="status">Source <code>${created.id || (created.source && created.source.id)}</code> created.</p>
      <${Field} label="Write key (shown once: copy it now)"><input readonly value=${created.write_key || ''} class="mono" onFocus=${(event) => event.target.select()} /><//>
      <p class="muted small">Send events with it as the HTTP Basic username: <code>curl -u KEY: ${location.origin}/v1/track …</code></p>
      <div class="form-actions"><button type="button" class="primary" onClick=${close}>Done</button></div>
    </div>` : html`<form onSubmit=${submit}>
      <${ErrorBox} error=${error} />
      <${Field} label="Name" required><input required value=${form.name} onInput=${set('name')} /><//>
      <${Field} label="Owner" required hint="Who answers for this source (a team address)"><input required value=${form.owner} onInput=${set('owner')} /><//>
      <${Field} label="Purpose" hint="Why it collects data (shown in the record of processing)"><input value=${form.purpose} onInput=${set('purpose')} /><//>
      <div class="form-actions"><button type="submit" class="primary">Create source</button><button type="button" onClick=${close}>Cancel</button></div>
    </form>`}
  <//>`
}

function UnknownKeys () {
  const traffic = usePoll(() => api.unknownKeys(), 5000, [])
  if (traffic.error) return html`<${ErrorBox} error=${traffic.error} />`
  if (!traffic.data) return html`<${Loading} />`
  return html`<div>
    <p class="muted">Requests refused because their write key is unknown or belongs to a disabled source: someone is sending data nobody catalogued.</p>
    <${Table} rows=${traffic.data.unknown_keys} rowKey=${(row) => row.key_fingerprint} empty="No refused keys: every sender is catalogued."
      columns=${[
        { key: 'key_fingerprint', label: 'Key (fingerprint)', render: (row) => html`<code>${row.key_fingerprint}</code>` },
        { key: 'reason', label: 'Why refused', render: (row) => html`<${Badge} tone="warn">${row.reason}<//>` },
        { key: 'source', label: 'Disabled source', render: (row) => row.source ? `${row.source.workspace_id || row.source.workspace || ''}/${row.source.id || row.source.source_id || ''}` : '—' },
        { key: 'attempts', label: 'Attempts', class: 'num', render: (row) => formatNumber(row.attempts) },
        { key: 'last_origin', label: 'Last origin' },
        { key: 'last_user_agent', label: 'Last user agent' },
        { key: 'last_ip', label: 'Last IP' },
        { key: 'last_seen_at', label: 'Last seen', render: (row) => html`<${Time} value=${row.last_seen_at} />` }
      ]} />
  </div>`
}

