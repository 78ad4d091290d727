// The query service's settings, from the environment: its port, the consumer's MySQL variables
// (and a replica to read from instead), the statement bound and the read and admin keys.
import Type, { type Static } from 'typebox'
import { ConfigError, DatabaseConfigSchema, keysFromConfig, loadConfig } from 'event-contract'

export const ConfigSchema = Type.Object({
  ...DatabaseConfigSchema.properties,
  HOST: Type.String({ minLength: 1, default: '0.0.0.0' }),
  PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 8002 }),
  /** A replica to read from instead of MYSQL_HOST; the consumer keeps writing to the primary. */
  MYSQL_READ_HOST: Type.String({ default: '' }),
  /** The replica's port; MYSQL_PORT when unset. */
  MYSQL_READ_PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 0 }),
  /** Longest a query may run (the server stops it, max_execution_time / max_statement_time): then 503. */
  QUERY_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 60_000, default: 5000 }),
  /** Read keys, comma-separated: the read routes need one. Write keys (API_KEYS) never read. */
  QUERY_API_KEYS: Type.String({ default: '' }),
  /** A file with one read key a line (Docker secrets); adds to QUERY_API_KEYS. */
  QUERY_API_KEYS_FILE: Type.String({ default: '' }),
  /** true: the read routes are open to anyone who can reach the service (a laptop). */
  QUERY_OPEN: Type.Boolean({ default: false }),
  /** Admin keys: for erasure; they read too. */
  ADMIN_API_KEYS: Type.String({ default: '' }),
  ADMIN_API_KEYS_FILE: Type.String({ default: '' }),
  /** Signs the timeline's cursors; set it (the same on every instance) to make them unforgeable. */
  QUERY_CURSOR_SECRET: Type.String({ default: '' }),
  /** Serve Prometheus metrics on GET /metrics (on by default). */
  METRICS_ENABLED: Type.Boolean({ default: true }),
  LOG_LEVEL: Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info' }),
})
export type Config = Static<typeof ConfigSchema>

/** Who may read: the keys, or open to all (QUERY_OPEN), never open by default. */
export interface Access {
  readKeys: string[]
  adminKeys: string[]
  open: boolean
}

export function readConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const config = loadConfig(ConfigSchema, env)
  if (config.MYSQL_READ_PORT !== 0 && !config.MYSQL_READ_HOST) {
    throw new ConfigError(['MYSQL_READ_PORT is set without MYSQL_READ_HOST'])
  }
  return config
}

export function accessFromConfig(config: Config): Access {
  return {
    readKeys: keysFromConfig(config, 'QUERY_API_KEYS', 'QUERY_API_KEYS_FILE'),
    adminKeys: keysFromConfig(config, 'ADMIN_API_KEYS', 'ADMIN_API_KEYS_FILE'),
    open: config.QUERY_OPEN,
  }
}
