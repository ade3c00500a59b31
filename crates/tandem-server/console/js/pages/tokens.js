// Management API tokens: for scripts and machines, with a role (never beyond the creator's) and
// a scope; the secret is shown once. Organization admins see every token; a workspace admin the
// tokens of their workspace.
import { html, useState } from '../lib.js'
import { api, workspaceApi } from '../api.js'
import { useApp, useAsync, useCreateForm, PageHeader, ErrorBox, Loading, Table, Badge, Field, Dialog, ActionButton, Time } from '../ui.js'

export default function TokensPage ({ workspace }) {
  const app = useApp()
  const organization = !app.me.workspace
  const client = organization ? api.tokens : workspaceApi(workspace).tokens
  const tokens = useAsync(() => client.list(), [workspace, organization])
  const roles = useAsync(() => api.roles(), [])
  const [creating, setCreating] = useState(false)
  const revoke = async (token) => {
    await client.revoke(token.id)
    app.notify(`Token ${token.name} revoked.`)
    tokens.reload()
  }
  return html`<section>
    <${PageHeader} title="API tokens" subtitle=${organization ? 'Every management API token of the organization.' : `Tokens of ${workspace}.`}
      actions=${html`<button type="button" class="primary" onClick=${() => setCreating(true)}>New token</button>`} />
    <${ErrorBox} error=${tokens.error} />
    ${!tokens.data ? html`<${Loading} />` : html`<${Table} rows=${tokens.data.tokens} rowKey=${(token) => token.id} empty="No tokens."
      columns=${[
        { key: 'name', label: 'Name', render: (token) => html`<strong>${token.name}</strong><div class="muted small mono">${token.id}</div>` },
        { key: 'role', label: 'Role', render: (token) => html`<${Badge} tone="info">${token.role}<//>` },
        { key: 'workspace', label: 'Scope', render: (token) => token.workspace || 'organization' },
        { key: 'status', label: 'Status', render: (token) => html`<${Badge}>${token.status}<//>` },
        { key: 'last_used_at', label: 'Last used', render: (token) => html`<${Time} value=${token.last_used_at} />` },
        { key: 'expires_at', label: 'Expires', render: (token) => token.expires_at ? html`<${Time} value=${token.expires_at} />` : 'never' },
        { key: 'created_by', label: 'Created by' },
        { key: 'actions', label: html`<span class="visually-hidden">Actions</span>`, render: (token) => token.status === 'active' ? html`<${ActionButton} class="small danger" action=${() => revoke(token)} confirm=${`Revoke ${token.name}? Whatever uses it stops working now.`}>Revoke<//>` : null }
      ]} />`}
    <${NewTokenDialog} open=${creating} organization=${organization} workspace=${workspace} roles=${roles.data ? roles.data.roles : []} client=${client}
      onClose=${() => setCreating(false)} onCreated=${() => tokens.reload()} />
  </section>`
}

function NewTokenDialog ({ open, organization, workspace, roles, client, onClose, onCreated }) {
  const app = useApp()
  const held = new Set(app.me.permissions)
  const grantable = roles.filter((role) => role.permissions.every((permission) => held.has(permission)))
  const { form, set, created, error, close, submit } = useCreateForm({ name: '', role: 'viewer', workspace: organization ? '' : workspace, expires_in_days: '90' },
    (values) => {
      const body = { name: values.name, role: values.role, expires_in_days: values.expires_in_days === 'never' ? null : Number(values.expires_in_days) }
      if (organization && values.workspace) body.workspace = values.workspace
      return client.create(body)
    },
    { onCreated, onClose })
  return html`<${Dialog} open=${open} title="New API token" onClose=${close}>
    ${created ? html`<div>
      <p class="notice notice-good" role="status">Token ${created.name} created. Copy the secret now: tandem keeps only its SHA-256.</p>
      <${Field} label="Secret"><input readonly class="mono" value=${created.token} onFocus=${(event) => event.target.select()} /><//>
      <p class="muted small">Use it as <code>Authorization: Bearer …</code>.</p>
      <div class="form-actions"><button type="button" class="primary" onClick=${close}>Done</button></div>
    </div>` : html`<form onSubmit=${submit}>
      <${Field} label="Name" required hint="What uses it (CRM sync, CI…)"><input required value=${form.name} onInput=${set('name')} /><//>
      <${Field} label="Role" hint="Never beyond your own"><select value=${form.role} onChange=${set('role')}>${grantable.map((role) => html`<option value=${role.name}>${role.name}</option>`)}</select><//>
      ${organization ? html`<${Field} label="Workspace"><select value=${form.workspace} onChange=${set('workspace')}><option value="">the organization</option>${app.workspaces.map((item) => html`<option value=${item.id}>${item.id}</option>`)}</select><//>` : null}
      <${Field} label="Expires in"><select value=${form.expires_in_days} onChange=${set('expires_in_days')}><option value="30">30 days</option><option value="90">90 days</option><option value="365">a year</option><option value="never">never</option></select><//>
      <${ErrorBox} error=${error} title="Not created" />
      <div class="form-actions"><button type="submit" class="primary">Create token</button><button type="button" onClick=${close}>Cancel</button></div>
    </form>`}
  <//>`
}
