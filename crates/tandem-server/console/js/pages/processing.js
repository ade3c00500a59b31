// The record of processing (GDPR Art. 30), generated from the live configuration: per recipient
// the purposes, data categories (declared and collected: undeclared ones flagged), sources,
// consent categories, safeguards; per source its recipients; retention; the gaps to resolve.
import { html } from '../lib.js'
import { workspaceApi } from '../api.js'
import { useAsync, PageHeader, ErrorBox, Loading, Table, Badge, JsonView, ActionButton, display } from '../ui.js'

export default function ProcessingPage ({ workspace }) {
  const ws = workspaceApi(workspace)
  const record = useAsync(() => ws.recordOfProcessing(), [workspace])
  const catalog = useAsync(() => ws.catalog().catch((error) => error.status === 404 ? null : Promise.reject(error)), [workspace])
  const download = async () => {
    const text = await ws.recordOfProcessingMarkdown()
    const link = document.createElement('a')
    link.href = URL.createObjectURL(new Blob([text], { type: 'text/markdown' }))
    link.download = `record-of-processing-${workspace}.md`
    link.click()
    setTimeout(() => URL.revokeObjectURL(link.href), 1000)
  }
  if (record.error && record.error.status === 404) {
    return html`<section><${PageHeader} title="Record of processing" /><p class="notice notice-info">This server does not generate the record of processing yet.</p></section>`
  }
  const data = record.data
  const findings = (catalog.data && catalog.data.findings) || (data && data.gaps) || []
  return html`<section>
    <${PageHeader} title="Record of processing" subtitle="Generated from the live configuration: it cannot disagree with it."
      actions=${html`<${ActionButton} action=${download}>Download (Markdown)<//>`} />
    <${ErrorBox} error=${record.error} />
    ${!data ? html`<${Loading} />` : html`<div>
      ${findings.length ? html`<div class="card"><h2>To resolve</h2><${Table} rows=${findings}
        columns=${[
          { key: 'severity', label: 'Severity', render: (row) => html`<${Badge} tone=${row.severity === 'high' || row.severity === 'error' ? 'bad' : row.severity === 'warning' || row.severity === 'medium' ? 'warn' : 'info'}>${row.severity || 'note'}<//>` },
          { key: 'code', label: 'Finding', render: (row) => html`<code>${row.code}</code>` },
          { key: 'message', label: 'What', render: (row) => row.message || row.text || display(row) },
          { key: 'subject', label: 'Concerns', render: (row) => display(row.subject || row.object || row.resource) }
        ]} /></div>` : null}
      ${(data.activities || []).map((activity) => html`<div class="card">
        <h2>${activity.recipient && (activity.recipient.name || activity.recipient.id) || activity.name || activity.destination}</h2>
        <dl class="kv">
          ${Object.entries(activity).filter(([key]) => !['recipient', 'flows'].includes(key)).map(([key, value]) => html`<dt>${key.replace(/_/g, ' ')}</dt><dd>${display(value)}</dd>`)}
        </dl>
        ${activity.flows ? html`<h3>Flows</h3><${JsonView} value=${activity.flows} label="Flows" />` : null}
      </div>`)}
      <details class="card"><summary>The whole record (JSON)</summary><${JsonView} value=${data} label="Record of processing" /></details>
    </div>`}
  </section>`
}

