// `npm run bench:compare -- <checkout A> <checkout B>`: the producer (/track, /batch) and the
// consumer (draining single-event messages) of two built checkouts, alternated round by round on
// the same broker and database, each round's B/A ratio kept: on a machine whose speed drifts by
// tens of percent from minute to minute, paired rounds say what one run each cannot.
import { resolve } from 'node:path'
import { batchBody, postLoad, seedBody, startService, waitForHttp } from './lib.js'
import { broker, connectBroker, consumerArgs, consumerMysqlEnv, waitForRows, withDatabase, withQueue } from './setup.js'

const [a = '', b = ''] = process.argv.slice(2)
if (!a || !b) {
  console.error('usage: npm run bench:compare -- <checkout A> <checkout B> (both built)')
  process.exit(2)
}
const rounds = Number(process.env.BENCH_ROUNDS || 4)
const seconds = Number(process.env.BENCH_SECONDS || 8)
const drainMessages = Number(process.env.BENCH_DRAIN_EVENTS || 50_000)

/** Events a second one checkout's producer accepts on `path`. */
async function producer(checkout: string, path: string, body: string, perRequest: number, connections: number) {
  return withQueue(async (queue) => {
    const service = startService([resolve(checkout, 'producer-service/dist/main.js')], {
      ...broker,
      RABBITMQ_QUEUE: queue,
      PORT: '18300',
      HOST: '127.0.0.1',
      PUBLISH_MAX_IN_FLIGHT: '2000',
    })
    try {
      await waitForHttp('http://127.0.0.1:18300/health')
      await postLoad('http://127.0.0.1:18300', { connections, path, body, seconds: 2 })
      const result = await postLoad('http://127.0.0.1:18300', { connections, path, body, seconds })
      return result.requestsPerSecond * perRequest
    } finally {
      await service.stop()
    }
  }, 'compare')
}

/** Rows a second one checkout's consumer stores, draining `drainMessages` single-event messages. */
async function consumer(checkout: string) {
  return withQueue(async (queue) => {
    const connection = await connectBroker()
    const channel = await connection.createConfirmChannel()
    const seed = JSON.parse(seedBody) as Record<string, unknown>
    for (let i = 0; i < drainMessages; i++) {
      // As the producer publishes it: every time in the canonical form.
      const event = {
        ...seed,
        event_id: crypto.randomUUID(),
        timestamp: new Date(String(seed.timestamp)).toISOString(),
        metadata: {},
        received_at: new Date().toISOString(),
      }
      channel.sendToQueue(queue, Buffer.from(JSON.stringify(event)), { persistent: true, type: 'user_activity.v1' })
      if (i % 1000 === 999) await channel.waitForConfirms()
    }
    await channel.waitForConfirms()
    await connection.close()
    return withDatabase(async (database, admin) => {
      const service = startService(consumerArgs(resolve(checkout, 'consumer-service/dist/main.js')), {
        ...broker,
        ...consumerMysqlEnv(database),
        RABBITMQ_QUEUE: queue,
        HEALTH_HOST: '127.0.0.1',
        HEALTH_PORT: '18301',
        CONSUMER_KEEP_COUNTS: 'false',
      })
      try {
        const took = await waitForRows(admin, database, drainMessages)
        if (took === undefined) throw new Error('the drain did not end within 300 s')
        return Math.round(drainMessages / took)
      } finally {
        await service.stop()
      }
    }, 'compare')
  }, 'compare')
}

const runs: [string, (checkout: string) => Promise<number>][] = [
  ['producer /track events/s', (c) => producer(c, '/api/v1/events/track', seedBody, 1, 64)],
  ['producer /batch events/s', (c) => producer(c, '/api/v1/events/batch', batchBody(100), 100, 16)],
  ['consumer drain rows/s', consumer],
]
function median(values: number[]): number {
  const sorted = [...values].sort((x, y) => x - y)
  const middle = sorted.length / 2
  return Number.isInteger(middle)
    ? ((sorted[middle - 1] ?? NaN) + (sorted[middle] ?? NaN)) / 2
    : (sorted[Math.floor(middle)] ?? NaN)
}
/** BENCH_ONLY: the runs whose name contains it (producer, consumer, /batch, ...). */
const only = process.env.BENCH_ONLY ?? ''
console.log(`\n| run | A (${a}) | B (${b}) | B/A by round | median B/A |\n|---|---|---|---|---|`)
for (const [name, measure] of runs.filter(([name]) => name.includes(only))) {
  const ratios: number[] = []
  const figures: [number[], number[]] = [[], []]
  for (let round = 0; round < rounds; round++) {
    // A then B in even rounds, B then A in odd ones: a drift during a round weighs on both alike.
    const order = round % 2 === 0 ? [0, 1] : [1, 0]
    const measured: number[] = []
    for (const side of order) measured[side] = await measure(side === 0 ? a : b)
    figures[0].push(measured[0] ?? NaN)
    figures[1].push(measured[1] ?? NaN)
    ratios.push((measured[1] ?? NaN) / (measured[0] ?? NaN))
  }
  console.log(
    `| ${name} | ${figures[0].join(', ')} | ${figures[1].join(', ')} | ${ratios.map((r) => r.toFixed(2)).join(', ')} | ${median(ratios).toFixed(2)} |`,
  )
}
