// An event as track() takes it, made complete (event_id, timestamp), checked by the contract's
// rules and serialized once; and the bodies made of such events.
import type { ActivityEvent } from './errors.js'
import { checkEvent, MAX_EVENT_BYTES, type ValidationDetail } from './rules.js'

export interface TrackInput {
  user_id: number
  event_type: string
  /** When it happened (default: now); a string in ISO 8601, or a Date. */
  timestamp?: string | Date
  metadata?: Record<string, unknown> | null
  /** The idempotency key (default: a UUIDv7 made here). Tracking an id still waiting again adds nothing. */
  event_id?: string
}

/** An event in the client's hands until it is delivered or reported. */
export interface Pending {
  event: ActivityEvent
  json: string
  /** Its size as JSON: exact near the event limit, else its length (batches a 413 splits may come of it). */
  bytes: number
  /** The flush() generation it was tracked in. */
  epoch: number
  done: boolean
  /** In a keepalive request of a page being hidden, not answered yet. */
  leaving?: boolean
}

const encoder = new TextEncoder()
const NON_ASCII = /[^\p{ASCII}]/u

/** Its UTF-8 bytes. */
export const byteLength = (text: string) => encoder.encode(text).length

let lastMs = NaN
let lastIso = ''

/** A time as the contract's ISO form ('' for an invalid Date or one outside years 1000-9999), made once a millisecond. */
function isoOf(time: Date | number): string {
  const ms = typeof time === 'number' ? time : time.getTime()
  if (ms === lastMs) return lastIso
  const year = new Date(ms).getUTCFullYear()
  if (Number.isNaN(ms) || year < 1000 || year > 9999) return ''
  lastMs = ms
  lastIso = new Date(ms).toISOString()
  return lastIso
}

/** The event as JSON; a problem added to `detail` when it has none (a BigInt, a cycle in metadata). */
function toJson(event: ActivityEvent, detail: ValidationDetail[]): string {
  try {
    return JSON.stringify(event)
  } catch (err) {
    detail.push({
      loc: ['body', 'metadata'],
      msg: `not serializable as JSON: ${(err as Error).message}`,
      type: 'value_error',
    })
    return ''
  }
}

/**
 * The event of `input` with its `id`, as JSON with its size; or what the server would refuse in it.
 * May throw (a metadata getter, a Proxy): the caller reports it.
 */
export function prepare(
  input: TrackInput,
  id: string,
  now: number,
): { event: ActivityEvent; json: string; bytes: number; detail: ValidationDetail[] } {
  const given = input.timestamp
  const made = given === undefined || given instanceof Date ? isoOf(given ?? now) : undefined
  const event: ActivityEvent = {
    event_id: id,
    user_id: input.user_id,
    event_type: input.event_type,
    timestamp: made ?? (given as string),
  }
  if (input.metadata !== undefined) event.metadata = input.metadata
  // What the client made itself (a timestamp from a Date it checked, its own id) is not checked again.
  const detail = checkEvent(event as unknown as Record<string, unknown>, {
    madeTimestamp: made !== '' && made !== undefined,
    madeId: input.event_id === undefined,
  })
  if (made === '') {
    detail.push({
      loc: ['body', 'timestamp'],
      msg: 'an invalid Date, or one outside years 1000 to 9999',
      type: 'datetime_parsing',
    })
  }
  const json = detail.length === 0 ? toJson(event, detail) : ''
  // Bytes as JSON, exactly (the limits and maxQueuedBytes count them): its length when all ASCII.
  const bytes = NON_ASCII.test(json) ? byteLength(json) : json.length
  if (bytes > MAX_EVENT_BYTES) {
    detail.push({
      loc: ['body'],
      msg: `the event is ${bytes} bytes as JSON; at most ${MAX_EVENT_BYTES}`,
      type: 'value_error',
    })
  }
  return { event, json, bytes, detail }
}

/** The body of a request: `{"batch":[...]}` of events serialized once, at track(). */
export function bodyOf(batch: Pending[]): string {
  return `{"batch":[${batch.map((p) => p.json).join(',')}]}`
}
