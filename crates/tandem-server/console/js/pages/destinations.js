// Destinations: the catalog of types, set-up forms generated from each type's settings schema,
// the destinations of the workspace with the health of the connections feeding them.
import { html, useState } from '../lib.js'
import { workspaceApi } from '../api.js'
import { useApp, useAsync, usePoll, PageHeader, ErrorBox, Loading, Table, Badge, Field, Outcome, changeOutcome, ActionButton, formatNumber, hrefFor, splitList } from '../ui.js'
import { SchemaForm, prune, problemsByPath } from '../schema-form.js'
import { connectionHealth } from './flow.js'

/** The closed list of data categories (tandem_config::DATA_CATEGORIES). */
export const DATA_CATEGORIES = ['identifiers', 'contact', 'demographic', 'behavioral', 'transactions', 'device', 'location', 'preferences', 'special']

export default function DestinationsPage ({ workspace, path }) {
  if (path[0] === 'new') return html`<${NewDestination} workspace=${workspace} type=${path[1]} />`
  if (path[0]) return html`<${DestinationView} key=${path[0]} workspace=${workspace} id=${path[0]} />`
  return html`<${DestinationList} workspace=${workspace} />`
}

function DestinationList ({ workspace }) {
  const app = useApp()
  const ws = workspaceApi(workspace)
  const types = useAsync(() => workspaceApi(workspace).destinationTypes(), [workspace])
  const destinations = usePoll(() => Promise.all([ws.destinations.list(), ws.connections.list()]), 5000, [workspace])
  const canManage = app.can('ManageDestinations')
  const [destinationList, connectionList] = destinations.data ? [destinations.data[0].destinations, destinations.data[1].connections] : [[], []]
  return html`<section>
    <${PageHeader} title="Destinations" subtitle="Where the workspace's events are delivered, and the health of each." />
    <${ErrorBox} error=${destinations.error} />
    ${!destinations.data ? html`<${Loading} />` : html`<${Table} rows=${destinationList} rowKey=${(row) => row.id}
      empty="No destination yet: set one up from the catalog below."
      columns=${[
        { key: 'name', label: 'Destination', render: (row) => html`<a href=${hrefFor(workspace, 'destinations', row.id)}><strong>${row.name}</strong></a><div class="muted small mono">${row.id}</div>` },
        { key: 'type', label: 'Type' },
        { key: 'owner', label: 'Owner' },
        { key: 'enabled', label: 'State', render: (row) => html`<${Badge}>${row.enabled ? 'enabled' : 'disabled'}<//>` },
        {
          key: 'connections',
          label: 'Connections',
          render: (row) => {
            const feeding = connectionList.filter((connection) => connection.destination === row.id)
            if (!feeding.length) return html`<span class="muted">none</span>`
            return feeding.map((connection) => {
              const health = connectionHealth(connection)
              return html`<div><a href=${hrefFor(workspace, 'connections', connection.id)}>${connection.id}</a> <${Badge} tone=${health.tone}>${health.label}<//> <span class="muted small">${formatNumber((connection.status || {}).delivered)} delivered</span></div>`
            })
          }
        },
        { key: 'managed_by', label: 'Managed by' }
      ]} />`}
    <h2>Catalog</h2>
    <${ErrorBox} error=${types.error} />
    ${!types.data ? html`<${Loading} />` : html`<div class="type-grid">
      ${types.data.destination_types.map((type) => html`<article class="type-card" aria-labelledby=${'type-' + type.name}>
        <h3 id=${'type-' + type.name}>${type.name}</h3>
        <p class="muted small">${type.description}</p>
        ${canManage ? html`<a class="button primary" href=${hrefFor(workspace, 'destinations', 'new', type.name)}>Set up ${type.name}</a>` : null}
      </article>`)}
    </div>`}
  </section>`
}

function NewDestination ({ workspace, type }) {
  const app = useApp()
  const types = useAsync(() => workspaceApi(workspace).destinationTypes(), [workspace])
  const [form, setForm] = useState({ id: '', name: '', owner: app.me.user ? app.me.user.email : '', purpose: '', data_categories: [], enabled: true })
  const [settings, setSettings] = useState({})
  const [error, setError] = useState(null)
  const [outcome, setOutcome] = useState(null)
  const [busy, setBusy] = useState(false)
  if (types.error) return html`<${ErrorBox} error=${types.error} />`
  if (!types.data) return html`<${Loading} />`
  const kind = types.data.destination_types.find((item) => item.name === type)
  if (!kind) return html`<${ErrorBox} error=${{ message: `There is no destination type ${type}.` }} />`
  const set = (key) => (event) => setForm({ ...form, [key]: event.target.value })
  const slug = form.id || form.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '')

  const submit = async (event) => {
    event.preventDefault()
    setBusy(true)
    setError(null)
    try {
      const body = { id: slug, name: form.name, type, owner: form.owner, enabled: form.enabled, settings: prune(settings) || {} }
      if (form.purpose) body.purpose = form.purpose
      if (form.data_categories.length) body.data_categories = form.data_categories
      const result = await workspaceApi(workspace).destinations.create(body)
      const done = changeOutcome(result, workspace, `Destination ${slug}`)
      setOutcome(done)
      if (!done.proposed) app.go(hrefFor(workspace, 'destinations', slug) + '?created=1')
    } catch (failure) { setError(failure) } finally { setBusy(false) }
  }
  const problems = problemsByPath(error)

  return html`<section>
    <${PageHeader} title=${`Set up a ${type} destination`} subtitle=${kind.description} />
    <${Outcome} outcome=${outcome} />
    <form class="card" onSubmit=${submit} aria-label=${`New ${type} destination`}>
      <div class="grid-2">
        <div>
          <${Field} label="Name" required><input required value=${form.name} onInput=${set('name')} /><//>
          <${Field} label="Id" hint=${`Unique in ${workspace}; from the name when empty: ${slug || '…'}`}><input value=${form.id} pattern="(?:[a-z0-9_]|-)+" onInput=${set('id')} /><//>
          <${Field} label="Owner" required hint="Who answers for the data sent there"><input required value=${form.owner} onInput=${set('owner')} /><//>
          <${Field} label="Purpose" hint="Why the data goes there (record of processing)"><input value=${form.purpose} onInput=${set('purpose')} /><//>
          <fieldset><legend>Data categories sent</legend>
            ${DATA_CATEGORIES.map((category) => html`<label class="field inline"><input type="checkbox" checked=${form.data_categories.includes(category)}
              onChange=${(event) => setForm({ ...form, data_categories: event.target.checked ? [...form.data_categories, category] : form.data_categories.filter((item) => item !== category) })} /> ${category}</label>`)}
          </fieldset>
          <label class="field inline"><input type="checkbox" checked=${form.enabled} onChange=${(event) => setForm({ ...form, enabled: event.target.checked })} /> Enabled</label>
        </div>
        <div>
          <h2>Settings</h2>
          <${SchemaForm} schema=${kind.settings_schema} value=${settings} onChange=${setSettings} problems=${problems} />
        </div>
      </div>
      <${ErrorBox} error=${error} title="The destination was not created" />
      <div class="form-actions"><button type="submit" class="primary" disabled=${busy}>Create destination</button>
        <a class="button" href=${hrefFor(workspace, 'destinations')}>Cancel</a></div>
    </form>
  </section>`
}

function DestinationView ({ workspace, id }) {
  const app = useApp()
  const ws = workspaceApi(workspace)
  const destination = useAsync(() => ws.destinations.get(id), [workspace, id])
  const connections = usePoll(() => ws.connections.list(), 5000, [workspace])
  const [outcome, setOutcome] = useState(null)
  const [editing, setEditing] = useState(false)
  if (destination.error) return html`<section><${PageHeader} title=${id} /><${ErrorBox} error=${destination.error} /></section>`
  if (!destination.data) return html`<${Loading} />`
  const data = destination.data.destination || destination.data
  const feeding = connections.data ? connections.data.connections.filter((connection) => connection.destination === id) : []
  const canManage = app.can('ManageDestinations') && data.managed_by === 'api'
  const remove = async () => {
    const result = await ws.destinations.remove(id)
    const done = changeOutcome(result, workspace, `Deleting ${id}`)
    setOutcome(done)
    if (!done.proposed) app.go(hrefFor(workspace, 'destinations'))
  }
  const toggle = async () => {
    const result = await ws.destinations.update(id, { enabled: !data.enabled })
    setOutcome(changeOutcome(result, workspace, `${data.enabled ? 'Disabling' : 'Enabling'} ${id}`))
    destination.reload()
  }
  return html`<section>
    <${PageHeader} title=${data.name} subtitle=${`${data.type} destination ${data.id}`}
      actions=${html`${app.can('ManageDestinations') ? html`<a class="button primary" href=${hrefFor(workspace, 'connections', 'new') + '?destination=' + encodeURIComponent(id)}>Connect sources</a>` : null}
        ${canManage ? html`<button type="button" onClick=${() => setEditing(!editing)}>${editing ? 'Close editor' : 'Edit'}</button>
          <${ActionButton} action=${toggle}>${data.enabled ? 'Disable' : 'Enable'}<//>
          <${ActionButton} class="danger" action=${remove} confirm=${`Delete destination ${id}? (Only possible when no connection uses it.)`}>Delete<//>` : null}`} />
    <${Outcome} outcome=${outcome} />
    <div class="grid-2">
      <div class="card"><h2>About</h2><dl class="kv">
        <dt>Owner</dt><dd>${data.owner}</dd>
        <dt>Purpose</dt><dd>${data.purpose || '—'}</dd>
        <dt>Data categories</dt><dd>${(data.data_categories || []).join(', ') || '—'}</dd>
        <dt>State</dt><dd><${Badge}>${data.enabled ? 'enabled' : 'disabled'}<//></dd>
        <dt>Settings set</dt><dd>${(data.settings_keys || []).join(', ') || '—'} <span class="muted small">(values are never shown)</span></dd>
        <dt>Managed by</dt><dd>${data.managed_by}${data.managed_by === 'config' ? ' — change it in the config file' : ''}</dd>
      </dl></div>
      <div class="card"><h2>Connections</h2>
        <${Table} rows=${feeding} rowKey=${(row) => row.id} empty="No connection sends here yet."
          columns=${[
            { key: 'id', label: 'Connection', render: (row) => html`<a href=${hrefFor(workspace, 'connections', row.id)}>${row.id}</a>` },
            { key: 'sources', label: 'Sources', render: (row) => (row.sources || []).join(', ') },
            { key: 'health', label: 'Health', render: (row) => { const health = connectionHealth(row); return html`<${Badge} tone=${health.tone}>${health.label}<//>` } },
            { key: 'delivered', label: 'Delivered', class: 'num', render: (row) => formatNumber((row.status || {}).delivered) },
            { key: 'dlq', label: 'Dead letters', class: 'num', render: (row) => formatNumber((row.status || {}).dlq_size) }
          ]} />
      </div>
    </div>
    ${editing ? html`<${EditDestination} workspace=${workspace} destination=${data} onDone=${(done) => { setOutcome(done); setEditing(false); destination.reload() }} />` : null}
  </section>`
}

function EditDestination ({ workspace, destination, onDone }) {
  const types = useAsync(() => workspaceApi(workspace).destinationTypes(), [workspace])
  const [form, setForm] = useState({ name: destination.name, owner: destination.owner, purpose: destination.purpose || '', data_categories: destination.data_categories || [] })
  const [settings, setSettings] = useState({})
  const [error, setError] = useState(null)
  if (!types.data) return html`<${Loading} />`
  const kind = types.data.destination_types.find((item) => item.name === destination.type)
  const submit = async (event) => {
    event.preventDefault()
    setError(null)
    try {
      const patch = { name: form.name, owner: form.owner, purpose: form.purpose || null, data_categories: form.data_categories }
      const changedSettings = prune(settings)
      if (changedSettings) patch.settings = changedSettings
      const result = await workspaceApi(workspace).destinations.update(destination.id, patch)
      onDone(changeOutcome(result, workspace, `Changing ${destination.id}`))
    } catch (failure) { setError(failure) }
  }
  return html`<form class="card" onSubmit=${submit} aria-label="Edit destination">
    <h2>Edit</h2>
    <div class="grid-2"><div>
      <${Field} label="Name" required><input required value=${form.name} onInput=${(event) => setForm({ ...form, name: event.target.value })} /><//>
      <${Field} label="Owner" required><input required value=${form.owner} onInput=${(event) => setForm({ ...form, owner: event.target.value })} /><//>
      <${Field} label="Purpose"><input value=${form.purpose} onInput=${(event) => setForm({ ...form, purpose: event.target.value })} /><//>
      <${Field} label="Data categories" hint=${'comma separated: ' + DATA_CATEGORIES.join(', ')}><input value=${form.data_categories.join(', ')} onInput=${(event) => setForm({ ...form, data_categories: splitList(event.target.value) })} /><//>
    </div><div>
      <h3>Settings to change</h3><p class="field-hint">Only the fields you fill are changed (a JSON merge patch); current values stay hidden.</p>
      ${kind ? html`<${SchemaForm} schema=${{ ...kind.settings_schema, required: [] }} value=${settings} onChange=${setSettings} problems=${problemsByPath(error)} />` : null}
    </div></div>
    <${ErrorBox} error=${error} title="Not changed" />
    <div class="form-actions"><button type="submit" class="primary">Save</button></div>
  </form>`
}
