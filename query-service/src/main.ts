// The query service process: configuration, logger, database pool, HTTP server, signals.
import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import { configOrExit, createLogger } from 'event-contract'
import { buildApp } from './app.js'
import { accessFromConfig, readConfig } from './config.js'
import { createQueryMetrics } from './metrics.js'
import { Reader } from './reader.js'

const config = configOrExit(readConfig)
const access = configOrExit(() => accessFromConfig(config))
const logger = createLogger('query-service', config.LOG_LEVEL)
const reader = new Reader({
  host: config.MYSQL_READ_HOST || config.MYSQL_HOST,
  port: config.MYSQL_READ_HOST ? config.MYSQL_READ_PORT || config.MYSQL_PORT : config.MYSQL_PORT,
  user: config.MYSQL_USER,
  password: config.MYSQL_PASSWORD,
  database: config.MYSQL_DATABASE,
  timeoutMs: config.QUERY_TIMEOUT_MS,
  logger,
})
// Erasures are writes: on the primary when reads go to a replica.
const writer = config.MYSQL_READ_HOST
  ? new Reader({
      host: config.MYSQL_HOST,
      port: config.MYSQL_PORT,
      user: config.MYSQL_USER,
      password: config.MYSQL_PASSWORD,
      database: config.MYSQL_DATABASE,
      timeoutMs: config.QUERY_TIMEOUT_MS,
      logger,
    })
  : reader
// Before anything that awaits: a SIGTERM while starting up closes what has started, and exits 0.
let app: FastifyInstance | undefined = undefined
closeWithGrace({ delay: 10_000, logger }, async ({ signal, err }) => {
  if (err) logger.error({ err }, 'shutting down after an error')
  else logger.info({ signal }, 'shutting down')
  // In-flight reads finish within their query bound; then the pool closes.
  await app?.close()
  await Promise.all([reader.close(), writer !== reader && writer.close()])
})

logger.info({ mysql: reader.location, replica: Boolean(config.MYSQL_READ_HOST) }, 'starting')
app = await buildApp({
  reader,
  writer,
  logger,
  access,
  cursorSecret: config.QUERY_CURSOR_SECRET,
  metrics: config.METRICS_ENABLED ? createQueryMetrics() : undefined,
})
await app.listen({ host: config.HOST, port: config.PORT })
