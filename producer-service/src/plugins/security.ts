// What makes the API safe to expose, each off unless configured: write keys on the ingestion
// routes, a rate limit per key (or per client address), and CORS for browser clients.
import { createHash, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import cors from '@fastify/cors'
import rateLimit, { type FastifyRateLimitStore, type FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import RedisStore from '@fastify/rate-limit/store/RedisStore.js'
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify'
import { Redis } from 'ioredis'
import { ConfigError } from 'event-contract'

export const INGESTION_ROUTES = new Set(['/api/v1/events/track', '/api/v1/events/batch'])

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
  const list = (text: string) =>
    text
      .split(/[,\n]/)
      .map((item) => item.trim())
      .filter((item) => item.length > 0)
  const apiKeys = list(config.API_KEYS)
  if (config.API_KEYS_FILE) {
    let text: string
    try {
      text = readFileSync(config.API_KEYS_FILE, 'utf8')
    } catch (err) {
      throw new ConfigError([`API_KEYS_FILE=${JSON.stringify(config.API_KEYS_FILE)}: ${(err as Error).message}`])
    }
    const fromFile = list(text)
    if (fromFile.length === 0) {
      throw new ConfigError([`API_KEYS_FILE=${JSON.stringify(config.API_KEYS_FILE)}: the file holds no key`])
    }
    apiKeys.push(...fromFile)
  }
  const origins = list(config.CORS_ORIGINS)
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

/** A key's short, stable name for logs and rate-limit buckets: never the key itself. */
export function fingerprint(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 12)
}

const sha256 = (text: string) => createHash('sha256').update(text).digest()

/** The key a request presents: `Authorization: Bearer <key>`, `Basic base64(<key>:)` or `X-API-Key`. */
function presentedKey(request: FastifyRequest): string | undefined {
  const header = request.headers['x-api-key']
  if (typeof header === 'string' && header.length > 0) return header
  const authorization = request.headers.authorization ?? ''
  const [scheme, value] = authorization.split(' ', 2)
  if (!value) return undefined
  if (/^bearer$/i.test(scheme ?? '')) return value
  if (/^basic$/i.test(scheme ?? '')) {
    // Segment's form: the key is the user name and the password is empty.
    const decoded = Buffer.from(value, 'base64').toString('utf8')
    const user = decoded.slice(0, decoded.indexOf(':') === -1 ? undefined : decoded.indexOf(':'))
    return user.length > 0 ? user : undefined
  }
  return undefined
}

/** A request without a valid key: 401 with WWW-Authenticate. */
export class UnauthorizedError extends Error {
  readonly statusCode = 401
  readonly code = 'ERR_UNAUTHORIZED'
  constructor(readonly presented: boolean) {
    super(presented ? 'The API key is not valid' : 'An API key is required')
  }
}

/** Too many requests from one key or client: 429 with Retry-After (the plugin sets it). */
export class RateLimitedError extends Error {
  readonly statusCode = 429
  readonly code = 'ERR_RATE_LIMITED'
}

export const WWW_AUTHENTICATE = 'Bearer realm="events", Basic realm="events"'

const keyOf = new WeakMap<FastifyRequest, string>()

/** The fingerprint of the key a request was let in with, for its log line. */
export function keyFingerprintOf(request: FastifyRequest): string | undefined {
  return keyOf.get(request)
}

/**
 * Registers CORS, then the key check and the rate limit on the ingestion routes. Call before
 * the routes are declared: the rate limit attaches to them as they are. Returns the route
 * config that turns the limit on for a route.
 */
export async function secure(app: FastifyInstance, options: SecurityOptions, logger: FastifyBaseLogger) {
  if (options.corsOrigins === '*' || options.corsOrigins.length > 0) {
    await app.register(cors, {
      origin: options.corsOrigins === '*' ? '*' : options.corsOrigins,
      methods: ['POST'],
      allowedHeaders: ['Content-Type', 'Content-Encoding', 'Authorization', 'X-API-Key'],
      exposedHeaders: ['Retry-After', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset'],
      maxAge: 600,
    })
  }

  const hashes = options.apiKeys.map(sha256)
  if (hashes.length === 0) {
    logger.warn('ingestion is open: no API_KEYS or API_KEYS_FILE set, anyone who can reach the API can write events')
  } else {
    logger.info({ keys: options.apiKeys.map(fingerprint) }, 'ingestion requires an API key')
    app.addHook('onRequest', async (request) => {
      if (!INGESTION_ROUTES.has(request.routeOptions.url ?? '')) return
      const key = presentedKey(request)
      if (key === undefined) throw new UnauthorizedError(false)
      // Compared in constant time, against every key: neither the time nor the order tells.
      const presented = sha256(key)
      let match = false
      for (const hash of hashes) match = timingSafeEqual(hash, presented) || match
      if (!match) throw new UnauthorizedError(true)
      keyOf.set(request, fingerprint(key))
    })
  }

  if (options.rateLimitMax <= 0) return {}
  const store = options.rateLimitRedisUrl
    ? redisStore(options.rateLimitRedisUrl, options.rateLimitRedisTimeoutMs ?? 100, logger, options.onStoreError)
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
    errorResponseBuilder: (request, context) =>
      new RateLimitedError(`Rate limit exceeded: at most ${context.max} requests in ${context.after}`),
  })
  return { rateLimit: {} }
}

/** True at most once per `ms`: for log lines about an outage that may last. */
function everyAtMost(ms: number): () => boolean {
  let last = -Infinity
  return () => {
    if (Date.now() - last < ms) return false
    last = Date.now()
    return true
  }
}

/**
 * The plugin's Redis store over a client that fails fast: unreachable (offline queue off) or
 * stalled (a command timeout: a stopped Redis keeps its connection open and answers nothing).
 * Each count that fails is told to `onStoreError` and the request goes through (skipOnError).
 */
function redisStore(url: string, timeoutMs: number, logger: FastifyBaseLogger, onStoreError = (_err: Error) => {}) {
  const redis = new Redis(url, {
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 1000,
    commandTimeout: timeoutMs,
  })
  const warnUnreachable = everyAtMost(30_000)
  redis.on('error', (err: Error) => {
    if (!warnUnreachable()) return
    logger.warn({ error: err.message }, 'the rate-limit store (Redis) is unreachable; letting requests through')
  })
  const warnStalled = everyAtMost(30_000)
  let answeredAt = Date.now()
  const onError = (err: Error) => {
    onStoreError(err)
    if (err.message !== 'Command timed out') return
    if (warnStalled()) {
      logger.warn({ timeoutMs }, 'the rate-limit store (Redis) did not answer in time; letting requests through')
    }
    // A timed-out command stays queued on the connection until Redis answers: under load, a
    // stall of minutes would pile up hundreds of thousands. Drop them with the connection and
    // reconnect; until the new one is ready, each request fails open at once (no offline queue).
    if (Date.now() - answeredAt > 10 * timeoutMs && redis.status === 'ready') {
      answeredAt = Date.now()
      redis.disconnect(true)
    }
  }
  const onAnswer = () => {
    answeredAt = Date.now()
  }
  return { redis, ctor: countingRedisStore(redis, onError, onAnswer) }
}

/** The plugin's Redis store, telling `onError` of every count that failed, `onAnswer` of the rest. */
function countingRedisStore(
  redis: Redis,
  onError: (err: Error) => void,
  onAnswer: () => void,
): FastifyRateLimitStoreCtor {
  const wrap = (inner: FastifyRateLimitStore): FastifyRateLimitStore => ({
    incr(key, callback, timeWindow, max) {
      inner.incr(
        key,
        (err, result) => {
          if (err) onError(err)
          else onAnswer()
          callback(err, result)
        },
        timeWindow,
        max,
      )
    },
    child: (routeOptions) => wrap(inner.child(routeOptions)),
  })
  return class {
    constructor(options: object) {
      const { continueExceeding, exponentialBackoff } = options as {
        continueExceeding: boolean
        exponentialBackoff: boolean
      }
      // A constructor may return another object: the wrapped store stands in for the class.
      return wrap(new RedisStore(continueExceeding, exponentialBackoff, redis) as FastifyRateLimitStore)
    }
  } as unknown as FastifyRateLimitStoreCtor
}
