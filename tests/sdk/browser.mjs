// Loads a page (served from its own origin, so every call to tandem is cross-origin and goes
// through CORS) that runs analytics-next in Chromium, pointed at tandem.
import { chromium } from 'playwright-core'
import http from 'node:http'
import fs from 'node:fs'

const bundle = fs.readFileSync(process.argv[2])
const page = `<!doctype html><html><head><title>tandem sdk test</title><script src="/bundle.js"></script></head><body>shop</body></html>`
const server = http.createServer((request, response) => {
  if (request.url === '/bundle.js') {
    response.writeHead(200, { 'content-type': 'text/javascript' }).end(bundle)
  } else {
    response.writeHead(200, { 'content-type': 'text/html' }).end(page)
  }
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const pageUrl = `http://127.0.0.1:${server.address().port}/`

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] })
let failed = false
try {
  const tab = await browser.newPage()
  const requests = []
  tab.on('requestfinished', async (request) => {
    const response = await request.response()
    requests.push(`${request.method()} ${request.url()} ${response?.status()}`)
  })
  const failures = []
  tab.on('requestfailed', (request) => failures.push(`${request.method()} ${request.url()} ${request.failure()?.errorText}`))
  tab.on('console', (message) => console.log('page:', message.text()))
  await tab.goto(pageUrl)
  const results = await tab.evaluate(([key, url]) => window.runAnalytics(key, url), [process.env.WRITE_KEY, process.env.TANDEM_URL])
  console.log(JSON.stringify(results))
  console.log(requests.join('\n'))
  const bad = results.filter((result) => result.failed)
  const toTandem = requests.filter((line) => line.includes(process.env.TANDEM_URL))
  if (failures.length) console.log('failed requests:\n' + failures.join('\n'))
  if (bad.length || failures.length || !toTandem.some((line) => line.includes('/settings 200'))) failed = true
  if (toTandem.some((line) => !line.endsWith(' 200') && !line.startsWith('OPTIONS'))) failed = true
} finally {
  await browser.close()
  server.close()
}
if (failed) {
  console.log('browser: analytics-next did not deliver every event to tandem')
  process.exit(1)
}
console.log('browser: analytics-next loaded its settings from tandem and delivered 5 calls')
