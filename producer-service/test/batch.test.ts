// POST /api/v1/events/batch and compressed bodies on both routes, through app.inject.
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { buildApp } from '../src/app.js'
import { FakePublisher, seed } from './fake-publisher.js'

let publisher: FakePublisher
let app: Awaited<ReturnType<typeof buildApp>>

beforeEach(async () => {
  publisher = new FakePublisher()
  app = await buildApp({
    publisher,
    logger: pino({ level: 'silent' }),
    bodyLimit: 1024,
    batchMaxEvents: 5,
    batchBodyLimit: 4096,
  })
})

afterEach(async () => {
  await app.close()
})

function post(url: string, payload: unknown, headers: Record<string, string> = {}) {
  return app.inject({
    method: 'POST',
    url,
    headers: { 'content-type': 'application/json', ...headers },
    payload: Buffer.isBuffer(payload) || typeof payload === 'string' ? payload : JSON.stringify(payload),
  })
}

const batch = (body: unknown, headers?: Record<string, string>) => post('/api/v1/events/batch', body, headers)
const events = (n: number) => Array.from({ length: n }, (_, i) => ({ ...seed, user_id: i + 1 }))

describe('POST /api/v1/events/batch', () => {
  it('answers 202 with every event_id in request order, after publishing them together', async () => {
    const given = '0190d6e2-4f1a-7cc4-9b43-2f1c8e0a5d11'
    const res = await batch({ batch: [events(1)[0], { ...seed, user_id: 2, event_id: given }] })
    expect(res.statusCode).toBe(202)
    const body = res.json()
    expect(body).toEqual({
      status: 'accepted',
      message: 'Events queued for processing',
      count: 2,
      event_ids: [expect.any(String), given],
    })
    expect(publisher.batches).toHaveLength(1)
    expect(publisher.batches[0]?.map((e) => [e.event_id, e.user_id])).toEqual([
      [body.event_ids[0], 1],
      [given, 2],
    ])
    // Normalized exactly as /track does it.
    expect(publisher.batches[0]?.[0]).toMatchObject({ timestamp: '2026-02-20T10:00:00.000Z', metadata: seed.metadata })
  })

  it('takes BATCH_MAX_EVENTS events, and refuses one more with a 400', async () => {
    expect((await batch({ batch: events(5) })).statusCode).toBe(202)
    const res = await batch({ batch: events(6) })
    expect(res.statusCode).toBe(400)
    expect(res.json().detail).toEqual([
      { loc: ['body', 'batch'], msg: 'List should have at most 5 items', type: 'too_long' },
    ])
  })

  it('validates all or nothing: one entry per problem, at its index, and queues nothing', async () => {
    const res = await batch({ batch: [seed, { ...seed, user_id: '7' }, seed, { ...seed, timestamp: 'soon' }] })
    expect(res.statusCode).toBe(400)
    expect(res.json()).toEqual({
      detail: [
        { loc: ['body', 'batch', 1, 'user_id'], msg: 'Input should be a valid integer', type: 'int_type' },
        { loc: ['body', 'batch', 3, 'timestamp'], msg: expect.any(String), type: 'datetime_from_date_parsing' },
      ],
      message: 'Invalid UserActivityEvent payload',
    })
    expect(publisher.batches).toEqual([])
  })

  it.each([
    ['a missing batch', {}, 'missing'],
    ['an empty batch', { batch: [] }, 'too_short'],
    ['a batch that is not a list', { batch: seed }, 'list_type'],
  ])('answers 400 for %s', async (_name, body, type) => {
    const res = await batch(body)
    expect(res.statusCode).toBe(400)
    expect(res.json().detail).toEqual([{ loc: ['body', 'batch'], msg: expect.any(String), type }])
  })

  it('answers 400 for the same event_id twice in one batch', async () => {
    const eventId = '0190d6e2-4f1a-7cc4-9b43-2f1c8e0a5d11'
    const res = await batch({
      batch: [
        { ...seed, event_id: eventId },
        { ...seed, event_id: eventId },
      ],
    })
    expect(res.statusCode).toBe(400)
    expect(res.json().detail).toEqual([
      { loc: ['body', 'batch', 1, 'event_id'], msg: expect.stringContaining('index 0'), type: 'value_error' },
    ])
  })

  it('answers 400 for an event larger than the single-event limit', async () => {
    const res = await batch({ batch: [seed, { ...seed, metadata: { text: 'x'.repeat(1100) } }] })
    expect(res.statusCode).toBe(400)
    expect(res.json().detail).toEqual([
      { loc: ['body', 'batch', 1], msg: expect.stringContaining('at most 1024'), type: 'value_error' },
    ])
  })

  it('answers 413 for a body over BATCH_BODY_LIMIT_BYTES', async () => {
    const res = await batch({ batch: events(5), padding: 'x'.repeat(5000) })
    expect(res.statusCode).toBe(413)
    expect(res.json()).toEqual({ detail: 'Request body is larger than 4096 bytes', message: 'Payload too large' })
  })

  it.each([
    [500, 'CONFIRM_TIMEOUT'],
    [503, 'OVERLOADED'],
  ] as const)(
    'answers %i with every event_id when the publish fails (%s), so a resend stores each once',
    async (status, code) => {
      publisher.failWith = code
      const res = await batch({ batch: events(3) })
      expect(res.statusCode).toBe(status)
      expect(res.json()).toEqual({
        detail: expect.any(String),
        message: 'Failed to queue events',
        event_ids: [expect.any(String), expect.any(String), expect.any(String)],
      })
      if (status === 503) expect(res.headers['retry-after']).toBe('1')
    },
  )

  it('answers 405 with Allow for another method', async () => {
    const res = await app.inject({ method: 'GET', url: '/api/v1/events/batch' })
    expect(res.statusCode).toBe(405)
    expect(res.headers.allow).toBe('POST')
  })

  it('is in the OpenAPI document with its own example and answers', async () => {
    const operation = (await app.inject('/openapi.json')).json().paths['/api/v1/events/batch'].post
    const example = operation.requestBody.content['application/json'].example
    expect(example.batch).toHaveLength(2)
    expect(example.batch.every((e: object) => !('event_id' in e))).toBe(true)
    expect((await batch(example)).statusCode).toBe(202)
    expect(operation.responses['202'].content['application/json'].example).toMatchObject({ count: 2 })
    expect(operation.responses['500'].content['application/json'].example.event_ids).toHaveLength(2)
  })
})

describe('compressed bodies', () => {
  const compressors = { gzip: gzipSync, deflate: deflateSync, br: brotliCompressSync }

  it.each(Object.keys(compressors) as (keyof typeof compressors)[])(
    'accepts Content-Encoding %s on /track and /batch',
    async (encoding) => {
      const compress = compressors[encoding]
      const one = await post('/api/v1/events/track', compress(JSON.stringify(seed)), { 'content-encoding': encoding })
      expect(one.statusCode).toBe(202)
      const many = await batch(compress(JSON.stringify({ batch: events(3) })), { 'content-encoding': encoding })
      expect(many.statusCode).toBe(202)
      expect(publisher.published).toHaveLength(1)
      expect(publisher.batches[0]).toHaveLength(3)
    },
  )

  it('answers 415 in the documented shape for an unknown encoding', async () => {
    const res = await post('/api/v1/events/track', JSON.stringify(seed), { 'content-encoding': 'zip' })
    expect(res.statusCode).toBe(415)
    expect(res.json()).toEqual({
      detail: 'Content-Encoding zip is not supported: use gzip, deflate or br',
      message: 'Unsupported media type',
    })
  })

  it('answers 400 for a corrupt stream', async () => {
    const corrupt = gzipSync(JSON.stringify(seed)).subarray(0, 20)
    for (const url of ['/api/v1/events/track', '/api/v1/events/batch']) {
      const res = await post(url, Buffer.concat([corrupt, Buffer.from('garbage')]), { 'content-encoding': 'gzip' })
      expect(res.statusCode).toBe(400)
      expect(res.json()).toEqual({
        detail: [{ loc: ['body'], msg: 'Could not decompress the body as gzip', type: 'value_error' }],
        message: 'Invalid UserActivityEvent payload',
      })
    }
  })

  it('applies the limits to the inflated body: a zip bomb is a 413, and is not inflated whole', async () => {
    // 64 MiB of zeros inside a JSON string, about 64 KiB compressed.
    const bomb = gzipSync(Buffer.concat([Buffer.from('{"batch":"'), Buffer.alloc(64 * 2 ** 20, 48), Buffer.from('"}')]))
    expect(bomb.length).toBeLessThan(128 * 1024)
    const before = process.memoryUsage().arrayBuffers
    const res = await batch(bomb, { 'content-encoding': 'gzip' })
    expect(res.statusCode).toBe(413)
    expect(res.json()).toEqual({ detail: 'Request body is larger than 4096 bytes', message: 'Payload too large' })
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * 2 ** 20)
    const single = await post('/api/v1/events/track', bomb, { 'content-encoding': 'gzip' })
    expect(single.statusCode).toBe(413)
  })
})
