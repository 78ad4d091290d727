// The producer process: configuration, logger, broker connection, HTTP server, signals.
import closeWithGrace from 'close-with-grace'
import { pino } from 'pino'
import { ConfigError } from 'event-contract'
import { buildApp } from './app.js'
import { readConfig, type Config } from './config.js'
import { AmqpPublisher } from './publisher.js'

let config: Config
try {
  config = readConfig()
} catch (err) {
  if (!(err instanceof ConfigError)) throw err
  console.error(err.message)
  process.exit(1)
}

const logger = pino({
  name: 'producer-service',
  level: config.LOG_LEVEL,
  ...(process.stdout.isTTY && process.env.NODE_ENV !== 'production' ? { transport: { target: 'pino-pretty' } } : {}),
})
const publisher = new AmqpPublisher({ config, logger })
const app = await buildApp({ publisher, logger, bodyLimit: config.BODY_LIMIT_BYTES })

closeWithGrace({ delay: 10_000, logger }, async ({ signal, err }) => {
  if (err) logger.error({ err }, 'shutting down after an error')
  else logger.info({ signal }, 'shutting down')
  // Stop accepting and let in-flight requests get their confirms, then close the broker connection.
  await app.close()
  await publisher.close()
})

await publisher.start()
await app.listen({ host: config.HOST, port: config.PORT })
