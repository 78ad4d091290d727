// `npm run bench`: the producer under load next to bare Fastify, and (with the consumer) the
// drain rate. Needs `npm run build` first and the local RabbitMQ (and MySQL/MariaDB).
import amqp from 'amqplib'
import mysql from 'mysql2/promise'
import { assertTopology, deleteTopology, messageProperties, topologyFor, uuidv7 } from 'event-contract'
import { postLoad, root, startService, waitForHttp, type LoadResult } from './lib.js'

const seconds = Number(process.env.BENCH_SECONDS || 10)
const broker = {
  RABBITMQ_HOST: process.env.RABBITMQ_HOST || '127.0.0.1',
  RABBITMQ_PORT: process.env.RABBITMQ_PORT || '5672',
  RABBITMQ_USER: process.env.RABBITMQ_USER || 'guest',
  RABBITMQ_PASS: process.env.RABBITMQ_PASS || 'guest',
}
const db = {
  host: process.env.MYSQL_HOST || '127.0.0.1',
  port: Number(process.env.MYSQL_PORT || 3306),
  user: process.env.TEST_MYSQL_USER || process.env.MYSQL_USER || 'root',
  password: process.env.TEST_MYSQL_PASSWORD ?? process.env.MYSQL_PASSWORD ?? '',
}
const drainEvents = Number(process.env.BENCH_DRAIN_EVENTS || 100_000)
const rows: string[][] = []
const failures: string[] = []

function check(what: string, ok: boolean) {
  if (!ok) failures.push(what)
  return ok ? 'yes' : 'NO'
}

async function load(name: string, args: string[], env: Record<string, string>) {
  const port = String(18_100 + rows.length)
  const service = startService(args, { ...env, PORT: port, HOST: '127.0.0.1' })
  const url = `http://127.0.0.1:${port}`
  await waitForHttp(`${url}/health`)
  await postLoad(url, { seconds: 2 }) // warm-up
  const result: LoadResult = await postLoad(url, { seconds, onTick: () => service.sampleRss() })
  const exitCode = await service.stop()
  rows.push([
    name,
    String(result.requestsPerSecond),
    String(result.p99Ms),
    String(result.other + result.errors),
    service.peakRssMb.toFixed(0),
  ])
  console.log(`${name}: ${JSON.stringify(result)} peak RSS ${service.peakRssMb.toFixed(0)} MB, exit ${exitCode}`)
  return { ...result, rssMb: service.peakRssMb }
}

function connectBroker() {
  return amqp.connect({
    protocol: 'amqp',
    hostname: broker.RABBITMQ_HOST,
    port: Number(broker.RABBITMQ_PORT),
    username: broker.RABBITMQ_USER,
    password: broker.RABBITMQ_PASS,
  })
}

async function withQueue<T>(run: (queue: string) => Promise<T>): Promise<T> {
  const queue = `bench_${Date.now().toString(36)}`
  try {
    return await run(queue)
  } finally {
    const connection = await connectBroker()
    const channel = await connection.createChannel()
    await deleteTopology(channel, topologyFor(queue, 'quorum'))
    await connection.close()
  }
}

const baseline = await load(
  'bare Fastify (validate, 202, no broker)',
  ['--import', 'tsx', 'bench/baseline-server.ts'],
  {},
)
const producer = await withQueue((queue) =>
  load('producer, LOG_LEVEL=warn', ['producer-service/dist/main.js'], { ...broker, RABBITMQ_QUEUE: queue }),
)
const producerInfo = await withQueue((queue) =>
  load('producer, LOG_LEVEL=info (a line per request)', ['producer-service/dist/main.js'], {
    ...broker,
    RABBITMQ_QUEUE: queue,
    LOG_LEVEL: 'info',
  }),
)

/** Fills a queue, then times a fresh consumer storing all of it. */
async function drain(queue: string) {
  const database = `bench_${Date.now().toString(36)}`
  const admin = await mysql.createConnection(db)
  await admin.query(`CREATE DATABASE \`${database}\``)
  try {
    const connection = await connectBroker()
    const channel = await connection.createConfirmChannel()
    await assertTopology(channel, topologyFor(queue, 'quorum'))
    for (let i = 0; i < drainEvents; i++) {
      const eventId = uuidv7()
      const message = {
        event_id: eventId,
        user_id: 1 + (i % 100_000),
        event_type: 'page_view',
        timestamp: new Date(Date.UTC(2026, 1, 20, 10) + i).toISOString(),
        metadata: { page_url: '/products/item-xyz', session_id: 'abc123' },
        received_at: new Date().toISOString(),
      }
      if (!channel.publish('', queue, Buffer.from(JSON.stringify(message)), messageProperties(eventId))) {
        await new Promise((resolve) => channel.once('drain', resolve))
      }
      if (i % 5000 === 4999) await channel.waitForConfirms()
    }
    await channel.waitForConfirms()
    await connection.close()

    const consumer = startService(['consumer-service/dist/main.js'], {
      ...broker,
      RABBITMQ_QUEUE: queue,
      MYSQL_HOST: db.host,
      MYSQL_PORT: String(db.port),
      MYSQL_USER: db.user,
      MYSQL_PASSWORD: db.password,
      MYSQL_DATABASE: database,
      HEALTH_HOST: '127.0.0.1',
      HEALTH_PORT: '18199',
    })
    const count = async () => {
      const [result] = await admin.query<mysql.RowDataPacket[]>(
        `SELECT COUNT(*) AS n FROM \`${database}\`.user_activities`,
      )
      return Number(result[0]?.n)
    }
    let firstAt = 0
    let stored = 0
    const deadline = Date.now() + 300_000
    while (stored < drainEvents && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50))
      stored = await count().catch(() => 0) // the table appears when the consumer starts
      if (stored > 0 && firstAt === 0) firstAt = Date.now()
      consumer.sampleRss()
    }
    const seconds = (Date.now() - firstAt) / 1000
    const exitCode = await consumer.stop()
    const perSecond = Math.round(stored / seconds)
    console.log(`consumer drain: ${stored} rows in ${seconds.toFixed(2)} s, exit ${exitCode}`)
    rows.push([
      `consumer drain (${drainEvents} queued)`,
      String(perSecond),
      '-',
      String(drainEvents - stored),
      consumer.peakRssMb.toFixed(0),
    ])
    return { perSecond, stored, rssMb: consumer.peakRssMb }
  } finally {
    await admin.query(`DROP DATABASE \`${database}\``)
    await admin.end()
  }
}

const consumer = await withQueue(drain)

console.log(`\nBenchmark (${seconds} s at 64 connections, from ${root})\n`)
console.log('| run | accepted/s | p99 ms | non-202 or errors | peak RSS MB |')
console.log('|---|---|---|---|---|')
for (const row of rows) console.log(`| ${row.join(' | ')} |`)
const ratio = producer.requestsPerSecond / baseline.requestsPerSecond
console.log(`\n| target | measured | met |`)
console.log('|---|---|---|')
console.log(`| producer >= 0.45 x bare Fastify | ${ratio.toFixed(2)} | ${check('producer ratio', ratio >= 0.45)} |`)
console.log(`| producer p99 < 25 ms | ${producer.p99Ms} | ${check('producer p99', producer.p99Ms < 25)} |`)
console.log(
  `| producer never fails under load | ${producer.other + producer.errors} | ${check('producer errors', producer.other + producer.errors === 0)} |`,
)
console.log(`| producer RSS < 200 MB | ${producer.rssMb.toFixed(0)} | ${check('producer RSS', producer.rssMb < 200)} |`)
console.log(
  `| consumer drains >= 30,000 events/s | ${consumer.perSecond} | ${check('consumer drain', consumer.perSecond >= 30_000)} |`,
)
console.log(
  `| consumer stores every event | ${consumer.stored} of ${drainEvents} | ${check('consumer stored all', consumer.stored === drainEvents)} |`,
)
console.log(`| consumer RSS < 200 MB | ${consumer.rssMb.toFixed(0)} | ${check('consumer RSS', consumer.rssMb < 200)} |`)
console.log(
  `| logging cost (info vs warn) | ${(100 * (1 - producerInfo.requestsPerSecond / producer.requestsPerSecond)).toFixed(1)}% | - |`,
)
if (failures.length > 0) {
  console.log(`\ntargets missed: ${failures.join(', ')}`)
  process.exit(1)
}
