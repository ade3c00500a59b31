// Sends every call type through Segment's Node SDK (@segment/analytics-node, from npm) to tandem.
import { Analytics } from '@segment/analytics-node'

const errors = []
const statuses = []
const analytics = new Analytics({ writeKey: process.env.WRITE_KEY, host: process.env.TANDEM_URL, maxEventsInBatch: 3, flushInterval: 200, maxRetries: 0 })
analytics.on('error', (error) => errors.push(String(error?.reason ?? error?.message ?? error)))
analytics.on('http_request', (request) => statuses.push(request.url))
const marker = { sdk: 'node' }
analytics.identify({ userId: 'node-user', traits: { email: 'node@example.test' } })
analytics.track({ userId: 'node-user', event: 'Product Viewed', properties: { sku: 'SKU-1', ...marker } })
analytics.page({ userId: 'node-user', name: 'Pricing', properties: marker })
analytics.screen({ userId: 'node-user', name: 'Home', properties: marker })
analytics.group({ userId: 'node-user', groupId: 'node-group', traits: { name: 'Acme' } })
analytics.alias({ userId: 'node-user', previousId: 'node-anon' })
analytics.track({ anonymousId: 'node-anon-2', event: 'Anonymous Event', properties: marker })
await analytics.closeAndFlush({ timeout: 20000 })
if (errors.length) {
  console.log('node SDK reported errors:', errors)
  process.exit(1)
}
console.log(`node SDK: 7 calls sent in ${statuses.length} requests, no errors`)
