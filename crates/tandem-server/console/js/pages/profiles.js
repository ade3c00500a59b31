// Profile 360: search by any identifier (or a trait), then one person: traits with where each
// value came from, identities with why they are one profile (the chain of events) and a split
// to undo a wrong merge, the timeline, accounts. Sections the API adds later (consent history,
// audiences, deliveries) appear as soon as the profile answer carries them.
//
// Trait values and event properties are other people's input: they are only ever rendered as
// text (Preact escapes them), never as HTML.
import { html, useState } from '../lib.js'
import { workspaceApi } from '../api.js'
import { useApp, useAsync, PageHeader, ErrorBox, Loading, Table, Badge, JsonView, Field, Empty, Dialog, Time, formatNumber, hrefFor, display } from '../ui.js'

const IDENTIFIER_TYPES = ['user_id', 'email', 'anonymous_id', 'phone', 'device_id', 'advertising_id', 'group_id']
/** Sections the profile API may grow; each shows when the answer has it. */
const LATER_SECTIONS = [['consent', 'Consent history'], ['audiences', 'Audiences'], ['deliveries', 'Deliveries']]

export default function ProfilesPage ({ workspace, path, query }) {
  if (path[0]) return html`<${ProfileView} key=${path[0]} workspace=${workspace} id=${path[0]} />`
  return html`<${ProfileSearch} workspace=${workspace} query=${query} />`
}

function ProfileSearch ({ workspace, query }) {
  const app = useApp()
  const [mode, setMode] = useState(query.trait ? 'trait' : 'identifier')
  const [kind, setKind] = useState(query.type || 'user_id')
  const [value, setValue] = useState(query.value || '')
  const [traitName, setTraitName] = useState(query.trait || '')
  const [result, setResult] = useState(null)
  const [error, setError] = useState(null)
  const [busy, setBusy] = useState(false)

  const search = async (event) => {
    event.preventDefault()
    setBusy(true)
    setError(null)
    try {
      const ws = workspaceApi(workspace)
      const answer = mode === 'identifier'
        ? await ws.profiles.search({ identifier: value.includes(':') && kind === 'custom' ? value : `${kind}:${value.trim()}` })
        : await ws.profiles.search({ trait: traitName.trim(), value: value })
      if (answer.profiles.length === 1 && mode === 'identifier') app.go(hrefFor(workspace, 'profiles', answer.profiles[0].id))
      else setResult(answer)
    } catch (failure) { setError(failure) } finally { setBusy(false) }
  }

  return html`<section>
    <${PageHeader} title="Profiles" subtitle="Find a person by any identifier: user id, email, anonymous id, phone, device…" />
    <form class="card toolbar" onSubmit=${search} role="search" aria-label="Search profiles">
      <${Field} label="Search by">
        <select value=${mode} onChange=${(event) => setMode(event.target.value)}>
          <option value="identifier">Identifier</option><option value="trait">Trait value</option>
        </select>
      <//>
      ${mode === 'identifier'
        ? html`<${Field} label="Identifier type"><select value=${kind} onChange=${(event) => setKind(event.target.value)}>
            ${IDENTIFIER_TYPES.map((type) => html`<option value=${type}>${type}</option>`)}<option value="custom">other (type:value)</option></select><//>`
        : html`<${Field} label="Trait name"><input required value=${traitName} onInput=${(event) => setTraitName(event.target.value)} placeholder="plan" /><//>`}
      <${Field} label="Value"><input required value=${value} onInput=${(event) => setValue(event.target.value)} placeholder=${mode === 'identifier' ? 'u1, ann@example.com…' : 'pro'} /><//>
      <button type="submit" class="primary" disabled=${busy}>Search</button>
    </form>
    <${ErrorBox} error=${error} />
    ${result ? html`<div>
      <h2>${formatNumber(result.profiles.length)} profile${result.profiles.length === 1 ? '' : 's'}</h2>
      <${Table} rows=${result.profiles} rowKey=${(profile) => profile.id} empty="No profile has that identifier or trait value."
        columns=${[
          { key: 'id', label: 'Profile', render: (profile) => html`<a href=${hrefFor(workspace, 'profiles', profile.id)}>${profile.id}</a>` },
          { key: 'identities', label: 'Identities', render: (profile) => profile.identities.slice(0, 4).map((identity) => `${identity.type}:${identity.id}`).join(', ') + (profile.identities.length > 4 ? ' …' : '') },
          { key: 'events', label: 'Events', class: 'num', render: (profile) => formatNumber(profile.metadata && profile.metadata.events) },
          { key: 'last', label: 'Last seen', render: (profile) => html`<${Time} value=${profile.metadata && profile.metadata.last_message_at} />` }
        ]} />
    </div>` : null}
  </section>`
}

function ProfileView ({ workspace, id }) {
  const app = useApp()
  const ws = workspaceApi(workspace)
  const profile = useAsync(() => ws.profiles.get(id), [workspace, id])
  const [explaining, setExplaining] = useState(null)
  const [splitting, setSplitting] = useState(false)
  const [eventOffset, setEventOffset] = useState(null)

  if (profile.error) return html`<section><${PageHeader} title="Profile" /><${ErrorBox} error=${profile.error} /><p><a href=${hrefFor(workspace, 'profiles')}>Back to the search</a></p></section>`
  if (!profile.data) return html`<${Loading} />`
  const data = profile.data
  const traits = Object.entries(data.traits || {}).map(([name, trait]) => ({ name, ...trait }))
  const computed = Object.entries(data.computed_traits || {}).map(([name, value]) => ({ name, value }))
  const title = traitText(data.traits, 'name') || traitText(data.traits, 'email') || data.id
  const canSplit = app.can('ManageIdentity') && data.identities.length > 1

  return html`<section>
    <${PageHeader} title=${title} subtitle=${`Profile ${data.id}`}
      actions=${html`<a class="button" href=${hrefFor(workspace, 'profiles')}>New search</a>
        ${canSplit ? html`<button type="button" class="danger" onClick=${() => setSplitting(true)}>Split profile…</button>` : null}`} />
    <div class="stats">
      <div class="stat"><div class="stat-value">${formatNumber(data.metadata.events)}</div><div class="stat-label">events</div></div>
      <div class="stat"><div class="stat-value">${formatNumber(data.identities.length)}</div><div class="stat-label">identities</div></div>
      <div class="stat"><div class="stat-value">${formatNumber(data.metadata.merged_profiles)}</div><div class="stat-label">merged profiles</div></div>
      <div class="stat"><div class="stat-value"><${Time} value=${data.metadata.first_message_at} /></div><div class="stat-label">first seen</div></div>
      <div class="stat"><div class="stat-value"><${Time} value=${data.metadata.last_message_at} /></div><div class="stat-label">last seen (${data.metadata.last_source_id})</div></div>
    </div>
    <div class="grid-2">
      <div class="card">
        <h2>Traits</h2>
        <${Table} rows=${traits} rowKey=${(trait) => trait.name} empty="No traits yet."
          columns=${[
            { key: 'name', label: 'Trait', render: (trait) => html`<code>${trait.name}</code>` },
            { key: 'value', label: 'Value', render: (trait) => html`<span class="trait-value">${display(trait.value)}</span>` },
            { key: 'source_id', label: 'From', render: (trait) => html`<span title=${'messageId ' + trait.message_id}>${trait.source_id}</span>` },
            { key: 'timestamp', label: 'When', render: (trait) => html`<${Time} value=${trait.timestamp} />` }
          ]} />
        ${computed.length ? html`<h3>Computed traits</h3><${Table} rows=${computed} rowKey=${(row) => row.name}
          columns=${[{ key: 'name', label: 'Computed trait', render: (row) => html`<code>${row.name}</code>` }, { key: 'value', label: 'Value', render: (row) => html`<span class="trait-value">${display(row.value)}</span>` }]} />` : null}
      </div>
      <div class="card">
        <h2>Identities</h2>
        <ul class="identity-list">
          ${data.identities.map((identity) => html`<li>
            <code>${identity.type}:${identity.id}</code>
            <span class="muted small">first seen <${Time} value=${identity.first_seen.timestamp} /> via ${identity.first_seen.source_id}</span>
            ${data.identities.length > 1 ? html`<button type="button" class="small" onClick=${() => setExplaining(identity)}>Why is this them?</button>` : null}
          </li>`)}
        </ul>
        ${data.merges.length ? html`<h3>Merges</h3><${Table} rows=${data.merges} rowKey=${(merge) => merge.absorbed}
          columns=${[
            { key: 'absorbed', label: 'Profile merged in' },
            { key: 'through', label: 'Through', render: (merge) => html`<code>${display(merge.through)}</code>` },
            { key: 'event_type', label: 'By a' },
            { key: 'event', label: 'Event', render: (merge) => html`<span title=${merge.event.message_id}>${merge.event.source_id}, <${Time} value=${merge.event.timestamp} /></span>` }
          ]} />` : null}
        <h3>Accounts</h3>
        ${(data.accounts || []).length ? html`<ul>${data.accounts.map((account) => html`<li><code>${account}</code></li>`)}</ul>` : html`<p class="muted">Not a member of any account.</p>`}
      </div>
    </div>
    <div class="card">
      <h2>Timeline</h2>
      ${(data.recent_events || []).length === 0 ? html`<${Empty}>No events kept for this profile.<//>` : html`<ol class="timeline">
        ${data.recent_events.map((event) => html`<li>
          <strong>${event.name || event.type}</strong> <span class="muted">${event.type} from ${event.source_id}</span>
          ${app.can('ReadLiveEvents') ? html` <button type="button" class="small" onClick=${() => setEventOffset(event.offset)}>Details</button>` : null}
        </li>`)}
      </ol>`}
    </div>
    ${LATER_SECTIONS.filter(([key]) => data[key] !== undefined).map(([key, label]) => html`<div class="card"><h2>${label}</h2>${Array.isArray(data[key]) && data[key].length && typeof data[key][0] === 'object'
      ? html`<${Table} rows=${data[key]} columns=${Object.keys(data[key][0]).map((column) => ({ key: column, label: column }))} />`
      : html`<${JsonView} value=${data[key]} label=${label} />`}</div>`)}
    <${ExplainDialog} workspace=${workspace} profile=${data} identity=${explaining} onClose=${() => setExplaining(null)} />
    <${SplitDialog} open=${splitting} workspace=${workspace} profile=${data} onClose=${() => setSplitting(false)} onSplit=${() => profile.reload()} />
    <${EventDialog} workspace=${workspace} offset=${eventOffset} onClose=${() => setEventOffset(null)} />
  </section>`
}

function traitText (traits, name) {
  const trait = traits && traits[name]
  return trait && typeof trait.value === 'string' ? trait.value : null
}

function ExplainDialog ({ workspace, profile, identity, onClose }) {
  const others = identity ? profile.identities.filter((other) => other !== identity) : []
  const [other, setOther] = useState(0)
  const target = others[Math.min(other, others.length - 1)]
  const explanation = useAsync(() => identity && target
    ? workspaceApi(workspace).profiles.explain(`${identity.type}:${identity.id}`, `${target.type}:${target.id}`)
    : Promise.resolve(null), [identity, target && target.id, target && target.type])
  return html`<${Dialog} open=${!!identity} title="Why are these one person?" onClose=${onClose} wide>
    ${identity ? html`<div>
      <${Field} label=${`From ${identity.type}:${identity.id} to`}>
        <select value=${other} onChange=${(event) => setOther(Number(event.target.value))}>
          ${others.map((item, index) => html`<option value=${index}>${item.type}:${item.id}</option>`)}
        </select>
      <//>
      ${explanation.error ? html`<${ErrorBox} error=${explanation.error} />` : !explanation.data ? html`<${Loading} />` : html`<div>
        <p class="notice notice-info">${explanation.data.summary}</p>
        <${Table} rows=${explanation.data.path} caption="The chain of events that linked them"
          columns=${[
            { key: 'from', label: 'From', render: (hop) => html`<code>${hop.from.type}:${hop.from.id}</code>` },
            { key: 'to', label: 'To', render: (hop) => html`<code>${hop.to.type}:${hop.to.id}</code>` },
            { key: 'rule', label: 'Rule' },
            { key: 'event_type', label: 'Event' },
            { key: 'source', label: 'Source' },
            { key: 'timestamp', label: 'When', render: (hop) => html`<${Time} value=${hop.timestamp} />` },
            { key: 'message_id', label: 'messageId', render: (hop) => html`<code class="small">${hop.message_id}</code>` }
          ]} />
      </div>`}
    </div>` : null}
  <//>`
}

function SplitDialog ({ open, workspace, profile, onClose, onSplit }) {
  const app = useApp()
  const [chosen, setChosen] = useState({})
  const [reason, setReason] = useState('')
  const [error, setError] = useState(null)
  const [result, setResult] = useState(null)
  const identities = profile.identities
  const picked = identities.filter((identity) => chosen[`${identity.type}:${identity.id}`])
  const close = () => { setChosen({}); setReason(''); setError(null); setResult(null); onClose() }
  const submit = async (event) => {
    event.preventDefault()
    setError(null)
    try {
      const answer = await workspaceApi(workspace).profiles.split(profile.id, { identities: picked.map((identity) => ({ type: identity.type, id: identity.id })), reason })
      setResult(answer)
      app.notify('Split recorded: the profile is being re-resolved from the log.')
      onSplit()
    } catch (failure) { setError(failure) }
  }
  return html`<${Dialog} open=${open} title="Split this profile" onClose=${close}>
    ${result ? html`<div><p class="notice notice-good" role="status">Split ${result.id || ''} recorded. Its events are re-applied under the new separation; the split is kept for every replay.</p>
      <${JsonView} value=${result} label="Split result" /><div class="form-actions"><button type="button" class="primary" onClick=${close}>Done</button></div></div>`
    : html`<form onSubmit=${submit}>
      <p>Choose the identifiers that belong to someone else. They leave this profile with the events that carry them; tandem never links them back.</p>
      <fieldset><legend>Identifiers to separate</legend>
        ${identities.map((identity) => {
          const key = `${identity.type}:${identity.id}`
          return html`<label class="field inline"><input type="checkbox" checked=${!!chosen[key]} onChange=${(event) => setChosen({ ...chosen, [key]: event.target.checked })} /> <code>${key}</code></label>`
        })}
      </fieldset>
      <${Field} label="Reason" hint="Kept with the split and in the audit log"><input value=${reason} onInput=${(event) => setReason(event.target.value)} /><//>
      <${ErrorBox} error=${error} />
      <div class="form-actions"><button type="submit" class="danger" disabled=${picked.length === 0 || picked.length === identities.length}>Split off ${picked.length} identifier${picked.length === 1 ? '' : 's'}</button><button type="button" onClick=${close}>Cancel</button></div>
    </form>`}
  <//>`
}

function EventDialog ({ workspace, offset, onClose }) {
  const event = useAsync(() => offset !== null ? workspaceApi(workspace).event(offset) : Promise.resolve(null), [offset])
  return html`<${Dialog} open=${offset !== null} title=${`Event at offset ${offset}`} onClose=${onClose} wide>
    ${event.error ? html`<${ErrorBox} error=${event.error} />` : !event.data ? html`<${Loading} />` : html`<div>
      <${Table} rows=${event.data.deliveries} caption="Where it went" empty="No connection in this workspace."
        columns=${[{ key: 'connection', label: 'Connection' }, { key: 'status', label: 'Status', render: (row) => html`<${Badge}>${row.status}<//>` }, { key: 'reason', label: 'Why' }]} />
      <${JsonView} value=${event.data.event} label="The stored event" />
    </div>`}
  <//>`
}
