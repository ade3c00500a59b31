// The console in headless Chromium against a real tandem (started by run.sh) and a real webhook
// receiver on loopback (started here). Each test logs in through the login form as a user of one
// role, as a person would. Every page also fails the run if it breaks the Content-Security-Policy,
// throws, or asks for anything outside the tandem server.
import { chromium } from 'playwright-core'
import http from 'node:http'
import fs from 'node:fs'
import path from 'node:path'

const BASE = process.env.TANDEM_URL
const ADMIN_TOKEN = process.env.TANDEM_ADMIN_TOKEN
const WEB_KEY = process.env.WEB_WRITE_KEY
const SHOP_KEY = process.env.SHOP_WRITE_KEY
const SHOTS = process.env.SCREENSHOT_DIR ? path.resolve(process.env.SCREENSHOT_DIR) : null
const PASSWORD = 'correct horse battery staple'
// Not `name`: a person's name is PII, shown masked to a marketer (who lacks ReadPii).
const XSS = {
  headline: '<img src=x onerror="window.__xss=1">',
  company: '<script>window.__xss=2</script>',
  website: 'javascript:window.__xss=3'
}

const USERS = {
  itAdmin: { email: 'it-admin@acme.test', role: 'org_admin', name: 'Ines (IT)' },
  emeaAdmin: { email: 'emea-admin@acme.test', role: 'workspace_admin', workspace: 'emea', name: 'Erik (EMEA IT)' },
  marketer: { email: 'marketer@acme.test', role: 'marketer', workspace: 'emea', name: 'Mia (marketing)' },
  privacy: { email: 'privacy@acme.test', role: 'privacy_officer', name: 'Paul (privacy)' },
  viewer: { email: 'viewer@acme.test', role: 'viewer', name: 'Vera (viewer)' }
}

// ---------------------------------------------------------------- helpers

async function call (method, url, body, headers = {}) {
  const response = await fetch(BASE + url, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await response.text()
  let data = text
  try { data = JSON.parse(text) } catch {}
  return { status: response.status, data, headers: response.headers }
}

async function send (writeKey, batch) {
  const response = await fetch(BASE + '/v1/batch', {
    method: 'POST',
    headers: { authorization: 'Basic ' + Buffer.from(writeKey + ':').toString('base64'), 'content-type': 'application/json' },
    body: JSON.stringify({ batch })
  })
  if (response.status !== 200) throw new Error(`collect answered ${response.status}: ${await response.text()}`)
}

async function eventually (what, check, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs
  let last
  while (Date.now() < deadline) {
    try {
      const value = await check()
      if (value) return value
    } catch (error) { last = error }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  throw new Error(`timed out waiting for ${what}${last ? ': ' + last.message : ''}`)
}

function assert (condition, message) { if (!condition) throw new Error(message) }

/** A webhook receiver on loopback: every request body it got. */
async function startReceiver () {
  const received = []
  // While `refusePoison` is set, a request holding an event with `properties.poison` gets a 400
  // (a permanent refusal: tandem bisects the batch and dead-letters that event alone).
  const receiver = { received, refusePoison: true }
  receiver.server = http.createServer((request, response) => {
    let body = ''
    request.on('data', (chunk) => { body += chunk })
    request.on('end', () => {
      let events = []
      try {
        const json = JSON.parse(body)
        events = json.batch || [json]
      } catch { events = [{ unparsable: body }] }
      if (receiver.refusePoison && events.some((event) => event.properties && event.properties.poison)) {
        response.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"poison refused"}')
        return
      }
      received.push(...events)
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
    })
  })
  await new Promise((resolve) => receiver.server.listen(0, '127.0.0.1', resolve))
  receiver.url = `http://127.0.0.1:${receiver.server.address().port}/hook`
  return receiver
}

// ---------------------------------------------------------------- browser sessions

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']
})
const problems = []

/** A fresh browser context (its own cookies) with its page watched for CSP, errors and egress. */
async function newPage (label) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } })
  await context.addInitScript(() => {
    window.__csp = []
    document.addEventListener('securitypolicyviolation', (event) => window.__csp.push(`${event.violatedDirective} ${event.blockedURI}`))
  })
  const page = await context.newPage()
  page.on('dialog', (dialog) => dialog.accept())
  page.on('pageerror', (error) => problems.push(`${label}: page error: ${error.message}`))
  page.on('console', (message) => {
    const text = message.text()
    if (message.type() === 'error' && !text.startsWith('Failed to load resource')) problems.push(`${label}: console error: ${text}`)
    if (/Content Security Policy/i.test(text)) problems.push(`${label}: CSP: ${text}`)
  })
  page.on('request', (request) => {
    if (!request.url().startsWith(BASE) && !request.url().startsWith('data:') && !request.url().startsWith('blob:')) {
      problems.push(`${label}: request outside tandem: ${request.url()}`)
    }
  })
  return { context, page }
}

async function cspViolations (page) { return page.evaluate(() => window.__csp) }

async function login (user, label) {
  const session = await newPage(label || user.email)
  const { page } = session
  await page.goto(BASE + '/')
  await page.getByLabel('Email').fill(user.email)
  await page.getByLabel('Password').fill(PASSWORD)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.locator('nav#main-nav').waitFor()
  return session
}

async function navTexts (page) {
  return page.locator('nav#main-nav a').allTextContents()
}

async function shot (page, name) {
  if (!SHOTS) return
  fs.mkdirSync(SHOTS, { recursive: true })
  await page.evaluate(() => window.scrollTo(0, 0))
  await page.waitForTimeout(600) // charts finish drawing
  await page.screenshot({ path: path.join(SHOTS, name + '.png'), fullPage: false })
}

// ---------------------------------------------------------------- setup

for (const user of Object.values(USERS)) {
  const created = await call('POST', '/api/v1/users', { email: user.email, name: user.name, role: user.role, workspace: user.workspace, password: PASSWORD })
  assert(created.status === 201, `creating ${user.email}: ${created.status} ${JSON.stringify(created.data)}`)
}
const receiver = await startReceiver()
const state = {}

// ---------------------------------------------------------------- tests

const tests = []
const test = (name, body) => tests.push({ name, body })

test('the page is served with a strict Content-Security-Policy and no inline code', async () => {
  const response = await fetch(BASE + '/')
  const csp = response.headers.get('content-security-policy') || ''
  for (const part of ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"]) assert(csp.includes(part), `CSP lacks ${part}: ${csp}`)
  assert(!csp.includes('unsafe-inline') && !csp.includes('unsafe-eval'), `CSP allows inline or eval: ${csp}`)
  assert(response.headers.get('x-content-type-options') === 'nosniff', 'nosniff')
  const page = await response.text()
  assert(!/<script>|<style|style="/.test(page), 'inline script or style in the page')
})

test('a wrong password is refused with a message', async () => {
  const { context, page } = await newPage('wrong password')
  await page.goto(BASE + '/')
  await page.getByLabel('Email').fill(USERS.marketer.email)
  await page.getByLabel('Password').fill('not the password at all')
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('alert').filter({ hasText: 'wrong' }).waitFor()
  await shot(page, 'login')
  await context.close()
})

test('each role logs in and sees only its pages', async () => {
  const expectations = {
    itAdmin: { has: ['Flow map', 'Live debugger', 'Profiles', 'Destinations', 'Change requests', 'Audit log', 'Users', 'API tokens'], lacks: [] },
    emeaAdmin: { has: ['Flow map', 'Live debugger', 'Profiles', 'Change requests', 'API tokens'], lacks: ['Users', 'Audit log'] },
    marketer: { has: ['Flow map', 'Live debugger', 'Profiles', 'Destinations', 'Change requests', 'Quarantine'], lacks: ['Users', 'Audit log', 'API tokens'] },
    privacy: { has: ['Flow map', 'Profiles', 'Audit log', 'Record of processing'], lacks: ['Live debugger', 'Users', 'API tokens', 'Change requests', 'Quarantine'] },
    viewer: { has: ['Flow map', 'Destinations', 'Tracking plans', 'Policies'], lacks: ['Profiles', 'Live debugger', 'Users', 'Audit log', 'Change requests'] }
  }
  for (const [key, expected] of Object.entries(expectations)) {
    const user = USERS[key]
    const { context, page } = await login(user)
    const texts = await navTexts(page)
    for (const item of expected.has) assert(texts.includes(item), `${user.role} should see ${item}; sees ${texts.join(', ')}`)
    for (const item of expected.lacks) assert(!texts.includes(item), `${user.role} should not see ${item}`)
    const whoami = await page.locator('.whoami').textContent()
    assert(whoami.includes(user.email) && whoami.includes(user.role), `top bar shows ${whoami}`)
    const options = await page.locator('.workspace-switcher option').allTextContents()
    if (user.workspace) assert(options.length === 1 && options[0].includes(user.workspace), `${user.role} in ${user.workspace} switches among ${options}`)
    else assert(options.length === 2, `organization users see both workspaces: ${options}`)
    await page.getByRole('button', { name: 'Log out' }).click()
    await page.getByRole('button', { name: 'Sign in' }).waitFor()
    const me = await page.evaluate(async () => (await fetch('/api/v1/me')).status)
    assert(me === 401, `after logout /api/v1/me answers ${me}`)
    await context.close()
  }
})

test('a marketer cannot reach the admin pages, nor change anything without the CSRF token', async () => {
  const { context, page } = await login(USERS.marketer)
  for (const pageId of ['users', 'audit', 'tokens']) {
    await page.goto(`${BASE}/#/w/emea/${pageId}`)
    await page.getByRole('heading', { name: /Not available/ }).waitFor()
    const text = await page.locator('main').textContent()
    assert(/permission|scoped/.test(text), `refusal names why: ${text}`)
  }
  const answers = await page.evaluate(async () => {
    const me = await (await fetch('/api/v1/me')).json()
    const users = await fetch('/api/v1/users')
    const noToken = await fetch('/api/v1/workspaces/emea/sources', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"x","owner":"y"}' })
    const withToken = await fetch('/api/v1/users', { method: 'POST', headers: { 'content-type': 'application/json', 'x-tandem-csrf': me.csrf_token }, body: '{}' })
    const foreign = await fetch('/api/v1/workspaces/apac/sources')
    return { users: users.status, noToken: [noToken.status, (await noToken.json()).error.code], withToken: withToken.status, foreign: foreign.status }
  })
  assert(answers.users === 403, `GET /api/v1/users as marketer: ${answers.users}`)
  assert(answers.noToken[0] === 403 && answers.noToken[1] === 'csrf_rejected', `a cookie POST without the token: ${answers.noToken}`)
  assert(answers.withToken === 403, `POST /api/v1/users with the token is still forbidden: ${answers.withToken}`)
  assert(answers.foreign === 403, `another workspace: ${answers.foreign}`)
  await page.goto(`${BASE}/#/w/emea/users`)
  await shot(page, 'marketer-refused')
  await context.close()
})

test('an IT admin connects a webhook destination and sees deliveries arrive', async () => {
  const { context, page } = await login(USERS.itAdmin)
  await page.goto(`${BASE}/#/w/apac/destinations`)
  await page.getByRole('link', { name: 'Set up webhook' }).click()
  await page.getByLabel(/^Name/).fill('CRM receiver')
  await page.getByLabel(/^Owner/).fill('crm-team@acme.test')
  await page.getByLabel(/^Purpose/).fill('Customer service follow-up')
  await page.getByLabel(/^url/).fill(receiver.url)
  await page.getByRole('button', { name: 'Create destination' }).click()
  await page.getByRole('heading', { name: 'CRM receiver' }).waitFor()
  await page.getByRole('link', { name: 'Connect sources' }).click()
  await page.getByRole('heading', { name: 'New connection' }).waitFor()
  const idField = page.getByLabel(/^Id/)
  assert((await idField.inputValue()) === 'to-crm-receiver', `connection id prefilled: ${await idField.inputValue()}`)
  await page.getByRole('button', { name: 'Create connection' }).click()
  await page.getByRole('heading', { name: 'Connection to-crm-receiver' }).waitFor()
  const before = receiver.received.length
  await send(SHOP_KEY, Array.from({ length: 5 }, (_, index) => ({ type: 'track', event: 'Product Viewed', userId: `apac-${index}`, messageId: `apac-view-${index}`, properties: { sku: `SKU-${index}` } })))
  await eventually('5 events at the receiver', () => receiver.received.filter((event) => String(event.messageId).startsWith('apac-view-')).length >= 5)
  assert(receiver.received.length - before >= 5, 'the receiver got the events')
  await eventually('the console to show them delivered', async () => {
    const text = await page.locator('.stats').first().textContent()
    return /([5-9]|\d\d+)\s*delivered/.test(text)
  })
  await shot(page, 'connection-health')
  await page.goto(`${BASE}/#/w/apac/flow`)
  await page.getByRole('cell', { name: 'CRM receiver' }).waitFor()
  const row = await page.locator('tr', { hasText: 'to-crm-receiver' }).textContent()
  assert(/delivered/.test(row), `flow map row: ${row}`)
  await context.close()
})

test('a refused event lands in the dead-letter queue; it is inspected and replayed after the fix', async () => {
  const { context, page } = await login(USERS.itAdmin)
  receiver.refusePoison = true
  await send(SHOP_KEY, [
    { type: 'track', event: 'Order Completed', userId: 'apac-poison', messageId: 'apac-poison-1', properties: { poison: true } },
    { type: 'track', event: 'Order Completed', userId: 'apac-fine', messageId: 'apac-fine-1', properties: { total: 1 } }
  ])
  await eventually('the healthy event delivered', () => receiver.received.some((event) => event.messageId === 'apac-fine-1'))
  await eventually('the dead letter', async () => (await call('GET', '/api/v1/workspaces/apac/connections/to-crm-receiver/dlq')).data.entries.length === 1)
  await page.goto(`${BASE}/#/w/apac/connections/to-crm-receiver`)
  await page.getByRole('tab', { name: /Dead letters \(1\)/ }).click()
  await page.getByRole('cell', { name: /HTTP 400/ }).waitFor()
  await page.getByRole('button', { name: 'Inspect' }).click()
  await page.locator('dialog[open] pre.json', { hasText: 'apac-poison-1' }).waitFor()
  await shot(page, 'dead-letter')
  await page.getByRole('button', { name: 'Close' }).click()
  receiver.refusePoison = false
  await page.getByRole('checkbox', { name: /Select/ }).check()
  await page.getByRole('button', { name: 'Replay selected (1)' }).click()
  await eventually('the replayed event at the receiver', () => receiver.received.some((event) => event.messageId === 'apac-poison-1'))
  await page.getByText('No dead letters.').waitFor()
  await context.close()
})

test('a marketer proposes a destination; the IT admin reviews the diff and approves it', async () => {
  const marketer = await login(USERS.marketer)
  let page = marketer.page
  await page.goto(`${BASE}/#/w/emea/destinations/new/webhook`)
  await page.getByLabel(/^Name/).fill('Ads audience hook')
  await page.getByLabel(/^Owner/).fill('marketing@acme.test')
  await page.getByLabel(/^url/).fill(receiver.url + '?ads=1')
  await page.getByRole('button', { name: 'Create destination' }).click()
  const notice = page.locator('.notice', { hasText: 'proposed as change request' })
  await notice.waitFor()
  const requestId = (await notice.textContent()).match(/cr_[A-Za-z0-9_-]+/)[0]
  const missing = await call('GET', '/api/v1/workspaces/emea/destinations/ads-audience-hook')
  assert(missing.status === 404, `nothing applied before approval: ${missing.status}`)
  await notice.getByRole('link', { name: 'Open the change request' }).click()
  await page.getByRole('heading', { name: 'After' }).first().waitFor()
  assert(await page.getByRole('button', { name: 'Approve and apply' }).count() === 0, 'a marketer has no approve button')
  await page.getByLabel(/Comment/).fill('Needed for the spring campaign')
  await page.getByRole('button', { name: 'Comment', exact: true }).click()
  await page.getByText('Needed for the spring campaign').first().waitFor()
  await marketer.context.close()

  const admin = await login(USERS.emeaAdmin)
  page = admin.page
  await page.goto(`${BASE}/#/w/emea/changes`)
  await page.locator('tr', { hasText: requestId }).getByRole('link').click()
  await page.getByRole('heading', { name: 'After' }).first().waitFor()
  const diff = await page.locator('main').textContent()
  assert(diff.includes('Ads audience hook') && diff.includes('marketer@acme.test'), 'the diff shows the proposal and its author')
  await shot(page, 'change-request')
  await page.getByRole('button', { name: 'Approve and apply' }).click()
  await page.locator('.page-header .badge', { hasText: 'applied' }).waitFor()
  const applied = await call('GET', '/api/v1/workspaces/emea/destinations/ads-audience-hook')
  assert(applied.status === 200, `applied after approval: ${applied.status}`)
  await admin.context.close()
})

test('the live debugger shows each event, its validation and where it went; it pauses', async () => {
  // A connection in emea for the routing view (an exempt admin's change applies at once).
  const connection = await call('POST', '/api/v1/workspaces/emea/connections', { id: 'web-to-ads', sources: ['web'], destination: 'ads-audience-hook', event_types: ['track'] })
  assert(connection.status === 201, `connection: ${connection.status} ${JSON.stringify(connection.data)}`)
  const { context, page } = await login(USERS.marketer)
  await page.goto(`${BASE}/#/w/emea/live`)
  await page.locator('.pill-live', { hasText: 'live' }).waitFor()
  await send(WEB_KEY, [
    { type: 'track', event: 'Order Completed', userId: 'u-live', messageId: 'live-ok', properties: { order_id: 'o1', total: 42 } },
    { type: 'track', event: 'Order Completed', userId: 'u-live', messageId: 'live-bad', properties: { order_id: 'o2' } },
    { type: 'page', name: 'Home', anonymousId: 'anon-live', messageId: 'live-page' }
  ])
  await page.locator('td', { hasText: 'flagged' }).waitFor()
  await page.locator('tr', { hasText: 'page' }).first().waitFor()
  await page.getByRole('button', { name: 'Pause' }).click()
  await send(WEB_KEY, [{ type: 'track', event: 'Signed Up', userId: 'u-paused', messageId: 'live-paused' }])
  await page.getByRole('button', { name: 'Resume (1 new)' }).waitFor()
  assert(await page.locator('td', { hasText: 'Signed Up' }).count() === 0, 'paused: nothing new is shown')
  await page.getByRole('button', { name: /Resume/ }).click()
  await page.locator('td', { hasText: 'Signed Up' }).waitFor()
  await page.locator('tr', { hasText: 'flagged' }).getByRole('button', { name: 'Inspect' }).click()
  await page.getByRole('cell', { name: '/properties/total' }).waitFor()
  await page.getByRole('cell', { name: 'web-to-ads' }).waitFor()
  await eventually('the routing to say delivered', async () => {
    await page.getByRole('button', { name: 'Refresh' }).click()
    await page.waitForTimeout(300)
    return (await page.locator('tr', { hasText: 'web-to-ads' }).textContent()).includes('delivered')
  })
  await shot(page, 'live-debugger')
  // The page event is not a track call: filtered by the connection, and the debugger says why.
  await page.locator('tr', { hasText: 'Home' }).getByRole('button', { name: 'Inspect' }).click()
  await page.locator('tr', { hasText: 'web-to-ads' }).filter({ hasText: 'filtered' }).waitFor()
  await context.close()
})

test('an XSS payload in traits renders as text and never runs', async () => {
  await send(WEB_KEY, [{ type: 'identify', userId: 'xss-user', messageId: 'xss-identify', traits: { ...XSS, email: 'xss@acme.test' } }])
  await eventually('the profile', async () => (await call('GET', '/api/v1/workspaces/emea/profiles/user_id:xss-user')).status === 200)
  const { context, page } = await login(USERS.marketer)
  await page.goto(`${BASE}/#/w/emea/profiles`)
  await page.getByLabel('Value').fill('xss-user')
  await page.getByRole('button', { name: 'Search' }).click()
  await page.getByRole('heading', { name: 'Traits' }).waitFor()
  const text = await page.locator('main').textContent()
  for (const value of Object.values(XSS)) assert(text.includes(value), `the trait ${value} is shown as text`)
  const ran = await page.evaluate(() => ({ xss: window.__xss, images: document.querySelectorAll('img[src="x"]').length, scripts: [...document.querySelectorAll('main script')].length }))
  assert(ran.xss === undefined && ran.images === 0 && ran.scripts === 0, `the payload ran or became markup: ${JSON.stringify(ran)}`)
  assert((await cspViolations(page)).length === 0, `CSP violations: ${await cspViolations(page)}`)
  await page.getByRole('button', { name: /Why is this them/ }).first().waitFor().catch(() => {})
  await shot(page, 'profile')
  // The same payload in the live debugger's event view.
  await page.goto(`${BASE}/#/w/emea/live`)
  await page.locator('.pill-live', { hasText: 'live' }).waitFor()
  await send(WEB_KEY, [{ type: 'identify', userId: 'xss-user', messageId: 'xss-identify-2', traits: XSS }])
  await page.locator('tr', { hasText: 'xss-user' }).getByRole('button', { name: 'Inspect' }).click()
  await page.locator('pre.json', { hasText: 'onerror' }).waitFor()
  const again = await page.evaluate(() => ({ xss: window.__xss, images: document.querySelectorAll('img[src="x"]').length }))
  assert(again.xss === undefined && again.images === 0, `the payload ran in the debugger: ${JSON.stringify(again)}`)
  await context.close()
})

test('profile 360 explains a merge', async () => {
  await send(WEB_KEY, [
    { type: 'page', anonymousId: 'anon-42', messageId: 'merge-page', name: 'Pricing' },
    { type: 'identify', anonymousId: 'anon-42', userId: 'ann', messageId: 'merge-identify', traits: { email: 'ann@acme.test', name: 'Ann Example', plan: 'pro' } }
  ])
  await eventually('the merged profile', async () => {
    const answer = await call('GET', '/api/v1/workspaces/emea/profiles/user_id:ann')
    return answer.status === 200 && answer.data.identities.length >= 2
  })
  const { context, page } = await login(USERS.emeaAdmin)
  await page.goto(`${BASE}/#/w/emea/profiles/user_id:ann`)
  await page.getByRole('heading', { name: 'Ann Example' }).waitFor()
  await page.getByRole('button', { name: 'Why is this them?' }).first().click()
  await page.locator('dialog[open] .notice').waitFor()
  const explanation = await page.locator('dialog[open]').textContent()
  assert(/merge-identify|identify/.test(explanation), `the explanation names the linking event: ${explanation}`)
  await page.getByRole('button', { name: 'Close' }).click()
  assert(await page.getByRole('button', { name: 'Split profile…' }).count() === 1, 'an admin may split')
  await context.close()
})

test('governance pages: plans, policies, record of processing, audit log with its chain verified', async () => {
  const { context, page } = await login(USERS.itAdmin)
  await page.goto(`${BASE}/#/w/emea/plans`)
  await page.getByRole('link', { name: 'Website orders' }).click()
  await page.getByRole('cell', { name: '/properties/total' }).first().waitFor()
  await shot(page, 'tracking-plan')
  await page.goto(`${BASE}/#/w/emea/policy`)
  await page.getByRole('cell', { name: 'retention_days' }).waitFor()
  const policy = await page.locator('tr', { hasText: 'retention_days' }).textContent()
  assert(policy.includes('180') && policy.includes('workspace'), `the override and where it comes from: ${policy}`)
  await page.goto(`${BASE}/#/w/emea/audit`)
  await page.getByText('Chain verified').waitFor()
  await page.getByLabel('Action').fill('change_request.')
  await page.getByRole('button', { name: 'Filter' }).click()
  await page.getByRole('cell', { name: 'change_request.approve' }).first().waitFor()
  await shot(page, 'audit-log')
  await page.goto(`${BASE}/#/w/emea/processing`)
  await page.getByRole('heading', { name: 'Record of processing' }).waitFor()
  await page.goto(`${BASE}/#/w/emea/users`)
  await page.getByRole('cell', { name: USERS.marketer.email }).waitFor()
  await shot(page, 'users')
  await page.goto(`${BASE}/#/w/emea/flow`)
  await page.getByRole('cell', { name: 'Website' }).first().waitFor()
  await shot(page, 'flow-map')
  await page.goto(`${BASE}/#/w/emea/destinations`)
  await page.getByRole('heading', { name: 'Catalog' }).waitFor()
  await shot(page, 'destinations')
  await context.close()
})

test('the console is usable on a narrow screen and by keyboard', async () => {
  const { context, page } = await login(USERS.marketer)
  await page.setViewportSize({ width: 420, height: 860 })
  await page.goto(`${BASE}/#/w/emea/flow`)
  const menu = page.getByRole('button', { name: /Menu/ })
  await menu.waitFor()
  assert(!(await page.locator('nav#main-nav').isVisible()), 'the navigation folds away on a phone')
  await menu.click()
  await page.getByRole('link', { name: 'Profiles' }).click()
  await page.getByRole('heading', { name: 'Profiles' }).waitFor()
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.textContent)
  assert(focused === 'Profiles', `after navigation the page heading has the focus: ${focused}`)
  await page.keyboard.press('Tab')
  const next = await page.evaluate(() => document.activeElement && document.activeElement.tagName)
  assert(next === 'SELECT' || next === 'INPUT', `Tab reaches the search form: ${next}`)
  await context.close()
})

// ---------------------------------------------------------------- run

let passed = 0
let failed = 0
for (const { name, body } of tests) {
  const before = problems.length
  try {
    await body()
    if (problems.length > before) throw new Error(problems.slice(before).join('\n'))
    passed++
    console.log(`ok - ${name}`)
  } catch (error) {
    failed++
    console.log(`not ok - ${name}\n  ${String(error.stack || error).split('\n').slice(0, 6).join('\n  ')}`)
  }
}
await browser.close()
receiver.server.close()
console.log(`console: ${passed} passed, ${failed} failed`)
process.exit(failed ? 1 : 0)
