// The producer's Prometheus metrics (GET /metrics): every request and every event counted, by
// outcome; labels of small fixed sets only (never an event_type or a user_id).
import client from 'prom-client'
import type { PublishErrorCode } from './errors.js'
import type { EventPublisher } from './publisher.js'

/** Why events were not accepted: the `reason` label of producer_events_rejected_total. */
export type RejectReason =
  | 'validation'
  | 'unauthorized'
  | 'rate_limited'
  | 'too_large'
  | 'unsupported_media_type'
  | 'broker_unavailable'
  | 'broker_rejected'
  | 'timeout'
  | 'overloaded'
  | 'shutting_down'

export const PUBLISH_REASONS: Record<PublishErrorCode, RejectReason> = {
  BROKER_UNAVAILABLE: 'broker_unavailable',
  BROKER_NACK: 'broker_rejected',
  BROKER_UNROUTABLE: 'broker_rejected',
  CONFIRM_TIMEOUT: 'timeout',
  OVERLOADED: 'overloaded',
  BROKER_BLOCKED: 'overloaded',
  BROKER_BACKPRESSURE: 'overloaded',
  SHUTTING_DOWN: 'shutting_down',
  BODIES_OVERLOADED: 'overloaded',
}

export const STATUS_REASONS: Record<number, RejectReason> = {
  400: 'validation',
  401: 'unauthorized',
  429: 'rate_limited',
  413: 'too_large',
  415: 'unsupported_media_type',
}

export type ProducerMetrics = ReturnType<typeof createProducerMetrics>

export function createProducerMetrics() {
  const registry = new client.Registry()
  client.collectDefaultMetrics({ register: registry })
  const registers = [registry]
  return {
    registry,
    requests: new client.Counter({
      name: 'producer_http_requests_total',
      help: 'HTTP requests answered, by route and status',
      labelNames: ['route', 'status'] as const,
      registers,
    }),
    received: new client.Counter({
      name: 'producer_events_received_total',
      help: 'Events received on /track and /batch (a batch counts its events)',
      registers,
    }),
    accepted: new client.Counter({
      name: 'producer_events_accepted_total',
      help: 'Events answered 202: confirmed by RabbitMQ',
      registers,
    }),
    rejected: new client.Counter({
      name: 'producer_events_rejected_total',
      help: 'Events not accepted, by reason',
      labelNames: ['reason'] as const,
      registers,
    }),
    bodyBytes: new client.Histogram({
      name: 'producer_request_body_bytes',
      help: 'Size of request bodies, decompressed',
      buckets: [256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304],
      registers,
    }),
    rateLimitStoreErrors: new client.Counter({
      name: 'producer_rate_limit_store_errors_total',
      help: 'Requests let through uncounted because the rate-limit store (Redis) failed',
      registers,
    }),
    confirmSeconds: new client.Histogram({
      name: 'producer_publish_confirm_seconds',
      help: "Time from publish to RabbitMQ's confirm",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
  }
}

/** Gauges read from the publisher at scrape time. */
export function observePublisher(metrics: ProducerMetrics, publisher: EventPublisher): void {
  const registers = [metrics.registry]
  new client.Gauge({
    name: 'producer_publishes_in_flight',
    help: 'Events published and not yet answered by RabbitMQ',
    registers,
    collect() {
      this.set(publisher.inFlight)
    },
  })
  new client.Gauge({
    name: 'producer_publish_bytes_in_flight',
    help: "Bytes of messages awaiting the broker's answer (503 at PUBLISH_MAX_IN_FLIGHT_BYTES)",
    registers,
    collect() {
      this.set(publisher.inFlightBytes)
    },
  })
  new client.Gauge({
    name: 'producer_broker_up',
    help: '1 when the producer has a channel to RabbitMQ that takes events, else 0',
    registers,
    collect() {
      this.set(publisher.health() === 'up' ? 1 : 0)
    },
  })
}
