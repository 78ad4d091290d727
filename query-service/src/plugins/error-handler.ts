// What the query service answers when something goes wrong, in FastAPI's shapes: 400 with a list
// of details, 401 with WWW-Authenticate, 404, 405 with Allow, and 503 with Retry-After when the
// database is down or slow.
import type { FastifyError, FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { unknownRoute } from 'event-contract'
import { INVALID_PARAMETERS_MESSAGE, ParameterError, UnauthorizedError } from '../errors.js'
import { DatabaseUnavailableError } from '../reader.js'

/** Seconds a client is told to wait after a 503. */
export const RETRY_AFTER_SECONDS = 2

export interface ErrorHandlerOptions {
  /** Told of each request answered 503 for the database. */
  onUnavailable?: (err: DatabaseUnavailableError) => void
}

async function errorHandler(app: FastifyInstance, options: ErrorHandlerOptions): Promise<void> {
  app.setErrorHandler((err: FastifyError | Error, request, reply) => {
    if (err instanceof ParameterError) {
      return reply.code(400).send({ detail: err.details, message: INVALID_PARAMETERS_MESSAGE })
    }
    if (err instanceof UnauthorizedError) {
      return reply
        .code(401)
        .header('www-authenticate', 'Bearer realm="query", Basic realm="query"')
        .send({
          detail: `${err.message}: send it as Authorization: Bearer <key>, Authorization: Basic base64(<key>:) or X-API-Key: <key>`,
        })
    }
    if (err instanceof DatabaseUnavailableError) {
      options.onUnavailable?.(err)
      request.log.warn({ error: err.message }, 'database unavailable')
      return reply
        .code(503)
        .header('retry-after', String(RETRY_AFTER_SECONDS))
        .send({ detail: 'The database is unavailable or slow; retry later' })
    }
    const statusCode = 'statusCode' in err && typeof err.statusCode === 'number' ? err.statusCode : 500
    if (statusCode >= 400 && statusCode < 500) {
      return reply.code(statusCode).send({ detail: err.message })
    }
    request.log.error({ err }, 'request failed')
    return reply.code(500).send({ detail: 'Internal server error' })
  })

  app.setNotFoundHandler((request, reply) => {
    const answer = unknownRoute(app, request.url)
    if (answer.allow) reply.header('allow', answer.allow)
    return reply.code(answer.statusCode).send(answer.body)
  })
}

export default fp(errorHandler, { name: 'error-handler', fastify: '5.x' })
