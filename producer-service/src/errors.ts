// Why a publish failed, and what the API answers for it.
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

const DETAILS: Record<PublishErrorCode, { statusCode: 500 | 503; detail: string }> = {
  BROKER_UNAVAILABLE: { statusCode: 500, detail: 'The message broker is unavailable' },
  BROKER_NACK: { statusCode: 500, detail: 'The message broker rejected the event' },
  BROKER_UNROUTABLE: { statusCode: 500, detail: 'The event queue does not exist' },
  CONFIRM_TIMEOUT: { statusCode: 500, detail: 'The message broker did not confirm the event in time' },
  OVERLOADED: { statusCode: 503, detail: 'Too many events are waiting for the broker; retry later' },
  BROKER_BLOCKED: { statusCode: 503, detail: 'The message broker is refusing new events for now; retry later' },
  BROKER_BACKPRESSURE: { statusCode: 503, detail: 'The message broker is not keeping up; retry later' },
  SHUTTING_DOWN: { statusCode: 503, detail: 'The service is shutting down; retry later' },
  BODIES_OVERLOADED: { statusCode: 503, detail: 'Too many requests are being received at once; retry later' },
}

export class PublishError extends Error {
  readonly statusCode: 500 | 503
  readonly detail: string

  constructor(
    readonly code: PublishErrorCode,
    options?: ErrorOptions,
  ) {
    super(`${code}: ${DETAILS[code].detail}`, options)
    this.name = 'PublishError'
    this.statusCode = DETAILS[code].statusCode
    this.detail = DETAILS[code].detail
  }
}
