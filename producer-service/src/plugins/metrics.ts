// Counts each request by route and status, and for the ingestion routes its events by outcome;
// reads the publisher's and the body budget's gauges at scrape time; serves GET /metrics.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import client from 'prom-client'
import { INGESTION_ROUTES } from '../events.js'
import { observePublisher, PUBLISH_REASONS, STATUS_REASONS, type ProducerMetrics } from '../metrics.js'
import type { EventPublisher } from '../publisher.js'

export interface MetricsOptions {
  metrics: ProducerMetrics
  publisher: EventPublisher
}

/** The events a request carried: a batch's length, else one. */
function eventCount(request: FastifyRequest): number {
  const body = request.body as { batch?: unknown } | unknown[] | undefined
  if (Array.isArray(body)) return body.length
  const batch = (body as { batch?: unknown } | undefined)?.batch
  return Array.isArray(batch) ? batch.length : 1
}

async function metricsPlugin(app: FastifyInstance, { metrics, publisher }: MetricsOptions): Promise<void> {
  observePublisher(metrics, publisher)
  new client.Gauge({
    name: 'producer_request_body_bytes_in_flight',
    help: 'Request-body bytes held by requests in progress (503 at BODY_MAX_IN_FLIGHT_BYTES)',
    registers: [metrics.registry],
    collect() {
      this.set(app.bodyBytesHeld)
    },
  })
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched'
    metrics.requests.inc({ route, status: reply.statusCode })
    if (!INGESTION_ROUTES.has(route)) return
    const events = eventCount(request)
    metrics.received.inc(events)
    if (reply.statusCode === 202) {
      metrics.accepted.inc(events)
      return
    }
    const code = request.publishFailure?.error
    const reason = code ? PUBLISH_REASONS[code] : STATUS_REASONS[reply.statusCode]
    if (reason) metrics.rejected.inc({ reason }, events)
  })
  app.get('/metrics', { schema: { hide: true } }, async (request, reply) => {
    reply.header('content-type', metrics.registry.contentType)
    return metrics.registry.metrics()
  })
}

export default fp(metricsPlugin, { name: 'metrics', fastify: '5.x', dependencies: ['error-handler', 'body-budget'] })
