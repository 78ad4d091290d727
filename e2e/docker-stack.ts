// `npm run test:docker`: the README's Docker path on a real Docker engine. Brings the compose
// stack up on free host ports, checks the seed event lands, runs both services' own tests
// inside their containers, restarts the consumer and stops MySQL for 15 s while posting (no
// event lost), builds and runs both production images (healthy, not root, quick clean stop),
// and always tears everything down. Exits non-zero on the first failure.
import { randomUUID } from 'node:crypto'
import { waitFor } from '../test-support/index.js'
import { ComposeStack, logStep, output, sh } from './compose-stack.js'

const step = logStep('test:docker')
const stack = await new ComposeStack().prepare()
const services = ['rabbitmq', 'mysql', 'producer-service', 'consumer-service']
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
    await new Promise((resolve) => setTimeout(resolve, 15_000))
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

  const network = JSON.parse(
    await output('docker', [
      'inspect',
      '--format',
      '{{json .NetworkSettings.Networks}}',
      (await stack.containersOf('rabbitmq'))[0] as string,
    ]),
  ) as Record<string, unknown>
  for (const service of ['producer-service', 'consumer-service']) {
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
