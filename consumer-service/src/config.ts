import Type, { type Static } from 'typebox'
import { BrokerConfigSchema, DatabaseConfigSchema, loadConfig } from 'event-contract'

export const ConfigSchema = Type.Object({
  ...BrokerConfigSchema.properties,
  ...DatabaseConfigSchema.properties,
  HEALTH_HOST: Type.String({ minLength: 1, default: '0.0.0.0' }),
  HEALTH_PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 8001 }),
  /** Serve Prometheus metrics on GET /metrics of the health server (on by default). */
  METRICS_ENABLED: Type.Boolean({ default: true }),
  /** Messages in hand (unacknowledged) at most; fewer when CONSUMER_MAX_IN_HAND_BYTES says so. */
  CONSUMER_PREFETCH: Type.Integer({ minimum: 1, maximum: 65535, default: 1000 }),
  /** Message bytes in hand at most: the prefetch fits it for messages of CONSUMER_MAX_MESSAGE_BYTES (prefetch.ts). */
  CONSUMER_MAX_IN_HAND_BYTES: Type.Integer({ minimum: 65536, maximum: 1024 ** 3, default: 32 * 1024 * 1024 }),
  /**
   * The largest message expected: the producer splits batches into messages of 64 KiB, and a
   * single event is at most its BODY_LIMIT_BYTES (64 KiB) plus an envelope. Raise it with that.
   */
  CONSUMER_MAX_MESSAGE_BYTES: Type.Integer({ minimum: 1024, maximum: 64 * 1024 * 1024, default: 65 * 1024 }),
  /** Most rows per INSERT; a batch also closes at a quarter of the prefetch in messages (see worker.ts). */
  CONSUMER_BATCH_SIZE: Type.Integer({ minimum: 1, maximum: 5000, default: 500 }),
  /** Longest a message waits for its batch to fill. */
  CONSUMER_BATCH_WAIT_MS: Type.Integer({ minimum: 0, maximum: 10_000, default: 20 }),
  /** Cap of the backoff between retries of a batch while the database is unavailable. */
  CONSUMER_RETRY_MAX_MS: Type.Integer({ minimum: 10, maximum: 300_000, default: 30_000 }),
  /** /health reports `progress: stalled` once an event in hand has waited longer than this. */
  CONSUMER_STALL_TIMEOUT_MS: Type.Integer({ minimum: 1000, maximum: 3_600_000, default: 120_000 }),
  /**
   * Keep the hourly counts (user_activity_counts) in the transaction of each INSERT: the query
   * service's stats read them. Off, they fall behind the rows for good (the benchmark's "without").
   */
  CONSUMER_KEEP_COUNTS: Type.Boolean({ default: true }),
  /**
   * Events whose `timestamp` is more than this many days old are removed continuously (one
   * consumer at a time); unset or empty keeps them forever.
   */
  RETENTION_DAYS: Type.Optional(Type.Integer({ minimum: 1, maximum: 36_500 })),
  /** How often a consumer looks for erased users' rows and expired events to remove. */
  LIFECYCLE_INTERVAL_MS: Type.Integer({ minimum: 100, maximum: 3_600_000, default: 10_000 }),
})
export type Config = Static<typeof ConfigSchema>

export function readConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty is unset (compose passes `${RETENTION_DAYS:-}`): keep forever.
  const { RETENTION_DAYS, ...rest } = env
  return loadConfig(ConfigSchema, RETENTION_DAYS === '' ? rest : env)
}
