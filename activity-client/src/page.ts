// A browser page going away or hidden (pagehide, visibilitychange to hidden): the moment to send
// what waits, in requests that outlive the page, within what a browser allows them. Nothing
// outside a browser.
import { bodyOf, byteLength, type Pending } from './event.js'

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

/** A browser keeps at most 64 KiB of keepalive bodies in flight, all requests together; a margin for the wrappers. */
const KEEPALIVE_BYTES = 60 * 1024

/**
 * The oldest events whose bodies fit the keepalive limit, in requests of `perRequest` events at
 * most; those past the limit stay with their own requests (or the queue) while the page lives.
 */
function keepaliveChunks(events: Pending[], perRequest: number, budget: number): Pending[][] {
  const chunks: Pending[][] = []
  for (const p of events) {
    const last = chunks.at(-1)
    const fresh = last === undefined || last.length >= perRequest
    budget -= p.bytes + 1 + (fresh ? 12 : 0)
    if (budget < 0) break
    if (fresh) chunks.push([p])
    else last.push(p)
  }
  return chunks
}

/** One client's keepalive requests: each event in one at most, all within the browser's budget. */
export class Keepalive {
  /** Bytes of keepalive requests in flight. */
  #inFlight = 0

  /**
   * Sends the oldest of `held` not already leaving, in requests of `perRequest` events, within
   * what is left of the budget (hidden, then left: two calls share it); `accepted` is told of
   * each request the server took. The others' events stay with their own requests or the queue.
   */
  send(
    held: Pending[],
    perRequest: number,
    post: (body: string) => Promise<{ status: number }>,
    accepted: (chunk: Pending[]) => void,
  ): void {
    const waiting = held.filter((p) => !p.leaving)
    for (const chunk of keepaliveChunks(waiting, perRequest, KEEPALIVE_BYTES - this.#inFlight)) {
      const body = bodyOf(chunk)
      const bytes = byteLength(body)
      this.#inFlight += bytes
      for (const p of chunk) p.leaving = true
      void post(body).then((result) => {
        this.#inFlight -= bytes
        for (const p of chunk) p.leaving = false
        if (result.status === 202 || result.status === 200) accepted(chunk)
      })
    }
  }
}
