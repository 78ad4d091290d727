// The shapes of an event: what a client posts, and what travels on the queue.
import Type, { type Static } from 'typebox'

/** MySQL INT upper bound: user_id is stored in an INT column. */
export const MAX_USER_ID = 2147483647
/** VARCHAR(50), counted in characters (code points), not bytes. */
export const MAX_EVENT_TYPE_LENGTH = 50
/**
 * Deepest nesting of `metadata` accepted, the object itself being level 1. MariaDB's JSON
 * check refuses documents nested 32 deep and MySQL 100 deep; a limit well below both keeps
 * every accepted event storable.
 */
export const MAX_METADATA_DEPTH = 16

/** Message `type` property of the queue messages this contract describes: one event. */
export const MESSAGE_TYPE = 'user_activity.v1'
/** Message `type` of a batch message: events of one `/batch` request, in one message or several. */
export const BATCH_MESSAGE_TYPE = 'user_activity_batch.v1'
/**
 * Most bytes the producer puts in one message: a batch is split into messages of at most this
 * size (one event alone may be larger, up to the producer's BODY_LIMIT_BYTES). The consumer
 * sizes its prefetch on it, so that what it holds stays within a byte budget.
 */
export const MAX_MESSAGE_BYTES = 64 * 1024
/** Header of a batch message: how many events it carries (the consumer weighs it unparsed). */
export const EVENT_COUNT_HEADER = 'x-event-count'

const UserId = Type.Integer({
  minimum: 1,
  maximum: MAX_USER_ID,
  description: 'The acting user, a positive integer that fits a MySQL INT',
  examples: [123],
})

const EventType = Type.String({
  minLength: 1,
  maxLength: MAX_EVENT_TYPE_LENGTH,
  pattern: '^[^\\p{Cc}]*$',
  description: 'What happened (login, logout, page_view, ...), without control characters',
  examples: ['page_view'],
})

const Timestamp = Type.String({
  format: 'date-time',
  description:
    'When it happened, ISO 8601 / RFC 3339; a time without offset is UTC. Stored as UTC with millisecond precision.',
  examples: ['2026-02-20T10:00:00Z'],
})

const Metadata = Type.Record(Type.String(), Type.Unknown(), {
  description: `Free-form JSON object, nested at most ${MAX_METADATA_DEPTH} levels deep`,
  examples: [{ page_url: '/products/item-xyz', session_id: 'abc123' }],
})

const EventId = Type.String({
  format: 'uuid',
  description: 'Idempotency key; the same event_id is stored once. Generated (UUIDv7) when absent.',
})

/** The body of `POST /api/v1/events/track`. Unknown properties are ignored. */
export const UserActivityEventSchema = Type.Object(
  {
    user_id: UserId,
    event_type: EventType,
    timestamp: Timestamp,
    metadata: Type.Optional(Type.Union([Metadata, Type.Null()])),
    event_id: Type.Optional(EventId),
  },
  { title: 'UserActivityEvent' },
)
export type UserActivityEvent = Static<typeof UserActivityEventSchema>

/** The normalized event as published to the queue and read by the consumer. */
export const QueueMessageSchema = Type.Object(
  {
    event_id: EventId,
    user_id: UserId,
    event_type: EventType,
    timestamp: Timestamp,
    metadata: Metadata,
    received_at: Type.String({ format: 'date-time' }),
  },
  { title: 'UserActivityMessage' },
)
export type QueueMessage = Static<typeof QueueMessageSchema>

/** The 202 body. */
export const AcceptedSchema = Type.Object(
  {
    status: Type.Literal('accepted'),
    message: Type.Literal('Event queued for processing'),
    event_id: Type.String({ format: 'uuid' }),
  },
  { title: 'Accepted' },
)

/** One FastAPI-style validation entry. */
export const ValidationDetailSchema = Type.Object({
  loc: Type.Array(Type.Union([Type.String(), Type.Integer()])),
  msg: Type.String(),
  type: Type.String(),
})
export type ValidationDetail = Static<typeof ValidationDetailSchema>

/** The 400 body. */
export const ValidationErrorSchema = Type.Object(
  {
    detail: Type.Array(ValidationDetailSchema),
    message: Type.String(),
  },
  { title: 'ValidationError' },
)

/** Every other error body (413, 415, 500, 503). */
export const ErrorSchema = Type.Object({ detail: Type.String(), message: Type.String() }, { title: 'Error' })

/** The 500 and 503 bodies of an event not queued: the event_id to retry with (no duplicate). */
export const QueueFailedSchema = Type.Object(
  {
    detail: Type.String(),
    message: Type.String(),
    event_id: Type.Optional(Type.String({ format: 'uuid', description: 'Retry with this event_id' })),
  },
  { title: 'QueueFailed' },
)

/** The body of `POST /api/v1/events/batch`; its size limits are the service's configuration. */
export function batchSchema(maxEvents: number) {
  return Type.Object(
    {
      batch: Type.Array(UserActivityEventSchema, {
        minItems: 1,
        maxItems: maxEvents,
        description: `1 to ${maxEvents} events, each as /api/v1/events/track takes it`,
      }),
    },
    { title: 'UserActivityBatch' },
  )
}

/** A batch message on the queue: the normalized events of one request. */
export const QueueBatchMessageSchema = Type.Object(
  { events: Type.Array(QueueMessageSchema, { minItems: 1 }) },
  { title: 'UserActivityBatchMessage' },
)

/** The 202 body of a batch: every event_id, in request order. */
export const BatchAcceptedSchema = Type.Object(
  {
    status: Type.Literal('accepted'),
    message: Type.Literal('Events queued for processing'),
    count: Type.Integer(),
    event_ids: Type.Array(Type.String({ format: 'uuid' })),
  },
  { title: 'BatchAccepted' },
)

/** The 500 and 503 bodies of a batch not queued: resend it with these event_ids. */
export const BatchFailedSchema = Type.Object(
  {
    detail: Type.String(),
    message: Type.String(),
    event_ids: Type.Array(Type.String({ format: 'uuid' }), { description: 'Resend the batch with these event_ids' }),
  },
  { title: 'BatchFailed' },
)
