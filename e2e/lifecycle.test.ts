// End to end: erasure and retention through the built producer and consumer processes, a real
// RabbitMQ and a real database. A user erased while their events are queued, or held during a
// database outage, has no row afterwards; other users' events are stored once; expired events go
// within a minute with two consumers running; the counts equal COUNT(*) throughout.
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import type { RowDataPacket } from 'mysql2/promise'
import { RECORD_ERASURE_SQL } from 'event-contract'
import { TcpProxy, waitFor } from '../test-support/index.js'
import { connectDatabase, countsDrift, createTestDatabase, database } from '../test-support/database.js'
import { freePort, spawnService } from '../test-support/process.js'
import { acceptedIds, event, System, type PostOutcome } from './harness.js'

const systems: System[] = []
afterEach(async () => {
  for (const s of systems.splice(0)) await s.stop()
})

async function start(options: ConstructorParameters<typeof System>[0]) {
  const s = new System(options)
  systems.push(s)
  return s.start()
}

async function sql<T extends RowDataPacket[]>(s: System, statement: string, values: unknown[] = []): Promise<T> {
  const connection = await connectDatabase(s.databaseName)
  try {
    const [rows] = await connection.query<T>(statement, values)
    return rows
  } finally {
    await connection.end()
  }
}

/** A series of a consumer's /metrics (its name with labels, as printed), 0 when absent. */
async function metric(health: string, series: string): Promise<number> {
  const text = await (await fetch(health.replace(/health$/, 'metrics'))).text()
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  return Number(line?.split(' ')[1] ?? 0)
}

/** What a consumer says it removed, by reason. */
const removed = (health: string, reason: 'erased' | 'expired') =>
  metric(health, `consumer_events_removed_total{reason="${reason}"}`)

// Users the other events (harness event(i): user i + 1) never are.
const ERASED = 2_100_000_900
const HELD = 2_100_000_901

const rowsOf = async (s: System, user: number) =>
  Number((await sql(s, 'SELECT COUNT(*) AS n FROM user_activities WHERE user_id = ?', [user]))[0]?.n)

/** `count` events of `user` in /batch requests of 1,000. */
async function postUser(s: System, user: number, count: number): Promise<PostOutcome[]> {
  const outcomes: PostOutcome[] = []
  for (let sent = 0; sent < count; sent += 1000) {
    const size = Math.min(1000, count - sent)
    outcomes.push(await s.postBatch(Array.from({ length: size }, (_, i) => ({ ...event(sent + i), user_id: user }))))
  }
  expect(outcomes.map((o) => o.status)).toEqual(outcomes.map(() => 202))
  return outcomes
}

describe('erasure', () => {
  it('of a user with 10,000 events queued while the consumer is stopped: none stored, the others once', async () => {
    const s = await start({ consumer: false })
    const erased = await postUser(s, ERASED, 10_000)
    const others = await s.postMany(2000, 64)
    // The schema as the consumer applies it (several statements), so the erasure can be recorded.
    const connection = await connectDatabase(s.databaseName, { multipleStatements: true })
    try {
      await connection.query(await readFile(new URL('../db/init.sql', import.meta.url), 'utf8'))
      await connection.query(RECORD_ERASURE_SQL[0], [ERASED])
    } finally {
      await connection.end()
    }
    await s.startConsumer()
    const result = await s.settle(acceptedIds(others))
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    await waitFor(async () => (await s.queueDepth()).ready === 0, { what: 'the queue drained', timeoutMs: 60_000 })
    expect(acceptedIds(erased).size).toBe(10_000)
    expect(await rowsOf(s, ERASED)).toBe(0)
    expect((await s.queueDepth()).dead).toBe(0)
    expect(await countsDrift(s.databaseName)).toEqual([])
    // What the user sends after the erasure is stored.
    const after = await postUser(s, ERASED, 10)
    expect((await s.settle(acceptedIds(after))).missing).toEqual([])
    expect(await rowsOf(s, ERASED)).toBe(10)
  }, 180_000)

  it('of a user whose events the consumer holds while the database is cut: none stored after', async () => {
    const proxy = await new TcpProxy({ host: database.host, port: database.port }).start()
    try {
      const s = await start({ databaseAt: proxy, consumerEnv: { CONSUMER_RETRY_MAX_MS: '1000' } })
      await proxy.cut()
      const held = await postUser(s, HELD, 2000)
      const others = await s.postMany(200, 64)
      // Held by the consumer: delivered first, unacknowledged, their batch retried.
      await waitFor(
        async () =>
          (await metric(s.consumerHealth, 'consumer_database_retries_total')) > 0 &&
          (await metric(s.consumerHealth, 'consumer_events_in_hand')) >= 8,
        { what: "the user's events held by the consumer", timeoutMs: 30_000 },
      )
      await sql(s, RECORD_ERASURE_SQL[0], [HELD])
      await proxy.restore()
      const result = await s.settle(acceptedIds(others))
      expect(result.missing).toEqual([])
      expect(result.duplicated).toEqual([])
      await waitFor(async () => (await s.health(s.consumerHealth)).status === 200, { what: 'consumer healthy' })
      expect(acceptedIds(held).size).toBe(2000)
      expect(await rowsOf(s, HELD)).toBe(0)
      expect(await countsDrift(s.databaseName)).toEqual([])
    } finally {
      await proxy.stop()
    }
  }, 180_000)
})

describe('retention', () => {
  it('removes events past RETENTION_DAYS within a minute, with two consumers running, the rest kept', async () => {
    const env = { RETENTION_DAYS: '30', LIFECYCLE_INTERVAL_MS: '500' }
    const s = await start({ consumerEnv: env })
    const day = 86_400_000
    const aged = (days: number) => (i: number) => ({
      ...event(i),
      timestamp: new Date(Date.now() - days * day).toISOString(),
    })
    const old = await s.postMany(1500, 64, aged(40))
    const young = await s.postMany(500, 64, (i) => aged(10)(10_000 + i))
    // A second consumer process on the same database and queue.
    const secondConsumer = await s.spawnConsumer(env)
    try {
      const started = Date.now()
      await waitFor(async () => (await s.storedCount()) === acceptedIds(young).size, {
        what: 'only the young events left',
        timeoutMs: 60_000,
        intervalMs: 250,
      })
      expect(Date.now() - started).toBeLessThan(60_000)
      expect(acceptedIds(old).size).toBe(1500)
      expect((await s.settle(acceptedIds(young))).missing).toEqual([])
      expect(await countsDrift(s.databaseName)).toEqual([])
      // Each expired row was removed by one of the two, once.
      const counted = (await removed(s.consumerHealth, 'expired')) + (await removed(secondConsumer.health, 'expired'))
      expect(counted).toBe(1500)
    } finally {
      expect(await secondConsumer.stop()).toBe(0)
    }
  }, 180_000)
})

describe('start-up', () => {
  it('on a database without the schema: the lifecycle waits for it, no failed removal logged', async () => {
    // System's database is created empty: the consumer applies db/init.sql as it starts.
    const s = await start({ consumerEnv: { LIFECYCLE_INTERVAL_MS: '200', LOG_LEVEL: 'info' } })
    const accepted = acceptedIds(await s.postMany(20, 4))
    await s.settle(accepted)
    await sql(s, RECORD_ERASURE_SQL[0], [event(0).user_id])
    await waitFor(async () => (await sql(s, 'SELECT * FROM user_erasures WHERE completed_at IS NULL')).length === 0, {
      what: 'the erasure done',
      timeoutMs: 10_000,
    })
    expect(s.consumer?.output()).not.toContain('removing erased or expired events failed')
  })

  it('with RabbitMQ unreachable: erasures are still done (the lifecycle needs only the database)', async () => {
    const db = await createTestDatabase()
    const connection = await connectDatabase(db.name, { multipleStatements: true })
    const consumer = spawnService(fileURLToPath(new URL('../consumer-service/dist/main.js', import.meta.url)), {
      RABBITMQ_HOST: '127.0.0.1',
      RABBITMQ_PORT: String(await freePort()), // nothing listens there
      MYSQL_HOST: database.host,
      MYSQL_PORT: String(database.port),
      MYSQL_USER: database.user,
      MYSQL_PASSWORD: database.password,
      MYSQL_DATABASE: db.name,
      HEALTH_HOST: '127.0.0.1',
      HEALTH_PORT: String(await freePort()),
      LIFECYCLE_INTERVAL_MS: '200',
    })
    try {
      // The schema as the compose MySQL applies it: the consumer, without a broker, never gets to.
      await connection.query(await readFile(new URL('../db/init.sql', import.meta.url), 'utf8'))
      await connection.query(
        'INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`, received_at) ' +
          "VALUES (UUID(), 77, 'login', UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) - INTERVAL 1 MINUTE)",
      )
      await connection.query(RECORD_ERASURE_SQL[0], [77])
      await waitFor(
        async () => {
          const [rows] = await connection.query<RowDataPacket[]>('SELECT completed_at FROM user_erasures')
          return rows[0]?.completed_at !== null
        },
        { what: 'the erasure done without a broker', timeoutMs: 15_000 },
      )
      const [[left]] = await connection.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM user_activities')
      expect(Number(left?.n)).toBe(0)
    } finally {
      await consumer.stop()
      await connection.end()
      await db.drop()
    }
  })
})
