// Validation and normalization of events, with errors in FastAPI's `detail` form.
import { Compile } from 'typebox/compile'
import { randomUUID } from 'node:crypto'
import {
  BATCH_MESSAGE_TYPE,
  batchSchema,
  MAX_METADATA_DEPTH,
  QueueMessageSchema,
  UserActivityEventSchema,
  type QueueMessage,
  type ValidationDetail,
} from './schema.js'
import { toDetails } from './details.js'
import { checkTimestamps, dateTimeFields, withoutDateTime } from './timestamp.js'

export interface BatchLimits {
  /** Most events in one batch (BATCH_MAX_EVENTS). */
  maxEvents: number
  /** Most bytes of one event, serialized as JSON (the single-event body limit). */
  maxEventBytes: number
}

/**
 * A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then the random bits of a v4 UUID, whose
 * variant bits already sit where v7 wants them. Node's randomUUID draws from a cached pool,
 * which is what makes this cheap enough for every request.
 */
export function uuidv7(now: number = Date.now()): string {
  const time = now.toString(16).padStart(12, '0')
  return `${time.slice(0, 8)}-${time.slice(8, 12)}-7${randomUUID().slice(15)}`
}

const checkEvent = Compile(withoutDateTime(UserActivityEventSchema))
const checkMessage = Compile(withoutDateTime(QueueMessageSchema))
const EVENT_ORDER = Object.keys(UserActivityEventSchema.properties)
const EVENT_TIMES = dateTimeFields(UserActivityEventSchema)
const MESSAGE_ORDER = Object.keys(QueueMessageSchema.properties)
const MESSAGE_TIMES = dateTimeFields(QueueMessageSchema)

export type ParseResult<T> = { ok: true; value: T } | { ok: false; errors: ValidationDetail[] }

/**
 * Validates a client's event and returns the queue message: unknown fields dropped, the
 * timestamp in UTC, metadata `{}` when absent, an event_id (UUIDv7) when absent.
 */
export function parseEvent(
  body: unknown,
  receivedAt: Date = new Date(),
  memo?: Map<string, string>,
): ParseResult<QueueMessage> {
  // As in FastAPI, a JSON `null` body counts as no body.
  if (body === undefined || body === null) {
    return { ok: false, errors: [{ loc: ['body'], msg: 'Field required', type: 'missing' }] }
  }
  const checked = checkEvent.Check(body)
  // Its timestamp parsed once: checked and put in canonical form here, used as such below.
  const times: Record<string, unknown> = { timestamp: (body as { timestamp?: unknown }).timestamp }
  const errors = checked ? [] : toDetails(checkEvent.Errors(body))
  const details = checkTimestamps(times, EVENT_TIMES, EVENT_ORDER, errors, 'body', memo)
  if (!checked || details.length > 0) return { ok: false, errors: details }
  return normalize({
    event_id: body.event_id ?? uuidv7(receivedAt.getTime()),
    user_id: body.user_id,
    event_type: body.event_type,
    timestamp: times.timestamp as string,
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
  // The list's bounds are the documented schema's (batchSchema), checked here for FastAPI's words.
  const { minItems, maxItems } = batchSchema(limits.maxEvents).properties.batch as unknown as {
    minItems: number
    maxItems: number
  }
  if (batch.length < minItems) {
    return fail(
      ['body', 'batch'],
      `List should have at least ${minItems} item${minItems === 1 ? '' : 's'}`,
      'too_short',
    )
  }
  if (batch.length > maxItems) return fail(['body', 'batch'], `List should have at most ${maxItems} items`, 'too_long')
  const errors: ValidationDetail[] = []
  const events: QueueMessage[] = []
  const seen = new Map<string, number>()
  // Timestamps read in this batch, by their text: a batch's events often share one (a client
  // stamping a flush). Per request, never kept. Measured on 100 events of one timestamp: 366-369
  // us a batch with it, 514-522 us without.
  const memo = new Map<string, string>()
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
    const result = parseEvent(item, receivedAt, memo)
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
  const checked = checkMessage.Check(data)
  // Its timestamps put in canonical form on the copy; the producer's take the fast path.
  const message = { ...(data as Record<string, unknown>) }
  const details = checkTimestamps(
    message,
    MESSAGE_TIMES,
    MESSAGE_ORDER,
    checked ? [] : toDetails(checkMessage.Errors(data)),
  )
  if (!checked || details.length > 0) return { ok: false, errors: details }
  return normalize(message as unknown as QueueMessage)
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
