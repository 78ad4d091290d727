// The query service's part of `npm run bench`: timeline and stats latencies over a table of
// 5,000,000 rows while /batch ingestion runs into it, beside the same SQL sent bare (mysql2). On
// a MariaDB of its own, whose buffer pool holds the table (as a production server's would), so
// that the shared one is neither flooded nor measured with a 128 MB pool.
import mysql from 'mysql2/promise'
import { readFileSync } from 'node:fs'
import { statsQuery } from '../query-service/src/stats.js'
import { PrivateMariadb } from '../test-support/private-servers.js'
import { batchBody, mysqlEnvOf, postLoad, root, startService, waitForHttp } from './lib.js'

export interface QueryFigures {
  rows: number
  fillSeconds: number
  timeline: Latency
  stats: Latency
  bareTimeline: Latency
  bareStats: Latency
  ingestedEventsPerSecond: number
}

export interface Latency {
  p50: number
  p99: number
  count: number
}

const USERS = 100_000
const EVENT_TYPES = 10
const DAYS = 30

function latency(samples: number[]): Latency {
  const sorted = [...samples].sort((a, b) => a - b)
  const at = (q: number) => Number((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0).toFixed(1))
  return { p50: at(0.5), p99: at(0.99), count: sorted.length }
}

/** Runs `request` from `concurrency` loops until `until`, timing each. */
async function timed(request: () => Promise<void>, until: number, concurrency = 4): Promise<Latency> {
  const samples: number[] = []
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < until) {
        const started = performance.now()
        await request()
        samples.push(performance.now() - started)
      }
    }),
  )
  return latency(samples)
}

/**
 * `rows` events of USERS users and EVENT_TYPES types over the last DAYS days, made inside the
 * server (each round copies the table onto itself with new ids, users and times), then the
 * counts built from them as db/init.sql builds them for an existing table.
 */
async function fillTable(connection: mysql.Connection, rows: number) {
  const now = Date.now()
  const seed = Array.from({ length: 10_000 }, (_, i) => [
    `${String(i).padStart(8, '0')}-0000-4000-8000-000000000000`,
    1 + Math.floor(Math.random() * USERS),
    `type_${i % EVENT_TYPES}`,
    new Date(now - Math.random() * DAYS * 86_400_000).toISOString().slice(0, 23).replace('T', ' '),
    JSON.stringify({ page_url: '/products/item-xyz', session_id: 'abc123' }),
  ])
  await connection.query(
    'INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`, metadata) VALUES ?',
    [seed],
  )
  let count = seed.length
  while (count < rows) {
    const take = Math.min(count, rows - count)
    await connection.query(
      'INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`, metadata) ' +
        `SELECT UUID(), 1 + FLOOR(RAND() * ${USERS}), event_type, ` +
        `TIMESTAMPADD(MICROSECOND, -FLOOR(RAND() * ${DAYS} * 86400000) * 1000, UTC_TIMESTAMP(3)), metadata ` +
        `FROM user_activities LIMIT ${take}`,
    )
    count += take
  }
  await connection.query('DROP TABLE user_activity_counts')
  await connection.query(readFileSync(`${root}db/init.sql`, 'utf8'))
}

/**
 * The query service over `rows` stored events in `database`, while /batch ingestion (a producer
 * and a consumer of the project's) stores into the same table: timeline pages of random users,
 * then 30 days of hourly counts, each for `seconds`.
 */
export async function queryBench(
  options: {
    queue: string
    broker: Record<string, string>
    consumer: string[]
    seconds: number
  },
  rows = 5_000_000,
): Promise<QueryFigures> {
  const { queue, broker, seconds } = options
  const server = await PrivateMariadb.start({ bufferPoolSize: '3G' })
  const database = server.database
  const connection = await mysql.createConnection({
    ...server.address,
    user: 'root',
    password: '',
    database,
    multipleStatements: true,
  })
  const mysqlEnv = mysqlEnvOf(server, database)
  const services = []
  try {
    await connection.query(readFileSync(`${root}db/init.sql`, 'utf8'))
    const filling = Date.now()
    await fillTable(connection, rows)
    const fillSeconds = (Date.now() - filling) / 1000

    const query = startService(['--max-old-space-size=96', 'query-service/dist/main.js'], {
      ...mysqlEnv,
      HOST: '127.0.0.1',
      PORT: '18198',
      QUERY_OPEN: 'true',
    })
    const consumer = startService(options.consumer, {
      ...broker,
      ...mysqlEnv,
      RABBITMQ_QUEUE: queue,
      HEALTH_HOST: '127.0.0.1',
      HEALTH_PORT: '18197',
    })
    const producer = startService(['producer-service/dist/main.js'], {
      ...broker,
      RABBITMQ_QUEUE: queue,
      HOST: '127.0.0.1',
      PORT: '18196',
      PUBLISH_MAX_IN_FLIGHT: '2000',
    })
    services.push(query, consumer, producer)
    const queryUrl = 'http://127.0.0.1:18198'
    await waitForHttp(`${queryUrl}/health`)
    await waitForHttp('http://127.0.0.1:18196/health')
    await waitForHttp('http://127.0.0.1:18197/health')

    const get = async (path: string) => {
      const response = await fetch(`${queryUrl}${path}`)
      if (response.status !== 200) throw new Error(`${path}: ${response.status} ${await response.text()}`)
      await response.arrayBuffer()
    }
    const user = () => 1 + Math.floor(Math.random() * USERS)
    const statsPath = () => {
      const to = new Date()
      const from = new Date(to.getTime() - DAYS * 86_400_000)
      return `/api/v1/stats/events?interval=hour&from=${from.toISOString()}&to=${to.toISOString()}`
    }
    // Warm-up, then everything timed while /batch ingestion runs.
    await timed(() => get(`/api/v1/users/${user()}/events`), Date.now() + 1000)
    const ingestion = postLoad('http://127.0.0.1:18196', {
      connections: 8,
      seconds: 4 * seconds + 2,
      path: '/api/v1/events/batch',
      body: batchBody(100),
    })
    await new Promise((resolve) => setTimeout(resolve, 1000))
    // One request at a time, as the bare SELECT below: latencies, not a throughput.
    const timeline = await timed(() => get(`/api/v1/users/${user()}/events`), Date.now() + seconds * 1000, 1)
    const stats = await timed(() => get(statsPath()), Date.now() + seconds * 1000, 1)
    const bareTimeline = await timed(
      async () => {
        await connection.query(
          'SELECT id, event_id, user_id, event_type, `timestamp`, metadata, received_at, created_at ' +
            'FROM user_activities WHERE user_id = ? ORDER BY `timestamp` DESC, id DESC LIMIT 101',
          [user()],
        )
      },
      Date.now() + seconds * 1000,
      1,
    )
    const bareStats = await timed(
      async () => {
        const to = Date.now()
        const at = (ms: number) => new Date(ms).toISOString().slice(0, 19).replace('T', ' ')
        const { sql, values } = statsQuery('hour', at(to - DAYS * 86_400_000), at(to), undefined)
        await connection.query({ sql, values, rowsAsArray: true })
      },
      Date.now() + seconds * 1000,
      1,
    )
    const ingested = await ingestion
    return {
      rows,
      fillSeconds,
      timeline,
      stats,
      bareTimeline,
      bareStats,
      ingestedEventsPerSecond: ingested.requestsPerSecond * 100,
    }
  } finally {
    for (const service of services) await service.stop()
    await connection.end()
    await server.stop()
  }
}
