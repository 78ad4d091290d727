// `npm run bench`: every figure of the project next to its ceiling, measured in the same run.
// Producer (/track and /batch) against a minimal Fastify-plus-confirm server and a bare amqplib
// publish loop; consumer (single-event and batch messages) against a bare consume-and-ack loop
// and a bare 500-row insert loop. Needs `npm run build` first, RabbitMQ and MySQL/MariaDB.
import { batchBody, postLoad, root, startService, waitForHttp, type LoadResult } from './lib.js'
import { clientBench } from './client.js'
import { purgeBench } from './lifecycle.js'
import { queryBench } from './query.js'
import { bareConsume, bareInsert, barePublish, drain, type Row } from './queue.js'
import { broker, consumerArgs, withQueue } from './setup.js'

const seconds = Number(process.env.BENCH_SECONDS || 10)
const drainEvents = Number(process.env.BENCH_DRAIN_EVENTS || 100_000)
const BATCH_SIZE = 100
/** Events near the 64 KiB limit, for the consumer's memory under its largest messages. */
const LARGE_EVENTS = 5000
const LARGE_METADATA_BYTES = 60_000
const CONSUMER = consumerArgs()

const rows: Row[] = []
function record<T extends Row>(row: T): T {
  rows.push(row)
  console.log(`${row.run}: ${row.perSecond} ${row.unit}/s${row.p99Ms !== undefined ? `, p99 ${row.p99Ms} ms` : ''}`)
  return row
}

/** Loads an HTTP server of the project's (started with `args`) with autocannon. */
async function load(
  run: string,
  args: string[],
  env: Record<string, string>,
  options: {
    connections?: number
    path?: string
    body?: string
    eventsPerRequest?: number
    /** Scrape GET /metrics once a second during the load, as a (busy) Prometheus would. */
    scrape?: boolean
  } = {},
): Promise<Row & LoadResult> {
  const port = String(18_100 + rows.length)
  const service = startService(args, { ...env, PORT: port, HOST: '127.0.0.1' })
  const url = `http://127.0.0.1:${port}`
  await waitForHttp(`${url}/health`)
  await postLoad(url, { ...options, seconds: 2 }) // warm-up
  let ticks = 0
  const onTick = () => {
    service.sampleRss()
    if (options.scrape && ticks++ % 4 === 0) void fetch(`${url}/metrics`).then((res) => res.text())
  }
  const result = await postLoad(url, { ...options, seconds, onTick })
  await service.stop()
  const perRequest = options.eventsPerRequest ?? 1
  return {
    ...result,
    ...record({
      run,
      perSecond: result.requestsPerSecond * perRequest,
      unit: 'events',
      p99Ms: result.p99Ms,
      failures: result.other + result.errors,
      rssMb: service.peakRssMb,
    }),
  }
}

const producerEnv = (queue: string) => ({ ...broker, RABBITMQ_QUEUE: queue })
const bareFastify = await load(
  'bare Fastify: validate, 202, no broker',
  ['--import', 'tsx', 'bench/baseline-server.ts'],
  {},
)
const confirmServer = await withQueue((queue) =>
  load(
    'minimal Fastify + 1 confirmed publish a request',
    ['--import', 'tsx', 'bench/confirm-server.ts'],
    producerEnv(queue),
  ),
)
const producer = await withQueue((queue) =>
  load(
    'producer /track, LOG_LEVEL=warn, metrics scraped every second',
    ['producer-service/dist/main.js'],
    producerEnv(queue),
    {
      scrape: true,
    },
  ),
)
const producerNoMetrics = await withQueue((queue) =>
  load('producer /track, LOG_LEVEL=warn, METRICS_ENABLED=false', ['producer-service/dist/main.js'], {
    ...producerEnv(queue),
    METRICS_ENABLED: 'false',
  }),
)
const producerInfo = await withQueue((queue) =>
  load('producer /track, LOG_LEVEL=info', ['producer-service/dist/main.js'], {
    ...producerEnv(queue),
    LOG_LEVEL: 'info',
  }),
)
const batch = await withQueue((queue) =>
  load(
    `producer /batch, ${BATCH_SIZE}-event batches, 16 connections`,
    ['producer-service/dist/main.js'],
    // 16 batches of 100 in flight take 1,600 slots: the default PUBLISH_MAX_IN_FLIGHT (1,000)
    // would answer some of them 503.
    { ...producerEnv(queue), PUBLISH_MAX_IN_FLIGHT: '2000' },
    {
      connections: 16,
      path: '/api/v1/events/batch',
      body: batchBody(BATCH_SIZE),
      eventsPerRequest: BATCH_SIZE,
    },
  ),
)
const publishCeiling = record(await withQueue((queue) => barePublish(queue, seconds)))
const consumeCeiling = record(await withQueue((queue) => bareConsume(queue, drainEvents)))
const insertCeiling = record(await bareInsert(drainEvents))
const drainSingle = record(
  await withQueue((queue) =>
    drain(`consumer drain, ${drainEvents} single-event messages`, queue, { events: drainEvents }),
  ),
)
const drainBatch = record(
  await withQueue((queue) =>
    drain(`consumer drain, ${drainEvents} events in ${BATCH_SIZE}-event messages`, queue, {
      events: drainEvents,
      perMessage: BATCH_SIZE,
    }),
  ),
)
// The counts kept in each INSERT's transaction, against the same drain without them: best of two
// each, alternated, as the machine's noise is of the size measured.
const countsRuns: Record<'with' | 'without', number[]> = { with: [drainBatch.perSecond], without: [] }
for (const [kind, keep] of [
  ['without', 'false'],
  ['with', 'true'],
  ['without', 'false'],
] as const) {
  const row = record(
    await withQueue((queue) =>
      drain(`consumer drain, ${BATCH_SIZE}-event messages, CONSUMER_KEEP_COUNTS=${keep}`, queue, {
        events: drainEvents,
        perMessage: BATCH_SIZE,
        env: { CONSUMER_KEEP_COUNTS: keep },
      }),
    ),
  )
  countsRuns[kind].push(row.perSecond)
}
const drainLarge = record(
  await withQueue((queue) =>
    drain(`consumer drain, ${LARGE_EVENTS} events of ${LARGE_METADATA_BYTES / 1000} KB`, queue, {
      events: LARGE_EVENTS,
      metadataBytes: LARGE_METADATA_BYTES,
    }),
  ),
)
const queries = await withQueue((queue) =>
  queryBench({ queue, broker, consumer: CONSUMER, seconds }, Number(process.env.BENCH_QUERY_ROWS || 5_000_000)),
)
for (const [run, figures] of [
  [`query timeline of a random user, ${queries.rows} rows, /batch ingestion running`, queries.timeline],
  ['query stats, 30 days by the hour, /batch ingestion running', queries.stats],
  ['bare mysql2: the timeline SELECT, same table and ingestion', queries.bareTimeline],
  ['bare mysql2: the stats SELECT (rows as arrays, no JSON), same ingestion', queries.bareStats],
] as const) {
  record({ run, perSecond: Math.round(figures.count / seconds), unit: 'queries', p99Ms: figures.p99 })
  console.log(`  p50 ${figures.p50} ms, p99 ${figures.p99} ms`)
}
console.log(
  `  (table of ${queries.rows} rows filled in ${queries.fillSeconds} s; ingestion meanwhile ${queries.ingestedEventsPerSecond} events/s)`,
)

const purge = await withQueue((queue) =>
  purgeBench({ queue, broker, consumer: CONSUMER, seconds }, Number(process.env.BENCH_PURGE_ROWS || 1_000_000)),
)
record({ run: '/batch stored by the consumer, no purge', perSecond: purge.storedWithout, unit: 'rows' })
record({
  run: `/batch stored by the consumer while it purges ${purge.expiredRows} expired rows`,
  perSecond: purge.storedWith,
  unit: 'rows',
})
console.log(`  (${purge.purged} expired rows purged meanwhile; longest row lock wait ${purge.longestLockWaitMs} ms)`)

const viaClient = await withQueue((queue) => clientBench({ producerEnv: producerEnv(queue), port: 18_090, seconds }))
for (const [run, perSecond] of [
  ['/batch driven directly, 100-event bodies, 16 connections', viaClient.direct],
  ['activity-client track() into /batch, gzip off', viaClient.client],
  ['/batch driven directly, the same bodies gzip-compressed', viaClient.directGzip],
  ['activity-client track() into /batch, its defaults (gzip)', viaClient.clientGzip],
] as const) {
  record({ run, perSecond, unit: 'events', failures: run.startsWith('activity') ? viaClient.failed : undefined })
}

console.log(`\nBenchmark (${seconds} s loads, ${drainEvents} events drained; ${root})\n`)
console.log('| run | per second | p99 ms | failures | peak RSS MB |')
console.log('|---|---|---|---|---|')
for (const row of rows) {
  console.log(
    `| ${row.run} | ${row.perSecond} ${row.unit} | ${row.p99Ms ?? '-'} | ${row.failures ?? '-'} | ${row.rssMb?.toFixed(0) ?? '-'} |`,
  )
}

const missed: string[] = []
const targets: [string, string, boolean][] = []
function target(what: string, measured: number, ok: boolean, digits = 2) {
  targets.push([what, measured.toFixed(digits), ok])
  if (!ok) missed.push(what)
}
target(
  'producer /track >= 0.9 x minimal Fastify + confirm',
  producer.perSecond / confirmServer.perSecond,
  producer.perSecond >= 0.9 * confirmServer.perSecond,
)
target(
  'producer /track with metrics >= 0.95 x without',
  producer.perSecond / producerNoMetrics.perSecond,
  producer.perSecond >= 0.95 * producerNoMetrics.perSecond,
)
target('producer /track p99 < 50 ms', producer.p99Ms ?? 0, (producer.p99Ms ?? 0) < 50, 0)
target('producer never fails under load', producer.failures ?? 0, producer.failures === 0 && batch.failures === 0, 0)
target(
  '/batch >= 2 x bare publish ceiling (events/s)',
  batch.perSecond / publishCeiling.perSecond,
  batch.perSecond >= 2 * publishCeiling.perSecond,
)
target(
  'consumer drain >= 0.5 x bare consume + ack',
  drainSingle.perSecond / consumeCeiling.perSecond,
  drainSingle.perSecond >= 0.5 * consumeCeiling.perSecond,
)
target(
  'consumer drains batch messages at least as fast as /batch accepts them',
  drainBatch.perSecond / batch.perSecond,
  drainBatch.perSecond >= batch.perSecond,
)
target(
  'consumer stores every event',
  drainSingle.stored + drainBatch.stored + drainLarge.stored,
  [drainSingle, drainBatch, drainLarge].every((row) => row.failures === 0),
  0,
)
const bestWith = Math.max(...countsRuns.with)
const bestWithout = Math.max(...countsRuns.without)
target(
  'consumer drain with the counts >= 0.9 x without (best of two)',
  bestWith / bestWithout,
  bestWith >= 0.9 * bestWithout,
)
target('query timeline p99 < 25 ms during ingestion', queries.timeline.p99, queries.timeline.p99 < 25, 1)
target('query stats (30 days hourly) p99 < 50 ms during ingestion', queries.stats.p99, queries.stats.p99 < 50, 1)
target(
  'stored rate while purging expired rows >= 0.8 x without',
  purge.storedWith / purge.storedWithout,
  purge.storedWith >= 0.8 * purge.storedWithout && purge.purged > 0,
)
target('no row lock wait over 1 s while purging (ms)', purge.longestLockWaitMs, purge.longestLockWaitMs < 1000, 0)
target(
  'activity-client >= 0.8 x /batch driven directly, uncompressed (events/s)',
  viaClient.client / viaClient.direct,
  viaClient.client >= 0.8 * viaClient.direct && viaClient.failed === 0,
)
target(
  'activity-client >= 0.8 x /batch driven directly, gzip (events/s)',
  viaClient.clientGzip / viaClient.directGzip,
  viaClient.clientGzip >= 0.8 * viaClient.directGzip && viaClient.failed === 0,
)
for (const row of [producer, batch, drainSingle, drainBatch, drainLarge]) {
  target(`${row.run}: RSS < 200 MB`, row.rssMb ?? 0, (row.rssMb ?? 0) < 200, 0)
}
console.log('\n| target | measured | met |')
console.log('|---|---|---|')
for (const [what, measured, ok] of targets) console.log(`| ${what} | ${measured} | ${ok ? 'yes' : 'NO'} |`)
console.log(
  `\nfor reference: bare Fastify ${bareFastify.perSecond}/s; logging a line per request costs ${(100 * (1 - producerInfo.perSecond / producer.perSecond)).toFixed(1)} %; bare 500-row INSERT ${insertCeiling.perSecond} rows/s`,
)
if (missed.length > 0) {
  console.log(`\ntargets missed: ${missed.join('; ')}`)
  process.exit(1)
}
