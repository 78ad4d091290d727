import { describe, expect, it } from 'vitest'
import {
  BATCH_MESSAGE_TYPE,
  MAX_METADATA_DEPTH,
  parseBatch,
  parseEvent,
  parseQueueMessage,
  parseTimestamp,
} from 'event-contract'

const valid = { user_id: 123, event_type: 'page_view', timestamp: '2026-02-20T10:00:00Z' }

function errorsOf(body: unknown) {
  const result = parseEvent(body)
  if (result.ok) throw new Error(`expected rejection of ${JSON.stringify(body)}`)
  return result.errors
}

function valueOf(body: unknown) {
  const result = parseEvent(body)
  if (!result.ok) throw new Error(`expected acceptance, got ${JSON.stringify(result.errors)}`)
  return result.value
}

function nested(depth: number): Record<string, unknown> {
  let value: Record<string, unknown> = {}
  for (let i = 1; i < depth; i++) value = { a: value }
  return value
}

describe('parseEvent', () => {
  it('normalizes a valid event into the queue message', () => {
    const receivedAt = new Date('2026-02-20T10:00:01.5Z')
    const result = parseEvent({ ...valid, metadata: { page_url: '/x' } }, receivedAt)
    expect(result).toMatchObject({
      ok: true,
      value: {
        user_id: 123,
        event_type: 'page_view',
        timestamp: '2026-02-20T10:00:00.000Z',
        metadata: { page_url: '/x' },
        received_at: '2026-02-20T10:00:01.500Z',
      },
    })
  })

  it('generates a time-ordered UUIDv7 event_id when absent and keeps a given one', () => {
    const generated = valueOf(valid).event_id
    expect(generated).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    const given = '3f2b1c9e-8a7d-4e6f-9b1a-2c3d4e5f6a7b'
    expect(valueOf({ ...valid, event_id: given }).event_id).toBe(given)
  })

  it.each([1, 2147483647])('accepts user_id %s', (userId) => {
    expect(valueOf({ ...valid, user_id: userId }).user_id).toBe(userId)
  })

  it.each([
    [0, 'greater_than_equal', 'Input should be greater than or equal to 1'],
    [-1, 'greater_than_equal', 'Input should be greater than or equal to 1'],
    [2147483648, 'less_than_equal', 'Input should be less than or equal to 2147483647'],
    ['123', 'int_type', 'Input should be a valid integer'],
    [1.5, 'int_type', 'Input should be a valid integer'],
    [null, 'int_type', 'Input should be a valid integer'],
  ])('rejects user_id %j as %s', (userId, type, msg) => {
    expect(errorsOf({ ...valid, user_id: userId })).toEqual([{ loc: ['body', 'user_id'], msg, type }])
  })

  it('accepts a 50-character event_type, counting characters, not bytes', () => {
    expect(valueOf({ ...valid, event_type: 'x'.repeat(50) }).event_type).toHaveLength(50)
    expect(valueOf({ ...valid, event_type: '😀'.repeat(50) }).event_type).toBe('😀'.repeat(50))
  })

  it.each([
    ['x'.repeat(51), 'string_too_long', 'String should have at most 50 characters'],
    ['', 'string_too_short', 'String should have at least 1 character'],
    ['page\nview', 'string_pattern_mismatch', 'String should not contain control characters'],
    ['\u0000', 'string_pattern_mismatch', 'String should not contain control characters'],
    [42, 'string_type', 'Input should be a valid string'],
    ['bad\ud800', 'string_unicode', 'Input should be a valid string, unable to parse raw data as a unicode string'],
  ])('rejects event_type %j as %s', (eventType, type, msg) => {
    expect(errorsOf({ ...valid, event_type: eventType })).toEqual([{ loc: ['body', 'event_type'], msg, type }])
  })

  it.each([
    ['2026-02-20T10:00:00Z', '2026-02-20T10:00:00.000Z'],
    ['2026-02-20T10:00:00+05:30', '2026-02-20T04:30:00.000Z'],
    ['2026-02-20T10:00:00-08:00', '2026-02-20T18:00:00.000Z'],
    ['2026-02-20T10:00:00', '2026-02-20T10:00:00.000Z'],
    ['2026-02-20T10:00:00.123456Z', '2026-02-20T10:00:00.123Z'],
    ['2026-02-20 10:00:00.5z', '2026-02-20T10:00:00.500Z'],
    ['2024-02-29T00:00:00Z', '2024-02-29T00:00:00.000Z'],
    ['2024-02-29T23:59:59.999Z', '2024-02-29T23:59:59.999Z'],
    ['2026-12-31T00:00:00.000Z', '2026-12-31T00:00:00.000Z'],
    ['1000-01-01T00:00:00Z', '1000-01-01T00:00:00.000Z'],
    ['9999-12-31T23:59:59.999Z', '9999-12-31T23:59:59.999Z'],
  ])('accepts timestamp %s as %s UTC', (timestamp, utc) => {
    expect(valueOf({ ...valid, timestamp }).timestamp).toBe(utc)
  })

  it.each([
    '2026-02-30T10:00:00Z',
    '2025-02-29T10:00:00Z',
    // The canonical form the producer writes is read by a fast path: the same rules hold there.
    '2026-02-30T10:00:00.000Z',
    '2025-02-29T10:00:00.000Z',
    '2026-04-31T10:00:00.000Z',
    '2026-02-20T10:00:00.00xZ',
    '2026-13-01T10:00:00Z',
    '2026-02-20T24:00:00Z',
    '2026-02-20T10:60:00Z',
    '2026-02-20T10:00:60Z',
    '0999-12-31T23:59:59Z',
    '9999-12-31T23:00:00-05:00',
    '2026-02-20',
    '20 Feb 2026',
    'yesterday',
    '',
  ])('rejects timestamp %j', (timestamp) => {
    expect(errorsOf({ ...valid, timestamp })).toEqual([
      {
        loc: ['body', 'timestamp'],
        msg: 'Input should be a valid datetime: ISO 8601 date and time, a real calendar date, year 1000 to 9999',
        type: 'datetime_from_date_parsing',
      },
    ])
  })

  it('stores absent or null metadata as {}', () => {
    expect(valueOf(valid).metadata).toEqual({})
    expect(valueOf({ ...valid, metadata: null }).metadata).toEqual({})
  })

  it.each([[[1, 2]], ['text'], [7], [true]])('rejects metadata %j', (metadata) => {
    expect(errorsOf({ ...valid, metadata })).toEqual([
      { loc: ['body', 'metadata'], msg: 'Input should be a valid dictionary', type: 'dict_type' },
    ])
  })

  it(`accepts metadata nested ${MAX_METADATA_DEPTH} levels and rejects one level more`, () => {
    expect(valueOf({ ...valid, metadata: nested(MAX_METADATA_DEPTH) }).metadata).toEqual(nested(MAX_METADATA_DEPTH))
    expect(errorsOf({ ...valid, metadata: nested(MAX_METADATA_DEPTH + 1) })).toEqual([
      {
        loc: ['body', 'metadata'],
        msg: `Value error, metadata must not be nested more than ${MAX_METADATA_DEPTH} levels deep`,
        type: 'value_error',
      },
    ])
  })

  it('rejects metadata holding a lone surrogate, which MySQL would refuse', () => {
    expect(errorsOf({ ...valid, metadata: { a: ['ok', '\udc00'] } })[0]?.type).toBe('string_unicode')
  })

  it('drops unknown fields', () => {
    const value = valueOf({ ...valid, extra: 'ignored', id: 5 })
    expect(Object.keys(value).sort()).toEqual([
      'event_id',
      'event_type',
      'metadata',
      'received_at',
      'timestamp',
      'user_id',
    ])
  })

  it('rejects a malformed event_id', () => {
    expect(errorsOf({ ...valid, event_id: 'not-a-uuid' })).toEqual([
      { loc: ['body', 'event_id'], msg: 'Input should be a valid UUID', type: 'uuid_parsing' },
    ])
  })

  it.each(['00000000-0000-0000-0000-000000000000', 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF'])(
    'rejects the shared UUID %s as an event_id: every client sending it would collide into one row',
    (eventId) => {
      expect(errorsOf({ ...valid, event_id: eventId })).toEqual([
        { loc: ['body', 'event_id'], msg: expect.stringContaining('nil and max UUIDs'), type: 'value_error' },
      ])
    },
  )

  it('lower-cases an event_id, as it is stored', () => {
    const eventId = '3F2B1C9E-8A7D-4E6F-9B1A-2C3D4E5F6A7B'
    expect(valueOf({ ...valid, event_id: eventId }).event_id).toBe(eventId.toLowerCase())
  })

  it('lists every missing field, FastAPI style', () => {
    expect(errorsOf({})).toEqual([
      { loc: ['body', 'user_id'], msg: 'Field required', type: 'missing' },
      { loc: ['body', 'event_type'], msg: 'Field required', type: 'missing' },
      { loc: ['body', 'timestamp'], msg: 'Field required', type: 'missing' },
    ])
  })

  it.each([[[]], ['text'], [42]])('rejects a body that is not an object: %j', (body) => {
    expect(errorsOf(body)).toEqual([
      {
        loc: ['body'],
        msg: 'Input should be a valid dictionary or object to extract fields from',
        type: 'model_attributes_type',
      },
    ])
  })

  it('reports a missing or null body as a missing field', () => {
    expect(errorsOf(undefined)).toEqual([{ loc: ['body'], msg: 'Field required', type: 'missing' }])
    expect(errorsOf(null)).toEqual([{ loc: ['body'], msg: 'Field required', type: 'missing' }])
  })
})

describe('parseQueueMessage', () => {
  const message = {
    event_id: '3f2b1c9e-8a7d-4e6f-9b1a-2c3d4e5f6a7b',
    user_id: 7,
    event_type: 'login',
    timestamp: '2026-02-20T10:00:00.000Z',
    metadata: { é: 'ü' },
    received_at: '2026-02-20T10:00:00.100Z',
  }

  it('accepts what the producer publishes', () => {
    expect(parseQueueMessage(Buffer.from(JSON.stringify(message)))).toEqual({
      ok: true,
      value: { events: [message], invalid: [] },
    })
  })

  it('puts a timestamp in canonical form, whatever form its received_at is in', () => {
    const offset = { ...message, timestamp: '2026-02-20T10:00:00+05:30', received_at: '2026-02-20T10:00:00.100Z' }
    const result = parseQueueMessage(Buffer.from(JSON.stringify(offset)))
    expect(result.ok && result.value.events[0]).toEqual({ ...message, timestamp: '2026-02-20T04:30:00.000Z' })
    const late = { ...message, received_at: '2026-02-20T10:00:00.1Z' }
    const parsed = parseQueueMessage(Buffer.from(JSON.stringify(late)))
    expect(parsed.ok && parsed.value.events[0]?.received_at).toBe('2026-02-20T10:00:00.100Z')
  })

  it('takes a batch message apart: the valid events, and each invalid one with why', () => {
    const second = { ...message, event_id: '0190d6e2-4f1a-7cc4-9b43-2f1c8e0a5d11' }
    const broken = { ...message, user_id: 'x' }
    const content = Buffer.from(JSON.stringify({ events: [message, broken, second] }))
    const result = parseQueueMessage(content, BATCH_MESSAGE_TYPE)
    expect(result).toEqual({
      ok: true,
      value: {
        events: [message, second],
        invalid: [{ event: broken, errors: [{ loc: ['body', 'user_id'], msg: expect.any(String), type: 'int_type' }] }],
      },
    })
  })

  it('rejects a batch message without events as a whole', () => {
    const result = parseQueueMessage(Buffer.from('{"events":[]}'), BATCH_MESSAGE_TYPE)
    expect(result.ok).toBe(false)
  })

  it('rejects bytes that are not JSON, with the reason', () => {
    const result = parseQueueMessage(Buffer.from('\u00ff not json'))
    expect(result.ok).toBe(false)
    expect(!result.ok && result.errors[0]?.type).toBe('json_invalid')
  })

  it('requires event_id and received_at, which only the producer adds', () => {
    const { event_id: _id, received_at: _at, ...event } = message
    const result = parseQueueMessage(Buffer.from(JSON.stringify(event)))
    expect(!result.ok && result.errors.map((e) => e.loc)).toEqual([
      ['body', 'event_id'],
      ['body', 'received_at'],
    ])
  })
})

describe('parseBatch', () => {
  const limits = { maxEvents: 3, maxEventBytes: 300 }
  const event = { user_id: 1, event_type: 'login', timestamp: '2026-02-20T10:00:00Z' }

  it('normalizes every event, in order', () => {
    const result = parseBatch({ batch: [event, { ...event, user_id: 2 }] }, limits)
    expect(result.ok && result.value.map((e) => e.user_id)).toEqual([1, 2])
  })

  it('reports every problem of every event, at its index, and accepts nothing', () => {
    const result = parseBatch({ batch: [event, { ...event, user_id: 0 }, { event_type: 'x' }] }, limits)
    expect(result).toEqual({
      ok: false,
      errors: [
        {
          loc: ['body', 'batch', 1, 'user_id'],
          msg: 'Input should be greater than or equal to 1',
          type: 'greater_than_equal',
        },
        { loc: ['body', 'batch', 2, 'user_id'], msg: 'Field required', type: 'missing' },
        { loc: ['body', 'batch', 2, 'timestamp'], msg: 'Field required', type: 'missing' },
      ],
    })
  })

  it.each([
    [undefined, ['body'], 'missing'],
    [{}, ['body', 'batch'], 'missing'],
    [{ batch: {} }, ['body', 'batch'], 'list_type'],
    [{ batch: [] }, ['body', 'batch'], 'too_short'],
    [[event], ['body'], 'model_attributes_type'],
  ])('refuses %j as a batch', (body, loc, type) => {
    expect(parseBatch(body, limits)).toEqual({ ok: false, errors: [{ loc, msg: expect.any(String), type }] })
  })

  it('takes up to the limit of events, and refuses one more', () => {
    expect(parseBatch({ batch: [event, event, event] }, limits).ok).toBe(true)
    expect(parseBatch({ batch: [event, event, event, event] }, limits)).toEqual({
      ok: false,
      errors: [{ loc: ['body', 'batch'], msg: 'List should have at most 3 items', type: 'too_long' }],
    })
  })

  it('refuses an event larger than the single-event limit', () => {
    const big = { ...event, metadata: { text: 'x'.repeat(300) } }
    const result = parseBatch({ batch: [event, big] }, limits)
    expect(!result.ok && result.errors).toEqual([
      { loc: ['body', 'batch', 1], msg: expect.stringContaining('at most 300'), type: 'value_error' },
    ])
  })

  it('refuses the same event_id twice, in any case', () => {
    const id = '0190d6e2-4f1a-7cc4-9b43-2f1c8e0a5d11'
    const result = parseBatch(
      {
        batch: [
          { ...event, event_id: id },
          { ...event, event_id: id.toUpperCase() },
        ],
      },
      limits,
    )
    expect(!result.ok && result.errors).toEqual([
      { loc: ['body', 'batch', 1, 'event_id'], msg: expect.stringContaining('index 0'), type: 'value_error' },
    ])
  })
})

describe('parseTimestamp', () => {
  it('keeps millisecond precision and truncates the rest', () => {
    expect(parseTimestamp('2026-02-20T10:00:00.9999Z')?.toISOString()).toBe('2026-02-20T10:00:00.999Z')
  })
})
