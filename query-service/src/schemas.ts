// What the read routes take and answer, as TypeBox schemas: checked on each request
// (parseParameters) and published as the OpenAPI document.
import Type from 'typebox'
import { MAX_USER_ID, ValidationErrorSchema } from 'event-contract'

/** Most buckets one stats query may span (31 days by the hour). */
export const MAX_BUCKETS = 1000
export const MAX_LIMIT = 1000
export const DEFAULT_LIMIT = 100

const Time = (description: string) => Type.String({ format: 'date-time', description })

export const UserParams = Type.Object({
  user_id: Type.Integer({ minimum: 1, maximum: MAX_USER_ID, description: 'The user, a positive integer' }),
})

export const EventParams = Type.Object({
  event_id: Type.String({ format: 'uuid', description: 'The event_id the producer answered with' }),
})

export const TimelineQuery = Type.Object({
  from: Type.Optional(Time('Events at or after this time (by `timestamp`), ISO 8601')),
  to: Type.Optional(Time('Events before this time (by `timestamp`), ISO 8601')),
  event_type: Type.Optional(Type.String({ minLength: 1, maxLength: 50, description: 'Only events of this type' })),
  limit: Type.Integer({
    minimum: 1,
    maximum: MAX_LIMIT,
    default: DEFAULT_LIMIT,
    description: 'Most events in the page; a page also ends at about 4 MB of events',
  }),
  cursor: Type.Optional(
    Type.String({ maxLength: 512, description: 'The next_cursor of the previous page, with the same filters' }),
  ),
})

export const StatsQuery = Type.Object({
  from: Type.Optional(Time('Start; rounded down to its bucket. Default: 24 buckets before `to`')),
  to: Type.Optional(Time('End (exclusive); rounded up to a bucket edge. Default: now')),
  interval: Type.Enum(['hour', 'day'], { default: 'hour', description: 'UTC buckets' }),
  event_type: Type.Optional(Type.String({ minLength: 1, maxLength: 50, description: 'Only events of this type' })),
})

export const EventSchema = Type.Object(
  {
    event_id: Type.String({ format: 'uuid' }),
    user_id: Type.Integer(),
    event_type: Type.String(),
    timestamp: Type.String({ format: 'date-time' }),
    metadata: Type.Record(Type.String(), Type.Unknown()),
    received_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], {
      description: 'When the producer received it; null for events stored before this was kept',
    }),
    stored_at: Type.String({ format: 'date-time', description: 'When the consumer stored it (to the second)' }),
  },
  { title: 'StoredEvent' },
)

export const TimelineSchema = Type.Object(
  {
    events: Type.Array(EventSchema),
    next_cursor: Type.Union([Type.String(), Type.Null()], {
      description: 'Pass as `cursor` for the next (older) page; null on the last page',
    }),
  },
  { title: 'Timeline' },
)

export const StatsSchema = Type.Object(
  {
    interval: Type.Enum(['hour', 'day']),
    buckets: Type.Array(
      Type.Object({
        start: Type.String({ format: 'date-time' }),
        event_type: Type.String(),
        count: Type.Integer(),
      }),
      { description: 'Buckets with at least one event, by start then event_type' },
    ),
  },
  { title: 'EventCounts' },
)

const Detail = (title: string) => Type.Object({ detail: Type.String() }, { title })
export const NotFoundSchema = Detail('NotFound')
export const UnauthorizedSchema = Detail('Unauthorized')
export const UnavailableSchema = Detail('Unavailable')
export { ValidationErrorSchema }
