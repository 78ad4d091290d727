// Closing an HTTP server (a Fastify app) within a bound, whatever its clients do.
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'

/** How long a close still takes, at most, once its connections were dropped. */
const FORCED_CLOSE_MS = 250

/** Tracks the requests a server is serving, so that a close can tell which still send a body. */
export class RequestTracker {
  readonly #open = new Set<IncomingMessage>()

  constructor(server: Server) {
    server.on('request', (request: IncomingMessage, response: ServerResponse) => {
      this.#open.add(request)
      response.once('close', () => this.#open.delete(request))
    })
  }

  /** Drops the connections whose request body has not all arrived; returns how many. */
  cutUnread(): number {
    let cut = 0
    for (const request of this.#open) {
      if (request.complete) continue
      request.socket.destroy()
      cut++
    }
    return cut
  }
}

export interface BoundedCloseOptions {
  tracker: RequestTracker
  logger: Logger
  /** After this, requests still sending their body are cut: none of them was answered yet. */
  unreadGraceMs: number
  /** After this, every connection still open is dropped, and the close ends. */
  forceMs: number
}

/**
 * `app.close()`, which waits for the requests in progress, bounded: a request still receiving its
 * body after `unreadGraceMs` (a client that trickles it) is cut, and whatever is left at `forceMs`.
 */
export async function closeBounded(
  app: { close(): PromiseLike<unknown>; server: Server },
  { tracker, logger, unreadGraceMs, forceMs }: BoundedCloseOptions,
): Promise<void> {
  let force: NodeJS.Timeout | undefined
  const unread = setTimeout(() => {
    const cut = tracker.cutUnread()
    if (cut > 0) logger.warn({ requests: cut, ms: unreadGraceMs }, 'cut requests still sending their body at close')
  }, unreadGraceMs)
  const forced = new Promise<false>((resolve) => (force = setTimeout(() => resolve(false), forceMs)))
  const closing = Promise.resolve(app.close())
  try {
    if (await Promise.race([closing.then(() => true), forced])) return
  } finally {
    clearTimeout(unread)
    clearTimeout(force)
  }
  logger.warn({ ms: forceMs }, 'connections still open at close; dropping them')
  app.server.closeAllConnections()
  // Nothing holds the close now; its hooks get a moment, not more.
  await Promise.race([closing, sleep(FORCED_CLOSE_MS, undefined, { ref: false })])
}
