// The query service's HTTP rules through app.inject, with no database listening: keys, every
// parameter rule, and 503 (never a hang) while MySQL cannot be reached.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { buildApp } from '../src/app.js'
import type { Access } from '../src/config.js'
import { createQueryMetrics } from '../src/metrics.js'
import { Reader } from '../src/reader.js'

const logger = pino({ level: 'silent' })
const TIMEOUT_MS = 1000
const closed: { close(): Promise<unknown> }[] = []
afterAll(async () => {
  for (const thing of closed) await thing.close()
})

/** An app whose database is a port nothing listens on. */
async function appWith(access: Partial<Access> = {}) {
  const reader = new Reader({
    host: '127.0.0.1',
    port: 1,
    user: 'nobody',
    password: '',
    database: 'nothing',
    timeoutMs: TIMEOUT_MS,
    logger,
  })
  const app = await buildApp({
    reader,
    logger,
    access: { readKeys: [], adminKeys: [], open: false, ...access },
    metrics: createQueryMetrics(),
  })
  closed.push(app, reader)
  return app
}

const TIMELINE = '/api/v1/users/7/events'

describe('read keys', () => {
  it('answers 401 on every read route when no key is set, and says how to set one', async () => {
    const app = await appWith()
    for (const url of [TIMELINE, '/api/v1/events/0195d3a0-1b2c-7d3e-8f40-123456789abc', '/api/v1/stats/events']) {
      const response = await app.inject({ url })
      expect(response.statusCode).toBe(401)
      expect(response.json().detail).toMatch(/QUERY_API_KEYS/)
    }
    // Health and metrics stay open (the database is down here: 503, not 401).
    expect((await app.inject({ url: '/health' })).statusCode).toBe(503)
    expect((await app.inject({ url: '/metrics' })).statusCode).toBe(200)
  })

  it('lets a read or admin key in, in each of the three forms; a write key or none is 401', async () => {
    const app = await appWith({ readKeys: ['read-key'], adminKeys: ['admin-key'] })
    const none = await app.inject({ url: TIMELINE })
    expect(none.statusCode).toBe(401)
    expect(none.headers['www-authenticate']).toMatch(/Bearer/)
    const write = await app.inject({ url: TIMELINE, headers: { authorization: 'Bearer write-key' } })
    expect(write.statusCode).toBe(401)
    expect(write.json().detail).toMatch(/not a read key/)
    const forms = [
      { authorization: 'Bearer read-key' },
      { authorization: `Basic ${Buffer.from('read-key:').toString('base64')}` },
      { 'x-api-key': 'read-key' },
      { authorization: 'Bearer admin-key' },
    ]
    for (const headers of forms) {
      // Past the key check, the database (down) answers.
      expect((await app.inject({ url: TIMELINE, headers })).statusCode).toBe(503)
    }
  })

  it('opens the read routes on purpose with QUERY_OPEN', async () => {
    const app = await appWith({ open: true })
    expect((await app.inject({ url: TIMELINE })).statusCode).toBe(503)
  })
})

describe('admin keys: erasure', () => {
  const erase = (app: Awaited<ReturnType<typeof appWith>>, headers: Record<string, string> = {}, user = '7') =>
    app.inject({ method: 'DELETE', url: `/api/v1/users/${user}/events`, headers })

  it('takes an admin key only: none or a write key is 401, a read key 403, and QUERY_OPEN opens nothing', async () => {
    const app = await appWith({ readKeys: ['read-key'], adminKeys: ['admin-key'], open: true })
    expect((await erase(app)).statusCode).toBe(401)
    expect((await erase(app, { authorization: 'Bearer write-key' })).statusCode).toBe(401)
    const read = await erase(app, { authorization: 'Bearer read-key' })
    expect(read.statusCode).toBe(403)
    expect(read.json().detail).toMatch(/ADMIN_API_KEYS/)
    const forms: Record<string, string>[] = [
      { authorization: 'Bearer admin-key' },
      { authorization: `Basic ${Buffer.from('admin-key:').toString('base64')}` },
      { 'x-api-key': 'admin-key' },
    ]
    for (const headers of forms) {
      // Past the key check, the database (down) answers.
      expect((await erase(app, headers)).statusCode).toBe(503)
    }
  })

  it('answers 401 saying how to set admin keys when there are none', async () => {
    const app = await appWith({ readKeys: ['read-key'], open: true })
    const response = await erase(app, { authorization: 'Bearer read-key' })
    expect(response.statusCode).toBe(401)
    expect(response.json().detail).toMatch(/ADMIN_API_KEYS/)
  })

  it.each([
    ['abc', 'int_type'],
    ['0', 'greater_than_equal'],
    ['1.5', 'int_type'],
  ])('refuses user %s with a 400 at ["path","user_id"]', async (user, type) => {
    const app = await appWith({ adminKeys: ['admin-key'] })
    const response = await erase(app, { authorization: 'Bearer admin-key' }, user)
    expect(response.statusCode).toBe(400)
    expect(response.json().detail[0]).toMatchObject({ loc: ['path', 'user_id'], type })
  })
})

describe('parameters', () => {
  let app: Awaited<ReturnType<typeof appWith>>
  beforeAll(async () => {
    app = await appWith({ open: true })
  })

  it.each([
    ['/api/v1/users/abc/events', ['path', 'user_id'], 'int_type'],
    ['/api/v1/users/1.5/events', ['path', 'user_id'], 'int_type'],
    ['/api/v1/users/1e3/events', ['path', 'user_id'], 'int_type'],
    [`${TIMELINE}?limit=2.7`, ['query', 'limit'], 'int_type'],
    [`${TIMELINE}?limit=0x10`, ['query', 'limit'], 'int_type'],
    ['/api/v1/users/0/events', ['path', 'user_id'], 'greater_than_equal'],
    ['/api/v1/users/2147483648/events', ['path', 'user_id'], 'less_than_equal'],
    [`${TIMELINE}?limit=0`, ['query', 'limit'], 'greater_than_equal'],
    [`${TIMELINE}?limit=1001`, ['query', 'limit'], 'less_than_equal'],
    [`${TIMELINE}?limit=ten`, ['query', 'limit'], 'int_type'],
    [`${TIMELINE}?from=yesterday`, ['query', 'from'], 'datetime_from_date_parsing'],
    [`${TIMELINE}?to=2026-02-30T00:00:00Z`, ['query', 'to'], 'datetime_from_date_parsing'],
    [`${TIMELINE}?from=2026-02-21T00:00:00Z&to=2026-02-20T00:00:00Z`, ['query', 'from'], 'value_error'],
    [`${TIMELINE}?event_type=${'x'.repeat(51)}`, ['query', 'event_type'], 'string_too_long'],
    [`${TIMELINE}?cursor=not-a-cursor`, ['query', 'cursor'], 'value_error'],
    ['/api/v1/events/not-a-uuid', ['path', 'event_id'], 'uuid_parsing'],
    ['/api/v1/stats/events?interval=week', ['query', 'interval'], 'value_error'],
    ['/api/v1/stats/events?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z', ['query', 'to'], 'value_error'],
    [
      '/api/v1/stats/events?from=2026-03-01T00:00:00Z&to=2026-01-01T00:00:00Z&interval=day',
      ['query', 'from'],
      'value_error',
    ],
  ])('%s is a 400 at %j', async (url, loc, type) => {
    const response = await app.inject({ url })
    expect(response.statusCode).toBe(400)
    const body = response.json()
    expect(body.detail[0]).toMatchObject({ loc, type })
    expect(typeof body.detail[0].msg).toBe('string')
  })

  it('takes a range of up to 1,000 buckets: 42 days by the hour is too many, 42 by the day are not', async () => {
    const hours = await app.inject({ url: '/api/v1/stats/events?from=2026-01-01T00:00:00Z&to=2026-02-12T00:00:00Z' })
    expect(hours.statusCode).toBe(400)
    const days = await app.inject({
      url: '/api/v1/stats/events?from=2026-01-01T00:00:00Z&to=2026-02-12T00:00:00Z&interval=day',
    })
    expect(days.statusCode).toBe(503) // valid; the database is down
  })
})

describe('the database down', () => {
  it('answers 503 with Retry-After within the query bound, and /health says so', async () => {
    const app = await appWith({ open: true })
    const started = Date.now()
    const response = await app.inject({ url: TIMELINE })
    expect(response.statusCode).toBe(503)
    expect(response.headers['retry-after']).toBe('2')
    expect(response.json()).toEqual({ detail: 'The database is unavailable or slow; retry later' })
    expect(Date.now() - started).toBeLessThan(TIMEOUT_MS * 3)
    const health = await app.inject({ url: '/health' })
    expect(health.json()).toEqual({ status: 'unhealthy', checks: { mysql: 'down' } })
    expect((await app.inject({ url: '/metrics' })).body).toMatch(/query_database_unavailable_total [1-9]/)
  })
})

describe('unknown routes', () => {
  it('answers 404 for a path it does not serve, 405 with Allow for another method on one it does', async () => {
    const app = await appWith({ open: true })
    expect((await app.inject({ url: '/api/v1/nothing' })).json()).toEqual({ detail: 'Not Found' })
    const wrong = await app.inject({ method: 'POST', url: '/api/v1/stats/events?interval=day' })
    expect(wrong.statusCode).toBe(405)
    expect(wrong.headers.allow).toMatch(/GET/)
  })
})

describe('the OpenAPI document', () => {
  it('describes the read routes and the erasure with their parameters and keys', async () => {
    const app = await appWith({ open: true })
    const document = (await app.inject({ url: '/openapi.json' })).json()
    expect(Object.keys(document.paths)).toEqual(
      expect.arrayContaining(['/api/v1/users/{user_id}/events', '/api/v1/events/{event_id}', '/api/v1/stats/events']),
    )
    expect(Object.keys(document.paths['/api/v1/users/{user_id}/events'])).toEqual(['get', 'delete'])
    const timeline = document.paths['/api/v1/users/{user_id}/events'].get
    expect(timeline.parameters.map((p: { name: string }) => p.name)).toEqual(
      expect.arrayContaining(['user_id', 'from', 'to', 'event_type', 'limit', 'cursor']),
    )
    expect(Object.keys(document.components.securitySchemes)).toEqual(['bearerAuth', 'basicAuth', 'apiKey'])
  })
})
