// Integration: the worker against the real RabbitMQ and MariaDB/MySQL (no mock of either).
// Each test has its own queue and its own database.
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest'
import type { ChannelModel, ConfirmChannel, GetMessage } from 'amqplib'
import mysql, { type RowDataPacket } from 'mysql2/promise'
import { pino, type Logger } from 'pino'
import {
  assertTopology,
  BATCH_MESSAGE_TYPE,
  deleteTopology,
  messageProperties,
  topologyFor,
  type QueueMessage,
} from 'event-contract'
import {
  broker,
  connectBroker,
  metricValue,
  TcpProxy,
  uniqueName,
  waitFor,
  type Address,
} from '../../test-support/index.js'
import { connectDatabase, createTestDatabase, database } from '../../test-support/database.js'
import { readConfig } from '../src/config.js'
import { buildHealthApp } from '../src/health.js'
import { createConsumerMetrics, observeWorker } from '../src/metrics.js'
import { logSummaries } from '../src/summary.js'
import { SCHEMA_FILE, Store } from '../src/store.js'
import { Worker } from '../src/worker.js'

let admin: ChannelModel
let publisher: ConfirmChannel
const cleanups: (() => Promise<void>)[] = []

beforeAll(async () => {
  admin = await connectBroker()
  publisher = await admin.createConfirmChannel()
})
afterAll(async () => {
  await admin.close()
})
afterEach(async () => {
  // Last started, first stopped; every cleanup runs even if one fails.
  const errors: unknown[] = []
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch((err: unknown) => errors.push(err))
  if (errors.length > 0) throw errors[0]
})

function event(overrides: Partial<QueueMessage> = {}): QueueMessage {
  return {
    event_id: randomUUID(),
    user_id: 1 + Math.floor(Math.random() * 1000),
    event_type: 'page_view',
    timestamp: '2026-02-20T10:00:00.000Z',
    metadata: { page_url: '/products/item-xyz' },
    received_at: new Date().toISOString(),
    ...overrides,
  }
}

async function publish(queue: string, content: QueueMessage | Buffer) {
  const body = Buffer.isBuffer(content) ? content : Buffer.from(JSON.stringify(content))
  const eventId = Buffer.isBuffer(content) ? randomUUID() : content.event_id
  publisher.publish('', queue, body, messageProperties(eventId))
  await publisher.waitForConfirms()
}

interface StackOptions {
  queue?: string
  databaseName?: string
  /** Where the worker reaches RabbitMQ and MySQL (a TcpProxy, to cut them). */
  brokerAt?: Address
  databaseAt?: Address
  env?: Record<string, string>
  logger?: Logger
  summaryIntervalMs?: number
  maxInHandBytes?: number
}

/** A worker (and its health server) on a queue and database of the test's own. */
async function startConsumer(options: StackOptions = {}) {
  const queue = options.queue ?? uniqueName('consumer_it')
  let databaseName = options.databaseName
  if (!databaseName) {
    const db = await createTestDatabase()
    databaseName = db.name
    cleanups.push(db.drop)
  }
  if (!options.queue) {
    cleanups.push(async () => {
      const channel = await admin.createChannel()
      await deleteTopology(channel, topologyFor(queue, 'quorum'))
      await channel.close()
    })
  }
  const config = readConfig({
    RABBITMQ_HOST: (options.brokerAt ?? broker).host,
    RABBITMQ_PORT: String((options.brokerAt ?? broker).port),
    RABBITMQ_USER: broker.user,
    RABBITMQ_PASS: broker.pass,
    RABBITMQ_QUEUE: queue,
    MYSQL_HOST: (options.databaseAt ?? database).host,
    MYSQL_PORT: String((options.databaseAt ?? database).port),
    MYSQL_USER: database.user,
    MYSQL_PASSWORD: database.password,
    MYSQL_DATABASE: databaseName,
    CONSUMER_RETRY_MAX_MS: '500',
    ...options.env,
  })
  const logger = options.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' })
  const store = Store.fromConfig(config, logger)
  await store.applySchema()
  const metrics = createConsumerMetrics()
  const worker = new Worker({ config, store, logger, maxInHandBytes: options.maxInHandBytes })
  observeWorker(metrics, worker)
  const summaries = logSummaries(worker, logger, options.summaryIntervalMs)
  const health = await buildHealthApp({ worker, store, logger, metrics })
  await worker.start()
  await worker.waitForConnect()
  // Consuming starts once the database is prepared: tests start from there.
  await waitFor(async () => (await consumers(queue)) > 0, { what: 'the worker consuming' })
  cleanups.push(async () => {
    await worker.stop()
    summaries.close()
    await health.close()
    await store.close()
  })
  return { queue, databaseName, worker, health, store }
}

/** The consumer's metrics as GET /metrics serves them. */
async function scrape(health: Awaited<ReturnType<typeof buildHealthApp>>) {
  return (await health.inject('/metrics')).body
}

interface StoredRow {
  event_id: string
  user_id: number
  event_type: string
  timestamp: Date
  metadata: unknown
}

async function rows(databaseName: string): Promise<StoredRow[]> {
  const connection = await connectDatabase(databaseName)
  try {
    const [result] = await connection.query<RowDataPacket[]>(
      'SELECT event_id, user_id, event_type, `timestamp`, metadata FROM user_activities ORDER BY event_id',
    )
    // mysql2 parses a JSON column on MySQL; on MariaDB it is LONGTEXT and arrives as text.
    return result.map((row) => ({
      event_id: row.event_id,
      user_id: row.user_id,
      event_type: row.event_type,
      timestamp: row.timestamp,
      metadata: typeof row.metadata === 'string' ? JSON.parse(row.metadata) : row.metadata,
    }))
  } finally {
    await connection.end()
  }
}

/** Events in the order rows() returns them. */
function byEventId<T extends { event_id: string }>(events: T[]): T[] {
  return [...events].sort((a, b) => (a.event_id < b.event_id ? -1 : 1))
}

async function rowCount(databaseName: string): Promise<number> {
  const connection = await connectDatabase(databaseName)
  try {
    const [result] = await connection.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM user_activities')
    return Number(result[0]?.n)
  } finally {
    await connection.end()
  }
}

async function queueDepth(queue: string): Promise<{ ready: number; dead: number }> {
  const channel = await admin.createChannel()
  // A missing queue closes the channel with a 404: checkQueue's rejection says so.
  channel.on('error', () => {})
  try {
    const ready = (await channel.checkQueue(queue)).messageCount
    const dead = (await channel.checkQueue(`${queue}.dlq`)).messageCount
    return { ready, dead }
  } finally {
    await channel.close().catch(() => {})
  }
}

async function consumers(queue: string): Promise<number> {
  const channel = await admin.createChannel()
  try {
    return (await channel.checkQueue(queue)).consumerCount
  } finally {
    await channel.close()
  }
}

/** Takes `count` dead letters off the queue's DLQ: their bodies and properties. */
async function deadLetterMessages(queue: string, count: number): Promise<GetMessage[]> {
  const channel = await admin.createChannel()
  try {
    const messages: GetMessage[] = []
    await waitFor(
      async () => {
        const msg = await channel.get(`${queue}.dlq`, { noAck: true })
        if (msg) messages.push(msg)
        return messages.length >= count
      },
      { what: `${count} dead letters`, intervalMs: 20 },
    )
    return messages
  } finally {
    await channel.close()
  }
}

describe('storing', () => {
  it('applies the schema to an empty database and stores each event with its values', async () => {
    const { queue, databaseName } = await startConsumer()
    const sent = [
      event({ user_id: 1, event_type: 'login', metadata: {} }),
      event({ user_id: 2147483647, event_type: 'é'.repeat(50), metadata: { emoji: '😀', text: 'naïve — ✓' } }),
      event({ timestamp: '9999-12-31T23:59:59.999Z', metadata: { nested: { deep: [1, 2, { x: null }] } } }),
    ]
    for (const e of sent) await publish(queue, e)
    await waitFor(async () => (await rowCount(databaseName)) === sent.length, { what: 'three rows' })

    const stored = await rows(databaseName)
    expect(stored).toEqual(
      byEventId(sent).map((e) => ({
        event_id: e.event_id,
        user_id: e.user_id,
        event_type: e.event_type,
        timestamp: new Date(e.timestamp),
        metadata: e.metadata,
      })),
    )
    expect(await queueDepth(queue)).toEqual({ ready: 0, dead: 0 })
  })

  it('stores an event published twice once', async () => {
    const { queue, databaseName } = await startConsumer()
    const e = event()
    await publish(queue, e)
    await publish(queue, { ...e, received_at: new Date().toISOString() })
    await publish(queue, event())
    await waitFor(async () => (await queueDepth(queue)).ready === 0 && (await rowCount(databaseName)) === 2, {
      what: 'two rows and an empty queue',
    })
    const ids = (await rows(databaseName)).map((r) => r.event_id)
    expect(ids.filter((id) => id === e.event_id)).toHaveLength(1)
  })

  it('does not hold events for CONSUMER_BATCH_WAIT_MS when the prefetch is smaller than a batch', async () => {
    // 40 in hand at most and batches of 500: a batch that waited to fill would wait 10 s.
    const { queue, databaseName } = await startConsumer({
      env: { CONSUMER_PREFETCH: '40', CONSUMER_BATCH_SIZE: '500', CONSUMER_BATCH_WAIT_MS: '10000' },
    })
    const sent = Array.from({ length: 400 }, () => event())
    for (const e of sent) publisher.publish('', queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
    await publisher.waitForConfirms()
    await waitFor(async () => (await rowCount(databaseName)) === sent.length, { what: '400 rows', timeoutMs: 5000 })
  })

  it('stores a few thousand events, each once, in batches', async () => {
    const { queue, databaseName } = await startConsumer()
    const sent = Array.from({ length: 3000 }, () => event())
    for (const e of sent) publisher.publish('', queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
    await publisher.waitForConfirms()
    await waitFor(async () => (await rowCount(databaseName)) === sent.length, { what: '3000 rows', timeoutMs: 20_000 })
    const ids = new Set((await rows(databaseName)).map((r) => r.event_id))
    expect(ids.size).toBe(sent.length)
    expect(sent.every((e) => ids.has(e.event_id))).toBe(true)
  })
})

describe('poison messages', () => {
  it('dead-letters non-JSON and schema-invalid messages while the valid ones behind them are stored', async () => {
    const { queue, databaseName } = await startConsumer()
    const valid = [event(), event(), event()]
    await publish(queue, valid[0] as QueueMessage)
    await publish(queue, Buffer.from('this is not JSON {'))
    await publish(queue, valid[1] as QueueMessage)
    await publish(queue, Buffer.from(JSON.stringify({ user_id: 'x', event_type: 5 })))
    await publish(queue, valid[2] as QueueMessage)

    await waitFor(async () => (await rowCount(databaseName)) === 3, { what: 'the three valid rows' })
    const dead = await deadLetterMessages(queue, 2)
    expect(dead.map((msg) => msg.content.toString())).toEqual([
      'this is not JSON {',
      JSON.stringify({ user_id: 'x', event_type: 5 }),
    ])
    // Each says why, in its headers.
    expect(dead.map((msg) => msg.properties.headers)).toEqual([
      expect.objectContaining({
        'x-error-kind': 'validation',
        'x-error': expect.stringContaining('JSON decode error'),
      }),
      expect.objectContaining({ 'x-error-kind': 'validation', 'x-error': expect.stringContaining('user_id') }),
    ])
    expect((await rows(databaseName)).map((r) => r.event_id)).toEqual(byEventId(valid).map((e) => e.event_id))
    await waitFor(async () => (await queueDepth(queue)).ready === 0, { what: 'an empty queue' })
  })

  it('stores the rest of a batch and dead-letters the one row the database rejects', async () => {
    const databaseName = (await startConsumer()).databaseName
    // Our own database, narrowed so that one valid event becomes one the database refuses.
    const connection = await connectDatabase(databaseName)
    await connection.query('ALTER TABLE user_activities MODIFY event_type VARCHAR(10) NOT NULL')
    await connection.end()
    // A fresh consumer with a batch wait long enough that all of them share one INSERT.
    const { queue } = await startConsumer({ databaseName, env: { CONSUMER_BATCH_WAIT_MS: '300' } })

    const good = Array.from({ length: 9 }, () => event({ event_type: 'short' }))
    const bad = event({ event_type: 'much_too_long_for_ten' })
    const all = [...good.slice(0, 4), bad, ...good.slice(4)]
    for (const e of all) publisher.publish('', queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
    await publisher.waitForConfirms()

    const [dead] = await deadLetterMessages(queue, 1)
    expect(JSON.parse(dead?.content.toString() as string).event_id).toBe(bad.event_id)
    expect(dead?.properties).toMatchObject({
      messageId: bad.event_id,
      headers: {
        'x-error-kind': 'database-rejected',
        'x-error': expect.stringMatching(/too long/i),
        'x-original-message-id': bad.event_id,
        'x-source-queue': queue,
      },
    })
    await waitFor(async () => (await rowCount(databaseName)) === 9, { what: 'the nine good rows' })
    expect(new Set((await rows(databaseName)).map((r) => r.event_id))).toEqual(new Set(good.map((e) => e.event_id)))
    await waitFor(async () => (await queueDepth(queue)).ready === 0, { what: 'an empty queue' })
  })
})

async function publishBatch(queue: string, events: unknown[]) {
  const batchId = randomUUID()
  publisher.publish('', queue, Buffer.from(JSON.stringify({ events })), messageProperties(batchId, BATCH_MESSAGE_TYPE))
  await publisher.waitForConfirms()
  return batchId
}

describe('batch messages', () => {
  it('stores every event of a batch message once, with many messages to one insert and one ack', async () => {
    const { queue, databaseName } = await startConsumer()
    const batches = Array.from({ length: 20 }, () => Array.from({ length: 100 }, () => event()))
    for (const events of batches) await publishBatch(queue, events)
    await publishBatch(queue, batches[0] as QueueMessage[]) // a redelivery, in effect
    await waitFor(async () => (await rowCount(databaseName)) === 2000, { what: '2000 rows' })
    await waitFor(async () => (await queueDepth(queue)).ready === 0, { what: 'an empty queue' })
    const ids = new Set((await rows(databaseName)).map((r) => r.event_id))
    expect(ids).toEqual(new Set(batches.flat().map((e) => e.event_id)))
    expect(await queueDepth(queue)).toEqual({ ready: 0, dead: 0 })
  })

  it('dead-letters the one invalid event of a batch message alone, with why, and stores the rest', async () => {
    const { queue, databaseName } = await startConsumer()
    const good = [event(), event(), event()]
    const bad = { ...event(), user_id: 'x' }
    const batchId = await publishBatch(queue, [good[0], bad, good[1], good[2]])
    await waitFor(async () => (await rowCount(databaseName)) === 3, { what: 'the three good rows' })
    const [dead] = await deadLetterMessages(queue, 1)
    expect(JSON.parse(dead?.content.toString() as string)).toEqual(bad)
    expect(dead?.properties).toMatchObject({
      messageId: bad.event_id,
      type: 'user_activity.v1',
      headers: {
        'x-error-kind': 'validation',
        'x-error': expect.stringContaining('user_id'),
        'x-original-message-id': batchId,
        'x-original-type': BATCH_MESSAGE_TYPE,
      },
    })
    await waitFor(async () => (await queueDepth(queue)).ready === 0, { what: 'an empty queue' })
    expect(await queueDepth(queue)).toEqual({ ready: 0, dead: 0 })
  })

  it('dead-letters the event of a batch message the database refuses, and stores the others', async () => {
    const databaseName = (await startConsumer()).databaseName
    const connection = await connectDatabase(databaseName)
    await connection.query('ALTER TABLE user_activities MODIFY event_type VARCHAR(10) NOT NULL')
    await connection.end()
    const { queue } = await startConsumer({ databaseName })
    const good = Array.from({ length: 9 }, () => event({ event_type: 'short' }))
    const bad = event({ event_type: 'much_too_long_for_ten' })
    await publishBatch(queue, [...good.slice(0, 5), bad, ...good.slice(5)])
    const [dead] = await deadLetterMessages(queue, 1)
    expect(JSON.parse(dead?.content.toString() as string)).toEqual(bad)
    expect(dead?.properties.headers).toMatchObject({ 'x-error-kind': 'database-rejected' })
    await waitFor(async () => (await rowCount(databaseName)) === 9, { what: 'the nine good rows' })
    await waitFor(async () => (await queueDepth(queue)).ready === 0, { what: 'an empty queue' })
  })
})

describe('several consumers', () => {
  it('two consumers on one queue store every event exactly once', async () => {
    const first = await startConsumer({ env: { CONSUMER_PREFETCH: '50', CONSUMER_BATCH_SIZE: '25' } })
    await startConsumer({
      queue: first.queue,
      databaseName: first.databaseName,
      env: { CONSUMER_PREFETCH: '50', CONSUMER_BATCH_SIZE: '25' },
    })
    const sent = Array.from({ length: 2000 }, () => event())
    for (const e of sent) {
      publisher.publish('', first.queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
    }
    await publisher.waitForConfirms()
    await waitFor(async () => (await rowCount(first.databaseName)) === sent.length, {
      what: '2000 rows',
      timeoutMs: 20_000,
    })
    const ids = (await rows(first.databaseName)).map((r) => r.event_id)
    expect(new Set(ids).size).toBe(ids.length)
    expect(ids).toHaveLength(sent.length)
  })
})

describe('database outage', () => {
  it('holds events while the database is unreachable, reports 503, and stores them all once it returns', async () => {
    const proxy = await new TcpProxy({ host: database.host, port: database.port }).start()
    cleanups.push(() => proxy.stop())
    const { queue, databaseName, health, worker } = await startConsumer({ databaseAt: proxy })
    expect((await health.inject('/health')).statusCode).toBe(200)
    let retries = 0
    worker.on('retrying', () => retries++)

    await proxy.cut()
    await waitFor(async () => (await health.inject('/health')).statusCode === 503, { what: '/health 503' })
    expect((await health.inject('/health')).json()).toEqual({
      status: 'unhealthy',
      checks: { rabbitmq: 'up', mysql: 'down', progress: 'ok', dlq: 'ok' },
    })
    const sent = Array.from({ length: 200 }, () => event())
    for (const e of sent) publisher.publish('', queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
    await publisher.waitForConfirms()
    await waitFor(() => retries >= 3, { what: 'several failed retries' })

    expect(await queueDepth(queue)).toMatchObject({ dead: 0 })
    await proxy.restore()
    await waitFor(async () => (await health.inject('/health')).statusCode === 200, { what: '/health 200' })
    await waitFor(async () => (await rowCount(databaseName)) === sent.length, { what: '200 rows', timeoutMs: 15_000 })
    await waitFor(async () => (await queueDepth(queue)).ready === 0, { what: 'an empty queue' })
    expect(await queueDepth(queue)).toEqual({ ready: 0, dead: 0 })
  })
})

describe('broker outage', () => {
  it('reconnects, resumes, and stores redelivered events once', async () => {
    const proxy = await new TcpProxy({ host: broker.host, port: broker.port }).start()
    cleanups.push(() => proxy.stop())
    const { queue, databaseName, health } = await startConsumer({ brokerAt: proxy })

    const sent = Array.from({ length: 3000 }, () => event())
    for (const e of sent) publisher.publish('', queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
    await publisher.waitForConfirms()
    // Cut the consumer's connection mid-stream: what it stored but had not acked comes back.
    await waitFor(async () => (await rowCount(databaseName)) > 0, { what: 'the first rows', intervalMs: 5 })
    await proxy.cut()
    await waitFor(async () => (await health.inject('/health')).statusCode === 503, { what: '/health 503' })
    await proxy.restore()

    await waitFor(async () => (await rowCount(databaseName)) === sent.length, { what: '3000 rows', timeoutMs: 20_000 })
    await waitFor(async () => (await health.inject('/health')).statusCode === 200, { what: '/health 200' })
    await waitFor(async () => (await queueDepth(queue)).ready === 0, { what: 'an empty queue' })
    const ids = (await rows(databaseName)).map((r) => r.event_id)
    expect(new Set(ids).size).toBe(sent.length)
    expect(await queueDepth(queue)).toEqual({ ready: 0, dead: 0 })
  })
})

describe('link drops while the rows stay locked', () => {
  it('25 link drops while its INSERTs wait on row locks dead-letter no good event; all stored once after', async () => {
    // A lock wait of 2 s (for the sessions opened now): the consumer's INSERTs fail fast and are
    // retried, so that it keeps taking deliveries. A shared server's setting: restored after.
    const root = await connectDatabase()
    const [[before]] = await root.query<RowDataPacket[]>('SELECT @@GLOBAL.innodb_lock_wait_timeout AS v')
    await root.query('SET GLOBAL innodb_lock_wait_timeout = 2')
    cleanups.push(async () => {
      await root.query(`SET GLOBAL innodb_lock_wait_timeout = ${Number(before?.v)}`)
      await root.end()
    })
    const link = await new TcpProxy({ host: broker.host, port: broker.port }).start()
    cleanups.push(() => link.stop())
    const { queue, databaseName, worker, health } = await startConsumer({ brokerAt: link })
    // Another session holds the rows' locks (its INSERT of the same event_ids, not committed): the
    // database answers the consumer's write probe, but its INSERTs wait.
    const sent = Array.from({ length: 20 }, () => event())
    const locker = await connectDatabase(databaseName)
    cleanups.push(() => locker.end())
    await locker.query('START TRANSACTION')
    await locker.query('INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`) VALUES ?', [
      sent.map((e) => [e.event_id, 1, 'lock', '2026-01-01 00:00:00']),
    ])
    for (const e of sent) publisher.publish('', queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
    await publisher.waitForConfirms()

    // Each drop hands the deliveries back to the queue, a delivery more on each (its limit is 20).
    for (let drop = 1; drop <= 25; drop++) {
      await waitFor(() => worker.inHand.events > 0, {
        what: `deliveries in hand before drop ${drop}`,
        timeoutMs: 15_000,
      })
      await link.cut()
      await waitFor(() => worker.inHand.events === 0, { what: `the channel lost at drop ${drop}` })
      await link.restore()
    }
    expect((await queueDepth(queue)).dead).toBe(0)
    await locker.query('ROLLBACK')

    await waitFor(async () => (await rowCount(databaseName)) === sent.length, { what: '20 rows', timeoutMs: 60_000 })
    await waitFor(async () => (await queueDepth(queue)).ready === 0 && worker.inHand.events === 0, {
      what: 'an empty queue, nothing in hand',
      timeoutMs: 20_000,
    })
    expect(new Set((await rows(databaseName)).map((r) => r.event_id))).toEqual(new Set(sent.map((e) => e.event_id)))
    expect(await queueDepth(queue)).toEqual({ ready: 0, dead: 0 })
    // Worn deliveries went back as fresh copies, at least once each.
    expect(metricValue(await scrape(health), 'consumer_deliveries_requeued_total')).toBeGreaterThanOrEqual(sent.length)
  }, 120_000)
})

describe('a worn delivery behind a held one', () => {
  it('is acked once its fresh copy is queued: link drops copy it once, not once per drop', async () => {
    // A lock wait of 2 s (for the sessions opened now): a shared server's setting, restored after.
    const root = await connectDatabase()
    const [[before]] = await root.query<RowDataPacket[]>('SELECT @@GLOBAL.innodb_lock_wait_timeout AS v')
    await root.query('SET GLOBAL innodb_lock_wait_timeout = 2')
    cleanups.push(async () => {
      await root.query(`SET GLOBAL innodb_lock_wait_timeout = ${Number(before?.v)}`)
      await root.end()
    })
    const db = await createTestDatabase()
    cleanups.push(db.drop)
    const schema = await mysql.createConnection({ ...database, database: db.name, multipleStatements: true })
    await schema.query(readFileSync(SCHEMA_FILE, 'utf8'))
    await schema.end()
    const queue = uniqueName('worn')
    const topology = topologyFor(queue, 'quorum')
    const setup = await admin.createChannel()
    await assertTopology(setup, topology)
    cleanups.push(async () => {
      const channel = await admin.createChannel()
      await deleteTopology(channel, topology)
      await channel.close()
    })

    // A, then E; E redelivered 12 times (worn: the limit is 20) while another channel holds A, so
    // that both come back with A first: the consumer then holds A ahead of a worn E.
    const [a, e] = [event(), event()]
    for (const m of [a, e]) publisher.publish('', queue, Buffer.from(JSON.stringify(m)), messageProperties(m.event_id))
    await publisher.waitForConfirms()
    let holdsA = false
    await setup.prefetch(1)
    await setup.consume(queue, (m) => void (holdsA ||= m !== null), { noAck: false })
    await waitFor(() => holdsA, { what: 'A held elsewhere' })
    const wearer = await admin.createChannel()
    await wearer.prefetch(1)
    let worn = false
    await wearer.consume(
      queue,
      (m) => {
        if (!m) return
        if (Number(m.properties.headers?.['x-delivery-count'] ?? 0) < 12) wearer.nack(m, false, true)
        else worn = true
      },
      { noAck: false },
    )
    await waitFor(() => worn, { what: 'E redelivered 12 times' })
    await setup.close()
    await wearer.close()

    // A's row locked by another session: its INSERT waits 2 s and fails, again and again; the
    // write probe (another key) passes, so the consumer keeps consuming.
    const locker = await connectDatabase(db.name)
    cleanups.push(() => locker.end())
    await locker.query('START TRANSACTION')
    await locker.query('INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`) VALUES (?)', [
      [a.event_id, 1, 'lock', '2026-01-01 00:00:00'],
    ])
    const link = await new TcpProxy({ host: broker.host, port: broker.port }).start()
    cleanups.push(() => link.stop())
    const { worker, health } = await startConsumer({ queue, databaseName: db.name, brokerAt: link })
    const requeued = async () => metricValue(await scrape(health), 'consumer_deliveries_requeued_total') ?? 0
    await waitFor(async () => (await requeued()) === 1, { what: "E's fresh copy queued" })

    for (let drop = 1; drop <= 3; drop++) {
      // A, and E's copy (stored, behind A): in hand; E itself was acked with its copy's confirm.
      await waitFor(() => worker.inHand.events >= 2, { what: `A and the copy in hand before drop ${drop}` })
      await link.cut()
      await waitFor(() => worker.inHand.events === 0, { what: `the channel lost at drop ${drop}` })
      await link.restore()
    }
    await waitFor(() => worker.inHand.events >= 2, { what: 'A and the copy in hand again' })
    // Before: E came back after every drop, a delivery more each time, and was copied again: 4.
    expect(await requeued()).toBe(1)

    await locker.query('ROLLBACK')
    await waitFor(async () => (await rowCount(db.name)) === 2, { what: 'A and E stored' })
    await waitFor(async () => (await queueDepth(queue)).ready === 0 && worker.inHand.events === 0, {
      what: 'an empty queue, nothing in hand',
      timeoutMs: 20_000,
    })
    expect(await queueDepth(queue)).toEqual({ ready: 0, dead: 0 })
  }, 90_000)
})

describe('graceful stop', () => {
  it('delivers its final acks: afterwards the queue holds exactly the events not stored', async () => {
    // Small batches make the drain last long enough to be stopped in the middle.
    const { queue, databaseName, worker } = await startConsumer({
      env: { CONSUMER_PREFETCH: '200', CONSUMER_BATCH_SIZE: '20' },
    })
    const total = 5000
    for (let i = 0; i < total; i++) {
      const e = event()
      publisher.publish('', queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
    }
    await publisher.waitForConfirms()
    await waitFor(async () => (await rowCount(databaseName)) >= 200, { what: 'the drain under way', intervalMs: 5 })
    await worker.stop()

    const stored = await rowCount(databaseName)
    expect(stored).toBeLessThan(total)
    // What was stored was acked before the connection closed; the rest is back on the queue.
    await waitFor(async () => (await queueDepth(queue)).ready >= total - stored, { what: 'the unacked requeued' })
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(await queueDepth(queue)).toEqual({ ready: total - stored, dead: 0 })
  })

  it('never acks a batch it gave up on, even when a later batch was stored', async () => {
    // The first batch waits on a row lock the test holds (and fails after 1 s, again and again);
    // the second batch is stored meanwhile. Then the worker stops with the first still unstored.
    const admin = await connectDatabase()
    const [[setting]] = (await admin.query('SELECT @@GLOBAL.innodb_lock_wait_timeout AS seconds')) as unknown as [
      { seconds: number }[],
    ]
    await admin.query('SET GLOBAL innodb_lock_wait_timeout = 1')
    let locker: Awaited<ReturnType<typeof connectDatabase>> | undefined
    try {
      const { queue, databaseName, worker } = await startConsumer({
        env: { CONSUMER_BATCH_SIZE: '10', CONSUMER_RETRY_MAX_MS: '200' },
      })
      const first = Array.from({ length: 10 }, () => event())
      const second = Array.from({ length: 10 }, () => event())
      locker = await connectDatabase(databaseName)
      await locker.beginTransaction()
      await locker.query(
        'INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`, metadata) VALUES (?, 1, ?, NOW(), ?)',
        [first[0]?.event_id, 'lock', '{}'],
      )
      for (const e of [...first, ...second]) {
        publisher.publish('', queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
      }
      await publisher.waitForConfirms()
      await waitFor(async () => (await rowCount(databaseName)) === 10, { what: 'the second batch stored' })

      await worker.stop(300)
      await locker.rollback()
      // The first batch is back on the queue, unstored; the second, stored, is not.
      await waitFor(async () => (await queueDepth(queue)).ready >= 10, { what: 'the first batch requeued' })
      await new Promise((resolve) => setTimeout(resolve, 200))
      expect(await queueDepth(queue)).toEqual({ ready: 10, dead: 0 })

      await startConsumer({ queue, databaseName })
      await waitFor(async () => (await rowCount(databaseName)) === 20, { what: 'all 20 rows' })
      await waitFor(async () => (await queueDepth(queue)).ready === 0, { what: 'an empty queue' })
      expect(new Set((await rows(databaseName)).map((r) => r.event_id))).toEqual(
        new Set([...first, ...second].map((e) => e.event_id)),
      )
    } finally {
      await admin.query('SET GLOBAL innodb_lock_wait_timeout = ?', [setting?.seconds])
      await admin.end()
      await locker?.end()
    }
  })
})

describe('progress', () => {
  it('reports a consumer holding events without progress as unhealthy, and healthy once they move', async () => {
    const { queue, databaseName, health } = await startConsumer({ env: { CONSUMER_STALL_TIMEOUT_MS: '1000' } })
    const locker = await connectDatabase(databaseName)
    try {
      // The database answers pings but every insert waits on the table lock.
      await locker.query('LOCK TABLES user_activities WRITE')
      for (let i = 0; i < 5; i++) await publish(queue, event())
      await waitFor(async () => (await health.inject('/health')).statusCode === 503, { what: '/health 503' })
      expect((await health.inject('/health')).json()).toEqual({
        status: 'unhealthy',
        checks: { rabbitmq: 'up', mysql: 'up', progress: 'stalled', dlq: 'ok' },
      })
    } finally {
      await locker.query('UNLOCK TABLES')
      await locker.end()
    }
    await waitFor(async () => (await rowCount(databaseName)) === 5, { what: 'five rows' })
    await waitFor(async () => (await health.inject('/health')).statusCode === 200, { what: '/health 200' })
    expect((await health.inject('/health')).json()).toEqual({
      status: 'healthy',
      checks: { rabbitmq: 'up', mysql: 'up', progress: 'ok', dlq: 'ok' },
    })
  })
})

describe('broker link lost while the database is down', () => {
  it("drops the dead channel's held batches at once: the new channel's events do not wait out their backoff", async () => {
    const dbProxy = await new TcpProxy({ host: database.host, port: database.port }).start()
    const link = await new TcpProxy({ host: broker.host, port: broker.port }).start()
    cleanups.push(
      () => dbProxy.stop(),
      () => link.stop(),
    )
    const { queue, databaseName, health, worker } = await startConsumer({
      databaseAt: dbProxy,
      brokerAt: link,
      env: { CONSUMER_RETRY_MAX_MS: '60000' },
    })
    let longestBackoffMs = 0
    worker.on('retrying', ({ delayMs }) => (longestBackoffMs = Math.max(longestBackoffMs, delayMs)))
    await dbProxy.cut()
    const sent = Array.from({ length: 1500 }, () => event())
    for (const e of sent) publisher.publish('', queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
    await publisher.waitForConfirms()
    // The batches in hand fail and back off: 0.1, 0.2, ... s, until one sleeps for seconds.
    await waitFor(() => longestBackoffMs >= 3000 && worker.heldBatches > 0, {
      what: 'a held batch in a long backoff',
      timeoutMs: 20_000,
    })

    await link.cut()
    await waitFor(async () => (await health.inject('/health')).json().checks.rabbitmq === 'down', {
      what: 'the link drop noticed',
    })
    // Given up on with their channel, at once: none waits out its backoff, nor holds the
    // batcher's two slots against the new channel's batches.
    expect(worker.heldBatches).toBe(0)
    await dbProxy.restore()
    await link.restore()
    await waitFor(async () => (await rowCount(databaseName)) === sent.length, { what: '1500 rows', timeoutMs: 20_000 })
    await waitFor(async () => (await queueDepth(queue)).ready === 0, { what: 'an empty queue' })
    expect(await queueDepth(queue)).toEqual({ ready: 0, dead: 0 })
  })
})

describe('logs', () => {
  it('sums up what it stored in an info line per interval; a database outage is one line a retry, no stack', async () => {
    const lines: Record<string, unknown>[] = []
    const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) })
    const proxy = await new TcpProxy({ host: database.host, port: database.port }).start()
    cleanups.push(() => proxy.stop())
    const { queue, databaseName } = await startConsumer({ logger, summaryIntervalMs: 200, databaseAt: proxy })
    const sent = Array.from({ length: 30 }, () => event())
    for (const e of [...sent, sent[0] as QueueMessage]) await publish(queue, e)
    await waitFor(async () => (await rowCount(databaseName)) === 30, { what: '30 rows' })
    const summed = () => {
      const summaries = lines.filter((line) => line.msg === 'events stored')
      const sum = (key: string) => summaries.reduce((total, line) => total + Number(line[key]), 0)
      return { stored: sum('stored'), duplicates: sum('duplicates'), deadLettered: sum('deadLettered') }
    }
    await waitFor(() => summed().stored + summed().duplicates === 31, { what: 'the summary lines' })
    expect(summed()).toEqual({ stored: 30, duplicates: 1, deadLettered: 0 })
    expect(lines.filter((line) => line.msg === 'events stored').every((line) => line.level === 30)).toBe(true)

    await proxy.cut()
    await publish(queue, event())
    const retry = await waitFor(() => lines.find((line) => String(line.msg).startsWith('could not store the batch')), {
      what: 'a retry line',
    })
    expect(retry).toMatchObject({ level: 40, error: expect.any(String), attempt: 0, held: 1 })
    expect(JSON.stringify(retry)).not.toContain('stack')
    // The cause is said once, not in a wrapper's message and again in its cause.
    const text = String(retry.error)
    expect(JSON.stringify(retry).split(text).length - 1).toBe(1)
    await proxy.restore()
    await waitFor(async () => (await rowCount(databaseName)) === 31, { what: '31 rows' })
  })
})

describe('metrics', () => {
  it('count stored rows, duplicates, batches, dead letters by kind, and read the queue depths', async () => {
    const { queue, databaseName, health } = await startConsumer()
    const sent = [event(), event(), event()]
    for (const e of [...sent, sent[0] as QueueMessage]) await publish(queue, e)
    await publish(queue, Buffer.from('not JSON'))
    await waitFor(async () => (await rowCount(databaseName)) === 3, { what: 'three rows' })
    await waitFor(
      async () =>
        metricValue(await scrape(health), 'consumer_events_dead_lettered_total', { kind: 'validation' }) === 1,
      {
        what: 'the dead letter counted',
      },
    )
    await waitFor(async () => metricValue(await scrape(health), 'consumer_events_duplicate_total') === 1, {
      what: 'the duplicate counted',
    })
    const text = await scrape(health)
    expect(metricValue(text, 'consumer_events_stored_total')).toBe(3)
    expect(metricValue(text, 'consumer_batches_total')).toBeGreaterThanOrEqual(1)
    expect(metricValue(text, 'consumer_batch_size_sum')).toBe(4)
    expect(metricValue(text, 'consumer_insert_seconds_count')).toBe(metricValue(text, 'consumer_batches_total'))
    expect(metricValue(text, 'consumer_seconds_since_last_store')).toBeLessThan(10)
    expect(metricValue(text, 'consumer_queue_messages', { queue: 'main' })).toBe(0)
    expect(metricValue(text, 'consumer_queue_messages', { queue: 'dead_letter' })).toBe(1)
    expect(metricValue(text, 'process_resident_memory_bytes')).toBeGreaterThan(0)
  })

  it('show a database outage: retries counted, a batch held, then none', async () => {
    const proxy = await new TcpProxy({ host: database.host, port: database.port }).start()
    cleanups.push(() => proxy.stop())
    const { queue, databaseName, health } = await startConsumer({ databaseAt: proxy })
    await proxy.cut()
    try {
      await publish(queue, event())
      await waitFor(async () => (metricValue(await scrape(health), 'consumer_database_retries_total') ?? 0) >= 2, {
        what: 'retries counted',
      })
      expect(metricValue(await scrape(health), 'consumer_batches_held')).toBe(1)
      expect(metricValue(await scrape(health), 'consumer_events_stored_total')).toBe(0)
    } finally {
      await proxy.restore()
    }
    await waitFor(async () => (await rowCount(databaseName)) === 1, { what: 'the row' })
    await waitFor(async () => metricValue(await scrape(health), 'consumer_batches_held') === 0, { what: 'none held' })
    expect(metricValue(await scrape(health), 'consumer_events_stored_total')).toBe(1)
  })
})

describe('what is in hand', () => {
  /** Samples `read` every few ms until `done` resolves; returns the largest value seen. */
  async function peak(read: () => number, done: Promise<unknown>): Promise<number> {
    let max = 0
    let finished = false
    void done.finally(() => (finished = true))
    while (!finished) {
      max = Math.max(max, read())
      await new Promise((resolve) => setTimeout(resolve, 2))
    }
    return max
  }

  /** A queue of the test's own, filled before a worker consumes it (it could take it all at once). */
  async function filledQueue(messages: { body: Buffer; batch: boolean }[]) {
    const queue = uniqueName('consumer_it')
    const channel = await admin.createChannel()
    await assertTopology(channel, topologyFor(queue, 'quorum'))
    cleanups.push(async () => {
      await deleteTopology(channel, topologyFor(queue, 'quorum'))
      await channel.close()
    })
    for (const [i, { body, batch }] of messages.entries()) {
      const properties = batch ? messageProperties(randomUUID(), BATCH_MESSAGE_TYPE) : messageProperties(randomUUID())
      publisher.publish('', queue, body, properties)
      if (i % 500 === 499) await publisher.waitForConfirms()
    }
    await publisher.waitForConfirms()
    return queue
  }

  const single = () => ({ body: Buffer.from(JSON.stringify(event())), batch: false })
  /** A batch message of `count` events of about 1 KB each. */
  const batchOf = (count: number) => ({
    body: Buffer.from(
      JSON.stringify({ events: Array.from({ length: count }, () => event({ metadata: { pad: 'x'.repeat(900) } })) }),
    ),
    batch: true,
  })

  it('holds at most its byte budget when single events give way to 64 KiB batch messages', async () => {
    // 64 KiB is what the producer puts in one message at most. Before, the prefetch had grown
    // to CONSUMER_PREFETCH on the single events, and a whole window of batch messages came.
    const budget = 4 * 1024 * 1024
    const messages = [...Array.from({ length: 3000 }, single), ...Array.from({ length: 200 }, () => batchOf(55))]
    expect(Math.max(...messages.map((m) => m.body.length))).toBeLessThanOrEqual(64 * 1024)
    const queue = await filledQueue(messages)
    const { databaseName, worker } = await startConsumer({ queue, maxInHandBytes: budget })
    const drained = waitFor(async () => (await rowCount(databaseName)) === 3000 + 200 * 55, {
      what: 'every row',
      timeoutMs: 30_000,
    })
    expect(await peak(() => worker.inHand.bytes, drained)).toBeLessThanOrEqual(budget)
    await drained
    await waitFor(async () => (await queueDepth(queue)).ready === 0, { what: 'an empty queue' })
  })

  it('starts small enough for the 1 MiB batch messages of earlier producers at the head of the queue', async () => {
    const budget = 16 * 1024 * 1024
    const queue = await filledQueue([
      ...Array.from({ length: 40 }, () => batchOf(1000)),
      ...Array.from({ length: 500 }, single),
    ])
    const { databaseName, worker } = await startConsumer({ queue, maxInHandBytes: budget })
    const drained = waitFor(async () => (await rowCount(databaseName)) === 40 * 1000 + 500, {
      what: 'every row',
      timeoutMs: 40_000,
    })
    expect(await peak(() => worker.inHand.bytes, drained)).toBeLessThanOrEqual(budget)
    await drained
  })

  it('stays near its byte budget when the events are large', async () => {
    const { queue, databaseName, worker } = await startConsumer({ maxInHandBytes: 1024 * 1024 })
    const sent = Array.from({ length: 300 }, () => event({ metadata: { blob: 'x'.repeat(60_000) } }))
    for (const e of sent) publisher.publish('', queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
    await publisher.waitForConfirms()
    const drained = waitFor(async () => (await rowCount(databaseName)) === 300, { what: '300 rows', timeoutMs: 30_000 })
    // CONSUMER_PREFETCH (1,000) of these would be 18 MB in hand.
    expect(await peak(() => worker.inHand.bytes, drained)).toBeLessThanOrEqual(1024 * 1024)
    await drained
  })
})

describe('a dead-letter queue that refuses or is gone', () => {
  /**
   * Puts a full DLQ in the queue's topology: it refuses every letter (max-length 1, reject-publish,
   * and one letter in it already; a quorum queue takes one message past its limit).
   */
  async function refusingDeadLetterQueue(queue: string) {
    const { deadLetterQueue, deadLetterExchange } = topologyFor(queue, 'quorum')
    const channel = await admin.createConfirmChannel()
    try {
      await channel.deleteQueue(deadLetterQueue)
      await channel.assertQueue(deadLetterQueue, {
        durable: true,
        arguments: { 'x-queue-type': 'quorum', 'x-max-length': 1, 'x-overflow': 'reject-publish' },
      })
      await channel.bindQueue(deadLetterQueue, deadLetterExchange, '')
      for (let i = 0; i < 2; i++) channel.publish(deadLetterExchange, '', Buffer.from(`filler ${i}`))
      await channel.waitForConfirms().catch(() => {}) // the second is nacked: the queue is full
    } finally {
      await channel.close()
    }
  }

  it('holds a refused letter and retries it, while the good events behind it are stored and acked', async () => {
    const { queue, databaseName, worker, health } = await startConsumer()
    await refusingDeadLetterQueue(queue)
    publisher.publish('', queue, Buffer.from('not JSON: refused by the full DLQ'), messageProperties(randomUUID()))
    const good = Array.from({ length: 3000 }, () => event())
    for (const e of good) publisher.publish('', queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
    await publisher.waitForConfirms()

    // Before: the prefetch filled with stored deliveries waiting behind the held one; 999 stored.
    await waitFor(async () => (await rowCount(databaseName)) === 3000, { what: '3000 rows', timeoutMs: 30_000 })
    await waitFor(() => worker.inHand.events === 1, { what: 'only the refused letter in hand', timeoutMs: 10_000 })
    expect((await queueDepth(queue)).ready).toBe(0)
    const unhealthy = await health.inject('/health')
    expect(unhealthy.statusCode).toBe(503)
    expect(unhealthy.json().checks).toMatchObject({ rabbitmq: 'up', mysql: 'up', dlq: 'refusing' })
    const text = await scrape(health)
    expect(metricValue(text, 'consumer_dead_letters_held')).toBe(1)
    expect(metricValue(text, 'consumer_dead_letter_refusals_total')).toBeGreaterThanOrEqual(1)

    // The DLQ takes letters again (the operator removed the limit): the letter lands, once.
    const channel = await admin.createChannel()
    await channel.deleteQueue(`${queue}.dlq`)
    await assertTopology(channel, topologyFor(queue, 'quorum'))
    await channel.close()
    await waitFor(async () => (await queueDepth(queue)).dead === 1, { what: 'the letter in the DLQ' })
    await waitFor(() => worker.inHand.events === 0, { what: 'nothing in hand' })
    await waitFor(async () => (await health.inject('/health')).statusCode === 200, { what: 'healthy again' })
    expect(metricValue(await scrape(health), 'consumer_dead_letters_held')).toBe(0)
    expect((await deadLetterMessages(queue, 1))[0]?.content.toString()).toBe('not JSON: refused by the full DLQ')
  })

  it('declares a deleted DLQ again and queues every letter there before acking the originals', async () => {
    const { databaseName } = await startConsumer()
    const connection = await connectDatabase(databaseName)
    await connection.query('ALTER TABLE user_activities MODIFY event_type VARCHAR(10) NOT NULL')
    await connection.end()
    const { queue, worker } = await startConsumer({ databaseName })
    const channel = await admin.createChannel()
    await channel.deleteQueue(`${queue}.dlq`)
    await channel.close()

    const good = Array.from({ length: 5 }, () => event({ event_type: 'short' }))
    const rejected = event({ event_type: 'much_too_long_for_ten' }) // got a 202: must not be lost
    for (const [i, e] of good.entries()) {
      await publish(queue, e)
      if (i < 3) await publish(queue, Buffer.from(`poison ${i}`))
    }
    await publish(queue, rejected)

    await waitFor(async () => (await rowCount(databaseName)) === 5, { what: 'the five good rows' })
    // Before: the letters went nowhere (published without mandatory) and the originals were acked.
    await waitFor(async () => (await queueDepth(queue).catch(() => ({ dead: -1 }))).dead === 4, {
      what: 'four letters in the DLQ declared again',
      timeoutMs: 15_000,
    })
    await waitFor(() => worker.inHand.events === 0, { what: 'nothing in hand' })
    const letters = await deadLetterMessages(queue, 4)
    expect(letters.map((msg) => msg.properties.headers?.['x-error-kind']).sort()).toEqual([
      'database-rejected',
      'validation',
      'validation',
      'validation',
    ])
    expect(letters.map((msg) => msg.content.toString())).toContain(JSON.stringify(rejected))
  })
})
