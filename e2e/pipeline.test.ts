// End to end: the built producer and consumer as processes, a real RabbitMQ and a real database.
// HTTP in, rows out.
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { RowDataPacket } from 'mysql2/promise'
import { broker, connectBroker, uniqueName, waitFor } from '../test-support/index.js'
import { connectDatabase, createTestDatabase, database } from '../test-support/database.js'
import { freePort, spawnService, type ServiceProcess } from '../test-support/process.js'

const producerMain = fileURLToPath(new URL('../producer-service/dist/main.js', import.meta.url))
const consumerMain = fileURLToPath(new URL('../consumer-service/dist/main.js', import.meta.url))

const readmeExample = {
  user_id: 123,
  event_type: 'page_view',
  timestamp: '2026-02-20T10:00:00Z',
  metadata: { page_url: '/products/item-xyz', session_id: 'abc123' },
}

describe('the pipeline', () => {
  const queue = uniqueName('e2e')
  let db: Awaited<ReturnType<typeof createTestDatabase>>
  let producer: ServiceProcess
  let consumer: ServiceProcess
  let api: string
  let health: string

  beforeAll(async () => {
    db = await createTestDatabase()
    const [port, healthPort] = [await freePort(), await freePort()]
    const common = {
      RABBITMQ_HOST: broker.host,
      RABBITMQ_PORT: String(broker.port),
      RABBITMQ_USER: broker.user,
      RABBITMQ_PASS: broker.pass,
      RABBITMQ_QUEUE: queue,
    }
    producer = spawnService(producerMain, { ...common, HOST: '127.0.0.1', PORT: String(port) })
    consumer = spawnService(consumerMain, {
      ...common,
      MYSQL_HOST: database.host,
      MYSQL_PORT: String(database.port),
      MYSQL_USER: database.user,
      MYSQL_PASSWORD: database.password,
      MYSQL_DATABASE: db.name,
      HEALTH_HOST: '127.0.0.1',
      HEALTH_PORT: String(healthPort),
    })
    api = `http://127.0.0.1:${port}`
    health = `http://127.0.0.1:${healthPort}/health`
    await waitFor(async () => (await fetch(`${api}/health`)).ok, { what: 'the producer to be healthy' })
    await waitFor(async () => (await fetch(health)).ok, { what: 'the consumer to be healthy' })
  })

  afterAll(async () => {
    await producer?.stop()
    await consumer?.stop()
    const connection = await connectBroker()
    const channel = await connection.createChannel()
    await channel.deleteQueue(queue)
    await channel.deleteQueue(`${queue}.dlq`)
    await channel.deleteExchange(`${queue}.dlx`)
    await connection.close()
    await db?.drop()
  })

  async function post(body: unknown) {
    const res = await fetch(`${api}/api/v1/events/track`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
    return { status: res.status, body: (await res.json()) as { event_id: string } }
  }

  async function storedRows(): Promise<RowDataPacket[]> {
    const connection = await connectDatabase(db.name)
    try {
      const [rows] = await connection.query<RowDataPacket[]>(
        'SELECT event_id, user_id, event_type, `timestamp`, metadata FROM user_activities',
      )
      return rows
    } finally {
      await connection.end()
    }
  }

  it('reports both services healthy', async () => {
    expect(await (await fetch(`${api}/health`)).json()).toEqual({ status: 'healthy', checks: { rabbitmq: 'up' } })
    expect(await (await fetch(health)).json()).toEqual({
      status: 'healthy',
      checks: { rabbitmq: 'up', mysql: 'up' },
    })
  })

  it("stores the README's example as one row with its values", async () => {
    const { status, body } = await post(readmeExample)
    expect(status).toBe(202)
    const row = await waitFor(async () => (await storedRows()).find((r) => r.event_id === body.event_id), {
      what: 'the example row',
    })
    expect({
      ...row,
      metadata: typeof row.metadata === 'string' ? JSON.parse(row.metadata) : row.metadata,
    }).toEqual({
      event_id: body.event_id,
      user_id: 123,
      event_type: 'page_view',
      timestamp: new Date('2026-02-20T10:00:00Z'),
      metadata: readmeExample.metadata,
    })
  })

  it('stores each of a few hundred concurrent events exactly once, within seconds', async () => {
    const events = Array.from({ length: 400 }, (_, i) => ({
      user_id: 1000 + i,
      event_type: i % 2 ? 'login' : 'logout',
      timestamp: new Date(Date.UTC(2026, 1, 20, 10, 0, 0, i)).toISOString().replace('Z', '+00:00'),
      metadata: { i, text: 'héllo ✓' },
    }))
    const answers = await Promise.all(events.map((e) => post(e)))
    expect(answers.map((a) => a.status)).toEqual(events.map(() => 202))
    const accepted = new Map(answers.map((a, i) => [a.body.event_id, events[i]]))

    const started = Date.now()
    await waitFor(async () => (await storedRows()).filter((r) => accepted.has(r.event_id)).length === accepted.size, {
      what: `${accepted.size} rows`,
      timeoutMs: 10_000,
    })
    expect(Date.now() - started).toBeLessThan(10_000)
    const rows = (await storedRows()).filter((r) => accepted.has(r.event_id))
    expect(new Set(rows.map((r) => r.event_id)).size).toBe(rows.length)
    for (const row of rows) {
      const sent = accepted.get(row.event_id)
      expect(row.user_id).toBe(sent?.user_id)
      expect(row.event_type).toBe(sent?.event_type)
      expect((row.timestamp as Date).toISOString()).toBe(new Date(sent?.timestamp as string).toISOString())
    }
  })

  it('stops both services cleanly on SIGTERM', async () => {
    expect(await producer.stop()).toBe(0)
    expect(await consumer.stop()).toBe(0)
  })
})
