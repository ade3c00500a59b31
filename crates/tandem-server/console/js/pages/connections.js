// Connections: which events of which sources go to a destination, shaped how (mappings, a
// JavaScript transformation — both tried on recent events before saving), and how delivery goes:
// counters, a live chart, last errors, the dead-letter queue with inspect, replay and discard,
// and backfill.
import { html, useState, useEffect, useRef, useMemo } from '../lib.js'
import { workspaceApi } from '../api.js'
import { useApp, useAsync, usePoll, PageHeader, ErrorBox, Loading, Table, Badge, Field, Tabs, Dialog, JsonView, Stat, Outcome, changeOutcome, ActionButton, Time, Empty, formatNumber, hrefFor, splitList } from '../ui.js'
import { Chart, COLORS, pushSample } from '../charts.js'
import { connectionHealth } from './flow.js'

const EVENT_TYPES = ['track', 'identify', 'page', 'screen', 'group', 'alias']
const MAPPING_OPS = ['move', 'copy', 'remove', 'set']

export default function ConnectionsPage ({ workspace, path, query }) {
  if (path[0] === 'new') return html`<${NewConnection} workspace=${workspace} destination=${query.destination} />`
  if (path[0]) return html`<${ConnectionView} key=${path[0]} workspace=${workspace} id=${path[0]} query=${query} />`
  return html`<${ConnectionList} workspace=${workspace} />`
}

function ConnectionList ({ workspace }) {
  const app = useApp()
  const connections = usePoll(() => workspaceApi(workspace).connections.list(), 4000, [workspace])
  return html`<section>
    <${PageHeader} title="Connections" subtitle="Sources to destinations: filters, mappings, transformations, delivery health."
      actions=${app.can('ManageDestinations') ? html`<a class="button primary" href=${hrefFor(workspace, 'connections', 'new')}>New connection</a>` : null} />
    <${ErrorBox} error=${connections.error} />
    ${!connections.data ? html`<${Loading} />` : html`<${Table} rows=${connections.data.connections} rowKey=${(row) => row.id}
      empty="No connection yet."
      columns=${[
        { key: 'id', label: 'Connection', render: (row) => html`<a href=${hrefFor(workspace, 'connections', row.id)}>${row.id}</a>` },
        { key: 'sources', label: 'Sources', render: (row) => (row.sources || []).join(', ') },
        { key: 'destination', label: 'Destination', render: (row) => html`<a href=${hrefFor(workspace, 'destinations', row.destination)}>${row.destination}</a>` },
        { key: 'health', label: 'Health', render: (row) => { const health = connectionHealth(row); return html`<${Badge} tone=${health.tone}>${health.label}<//>` } },
        { key: 'delivered', label: 'Delivered', class: 'num', render: (row) => formatNumber((row.status || {}).delivered) },
        { key: 'dlq', label: 'Dead letters', class: 'num', render: (row) => formatNumber((row.status || {}).dlq_size) },
        { key: 'lag', label: 'Lag', class: 'num', render: (row) => formatNumber((row.status || {}).lag_records) }
      ]} />`}
  </section>`
}

/** The editable part of a connection (create and change share it). */
function connectionForm (connection) {
  return {
    id: connection.id || '',
    destination: connection.destination || '',
    sources: connection.sources || ['*'],
    event_types: connection.event_types || [],
    events: (connection.events || []).join('\n'),
    exclude_events: (connection.exclude_events || []).join('\n'),
    consent_categories: (connection.consent_categories || []).join(', '),
    enabled: connection.enabled !== false,
    mappings: (connection.mappings || []).map((mapping) => ({ op: mapping.op || 'move', from: mapping.from || '', to: mapping.to || '', value: mapping.value === undefined ? '' : JSON.stringify(mapping.value) })),
    transformation: connection.transformation || ''
  }
}

function mappingsOf (form) {
  return form.mappings.filter((mapping) => mapping.from || mapping.to).map((mapping) => {
    const out = { op: mapping.op }
    if (mapping.op !== 'set' && mapping.from) out.from = mapping.from
    if (mapping.op !== 'remove' && mapping.to) out.to = mapping.to
    if (mapping.op === 'set') {
      try { out.value = JSON.parse(mapping.value) } catch { out.value = mapping.value }
    }
    return out
  })
}

/** The JSON a form stands for (creation body, or a merge patch's content). */
function connectionBody (form) {
  return {
    sources: form.sources.length ? form.sources : ['*'],
    destination: form.destination,
    event_types: form.event_types,
    events: splitList(form.events),
    exclude_events: splitList(form.exclude_events),
    consent_categories: splitList(form.consent_categories),
    enabled: form.enabled,
    mappings: mappingsOf(form),
    transformation: form.transformation.trim() ? form.transformation : null
  }
}

function ConnectionEditor ({ workspace, form, setForm, fixedId, connectionId }) {
  const ws = workspaceApi(workspace)
  const options = useAsync(() => Promise.all([ws.sources.list(), ws.destinations.list()]), [workspace])
  if (options.error) return html`<${ErrorBox} error=${options.error} />`
  if (!options.data) return html`<${Loading} />`
  const [sources, destinations] = [options.data[0].sources, options.data[1].destinations]
  const set = (key, value) => setForm({ ...form, [key]: value })
  const allSources = form.sources.includes('*')
  return html`<div>
    <div class="grid-2"><div>
      ${fixedId ? null : html`<${Field} label="Id" required hint="Names the connection's log consumer and DLQ"><input required pattern="(?:[a-z0-9_]|-)+" value=${form.id} onInput=${(event) => set('id', event.target.value)} /><//>`}
      <${Field} label="Destination" required><select required value=${form.destination} onChange=${(event) => set('destination', event.target.value)}>
        <option value="">Choose a destination</option>
        ${destinations.map((destination) => html`<option value=${destination.id}>${destination.name} (${destination.type})</option>`)}
      </select><//>
      <fieldset><legend>Sources</legend>
        <label class="field inline"><input type="checkbox" checked=${allSources} onChange=${(event) => set('sources', event.target.checked ? ['*'] : [])} /> Every source of ${workspace}</label>
        ${allSources ? null : sources.map((source) => html`<label class="field inline"><input type="checkbox" checked=${form.sources.includes(source.id)}
          onChange=${(event) => set('sources', event.target.checked ? [...form.sources, source.id] : form.sources.filter((item) => item !== source.id))} /> ${source.name} <code>${source.id}</code></label>`)}
      </fieldset>
      <fieldset><legend>Call types</legend>
        <p class="field-hint">None ticked: all six.</p>
        ${EVENT_TYPES.map((type) => html`<label class="field inline"><input type="checkbox" checked=${form.event_types.includes(type)}
          onChange=${(event) => set('event_types', event.target.checked ? [...form.event_types, type] : form.event_types.filter((item) => item !== type))} /> ${type}</label>`)}
      </fieldset>
      <label class="field inline"><input type="checkbox" checked=${form.enabled} onChange=${(event) => set('enabled', event.target.checked)} /> Enabled</label>
    </div><div>
      <${Field} label="Only these track events" hint="One per line; empty: every track event"><textarea rows="3" value=${form.events} onInput=${(event) => set('events', event.target.value)}></textarea><//>
      <${Field} label="Never these track events" hint="One per line"><textarea rows="3" value=${form.exclude_events} onInput=${(event) => set('exclude_events', event.target.value)}></textarea><//>
      <${Field} label="Consent categories needed" hint="Comma separated (carried now; enforced by the privacy layer)"><input value=${form.consent_categories} onInput=${(event) => set('consent_categories', event.target.value)} /><//>
    </div></div>
    <${MappingEditor} workspace=${workspace} form=${form} setForm=${setForm} connectionId=${connectionId} />
  </div>`
}

function MappingEditor ({ workspace, form, setForm, connectionId }) {
  const rows = form.mappings
  const update = (index, key, value) => setForm({ ...form, mappings: rows.map((row, i) => i === index ? { ...row, [key]: value } : row) })
  return html`<fieldset><legend>Mappings and transformation</legend>
    <p class="field-hint">Mappings run in order (dotted paths such as <code>properties.total</code>), then the transformation.</p>
    ${rows.map((row, index) => html`<div class="mapping-row" role="group" aria-label=${`Mapping ${index + 1}`}>
      <label class="field"><span class="field-label">Operation</span><select value=${row.op} onChange=${(event) => update(index, 'op', event.target.value)}>${MAPPING_OPS.map((op) => html`<option value=${op}>${op}</option>`)}</select></label>
      <label class="field"><span class="field-label">From</span><input value=${row.from} disabled=${row.op === 'set'} placeholder="properties.total" onInput=${(event) => update(index, 'from', event.target.value)} /></label>
      <label class="field"><span class="field-label">To</span><input value=${row.to} disabled=${row.op === 'remove'} placeholder="properties.revenue" onInput=${(event) => update(index, 'to', event.target.value)} /></label>
      <label class="field"><span class="field-label">Value (JSON)</span><input value=${row.value} disabled=${row.op !== 'set'} placeholder='"EUR"' onInput=${(event) => update(index, 'value', event.target.value)} /></label>
      <button type="button" class="small" onClick=${() => setForm({ ...form, mappings: rows.filter((_, i) => i !== index) })} aria-label=${`Remove mapping ${index + 1}`}>Remove</button>
    </div>`)}
    <button type="button" class="small" onClick=${() => setForm({ ...form, mappings: [...rows, { op: 'move', from: '', to: '', value: '' }] })}>Add a mapping</button>
    <${Field} label="Transformation (JavaScript)" hint="function transform(event, context) { … return event } — return null to drop, an array to fan out. Runs sandboxed, without network or files.">
      <textarea class="code" spellcheck="false" value=${form.transformation} placeholder=${'function transform(event, context) {\n  return event\n}'}
        onKeyDown=${(event) => { if (event.key === 'Tab' && !event.shiftKey && !event.ctrlKey) { event.preventDefault(); const t = event.target; const s = t.selectionStart; t.setRangeText('  ', s, t.selectionEnd, 'end'); setForm({ ...form, transformation: t.value }) } }}
        onInput=${(event) => setForm({ ...form, transformation: event.target.value })}></textarea>
    <//>
    <p class="field-hint">Tab indents; press Escape, then Tab, to leave the editor.</p>
    <${TestPanel} workspace=${workspace} form=${form} connectionId=${connectionId} />
  </fieldset>`
}

/** "Test against recent events": the unsaved mappings and code on the workspace's last events. */
function TestPanel ({ workspace, form, connectionId }) {
  const [recent, setRecent] = useState(5)
  const [result, setResult] = useState(null)
  const [error, setError] = useState(null)
  const [busy, setBusy] = useState(false)
  const run = async () => {
    setBusy(true)
    setError(null)
    try {
      const body = { recent: Number(recent) || 5, mappings: mappingsOf(form) }
      if (form.transformation.trim()) body.code = form.transformation
      if (connectionId) body.connection = connectionId
      else if (form.sources.length === 1 && form.sources[0] !== '*') body.source = form.sources[0]
      setResult(await workspaceApi(workspace).testTransformation(body))
    } catch (failure) { setError(failure); setResult(null) } finally { setBusy(false) }
  }
  return html`<div class="card">
    <div class="toolbar">
      <${Field} label="Recent events"><input type="number" min="1" max="100" value=${recent} onInput=${(event) => setRecent(event.target.value)} /><//>
      <button type="button" onClick=${run} disabled=${busy}>${busy ? 'Testing…' : 'Test against recent events'}</button>
      <span class="muted small">Nothing is sent anywhere.</span>
    </div>
    <${ErrorBox} error=${error} title="The test could not run" />
    ${result ? html`<div role="region" aria-label="Test results">
      ${result.compile_error ? html`<p class="notice notice-bad">The code does not compile: ${result.compile_error.message || JSON.stringify(result.compile_error)}</p>` : null}
      <p>${formatNumber(result.summary.events)} events → ${formatNumber(result.summary.outputs)} outputs, ${formatNumber(result.summary.dropped)} dropped, ${formatNumber(result.summary.failed)} failed.</p>
      ${result.results.length === 0 ? html`<${Empty}>No recent event matched: send some, or widen the filters.<//>` : result.results.map((item, index) => html`<details open=${index === 0}>
        <summary>Event ${index + 1}: ${item.input.event || item.input.type} ${item.error ? html`<${Badge} tone="bad">failed<//>` : item.output && item.output.length === 0 ? html`<${Badge}>dropped<//>` : html`<${Badge} tone="good">ok<//>`}</summary>
        ${item.error ? html`<p class="notice notice-bad">${item.error.kind}: ${item.error.message}</p>${item.error.stack ? html`<pre>${item.error.stack}</pre>` : null}` : null}
        <div class="diff"><div><h4>After the mappings (the code's input)</h4><${JsonView} value=${item.input} label="Input event" /></div><div><h4>Out</h4><${JsonView} value=${item.output} label="Output events" /></div></div>
      </details>`)}
    </div>` : null}
  </div>`
}

function NewConnection ({ workspace, destination }) {
  const app = useApp()
  const [form, setForm] = useState(() => connectionForm({ destination: destination || '', id: destination ? `to-${destination}` : '' }))
  const [error, setError] = useState(null)
  const [outcome, setOutcome] = useState(null)
  const submit = async (event) => {
    event.preventDefault()
    setError(null)
    try {
      const body = { id: form.id, ...connectionBody(form) }
      if (!body.transformation) delete body.transformation
      const result = await workspaceApi(workspace).connections.create(body)
      const done = changeOutcome(result, workspace, `Connection ${form.id}`)
      setOutcome(done)
      if (!done.proposed) app.go(hrefFor(workspace, 'connections', form.id))
    } catch (failure) { setError(failure) }
  }
  return html`<section>
    <${PageHeader} title="New connection" subtitle="A new connection starts at the log's end: it sends what arrives from now on (a backfill sends history)." />
    <${Outcome} outcome=${outcome} />
    <form class="card" onSubmit=${submit} aria-label="New connection">
      <${ConnectionEditor} workspace=${workspace} form=${form} setForm=${setForm} />
      <${ErrorBox} error=${error} title="The connection was not created" />
      <div class="form-actions"><button type="submit" class="primary">Create connection</button><a class="button" href=${hrefFor(workspace, 'connections')}>Cancel</a></div>
    </form>
  </section>`
}

function ConnectionView ({ workspace, id, query }) {
  const app = useApp()
  const ws = workspaceApi(workspace)
  const [tab, setTab] = useState(query.tab || 'health')
  const connection = usePoll(() => ws.connections.get(id), 3000, [workspace, id])
  const [samples, setSamples] = useState([])
  const previous = useRef(null)

  useEffect(() => {
    if (!connection.data) return
    const status = connection.data.status || {}
    const now = Date.now()
    const last = previous.current
    previous.current = { at: now, delivered: status.delivered || 0, failed: status.failed || 0, retried: status.retried || 0 }
    if (!last) return
    const seconds = Math.max(0.001, (now - last.at) / 1000)
    setSamples((list) => pushSample(list, {
      at: now,
      delivered: Math.max(0, ((status.delivered || 0) - last.delivered) / seconds),
      failed: Math.max(0, ((status.failed || 0) - last.failed) / seconds),
      retried: Math.max(0, ((status.retried || 0) - last.retried) / seconds)
    }))
  }, [connection.data])

  if (connection.error && !connection.data) return html`<section><${PageHeader} title=${id} /><${ErrorBox} error=${connection.error} /></section>`
  if (!connection.data) return html`<${Loading} />`
  const data = connection.data
  const health = connectionHealth(data)
  const tabs = [{ id: 'health', label: 'Delivery health' }, { id: 'settings', label: 'Filters, mappings, transformation' }]
  if (app.can('ReadDeadLetters')) tabs.push({ id: 'dlq', label: `Dead letters (${formatNumber((data.status || {}).dlq_size)})` })
  return html`<section>
    <${PageHeader} title=${`Connection ${id}`} subtitle=${`${(data.sources || []).join(', ')} → ${data.destination}`}
      actions=${html`<${Badge} tone=${health.tone}>${health.label}<//>`} />
    <${Tabs} label="Connection" tabs=${tabs} current=${tab} onChange=${setTab} />
    ${tab === 'health' ? html`<${Health} workspace=${workspace} connection=${data} samples=${samples} />` : null}
    ${tab === 'settings' ? html`<${ConnectionSettings} workspace=${workspace} connection=${data} onSaved=${() => connection.reload()} />` : null}
    ${tab === 'dlq' ? html`<${DeadLetters} workspace=${workspace} connection=${data} />` : null}
  </section>`
}

function Health ({ workspace, connection, samples }) {
  const app = useApp()
  const status = connection.status || {}
  const chart = useMemo(() => ({
    animation: false,
    tooltip: { trigger: 'axis' },
    legend: { data: ['delivered', 'retried', 'dead-lettered'], top: 0 },
    grid: { left: 50, right: 20, top: 40, bottom: 30 },
    xAxis: { type: 'category', data: samples.map((sample) => new Date(sample.at).toISOString().slice(11, 19)) },
    yAxis: { type: 'value', name: 'events/s' },
    series: [
      { name: 'delivered', type: 'line', showSymbol: false, areaStyle: { opacity: 0.15 }, data: samples.map((sample) => +sample.delivered.toFixed(2)), itemStyle: { color: COLORS.good } },
      { name: 'retried', type: 'line', showSymbol: false, data: samples.map((sample) => +sample.retried.toFixed(2)), itemStyle: { color: COLORS.warn } },
      { name: 'dead-lettered', type: 'line', showSymbol: false, data: samples.map((sample) => +sample.failed.toFixed(2)), itemStyle: { color: COLORS.bad } }
    ]
  }), [samples])
  return html`<div>
    ${status.error ? html`<p class="notice notice-bad" role="alert">Stopped: ${status.error}</p>` : null}
    <div class="stats">
      <${Stat} label="delivered" value=${formatNumber(status.delivered)} tone="good" />
      <${Stat} label="retrying now" value=${formatNumber(status.retrying)} tone=${status.retrying ? 'warn' : null} />
      <${Stat} label="dead letters" value=${formatNumber(status.dlq_size)} tone=${status.dlq_size ? 'bad' : null} />
      <${Stat} label="filtered" value=${formatNumber(status.filtered)} />
      <${Stat} label="dropped by transformation" value=${formatNumber(status.dropped_by_transform)} />
      <${Stat} label="lag (records)" value=${formatNumber(status.lag_records)} />
      <${Stat} label="latency p50 / p99" value=${`${formatNumber(status.latency_p50_ms)} / ${formatNumber(status.latency_p99_ms)} ms`} />
      <${Stat} label="circuit" value=${status.circuit || '—'} tone=${status.circuit === 'open' ? 'bad' : null} />
    </div>
    <div class="card chart-card"><${Chart} option=${chart} label="Delivery rate of this connection while this page is open" /></div>
    <h2>Last errors</h2>
    <${Table} rows=${status.last_errors || []} empty="No errors."
      columns=${[{ key: 'time', label: 'When', render: (row) => html`<${Time} value=${row.time} />` }, { key: 'kind', label: 'Kind', render: (row) => html`<${Badge} tone=${row.kind === 'retry' ? 'warn' : 'bad'}>${row.kind}<//>` }, { key: 'message', label: 'Message' }]} />
    ${app.can('ManageDeliveries') ? html`<${Backfill} workspace=${workspace} connection=${connection} />` : null}
  </div>`
}

function Backfill ({ workspace, connection }) {
  const ws = workspaceApi(workspace)
  const progress = usePoll(() => ws.connections.backfillProgress(connection.id).catch((error) => error.status === 404 ? null : Promise.reject(error)), 3000, [connection.id])
  const day = new Date(Date.now() - 86400000).toISOString().slice(0, 16)
  const [range, setRange] = useState({ from: day, to: new Date().toISOString().slice(0, 16) })
  const start = async () => {
    await ws.connections.backfill(connection.id, { from: new Date(range.from + 'Z').toISOString(), to: new Date(range.to + 'Z').toISOString() })
    progress.reload()
  }
  const job = progress.data
  return html`<div class="card"><h2>Backfill</h2>
    <p class="muted">Send the events received in a time range (UTC) through this connection again.</p>
    <div class="toolbar">
      <${Field} label="From (UTC)"><input type="datetime-local" value=${range.from} onInput=${(event) => setRange({ ...range, from: event.target.value })} /><//>
      <${Field} label="To (UTC)"><input type="datetime-local" value=${range.to} onInput=${(event) => setRange({ ...range, to: event.target.value })} /><//>
      <${ActionButton} action=${start}>Start backfill<//>
    </div>
    ${job ? html`<p>Last backfill <code>${job.id}</code>: <${Badge}>${job.state}<//> ${formatNumber(job.sent)} sent, ${formatNumber(job.failed)} failed, ${formatNumber(job.scanned)} of ${formatNumber(job.total)} scanned.</p>
      <progress max=${job.total || 1} value=${job.scanned} aria-label="Backfill progress"></progress>` : null}
  </div>`
}

function ConnectionSettings ({ workspace, connection, onSaved }) {
  const app = useApp()
  const [form, setForm] = useState(() => connectionForm(connection))
  const [error, setError] = useState(null)
  const [outcome, setOutcome] = useState(null)
  const editable = app.can('ManageDestinations') && connection.managed_by === 'api'
  const submit = async (event) => {
    event.preventDefault()
    setError(null)
    try {
      const result = await workspaceApi(workspace).connections.update(connection.id, connectionBody(form))
      setOutcome(changeOutcome(result, workspace, `Changing ${connection.id}`))
      onSaved()
    } catch (failure) { setError(failure) }
  }
  const remove = async () => {
    const result = await workspaceApi(workspace).connections.remove(connection.id)
    const done = changeOutcome(result, workspace, `Deleting ${connection.id}`)
    setOutcome(done)
    if (!done.proposed) app.go(hrefFor(workspace, 'connections'))
  }
  return html`<form class="card" onSubmit=${submit} aria-label="Connection settings">
    ${connection.managed_by === 'config' ? html`<p class="notice notice-info">This connection is declared in the config file: change it there. You can still test mappings and code here.</p>` : null}
    <${Outcome} outcome=${outcome} />
    <${ConnectionEditor} workspace=${workspace} form=${form} setForm=${setForm} fixedId connectionId=${connection.id} />
    <${ErrorBox} error=${error} title="Not saved" />
    ${editable ? html`<div class="form-actions"><button type="submit" class="primary">Save changes</button>
      <${ActionButton} class="danger" action=${remove} confirm=${`Delete connection ${connection.id}? Its dead letters go with it.`}>Delete connection<//></div>` : null}
  </form>`
}

function DeadLetters ({ workspace, connection }) {
  const app = useApp()
  const ws = workspaceApi(workspace)
  const [filter, setFilter] = useState({ error_contains: '', event: '' })
  const entries = usePoll(() => ws.connections.dlq(connection.id, { ...filter, limit: 200 }), 5000, [connection.id, filter.error_contains, filter.event])
  const [selected, setSelected] = useState({})
  const [inspecting, setInspecting] = useState(null)
  const [job, setJob] = useState(null)
  const canManage = app.can('ManageDeliveries')
  const list = entries.data ? entries.data.entries : []
  const ids = Object.keys(selected).filter((key) => selected[key])

  useEffect(() => {
    if (!job || job.state !== 'running') return
    const timer = setInterval(async () => {
      try { setJob(await ws.connections.replayProgress(connection.id, job.id)); entries.reload() } catch (error) { app.notifyError(error); setJob(null) }
    }, 1000)
    return () => clearInterval(timer)
  }, [job && job.id, job && job.state])

  const replay = async (all) => {
    const answer = await ws.connections.replay(connection.id, all ? { all: true, filter: prunedFilter(filter) } : { ids })
    setJob(answer.job || answer)
    setSelected({})
  }
  const discard = async () => {
    await ws.connections.discard(connection.id, { ids })
    setSelected({})
    entries.reload()
    app.notify(`${ids.length} dead letters discarded.`)
  }
  return html`<div>
    <p class="muted">Events the destination refused for good (or whose transformation failed). Fix the cause — a mapping, the code, the destination — then replay them through the connection as it is now.</p>
    <div class="toolbar">
      <${Field} label="Error contains"><input value=${filter.error_contains} onInput=${(event) => setFilter({ ...filter, error_contains: event.target.value })} /><//>
      <${Field} label="Track event"><input value=${filter.event} onInput=${(event) => setFilter({ ...filter, event: event.target.value })} /><//>
      ${canManage ? html`<${ActionButton} action=${() => replay(false)} disabled=${ids.length === 0}>Replay selected (${ids.length})<//>
        <${ActionButton} action=${() => replay(true)} disabled=${list.length === 0} confirm="Replay every dead letter matching the filter?">Replay all matching<//>
        <${ActionButton} class="danger" action=${discard} disabled=${ids.length === 0} confirm=${`Discard ${ids.length} dead letters? They are gone for good.`}>Discard selected<//>` : null}
    </div>
    ${job ? html`<p class="notice notice-info" role="status">Replay <code>${job.id}</code>: <${Badge}>${job.state}<//> ${formatNumber(job.sent)} delivered, ${formatNumber(job.failed)} still failing, of ${formatNumber(job.total)}.</p>` : null}
    <${ErrorBox} error=${entries.error} />
    ${!entries.data ? html`<${Loading} />` : html`<${Table} rows=${list} rowKey=${(entry) => entry.id} empty="No dead letters."
      columns=${[
        ...(canManage ? [{ key: 'select', label: html`<span class="visually-hidden">Select</span>`, render: (entry) => html`<input type="checkbox" aria-label=${`Select ${entry.id}`} checked=${!!selected[entry.id]} onChange=${(event) => setSelected({ ...selected, [entry.id]: event.target.checked })} />` }] : []),
        { key: 'id', label: 'Entry', render: (entry) => html`<code>${entry.id}</code>` },
        { key: 'event', label: 'Event', render: (entry) => entry.event_name || entry.event_type },
        { key: 'error', label: 'Error' },
        { key: 'attempts', label: 'Attempts', class: 'num' },
        { key: 'last_failure_at', label: 'Last failure', render: (entry) => html`<${Time} value=${entry.last_failure_at} />` },
        { key: 'inspect', label: html`<span class="visually-hidden">Inspect</span>`, render: (entry) => html`<button type="button" class="small" onClick=${() => setInspecting(entry.id)}>Inspect</button>` }
      ]} />`}
    <${DeadLetterDialog} workspace=${workspace} connection=${connection.id} entry=${inspecting} onClose=${() => setInspecting(null)} />
  </div>`
}

const prunedFilter = (filter) => Object.fromEntries(Object.entries(filter).filter(([, value]) => value))

function DeadLetterDialog ({ workspace, connection, entry, onClose }) {
  const detail = useAsync(() => entry ? workspaceApi(workspace).connections.dlqEntry(connection, entry) : Promise.resolve(null), [entry])
  return html`<${Dialog} open=${!!entry} title=${`Dead letter ${entry}`} onClose=${onClose} wide>
    ${detail.error ? html`<${ErrorBox} error=${detail.error} />` : !detail.data ? html`<${Loading} />` : html`<div>
      <p class="notice notice-bad">${detail.data.error}</p>
      <dl class="kv"><dt>Attempts</dt><dd>${detail.data.attempts}</dd><dt>First failure</dt><dd>${detail.data.first_failure_at}</dd><dt>Last failure</dt><dd>${detail.data.last_failure_at}</dd><dt>Source</dt><dd>${detail.data.source_id}</dd><dt>messageId</dt><dd class="mono">${detail.data.message_id}</dd></dl>
      <h3>The original event (before mappings and transformation)</h3>
      <${JsonView} value=${detail.data.event} label="Original event" />
    </div>`}
  <//>`
}
