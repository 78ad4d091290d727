// The rate limit's counters in Redis, shared by every producer, through a client that fails
// fast: unreachable (offline queue off) or stalled (a command timeout: a stopped Redis keeps its
// connection open and answers nothing). Each count that fails is told, and the request goes
// through (the plugin's skipOnError). A store of the plugin's documented `store` interface.
import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { FastifyBaseLogger } from 'fastify'
import { Redis } from 'ioredis'

/** Counts a request in its window: the plugin's own script, without the options we do not use. */
const INCREMENT = `
  local current = redis.call('INCR', KEYS[1])
  if current == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    return {current, tonumber(ARGV[1])}
  end
  return {current, redis.call('PTTL', KEYS[1])}
`
/** The plugin's key names, so that producers of other versions count in the same buckets. */
const KEY_PREFIX = 'fastify-rate-limit-'

type CountingRedis = Redis & {
  rateLimitIncrement(key: string, timeWindow: number): Promise<[current: number, ttl: number]>
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

export interface RedisRateLimitStore {
  redis: Redis
  /** For the plugin's `store` option. */
  ctor: FastifyRateLimitStoreCtor
}

/** A store over Redis at `url`; `onError` is told of every count that failed. */
export function redisRateLimitStore(
  url: string,
  timeoutMs: number,
  logger: FastifyBaseLogger,
  onError: (err: Error) => void = () => {},
): RedisRateLimitStore {
  const redis = new Redis(url, {
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 1000,
    commandTimeout: timeoutMs,
  })
  redis.defineCommand('rateLimitIncrement', { numberOfKeys: 1, lua: INCREMENT })
  const warnUnreachable = everyAtMost(30_000)
  redis.on('error', (err: Error) => {
    if (!warnUnreachable()) return
    logger.warn({ error: err.message }, 'the rate-limit store (Redis) is unreachable; letting requests through')
  })
  const warnStalled = everyAtMost(30_000)
  let answeredAt = Date.now()
  const failed = (err: Error) => {
    onError(err)
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
  const storeOf = (prefix: string): FastifyRateLimitStore => ({
    incr(key, callback, timeWindow) {
      ;(redis as CountingRedis).rateLimitIncrement(prefix + key, timeWindow).then(
        ([current, ttl]) => {
          answeredAt = Date.now()
          callback(null, { current, ttl })
        },
        (err: Error) => {
          failed(err)
          callback(err)
        },
      )
    },
    // A route's own buckets; the plugin hands its options over with the route as `routeInfo`.
    child: (options) => {
      const route = (options as { routeInfo?: { method?: unknown; url?: unknown } }).routeInfo ?? options
      return storeOf(`${prefix}${String(route.method)}${String(route.url)}-`)
    },
  })
  // A constructor may return another object: the store stands in for the class.
  const ctor = class {
    constructor() {
      return storeOf(KEY_PREFIX)
    }
  } as unknown as FastifyRateLimitStoreCtor
  return { redis, ctor }
}
