// A form generated from a JSON Schema: each destination type's `settings_schema`
// (GET /api/v1/destination-types). It covers what those schemas use — strings (uri, secrets),
// integers and numbers with bounds, booleans, enums and consts, nested objects, string maps
// (headers), string lists, and `oneOf` between object shapes told apart by a `type` const (auth).
// Only fields the user filled are sent, so the server's defaults apply to the rest; the server
// checks everything again and its problems are shown at their fields.
import { html, useState } from './lib.js'
import { Field } from './ui.js'

const SECRET_NAME = /(secret|password|token|private|credential)/i

/** The value a schema's form starts with, from an existing value (editing) or nothing. */
export function initialValue (schema, existing) {
  return existing === undefined ? {} : JSON.parse(JSON.stringify(existing))
}

/** `value` without empty strings, empty objects and unset fields. */
export function prune (value) {
  if (Array.isArray(value)) return value.length ? value : undefined
  if (value && typeof value === 'object') {
    const out = {}
    for (const [key, item] of Object.entries(value)) {
      const pruned = prune(item)
      if (pruned !== undefined) out[key] = pruned
    }
    return Object.keys(out).length ? out : undefined
  }
  if (value === '' || value === null || value === undefined) return undefined
  return value
}

/** Problems from a 400 answer, by dotted path (`settings.url` → `url`). */
export function problemsByPath (error, prefix = 'settings') {
  const out = {}
  const details = error && error.details
  const list = Array.isArray(details) ? details : details && (details.problems || details.settings)
  if (!Array.isArray(list)) return out
  for (const problem of list) {
    if (!problem || typeof problem !== 'object') continue
    let path = String(problem.path ?? problem.field ?? '')
    if (path.startsWith(prefix + '.')) path = path.slice(prefix.length + 1)
    out[path] = problem.message || JSON.stringify(problem)
  }
  return out
}

/** The form for `schema` (an object schema), editing `value` through `onChange`. */
export function SchemaForm ({ schema, value, onChange, problems = {}, path = '' }) {
  const properties = schema.properties || {}
  const required = new Set(schema.required || [])
  const oneOfRequired = (schema.oneOf || []).filter((branch) => branch.required && !branch.properties).map((branch) => branch.required.join(' + '))
  const set = (name, next) => {
    const copy = { ...(value || {}) }
    if (next === undefined) delete copy[name]
    else copy[name] = next
    onChange(copy)
  }
  return html`<div class="schema-form">
    ${oneOfRequired.length ? html`<p class="field-hint">Give exactly one of: ${oneOfRequired.join(', or ')}.</p>` : null}
    ${problems[path] ? html`<p class="field-error" role="alert">${problems[path]}</p>` : null}
    ${Object.entries(properties).map(([name, property]) => html`<${SchemaField} key=${name} name=${name} schema=${property}
      required=${required.has(name)} value=${value ? value[name] : undefined} onChange=${(next) => set(name, next)}
      problems=${problems} path=${path ? `${path}.${name}` : name} />`)}
  </div>`
}

function SchemaField ({ name, schema, required, value, onChange, problems, path }) {
  const label = name.replace(/_/g, ' ')
  const hint = [schema.description, schema.default !== undefined ? `default: ${JSON.stringify(schema.default)}` : ''].filter(Boolean).join(' — ')
  const error = problems[path]
  const common = { label, hint, error, required }

  if (schema.oneOf && schema.oneOf.some((branch) => branch.properties)) {
    return html`<${OneOfField} ...${common} schema=${schema} value=${value} onChange=${onChange} problems=${problems} path=${path} />`
  }
  if (schema.enum) {
    return html`<${Field} ...${common}><select value=${value ?? ''} onChange=${(event) => onChange(event.target.value === '' ? undefined : event.target.value)}>
      <option value="">${schema.default !== undefined ? `(default: ${schema.default})` : '(none)'}</option>
      ${schema.enum.map((option) => html`<option value=${option}>${option}</option>`)}
    </select><//>`
  }
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type
  if (type === 'boolean') {
    return html`<label class="field inline"><input type="checkbox" checked=${value ?? schema.default ?? false} onChange=${(event) => onChange(event.target.checked)} />
      <span class="field-label">${label}</span>${hint ? html`<span class="field-hint">${hint}</span>` : null}${error ? html`<span class="field-error" role="alert">${error}</span>` : null}</label>`
  }
  if (type === 'integer' || type === 'number') {
    return html`<${Field} ...${common}><input type="number" inputmode="numeric" step=${type === 'integer' ? 1 : 'any'} min=${schema.minimum} max=${schema.maximum}
      required=${required} value=${value ?? ''} placeholder=${schema.default ?? ''}
      onInput=${(event) => onChange(event.target.value === '' ? undefined : Number(event.target.value))} /><//>`
  }
  if (type === 'array') {
    return html`<${Field} ...${common} hint=${[hint, 'one per line'].filter(Boolean).join(' — ')}><textarea rows="3" required=${required}
      value=${(value || []).join('\n')} onInput=${(event) => onChange(event.target.value.split('\n').map((line) => line.trim()).filter(Boolean))}></textarea><//>`
  }
  if (type === 'object' && schema.properties) {
    return html`<fieldset><legend>${label}${required ? ' *' : ''}</legend>${schema.description ? html`<p class="field-hint">${schema.description}</p>` : null}
      <${SchemaForm} schema=${schema} value=${value} onChange=${(next) => onChange(prune(next))} problems=${problems} path=${path} /></fieldset>`
  }
  if (type === 'object') {
    return html`<${MapField} ...${common} value=${value} onChange=${onChange} />`
  }
  const secret = SECRET_NAME.test(name)
  return html`<${Field} ...${common}><input type=${secret ? 'password' : schema.format === 'uri' ? 'url' : 'text'} autocomplete=${secret ? 'new-password' : 'off'}
    required=${required} minlength=${schema.minLength} value=${value ?? ''} placeholder=${schema.default ?? ''}
    onInput=${(event) => onChange(event.target.value === '' ? undefined : event.target.value)} /><//>`
}

/** `oneOf` object shapes with a `type` const: choose the shape, then fill its fields. */
function OneOfField ({ label, hint, error, schema, value, onChange, problems, path }) {
  const branches = schema.oneOf.filter((branch) => branch.properties)
  const constOf = (branch) => branch.properties.type && branch.properties.type.const
  const current = branches.find((branch) => value && constOf(branch) === value.type)
  return html`<fieldset><legend>${label}</legend>
    ${hint ? html`<p class="field-hint">${hint}</p>` : null}
    ${error ? html`<p class="field-error" role="alert">${error}</p>` : null}
    <label class="field"><span class="field-label">Kind</span><select value=${current ? constOf(current) : ''}
      onChange=${(event) => onChange(event.target.value ? { type: event.target.value } : undefined)}>
      <option value="">none</option>
      ${branches.map((branch) => html`<option value=${constOf(branch)}>${constOf(branch)}</option>`)}
    </select></label>
    ${current ? html`<${SchemaForm} schema=${{ ...current, properties: Object.fromEntries(Object.entries(current.properties).filter(([key]) => key !== 'type')) }}
      value=${value} onChange=${(next) => onChange({ ...next, type: constOf(current) })} problems=${problems} path=${path} />` : null}
  </fieldset>`
}

/** A map of string values (HTTP headers): rows of name and value. */
function MapField ({ label, hint, error, value, onChange }) {
  const [rows, setRows] = useState(() => Object.entries(value || {}))
  const update = (next) => {
    setRows(next)
    const object = Object.fromEntries(next.filter(([key]) => key.trim() !== ''))
    onChange(Object.keys(object).length ? object : undefined)
  }
  return html`<fieldset><legend>${label}</legend>
    ${hint ? html`<p class="field-hint">${hint}</p>` : null}
    ${rows.map(([key, item], index) => html`<div class="toolbar">
      <label class="field"><span class="field-label">Name</span><input value=${key} onInput=${(event) => update(rows.map((row, i) => i === index ? [event.target.value, row[1]] : row))} /></label>
      <label class="field"><span class="field-label">Value</span><input value=${item} onInput=${(event) => update(rows.map((row, i) => i === index ? [row[0], event.target.value] : row))} /></label>
      <button type="button" class="small" onClick=${() => update(rows.filter((_, i) => i !== index))} aria-label=${`Remove ${key || 'row'}`}>Remove</button>
    </div>`)}
    <button type="button" class="small" onClick=${() => update([...rows, ['', '']])}>Add</button>
    ${error ? html`<p class="field-error" role="alert">${error}</p>` : null}
  </fieldset>`
}
