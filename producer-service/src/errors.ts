// Every error the API answers with, each with its code and HTTP status (@fastify/error), and
// what the answer says for it.
import createError from '@fastify/error'
import type { ValidationDetail } from 'event-contract'

export const INVALID_EVENT_MESSAGE = 'Invalid UserActivityEvent payload'

/** A body that is not a valid event or batch: 400 with FastAPI's `detail` entries. */
export class EventValidationError extends createError('ERR_INVALID_EVENT', INVALID_EVENT_MESSAGE, 400) {
  constructor(readonly details: ValidationDetail[]) {
    super()
  }
}

/** A body declared in a charset other than UTF-8 (JSON is UTF-8, RFC 8259): 415. */
export const UnsupportedCharsetError = createError('ERR_UNSUPPORTED_CHARSET', 'charset %s is not supported', 415)

/** A request without a valid key: 401 with WWW-Authenticate. */
export class UnauthorizedError extends createError('ERR_UNAUTHORIZED', '%s', 401) {
  constructor(readonly presented: boolean) {
    super(presented ? 'The API key is not valid' : 'An API key is required')
  }
}

/** Too many requests from one key or client: 429 with Retry-After (the plugin sets it). */
export const RateLimitedError = createError('ERR_RATE_LIMITED', 'Rate limit exceeded: at most %s requests in %s', 429)

/** Why a publish failed. */
export type PublishErrorCode =
  | 'BROKER_UNAVAILABLE' // no open channel: broker down or reconnecting
  | 'BROKER_NACK' // the broker refused the message
  | 'BROKER_UNROUTABLE' // no queue took the message
  | 'CONFIRM_TIMEOUT' // no confirm within the publish timeout
  | 'OVERLOADED' // too many publishes awaiting confirms
  | 'BROKER_BLOCKED' // the broker has blocked publishers (memory or disk alarm)
  | 'BROKER_BACKPRESSURE' // the broker reads slower than events arrive: our buffer to it is full
  | 'SHUTTING_DOWN' // the service is stopping
  | 'BODIES_OVERLOADED' // too many request bodies being read at once (BODY_MAX_IN_FLIGHT_BYTES)

/** Events not queued: each code's error below is one (`instanceof PublishError`). */
export abstract class PublishError extends Error {
  declare readonly code: PublishErrorCode
  declare readonly statusCode: 500 | 503
  /** What the answer's `detail` says. */
  get detail(): string {
    return this.message
  }
}

const publishErrorOf = (code: PublishErrorCode, statusCode: 500 | 503, detail: string) =>
  createError(code, detail, statusCode, PublishError as unknown as ErrorConstructor)

const PUBLISH_ERRORS = {
  BROKER_UNAVAILABLE: publishErrorOf('BROKER_UNAVAILABLE', 500, 'The message broker is unavailable'),
  BROKER_NACK: publishErrorOf('BROKER_NACK', 500, 'The message broker rejected the event'),
  BROKER_UNROUTABLE: publishErrorOf('BROKER_UNROUTABLE', 500, 'The event queue does not exist'),
  CONFIRM_TIMEOUT: publishErrorOf('CONFIRM_TIMEOUT', 500, 'The message broker did not confirm the event in time'),
  OVERLOADED: publishErrorOf('OVERLOADED', 503, 'Too many events are waiting for the broker; retry later'),
  BROKER_BLOCKED: publishErrorOf(
    'BROKER_BLOCKED',
    503,
    'The message broker is refusing new events for now; retry later',
  ),
  BROKER_BACKPRESSURE: publishErrorOf('BROKER_BACKPRESSURE', 503, 'The message broker is not keeping up; retry later'),
  SHUTTING_DOWN: publishErrorOf('SHUTTING_DOWN', 503, 'The service is shutting down; retry later'),
  BODIES_OVERLOADED: publishErrorOf(
    'BODIES_OVERLOADED',
    503,
    'Too many requests are being received at once; retry later',
  ),
} satisfies Record<PublishErrorCode, unknown>

/** The PublishError of `code`, with its cause when there is one. */
export function publishError(code: PublishErrorCode, options?: { cause?: unknown }): PublishError {
  const ErrorOfCode = PUBLISH_ERRORS[code]
  return (options && 'cause' in options ? new ErrorOfCode(options) : new ErrorOfCode()) as unknown as PublishError
}
