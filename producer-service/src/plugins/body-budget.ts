// Bounds the request-body bytes the ingestion routes read and hold at once: each request holds
// what its body may grow to from its start until it is answered or its client is gone; past the
// budget it is answered 503 at once, before a byte of its body is read.
import type { FastifyInstance } from 'fastify'
import { PublishError } from './errors.js'

export interface BodyBudgetOptions {
  /** Bytes that requests in progress may hold at once. */
  maxBytes: number
  /** The route patterns it applies to (the ingestion routes). */
  routes: Set<string>
}

/** Registers the budget's hook on `app`; returns a probe of the bytes held now (for a gauge). */
export function bodyBudget(app: FastifyInstance, { maxBytes, routes }: BodyBudgetOptions): () => number {
  let held = 0
  app.addHook('onRequest', async (request, reply) => {
    if (!routes.has(request.routeOptions.url ?? '')) return
    const limit = request.routeOptions.bodyLimit ?? app.initialConfig.bodyLimit ?? maxBytes
    const encoding = request.headers['content-encoding']
    const length = Number(request.headers['content-length'])
    // A compressed or chunked body may grow to its route's limit before it is cut off.
    const identity = encoding === undefined || encoding === 'identity'
    const bytes = identity && Number.isSafeInteger(length) && length >= 0 ? Math.min(length, limit) : limit
    if (held + bytes > maxBytes) {
      // Closing the connection after the answer keeps Node from reading the body to discard it.
      reply.header('connection', 'close')
      throw new PublishError('BODIES_OVERLOADED')
    }
    held += bytes
    // 'close' comes once the answer is sent or the client has gone, whichever is first.
    reply.raw.once('close', () => {
      held -= bytes
    })
  })
  return () => held
}
