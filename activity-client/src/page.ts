// A browser page going away or hidden (pagehide, visibilitychange to hidden): the moment to send
// what waits, in requests that outlive the page. Nothing outside a browser.

/** Calls `onHide` each time the page is hidden or left; returns what stops watching. */
export function watchPageHide(onHide: () => void): () => void {
  const page = globalThis as {
    addEventListener?: typeof addEventListener
    removeEventListener?: typeof removeEventListener
  }
  const doc = (globalThis as { document?: Document }).document
  if (typeof page.addEventListener !== 'function' || doc === undefined) return () => undefined
  const onVisibility = () => {
    if (doc.visibilityState === 'hidden') onHide()
  }
  page.addEventListener('pagehide', onHide)
  doc.addEventListener('visibilitychange', onVisibility)
  return () => {
    page.removeEventListener?.('pagehide', onHide)
    doc.removeEventListener('visibilitychange', onVisibility)
  }
}
