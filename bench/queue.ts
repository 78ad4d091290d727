// The queue's side of `npm run bench`: events as the producer publishes them, the bare publish,
// consume and insert ceilings, and a consumer of the project's timed draining a filled queue.
import mysql from 'mysql2/promise'
import { readFileSync } from 'node:fs'
import { BATCH_MESSAGE_TYPE, messageProperties, uuidv7, type QueueMessage } from 'event-contract'
import { toRow } from '../consumer-service/src/store.js'
import { root, startService } from './lib.js'
import { broker, connectBroker, consumerArgs, consumerMysqlEnv, db, waitForRows, withDatabase } from './setup.js'

/** One line of the benchmark's table. */
export interface Row {
  run: string
  perSecond: number
  unit: string
  p99Ms?: number
  failures?: number
  rssMb?: number
}

function event(i: number, metadataBytes = 0): QueueMessage {
  return {
    event_id: uuidv7(),
    user_id: 1 + (i % 100_000),
    event_type: 'page_view',
    timestamp: new Date(Date.UTC(2026, 1, 20, 10) + i).toISOString(),
    metadata: metadataBytes
      ? { blob: 'x'.repeat(metadataBytes) }
      : { page_url: '/products/item-xyz', session_id: 'abc123' },
    received_at: new Date().toISOString(),
  }
}

/** Publishes `count` messages of `perMessage` events each, with confirms, as fast as it can. */
async function fill(queue: string, count: number, perMessage = 1, metadataBytes = 0) {
  const connection = await connectBroker()
  const channel = await connection.createConfirmChannel()
  for (let i = 0; i < count; i++) {
    const events = Array.from({ length: perMessage }, (_, j) => event(i * perMessage + j, metadataBytes))
    const body = perMessage === 1 ? events[0] : { events }
    const properties =
      perMessage === 1
        ? messageProperties((events[0] as QueueMessage).event_id)
        : messageProperties(uuidv7(), BATCH_MESSAGE_TYPE)
    if (!channel.publish('', queue, Buffer.from(JSON.stringify(body)), properties)) {
      await new Promise((resolve) => channel.once('drain', resolve))
    }
    if (i % 5000 === 4999) await channel.waitForConfirms()
  }
  await channel.waitForConfirms()
  await connection.close()
}

/** Ceiling: bare amqplib, one persistent message per event, confirms, 1,000 in flight. */
export async function barePublish(queue: string, seconds: number): Promise<Row> {
  const connection = await connectBroker()
  const channel = await connection.createConfirmChannel()
  const body = Buffer.from(JSON.stringify(event(0)))
  const deadline = Date.now() + seconds * 1000
  let confirmed = 0
  await Promise.all(
    Array.from({ length: 1000 }, async () => {
      while (Date.now() < deadline) {
        await new Promise<void>((resolve, reject) =>
          channel.publish('', queue, body, messageProperties(uuidv7()), (err) => (err ? reject(err) : resolve())),
        )
        confirmed++
      }
    }),
  )
  await connection.close()
  return {
    run: 'bare amqplib publish, 1 message per event, confirms, 1,000 in flight',
    perSecond: Math.round(confirmed / seconds),
    unit: 'messages',
  }
}

/** Ceiling: bare amqplib consume and ack of a queue filled with `messages`, prefetch 2,000. */
export async function bareConsume(queue: string, messages: number): Promise<Row> {
  await fill(queue, messages)
  const connection = await connectBroker()
  const channel = await connection.createChannel()
  await channel.prefetch(2000)
  const started = Date.now()
  let received = 0
  await new Promise<void>((resolve) => {
    void channel.consume(queue, (msg) => {
      if (!msg) return
      channel.ack(msg)
      if (++received === messages) resolve()
    })
  })
  const perSecond = Math.round(received / ((Date.now() - started) / 1000))
  await connection.close()
  return { run: 'bare amqplib consume + ack, prefetch 2,000', perSecond, unit: 'messages' }
}

/** Ceiling: bare mysql2, multi-row INSERTs of 500 rows into the project's table. */
export async function bareInsert(rows: number): Promise<Row> {
  return withDatabase(async (database) => {
    const connection = await mysql.createConnection({ ...db, database, multipleStatements: true })
    await connection.query(readFileSync(`${root}db/init.sql`, 'utf8'))
    const started = Date.now()
    let inserted = 0
    while (inserted < rows) {
      const batch = Array.from({ length: 500 }, (_, i) => toRow(event(inserted + i)))
      await connection.query(
        'INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`, metadata, received_at) VALUES ? ' +
          'ON DUPLICATE KEY UPDATE event_id = event_id',
        [batch],
      )
      inserted += batch.length
    }
    const perSecond = Math.round(inserted / ((Date.now() - started) / 1000))
    await connection.end()
    return { run: 'bare mysql2 INSERT, 500 rows a statement', perSecond, unit: 'rows' }
  })
}

/** Fills a queue with `events`, then times a fresh consumer storing all of it. */
export async function drain(
  run: string,
  queue: string,
  {
    events,
    perMessage = 1,
    metadataBytes = 0,
    env = {} as Record<string, string>,
  }: {
    events: number
    perMessage?: number
    metadataBytes?: number
    env?: Record<string, string>
  },
): Promise<Row & { stored: number }> {
  return withDatabase(async (database, admin) => {
    await fill(queue, Math.ceil(events / perMessage), perMessage, metadataBytes)
    const total = Math.ceil(events / perMessage) * perMessage
    const consumer = startService(consumerArgs(), {
      ...broker,
      ...consumerMysqlEnv(database),
      RABBITMQ_QUEUE: queue,
      HEALTH_HOST: '127.0.0.1',
      HEALTH_PORT: '18199',
      ...env,
    })
    const took = await waitForRows(admin, database, total, { onTick: () => consumer.sampleRss() })
    // Counted once, at the end.
    const count = async () => {
      const [[counted]] = await admin.query<mysql.RowDataPacket[]>(
        `SELECT COUNT(*) AS n FROM \`${database}\`.user_activities`,
      )
      return Number(counted?.n ?? 0)
    }
    const stored = took !== undefined ? await count() : 0
    const perSecond = took !== undefined ? Math.round(stored / took) : 0
    await consumer.stop()
    return { run, perSecond, unit: 'rows', failures: total - stored, rssMb: consumer.peakRssMb, stored }
  })
}
