// `npm run test:docker`: the README's Docker path on a real Docker engine. Brings the compose
// stack up on free host ports, checks the seed event lands and reads it back through the query
// service (with a read key; 401 without), runs the producer's and consumer's own tests inside
// their containers, restarts the consumer and stops MySQL for 15 s while posting (no event lost;
// the query service 503 meanwhile), reads through a replica (the replica profile: within 1 s of
// the primary; 503 with the replica stopped), builds and runs the three production images
// (healthy, not root, quick clean stop), and always tears everything down. Exits non-zero on the
// first failure.
import { randomUUID } from 'node:crypto'
import { waitFor } from '../test-support/index.js'
import { ComposeStack, logStep, output, sh } from './compose-stack.js'

const step = logStep('test:docker')
const stack = await new ComposeStack().prepare()
const services = ['rabbitmq', 'mysql', 'producer-service', 'consumer-service', 'query-service']
const READ_KEY = `read-${randomUUID()}`
stack.env.QUERY_API_KEYS = READ_KEY

/** GET on the query service's published port, with the read key, another `key`, or none (null). */
async function read(path: string, key: string | null = READ_KEY) {
  const response = await fetch(`http://127.0.0.1:${stack.ports.QUERY_HOST_PORT}${path}`, {
    headers: key ? { authorization: `Bearer ${key}` } : {},
    signal: AbortSignal.timeout(10_000),
  })
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}
const productionContainers: string[] = []
const productionImages: string[] = []

const seed = {
  user_id: 123,
  event_type: 'page_view',
  timestamp: '2026-02-20T10:00:00Z',
  metadata: { page_url: '/products/item-xyz', session_id: 'abc123' },
}

async function run() {
  step(`docker compose up --build (project ${stack.project}, host ports ${JSON.stringify(stack.ports)})`)
  await stack.compose('up', '-d', '--build')
  await stack.healthy(services, 180_000)

  step('the seed event: 202, then its row')
  const answer = await stack.post(seed)
  if (answer.status !== 202) throw new Error(`the seed event got ${answer.status}`)
  await stack.settle(new Set(answer.eventIds), 30_000)

  step('the seed event read back through the query service: with a read key, and 401 without')
  const stored = await read(`/api/v1/events/${answer.eventIds[0]}`)
  if (stored.status !== 200 || stored.body.user_id !== seed.user_id) {
    throw new Error(`GET of the seed event: ${stored.status} ${JSON.stringify(stored.body)}`)
  }
  const timeline = await read(`/api/v1/users/${seed.user_id}/events`)
  if (timeline.status !== 200 || !(timeline.body.events as unknown[]).length) {
    throw new Error(`the seed user's timeline: ${timeline.status} ${JSON.stringify(timeline.body)}`)
  }
  const closed = await read(`/api/v1/users/${seed.user_id}/events`, null)
  if (closed.status !== 401) throw new Error(`the timeline without a key answered ${closed.status}`)

  for (const service of ['producer-service', 'consumer-service']) {
    step(`docker compose exec ${service} npm test`)
    await stack.compose('exec', '-T', service, 'npm', 'test')
  }

  step('a consumer restart and a 15 s MySQL stop while posting: nothing lost')
  const accepted = new Set<string>()
  const statuses = new Map<string, number>()
  let posting = true
  const poster = (async () => {
    for (let i = 0; posting; i++) {
      const outcome = await stack.post({ ...seed, user_id: 1 + i, event_id: randomUUID() })
      statuses.set(String(outcome.status), (statuses.get(String(outcome.status)) ?? 0) + 1)
      if (outcome.status === 202) for (const id of outcome.eventIds) accepted.add(id)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  })()
  try {
    await new Promise((resolve) => setTimeout(resolve, 2000))
    await stack.compose('restart', 'consumer-service')
    await stack.compose('stop', 'mysql')
    await new Promise((resolve) => setTimeout(resolve, 5_000))
    const during = await read(`/api/v1/users/${seed.user_id}/events`)
    if (during.status !== 503) throw new Error(`the query service answered ${during.status} with MySQL stopped`)
    await new Promise((resolve) => setTimeout(resolve, 10_000))
    await stack.compose('start', 'mysql')
    await stack.healthy(services, 120_000)
    await new Promise((resolve) => setTimeout(resolve, 2000))
  } finally {
    posting = false
    await poster
  }
  if (accepted.size === 0) throw new Error('no event was accepted while posting')
  const { duplicated } = await stack.settle(accepted)
  step(`posted ${JSON.stringify(Object.fromEntries(statuses))}; all ${accepted.size} accepted events stored`)
  if (duplicated > 0) throw new Error(`${duplicated} events stored twice`)

  await replica()

  const network = JSON.parse(
    await output('docker', [
      'inspect',
      '--format',
      '{{json .NetworkSettings.Networks}}',
      (await stack.containersOf('rabbitmq'))[0] as string,
    ]),
  ) as Record<string, unknown>
  for (const service of ['producer-service', 'consumer-service', 'query-service']) {
    step(`${service}: the production image, healthy as a non-root user, stops cleanly`)
    const image = `${stack.project}-${service}:production`
    await sh('docker', ['build', '-q', '-f', `${service}/Dockerfile`, '-t', image, '.'], stack.env)
    productionImages.push(image)
    const name = `${stack.project}_${service}_production`
    productionContainers.push(name)
    await sh('docker', [
      ...['run', '-d', '--name', name, '--network', Object.keys(network)[0] as string],
      ...['-e', 'RABBITMQ_HOST=rabbitmq', '-e', 'MYSQL_HOST=mysql', '-e', 'RABBITMQ_QUEUE=production_image_check'],
      image,
    ])
    await waitFor(async () => (await stack.health(name)) === 'healthy', {
      what: `${name} healthy`,
      timeoutMs: 90_000,
      intervalMs: 1000,
    })
    const uid = await output('docker', ['exec', name, 'id', '-u'])
    if (uid === '0') throw new Error(`${name} runs as root`)
    const stopped = Date.now()
    await output('docker', ['stop', '-t', '10', name])
    const seconds = (Date.now() - stopped) / 1000
    const exitCode = await output('docker', ['inspect', '--format', '{{.State.ExitCode}}', name])
    step(`${service}: healthy as uid ${uid}, stopped in ${seconds.toFixed(1)} s with exit code ${exitCode}`)
    if (exitCode !== '0' || seconds > 10) throw new Error(`${name} did not stop cleanly`)
  }
}

/**
 * The replica profile: the query service reads mysql-replica, a replica by the servers' own
 * replication; a row on the primary is readable through it within 1 s, and with the replica
 * stopped the query service answers 503, not stale or wrong data.
 */
async function replica() {
  step('the replica profile: the query service reads a replica of mysql')
  stack.env.MYSQL_READ_HOST = 'mysql-replica'
  await stack.compose('--profile', 'replica', 'up', '-d')
  await stack.healthy(['mysql-replica', 'query-service'], 180_000)
  const first = await stack.post({ ...seed, event_id: randomUUID() })
  await waitFor(async () => (await read(`/api/v1/events/${first.eventIds[0]}`)).status === 200, {
    what: 'the replica set up and replicating',
    timeoutMs: 120_000,
    intervalMs: 500,
  })
  const lags: number[] = []
  for (let i = 0; i < 5; i++) {
    const answer = await stack.post({ ...seed, user_id: 1000 + i, event_id: randomUUID() })
    await stack.settle(new Set(answer.eventIds), 30_000) // on the primary
    const onPrimary = Date.now()
    await waitFor(async () => (await read(`/api/v1/events/${answer.eventIds[0]}`)).status === 200, {
      what: 'the row through the replica',
      timeoutMs: 10_000,
      intervalMs: 20,
    })
    lags.push(Date.now() - onPrimary)
  }
  step(`the replica: rows readable through the query service ${lags.join(', ')} ms after the primary had them`)
  if (Math.max(...lags) > 1000) throw new Error(`a row took ${Math.max(...lags)} ms to reach the replica`)

  await stack.compose('stop', 'mysql-replica')
  const stopped = await read(`/api/v1/users/${seed.user_id}/events`)
  step(`the replica stopped: the query service answers ${stopped.status}`)
  if (stopped.status !== 503) throw new Error(`with the replica stopped the query service answered ${stopped.status}`)
}

/** Best effort while tearing down or reporting: say what failed and go on. */
const report = (err: unknown) => console.error(`[test:docker] ${(err as Error).message ?? err}`)

let failed = false
try {
  await run()
  step('passed')
} catch (err) {
  failed = true
  console.error(err)
  await stack.compose('ps').catch(report)
  await stack.compose('logs', '--tail', '50').catch(report)
} finally {
  step('tearing down')
  for (const name of productionContainers) await output('docker', ['rm', '-f', name]).catch(report)
  for (const image of productionImages) await output('docker', ['rmi', image]).catch(report)
  await stack.down().catch((err: unknown) => {
    failed = true
    report(err)
  })
}
process.exit(failed ? 1 : 0)
