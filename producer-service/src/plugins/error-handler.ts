// What the API answers when something goes wrong: FastAPI's shapes for every error (400 with a
// list of details, 401, 405 with Allow, 413, 415, 429, 500 and 503 with the event_ids to resend),
// and which publish failure a request met, for its log line and its metrics.
import type { FastifyError, FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { unknownRoute, type QueueMessage } from 'event-contract'
import {
  EventValidationError,
  INVALID_EVENT_MESSAGE,
  PublishError,
  RateLimitedError,
  UnauthorizedError,
  UnsupportedCharsetError,
  type PublishErrorCode,
} from '../errors.js'

export const QUEUE_FAILED_MESSAGE = 'Failed to queue event'
/** Seconds a client is told to wait after a 503. */
export const RETRY_AFTER_SECONDS = 1
export const WWW_AUTHENTICATE = 'Bearer realm="events", Basic realm="events"'

declare module 'fastify' {
  interface FastifyRequest {
    /** Why its events were not queued (a PublishError's code and cause), once answered so. */
    publishFailure: { error: PublishErrorCode; cause?: string } | undefined
  }
}

/** The event_id (or, for a batch, the event_ids) a request's validated body carries. */
function eventIdsOf(request: FastifyRequest): { event_id?: string } | { event_ids: string[] } {
  const body = request.body as QueueMessage | QueueMessage[] | undefined
  if (Array.isArray(body)) return { event_ids: body.map((message) => message.event_id) }
  return typeof body?.event_id === 'string' ? { event_id: body.event_id } : {}
}

async function errorHandler(app: FastifyInstance): Promise<void> {
  app.decorateRequest('publishFailure', undefined)

  app.setErrorHandler((err: FastifyError | Error, request, reply) => {
    const bodyError = (msg: string, type: string) =>
      reply.code(400).send({ detail: [{ loc: ['body'], msg, type }], message: INVALID_EVENT_MESSAGE })
    const unsupported = (detail: string) => reply.code(415).send({ detail, message: 'Unsupported media type' })
    if (err instanceof EventValidationError) {
      return reply.code(400).send({ detail: err.details, message: INVALID_EVENT_MESSAGE })
    }
    if (err instanceof UnauthorizedError) {
      return reply
        .code(401)
        .header('www-authenticate', WWW_AUTHENTICATE)
        .send({
          detail: `${err.message}: send it as Authorization: Bearer <key>, Authorization: Basic base64(<key>:) or X-API-Key: <key>`,
          message: 'Unauthorized',
        })
    }
    if (err instanceof RateLimitedError) {
      return reply.code(429).send({ detail: err.message, message: 'Too many requests' })
    }
    if (err instanceof UnsupportedCharsetError) return unsupported('The body must be UTF-8 encoded JSON')
    if (err instanceof PublishError) {
      const cause = err.cause instanceof Error ? { cause: err.cause.message } : {}
      request.publishFailure = { error: err.code, ...cause }
      if (err.statusCode === 503) reply.header('retry-after', String(RETRY_AFTER_SECONDS))
      // The event_id(s) of the validated body: retrying with them stores each event once.
      const ids = eventIdsOf(request)
      const batch = 'event_ids' in ids || request.routeOptions.url === '/api/v1/events/batch'
      const message = batch ? 'Failed to queue events' : QUEUE_FAILED_MESSAGE
      return reply.code(err.statusCode).send({ detail: err.detail, message, ...ids })
    }
    switch ('code' in err ? err.code : undefined) {
      case 'FST_ERR_CTP_EMPTY_JSON_BODY':
        return bodyError('Field required', 'missing')
      case 'FST_ERR_CTP_INVALID_JSON_BODY':
        return bodyError('JSON decode error', 'json_invalid')
      case 'FST_CP_ERR_INVALID_CONTENT':
        return bodyError(
          `Could not decompress the body as ${String(request.headers['content-encoding'])}`,
          'value_error',
        )
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        return reply.code(413).send({
          detail: `Request body is larger than ${request.routeOptions.bodyLimit ?? app.initialConfig.bodyLimit} bytes`,
          message: 'Payload too large',
        })
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return unsupported('Content-Type must be application/json')
      case 'FST_CP_ERR_INVALID_CONTENT_ENCODING':
        return unsupported(
          `Content-Encoding ${String(request.headers['content-encoding'])} is not supported: use gzip, deflate or br`,
        )
    }
    const statusCode = 'statusCode' in err && typeof err.statusCode === 'number' ? err.statusCode : 500
    // A 400 takes the validation shape the routes document (a list of details); other 4xx a string.
    if (statusCode === 400) return bodyError(err.message, 'value_error')
    if (statusCode > 400 && statusCode < 500) {
      return reply.code(statusCode).send({ detail: err.message, message: 'Bad request' })
    }
    request.log.error({ err }, 'request failed')
    return reply.code(500).send({ detail: 'Internal server error', message: 'Internal server error' })
  })

  app.setNotFoundHandler((request, reply) => {
    const answer = unknownRoute(app, request.url)
    if (answer.allow) reply.header('allow', answer.allow)
    return reply.code(answer.statusCode).send(answer.body)
  })
}

export default fp(errorHandler, { name: 'error-handler', fastify: '5.x' })
