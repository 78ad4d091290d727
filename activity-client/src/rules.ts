// The event rules of the tracker's contract, without a dependency, for browsers and Node: an event
// the server would refuse is reported at track() instead of being sent (the server's 400 stays the
// judge; test/rules.test.ts holds both to the same answers).

/** What a FastAPI-style 400 says of one problem: where, what, and its kind. */
export interface ValidationDetail {
  loc: (string | number)[]
  msg: string
  type: string
}

/** The largest user_id: a MySQL INT. */
export const MAX_USER_ID = 2147483647
/** event_type's most characters (code points). */
export const MAX_EVENT_TYPE_LENGTH = 50
/** metadata's deepest nesting, the object itself being level 1. */
export const MAX_METADATA_DEPTH = 16
/** The producer's default BODY_LIMIT_BYTES: one event's most bytes as JSON. */
export const MAX_EVENT_BYTES = 65_536

const TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d{2}):?(\d{2}))?$/
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const SHARED_UUIDS = new Set(['00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff'])
const CONTROL = /\p{Cc}/u

/** An ISO 8601 / RFC 3339 time as an instant (no offset: UTC), or undefined if not a real one in years 1000-9999. */
export function parseTimestamp(text: string): number | undefined {
  const m = TIMESTAMP.exec(text)
  if (!m) return undefined
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as number[] as [
    number,
    number,
    number,
    number,
    number,
    number,
  ]
  const offsetHours = Number(m[9] ?? 0)
  const offsetMinutes = Number(m[10] ?? 0)
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate()
  if (year < 1000 || month < 1 || month > 12 || day < 1 || day > daysInMonth) return undefined
  if (hour > 23 || minute > 59 || second > 59 || offsetHours > 23 || offsetMinutes > 59) return undefined
  const ms = Number((m[7] ?? '0').padEnd(3, '0').slice(0, 3))
  const offset = m[8] ? (m[8] === '-' ? -1 : 1) * (offsetHours * 60 + offsetMinutes) : 0
  const at = Date.UTC(year, month - 1, day, hour, minute, second, ms) - offset * 60_000
  const utcYear = new Date(at).getUTCFullYear()
  return utcYear >= 1000 && utcYear <= 9999 ? at : undefined
}

const problem = (field: string, msg: string, type: string): ValidationDetail => ({ loc: ['body', field], msg, type })

/** Too deep, or a string that is not well-formed Unicode (what MySQL's JSON refuses). */
function metadataProblem(value: unknown, depth: number): 'depth' | 'unicode' | undefined {
  if (typeof value === 'string') return value.isWellFormed() ? undefined : 'unicode'
  if (value === null || typeof value !== 'object') return undefined
  if (depth > MAX_METADATA_DEPTH) return 'depth'
  const isArray = Array.isArray(value)
  for (const [key, child] of Object.entries(value)) {
    if (!isArray && !key.isWellFormed()) return 'unicode'
    const found = metadataProblem(child, depth + 1)
    if (found) return found
  }
  return undefined
}

/**
 * The problems the server would find in an event (fields as sent: `timestamp` a string), in its
 * words; empty when it would accept it. `madeTimestamp`, `madeId`: the caller made them, valid.
 */
export function checkEvent(
  event: Record<string, unknown>,
  options: { madeTimestamp?: boolean; madeId?: boolean } = {},
): ValidationDetail[] {
  const errors: ValidationDetail[] = []
  const { user_id: userId, event_type: eventType, timestamp, metadata, event_id: eventId } = event
  if (userId === undefined) errors.push(problem('user_id', 'Field required', 'missing'))
  else if (typeof userId !== 'number' || !Number.isInteger(userId))
    errors.push(problem('user_id', 'Input should be a valid integer', 'int_type'))
  else if (userId < 1 || userId > MAX_USER_ID)
    errors.push(problem('user_id', `Input should be between 1 and ${MAX_USER_ID}`, 'int_range'))
  if (eventType === undefined) errors.push(problem('event_type', 'Field required', 'missing'))
  else if (typeof eventType !== 'string')
    errors.push(problem('event_type', 'Input should be a valid string', 'string_type'))
  else if (
    eventType.length === 0 ||
    (eventType.length > MAX_EVENT_TYPE_LENGTH && [...eventType].length > MAX_EVENT_TYPE_LENGTH)
  )
    errors.push(problem('event_type', `String should have 1 to ${MAX_EVENT_TYPE_LENGTH} characters`, 'string_length'))
  else if (CONTROL.test(eventType))
    errors.push(problem('event_type', 'String should not contain control characters', 'string_pattern_mismatch'))
  else if (!eventType.isWellFormed())
    errors.push(problem('event_type', 'Input should be a valid unicode string', 'string_unicode'))
  if (timestamp === undefined) errors.push(problem('timestamp', 'Field required', 'missing'))
  else if (options.madeTimestamp) {
    // Written by the client itself from a Date it checked.
  } else if (typeof timestamp !== 'string' || parseTimestamp(timestamp) === undefined)
    errors.push(problem('timestamp', 'Input should be a valid datetime, years 1000 to 9999', 'datetime_parsing'))
  if (metadata !== undefined && metadata !== null) {
    if (typeof metadata !== 'object' || Array.isArray(metadata))
      errors.push(problem('metadata', 'Input should be a valid dictionary', 'dict_type'))
    else if (metadataProblem(metadata, 1) === 'depth')
      errors.push(
        problem('metadata', `metadata must not be nested more than ${MAX_METADATA_DEPTH} levels deep`, 'value_error'),
      )
    else if (metadataProblem(metadata, 1) === 'unicode')
      errors.push(problem('metadata', 'Input should be a valid unicode string', 'string_unicode'))
  }
  if (eventId !== undefined && !options.madeId) {
    if (typeof eventId !== 'string' || !UUID.test(eventId))
      errors.push(problem('event_id', 'Input should be a valid UUID', 'uuid_parsing'))
    else if (SHARED_UUIDS.has(eventId.toLowerCase()))
      errors.push(problem('event_id', 'The nil and max UUIDs are not unique', 'value_error'))
  }
  return errors
}
