// The page registry: every page of the console, where it sits in the navigation, and what it
// needs. A page appears only to callers holding one of its permissions (`GET /api/v1/me` lists
// them; `GET /api/v1/roles` is the table), and only in a scope it can act in: organization pages
// need an organization-wide credential. The API refuses the rest anyway — hiding is courtesy,
// the server is the guard.
//
// A new page (audiences, journeys, privacy center) is one line here and one module under pages/
// exporting `default` (a component receiving {workspace, path, query}); its API calls go in
// api.js. Until its permission exists on the server, nobody holds it and the page stays hidden.

export const SECTIONS = ['Data flow', 'Customers', 'Activation', 'Governance', 'Administration']

export const PAGES = [
  { id: 'flow', section: 'Data flow', title: 'Flow map', any: ['ReadCatalog'], load: () => import('./pages/flow.js') },
  { id: 'live', section: 'Data flow', title: 'Live debugger', any: ['ReadLiveEvents'], load: () => import('./pages/live.js') },
  { id: 'sources', section: 'Data flow', title: 'Sources', any: ['ReadCatalog'], load: () => import('./pages/sources.js') },
  { id: 'profiles', section: 'Customers', title: 'Profiles', any: ['ReadProfiles'], load: () => import('./pages/profiles.js') },
  // { id: 'audiences', section: 'Customers', title: 'Audiences', any: ['ReadAudiences'], load: () => import('./pages/audiences.js') },
  // { id: 'journeys', section: 'Customers', title: 'Journeys', any: ['ReadJourneys'], load: () => import('./pages/journeys.js') },
  { id: 'destinations', section: 'Activation', title: 'Destinations', any: ['ReadDestinations'], load: () => import('./pages/destinations.js') },
  { id: 'connections', section: 'Activation', title: 'Connections', any: ['ReadDestinations'], load: () => import('./pages/connections.js') },
  { id: 'plans', section: 'Governance', title: 'Tracking plans', any: ['ReadTrackingPlans'], load: () => import('./pages/plans.js') },
  { id: 'quarantine', section: 'Governance', title: 'Quarantine', any: ['ReadQuarantine'], load: () => import('./pages/quarantine.js') },
  { id: 'changes', section: 'Governance', title: 'Change requests', any: ['ReadChanges'], load: () => import('./pages/changes.js') },
  { id: 'policy', section: 'Governance', title: 'Policies', any: ['ReadCatalog'], load: () => import('./pages/policy.js') },
  { id: 'processing', section: 'Governance', title: 'Record of processing', any: ['ReadCatalog'], load: () => import('./pages/processing.js') },
  { id: 'audit', section: 'Governance', title: 'Audit log', any: ['ReadAudit'], organization: true, load: () => import('./pages/audit.js') },
  // { id: 'privacy', section: 'Governance', title: 'Privacy center', any: ['ManageSubjectRequests'], load: () => import('./pages/privacy.js') },
  { id: 'users', section: 'Administration', title: 'Users', any: ['ManageUsers'], organization: true, load: () => import('./pages/users.js') },
  { id: 'tokens', section: 'Administration', title: 'API tokens', any: ['ManageApiTokens'], load: () => import('./pages/tokens.js') }
]

export const pageById = (id) => PAGES.find((page) => page.id === id)

/** Why `me` may not open `page` (null when it may). */
export function refusal (page, me) {
  const held = new Set(me.permissions || [])
  if (!page.any.some((permission) => held.has(permission))) {
    return `This page needs the permission ${page.any.join(' or ')}; the role ${me.role} does not hold it.`
  }
  if (page.organization && me.workspace) {
    return `This page acts on the whole organization; your access is scoped to the workspace ${me.workspace}.`
  }
  return null
}

export const visiblePages = (me) => PAGES.filter((page) => !refusal(page, me))
