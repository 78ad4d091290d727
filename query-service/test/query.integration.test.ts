// Integration: the read routes on the real MariaDB/MySQL, over rows the consumer's Store wrote:
// keyset pages under concurrent inserts, the time filters at their edges, counts, the server's
// own time limit, and a database that hangs (503 within the bound).
import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { RowDataPacket } from 'mysql2/promise'
import { pino } from 'pino'
import type { QueueMessage } from 'event-contract'
import { TcpProxy } from '../../test-support/index.js'
import { connectDatabase, countsDrift, createTestDatabase, database } from '../../test-support/database.js'
import { Store, toRow } from '../../consumer-service/src/store.js'
import { buildApp } from '../src/app.js'
import { Reader } from '../src/reader.js'

const logger = pino({ level: 'silent' })
let db: Awaited<ReturnType<typeof createTestDatabase>>
let store: Store
let reader: Reader
let app: Awaited<ReturnType<typeof buildApp>>

beforeAll(async () => {
  db = await createTestDatabase()
  store = new Store({ ...database, database: db.name, logger })
  await store.applySchema()
  reader = new Reader({ ...database, database: db.name, timeoutMs: 2000, logger })
  app = await buildApp({ reader, logger, access: { readKeys: [], adminKeys: [], open: true } })
})
afterAll(async () => {
  await app.close()
  await reader.close()
  await store.close()
  await db.drop()
})

function message(overrides: Partial<QueueMessage> = {}): QueueMessage {
  return {
    event_id: randomUUID(),
    user_id: 1,
    event_type: 'login',
    timestamp: '2026-02-20T10:00:00.000Z',
    metadata: {},
    received_at: '2026-02-20T10:00:01.000Z',
    ...overrides,
  }
}

async function store_(messages: QueueMessage[]) {
  const outcome = await store.insert(messages, toRow)
  expect(outcome.rejected).toEqual([])
}

type Page = { events: { event_id: string; timestamp: string }[]; next_cursor: string | null }
async function get(url: string) {
  const response = await app.inject({ url })
  return { status: response.statusCode, body: response.json() as Page & Record<string, unknown> }
}

/** Every page of a timeline query, following the cursors; `between` runs before each next page. */
async function allPages(url: string, between: () => Promise<void> = async () => {}) {
  const seen: string[] = []
  let cursor: string | null = null
  let pages = 0
  do {
    const { status, body } = await get(`${url}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
    expect(status).toBe(200)
    seen.push(...body.events.map((e) => e.event_id))
    cursor = body.next_cursor
    pages++
    await between()
  } while (cursor && pages < 1000)
  return { seen, pages }
}

describe('GET /api/v1/users/{user_id}/events', () => {
  it('shows an event as sent: canonical times, metadata as the JSON object, received_at', async () => {
    const sent = message({ user_id: 2, metadata: { page: '/ü', nested: { list: [1, 'two', null] } } })
    await store_([sent])
    const { status, body } = await get('/api/v1/users/2/events')
    expect(status).toBe(200)
    expect(body.next_cursor).toBeNull()
    expect(body.events).toEqual([
      {
        event_id: sent.event_id,
        user_id: 2,
        event_type: 'login',
        timestamp: '2026-02-20T10:00:00.000Z',
        metadata: { page: '/ü', nested: { list: [1, 'two', null] } },
        received_at: '2026-02-20T10:00:01.000Z',
        stored_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/),
      },
    ])
  })

  it('pages newest first, each event once, ties in timestamp included, while new events arrive', async () => {
    const base = Date.UTC(2026, 2, 1)
    // 300 events in 60 distinct instants: five share each timestamp.
    const first = Array.from({ length: 300 }, (_, i) =>
      message({ user_id: 3, timestamp: new Date(base + Math.floor(i / 5) * 1000).toISOString() }),
    )
    await store_(first)
    let n = 0
    const { seen, pages } = await allPages('/api/v1/users/3/events?limit=7', async () => {
      // Newer, older and same-instant events keep arriving between pages.
      const at = (ms: number) => new Date(ms).toISOString()
      await store_([
        message({ user_id: 3, timestamp: at(base + 3_600_000 + n) }),
        message({ user_id: 3, timestamp: at(base - 3_600_000 - n) }),
        message({ user_id: 3, timestamp: at(base + 30_000) }),
      ])
      n++
    })
    expect(pages).toBeGreaterThanOrEqual(43)
    expect(new Set(seen).size).toBe(seen.length) // nothing twice
    const ids = new Set(seen)
    expect(first.filter((e) => !ids.has(e.event_id))).toEqual([]) // nothing missed
    // Newest first.
    const { body } = await get('/api/v1/users/3/events?limit=1000')
    const times = body.events.map((e) => e.timestamp)
    expect(times).toEqual([...times].sort().reverse())
  })

  it('takes from inclusive and to exclusive, to the millisecond, in any offset, and an event type', async () => {
    await store_([
      message({ user_id: 4, timestamp: '2026-04-01T09:59:59.999Z' }),
      message({ user_id: 4, timestamp: '2026-04-01T10:00:00.000Z' }),
      message({ user_id: 4, timestamp: '2026-04-01T10:59:59.999Z', event_type: 'logout' }),
      message({ user_id: 4, timestamp: '2026-04-01T11:00:00.000Z' }),
    ])
    const range = '/api/v1/users/4/events?from=2026-04-01T10:00:00Z&to=2026-04-01T11:00:00Z'
    expect((await get(range)).body.events.map((e) => e.timestamp)).toEqual([
      '2026-04-01T10:59:59.999Z',
      '2026-04-01T10:00:00.000Z',
    ])
    const offset = '/api/v1/users/4/events?from=2026-04-01T12:00:00%2B02:00&to=2026-04-01T12:59:59.999%2B02:00'
    expect((await get(offset)).body.events.map((e) => e.timestamp)).toEqual(['2026-04-01T10:00:00.000Z'])
    const logouts = (await get('/api/v1/users/4/events?event_type=logout')).body.events
    expect(logouts.map((e) => e.timestamp)).toEqual(['2026-04-01T10:59:59.999Z'])
  })

  it('refuses a cursor taken to another user or other filters', async () => {
    await store_(Array.from({ length: 3 }, () => message({ user_id: 5 })))
    const { body } = await get('/api/v1/users/5/events?limit=1')
    expect(body.next_cursor).toEqual(expect.any(String))
    const cursor = encodeURIComponent(body.next_cursor as string)
    expect((await get(`/api/v1/users/6/events?cursor=${cursor}`)).status).toBe(400)
    expect((await get(`/api/v1/users/5/events?event_type=login&cursor=${cursor}`)).status).toBe(400)
    expect((await get(`/api/v1/users/5/events?limit=5&cursor=${cursor}`)).status).toBe(200) // limit may change
  })

  it('ends a page at about 4 MB of events, whatever the limit, and the cursor goes on from there', async () => {
    const big = Array.from({ length: 150 }, (_, i) =>
      message({
        user_id: 7,
        timestamp: new Date(Date.UTC(2026, 4, 1) + i).toISOString(),
        metadata: { pad: 'x'.repeat(60_000) },
      }),
    )
    for (let i = 0; i < big.length; i += 50) await store_(big.slice(i, i + 50))
    const { body } = await get('/api/v1/users/7/events?limit=1000')
    expect(body.events.length).toBeLessThan(150)
    expect(body.next_cursor).toEqual(expect.any(String))
    const { seen } = await allPages('/api/v1/users/7/events?limit=1000')
    expect(seen).toHaveLength(150)
  })

  it('walks the (user_id, timestamp) index in order: no filesort, no OFFSET', async () => {
    const connection = await connectDatabase(db.name)
    try {
      const [plan] = await connection.query<RowDataPacket[]>(
        'EXPLAIN SELECT id FROM user_activities WHERE user_id = 3 AND (`timestamp` < ? OR (`timestamp` = ? AND id < ?)) ' +
          'ORDER BY `timestamp` DESC, id DESC LIMIT 8',
        ['2026-03-01 00:00:30.000', '2026-03-01 00:00:30.000', 100],
      )
      expect(plan[0]?.key).toBe('idx_user_activities_user_id_timestamp')
      expect(String(plan[0]?.Extra)).not.toMatch(/filesort/i)
    } finally {
      await connection.end()
    }
  })
})

describe('GET /api/v1/events/{event_id}', () => {
  it('answers the stored event, by its id in any case, and 404 for one not stored', async () => {
    const sent = message({ user_id: 8 })
    await store_([sent])
    const found = await app.inject({ url: `/api/v1/events/${sent.event_id.toUpperCase()}` })
    expect(found.statusCode).toBe(200)
    expect(found.json()).toMatchObject({ event_id: sent.event_id, user_id: 8 })
    const missing = await app.inject({ url: `/api/v1/events/${randomUUID()}` })
    expect(missing.statusCode).toBe(404)
    expect(missing.json()).toEqual({ detail: 'Event not found' })
  })
})

describe('DELETE /api/v1/users/{user_id}/events', () => {
  it("hides the user's events at once, keeps those received after, and leaves others alone", async () => {
    const admin = await buildApp({ reader, logger, access: { readKeys: [], adminKeys: ['admin-key'], open: false } })
    const headers = { authorization: 'Bearer admin-key' }
    try {
      const before = [message({ user_id: 70 }), message({ user_id: 70 })]
      const other = message({ user_id: 71 })
      await store_([...before, other])
      const started = Date.now()
      const erased = await admin.inject({ method: 'DELETE', url: '/api/v1/users/70/events', headers })
      expect(erased.statusCode).toBe(202)
      const body = erased.json()
      expect(body).toMatchObject({ status: 'accepted', user_id: 70 })
      expect(body.erased_before).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
      expect(Math.abs(Date.parse(body.erased_before) - started)).toBeLessThan(60_000)

      // The rows are still there (the consumer removes them), but no read shows them.
      const timeline = await admin.inject({ url: '/api/v1/users/70/events', headers })
      expect(timeline.json().events).toEqual([])
      const one = await admin.inject({ url: `/api/v1/events/${before[0]?.event_id}`, headers })
      expect(one.statusCode).toBe(404)
      expect((await admin.inject({ url: '/api/v1/users/71/events', headers })).json().events).toHaveLength(1)

      // An event the user sends after the erasure is stored and shown.
      const later = message({ user_id: 70, received_at: new Date(Date.parse(body.erased_before) + 1).toISOString() })
      await store_([later])
      const again = (await admin.inject({ url: '/api/v1/users/70/events', headers })).json()
      expect(again.events.map((e: { event_id: string }) => e.event_id)).toEqual([later.event_id])

      // A second erasure moves the time on.
      const second = await admin.inject({ method: 'DELETE', url: '/api/v1/users/70/events', headers })
      expect(Date.parse(second.json().erased_before)).toBeGreaterThanOrEqual(Date.parse(body.erased_before))
      expect((await admin.inject({ url: '/api/v1/users/70/events', headers })).json().events).toEqual([])
    } finally {
      await admin.close()
    }
  })
})

describe('GET /api/v1/stats/events', () => {
  it('counts by UTC hour and day from the counts, equal to COUNT(*) over the rows', async () => {
    const at = (iso: string, event_type = 'purchase') => message({ user_id: 9, event_type, timestamp: iso })
    const sent = [
      at('2027-01-01T00:00:00.000Z'),
      at('2027-01-01T00:59:59.999Z'),
      at('2027-01-01T01:30:00.000Z'),
      at('2027-01-01T23:59:59.999Z', 'refund'),
      at('2027-01-02T00:00:00.000Z'),
    ]
    await store_(sent)
    await store_([sent[0] as QueueMessage]) // a redelivery counts nothing
    const hours = await app.inject({ url: '/api/v1/stats/events?from=2027-01-01T00:00:00Z&to=2027-01-02T01:00:00Z' })
    expect(hours.json()).toEqual({
      interval: 'hour',
      buckets: [
        { start: '2027-01-01T00:00:00.000Z', event_type: 'purchase', count: 2 },
        { start: '2027-01-01T01:00:00.000Z', event_type: 'purchase', count: 1 },
        { start: '2027-01-01T23:00:00.000Z', event_type: 'refund', count: 1 },
        { start: '2027-01-02T00:00:00.000Z', event_type: 'purchase', count: 1 },
      ],
    })
    const days = await app.inject({
      url: '/api/v1/stats/events?from=2027-01-01T12:00:00Z&to=2027-01-02T00:00:01Z&interval=day&event_type=purchase',
    })
    expect(days.json()).toEqual({
      interval: 'day',
      buckets: [
        { start: '2027-01-01T00:00:00.000Z', event_type: 'purchase', count: 3 },
        { start: '2027-01-02T00:00:00.000Z', event_type: 'purchase', count: 1 },
      ],
    })
    expect(await countsDrift(db.name)).toEqual([])
  })
})

describe('edges', () => {
  it('counts the last hour of the year 9999, the latest a timestamp may be', async () => {
    await store_([message({ user_id: 10, event_type: 'last', timestamp: '9999-12-31T23:30:00.000Z' })])
    const response = await app.inject({
      url: '/api/v1/stats/events?from=9999-12-31T00:00:00Z&to=9999-12-31T23:59:59.999Z&event_type=last',
    })
    expect(response.json().buckets).toEqual([{ start: '9999-12-31T23:00:00.000Z', event_type: 'last', count: 1 }])
  })

  it('writes event types that JSON must escape, and the year 1000, as JSON.stringify would', async () => {
    const odd = 'say "hi" \\ é 😀'
    await store_([
      message({ user_id: 11, event_type: odd, timestamp: '1000-01-01T00:00:00.000Z' }),
      message({ user_id: 11, event_type: odd, timestamp: '1000-01-01T05:00:00.000Z' }),
      message({ user_id: 11, event_type: 'plain', timestamp: '1000-01-01T05:10:00.000Z' }),
    ])
    for (const [interval, buckets] of [
      [
        'hour',
        [
          { start: '1000-01-01T00:00:00.000Z', event_type: odd, count: 1 },
          { start: '1000-01-01T05:00:00.000Z', event_type: 'plain', count: 1 },
          { start: '1000-01-01T05:00:00.000Z', event_type: odd, count: 1 },
        ],
      ],
      [
        'day',
        [
          { start: '1000-01-01T00:00:00.000Z', event_type: 'plain', count: 1 },
          { start: '1000-01-01T00:00:00.000Z', event_type: odd, count: 2 },
        ],
      ],
    ] as const) {
      const response = await app.inject({
        url: `/api/v1/stats/events?from=1000-01-01T00:00:00Z&to=1000-01-02T00:00:00Z&interval=${interval}`,
      })
      expect(response.headers['content-type']).toBe('application/json; charset=utf-8')
      expect(response.body).toBe(JSON.stringify({ interval, buckets }))
    }
  })

  it('answers 503, not 500, over a table of an earlier version (no received_at yet)', async () => {
    const old = await createTestDatabase()
    const connection = await connectDatabase(old.name)
    const oldReader = new Reader({ ...database, database: old.name, timeoutMs: 2000, logger })
    const oldApp = await buildApp({ reader: oldReader, logger, access: { readKeys: [], adminKeys: [], open: true } })
    try {
      await connection.query(
        'CREATE TABLE user_activities (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, ' +
          'event_id CHAR(36) NOT NULL, user_id INT NOT NULL, event_type VARCHAR(50) NOT NULL, ' +
          '`timestamp` DATETIME(3) NOT NULL, metadata JSON, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)',
      )
      const response = await oldApp.inject({ url: '/api/v1/users/1/events' })
      expect(response.statusCode).toBe(503)
      expect(response.headers['retry-after']).toBe('2')
    } finally {
      await oldApp.close()
      await oldReader.close()
      await connection.end()
      await old.drop()
    }
  })
})

describe('the database slow or hung', () => {
  it('is stopped by the server at the query bound: 503, not a hung request', async () => {
    const quick = new Reader({ ...database, database: db.name, timeoutMs: 300, logger })
    try {
      const started = Date.now()
      await expect(
        quick.query(
          'SELECT COUNT(*) AS n FROM information_schema.COLLATIONS a, information_schema.COLLATIONS b, ' +
            'information_schema.COLLATIONS c, information_schema.COLLATIONS d',
        ),
      ).rejects.toThrow(/took longer than 300 ms/)
      expect(Date.now() - started).toBeLessThan(1300)
    } finally {
      await quick.close()
    }
  })

  it('answers 503 with Retry-After within the bound while the link hangs, and /health says so', async () => {
    const proxy = await new TcpProxy({ host: database.host, port: database.port }).start()
    const hung = new Reader({
      ...database,
      host: proxy.host,
      port: proxy.port,
      database: db.name,
      timeoutMs: 500,
      logger,
    })
    const hungApp = await buildApp({ reader: hung, logger, access: { readKeys: [], adminKeys: [], open: true } })
    try {
      expect((await hungApp.inject({ url: '/api/v1/users/1/events' })).statusCode).toBe(200)
      proxy.freeze()
      const started = Date.now()
      const response = await hungApp.inject({ url: '/api/v1/users/1/events' })
      expect(response.statusCode).toBe(503)
      expect(response.headers['retry-after']).toBe('2')
      expect(Date.now() - started).toBeLessThan(2500)
      const health = await hungApp.inject({ url: '/health' })
      expect(health.statusCode).toBe(503)
      await proxy.restore()
      expect((await hungApp.inject({ url: '/api/v1/users/1/events' })).statusCode).toBe(200)
    } finally {
      await hungApp.close()
      await hung.close()
      await proxy.stop()
    }
  })
})
