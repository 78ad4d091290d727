// The soak's proxy between each activity-client and its producer: passes every request on, and
// while the app-proxy fault holds it, answers as broken proxies and gateways do.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { gunzipSync } from 'node:zlib'
import type { Cluster } from './cluster.js'
import { producers, type Fault } from './faults.js'

/**
 * What the proxy does while the fault holds it. After the producer answered: the answer lost
 * (502), the connection reset, or the answer held past the client's timeout: the events are
 * stored and the client sends them again. Without asking it: 503 with a Retry-After, or a 400 of
 * its own that names no event (the client gives those events up: a 400 is the server's word).
 */
export const PROXY_MODES = ['lost-answer', 'reset', 'slow', 'retry-later', 'bad-request'] as const
export type ProxyMode = 'pass' | (typeof PROXY_MODES)[number]

/** Request headers the producer needs, passed on as they came. */
const FORWARDED = ['content-type', 'content-encoding', 'authorization', 'x-api-key']

export class AppProxy {
  mode: ProxyMode = 'pass'
  /** Requests answered so far, by the mode they met. */
  readonly counts = new Map<ProxyMode, number>()
  /**
   * Events the proxy answered 400 alone: the client gives an event up only when it is refused
   * alone (a 400 naming none splits the batch), so these and no others are its doing.
   */
  readonly refusedIds = new Set<string>()
  readonly #server: Server

  private constructor(
    /** The producer's URL now (it moves when the producer restarts on another port). */
    readonly target: () => string,
    /** How long `slow` holds an answer: past the client's request timeout. */
    readonly slowMs: number,
  ) {
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        // The client went away while it was answered: nothing left to tell it.
        if (!res.headersSent) answer(res, 502, `proxy: ${(err as Error).message}`)
        else res.destroy()
      })
    })
  }

  static async start(target: () => string, slowMs: number): Promise<AppProxy> {
    const proxy = new AppProxy(target, slowMs)
    await new Promise<void>((resolve) => proxy.#server.listen(0, '127.0.0.1', resolve))
    return proxy
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = Buffer.concat((await req.toArray()) as Buffer[])
    const mode = this.mode
    this.counts.set(mode, (this.counts.get(mode) ?? 0) + 1)
    if (mode === 'retry-later') return answer(res, 503, '<html>503 Service Temporarily Unavailable</html>', '2')
    if (mode === 'bad-request') {
      const ids = eventIds(req, body)
      if (ids.length === 1) this.refusedIds.add(ids[0]!)
      return answer(res, 400, JSON.stringify({ detail: 'Bad Request' }))
    }
    const headers = Object.fromEntries(FORWARDED.flatMap((h) => (req.headers[h] ? [[h, String(req.headers[h])]] : [])))
    let status: number
    let text: string
    let retryAfter: string | undefined
    try {
      const upstream = await fetch(`${this.target()}${req.url}`, {
        method: req.method,
        headers,
        body,
        signal: AbortSignal.timeout(this.slowMs),
      })
      text = await upstream.text()
      status = upstream.status
      retryAfter = upstream.headers.get('retry-after') ?? undefined
    } catch (err) {
      return answer(res, 502, `<html>502 Bad Gateway: ${(err as Error).message}</html>`)
    }
    if (mode === 'lost-answer') return answer(res, 502, '<html>502 Bad Gateway</html>')
    if (mode === 'reset') return void req.socket.destroy()
    if (mode === 'slow') await new Promise((resolve) => setTimeout(resolve, this.slowMs))
    if (!res.destroyed) answer(res, status, text, retryAfter)
  }
}

function answer(res: ServerResponse, status: number, text: string, retryAfter?: string): void {
  res.writeHead(status, {
    'content-type': text.startsWith('<') ? 'text/html' : 'application/json',
    ...(retryAfter ? { 'retry-after': retryAfter } : {}),
  })
  res.end(text)
}

/** The event_ids of a /batch body, gzip-compressed or not. */
function eventIds(req: IncomingMessage, body: Buffer): string[] {
  const json = req.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body
  const parsed = JSON.parse(json.toString('utf8')) as { batch?: { event_id?: string }[] }
  return (parsed.batch ?? []).flatMap((e) => (typeof e.event_id === 'string' ? [e.event_id.toLowerCase()] : []))
}

/** The fault: one producer's proxy turns hostile for a while, in a mode the seed picks. */
export const appProxy: Fault = {
  name: 'app-proxy',
  targets: producers,
  resource: (t) => `app-proxy:${t}`,
  seconds: [2, 15],
  apply: async (c: Cluster, t, param) => {
    const proxy = c.appProxies.get(t)
    if (!proxy) throw new Error(`no activity-client proxy in front of ${t}`)
    proxy.mode = PROXY_MODES[Math.min(PROXY_MODES.length - 1, Math.floor(param * PROXY_MODES.length))]!
    return { mode: proxy.mode, before: proxy.counts.get(proxy.mode) ?? 0 }
  },
  heal: async (c: Cluster, t, state) => {
    const { mode, before } = state as { mode: ProxyMode; before: number }
    const proxy = c.appProxies.get(t)
    if (proxy) proxy.mode = 'pass'
    return `${mode}: ${(proxy?.counts.get(mode) ?? 0) - before} requests`
  },
}
