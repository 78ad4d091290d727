// Builds the HTTP API. Never listens: main.ts does, and tests use app.inject.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyReply, type FastifyRequest } from 'fastify'
import compress from '@fastify/compress'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { eventRoutes } from './events.js'
import type { ProducerMetrics } from './metrics.js'
import bodyBudget from './plugins/body-budget.js'
import errorHandler from './plugins/error-handler.js'
import jsonBody from './plugins/json-body.js'
import metricsPlugin from './plugins/metrics.js'
import securityPlugin, { keyFingerprintOf, type SecurityOptions } from './plugins/security.js'
import type { EventPublisher } from './publisher.js'

export { INVALID_EVENT_MESSAGE } from './errors.js'
export { QUEUE_FAILED_MESSAGE, RETRY_AFTER_SECONDS } from './plugins/error-handler.js'

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
      ...request.publishFailure,
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

  // Only JSON is an event, parsed safely.
  await app.register(jsonBody, { onBodyBytes: metrics && ((bytes) => metrics.bodyBytes.observe(bytes)) })
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

  await app.register(errorHandler)
  // First of the hooks: a request refused for want of room is refused before anything else runs.
  await app.register(bodyBudget, { maxBytes: bodyMaxInFlightBytes })
  if (metrics) await app.register(metricsPlugin, { metrics, publisher })
  await app.register(securityPlugin, { ...security, onStoreError: () => metrics?.rateLimitStoreErrors.inc() })
  await app.register(eventRoutes, {
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
