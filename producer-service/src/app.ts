// Builds the HTTP API. Never listens: main.ts does, and tests use app.inject.
import Fastify, {
  errorCodes,
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify'
import compress from '@fastify/compress'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import secureJson from 'secure-json-parse'
import Type from 'typebox'
import type { QueueMessage } from 'event-contract'
import { bodyBudget } from './body-budget.js'
import { PublishError, type PublishErrorCode } from './errors.js'
import { EventValidationError, eventRoutes, INVALID_EVENT_MESSAGE, UNSUPPORTED_CHARSET } from './events.js'
import { metricsPlugin, observePublisher, type ProducerMetrics } from './metrics.js'
import type { EventPublisher } from './publisher.js'
import {
  INGESTION_ROUTES,
  keyFingerprintOf,
  RateLimitedError,
  secure,
  UnauthorizedError,
  WWW_AUTHENTICATE,
  type SecurityOptions,
} from './security.js'

export { INVALID_EVENT_MESSAGE }
export const QUEUE_FAILED_MESSAGE = 'Failed to queue event'
/** Seconds a client is told to wait after a 503. */
export const RETRY_AFTER_SECONDS = 1
const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

export interface AppOptions {
  publisher: EventPublisher
  logger: FastifyBaseLogger
  /** Largest /track body, decompressed; also the most one event of a batch may take. */
  bodyLimit?: number
  batchMaxEvents?: number
  /** Largest /batch body, decompressed. */
  batchBodyLimit?: number
  /** Prometheus metrics, served on GET /metrics; none when absent. */
  metrics?: ProducerMetrics
  /** Write keys, rate limit, CORS; open, unlimited and without CORS when absent. */
  security?: SecurityOptions
  /** Request-body bytes the ingestion routes may hold at once; past it 503 (BODY_MAX_IN_FLIGHT_BYTES). */
  bodyMaxInFlightBytes?: number
  /** Longest wait for a whole request (408 and closed after), and for its headers. */
  requestTimeoutMs?: number
  headersTimeoutMs?: number
}

/** Why events were not queued (a PublishError's code and cause), for the request's log line. */
const failures = new WeakMap<FastifyRequest, { error: PublishErrorCode; cause?: string }>()

/** The event_id (or, for a batch, the event_ids) a request's validated body carries. */
function eventIdsOf(request: FastifyRequest): { event_id?: string } | { event_ids: string[] } {
  const body = request.body as QueueMessage | QueueMessage[] | undefined
  if (Array.isArray(body)) return { event_ids: body.map((message) => message.event_id) }
  return typeof body?.event_id === 'string' ? { event_id: body.event_id } : {}
}

/**
 * One log line per request, when it completes, instead of Fastify's two: with the event_id, so
 * that an event can be followed from request to row, and for a 500 or 503 the reason, in one
 * line without a stack (overload and broker outages are expected; stacks are for the unexpected).
 */
class OneLinePerRequest extends LogController {
  override incomingRequest(): void {}
  override routeNotFound(): void {}
  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const body = request.body as { event_id?: unknown } | unknown[] | undefined
    const about = Array.isArray(body)
      ? { events: body.length }
      : typeof body?.event_id === 'string'
        ? { eventId: body.event_id }
        : {}
    const line = {
      method: request.method,
      url: request.url,
      statusCode: reply.statusCode,
      ms: reply.elapsedTime,
      ...about,
      ...(keyFingerprintOf(request) ? { key: keyFingerprintOf(request) } : {}),
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

export async function buildApp({
  publisher,
  logger,
  bodyLimit = 65536,
  batchMaxEvents = 1000,
  batchBodyLimit = 1024 * 1024,
  metrics,
  security = { apiKeys: [], rateLimitMax: 0, rateLimitWindowMs: 60_000, corsOrigins: [] },
  bodyMaxInFlightBytes = 16 * 2 ** 20,
  requestTimeoutMs = 30_000,
  headersTimeoutMs = 10_000,
}: AppOptions) {
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit,
    // Slow clients (slow-loris): Node cuts a request whose headers or body take longer, checking
    // every second instead of its default 30 s.
    requestTimeout: requestTimeoutMs,
    http: {
      headersTimeout: Math.min(headersTimeoutMs, requestTimeoutMs),
      connectionsCheckingInterval: 1000,
    },
    logController: new OneLinePerRequest(),
    // Requests that arrive while closing get the documented 503 from the routes instead.
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
    metrics?.bodyBytes.observe(Buffer.byteLength(body))
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
  // Compressed request bodies; the body limits apply to what they inflate to, counted as it
  // streams, so a small body that inflates past them (a zip bomb) is cut off there: a 413.
  // Answers are small and stay uncompressed.
  await app.register(compress, {
    globalCompression: false,
    globalDecompression: true,
    requestEncodings: ['gzip', 'deflate', 'br'],
  })

  const secured = security.apiKeys.length > 0
  await app.register(swagger, {
    openapi: {
      info: {
        title: 'User Activity Tracker',
        description: 'Accepts user activity events; a 202 means RabbitMQ has the event on disk.',
        version: '1.0.0',
      },
      // The three forms a write key may take, so that /docs can send one.
      ...(secured
        ? {
            components: {
              securitySchemes: {
                bearerAuth: { type: 'http', scheme: 'bearer', description: 'Authorization: Bearer <key>' },
                basicAuth: { type: 'http', scheme: 'basic', description: 'The key as user name, no password' },
                apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
              },
            },
          }
        : {}),
    },
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })

  app.setErrorHandler((err: FastifyError | Error, request, reply) => {
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
    if (err instanceof PublishError) {
      const cause = err.cause instanceof Error ? { cause: err.cause.message } : {}
      failures.set(request, { error: err.code, ...cause })
      if (err.statusCode === 503) reply.header('retry-after', String(RETRY_AFTER_SECONDS))
      // The event_id(s) of the validated body: retrying with them stores each event once.
      const ids = eventIdsOf(request)
      const batch = 'event_ids' in ids || request.routeOptions.url === '/api/v1/events/batch'
      const message = batch ? 'Failed to queue events' : QUEUE_FAILED_MESSAGE
      return reply.code(err.statusCode).send({ detail: err.detail, message, ...ids })
    }
    const bodyError = (msg: string, type: string) =>
      reply.code(400).send({ detail: [{ loc: ['body'], msg, type }], message: INVALID_EVENT_MESSAGE })
    const unsupported = (detail: string) => reply.code(415).send({ detail, message: 'Unsupported media type' })
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
          detail: `Request body is larger than ${request.routeOptions.bodyLimit ?? bodyLimit} bytes`,
          message: 'Payload too large',
        })
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return unsupported('Content-Type must be application/json')
      case UNSUPPORTED_CHARSET:
        return unsupported('The body must be UTF-8 encoded JSON')
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
    // A known path with another method is a 405 with Allow, as FastAPI answers.
    const url = request.url.split('?')[0] as string
    const allowed = HTTP_METHODS.filter((method) => app.hasRoute({ method, url }))
    if (allowed.length === 0) return reply.code(404).send({ detail: 'Not Found' })
    return reply.code(405).header('allow', allowed.join(', ')).send({ detail: 'Method Not Allowed' })
  })

  // First of the hooks: a request refused for want of room is refused before anything else runs.
  const bodyBytesHeld = bodyBudget(app, { maxBytes: bodyMaxInFlightBytes, routes: INGESTION_ROUTES })

  if (metrics) {
    observePublisher(metrics, publisher)
    metricsPlugin(app, metrics, (request) => failures.get(request)?.error, bodyBytesHeld)
  }

  const routeConfig = await secure(
    app,
    { ...security, onStoreError: () => metrics?.rateLimitStoreErrors.inc() },
    logger,
  )

  eventRoutes(app, {
    routeConfig,
    secured,
    publisher,
    batch: { maxEvents: batchMaxEvents, maxEventBytes: bodyLimit, bodyLimit: batchBodyLimit },
    closing: () => closing,
  })

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
