import Type, { type Static } from 'typebox'
import { BrokerConfigSchema, ConfigError, loadConfig, MAX_MESSAGE_BYTES } from 'event-contract'
import { MESSAGE_OVERHEAD_BYTES } from './publisher.js'

export const ConfigSchema = Type.Object({
  ...BrokerConfigSchema.properties,
  HOST: Type.String({ minLength: 1, default: '0.0.0.0' }),
  PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 8000 }),
  /** Largest accepted request body of /track, decompressed, in bytes; also the most one event of a batch may take. */
  BODY_LIMIT_BYTES: Type.Integer({ minimum: 1024, maximum: 16 * 1024 * 1024, default: 65536 }),
  /** Most events in one /batch request. */
  BATCH_MAX_EVENTS: Type.Integer({ minimum: 1, maximum: 10_000, default: 1000 }),
  /** Largest /batch request body, decompressed, in bytes (one broker message carries it). */
  BATCH_BODY_LIMIT_BYTES: Type.Integer({ minimum: 1024, maximum: 64 * 1024 * 1024, default: 1024 * 1024 }),
  /**
   * A publish not confirmed by the broker within this time answers 500. At most 8 s; at SIGTERM
   * the HTTP close gives requests 5.5 s, so a longer timeout may end in a closed connection
   * instead of a 500 (never after a 202).
   */
  PUBLISH_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 8000, default: 5000 }),
  /** Write keys, comma-separated; when set (or API_KEYS_FILE), /track and /batch need one. */
  API_KEYS: Type.String({ default: '' }),
  /** A file with one write key a line (Docker secrets); adds to API_KEYS. */
  API_KEYS_FILE: Type.String({ default: '' }),
  /** Requests per RATE_LIMIT_WINDOW_MS per key (per client address without keys); 0: no limit. */
  RATE_LIMIT_MAX: Type.Integer({ minimum: 0, maximum: 10_000_000, default: 0 }),
  RATE_LIMIT_WINDOW_MS: Type.Integer({ minimum: 100, maximum: 86_400_000, default: 60_000 }),
  /** redis://host:port: several producers share their rate-limit counters there. */
  RATE_LIMIT_REDIS_URL: Type.String({ default: '', pattern: '^(rediss?://.+)?$' }),
  /** Longest wait for Redis to count a request; past it (Redis stalled) the request goes through. */
  RATE_LIMIT_REDIS_TIMEOUT_MS: Type.Integer({ minimum: 10, maximum: 5000, default: 100 }),
  /** Origins a browser may post from, comma-separated, or *; empty: no CORS headers. */
  CORS_ORIGINS: Type.String({ default: '' }),
  /** Serve Prometheus metrics on GET /metrics (on by default). */
  METRICS_ENABLED: Type.Boolean({ default: true }),
  /** Events awaiting confirms at once (a batch counts its events); past it 503. 0: no count, bytes only. */
  PUBLISH_MAX_IN_FLIGHT: Type.Integer({ minimum: 0, maximum: 100_000, default: 0 }),
  /** Bytes of messages awaiting confirms at once (each also charged 1 KiB); past it 503. */
  PUBLISH_MAX_IN_FLIGHT_BYTES: Type.Integer({ minimum: 65_536, maximum: 1024 * 2 ** 20, default: 20 * 2 ** 20 }),
  /**
   * Request-body bytes being read or processed at once: each /track or /batch request holds its
   * Content-Length (its route's body limit when compressed or chunked) until answered; past it
   * 503 at once, without reading the body.
   */
  BODY_MAX_IN_FLIGHT_BYTES: Type.Integer({ minimum: 65_536, maximum: 1024 * 2 ** 20, default: 16 * 2 ** 20 }),
  /** A request whose body has not fully arrived within this is answered 408 and closed (slow clients). */
  REQUEST_TIMEOUT_MS: Type.Integer({ minimum: 1000, maximum: 600_000, default: 30_000 }),
  /** A request whose headers have not fully arrived within this is closed. */
  HEADERS_TIMEOUT_MS: Type.Integer({ minimum: 1000, maximum: 600_000, default: 10_000 }),
})
export type Config = Static<typeof ConfigSchema>

/**
 * What a queue message adds to an event of a batch at most: an event_id and a received_at, an
 * empty metadata, the timestamp's milliseconds, and the separators (about 110 bytes).
 */
export const EVENT_GROWTH_BYTES = 128

/**
 * The least publish budget that admits the largest request: its events as queue messages (each
 * grown by EVENT_GROWTH_BYTES), split into messages of more than half MAX_MESSAGE_BYTES each but
 * the last, each charged MESSAGE_OVERHEAD_BYTES (publisher.ts). A batch of 10,000 minimal events
 * in 660 KB is charged 1.78 MB: far more than twice its body.
 */
export function leastPublishBytes(
  config: Pick<Config, 'BODY_LIMIT_BYTES' | 'BATCH_BODY_LIMIT_BYTES' | 'BATCH_MAX_EVENTS'>,
) {
  const charged = (bytes: number) => bytes + MESSAGE_OVERHEAD_BYTES * (Math.ceil(bytes / (MAX_MESSAGE_BYTES / 2)) + 1)
  return Math.max(
    charged(config.BATCH_BODY_LIMIT_BYTES + EVENT_GROWTH_BYTES * config.BATCH_MAX_EVENTS),
    charged(config.BODY_LIMIT_BYTES + EVENT_GROWTH_BYTES),
  )
}

/**
 * Reads and checks the configuration. A budget smaller than the largest request it must admit
 * would answer that request 503 forever: the body budget must hold the largest body, the publish
 * budget that request as the messages it becomes (leastPublishBytes).
 */
export function readConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const config = loadConfig(ConfigSchema, env)
  const budgets = [
    [
      'BODY_MAX_IN_FLIGHT_BYTES',
      Math.max(config.BODY_LIMIT_BYTES, config.BATCH_BODY_LIMIT_BYTES),
      'the largest request body',
      'BODY_LIMIT_BYTES and BATCH_BODY_LIMIT_BYTES',
    ],
    [
      'PUBLISH_MAX_IN_FLIGHT_BYTES',
      leastPublishBytes(config),
      'the largest request as queue messages',
      'BODY_LIMIT_BYTES, BATCH_BODY_LIMIT_BYTES and BATCH_MAX_EVENTS',
    ],
  ] as const
  const problems = budgets
    .filter(([name, least]) => config[name] < least)
    .map(
      ([name, least, what, from]) =>
        `${name}=${JSON.stringify(env[name] ?? String(config[name]))}: must be at least ${what} ` +
        `(${least} bytes, from ${from}), or such a request is refused 503 forever`,
    )
  if (problems.length > 0) throw new ConfigError(problems)
  return config
}
