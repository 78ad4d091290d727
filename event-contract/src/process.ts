// What every service process does first: read its configuration (or exit 1 naming the bad
// variables) and make its logger.
import { pino, type Logger } from 'pino'
import { ConfigError } from './config.js'

export function configOrExit<T>(read: () => T): T {
  try {
    return read()
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    console.error(err.message)
    process.exit(1)
  }
}

/** JSON lines; pretty-printed on a terminal outside production. */
export function createLogger(name: string, level: string): Logger {
  const pretty = process.stdout.isTTY && process.env.NODE_ENV !== 'production'
  return pino({ name, level, ...(pretty ? { transport: { target: 'pino-pretty' } } : {}) })
}
