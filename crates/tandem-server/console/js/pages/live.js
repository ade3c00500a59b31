// The live debugger: every event as it arrives (the API's Server-Sent Events), per source,
// pausable; its validation (tracking plan verdict, or why it was rejected); and, for a stored
// event, where it went or why not (GET …/events/{offset}: per connection).
import { html, useState, useEffect, useRef, useMemo } from '../lib.js'
import { workspaceApi } from '../api.js'
import { useApp, useAsync, PageHeader, ErrorBox, Loading, Table, Badge, JsonView, Field, Empty, formatNumber } from '../ui.js'
import { Chart, COLORS } from '../charts.js'

const KEEP_EVENTS = 500
const CHART_SECONDS = 60
const OUTCOMES = ['accepted', 'flagged', 'quarantined', 'blocked', 'rejected']
const OUTCOME_COLORS = { accepted: COLORS.good, flagged: COLORS.warn, quarantined: '#b26b00', blocked: COLORS.bad, rejected: '#7a1d14' }

let sequence = 0

/** One SSE message as the debugger shows it. */
function toItem (kind, data) {
  const event = data.event || {}
  const validation = data.validation || null
  let outcome = kind
  if (kind === 'accepted' && validation && validation.outcome === 'flagged') outcome = 'flagged'
  return {
    key: ++sequence,
    kind,
    outcome,
    source: data.source_id,
    receivedAt: data.received_at_ms,
    offset: data.offset,
    type: event.type || (data.rejection ? 'invalid' : '—'),
    name: event.event || event.name || (event.type === 'identify' ? 'identify' : ''),
    user: event.userId || event.anonymousId || '',
    messageId: event.messageId || (data.rejection && data.rejection.messageId) || '',
    event: data.event,
    validation,
    rejection: data.rejection || null
  }
}

export default function LivePage ({ workspace, query }) {
  const app = useApp()
  const ws = workspaceApi(workspace)
  const sources = useAsync(() => ws.sources.list(), [workspace])
  const [source, setSource] = useState(query.source || '')
  const [paused, setPaused] = useState(false)
  const [events, setEvents] = useState([])
  const [pending, setPending] = useState([])
  const [selected, setSelected] = useState(null)
  const [filter, setFilter] = useState('')
  const [connection, setConnection] = useState('connecting')
  const [lagged, setLagged] = useState(0)
  const [buckets, setBuckets] = useState([])
  const pausedRef = useRef(paused)
  pausedRef.current = paused

  useEffect(() => {
    setEvents([])
    setPending([])
    setSelected(null)
    setConnection('connecting')
    const stream = ws.live(source || undefined)
    const receive = (kind) => (message) => {
      let data
      try { data = JSON.parse(message.data) } catch { return }
      const item = toItem(kind, data)
      countInBucket(setBuckets, item.outcome)
      if (pausedRef.current) setPending((list) => [item, ...list].slice(0, KEEP_EVENTS))
      else setEvents((list) => [item, ...list].slice(0, KEEP_EVENTS))
    }
    for (const kind of ['accepted', 'rejected', 'quarantined', 'blocked']) stream.addEventListener(kind, receive(kind))
    stream.addEventListener('lagged', (message) => {
      try { setLagged((count) => count + JSON.parse(message.data).missed) } catch {}
    })
    stream.onopen = () => setConnection('open')
    stream.onerror = () => setConnection(stream.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting')
    return () => stream.close()
  }, [workspace, source])

  // The chart's time axis moves on even when nothing arrives.
  useEffect(() => {
    const timer = setInterval(() => countInBucket(setBuckets, null), 1000)
    return () => clearInterval(timer)
  }, [])

  const resume = () => {
    setEvents((list) => [...pending, ...list].slice(0, KEEP_EVENTS))
    setPending([])
    setPaused(false)
  }
  const shown = useMemo(() => {
    const needle = filter.trim().toLowerCase()
    if (!needle) return events
    return events.filter((item) => [item.name, item.user, item.messageId, item.type, item.source].some((value) => String(value || '').toLowerCase().includes(needle)))
  }, [events, filter])
  const totals = useMemo(() => {
    const counts = Object.fromEntries(OUTCOMES.map((outcome) => [outcome, 0]))
    for (const item of events) counts[item.outcome] = (counts[item.outcome] || 0) + 1
    return counts
  }, [events])

  const chart = useMemo(() => ({
    animation: false,
    tooltip: { trigger: 'axis' },
    legend: { data: OUTCOMES, top: 0 },
    grid: { left: 40, right: 16, top: 30, bottom: 24 },
    xAxis: { type: 'category', data: buckets.map((bucket) => new Date(bucket.second * 1000).toISOString().slice(11, 19)), axisLabel: { interval: 9 } },
    yAxis: { type: 'value', minInterval: 1, name: 'events/s' },
    series: OUTCOMES.map((outcome) => ({ name: outcome, type: 'bar', stack: 'events', data: buckets.map((bucket) => bucket[outcome] || 0), itemStyle: { color: OUTCOME_COLORS[outcome] } }))
  }), [buckets])

  const list = sources.data ? sources.data.sources : []
  return html`<section>
    <${PageHeader} title="Live debugger" subtitle="Events as they arrive, what the tracking plan said, and where each one went."
      actions=${html`<span class=${paused ? 'pill-paused' : 'pill-live'} role="status">${paused ? `paused — ${pending.length} new` : connection === 'open' ? 'live' : connection}</span>`} />
    <div class="live-controls">
      <${Field} label="Source">
        <select value=${source} onChange=${(event) => setSource(event.target.value)}>
          <option value="">All sources of ${workspace}</option>
          ${list.map((item) => html`<option value=${item.id}>${item.name} (${item.id})</option>`)}
        </select>
      <//>
      <${Field} label="Filter"><input type="search" placeholder="event, user, messageId" value=${filter} onInput=${(event) => setFilter(event.target.value)} /><//>
      ${paused
        ? html`<button type="button" class="primary" onClick=${resume}>Resume${pending.length ? ` (${pending.length} new)` : ''}</button>`
        : html`<button type="button" onClick=${() => setPaused(true)}>Pause</button>`}
      <button type="button" onClick=${() => { setEvents([]); setPending([]); setSelected(null) }}>Clear</button>
      ${lagged ? html`<span class="badge badge-warn" title="the stream dropped events this page could not keep up with">${formatNumber(lagged)} missed</span>` : null}
    </div>
    <div class="stats">
      ${OUTCOMES.map((outcome) => html`<div class="stat"><div class="stat-value">${formatNumber(totals[outcome])}</div><div class="stat-label">${outcome}</div></div>`)}
    </div>
    <div class="card chart-card"><${Chart} size="small" option=${chart} label=${`Events per second for the last ${CHART_SECONDS} seconds, by outcome`} /></div>
    <div class="split">
      <div>
        <h2>Events <span class="muted small">(newest first, the last ${KEEP_EVENTS})</span></h2>
        ${shown.length === 0
          ? html`<${Empty}>${connection === 'open' ? 'Waiting for events… send one with a write key of this workspace.' : 'Connecting to the live stream…'}<//>`
          : html`<div class="live-list"><${Table} rows=${shown} rowKey=${(item) => item.key} rowClass=${(item) => selected && selected.key === item.key ? 'selected' : ''}
            columns=${[
              { key: 'time', label: 'Time', render: (item) => new Date(item.receivedAt).toISOString().slice(11, 23) },
              { key: 'source', label: 'Source' },
              { key: 'type', label: 'Type' },
              { key: 'name', label: 'Event' },
              { key: 'user', label: 'User' },
              { key: 'outcome', label: 'Result', render: (item) => html`<${Badge}>${item.outcome}<//>` },
              { key: 'inspect', label: html`<span class="visually-hidden">Inspect</span>`, render: (item) => html`<button type="button" class="small" aria-pressed=${selected && selected.key === item.key ? 'true' : 'false'} onClick=${() => setSelected(item)}>Inspect</button>` }
            ]} /></div>`}
      </div>
      <div>${selected ? html`<${EventDetail} key=${selected.key} item=${selected} workspace=${workspace} canSeeRouting=${app.can('ReadLiveEvents')} />` : html`<${Empty}>Choose an event to see its validation and where it went.<//>`}</div>
    </div>
  </section>`
}

function countInBucket (setBuckets, outcome) {
  const second = Math.floor(Date.now() / 1000)
  setBuckets((list) => {
    const filled = []
    const first = second - CHART_SECONDS + 1
    const bySecond = new Map(list.map((bucket) => [bucket.second, bucket]))
    for (let s = first; s <= second; s++) filled.push(bySecond.get(s) || { second: s })
    if (outcome) {
      const last = { ...filled[filled.length - 1] }
      last[outcome] = (last[outcome] || 0) + 1
      filled[filled.length - 1] = last
    }
    return filled
  })
}

function EventDetail ({ item, workspace }) {
  const routing = useAsync(() => item.offset !== undefined && item.offset !== null ? workspaceApi(workspace).event(item.offset) : Promise.resolve(null), [item.key])
  const validation = item.validation
  return html`<div class="card">
    <h2>${item.name || item.type} <${Badge}>${item.outcome}<//></h2>
    <dl class="kv">
      <dt>Source</dt><dd>${item.source}</dd>
      <dt>Received</dt><dd>${new Date(item.receivedAt).toISOString()}</dd>
      ${item.messageId ? html`<dt>messageId</dt><dd class="mono">${item.messageId}</dd>` : null}
      ${item.offset !== undefined && item.offset !== null ? html`<dt>Log offset</dt><dd class="mono">${item.offset}</dd>` : null}
    </dl>
    <h3>Validation</h3>
    ${item.rejection ? html`<p class="notice notice-bad">Rejected: <code>${item.rejection.code}</code> ${item.rejection.message}</p>`
      : validation ? html`<div>
        <p>Tracking plan <code>${validation.plan}</code> (version ${validation.version}, mode <code>${validation.mode}</code>): <${Badge}>${validation.outcome}<//></p>
        ${(validation.violations || []).length ? html`<${Table} rows=${validation.violations} columns=${[
          { key: 'field', label: 'Field', render: (row) => html`<code>${row.field}</code>` },
          { key: 'rule', label: 'Rule' },
          { key: 'message', label: 'Message' }
        ]} />` : html`<p class="muted">No violations.</p>`}
      </div>`
      : html`<p class="muted">No tracking plan checked this event: ${item.kind === 'accepted' ? 'it was stored as sent.' : ''}</p>`}
    ${item.kind === 'quarantined' ? html`<p class="notice notice-warn">Held in the quarantine: it reaches no destination until released. <a href=${`#/w/${encodeURIComponent(workspace)}/quarantine`}>Open the quarantine</a></p>` : null}
    ${item.kind === 'blocked' ? html`<p class="notice notice-bad">Blocked by the plan: not stored, sent nowhere (the client still got 200).</p>` : null}
    ${item.offset !== undefined && item.offset !== null ? html`<h3>Where it went</h3>
      ${routing.error ? html`<${ErrorBox} error=${routing.error} />` : !routing.data ? html`<${Loading} />` : html`<${Routing} routing=${routing.data} reload=${routing.reload} />`}` : null}
    ${item.event ? html`<h3>Event</h3><${JsonView} value=${item.event} label="The event as stored" />` : null}
  </div>`
}

function Routing ({ routing, reload }) {
  return html`<div>
    <${Table} rows=${routing.deliveries} rowKey=${(row) => row.connection} empty="No connection in this workspace: the event is stored, and sent nowhere."
      columns=${[
        { key: 'connection', label: 'Connection', render: (row) => html`<a href=${`#/w/${encodeURIComponent(routing.workspace)}/connections/${encodeURIComponent(row.connection)}`}>${row.connection}</a>` },
        { key: 'destination', label: 'Destination', render: (row) => row.destination_name || row.destination },
        { key: 'status', label: 'Status', render: (row) => html`<${Badge}>${row.status}<//>` },
        { key: 'reason', label: 'Why' },
        { key: 'consent_categories', label: 'Consent needed', render: (row) => (row.consent_categories || []).join(', ') || '—' }
      ]} />
    <p class="muted small">${routing.consent} <button type="button" class="small" onClick=${reload}>Refresh</button></p>
  </div>`
}
