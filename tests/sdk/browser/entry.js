// The page's analytics: analytics-next, loading its settings from tandem instead of Segment's CDN.
import { AnalyticsBrowser } from '@segment/analytics-next'

window.runAnalytics = async (writeKey, tandemUrl) => {
  const analytics = AnalyticsBrowser.load({ writeKey, cdnURL: tandemUrl }, { retryQueue: false })
  const marker = { sdk: 'browser' }
  const sent = await Promise.all([
    analytics.page('Home', { ...marker }),
    analytics.identify('browser-user', { email: 'browser@example.test' }),
    analytics.track('Button Clicked', { button: 'signup', ...marker }),
    analytics.group('browser-group', { name: 'Acme' }),
    analytics.alias('browser-user', 'browser-anon'),
  ])
  return sent.map((context) => ({ type: context.event.type, messageId: context.event.messageId, failed: context.failedDelivery()?.reason?.toString() ?? null }))
}
