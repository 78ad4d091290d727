// The consumer's health server: GET /health reports the broker consumer, the database (does it
// answer, do writes succeed), whether the events in hand are moving and whether the dead-letter
// queue takes letters; GET /metrics serves its Prometheus metrics.
import Fastify, { LogController, type FastifyBaseLogger } from 'fastify'
import type { ConsumerMetrics } from './metrics.js'
import type { DatabaseHealth } from './store.js'
import type { WorkerHealth } from './worker.js'

export interface HealthSources {
  worker: { health(): WorkerHealth }
  /** `up`, `down` (does not answer) or `failing` (answers, but writes fail). */
  store: { health(): Promise<DatabaseHealth> }
  logger: FastifyBaseLogger
  /** Prometheus metrics, served on GET /metrics; none when absent. */
  metrics?: ConsumerMetrics
}

export async function buildHealthApp({ worker, store, logger, metrics }: HealthSources) {
  // Probes call every few seconds: no log line per request.
  const app = Fastify({ loggerInstance: logger, logController: new LogController({ disableRequestLogging: true }) })

  app.get('/health', async (request, reply) => {
    const { rabbitmq, progress, dlq } = worker.health()
    const mysql = await store.health()
    const healthy = rabbitmq === 'up' && mysql === 'up' && progress === 'ok' && dlq === 'ok'
    return reply
      .code(healthy ? 200 : 503)
      .send({ status: healthy ? 'healthy' : 'unhealthy', checks: { rabbitmq, mysql, progress, dlq } })
  })
  if (metrics) {
    app.get('/metrics', async (request, reply) => {
      reply.header('content-type', metrics.registry.contentType)
      return metrics.registry.metrics()
    })
  }
  app.setNotFoundHandler((request, reply) => reply.code(404).send({ detail: 'Not Found' }))

  return app
}
