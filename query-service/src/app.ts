// Builds the query service's HTTP API. Never listens: main.ts does, and tests use app.inject.
import Fastify, { type FastifyBaseLogger } from 'fastify'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import Type from 'typebox'
import type { Access } from './config.js'
import { Cursors } from './cursor.js'
import type { QueryMetrics } from './metrics.js'
import errorHandler from './plugins/error-handler.js'
import readKeys, { ADMIN_ROUTE, READ_ROUTE } from './plugins/read-keys.js'
import { eraseRoute } from './erase-route.js'
import type { Reader } from './reader.js'
import { readRoutes } from './routes.js'

export interface AppOptions {
  reader: Reader
  /** The primary, for erasures, when `reader` reads a replica; `reader` otherwise. */
  writer?: Reader
  logger: FastifyBaseLogger
  access: Access
  /** Signs the timeline's cursors (QUERY_CURSOR_SECRET). */
  cursorSecret?: string
  metrics?: QueryMetrics
}

const HealthSchema = Type.Object({
  status: Type.Enum(['healthy', 'unhealthy']),
  checks: Type.Object({ mysql: Type.Enum(['up', 'down']) }),
})

export async function buildApp({ reader, writer = reader, logger, access, cursorSecret, metrics }: AppOptions) {
  const app = Fastify({ loggerInstance: logger })
  // The routes' schemas document them; each handler checks its parameters itself
  // (parseParameters), for errors in FastAPI's shape and timestamps read as the producer reads them.
  app.setValidatorCompiler(() => (data) => ({ value: data }))

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'User Activity Tracker: queries',
        description: "Reads what was stored: a user's timeline, one event, counts over time; erases a user.",
        version: '1.0.0',
      },
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', description: 'Authorization: Bearer <read key>' },
          basicAuth: { type: 'http', scheme: 'basic', description: 'The read key as user name, no password' },
          apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
        },
      },
    },
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })
  await app.register(errorHandler, { onUnavailable: () => metrics?.unavailable.inc() })
  await app.register(readKeys, access)

  if (metrics) {
    app.addHook('onResponse', async (request, reply) => {
      const route = request.routeOptions.url ?? 'unknown'
      metrics.requests.inc({ route, status: String(reply.statusCode) })
      if ((request.routeOptions.config as { access?: string }).access === READ_ROUTE.access) {
        metrics.seconds.observe({ route }, reply.elapsedTime / 1000)
      }
    })
    app.get('/metrics', { schema: { hide: true } }, async (request, reply) =>
      reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
    )
  }

  await app.register(readRoutes, { reader, cursors: new Cursors(cursorSecret), guarded: READ_ROUTE })
  await app.register(eraseRoute, { writer, guarded: ADMIN_ROUTE })

  app.get(
    '/health',
    { schema: { summary: 'Database health', response: { 200: HealthSchema, 503: HealthSchema } } },
    async (request, reply) => {
      const up = await reader.ping()
      return reply
        .code(up ? 200 : 503)
        .send({ status: up ? 'healthy' : 'unhealthy', checks: { mysql: up ? 'up' : 'down' } })
    },
  )
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
  return app
}
