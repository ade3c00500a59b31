// The console's API client: the public management API, nothing else (everything the console does
// can be scripted with the same calls). The browser sends the session cookie by itself; every
// state-changing call adds the session's CSRF token (X-Tandem-CSRF), which the server requires
// of cookie-authenticated changes. One function per operation, grouped by resource, so a new page
// (audiences, journeys, privacy) adds its group here.

let csrfToken = null
let onUnauthorized = () => {}

export function setCsrfToken (token) { csrfToken = token || null }
export function whenUnauthorized (callback) { onUnauthorized = callback }

/** An API error: the server's `{error: {code, message, details}}` and the HTTP status. */
export class ApiError extends Error {
  constructor (status, code, message, details) {
    super(message)
    this.status = status
    this.code = code
    this.details = details
  }
}

const enc = encodeURIComponent

function withQuery (path, query) {
  if (!query) return path
  const params = new URLSearchParams()
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === '') continue
    params.set(key, String(value))
  }
  const text = params.toString()
  return text ? `${path}?${text}` : path
}

/**
 * One call. Resolves to the parsed JSON body (or text for non-JSON answers); with
 * `{status: true}`, to `{status, data}` so a caller can tell 201 (applied) from 202 (a change
 * request was opened instead).
 */
export async function request (method, path, { body, query, status = false, text = false } = {}) {
  const headers = { accept: text ? 'text/plain, text/markdown, */*' : 'application/json' }
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' }
  if (body !== undefined) {
    headers['content-type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['x-tandem-csrf'] = csrfToken
  let response
  try {
    response = await fetch(withQuery(path, query), init)
  } catch (error) {
    throw new ApiError(0, 'network', `tandem is not reachable (${error.message})`)
  }
  const type = response.headers.get('content-type') || ''
  const data = type.includes('json') ? await response.json().catch(() => null) : await response.text()
  if (!response.ok) {
    const error = data && data.error
    const failure = new ApiError(response.status, error ? error.code : 'http_' + response.status,
      error ? error.message : `HTTP ${response.status}`, error ? error.details : undefined)
    if (response.status === 401 && !path.endsWith('/auth/login')) onUnauthorized(failure)
    throw failure
  }
  return status ? { status: response.status, data } : data
}

const get = (path, query) => request('GET', path, { query })
const post = (path, body, options) => request('POST', path, { body: body ?? {}, ...options })
const patch = (path, body, options) => request('PATCH', path, { body, ...options })
const put = (path, body, options) => request('PUT', path, { body, ...options })
const del = (path, options) => request('DELETE', path, options)

/** Organization-level calls. */
export const api = {
  login: (email, password) => post('/api/v1/auth/login', { email, password }),
  logout: () => post('/api/v1/auth/logout'),
  me: () => get('/api/v1/me'),
  roles: () => get('/api/v1/roles'),
  openapi: () => get('/api/v1/openapi.json'),
  workspaces: () => get('/api/v1/workspaces'),
  unknownKeys: () => get('/api/v1/unknown-keys'),
  organizationCatalog: () => get('/api/v1/catalog'),
  destinationTypes: () => get('/api/v1/destination-types'),
  alerts: () => get('/api/v1/alerts'),
  users: {
    list: () => get('/api/v1/users'),
    create: (user) => post('/api/v1/users', user),
    update: (id, change) => patch(`/api/v1/users/${enc(id)}`, change),
    remove: (id) => del(`/api/v1/users/${enc(id)}`)
  },
  tokens: {
    list: () => get('/api/v1/tokens'),
    create: (token) => post('/api/v1/tokens', token),
    revoke: (id) => del(`/api/v1/tokens/${enc(id)}`)
  },
  audit: {
    list: (query) => get('/api/v1/audit', query),
    verify: () => get('/api/v1/audit/verify')
  }
}

/** The calls of one workspace. */
export function workspaceApi (workspace) {
  const base = `/api/v1/workspaces/${enc(workspace)}`
  return {
    id: workspace,
    /** The destination types and their settings schemas (the workspace route: scoped credentials may read it). */
    destinationTypes: () => get(`${base}/destination-types`),
    catalog: () => get(`${base}/catalog`),
    recordOfProcessing: () => get(`${base}/record-of-processing`),
    recordOfProcessingMarkdown: () => request('GET', `${base}/record-of-processing`, { query: { format: 'markdown' }, text: true }),
    policy: () => get(`${base}/policy/effective`),
    log: () => get(`${base}/log`),
    sources: {
      list: () => get(`${base}/sources`),
      get: (id) => get(`${base}/sources/${enc(id)}`),
      create: (source) => post(`${base}/sources`, source, { status: true }),
      enable: (id) => post(`${base}/sources/${enc(id)}/enable`, {}, { status: true }),
      disable: (id) => post(`${base}/sources/${enc(id)}/disable`, {}, { status: true })
    },
    /** Server-Sent Events of the workspace (or one source): an EventSource the caller closes. */
    live: (source) => new EventSource(source ? `${base}/sources/${enc(source)}/live` : `${base}/live`),
    /** One stored event and, per connection, where it went or why not. */
    event: (offset) => get(`${base}/events/${enc(offset)}`),
    profiles: {
      search: (query) => get(`${base}/profiles`, query),
      get: (id) => get(`${base}/profiles/${enc(id)}`),
      split: (id, body) => post(`${base}/profiles/${enc(id)}/split`, body),
      explain: (a, b) => get(`${base}/identity/explain`, { a, b }),
      refusals: () => get(`${base}/identity/refusals`)
    },
    destinations: {
      list: () => get(`${base}/destinations`),
      get: (id) => get(`${base}/destinations/${enc(id)}`),
      create: (destination) => post(`${base}/destinations`, destination, { status: true }),
      update: (id, change) => patch(`${base}/destinations/${enc(id)}`, change, { status: true }),
      remove: (id) => del(`${base}/destinations/${enc(id)}`, { status: true })
    },
    connections: {
      list: () => get(`${base}/connections`),
      get: (id) => get(`${base}/connections/${enc(id)}`),
      create: (connection) => post(`${base}/connections`, connection, { status: true }),
      update: (id, change) => patch(`${base}/connections/${enc(id)}`, change, { status: true }),
      remove: (id) => del(`${base}/connections/${enc(id)}`, { status: true }),
      dlq: (id, query) => get(`${base}/connections/${enc(id)}/dlq`, query),
      dlqEntry: (id, entry) => get(`${base}/connections/${enc(id)}/dlq/${enc(entry)}`),
      replay: (id, selection) => post(`${base}/connections/${enc(id)}/dlq/replay`, selection),
      replayProgress: (id, job) => get(`${base}/connections/${enc(id)}/dlq/replays/${enc(job)}`),
      discard: (id, selection) => post(`${base}/connections/${enc(id)}/dlq/discard`, selection),
      backfill: (id, range) => post(`${base}/connections/${enc(id)}/backfill`, range),
      backfillProgress: (id) => get(`${base}/connections/${enc(id)}/backfill`)
    },
    testTransformation: (body) => post(`${base}/transformations/test`, body),
    plans: {
      list: () => get(`${base}/tracking-plans`),
      get: (id) => get(`${base}/tracking-plans/${enc(id)}`),
      violations: (id) => get(`${base}/tracking-plans/${enc(id)}/violations`)
    },
    quarantine: {
      list: (query) => get(`${base}/quarantine`, query),
      get: (entry) => get(`${base}/quarantine/${enc(entry)}`),
      release: (selection) => post(`${base}/quarantine/release`, selection),
      discard: (selection) => post(`${base}/quarantine/discard`, selection)
    },
    changes: {
      list: (query) => get(`${base}/change-requests`, query),
      get: (id) => get(`${base}/change-requests/${enc(id)}`),
      propose: (body) => post(`${base}/change-requests`, body, { status: true }),
      comment: (id, text) => post(`${base}/change-requests/${enc(id)}/comments`, { text }),
      approve: (id, comment) => post(`${base}/change-requests/${enc(id)}/approve`, comment ? { comment } : {}),
      reject: (id, comment) => post(`${base}/change-requests/${enc(id)}/reject`, comment ? { comment } : {}),
      withdraw: (id) => post(`${base}/change-requests/${enc(id)}/withdraw`, {})
    },
    history: (query) => get(`${base}/config/history`, query),
    rollback: (body) => post(`${base}/config/rollback`, body, { status: true }),
    tokens: {
      list: () => get(`${base}/tokens`),
      create: (token) => post(`${base}/tokens`, token),
      revoke: (id) => del(`${base}/tokens/${enc(id)}`)
    }
  }
}

export { put }
