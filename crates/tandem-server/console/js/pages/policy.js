// The effective policy of a workspace: each value and where it comes from (the organization, or
// this workspace's override), and whether a workspace may override it.
import { html } from '../lib.js'
import { workspaceApi } from '../api.js'
import { useAsync, PageHeader, ErrorBox, Loading, Table, Badge, display } from '../ui.js'

export default function PolicyPage ({ workspace }) {
  const policy = useAsync(() => workspaceApi(workspace).policy(), [workspace])
  const rows = policy.data ? normalize(policy.data.policies) : []
  return html`<section>
    <${PageHeader} title="Policies" subtitle=${`What is in force in ${workspace}, and who set it.`} />
    <${ErrorBox} error=${policy.error} />
    ${!policy.data ? html`<${Loading} />` : html`<${Table} rows=${rows} rowKey=${(row) => row.name}
      empty="No policy is set: the organization declares them in the config file ([organization.policies.NAME])."
      columns=${[
        { key: 'name', label: 'Policy', render: (row) => html`<code>${row.name}</code>` },
        { key: 'value', label: 'Value in force', render: (row) => html`<span class="mono">${display(row.value)}</span>` },
        { key: 'source', label: 'Comes from', render: (row) => html`<${Badge} tone=${row.source === 'workspace' ? 'info' : 'muted'}>${row.source}<//>` },
        { key: 'organization_value', label: 'Organization value', render: (row) => row.organization_value === undefined ? '—' : html`<span class="mono">${display(row.organization_value)}</span>` },
        { key: 'overridable', label: 'Workspaces may override', render: (row) => row.overridable ? 'yes' : 'no' }
      ]} />`}
    <p class="muted small">Policies are data in the config file: <code>[organization.policies.NAME]</code> with <code>value</code> and <code>overridable</code>, overridden per workspace in <code>[workspaces.policies]</code>.</p>
  </section>`
}

/** The answer as rows, whether it is a list or a map by name. */
function normalize (policies) {
  if (Array.isArray(policies)) return policies.map((item) => ({ ...item, name: item.name || item.policy }))
  return Object.entries(policies || {}).map(([name, item]) => ({ name, ...(typeof item === 'object' && item !== null && 'value' in item ? item : { value: item }) }))
}
