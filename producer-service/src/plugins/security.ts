// What makes the API safe to expose, each off unless configured: write keys on the ingestion
// routes, a rate limit per key (or per client address), and CORS for browser clients.
import cors from '@fastify/cors'
import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { ConfigError, fingerprint, KeyRing, keysFromConfig, listOf, presentedKey } from 'event-contract'
import { RateLimitedError, UnauthorizedError } from '../errors.js'
import { INGESTION_ROUTES } from '../events.js'
import { redisRateLimitStore } from '../rate-limit-store.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The route config that turns the rate limit on for an ingestion route. */
    readonly ingestionRouteConfig: Record<string, unknown>
  }
}

export interface SecurityOptions {
  /** Write keys; none means ingestion is open. */
  apiKeys: string[]
  /** Requests per window per key (or client address); 0 means no limit. */
  rateLimitMax: number
  rateLimitWindowMs: number
  /** Shares the counters of several producers; unreachable, the producer lets requests through. */
  rateLimitRedisUrl?: string
  /** Longest wait for Redis to answer a count; past it the request goes through uncounted. */
  rateLimitRedisTimeoutMs?: number
  /** Origins allowed to call from a browser: a list, or '*'; none means no CORS headers. */
  corsOrigins: string[] | '*'
  /** Told of each request let through because the rate-limit store failed. */
  onStoreError?: (err: Error) => void
}

/** The settings of the environment (API_KEYS, API_KEYS_FILE, RATE_LIMIT_*, CORS_ORIGINS). */
export function securityFromConfig(config: {
  API_KEYS: string
  API_KEYS_FILE: string
  RATE_LIMIT_MAX: number
  RATE_LIMIT_WINDOW_MS: number
  RATE_LIMIT_REDIS_URL: string
  RATE_LIMIT_REDIS_TIMEOUT_MS: number
  CORS_ORIGINS: string
}): SecurityOptions {
  const apiKeys = keysFromConfig(config, 'API_KEYS', 'API_KEYS_FILE')
  const origins = listOf(config.CORS_ORIGINS)
  for (const origin of origins) {
    if (origin !== '*' && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new ConfigError([`CORS_ORIGINS: ${JSON.stringify(origin)} is not an origin like https://app.example.com`])
    }
  }
  return {
    apiKeys,
    rateLimitMax: config.RATE_LIMIT_MAX,
    rateLimitWindowMs: config.RATE_LIMIT_WINDOW_MS,
    rateLimitRedisUrl: config.RATE_LIMIT_REDIS_URL || undefined,
    rateLimitRedisTimeoutMs: config.RATE_LIMIT_REDIS_TIMEOUT_MS,
    corsOrigins: origins.includes('*') ? '*' : origins,
  }
}

export { fingerprint }

const keyOf = new WeakMap<FastifyRequest, string>()

/** The fingerprint of the key a request was let in with, for its log line. */
export function keyFingerprintOf(request: FastifyRequest): string | undefined {
  return keyOf.get(request)
}

/**
 * CORS, then the key check and the rate limit on the ingestion routes. Registered before the
 * routes are declared: the rate limit attaches to them as they are, through the route config
 * it decorates the instance with.
 */
async function security(app: FastifyInstance, options: SecurityOptions): Promise<void> {
  const logger = app.log
  if (options.corsOrigins === '*' || options.corsOrigins.length > 0) {
    await app.register(cors, {
      origin: options.corsOrigins === '*' ? '*' : options.corsOrigins,
      methods: ['POST'],
      allowedHeaders: ['Content-Type', 'Content-Encoding', 'Authorization', 'X-API-Key'],
      exposedHeaders: ['Retry-After', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset'],
      maxAge: 600,
    })
  }

  const ring = new KeyRing(options.apiKeys)
  if (ring.size === 0) {
    logger.warn('ingestion is open: no API_KEYS or API_KEYS_FILE set, anyone who can reach the API can write events')
  } else {
    logger.info({ keys: ring.fingerprints }, 'ingestion requires an API key')
    app.addHook('onRequest', async (request) => {
      if (!INGESTION_ROUTES.has(request.routeOptions.url ?? '')) return
      const key = presentedKey(request.headers)
      if (key === undefined) throw new UnauthorizedError(false)
      if (!ring.holds(key)) throw new UnauthorizedError(true)
      keyOf.set(request, fingerprint(key))
    })
  }

  if (options.rateLimitMax <= 0) {
    app.decorate('ingestionRouteConfig', {})
    return
  }
  const store = options.rateLimitRedisUrl
    ? redisRateLimitStore(
        options.rateLimitRedisUrl,
        options.rateLimitRedisTimeoutMs ?? 100,
        logger,
        options.onStoreError,
      )
    : undefined
  if (store) app.addHook('onClose', async () => store.redis.disconnect())
  await app.register(rateLimit, {
    global: false,
    max: options.rateLimitMax,
    timeWindow: options.rateLimitWindowMs,
    keyGenerator: (request) => keyOf.get(request) ?? request.ip,
    // Fail open: a Redis outage must not stop ingestion; each such request is counted.
    skipOnError: true,
    ...(store ? { store: store.ctor } : {}),
    errorResponseBuilder: (request, context) => new RateLimitedError(context.max, context.after),
  })
  app.decorate('ingestionRouteConfig', { rateLimit: {} })
}

export default fp(security, { name: 'security', fastify: '5.x' })
