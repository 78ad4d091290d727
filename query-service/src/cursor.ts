// The timeline's page cursor: where the last page ended, bound to the query it came from and
// signed, so that a cursor that was edited, cut short or taken to another query is refused.
import { createHmac, timingSafeEqual } from 'node:crypto'

/** The last event of a page: its timestamp (DATETIME(3) text, UTC) and its row id. */
export interface Position {
  timestamp: string
  id: string
}

const DATETIME = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$/
const ROW_ID = /^[1-9]\d{0,19}$/
/** Used when QUERY_CURSOR_SECRET is unset: cursors are then checked, not unforgeable. */
const DEFAULT_SECRET = 'user-activity-tracker timeline cursor'

export class Cursors {
  readonly #secret: string

  constructor(secret = '') {
    this.#secret = secret || DEFAULT_SECRET
  }

  #mac(payload: string, scope: string): Buffer {
    return createHmac('sha256', this.#secret).update(scope).update('\n').update(payload).digest().subarray(0, 16)
  }

  /** An opaque cursor for `position`, valid only with the same `scope` (the query's filters). */
  encode(position: Position, scope: string): string {
    const payload = Buffer.from(JSON.stringify([position.timestamp, position.id])).toString('base64url')
    return `${payload}.${this.#mac(payload, scope).toString('base64url')}`
  }

  /** The position a cursor holds, or undefined if it is malformed, altered or of another scope. */
  decode(cursor: string, scope: string): Position | undefined {
    const [payload, mac, extra] = cursor.split('.')
    if (!payload || !mac || extra !== undefined) return undefined
    const given = Buffer.from(mac, 'base64url')
    const expected = this.#mac(payload, scope)
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined
    let value: unknown
    try {
      value = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
    } catch {
      return undefined // signed by us, so never here unless the secret leaked: still refused
    }
    if (!Array.isArray(value) || value.length !== 2) return undefined
    const [timestamp, id] = value as unknown[]
    if (typeof timestamp !== 'string' || !DATETIME.test(timestamp)) return undefined
    if (typeof id !== 'string' || !ROW_ID.test(id)) return undefined
    return { timestamp, id }
  }
}
