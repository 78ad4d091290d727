// Validation and normalization of events, with errors in FastAPI's `detail` form.
import { Compile } from 'typebox/compile'
import Format from 'typebox/format'
import type { TLocalizedValidationError } from 'typebox/error'
import { randomUUID } from 'node:crypto'
import {
  BATCH_MESSAGE_TYPE,
  MAX_METADATA_DEPTH,
  QueueMessageSchema,
  UserActivityEventSchema,
  type QueueMessage,
  type ValidationDetail,
} from './schema.js'

export interface BatchLimits {
  /** Most events in one batch (BATCH_MAX_EVENTS). */
  maxEvents: number
  /** Most bytes of one event, serialized as JSON (the single-event body limit). */
  maxEventBytes: number
}

const TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d{2}):?(\d{2}))?$/

/**
 * Parses an ISO 8601 / RFC 3339 date-time into a Date (millisecond precision, fraction
 * truncated). No offset means UTC. Returns undefined for anything that is not a real instant
 * between the years 1000 and 9999, in the input and in UTC (DATETIME's range).
 */
export function parseTimestamp(text: string): Date | undefined {
  // Fast path for the canonical form this contract emits (every message on the queue).
  const canonical = canonicalTime(text)
  if (canonical !== undefined) return new Date(canonical)
  const m = TIMESTAMP.exec(text)
  if (!m) return undefined
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ]
  const ms = Number((m[7] ?? '0').padEnd(3, '0').slice(0, 3))
  const offsetMinutes = m[8] ? (m[8] === '-' ? -1 : 1) * (Number(m[9]) * 60 + Number(m[10])) : 0
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate()
  if (
    year < 1000 ||
    month < 1 ||
    month > 12 ||
    day < 1 ||
    day > daysInMonth ||
    hour > 23 ||
    minute > 59 ||
    second > 59 ||
    Number(m[9] ?? 0) > 23 ||
    Number(m[10] ?? 0) > 59
  ) {
    return undefined
  }
  const date = new Date(Date.UTC(year, month - 1, day, hour, minute, second, ms) - offsetMinutes * 60_000)
  const utcYear = date.getUTCFullYear()
  return utcYear >= 1000 && utcYear <= 9999 ? date : undefined
}

const digit = (text: string, at: number) => text.charCodeAt(at) - 48
/** The canonical form, character by character; `d` stands for a digit. */
const CANONICAL = 'dddd-dd-ddTdd:dd:dd.dddZ'
const D = 100 // 'd'

/**
 * The instant of a timestamp already in the canonical form `YYYY-MM-DDTHH:MM:SS.mmmZ` (what the
 * producer writes), read by character codes: four times cheaper than a Date round trip, and
 * this runs for every event the consumer takes. Undefined for any other form.
 */
function canonicalTime(text: string): number | undefined {
  if (text.length !== 24) return undefined
  for (let at = 0; at < 24; at++) {
    const code = text.charCodeAt(at)
    const expected = CANONICAL.charCodeAt(at)
    if (expected === D ? code < 48 || code > 57 : code !== expected) return undefined
  }
  const year = digit(text, 0) * 1000 + digit(text, 1) * 100 + digit(text, 2) * 10 + digit(text, 3)
  const month = digit(text, 5) * 10 + digit(text, 6)
  const day = digit(text, 8) * 10 + digit(text, 9)
  const hour = digit(text, 11) * 10 + digit(text, 12)
  const minute = digit(text, 14) * 10 + digit(text, 15)
  const second = digit(text, 17) * 10 + digit(text, 18)
  const ms = digit(text, 20) * 100 + digit(text, 21) * 10 + digit(text, 22)
  if (year < 1000 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return undefined
  // Feb 30 rolls over into March: a real date keeps its day.
  if (day > 28 && day > new Date(Date.UTC(year, month, 0)).getUTCDate()) return undefined
  return Date.UTC(year, month - 1, day, hour, minute, second, ms)
}

/** A valid timestamp in canonical UTC form: the text itself when it is already in it. */
function canonicalTimestamp(text: string): string | undefined {
  if (canonicalTime(text) !== undefined) return text
  return parseTimestamp(text)?.toISOString()
}

// The format check reads an event's two timestamps, then the normalization reads them again:
// remember the last two.
const recent = { texts: ['', ''], canonical: [undefined, undefined] as (string | undefined)[], next: 0 }
function canonicalTimestampOnce(text: string): string | undefined {
  if (recent.texts[0] === text) return recent.canonical[0]
  if (recent.texts[1] === text) return recent.canonical[1]
  const canonical = canonicalTimestamp(text)
  recent.texts[recent.next] = text
  recent.canonical[recent.next] = canonical
  recent.next ^= 1
  return canonical
}

// The contract's meaning of date-time: the schema says `format: date-time` (for OpenAPI), and
// this is what it accepts.
Format.Set('date-time', (value) => canonicalTimestampOnce(value) !== undefined)

/**
 * A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then the random bits of a v4 UUID, whose
 * variant bits already sit where v7 wants them. Node's randomUUID draws from a cached pool,
 * which is what makes this cheap enough for every request.
 */
export function uuidv7(now: number = Date.now()): string {
  const time = now.toString(16).padStart(12, '0')
  return `${time.slice(0, 8)}-${time.slice(8, 12)}-7${randomUUID().slice(15)}`
}

const checkEvent = Compile(UserActivityEventSchema)
const checkMessage = Compile(QueueMessageSchema)

export type ParseResult<T> = { ok: true; value: T } | { ok: false; errors: ValidationDetail[] }

/**
 * Validates a client's event and returns the queue message: unknown fields dropped, the
 * timestamp in UTC, metadata `{}` when absent, an event_id (UUIDv7) when absent.
 */
export function parseEvent(body: unknown, receivedAt: Date = new Date()): ParseResult<QueueMessage> {
  // As in FastAPI, a JSON `null` body counts as no body.
  if (body === undefined || body === null) {
    return { ok: false, errors: [{ loc: ['body'], msg: 'Field required', type: 'missing' }] }
  }
  if (!checkEvent.Check(body)) return { ok: false, errors: toDetails(checkEvent.Errors(body)) }
  return normalize({
    event_id: body.event_id ?? uuidv7(receivedAt.getTime()),
    user_id: body.user_id,
    event_type: body.event_type,
    timestamp: body.timestamp,
    metadata: body.metadata ?? {},
    received_at: receivedAt.toISOString(),
  })
}

/**
 * Validates `{"batch": [event, ...]}`: all or nothing. Every problem of every event is reported,
 * at `["body", "batch", index, field]`; so is an event larger than the single-event limit and an
 * event_id given twice.
 */
export function parseBatch(
  body: unknown,
  limits: BatchLimits,
  receivedAt: Date = new Date(),
): ParseResult<QueueMessage[]> {
  const batch = (body as { batch?: unknown } | null | undefined)?.batch
  if (body === undefined || body === null) return missing(['body'])
  if (typeof body !== 'object' || Array.isArray(body)) {
    return fail(
      ['body'],
      'Input should be a valid dictionary or object to extract fields from',
      'model_attributes_type',
    )
  }
  if (batch === undefined) return missing(['body', 'batch'])
  if (!Array.isArray(batch)) return fail(['body', 'batch'], 'Input should be a valid list', 'list_type')
  if (batch.length === 0) return fail(['body', 'batch'], 'List should have at least 1 item', 'too_short')
  if (batch.length > limits.maxEvents) {
    return fail(['body', 'batch'], `List should have at most ${limits.maxEvents} items`, 'too_long')
  }
  const errors: ValidationDetail[] = []
  const events: QueueMessage[] = []
  const seen = new Map<string, number>()
  batch.forEach((item, index) => {
    const at = (loc: (string | number)[]) => ['body', 'batch', index, ...loc.slice(1)]
    const bytes = Buffer.byteLength(JSON.stringify(item) ?? '')
    if (bytes > limits.maxEventBytes) {
      errors.push({
        loc: at(['body']),
        msg: `Value error, the event is ${bytes} bytes as JSON; at most ${limits.maxEventBytes}`,
        type: 'value_error',
      })
      return
    }
    const result = parseEvent(item, receivedAt)
    if (!result.ok) {
      for (const error of result.errors) errors.push({ ...error, loc: at(error.loc) })
      return
    }
    const first = seen.get(result.value.event_id)
    if (first !== undefined) {
      errors.push({
        loc: at(['body', 'event_id']),
        msg: `Value error, event_id repeats the one at index ${first}: an event_id is one event`,
        type: 'value_error',
      })
    }
    seen.set(result.value.event_id, index)
    events.push(result.value)
  })
  return errors.length > 0 ? { ok: false, errors } : { ok: true, value: events }
}

function missing(loc: (string | number)[]): ParseResult<never> {
  return fail(loc, 'Field required', 'missing')
}

function fail(loc: (string | number)[], msg: string, type: string): ParseResult<never> {
  return { ok: false, errors: [{ loc, msg, type }] }
}

/** What a queue message holds: its valid events, and those that are not (dead-lettered alone). */
export interface ParsedQueueMessage {
  events: QueueMessage[]
  /** Events of a batch message that fail the contract, as found, with why. */
  invalid: { event: unknown; errors: ValidationDetail[] }[]
}

/**
 * Validates a message taken off the queue (raw bytes), as the producer would have made it:
 * one event, or a batch message (`type` user_activity_batch.v1) whose events are checked one
 * by one. Not ok when the message as a whole is unusable.
 */
export function parseQueueMessage(content: Buffer, type?: string): ParseResult<ParsedQueueMessage> {
  let data: unknown
  try {
    data = JSON.parse(content.toString('utf8'))
  } catch (err) {
    return fail(['body'], `JSON decode error: ${(err as Error).message}`, 'json_invalid')
  }
  if (type !== BATCH_MESSAGE_TYPE) {
    const result = parseQueueEvent(data)
    return result.ok ? { ok: true, value: { events: [result.value], invalid: [] } } : result
  }
  const events = (data as { events?: unknown } | null)?.events
  if (!Array.isArray(events) || events.length === 0) {
    return fail(['body', 'events'], 'Input should be a non-empty list of events', 'list_type')
  }
  const parsed: ParsedQueueMessage = { events: [], invalid: [] }
  for (const event of events) {
    const result = parseQueueEvent(event)
    if (result.ok) parsed.events.push(result.value)
    else parsed.invalid.push({ event, errors: result.errors })
  }
  return { ok: true, value: parsed }
}

function parseQueueEvent(data: unknown): ParseResult<QueueMessage> {
  if (!checkMessage.Check(data)) return { ok: false, errors: toDetails(checkMessage.Errors(data)) }
  const result = normalize({ ...data })
  // Checked by the `date-time` format; the canonical form the producer writes takes the fast path.
  if (result.ok) result.value.received_at = canonicalTimestampOnce(data.received_at) as string
  return result
}

/** Checks what JSON Schema cannot say, and puts the timestamp in canonical UTC form. */
function normalize(message: QueueMessage): ParseResult<QueueMessage> {
  const errors: ValidationDetail[] = []
  // Stored lower-case (the column compares case-insensitively): echo and publish what is stored.
  message.event_id = message.event_id.toLowerCase()
  if (SHARED_UUIDS.has(message.event_id)) {
    errors.push({
      loc: ['body', 'event_id'],
      msg: 'Value error, the nil and max UUIDs are not unique: every client sending one would share one row',
      type: 'value_error',
    })
  }
  if (!message.event_type.isWellFormed()) errors.push(unicodeError('event_type'))
  const metadataProblem = inspectMetadata(message.metadata, 1)
  if (metadataProblem === 'depth') {
    errors.push({
      loc: ['body', 'metadata'],
      msg: `Value error, metadata must not be nested more than ${MAX_METADATA_DEPTH} levels deep`,
      type: 'value_error',
    })
  } else if (metadataProblem === 'unicode') {
    errors.push(unicodeError('metadata'))
  }
  if (errors.length > 0) return { ok: false, errors }
  // Checked by the `date-time` format just before.
  message.timestamp = canonicalTimestampOnce(message.timestamp) as string
  return { ok: true, value: message }
}

/** RFC 9562's nil and max UUIDs: valid syntax, but never an event's own key. */
const SHARED_UUIDS = new Set(['00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff'])

function unicodeError(field: string): ValidationDetail {
  return {
    loc: ['body', field],
    msg: 'Input should be a valid string, unable to parse raw data as a unicode string',
    type: 'string_unicode',
  }
}

/** Finds what a MySQL JSON column would refuse: too deep, or lone UTF-16 surrogates. */
function inspectMetadata(value: unknown, depth: number): 'depth' | 'unicode' | undefined {
  if (typeof value === 'string') return value.isWellFormed() ? undefined : 'unicode'
  if (value === null || typeof value !== 'object') return undefined
  if (depth > MAX_METADATA_DEPTH) return 'depth'
  const isArray = Array.isArray(value)
  for (const [key, child] of Object.entries(value)) {
    if (!isArray && !key.isWellFormed()) return 'unicode'
    const problem = inspectMetadata(child, depth + 1)
    if (problem) return problem
  }
  return undefined
}

function toDetails(errors: TLocalizedValidationError[]): ValidationDetail[] {
  const details: ValidationDetail[] = []
  const seen = new Set<string>()
  const add = (detail: ValidationDetail) => {
    const key = detail.loc.join('\u0000')
    if (seen.has(key)) return
    seen.add(key)
    details.push(detail)
  }
  for (const error of errors) {
    const loc = ['body', ...error.instancePath.split('/').slice(1).map(unescapePointer)]
    if (error.keyword === 'required') {
      for (const name of error.params.requiredProperties) {
        add({ loc: [...loc, name], msg: 'Field required', type: 'missing' })
      }
      continue
    }
    const detail = describe(error, loc.length === 1)
    if (detail) add({ loc, ...detail })
  }
  return details
}

function unescapePointer(segment: string): string {
  return segment.replaceAll('~1', '/').replaceAll('~0', '~')
}

function describe(error: TLocalizedValidationError, isRoot: boolean): Omit<ValidationDetail, 'loc'> | undefined {
  switch (error.keyword) {
    case 'type':
      if (isRoot) {
        return {
          msg: 'Input should be a valid dictionary or object to extract fields from',
          type: 'model_attributes_type',
        }
      }
      return typeDetail(error.params.type)
    case 'minimum':
      return { msg: `Input should be greater than or equal to ${error.params.limit}`, type: 'greater_than_equal' }
    case 'maximum':
      return { msg: `Input should be less than or equal to ${error.params.limit}`, type: 'less_than_equal' }
    case 'minLength':
      return {
        msg: `String should have at least ${error.params.limit} character${error.params.limit === 1 ? '' : 's'}`,
        type: 'string_too_short',
      }
    case 'maxLength':
      return { msg: `String should have at most ${error.params.limit} characters`, type: 'string_too_long' }
    case 'pattern':
      return { msg: 'String should not contain control characters', type: 'string_pattern_mismatch' }
    case 'format':
      return error.params.format === 'uuid'
        ? { msg: 'Input should be a valid UUID', type: 'uuid_parsing' }
        : {
            msg: 'Input should be a valid datetime: ISO 8601 date and time, a real calendar date, year 1000 to 9999',
            type: 'datetime_from_date_parsing',
          }
    case 'anyOf':
      return undefined // the branch errors (first: "should be an object") say it better
    default:
      return { msg: error.message, type: 'value_error' }
  }
}

function typeDetail(expected: string | string[]): Omit<ValidationDetail, 'loc'> | undefined {
  switch (expected) {
    case 'integer':
    case 'number':
      return { msg: 'Input should be a valid integer', type: 'int_type' }
    case 'string':
      return { msg: 'Input should be a valid string', type: 'string_type' }
    case 'object':
      return { msg: 'Input should be a valid dictionary', type: 'dict_type' }
    case 'null':
      return undefined // the other branch of `object | null` already reported
    default:
      return { msg: `Input should be of type ${String(expected)}`, type: 'type_error' }
  }
}
