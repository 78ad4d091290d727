// Environment configuration: validated once at boot against a TypeBox schema.
import Type, { type Static, type TObject, type TProperties } from 'typebox'
import { Value } from 'typebox/value'

export class ConfigError extends Error {
  readonly code = 'ERR_CONFIG'
  constructor(readonly problems: string[]) {
    super(`Invalid configuration: ${problems.join('; ')}`)
    this.name = 'ConfigError'
  }
}

/** Settings every service that talks to RabbitMQ reads, with the original's names and defaults. */
export const BrokerConfigSchema = Type.Object({
  /** One host, or several (a cluster's nodes), comma-separated, each optionally with :port. */
  RABBITMQ_HOST: Type.String({ minLength: 1, pattern: '^[^,\\s]+(,[^,\\s]+)*$', default: 'rabbitmq' }),
  RABBITMQ_PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 5672 }),
  RABBITMQ_USER: Type.String({ minLength: 1, default: 'guest' }),
  RABBITMQ_PASS: Type.String({ default: 'guest' }),
  RABBITMQ_QUEUE: Type.String({
    minLength: 1,
    maxLength: 200,
    pattern: '^[A-Za-z0-9_.:-]+$',
    default: 'user_activity_events',
  }),
  RABBITMQ_QUEUE_TYPE: Type.Enum(['quorum', 'classic'], { default: 'quorum' }),
  LOG_LEVEL: Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info' }),
})
export type BrokerConfig = Static<typeof BrokerConfigSchema>

/** Settings every service that talks to MySQL reads, with the original's names and defaults. */
export const DatabaseConfigSchema = Type.Object({
  MYSQL_HOST: Type.String({ minLength: 1, default: 'mysql' }),
  MYSQL_PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 3306 }),
  MYSQL_USER: Type.String({ minLength: 1, default: 'user' }),
  MYSQL_PASSWORD: Type.String({ default: 'user_password' }),
  MYSQL_DATABASE: Type.String({
    minLength: 1,
    maxLength: 64,
    pattern: '^[A-Za-z0-9_$]+$',
    default: 'user_activity_db',
  }),
})

/**
 * Undoes what TypeBox's Convert does to an integer given as text that is not plain digits: it
 * reads '1.5' as 1, '1e3' as 1000 and '0x10' as 16. Such text is put back, so that the check
 * refuses it as not an integer. Returns `converted`.
 */
export function strictIntegers(
  schema: TObject,
  given: Record<string, unknown>,
  converted: Record<string, unknown>,
): Record<string, unknown> {
  for (const [name, property] of Object.entries(schema.properties)) {
    const text = given[name]
    if ((property as { type?: unknown }).type === 'integer' && typeof text === 'string' && !/^-?\d+$/.test(text)) {
      converted[name] = text
    }
  }
  return converted
}

/**
 * Reads the schema's variables from `env`, fills in defaults for the unset ones and parses
 * numbers. A variable set to the empty string is set (an empty password is a password).
 * Throws a ConfigError that names every bad variable.
 */
export function loadConfig<P extends TProperties>(
  schema: TObject<P>,
  env: NodeJS.ProcessEnv = process.env,
): Static<TObject<P>> {
  const raw: Record<string, unknown> = {}
  for (const name of Object.keys(schema.properties)) {
    if (env[name] !== undefined) raw[name] = env[name]
  }
  const value = strictIntegers(
    schema,
    { ...raw },
    Value.Convert(schema, Value.Default(schema, raw)) as Record<string, unknown>,
  )
  if (Value.Check(schema, value)) return value
  const problems = Value.Errors(schema, value).map((error) => {
    const name = error.instancePath.slice(1)
    const allowed = error.keyword === 'enum' ? ` (${error.params.allowedValues.join(', ')})` : ''
    return `${name}=${JSON.stringify(env[name])}: ${error.message}${allowed}`
  })
  throw new ConfigError([...new Set(problems)])
}

/** The nodes of RABBITMQ_HOST (`host` or `host:port`, comma-separated), in order. */
export function brokerAddresses(config: BrokerConfig): { hostname: string; port: number }[] {
  return config.RABBITMQ_HOST.split(',').map((entry) => {
    const match = /^(.*?)(?::(\d+))?$/.exec(entry.trim()) as RegExpExecArray
    return { hostname: match[1] as string, port: match[2] ? Number(match[2]) : config.RABBITMQ_PORT }
  })
}

/** The amqplib connection options for a broker config (its first node). */
export function brokerConnectOptions(config: BrokerConfig) {
  return {
    protocol: 'amqp',
    ...(brokerAddresses(config)[0] as { hostname: string; port: number }),
    username: config.RABBITMQ_USER,
    password: config.RABBITMQ_PASS,
    // A dead broker is noticed within ~2 heartbeats instead of the server's 60 s.
    heartbeat: 10,
  }
}
