// Bounds the request-body bytes the ingestion routes read and hold at once: each request holds
// what its body may grow to from its start until it is answered or its client is gone; past the
// budget it is answered 503 at once, before a byte of its body is read.
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { publishError } from '../errors.js'
import { INGESTION_ROUTES } from '../events.js'

export interface BodyBudgetOptions {
  /** Bytes that requests in progress may hold at once (BODY_MAX_IN_FLIGHT_BYTES). */
  maxBytes: number
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Request-body bytes held now by the ingestion routes (for a gauge). */
    readonly bodyBytesHeld: number
  }
}

async function bodyBudget(app: FastifyInstance, { maxBytes }: BodyBudgetOptions): Promise<void> {
  let held = 0
  app.decorate('bodyBytesHeld', {
    getter: () => held,
  })
  app.addHook('onRequest', async (request, reply) => {
    if (!INGESTION_ROUTES.has(request.routeOptions.url ?? '')) return
    const limit = request.routeOptions.bodyLimit ?? app.initialConfig.bodyLimit ?? maxBytes
    const encoding = request.headers['content-encoding']
    const length = Number(request.headers['content-length'])
    // A compressed or chunked body may grow to its route's limit before it is cut off.
    const identity = encoding === undefined || encoding === 'identity'
    const bytes = identity && Number.isSafeInteger(length) && length >= 0 ? Math.min(length, limit) : limit
    if (held + bytes > maxBytes) {
      // Closing the connection after the answer keeps Node from reading the body to discard it.
      reply.header('connection', 'close')
      throw publishError('BODIES_OVERLOADED')
    }
    held += bytes
    // 'close' comes once the answer is sent or the client has gone, whichever is first.
    reply.raw.once('close', () => {
      held -= bytes
    })
  })
}

/** First of the hooks: a request refused for want of room is refused before anything else runs. */
export default fp(bodyBudget, { name: 'body-budget', fastify: '5.x' })
