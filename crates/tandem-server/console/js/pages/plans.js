// Tracking plans: each plan with its mode, the sources it governs, its schemas, totals by
// outcome and violations by event, field and source (with samples' messages).
import { html } from '../lib.js'
import { workspaceApi } from '../api.js'
import { useAsync, usePoll, PageHeader, ErrorBox, Loading, Table, Badge, JsonView, Stat, Time, formatNumber, hrefFor } from '../ui.js'
import { Chart, COLORS } from '../charts.js'

export default function PlansPage ({ workspace, path }) {
  if (path[0]) return html`<${PlanView} key=${path[0]} workspace=${workspace} id=${path[0]} />`
  const plans = usePoll(() => workspaceApi(workspace).plans.list(), 10000, [workspace])
  return html`<section>
    <${PageHeader} title="Tracking plans" subtitle="The schemas events must follow, and what happens to those that do not."
      actions=${html`<a class="button" href=${hrefFor(workspace, 'quarantine')}>Quarantine</a>`} />
    <${ErrorBox} error=${plans.error} />
    ${!plans.data ? html`<${Loading} />` : html`<${Table} rows=${plans.data.tracking_plans} rowKey=${(plan) => plan.id}
      empty="No tracking plan: every valid event is stored as sent."
      columns=${[
        { key: 'name', label: 'Plan', render: (plan) => html`<a href=${hrefFor(workspace, 'plans', plan.id)}><strong>${plan.name || plan.id}</strong></a><div class="muted small mono">${plan.id}</div>` },
        { key: 'mode', label: 'Mode', render: (plan) => html`<${Badge} tone=${plan.mode === 'block' ? 'bad' : plan.mode === 'quarantine' ? 'warn' : 'info'}>${plan.mode}<//>${plan.enforced === false ? html` <${Badge}>draft<//>` : null}` },
        { key: 'sources', label: 'Governs', render: (plan) => (plan.sources || []).length ? plan.sources.join(', ') : 'the whole workspace' },
        { key: 'owner', label: 'Owner' },
        { key: 'totals', label: 'Violating / checked', render: (plan) => totalsText(plan.totals) },
        { key: 'managed_by', label: 'Managed by' }
      ]} />`}
  </section>`
}

function totalsText (totals) {
  if (!totals) return '—'
  const violating = (totals.allowed || 0) + (totals.flagged || 0) + (totals.quarantined || 0) + (totals.blocked || 0)
  return Object.entries(totals).filter(([, value]) => value).map(([key, value]) => `${key} ${formatNumber(value)}`).join(', ') || (violating ? formatNumber(violating) : 'none yet')
}

function PlanView ({ workspace, id }) {
  const ws = workspaceApi(workspace)
  const plan = useAsync(() => ws.plans.get(id), [workspace, id])
  const violations = usePoll(() => ws.plans.violations(id), 5000, [workspace, id])
  if (plan.error) return html`<section><${PageHeader} title=${id} /><${ErrorBox} error=${plan.error} /></section>`
  if (!plan.data) return html`<${Loading} />`
  const data = plan.data.tracking_plan || plan.data
  const rows = violations.data ? flattenViolations(violations.data) : []
  const byField = aggregate(rows, (row) => `${row.event} ${row.field}`)
  const totals = (violations.data && violations.data.totals) || data.totals || {}
  return html`<section>
    <${PageHeader} title=${data.name || id} subtitle=${`Tracking plan ${id}, version ${data.version} — ${(data.sources || []).length ? 'sources ' + data.sources.join(', ') : 'the whole workspace'}`}
      actions=${html`<${Badge}>${data.mode}<//>`} />
    <div class="stats">${Object.entries(totals).map(([key, value]) => html`<${Stat} label=${key} value=${formatNumber(value)} tone=${key === 'blocked' ? (value ? 'bad' : null) : key === 'quarantined' ? (value ? 'warn' : null) : null} />`)}</div>
    ${byField.length ? html`<div class="card chart-card"><${Chart} size="small" label="Violations by event and field"
      option=${{
        animation: false,
        tooltip: { trigger: 'axis' },
        grid: { left: 220, right: 20, top: 10, bottom: 30 },
        xAxis: { type: 'value', minInterval: 1 },
        yAxis: { type: 'category', data: byField.map((item) => item.key), axisLabel: { width: 200, overflow: 'truncate' } },
        series: [{ type: 'bar', barMaxWidth: 26, data: byField.map((item) => item.count), itemStyle: { color: COLORS.warn } }]
      }} /></div>` : null}
    <h2>Violations</h2>
    <${ErrorBox} error=${violations.error} />
    ${!violations.data ? html`<${Loading} />` : html`<${Table} rows=${rows} empty="No violations: every checked event passed."
      columns=${[
        { key: 'event', label: 'Event' },
        { key: 'field', label: 'Field', render: (row) => html`<code>${row.field}</code>` },
        { key: 'rule', label: 'Rule' },
        { key: 'source', label: 'Source' },
        { key: 'count', label: 'Count', class: 'num', render: (row) => formatNumber(row.count) },
        { key: 'last', label: 'Last', render: (row) => html`<${Time} value=${row.last} />` },
        { key: 'message', label: 'Example', render: (row) => row.message || '—' }
      ]} />`}
    <h2>Schemas</h2>
    <${JsonView} value=${{ events: data.events, identify_traits: data.identify_traits, group_traits: data.group_traits, unplanned_events: data.unplanned_events }} label="The plan's schemas" />
  </section>`
}

/** The violations answer as rows of (event, field, rule, source, count), whatever its nesting. */
function flattenViolations (answer) {
  const list = answer.violations || answer.counters || []
  if (Array.isArray(list)) {
    return list.map((item) => ({
      event: item.event, field: item.field, rule: item.rule, source: item.source, count: item.count ?? item.total ?? 0,
      last: item.last_seen || item.last_at, message: (item.samples && item.samples[0] && (item.samples[0].message || item.samples[0].messageId)) || item.message
    }))
  }
  return []
}

function aggregate (rows, key) {
  const counts = new Map()
  for (const row of rows) counts.set(key(row), (counts.get(key(row)) || 0) + (row.count || 0))
  return [...counts.entries()].map(([name, count]) => ({ key: name, count })).sort((a, b) => b.count - a.count).slice(0, 15)
}

