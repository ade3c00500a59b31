// Users (organization admins): who may log in, with which role and where. Passwords are argon2
// hashes on the server; removing a user ends their sessions at once.
import { html, useState } from '../lib.js'
import { api } from '../api.js'
import { useApp, useAsync, PageHeader, ErrorBox, Loading, Table, Badge, Field, Dialog, ActionButton, Time } from '../ui.js'

export default function UsersPage () {
  const app = useApp()
  const users = useAsync(() => api.users.list(), [])
  const roles = useAsync(() => api.roles(), [])
  const [editing, setEditing] = useState(null)
  const remove = async (user) => {
    await api.users.remove(user.id)
    app.notify(`${user.email} removed; their sessions ended.`)
    users.reload()
  }
  return html`<section>
    <${PageHeader} title="Users" subtitle="People who log in to the console and the CLI."
      actions=${html`<button type="button" class="primary" onClick=${() => setEditing({})}>New user</button>`} />
    <${ErrorBox} error=${users.error} />
    ${!users.data ? html`<${Loading} />` : html`<${Table} rows=${users.data.users} rowKey=${(user) => user.id}
      columns=${[
        { key: 'email', label: 'Email', render: (user) => html`<strong>${user.email}</strong>${user.name ? html`<div class="muted small">${user.name}</div>` : null}` },
        { key: 'role', label: 'Role', render: (user) => html`<${Badge} tone="info">${user.role}<//>` },
        { key: 'workspace', label: 'Scope', render: (user) => user.workspace || 'organization' },
        { key: 'created_at', label: 'Created', render: (user) => html`<${Time} value=${user.created_at} /> <span class="muted small">by ${user.created_by}</span>` },
        {
          key: 'actions',
          label: html`<span class="visually-hidden">Actions</span>`,
          render: (user) => html`<div class="actions"><button type="button" class="small" onClick=${() => setEditing(user)}>Edit</button>
            <${ActionButton} class="small danger" action=${() => remove(user)} confirm=${`Remove ${user.email}? Their sessions end now.`}>Remove<//></div>`
        }
      ]} />`}
    ${roles.data ? html`<details class="card"><summary>What each role may do</summary>
      <${Table} rows=${roles.data.roles} rowKey=${(role) => role.name} columns=${[
        { key: 'name', label: 'Role', render: (role) => html`<code>${role.name}</code>` },
        { key: 'scope', label: 'Scope' },
        { key: 'permissions', label: 'Permissions', render: (role) => role.permissions.join(', ') }
      ]} /></details>` : null}
    <${UserDialog} user=${editing} roles=${roles.data ? roles.data.roles : []} workspaces=${app.workspaces} onClose=${() => setEditing(null)} onSaved=${() => { setEditing(null); users.reload() }} />
  </section>`
}

function UserDialog ({ user, roles, workspaces, onClose, onSaved }) {
  const app = useApp()
  const creating = user && !user.id
  const [form, setForm] = useState({})
  const [error, setError] = useState(null)
  const [opened, setOpened] = useState(null)
  if (user !== opened) {
    setOpened(user)
    setForm(user ? { email: user.email || '', name: user.name || '', role: user.role || 'marketer', workspace: user.workspace || '', password: '' } : {})
    setError(null)
  }
  const set = (key) => (event) => setForm({ ...form, [key]: event.target.value })
  const submit = async (event) => {
    event.preventDefault()
    setError(null)
    try {
      if (creating) {
        await api.users.create({ email: form.email, name: form.name, role: form.role, workspace: form.workspace || undefined, password: form.password })
        app.notify(`${form.email} can now log in.`)
      } else {
        const change = { name: form.name, role: form.role, workspace: form.workspace || null }
        if (form.password) change.password = form.password
        await api.users.update(user.id, change)
        app.notify(`${user.email} changed.`)
      }
      onSaved()
    } catch (failure) { setError(failure) }
  }
  return html`<${Dialog} open=${!!user} title=${creating ? 'New user' : `Edit ${user && user.email}`} onClose=${onClose}>
    ${user ? html`<form onSubmit=${submit}>
      ${creating ? html`<${Field} label="Email" required><input type="email" required value=${form.email} onInput=${set('email')} autocomplete="off" /><//>` : null}
      <${Field} label="Name"><input value=${form.name} onInput=${set('name')} /><//>
      <${Field} label="Role" required><select value=${form.role} onChange=${set('role')}>${roles.map((role) => html`<option value=${role.name}>${role.name}</option>`)}</select><//>
      <${Field} label="Workspace" hint="Empty: the whole organization (org_admin must be; workspace_admin must not)"><select value=${form.workspace} onChange=${set('workspace')}>
        <option value="">the organization</option>${workspaces.map((workspace) => html`<option value=${workspace.id}>${workspace.id}</option>`)}</select><//>
      <${Field} label=${creating ? 'Password' : 'New password'} required=${creating} hint="At least 12 characters"><input type="password" autocomplete="new-password" required=${creating} value=${form.password} onInput=${set('password')} /><//>
      <${ErrorBox} error=${error} title="Not saved" />
      <div class="form-actions"><button type="submit" class="primary">${creating ? 'Create user' : 'Save'}</button><button type="button" onClick=${onClose}>Cancel</button></div>
    </form>` : null}
  <//>`
}

