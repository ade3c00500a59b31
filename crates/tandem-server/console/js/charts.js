// Charts: Apache ECharts (vendored, loaded on first use so the login page stays light). Every
// chart is an image to assistive technology with a label; pages show the same figures in a table.
import { html, useEffect, useRef } from './lib.js'

let loading = null
export const loadECharts = () => (loading ??= import('../vendor/echarts.esm.min.mjs'))

/** Escapes text for ECharts' HTML tooltips (names, owners and ids are user-supplied). */
export function esc (value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]))
}

export const COLORS = { good: '#2e9d5b', warn: '#d99a1c', bad: '#d4402f', muted: '#9aa5b1', info: '#2f6fd6', shadow: '#7b4fc9', brand: '#1f4e79' }

/** An ECharts chart: `option` is re-applied whenever it changes; `onClick(params)` on items. */
export function Chart ({ option, label, size, height, onClick }) {
  const element = useRef(null)
  const chart = useRef(null)
  const latest = useRef({ option, onClick })
  latest.current = { option, onClick }

  useEffect(() => {
    let disposed = false
    let observer = null
    loadECharts().then((echarts) => {
      if (disposed || !element.current) return
      chart.current = echarts.init(element.current, null, { renderer: 'canvas' })
      chart.current.setOption(latest.current.option)
      chart.current.on('click', (params) => latest.current.onClick && latest.current.onClick(params))
      observer = new ResizeObserver(() => chart.current && chart.current.resize())
      observer.observe(element.current)
    })
    return () => {
      disposed = true
      if (observer) observer.disconnect()
      if (chart.current) chart.current.dispose()
      chart.current = null
    }
  }, [])

  useEffect(() => {
    if (chart.current) chart.current.setOption(option, { notMerge: true })
  }, [option])

  // A computed height is set through the CSSOM (allowed by the CSP, unlike a style attribute).
  useEffect(() => {
    if (element.current && height) element.current.style.height = `${height}px`
    if (chart.current) chart.current.resize()
  }, [height])

  return html`<div class=${'chart' + (size ? ' ' + size : '')} ref=${element} role="img" aria-label=${label}></div>`
}

/** A rolling series of samples for time charts: keeps the last `max` points. */
export function pushSample (samples, point, max = 120) {
  const next = [...samples, point]
  return next.length > max ? next.slice(next.length - max) : next
}
