// The producer process: configuration, logger, broker connection, HTTP server, signals.
import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import { closeBounded, configOrExit, createLogger, RequestTracker } from 'event-contract'
import { buildApp } from './app.js'
import { readConfig } from './config.js'
import { createProducerMetrics } from './metrics.js'
import { AmqpPublisher } from './publisher.js'
import { securityFromConfig } from './plugins/security.js'

const config = configOrExit(readConfig)
const logger = createLogger('producer-service', config.LOG_LEVEL)
const metrics = config.METRICS_ENABLED ? createProducerMetrics() : undefined
const publisher = new AmqpPublisher({
  config,
  logger,
  onConfirm: (seconds) => metrics?.confirmSeconds.observe(seconds),
})
const security = configOrExit(() => securityFromConfig(config))
// Before anything that awaits: a SIGTERM while starting up closes what has started, and exits 0.
let app: FastifyInstance | undefined = undefined
let requests: RequestTracker | undefined = undefined
closeWithGrace({ delay: 10_000, logger }, async ({ signal, err }) => {
  if (err) logger.error({ err }, 'shutting down after an error')
  else logger.info({ signal }, 'shutting down')
  // Stop accepting and let in-flight requests get their confirms, then close the broker
  // connection. Within the 10 s: a body still arriving after 2 s is cut (it was never answered),
  // any connection left at 5.5 s is dropped; then 0.5 s for late confirms, 3 s for the close.
  if (app && requests) await closeBounded(app, { tracker: requests, logger, unreadGraceMs: 2000, forceMs: 5500 })
  await publisher.close()
})

logger.info(
  { rabbitmq: { host: config.RABBITMQ_HOST, port: config.RABBITMQ_PORT, queue: config.RABBITMQ_QUEUE } },
  'starting',
)
app = await buildApp({
  security,
  publisher,
  logger,
  bodyLimit: config.BODY_LIMIT_BYTES,
  batchMaxEvents: config.BATCH_MAX_EVENTS,
  batchBodyLimit: config.BATCH_BODY_LIMIT_BYTES,
  bodyMaxInFlightBytes: config.BODY_MAX_IN_FLIGHT_BYTES,
  requestTimeoutMs: config.REQUEST_TIMEOUT_MS,
  headersTimeoutMs: config.HEADERS_TIMEOUT_MS,
  metrics,
})
requests = new RequestTracker(app.server)

await publisher.start()
await app.listen({ host: config.HOST, port: config.PORT })
