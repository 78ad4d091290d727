// Builds the HTTP API. Never listens: main.ts does, and tests use app.inject.
import Fastify, {
  errorCodes,
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify'
import secureJson from 'secure-json-parse'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { parseEvent, type QueueMessage, type ValidationDetail } from 'event-contract'
import { trackResponses, TrackBody } from './docs.js'
import { PublishError } from './errors.js'
import type { EventPublisher } from './publisher.js'

export const INVALID_EVENT_MESSAGE = 'Invalid UserActivityEvent payload'
export const QUEUE_FAILED_MESSAGE = 'Failed to queue event'
/** Seconds a client is told to wait after a 503. */
export const RETRY_AFTER_SECONDS = 1
const UNSUPPORTED_CHARSET = 'ERR_UNSUPPORTED_CHARSET'
const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

export interface AppOptions {
  publisher: EventPublisher
  logger: FastifyBaseLogger
  bodyLimit?: number
}

class EventValidationError extends Error {
  readonly statusCode = 400
  constructor(readonly details: ValidationDetail[]) {
    super(INVALID_EVENT_MESSAGE)
  }
}

/** Why an event was not queued (a PublishError's code and cause), for the request's log line. */
const failures = new WeakMap<FastifyRequest, { error: string; cause?: string }>()

/**
 * One log line per request, when it completes, instead of Fastify's two: with the event_id, so
 * that an event can be followed from request to row, and for a 500 or 503 the reason, in one
 * line without a stack (overload and broker outages are expected; stacks are for the unexpected).
 */
class OneLinePerRequest extends LogController {
  override incomingRequest(): void {}
  override routeNotFound(): void {}
  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const eventId = (request.body as { event_id?: unknown } | undefined)?.event_id
    const line = {
      method: request.method,
      url: request.url,
      statusCode: reply.statusCode,
      ms: reply.elapsedTime,
      ...(typeof eventId === 'string' ? { eventId } : {}),
      ...failures.get(request),
    }
    if (reply.statusCode >= 500) reply.log.warn(line, 'request')
    else reply.log.info(line, 'request')
  }
}

const HealthSchema = Type.Object({
  status: Type.Enum(['healthy', 'unhealthy']),
  checks: Type.Object({ rabbitmq: Type.String() }),
})

export async function buildApp({ publisher, logger, bodyLimit = 65536 }: AppOptions) {
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit,
    logController: new OneLinePerRequest(),
    // Requests that arrive while closing get the documented 503 from the route instead.
    return503OnClosing: false,
  }).withTypeProvider<TypeBoxTypeProvider>()

  let closing = false
  app.addHook('preClose', async () => {
    closing = true
  })

  // Only JSON is an event: without its text/plain parser Fastify answers 415 for the rest.
  app.removeContentTypeParser('text/plain')
  // Fastify's own JSON parser, except that it says why a body with a prototype-poisoning key
  // (`__proto__`, `constructor.prototype`) is refused instead of calling it malformed JSON.
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body.length === 0) return done(new errorCodes.FST_ERR_CTP_EMPTY_JSON_BODY(), undefined)
    try {
      done(null, secureJson.parse(body, { protoAction: 'error', constructorAction: 'error' }))
    } catch (err) {
      if (!(err instanceof SyntaxError) || !/prototype property/.test(err.message)) {
        return done(new errorCodes.FST_ERR_CTP_INVALID_JSON_BODY(), undefined)
      }
      done(
        new EventValidationError([
          {
            loc: ['body'],
            msg: 'Value error, object keys "__proto__" and "constructor" with "prototype" are not allowed',
            type: 'value_error',
          },
        ]),
        undefined,
      )
    }
  })

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'User Activity Tracker',
        description: 'Accepts user activity events; a 202 means RabbitMQ has the event on disk.',
        version: '1.0.0',
      },
    },
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })

  app.setErrorHandler((err: FastifyError | Error, request, reply) => {
    if (err instanceof EventValidationError) {
      return reply.code(400).send({ detail: err.details, message: INVALID_EVENT_MESSAGE })
    }
    if (err instanceof PublishError) {
      // The validated body: its event_id lets the client retry without a duplicate.
      const eventId = (request.body as QueueMessage | undefined)?.event_id
      const cause = err.cause instanceof Error ? { cause: err.cause.message } : {}
      failures.set(request, { error: err.code, ...cause })
      if (err.statusCode === 503) reply.header('retry-after', String(RETRY_AFTER_SECONDS))
      return reply.code(err.statusCode).send({ detail: err.detail, message: QUEUE_FAILED_MESSAGE, event_id: eventId })
    }
    switch ('code' in err ? err.code : undefined) {
      case 'FST_ERR_CTP_EMPTY_JSON_BODY':
        return reply
          .code(400)
          .send({ detail: [{ loc: ['body'], msg: 'Field required', type: 'missing' }], message: INVALID_EVENT_MESSAGE })
      case 'FST_ERR_CTP_INVALID_JSON_BODY':
        return reply.code(400).send({
          detail: [{ loc: ['body'], msg: 'JSON decode error', type: 'json_invalid' }],
          message: INVALID_EVENT_MESSAGE,
        })
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        return reply
          .code(413)
          .send({ detail: `Request body is larger than ${bodyLimit} bytes`, message: 'Payload too large' })
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return reply
          .code(415)
          .send({ detail: 'Content-Type must be application/json', message: 'Unsupported media type' })
      case UNSUPPORTED_CHARSET:
        return reply
          .code(415)
          .send({ detail: 'The body must be UTF-8 encoded JSON', message: 'Unsupported media type' })
    }
    const statusCode = 'statusCode' in err && typeof err.statusCode === 'number' ? err.statusCode : 500
    if (statusCode >= 400 && statusCode < 500) {
      return reply.code(statusCode).send({ detail: err.message, message: 'Bad request' })
    }
    request.log.error({ err }, 'request failed')
    return reply.code(500).send({ detail: 'Internal server error', message: 'Internal server error' })
  })

  app.setNotFoundHandler((request, reply) => {
    // A known path with another method is a 405 with Allow, as FastAPI answers.
    const url = request.url.split('?')[0] as string
    const allowed = HTTP_METHODS.filter((method) => app.hasRoute({ method, url }))
    if (allowed.length === 0) return reply.code(404).send({ detail: 'Not Found' })
    return reply.code(405).header('allow', allowed.join(', ')).send({ detail: 'Method Not Allowed' })
  })

  app.post(
    '/api/v1/events/track',
    {
      schema: {
        summary: 'Track a user activity event',
        description: 'Answers 202 only once RabbitMQ has confirmed the event. Unknown fields are ignored.',
        body: TrackBody,
        response: trackResponses,
      },
      // The contract's validator both checks and normalizes; Fastify hands its value to the handler.
      validatorCompiler: () => (body: unknown) => {
        const result = parseEvent(body)
        return result.ok ? { value: result.value } : { error: new EventValidationError(result.errors) }
      },
      // JSON is UTF-8 (RFC 8259): a body declared in another charset would be decoded wrongly.
      onRequest: async (request) => {
        const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(request.headers['content-type'] ?? '')?.[1]
        if (charset && !/^utf-?8$/i.test(charset)) {
          throw Object.assign(new Error(`charset ${charset} is not supported`), { code: UNSUPPORTED_CHARSET })
        }
      },
    },
    async (request, reply) => {
      const message = request.body as unknown as QueueMessage
      if (closing) throw new PublishError('SHUTTING_DOWN')
      await publisher.publish(message)
      return reply
        .code(202)
        .send({ status: 'accepted', message: 'Event queued for processing', event_id: message.event_id })
    },
  )

  app.get(
    '/health',
    { schema: { summary: 'Broker connection health', response: { 200: HealthSchema, 503: HealthSchema } } },
    async (request, reply) => {
      const rabbitmq = publisher.health()
      return reply
        .code(rabbitmq === 'up' ? 200 : 503)
        .send({ status: rabbitmq === 'up' ? 'healthy' : 'unhealthy', checks: { rabbitmq } })
    },
  )

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())

  return app
}
