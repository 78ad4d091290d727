// What /docs and /openapi.json say of the track route: the contract's schemas, each answer with
// its meaning and a real example body. The request example has no event_id: Swagger UI's "Try
// it out" would send the same one every time, and every try after the first would store nothing.
import Type from 'typebox'
import {
  AcceptedSchema,
  BatchAcceptedSchema,
  BatchFailedSchema,
  batchSchema,
  ErrorSchema,
  QueueFailedSchema,
  UserActivityEventSchema,
  ValidationErrorSchema,
} from 'event-contract'

const eventId = '0190d6e2-4f1a-7cc4-9b43-2f1c8e0a5d11'
const secondId = '0190d6e2-4f1b-7a10-8c3e-5b2a9d7e6f01'
const example = {
  user_id: 123,
  event_type: 'page_view',
  timestamp: '2026-02-20T10:00:00Z',
  metadata: { page_url: '/products/item-xyz', session_id: 'abc123' },
}

export const TrackBody = { ...UserActivityEventSchema, examples: [example] }

export function BatchBody(maxEvents: number) {
  return {
    ...batchSchema(maxEvents),
    examples: [{ batch: [example, { ...example, event_type: 'logout', timestamp: '2026-02-20T10:05:00Z' }] }],
  }
}

const retryAfter = {
  'retry-after': { type: 'integer', description: 'Seconds to wait before retrying with the same event_id' },
}

const DetailOnlySchema = Type.Object({ detail: Type.String() }, { title: 'Detail' })

export const trackResponses = {
  202: {
    ...AcceptedSchema,
    description: 'Queued: RabbitMQ has confirmed the event (persistent, on a durable queue)',
    examples: [{ status: 'accepted', message: 'Event queued for processing', event_id: eventId }],
  },
  400: {
    ...ValidationErrorSchema,
    description:
      'Not a valid event, malformed JSON, an empty body, or a body that does not decompress; nothing was queued',
    examples: [
      {
        detail: [{ loc: ['body', 'user_id'], msg: 'Input should be a valid integer', type: 'int_type' }],
        message: 'Invalid UserActivityEvent payload',
      },
    ],
  },
  404: {
    ...DetailOnlySchema,
    description: 'No such path (any URL this API does not serve)',
    examples: [{ detail: 'Not Found' }],
  },
  405: {
    ...DetailOnlySchema,
    description: 'Another method than POST; the Allow header names the allowed ones',
    headers: { allow: { type: 'string', description: 'The methods this path takes: POST' } },
    examples: [{ detail: 'Method Not Allowed' }],
  },
  413: {
    ...ErrorSchema,
    description: 'The body, decompressed, is larger than BODY_LIMIT_BYTES (64 KiB by default)',
    examples: [{ detail: 'Request body is larger than 65536 bytes', message: 'Payload too large' }],
  },
  415: {
    ...ErrorSchema,
    description:
      'Not application/json, a charset other than UTF-8, or a Content-Encoding other than gzip, deflate or br',
    examples: [{ detail: 'Content-Type must be application/json', message: 'Unsupported media type' }],
  },
  500: {
    ...QueueFailedSchema,
    description:
      'Not queued, or not confirmed in time (broker down, message refused, no confirm within the publish ' +
      'timeout). Retry with the event_id given: the event is stored once either way.',
    examples: [{ detail: 'The message broker is unavailable', message: 'Failed to queue event', event_id: eventId }],
  },
  503: {
    ...QueueFailedSchema,
    description:
      'Too many events wait for the broker, the broker blocks publishers or does not keep up, or the service ' +
      'is shutting down. Retry after Retry-After seconds, with the event_id given. When too many request bodies ' +
      'are being read at once (BODY_MAX_IN_FLIGHT_BYTES), it comes before the body is read, without event_id: ' +
      'send the same request again.',
    headers: retryAfter,
    examples: [
      {
        detail: 'Too many events are waiting for the broker; retry later',
        message: 'Failed to queue event',
        event_id: eventId,
      },
    ],
  },
}

export const batchResponses = {
  ...trackResponses,
  202: {
    ...BatchAcceptedSchema,
    description: 'Queued: RabbitMQ has confirmed every event of the batch; event_ids in request order',
    examples: [
      { status: 'accepted', message: 'Events queued for processing', count: 2, event_ids: [eventId, secondId] },
    ],
  },
  400: {
    ...trackResponses[400],
    description: 'A problem with the batch or any of its events (each at its index); nothing was queued',
    examples: [
      {
        detail: [{ loc: ['body', 'batch', 1, 'user_id'], msg: 'Input should be a valid integer', type: 'int_type' }],
        message: 'Invalid UserActivityEvent payload',
      },
    ],
  },
  413: {
    ...trackResponses[413],
    description: 'The body, decompressed, is larger than BATCH_BODY_LIMIT_BYTES (1 MiB by default)',
    examples: [{ detail: 'Request body is larger than 1048576 bytes', message: 'Payload too large' }],
  },
  500: {
    ...BatchFailedSchema,
    description: trackResponses[500].description.replace('the event_id given', 'the same batch and its event_ids'),
    examples: [
      {
        detail: 'The message broker is unavailable',
        message: 'Failed to queue events',
        event_ids: [eventId, secondId],
      },
    ],
  },
  503: {
    // Without event_ids when refused before the body was read (BODY_MAX_IN_FLIGHT_BYTES).
    ...Type.Object(
      { ...BatchFailedSchema.properties, event_ids: Type.Optional(BatchFailedSchema.properties.event_ids) },
      { title: 'BatchRefused' },
    ),
    description: trackResponses[503].description
      .replace('the event_id given', 'the same batch and its event_ids')
      .replace('without event_id', 'without event_ids'),
    headers: trackResponses[503].headers,
    examples: [
      {
        detail: 'Too many events are waiting for the broker; retry later',
        message: 'Failed to queue events',
        event_ids: [eventId, secondId],
      },
    ],
  },
}
