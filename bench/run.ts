// `npm run bench`: the producer under load next to bare Fastify, and (with the consumer) the
// drain rate. Needs `npm run build` first and the local RabbitMQ (and MySQL/MariaDB).
import amqp from 'amqplib'
import { postLoad, root, startService, waitForHttp, type LoadResult } from './lib.js'

const seconds = Number(process.env.BENCH_SECONDS || 10)
const broker = {
  RABBITMQ_HOST: process.env.RABBITMQ_HOST || '127.0.0.1',
  RABBITMQ_PORT: process.env.RABBITMQ_PORT || '5672',
  RABBITMQ_USER: process.env.RABBITMQ_USER || 'guest',
  RABBITMQ_PASS: process.env.RABBITMQ_PASS || 'guest',
}
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

async function withQueue<T>(run: (queue: string) => Promise<T>): Promise<T> {
  const queue = `bench_${Date.now().toString(36)}`
  try {
    return await run(queue)
  } finally {
    const connection = await amqp.connect({
      protocol: 'amqp',
      hostname: broker.RABBITMQ_HOST,
      port: Number(broker.RABBITMQ_PORT),
      username: broker.RABBITMQ_USER,
      password: broker.RABBITMQ_PASS,
    })
    const channel = await connection.createChannel()
    await channel.deleteQueue(queue)
    await channel.deleteQueue(`${queue}.dlq`)
    await channel.deleteExchange(`${queue}.dlx`)
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
  `| logging cost (info vs warn) | ${(100 * (1 - producerInfo.requestsPerSecond / producer.requestsPerSecond)).toFixed(1)}% | - |`,
)
if (failures.length > 0) {
  console.log(`\ntargets missed: ${failures.join(', ')}`)
  process.exit(1)
}
