// The consumer process: configuration, logger, database, broker consumer, health server, signals.
import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import { closeBounded, configOrExit, createLogger, RequestTracker } from 'event-contract'
import { readConfig } from './config.js'
import { buildHealthApp } from './health.js'
import { createConsumerMetrics, observeWorker } from './metrics.js'
import { Lifecycle } from './lifecycle.js'
import { Store } from './store.js'
import { logSummaries } from './summary.js'
import { Worker } from './worker.js'

const config = configOrExit(readConfig)
const logger = createLogger('consumer-service', config.LOG_LEVEL)
const store = Store.fromConfig(config, logger)
const metrics = config.METRICS_ENABLED ? createConsumerMetrics() : undefined
const worker = new Worker({ config, store, logger })
if (metrics) observeWorker(metrics, worker)
const summaries = logSummaries(worker, logger.child({ component: 'worker' }))
const lifecycle = new Lifecycle({
  connection: {
    host: config.MYSQL_HOST,
    port: config.MYSQL_PORT,
    user: config.MYSQL_USER,
    password: config.MYSQL_PASSWORD,
    database: config.MYSQL_DATABASE,
  },
  logger,
  retentionDays: config.RETENTION_DAYS,
  intervalMs: config.LIFECYCLE_INTERVAL_MS,
  onRemoved: ({ erased, expired }) => {
    metrics?.removed.inc({ reason: 'erased' }, erased)
    metrics?.removed.inc({ reason: 'expired' }, expired)
  },
})

// Before anything that awaits: a SIGTERM while starting up closes what has started, and exits 0.
let health: FastifyInstance | undefined = undefined
let probes: RequestTracker | undefined = undefined
closeWithGrace({ delay: 10_000, logger }, async ({ signal, err }) => {
  if (err) logger.error({ err }, 'shutting down after an error')
  else logger.info({ signal }, 'shutting down')
  // Reverse order of start-up: stop consuming (finishing the current batch), then the rest.
  // Within the 10 s: 4 s for the cancel and the batches, 3 s for the broker's close, then the
  // health server (1.25 s) beside the pool (2 s for a database query still running): 9 s.
  await Promise.all([worker.stop(4000), lifecycle.stop(2000)])
  summaries.close()
  await Promise.all([
    health && probes && closeBounded(health, { tracker: probes, logger, unreadGraceMs: 500, forceMs: 1000 }),
    store.close(),
  ])
})

logger.info(
  {
    rabbitmq: { host: config.RABBITMQ_HOST, port: config.RABBITMQ_PORT, queue: config.RABBITMQ_QUEUE },
    mysql: store.location,
  },
  'starting',
)

health = await buildHealthApp({ worker, store, logger, metrics })
probes = new RequestTracker(health.server)
await health.listen({ host: config.HEALTH_HOST, port: config.HEALTH_PORT })
// Connects at once, so that /health names the dependency that is missing; consuming waits until
// the database answers and has the schema (db/init.sql), retrying meanwhile.
await worker.start()
// After the schema is in place (worker.start applies it): erased users' rows, expired events.
lifecycle.start()
