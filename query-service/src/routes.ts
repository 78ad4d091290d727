// The read routes: one user's timeline, one event, and counts over time.
import type { FastifyInstance } from 'fastify'
import { parseParameters, type ValidationDetail } from 'event-contract'
import type { Cursors, Position } from './cursor.js'
import { parameterError, ParameterError } from './errors.js'
import {
  datetimeOf,
  eventQuery,
  timelineQuery,
  toEvent,
  type StoredEvent,
  type StoredRow,
  type TimelineFilter,
} from './queries.js'
import type { Reader } from './reader.js'
import { INTERVAL_MS, statsBody, statsQuery, type CountRow, type Interval } from './stats.js'
import {
  EventParams,
  EventSchema,
  MAX_BUCKETS,
  NotFoundSchema,
  StatsQuery,
  StatsSchema,
  TimelineQuery,
  TimelineSchema,
  UnauthorizedSchema,
  UnavailableSchema,
  UserParams,
  ValidationErrorSchema,
} from './schemas.js'

/** A page ends once its events' metadata reach this many bytes (checked every CHUNK_ROWS), whatever its limit. */
const PAGE_BYTES = 4 * 2 ** 20
/** Rows read at a time while filling a page. */
const CHUNK_ROWS = 100

export interface RouteOptions {
  reader: Reader
  cursors: Cursors
  /** The route config that makes a route need a read key. */
  guarded: Record<string, unknown>
}

function parse<T>(schema: Parameters<typeof parseParameters>[0], data: unknown, root: 'query' | 'path'): T {
  const result = parseParameters<T>(schema, data, root)
  if (!result.ok) throw new ParameterError(result.errors as ValidationDetail[])
  return result.value
}

const errors = { 400: ValidationErrorSchema, 401: UnauthorizedSchema, 503: UnavailableSchema }
const security: Record<string, string[]>[] = [{ bearerAuth: [] }, { basicAuth: [] }, { apiKey: [] }]

export async function readRoutes(app: FastifyInstance, { reader, cursors, guarded }: RouteOptions): Promise<void> {
  app.get(
    '/api/v1/users/:user_id/events',
    {
      config: guarded,
      schema: {
        summary: "A user's events, newest first",
        description: 'By `timestamp`, then by the order stored. Follow `next_cursor` for older events.',
        params: UserParams,
        querystring: TimelineQuery,
        security,
        response: { 200: TimelineSchema, ...errors },
      },
    },
    async (request) => {
      const { user_id } = parse<{ user_id: number }>(UserParams, request.params, 'path')
      const query = parse<{ from?: string; to?: string; event_type?: string; limit: number; cursor?: string }>(
        TimelineQuery,
        request.query,
        'query',
      )
      if (query.from !== undefined && query.to !== undefined && query.from > query.to) {
        throw parameterError(['query', 'from'], 'Value error, from must not be after to')
      }
      const filter: TimelineFilter = {
        userId: user_id,
        ...(query.from !== undefined ? { from: datetimeOf(query.from) } : {}),
        ...(query.to !== undefined ? { to: datetimeOf(query.to) } : {}),
        ...(query.event_type !== undefined ? { eventType: query.event_type } : {}),
      }
      // A cursor is good only for the query that made it.
      const scope = JSON.stringify([user_id, filter.from ?? null, filter.to ?? null, filter.eventType ?? null])
      let after: Position | undefined
      if (query.cursor !== undefined) {
        after = cursors.decode(query.cursor, scope)
        if (!after) {
          throw parameterError(
            ['query', 'cursor'],
            'Value error, not a cursor of this query: pass next_cursor unchanged, with the same filters',
          )
        }
      }
      const events: StoredEvent[] = []
      let bytes = 0
      let more = false
      // The page ends early, with its cursor, once filling it has taken one query bound.
      const deadline = Date.now() + reader.timeoutMs
      for (;;) {
        const want = Math.min(CHUNK_ROWS, query.limit - events.length)
        const { sql, values } = timelineQuery(filter, after, want + 1)
        const rows = await reader.query<StoredRow>(sql, values)
        for (const row of rows.slice(0, want)) {
          events.push(toEvent(row))
          bytes += Number(row.metadata_bytes ?? 0)
          after = { timestamp: row.timestamp, id: row.id }
        }
        if (rows.length <= want) break
        if (events.length >= query.limit || bytes >= PAGE_BYTES || Date.now() > deadline) {
          more = true
          break
        }
      }
      return { events, next_cursor: more && after ? cursors.encode(after, scope) : null }
    },
  )

  app.get(
    '/api/v1/events/:event_id',
    {
      config: guarded,
      schema: {
        summary: 'One stored event',
        description: 'A 404 means it is not stored (yet): a client answered 500 for it can ask here.',
        params: EventParams,
        security,
        response: { 200: EventSchema, 404: NotFoundSchema, ...errors },
      },
    },
    async (request, reply) => {
      const { event_id } = parse<{ event_id: string }>(EventParams, request.params, 'path')
      const { sql, values } = eventQuery(event_id.toLowerCase())
      const [row] = await reader.query<StoredRow>(sql, values)
      if (!row) return reply.code(404).send({ detail: 'Event not found' })
      return toEvent(row)
    },
  )

  app.get(
    '/api/v1/stats/events',
    {
      config: guarded,
      schema: {
        summary: 'Events counted per hour or day, by event type',
        description:
          `UTC buckets by the events' \`timestamp\`, from the counts kept as events are stored. ` +
          `At most ${MAX_BUCKETS} buckets a query; \`from\` is rounded down and \`to\` up to bucket edges.`,
        querystring: StatsQuery,
        security,
        response: { 200: StatsSchema, ...errors },
      },
    },
    async (request, reply) => {
      const query = parse<{ from?: string; to?: string; interval: Interval; event_type?: string }>(
        StatsQuery,
        request.query,
        'query',
      )
      const size = INTERVAL_MS[query.interval]
      const to = Math.ceil((query.to !== undefined ? Date.parse(query.to) : Date.now()) / size) * size
      const from = Math.floor((query.from !== undefined ? Date.parse(query.from) : to - 24 * size) / size) * size
      if (query.from !== undefined && query.to !== undefined && query.from > query.to) {
        throw parameterError(['query', 'from'], 'Value error, from must not be after to')
      }
      if ((to - from) / size > MAX_BUCKETS) {
        throw parameterError(
          ['query', 'to'],
          `Value error, the range spans ${(to - from) / size} ${query.interval}s; at most ${MAX_BUCKETS} a query`,
        )
      }
      const bound = (ms: number) => datetimeOf(new Date(ms).toISOString())
      // Buckets starting before `to`, up to its last millisecond: `to` may be the year 10000.
      const { sql, values } = statsQuery(query.interval, bound(from), bound(to - 1), query.event_type)
      const rows = await reader.query<CountRow>(sql, values, { rowsAsArray: true })
      // Already JSON (StatsSchema's shape, which the docs show): sent as it is.
      return reply.type('application/json; charset=utf-8').send(statsBody(query.interval, rows))
    },
  )
}
