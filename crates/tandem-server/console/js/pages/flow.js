// The flow map: sources → workspace → destinations, each edge with its volume, live rate and
// health; owners on hover; traffic with unknown or disabled write keys as its own node (shadow
// IT). Polled every few seconds; rates are the difference between two polls.
import { html, useState, useEffect, useMemo, useRef } from '../lib.js'
import { api, workspaceApi } from '../api.js'
import { useApp, PageHeader, ErrorBox, Loading, Table, Badge, Stat, formatNumber, Time, hrefFor } from '../ui.js'
import { Chart, esc, COLORS } from '../charts.js'

const POLL_MS = 4000

/** Health of a connection from its status: good, warn (retrying), bad (failing, DLQ), muted (off). */
export function connectionHealth (connection) {
  const status = connection.status || {}
  if (!connection.enabled || status.state === 'disabled') return { tone: 'muted', label: 'disabled' }
  if (status.state === 'error') return { tone: 'bad', label: 'error' }
  if (status.circuit === 'open') return { tone: 'bad', label: 'failing' }
  if ((status.dlq_size || 0) > 0) return { tone: 'bad', label: 'dlq' }
  if ((status.retrying || 0) > 0 || status.circuit === 'half_open' || status.circuit === 'half-open') return { tone: 'warn', label: 'retrying' }
  return { tone: 'good', label: 'delivered' }
}

async function loadFlow (workspace, canSeeUnknownKeys) {
  const ws = workspaceApi(workspace)
  const [sources, destinations, connections, unknown, catalog] = await Promise.all([
    ws.sources.list(),
    ws.destinations.list(),
    ws.connections.list(),
    canSeeUnknownKeys ? api.unknownKeys().catch(() => null) : Promise.resolve(null),
    ws.catalog().catch(() => null)
  ])
  return {
    at: Date.now(),
    sources: sources.sources || [],
    destinations: destinations.destinations || [],
    connections: connections.connections || [],
    unknown: unknown ? (unknown.unknown_keys || unknown.keys || unknown.attempts || []) : null,
    catalog
  }
}

/** Events per second between two polls, by key. */
function rates (previous, current, key, count) {
  const out = {}
  if (!previous) return out
  const seconds = (current.at - previous.at) / 1000
  if (seconds <= 0) return out
  const before = new Map(previous[key].map((item) => [item.id, count(item)]))
  for (const item of current[key]) {
    const earlier = before.get(item.id)
    if (earlier !== undefined) out[item.id] = Math.max(0, (count(item) - earlier) / seconds)
  }
  return out
}

const rateText = (rate) => rate === undefined ? '' : rate >= 10 ? `${Math.round(rate)}/s` : `${rate.toFixed(1)}/s`

export default function FlowPage ({ workspace }) {
  const app = useApp()
  const [data, setData] = useState(null)
  const [error, setError] = useState(null)
  const previous = useRef(null)
  const [speeds, setSpeeds] = useState({ sources: {}, connections: {} })

  useEffect(() => {
    let live = true
    previous.current = null
    const tick = async () => {
      if (document.hidden) return
      try {
        const next = await loadFlow(workspace, app.canOrganization('ReadCatalog'))
        if (!live) return
        setSpeeds({
          sources: rates(previous.current, next, 'sources', (source) => source.events_accepted || 0),
          connections: rates(previous.current, next, 'connections', (connection) => (connection.status || {}).delivered || 0)
        })
        previous.current = next
        setData(next)
        setError(null)
      } catch (failure) { if (live) setError(failure) }
    }
    tick()
    const timer = setInterval(tick, POLL_MS)
    return () => { live = false; clearInterval(timer) }
  }, [workspace])

  const model = useMemo(() => data && buildModel(workspace, data, speeds), [data, speeds, workspace])

  return html`<section>
    <${PageHeader} title="Flow map" subtitle=${`Where the data of ${workspace} comes from and where it goes, live.`}
      actions=${html`<span class="pill-live" title=${`refreshed every ${POLL_MS / 1000} s`}>live</span>`} />
    <${ErrorBox} error=${error} />
    ${!model ? html`<${Loading} />` : html`
      <div class="stats">
        <${Stat} label="sources" value=${formatNumber(model.totals.sources)} />
        <${Stat} label="events accepted" value=${formatNumber(model.totals.accepted)} hint=${rateText(model.totals.rate) || ' '} />
        <${Stat} label="delivered" value=${formatNumber(model.totals.delivered)} tone="good" />
        <${Stat} label="dead letters" value=${formatNumber(model.totals.dlq)} tone=${model.totals.dlq ? 'bad' : null} />
        <${Stat} label="connections failing" value=${formatNumber(model.totals.failing)} tone=${model.totals.failing ? 'bad' : null} />
        ${model.totals.shadow !== null ? html`<${Stat} label="refused key attempts (shadow IT)" value=${formatNumber(model.totals.shadow)} tone=${model.totals.shadow ? 'warn' : null} />` : null}
      </div>
      <div class="card chart-card">
        <div class="legend" aria-hidden="true">
          <span><span class="swatch swatch-good"></span>delivering</span><span><span class="swatch swatch-warn"></span>retrying</span>
          <span><span class="swatch swatch-bad"></span>failing / dead letters</span><span><span class="swatch swatch-muted"></span>disabled or idle</span>
          <span><span class="swatch swatch-shadow"></span>unknown or disabled keys</span>
        </div>
        <${Chart} option=${model.option} height=${model.chartHeight} label=${model.summary} onClick=${(params) => {
          const target = params.data && params.data.href
          if (target) app.go(target)
        }} />
      </div>
      <h2>Every flow</h2>
      <${Table} caption="The same flows as the map, as a table" rows=${model.rows} rowKey=${(row) => row.key}
        empty="No sources or connections yet."
        columns=${[
          { key: 'from', label: 'From', render: (row) => row.fromHref ? html`<a href=${row.fromHref}>${row.from}</a>` : row.from },
          { key: 'to', label: 'To', render: (row) => row.toHref ? html`<a href=${row.toHref}>${row.to}</a>` : row.to },
          { key: 'volume', label: 'Volume', class: 'num', render: (row) => formatNumber(row.volume) },
          { key: 'rate', label: 'Now', class: 'num', render: (row) => rateText(row.rate) || '—' },
          { key: 'health', label: 'Health', render: (row) => html`<${Badge} tone=${row.tone}>${row.health}<//>${row.detail ? html` <span class="muted small">${row.detail}</span>` : null}` },
          { key: 'owner', label: 'Owner' },
          { key: 'last', label: 'Last activity', render: (row) => row.last === undefined ? '—' : html`<${Time} value=${row.last} />` }
        ]} />
    `}
  </section>`
}

function buildModel (workspace, data, speeds) {
  const nodes = []
  const links = []
  const rows = []
  const hub = `workspace:${workspace}`
  const destinations = new Map(data.destinations.map((destination) => [destination.id, destination]))
  const sourceCount = Math.max(1, data.sources.length)
  const destinationIds = [...new Set(data.connections.map((connection) => connection.destination))]
  for (const destination of data.destinations) if (!destinationIds.includes(destination.id)) destinationIds.push(destination.id)
  // Coordinates in a box of the chart's own proportions: ECharts fits the box to the chart by
  // scaling both directions, so a box of another shape would stretch the symbols.
  const rowsCount = Math.max(sourceCount, destinationIds.length, 1)
  const height = Math.max(360, rowsCount * 70)
  const COLUMN = 500
  const spread = (index, count) => (count <= 1 ? height / 2 : index * (height / (count - 1)))
  const width = (volume) => Math.min(12, 1.5 + Math.log10(1 + (volume || 0)) * 2)

  let totalAccepted = 0
  let totalRate = 0
  data.sources.forEach((source, index) => {
    const accepted = source.events_accepted || 0
    totalAccepted += accepted
    const rate = speeds.sources[source.id]
    if (rate) totalRate += rate
    const tone = !source.enabled ? 'muted' : source.events_rejected > 0 && accepted === 0 ? 'bad' : accepted > 0 ? 'good' : 'muted'
    nodes.push({
      id: `source:${source.id}`, name: source.name || source.id, x: 0, y: spread(index, data.sources.length),
      symbol: 'roundRect', symbolSize: [150, 40], itemStyle: { color: '#fff', borderColor: COLORS.brand, borderWidth: 2 },
      label: { color: '#1b2430' }, href: hrefFor(workspace, 'sources') + '?source=' + encodeURIComponent(source.id),
      tooltip: { formatter: () => `<b>${esc(source.name || source.id)}</b> (source ${esc(source.id)})<br>owner: ${esc(source.owner || '—')}<br>${source.purpose ? 'purpose: ' + esc(source.purpose) + '<br>' : ''}accepted ${formatNumber(accepted)}, rejected ${formatNumber(source.events_rejected)}${source.enabled ? '' : '<br><b>disabled</b>'}` }
    })
    links.push({
      source: `source:${source.id}`, target: hub, value: accepted,
      lineStyle: { width: width(accepted), color: COLORS[tone], opacity: 0.85, type: source.enabled ? 'solid' : 'dashed' },
      label: { show: true, formatter: () => [formatNumber(accepted), rateText(rate)].filter(Boolean).join(' · '), fontSize: 11, color: '#4a5666' },
      tooltip: { formatter: () => `${esc(source.name || source.id)} → ${esc(workspace)}<br>accepted ${formatNumber(accepted)}${rate !== undefined ? ` (${rateText(rate)})` : ''}<br>rejected ${formatNumber(source.events_rejected)}<br>owner: ${esc(source.owner || '—')}` }
    })
    rows.push({
      key: 's:' + source.id, from: source.name || source.id, fromHref: hrefFor(workspace, 'sources') + '?source=' + encodeURIComponent(source.id), to: workspace,
      volume: accepted, rate, tone, health: source.enabled ? (accepted ? 'accepted' : 'idle') : 'disabled',
      detail: source.events_rejected ? `${formatNumber(source.events_rejected)} rejected` : '', owner: source.owner, last: source.last_seen_at || undefined
    })
  })

  nodes.push({
    id: hub, name: workspace, x: COLUMN, y: height / 2, symbol: 'circle', symbolSize: 78,
    itemStyle: { color: COLORS.brand }, label: { color: '#fff', fontWeight: 'bold' },
    tooltip: { formatter: () => `workspace <b>${esc(workspace)}</b><br>${formatNumber(totalAccepted)} events accepted` }
  })

  let totalDelivered = 0
  let totalDlq = 0
  let failing = 0
  destinationIds.forEach((destinationId, index) => {
    const destination = destinations.get(destinationId) || { id: destinationId, name: destinationId, owner: '' }
    const feeding = data.connections.filter((connection) => connection.destination === destinationId)
    const worst = feeding.map(connectionHealth).sort((a, b) => rank(b.tone) - rank(a.tone))[0] || { tone: 'muted', label: 'no connection' }
    nodes.push({
      id: `destination:${destinationId}`, name: destination.name || destinationId, x: 2 * COLUMN, y: spread(index, destinationIds.length),
      symbol: 'roundRect', symbolSize: [150, 40], itemStyle: { color: '#fff', borderColor: COLORS[worst.tone], borderWidth: 2 },
      label: { color: '#1b2430' }, href: hrefFor(workspace, 'destinations', destinationId),
      tooltip: { formatter: () => `<b>${esc(destination.name || destinationId)}</b> (${esc(destination.type || 'destination')})<br>owner: ${esc(destination.owner || '—')}${destination.purpose ? '<br>purpose: ' + esc(destination.purpose) : ''}` }
    })
    for (const connection of feeding) {
      const status = connection.status || {}
      const health = connectionHealth(connection)
      const delivered = status.delivered || 0
      totalDelivered += delivered
      totalDlq += status.dlq_size || 0
      if (health.tone === 'bad') failing++
      const rate = speeds.connections[connection.id]
      links.push({
        source: hub, target: `destination:${destinationId}`, value: delivered,
        lineStyle: { width: width(delivered), color: COLORS[health.tone], opacity: 0.9, type: connection.enabled ? 'solid' : 'dashed', curveness: feeding.length > 1 ? 0.1 * feeding.indexOf(connection) : 0 },
        label: { show: true, formatter: () => [formatNumber(delivered), rateText(rate), status.dlq_size ? `${status.dlq_size} DLQ` : ''].filter(Boolean).join(' · '), fontSize: 11, color: '#4a5666' },
        href: hrefFor(workspace, 'connections', connection.id),
        tooltip: { formatter: () => `connection <b>${esc(connection.id)}</b>: ${esc(health.label)}<br>delivered ${formatNumber(delivered)}${rate !== undefined ? ` (${rateText(rate)})` : ''}<br>retrying ${formatNumber(status.retrying)}, dead letters ${formatNumber(status.dlq_size)}, lag ${formatNumber(status.lag_records)} records<br>circuit ${esc(status.circuit || '—')}${status.error ? '<br>error: ' + esc(status.error) : ''}<br>sources: ${esc((connection.sources || []).join(', '))}<br>owner: ${esc(destination.owner || '—')}` }
      })
      rows.push({
        key: 'c:' + connection.id, from: `${workspace} (connection ${connection.id})`, fromHref: hrefFor(workspace, 'connections', connection.id),
        to: destination.name || destinationId, toHref: hrefFor(workspace, 'destinations', destinationId), volume: delivered, rate, tone: health.tone, health: health.label,
        detail: [status.dlq_size ? `${formatNumber(status.dlq_size)} dead letters` : '', status.retrying ? `${formatNumber(status.retrying)} retrying` : '', status.lag_records ? `lag ${formatNumber(status.lag_records)}` : '', status.error || ''].filter(Boolean).join(', '),
        owner: destination.owner
      })
    }
  })

  let shadow = null
  if (data.unknown) {
    const attempts = data.unknown.reduce((sum, key) => sum + (key.attempts || key.count || 0), 0)
    shadow = attempts
    nodes.push({
      id: 'shadow', name: 'unknown keys', x: 0, y: height + 90, symbol: 'diamond', symbolSize: 56,
      itemStyle: { color: COLORS.shadow }, label: { color: '#1b2430', position: 'bottom' }, href: hrefFor(workspace, 'sources') + '?tab=unknown',
      tooltip: { formatter: () => `<b>Traffic with unknown or disabled write keys</b><br>${formatNumber(data.unknown.length)} keys, ${formatNumber(attempts)} refused attempts<br>${data.unknown.slice(0, 5).map((key) => esc(key.fingerprint || key.key_fingerprint || '') + ' — ' + esc(key.last_origin || key.origin || key.last_user_agent || '')).join('<br>')}` }
    })
    links.push({
      source: 'shadow', target: hub, value: attempts,
      lineStyle: { width: width(attempts), color: COLORS.shadow, type: 'dotted', opacity: 0.9 },
      label: { show: attempts > 0, formatter: () => `${formatNumber(attempts)} refused`, fontSize: 11, color: '#4a5666' },
      tooltip: { formatter: () => `${formatNumber(attempts)} requests refused: their write key is unknown or disabled` }
    })
    rows.push({ key: 'shadow', from: 'Unknown or disabled keys (shadow IT)', fromHref: hrefFor(workspace, 'sources') + '?tab=unknown', to: 'refused', volume: attempts, tone: attempts ? 'warn' : 'muted', health: attempts ? 'refused' : 'none', detail: `${data.unknown.length} keys`, owner: '—' })
  }

  const option = {
    animation: false,
    tooltip: { trigger: 'item', confine: true },
    series: [{
      type: 'graph', layout: 'none', roam: true, draggable: false, edgeSymbol: ['none', 'arrow'], edgeSymbolSize: 9,
      label: { show: true, fontSize: 12, overflow: 'truncate', width: 136 }, emphasis: { focus: 'adjacency' },
      data: nodes, links, left: 90, right: 90, top: 40, bottom: 50
    }]
  }
  const boxHeight = height + (data.unknown ? 90 : 0)
  // Invisible corners pin the box ECharts fits (else it fits the nodes' extent, unevenly).
  for (const [x, y] of [[0, 0], [2 * COLUMN, boxHeight]]) {
    nodes.push({ id: `corner:${x}`, name: '', x, y, symbolSize: 0, silent: true, label: { show: false }, tooltip: { show: false } })
  }
  const chartHeight = Math.round(boxHeight * (920 / (2 * COLUMN))) + 110
  const summary = `Flow map of ${workspace}: ${data.sources.length} sources, ${destinationIds.length} destinations, ${data.connections.length} connections, ${failing} failing.`
  return { option, rows, summary, chartHeight, totals: { sources: data.sources.length, accepted: totalAccepted, rate: totalRate, delivered: totalDelivered, dlq: totalDlq, failing, shadow } }
}

const rank = (tone) => ({ bad: 3, warn: 2, good: 1, muted: 0 }[tone] ?? 0)
