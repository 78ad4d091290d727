// The consumer process: configuration, logger, database, broker consumer, health server, signals.
import closeWithGrace from 'close-with-grace'
import { configOrExit, createLogger } from 'event-contract'
import { readConfig } from './config.js'
import { buildHealthApp } from './health.js'
import { Store } from './store.js'
import { backoffDelay, Worker } from './worker.js'

const config = configOrExit(readConfig)
const logger = createLogger('consumer-service', config.LOG_LEVEL)
const store = Store.fromConfig(config, logger)
const worker = new Worker({ config, store, logger })
const health = await buildHealthApp({ worker, store, logger })
const shutdown = new AbortController()

closeWithGrace({ delay: 10_000, logger }, async ({ signal, err }) => {
  if (err) logger.error({ err }, 'shutting down after an error')
  else logger.info({ signal }, 'shutting down')
  shutdown.abort()
  // Reverse order of start-up: stop consuming (finishing the current batch), then the rest;
  // 6 s for the batches, 2 s for a database query still running: within the 10 s.
  await worker.stop(6000)
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
