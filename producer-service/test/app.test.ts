import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { buildApp } from '../src/app.js'
import { FakePublisher, seed } from './fake-publisher.js'

let publisher: FakePublisher
let app: Awaited<ReturnType<typeof buildApp>>

beforeEach(async () => {
  publisher = new FakePublisher()
  app = await buildApp({ publisher, logger: pino({ level: 'silent' }) })
})

afterEach(async () => {
  await app.close()
})

function track(payload: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }) {
  return app.inject({
    method: 'POST',
    url: '/api/v1/events/track',
    headers,
    payload: typeof payload === 'string' || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload),
  })
}

describe('POST /api/v1/events/track', () => {
  it('answers 202 with the event_id and publishes the normalized event', async () => {
    const res = await track(seed)
    expect(res.statusCode).toBe(202)
    const body = res.json()
    expect(body).toEqual({ status: 'accepted', message: 'Event queued for processing', event_id: expect.any(String) })
    expect(publisher.published).toEqual([
      {
        event_id: body.event_id,
        user_id: 123,
        event_type: 'page_view',
        timestamp: '2026-02-20T10:00:00.000Z',
        metadata: seed.metadata,
        received_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      },
    ])
  })

  it('keeps a client event_id, normalizes +05:30 to UTC and drops unknown fields', async () => {
    const eventId = '0195d3a0-1b2c-7d3e-8f40-123456789abc'
    const res = await track({ ...seed, event_id: eventId, timestamp: '2026-02-20T10:00:00+05:30', extra: 1 })
    expect(res.statusCode).toBe(202)
    expect(res.json().event_id).toBe(eventId)
    expect(publisher.published[0]?.timestamp).toBe('2026-02-20T04:30:00.000Z')
    expect(publisher.published[0]).not.toHaveProperty('extra')
  })

  it.each([
    ['user_id 1', { user_id: 1 }],
    ['user_id 2147483647', { user_id: 2147483647 }],
    ['a 50-character event_type', { event_type: 'e'.repeat(50) }],
    ['null metadata', { metadata: null }],
    ['no metadata', { metadata: undefined }],
    ['a timestamp without offset', { timestamp: '2026-02-20T10:00:00' }],
  ])('accepts %s', async (_name, change) => {
    const res = await track({ ...seed, ...change })
    expect(res.statusCode).toBe(202)
    expect(publisher.published).toHaveLength(1)
  })

  it.each([
    ['user_id 0', { user_id: 0 }, 'user_id', 'greater_than_equal'],
    ['user_id 2147483648', { user_id: 2147483648 }, 'user_id', 'less_than_equal'],
    ['user_id "123"', { user_id: '123' }, 'user_id', 'int_type'],
    ['user_id 1.5', { user_id: 1.5 }, 'user_id', 'int_type'],
    ['a 51-character event_type', { event_type: 'e'.repeat(51) }, 'event_type', 'string_too_long'],
    ['an empty event_type', { event_type: '' }, 'event_type', 'string_too_short'],
    ['Feb 30', { timestamp: '2026-02-30T10:00:00Z' }, 'timestamp', 'datetime_from_date_parsing'],
    ['hour 24', { timestamp: '2026-02-20T24:00:00Z' }, 'timestamp', 'datetime_from_date_parsing'],
    ['metadata array', { metadata: ['a'] }, 'metadata', 'dict_type'],
    ['metadata string', { metadata: 'a' }, 'metadata', 'dict_type'],
    ['a bad event_id', { event_id: '42' }, 'event_id', 'uuid_parsing'],
  ])('rejects %s with 400 and nothing published', async (_name, change, field, type) => {
    const res = await track({ ...seed, ...change })
    expect(res.statusCode).toBe(400)
    expect(res.json()).toEqual({
      detail: [{ loc: ['body', field], msg: expect.any(String), type }],
      message: 'Invalid UserActivityEvent payload',
    })
    expect(publisher.published).toHaveLength(0)
  })

  it('lists every missing field', async () => {
    const res = await track({ metadata: {} })
    expect(res.statusCode).toBe(400)
    expect(res.json().detail.map((d: { loc: string[] }) => d.loc[1])).toEqual(['user_id', 'event_type', 'timestamp'])
  })

  it('answers 400 json_invalid for malformed JSON', async () => {
    const res = await track('{"user_id": 1,')
    expect(res.statusCode).toBe(400)
    expect(res.json()).toEqual({
      detail: [{ loc: ['body'], msg: 'JSON decode error', type: 'json_invalid' }],
      message: 'Invalid UserActivityEvent payload',
    })
  })

  it('answers 400 for a __proto__ key instead of polluting anything', async () => {
    const res = await track('{"user_id":1,"event_type":"a","timestamp":"2026-02-20T10:00:00Z","__proto__":{"x":1}}')
    expect(res.statusCode).toBe(400)
    expect(res.json().detail[0].type).toBe('value_error')
    expect(({} as Record<string, unknown>).x).toBeUndefined()
  })

  it.each([
    ['an empty JSON body', { 'content-type': 'application/json' }],
    ['no body and no content type', {}],
  ])('answers 400 missing for %s', async (_name, headers) => {
    const res = await app.inject({ method: 'POST', url: '/api/v1/events/track', headers })
    expect(res.statusCode).toBe(400)
    expect(res.json()).toEqual({
      detail: [{ loc: ['body'], msg: 'Field required', type: 'missing' }],
      message: 'Invalid UserActivityEvent payload',
    })
  })

  it('answers 413 for a body over 64 KiB', async () => {
    const res = await track({ ...seed, metadata: { blob: 'x'.repeat(65536) } })
    expect(res.statusCode).toBe(413)
    expect(res.json()).toEqual({ detail: 'Request body is larger than 65536 bytes', message: 'Payload too large' })
  })

  it.each(['text/plain', 'application/x-www-form-urlencoded', 'application/xml'])(
    'answers 415 for %s',
    async (contentType) => {
      const res = await track(JSON.stringify(seed), { 'content-type': contentType })
      expect(res.statusCode).toBe(415)
      expect(res.json()).toEqual({ detail: 'Content-Type must be application/json', message: 'Unsupported media type' })
    },
  )

  it.each(['utf-8', 'UTF-8', 'utf8', '"utf-8"'])('accepts application/json with charset=%s', async (charset) => {
    const res = await track(JSON.stringify(seed), { 'content-type': `application/json; charset=${charset}` })
    expect(res.statusCode).toBe(202)
  })

  it.each(['latin1', 'iso-8859-1', 'utf-16', 'windows-1252'])(
    'answers 415 for a body declared charset=%s, and queues nothing',
    async (charset) => {
      const res = await track(JSON.stringify(seed), { 'content-type': `application/json; charset=${charset}` })
      expect(res.statusCode).toBe(415)
      expect(res.json()).toEqual({ detail: 'The body must be UTF-8 encoded JSON', message: 'Unsupported media type' })
      expect(publisher.published).toEqual([])
    },
  )

  it.each(['BROKER_UNAVAILABLE', 'BROKER_NACK', 'BROKER_UNROUTABLE', 'CONFIRM_TIMEOUT'] as const)(
    'answers 500 when the publish fails with %s, without internals',
    async (code) => {
      publisher.failWith = code
      const res = await track(seed)
      expect(res.statusCode).toBe(500)
      const body = res.json()
      expect(body).toEqual({
        detail: expect.any(String),
        message: 'Failed to queue event',
        event_id: expect.any(String),
      })
      expect(body.detail).not.toMatch(/amqp|127\.0\.0\.1|at \w+ \(|Error:/)
    },
  )

  it.each(['OVERLOADED', 'BROKER_BLOCKED', 'BROKER_BACKPRESSURE'] as const)(
    'answers 503 with Retry-After for %s',
    async (code) => {
      publisher.failWith = code
      const res = await track(seed)
      expect(res.statusCode).toBe(503)
      expect(res.headers['retry-after']).toBe('1')
      expect(res.json()).toEqual({
        detail: expect.any(String),
        message: 'Failed to queue event',
        event_id: expect.any(String),
      })
    },
  )

  it('says what is wrong with a prototype-poisoning key instead of calling the JSON malformed', async () => {
    for (const metadata of ['{"__proto__":{"admin":true}}', '{"constructor":{"prototype":{"admin":true}}}']) {
      const res = await track(
        `{"user_id":1,"event_type":"login","timestamp":"2026-02-20T10:00:00Z","metadata":${metadata}}`,
      )
      expect(res.statusCode).toBe(400)
      expect(res.json()).toEqual({
        detail: [{ loc: ['body'], msg: expect.stringContaining('"__proto__"'), type: 'value_error' }],
        message: 'Invalid UserActivityEvent payload',
      })
    }
    expect(publisher.published).toEqual([])
  })

  it('answers 400 in the documented shape for a body shorter than its Content-Length, not 500', async () => {
    // Fastify's own 400 (FST_ERR_CTP_INVALID_CONTENT_LENGTH) reached the catch-all, which sent
    // `detail` as a string where the route's 400 schema wants a list: it failed to serialize.
    const res = await track(JSON.stringify(seed), { 'content-type': 'application/json', 'content-length': '9999' })
    expect(res.statusCode).toBe(400)
    expect(res.json()).toEqual({
      detail: [{ loc: ['body'], msg: expect.any(String), type: 'value_error' }],
      message: 'Invalid UserActivityEvent payload',
    })
  })

  it('echoes an upper-case event_id as it is stored: lower-case', async () => {
    const res = await track({ ...seed, event_id: '0190D6E2-4F1A-7CC4-9B43-2F1C8E0A5D11' })
    expect(res.json().event_id).toBe('0190d6e2-4f1a-7cc4-9b43-2f1c8e0a5d11')
    expect(publisher.published[0]?.event_id).toBe('0190d6e2-4f1a-7cc4-9b43-2f1c8e0a5d11')
  })

  it('puts the event_id the client sent in a 500, so that a retry with it stores the event once', async () => {
    publisher.failWith = 'CONFIRM_TIMEOUT'
    const eventId = '0190d6e2-4f1a-7cc4-9b43-2f1c8e0a5d11'
    const res = await track({ ...seed, event_id: eventId })
    expect(res.json().event_id).toBe(eventId)
  })

  it('answers 405 with Allow for another method, as FastAPI does', async () => {
    for (const method of ['GET', 'PUT', 'DELETE', 'PATCH'] as const) {
      const res = await app.inject({ method, url: '/api/v1/events/track' })
      expect(res.statusCode).toBe(405)
      expect(res.headers.allow).toBe('POST')
      expect(res.json()).toEqual({ detail: 'Method Not Allowed' })
    }
    const health = await app.inject({ method: 'POST', url: '/health?x=1' })
    expect(health.statusCode).toBe(405)
    expect(health.headers.allow).toBe('GET, HEAD')
  })

  it('answers the documented 503 with Retry-After and the event_id while closing', async () => {
    const closed = app.close()
    const res = await track(seed)
    await closed
    expect(res.statusCode).toBe(503)
    expect(res.headers['retry-after']).toBe('1')
    expect(res.json()).toEqual({
      detail: 'The service is shutting down; retry later',
      message: 'Failed to queue event',
      event_id: expect.any(String),
    })
    expect(publisher.published).toEqual([])
  })
})

describe('GET /health', () => {
  it('is 200 while the broker is up', async () => {
    const res = await app.inject('/health')
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual({ status: 'healthy', checks: { rabbitmq: 'up' } })
  })

  it.each(['down', 'blocked', 'queue missing'] as const)('is 503 while the broker is %s', async (state) => {
    publisher.state = state
    const res = await app.inject('/health')
    expect(res.statusCode).toBe(503)
    expect(res.json()).toEqual({ status: 'unhealthy', checks: { rabbitmq: state } })
  })
})

describe('API documentation', () => {
  it('serves the OpenAPI document generated from the contract', async () => {
    const res = await app.inject('/openapi.json')
    expect(res.statusCode).toBe(200)
    const operation = res.json().paths['/api/v1/events/track'].post
    const schema = operation.requestBody.content['application/json'].schema
    expect(schema.required).toEqual(['user_id', 'event_type', 'timestamp'])
    expect(schema.properties.user_id).toMatchObject({ type: 'integer', minimum: 1, maximum: 2147483647 })
    expect(Object.keys(operation.responses).sort()).toEqual(['202', '400', '404', '405', '413', '415', '500', '503'])
  })

  it('pre-fills "Try it out" with an example without event_id, so that every try stores an event', async () => {
    const operation = (await app.inject('/openapi.json')).json().paths['/api/v1/events/track'].post
    const example = operation.requestBody.content['application/json'].example
    expect(example).toEqual({
      user_id: 123,
      event_type: 'page_view',
      timestamp: '2026-02-20T10:00:00Z',
      metadata: { page_url: '/products/item-xyz', session_id: 'abc123' },
    })
    // The example is a valid event.
    expect((await track(example)).statusCode).toBe(202)
  })

  it('describes every answer with a real example body, and the headers a client needs', async () => {
    const { responses } = (await app.inject('/openapi.json')).json().paths['/api/v1/events/track'].post
    type Documented = { description: string; content: Record<string, { example?: unknown }> }
    for (const [status, response] of Object.entries(responses) as [string, Documented][]) {
      expect(response.description, status).not.toBe('Default Response')
      expect(response.content['application/json']?.example, status).toBeDefined()
    }
    expect(responses['202'].content['application/json'].example).toMatchObject({ status: 'accepted' })
    expect(responses['503'].headers['retry-after'].schema).toEqual({ type: 'integer' })
    expect(responses['405'].headers.allow).toBeDefined()
    expect(responses['500'].content['application/json'].example.event_id).toEqual(expect.any(String))
  })

  it('serves Swagger UI at /docs', async () => {
    const res = await app.inject('/docs/')
    expect(res.statusCode).toBe(200)
    expect(res.body).toContain('swagger')
  })
})

describe('logs', () => {
  /** An app whose log lines land in `lines`. */
  async function logged() {
    const lines: Record<string, unknown>[] = []
    const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) })
    const logApp = await buildApp({ publisher, logger })
    return { logApp, lines }
  }

  it('one line per request, with the event_id of the event it queued', async () => {
    const { logApp, lines } = await logged()
    const eventId = '0190d6e2-4f1a-7cc4-9b43-2f1c8e0a5d11'
    await logApp.inject({ method: 'POST', url: '/api/v1/events/track', payload: { ...seed, event_id: eventId } })
    await logApp.close()
    const requests = lines.filter((line) => line.msg === 'request')
    expect(requests).toEqual([
      expect.objectContaining({ level: 30, method: 'POST', statusCode: 202, eventId, url: '/api/v1/events/track' }),
    ])
  })

  it('a 500 or 503 is one warn line with its reason and event_id, without a stack', async () => {
    const { logApp, lines } = await logged()
    publisher.failWith = 'OVERLOADED'
    const res = await logApp.inject({ method: 'POST', url: '/api/v1/events/track', payload: seed })
    await logApp.close()
    const requests = lines.filter((line) => line.msg === 'request')
    expect(requests).toHaveLength(1)
    expect(requests[0]).toMatchObject({ level: 40, statusCode: 503, error: 'OVERLOADED', eventId: res.json().event_id })
    expect(JSON.stringify(lines)).not.toContain('stack')
  })
})

it('answers 404 in the FastAPI shape for unknown routes', async () => {
  const res = await app.inject('/nope')
  expect(res.statusCode).toBe(404)
  expect(res.json()).toEqual({ detail: 'Not Found' })
})

describe('the budget of request bodies in progress', () => {
  it('refuses a request at once with 503, Retry-After and Connection: close while the budget is held', async () => {
    const budgeted = await buildApp({ publisher, logger: pino({ level: 'silent' }), bodyMaxInFlightBytes: 65_536 })
    try {
      // A client that declares 64 KiB and sends a little of it: it holds the whole budget.
      const { PassThrough } = await import('node:stream')
      const slow = new PassThrough()
      slow.write('{"user_id":')
      const held = budgeted.inject({
        method: 'POST',
        url: '/api/v1/events/track',
        headers: { 'content-type': 'application/json', 'content-length': '65536' },
        payload: slow,
      })
      await new Promise((resolve) => setTimeout(resolve, 50))
      const refused = await budgeted.inject({
        method: 'POST',
        url: '/api/v1/events/batch',
        headers: { 'content-type': 'application/json' },
        payload: JSON.stringify({ batch: [seed] }),
      })
      expect(refused.statusCode).toBe(503)
      expect(refused.headers['retry-after']).toBe('1')
      expect(refused.headers.connection).toBe('close')
      expect(refused.json()).toEqual({
        detail: 'Too many requests are being received at once; retry later',
        message: 'Failed to queue events',
      })
      expect(publisher.batches).toEqual([])

      // Once the held request is answered, its bytes are free again.
      const rest = (pad: string) =>
        `123,"event_type":"login","timestamp":"2026-02-20T10:00:00Z","metadata":{"p":"${pad}"}}`
      slow.end(rest('x'.repeat(65_536 - '{"user_id":'.length - rest('').length)))
      expect((await held).statusCode).toBe(202)
      const after = await budgeted.inject({
        method: 'POST',
        url: '/api/v1/events/track',
        headers: { 'content-type': 'application/json' },
        payload: JSON.stringify(seed),
      })
      expect(after.statusCode).toBe(202)
    } finally {
      await budgeted.close()
    }
  })
})
