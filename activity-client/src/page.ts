// A browser page going away or hidden (pagehide, visibilitychange to hidden): the moment to send
// what waits, in requests that outlive the page. Nothing outside a browser.

/** What is used here of a browser's window and document (typed here: Node has neither). */
interface Target {
  addEventListener(type: string, listener: () => void): void
  removeEventListener(type: string, listener: () => void): void
}
interface Page extends Target {
  document?: Target & { visibilityState?: string }
}

/** Calls `onHide` each time the page is hidden or left; returns what stops watching. */
export function watchPageHide(onHide: () => void): () => void {
  const page = globalThis as unknown as Partial<Page>
  const doc = page.document
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
