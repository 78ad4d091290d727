// The consumer process: configuration, logger, database, broker consumer, health server, signals.
import closeWithGrace from 'close-with-grace'
import { pino } from 'pino'
import { ConfigError } from 'event-contract'
import { readConfig, type Config } from './config.js'
import { buildHealthApp } from './health.js'
import { Store } from './store.js'
import { backoffDelay, Worker } from './worker.js'

let config: Config
try {
  config = readConfig()
} catch (err) {
  if (!(err instanceof ConfigError)) throw err
  console.error(err.message)
  process.exit(1)
}

const logger = pino({
  name: 'consumer-service',
  level: config.LOG_LEVEL,
  ...(process.stdout.isTTY && process.env.NODE_ENV !== 'production' ? { transport: { target: 'pino-pretty' } } : {}),
})
const store = new Store({
  host: config.MYSQL_HOST,
  port: config.MYSQL_PORT,
  user: config.MYSQL_USER,
  password: config.MYSQL_PASSWORD,
  database: config.MYSQL_DATABASE,
  logger,
})
const worker = new Worker({ config, store, logger })
const health = await buildHealthApp({ worker, store, logger })
const shutdown = new AbortController()

closeWithGrace({ delay: 10_000, logger }, async ({ signal, err }) => {
  if (err) logger.error({ err }, 'shutting down after an error')
  else logger.info({ signal }, 'shutting down')
  shutdown.abort()
  // Reverse order of start-up: stop consuming (finishing the current batch), then the rest.
  await worker.stop(7000)
  await health.close()
  await store.close()
})

await health.listen({ host: config.HEALTH_HOST, port: config.HEALTH_PORT })

// The database may still be starting: keep trying to apply the schema (/health says 503 meanwhile).
for (let attempt = 0; !shutdown.signal.aborted; attempt++) {
  try {
    await store.applySchema()
    break
  } catch (err) {
    const delay = backoffDelay(attempt, config.CONSUMER_RETRY_MAX_MS)
    logger.warn({ err, delay }, 'could not apply db/init.sql; retrying')
    await new Promise((resolve) => setTimeout(resolve, delay))
  }
}
if (!shutdown.signal.aborted) await worker.start()
