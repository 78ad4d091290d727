// The ingestion routes: one event (/track) or many (/batch), each answered 202 only once RabbitMQ
// has confirmed what it was given.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { parseBatch, parseEvent, type BatchLimits, type ValidationDetail, type QueueMessage } from 'event-contract'
import { batchResponses, BatchBody, trackResponses, TrackBody } from './docs.js'
import { EventValidationError, publishError, UnsupportedCharsetError } from './errors.js'
import type { EventPublisher } from './publisher.js'

/** The routes that take events: the body budget, the write keys, the rate limit and the event metrics apply to them. */
export const INGESTION_ROUTES: ReadonlySet<string> = new Set(['/api/v1/events/track', '/api/v1/events/batch'])

export interface EventRoutesOptions {
  publisher: EventPublisher
  batch: BatchLimits & { bodyLimit: number }
  /** True once the service is closing: new events get the documented 503. */
  closing: () => boolean
  /** Whether the routes need a write key (declared in the OpenAPI document). */
  secured?: boolean
}

/** JSON is UTF-8 (RFC 8259): a body declared in another charset would be decoded wrongly. */
async function utf8Only(request: FastifyRequest): Promise<void> {
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(request.headers['content-type'] ?? '')?.[1]
  if (charset && !/^utf-?8$/i.test(charset)) {
    throw new UnsupportedCharsetError(charset)
  }
}

/** Fastify validates with the contract's parser, which also normalizes: handlers get its value. */
function validatorOf<T>(parse: (body: unknown) => { ok: true; value: T } | { ok: false; errors: ValidationDetail[] }) {
  return () => (body: unknown) => {
    const result = parse(body)
    return result.ok ? { value: result.value } : { error: new EventValidationError(result.errors) }
  }
}

/** The routes, as a plugin registered after `security` (whose rate limit they carry). */
export async function eventRoutes(
  app: FastifyInstance,
  { publisher, batch, closing, secured = false }: EventRoutesOptions,
): Promise<void> {
  const routeConfig = app.ingestionRouteConfig
  const schemes: { [scheme: string]: string[] }[] = [{ bearerAuth: [] }, { basicAuth: [] }, { apiKey: [] }]
  const security = secured ? { security: schemes } : {}
  app.post(
    '/api/v1/events/track',
    {
      config: routeConfig,
      schema: {
        summary: 'Track a user activity event',
        description: 'Answers 202 only once RabbitMQ has confirmed the event. Unknown fields are ignored.',
        body: TrackBody,
        response: trackResponses,
        ...security,
      },
      validatorCompiler: validatorOf((body) => parseEvent(body)),
      onRequest: utf8Only,
    },
    async (request, reply) => {
      const message = request.body as QueueMessage
      if (closing()) throw publishError('SHUTTING_DOWN')
      await publisher.publish(message)
      return reply
        .code(202)
        .send({ status: 'accepted', message: 'Event queued for processing', event_id: message.event_id })
    },
  )

  app.post(
    '/api/v1/events/batch',
    {
      config: routeConfig,
      bodyLimit: batch.bodyLimit,
      schema: {
        summary: 'Track many events in one request',
        description:
          'All or nothing: any invalid event makes it a 400 and nothing is queued. Answers 202 only once ' +
          'RabbitMQ has confirmed every event; on a 500 or 503, resend the same batch with the event_ids given.',
        body: BatchBody(batch.maxEvents),
        response: batchResponses,
        ...security,
      },
      validatorCompiler: validatorOf((body) => parseBatch(body, batch)),
      onRequest: utf8Only,
    },
    async (request, reply) => {
      const messages = request.body as QueueMessage[]
      if (closing()) throw publishError('SHUTTING_DOWN')
      await publisher.publishBatch(messages)
      return reply.code(202).send({
        status: 'accepted',
        message: 'Events queued for processing',
        count: messages.length,
        event_ids: messages.map((message) => message.event_id),
      })
    },
  )
}
