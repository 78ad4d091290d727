// API keys as every service takes them: from a variable and a file, presented in one of three
// forms, checked in constant time, and named in logs by a fingerprint, never by the key.
import { createHash, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { ConfigError } from './config.js'

/** Items of a comma- or line-separated list, trimmed, empty ones dropped. */
export function listOf(text: string): string[] {
  return text
    .split(/[,\n]/)
    .map((item) => item.trim())
    .filter((item) => item.length > 0)
}

/**
 * The keys of `variable` (comma-separated) and of the file `fileVariable` names (one a line,
 * Docker secrets), as `env`-style settings. A named file that cannot be read or holds no key
 * is a ConfigError.
 */
export function keysFromConfig(config: Record<string, unknown>, variable: string, fileVariable: string): string[] {
  const keys = listOf(String(config[variable] ?? ''))
  const file = String(config[fileVariable] ?? '')
  if (!file) return keys
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError([`${fileVariable}=${JSON.stringify(file)}: ${(err as Error).message}`])
  }
  const fromFile = listOf(text)
  if (fromFile.length === 0) throw new ConfigError([`${fileVariable}=${JSON.stringify(file)}: the file holds no key`])
  return [...keys, ...fromFile]
}

/** A key's short, stable name for logs and rate-limit buckets: never the key itself. */
export function fingerprint(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 12)
}

const sha256 = (text: string) => createHash('sha256').update(text).digest()

/** The key a request presents: `Authorization: Bearer <key>`, `Basic base64(<key>:)` or `X-API-Key`. */
export function presentedKey(headers: { authorization?: string; 'x-api-key'?: string | string[] }): string | undefined {
  const header = headers['x-api-key']
  if (typeof header === 'string' && header.length > 0) return header
  const [scheme, value] = (headers.authorization ?? '').split(' ', 2)
  if (!value) return undefined
  if (/^bearer$/i.test(scheme ?? '')) return value
  if (/^basic$/i.test(scheme ?? '')) {
    // Segment's form: the key is the user name and the password is empty.
    const decoded = Buffer.from(value, 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    const user = colon === -1 ? decoded : decoded.slice(0, colon)
    return user.length > 0 ? user : undefined
  }
  return undefined
}

/** A set of keys that tells whether a presented key is one of them, in constant time. */
export class KeyRing {
  readonly #hashes: Buffer[]
  readonly fingerprints: string[]

  constructor(keys: string[]) {
    this.#hashes = keys.map(sha256)
    this.fingerprints = keys.map(fingerprint)
  }

  get size(): number {
    return this.#hashes.length
  }

  /** Compared against every key, in constant time: neither the time nor the order tells. */
  holds(key: string): boolean {
    const presented = sha256(key)
    let match = false
    for (const hash of this.#hashes) match = timingSafeEqual(hash, presented) || match
    return match
  }
}
