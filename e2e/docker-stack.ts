// `npm run test:docker`: the README's Docker path on a real Docker engine. Brings the compose
// stack up on free host ports, checks the seed event lands, runs both services' own tests
// inside their containers, restarts the consumer and stops MySQL for 15 s while posting (no
// event lost), builds and runs both production images (healthy, not root, quick clean stop),
// and always tears everything down. Exits non-zero on the first failure.
import { execFile, spawn } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import mysql from 'mysql2/promise'
import type { RowDataPacket } from 'mysql2/promise'
import { waitFor } from '../test-support/index.js'
import { freePort } from '../test-support/process.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const project = `uat_${randomBytes(3).toString('hex')}`
const run = promisify(execFile)

function step(text: string) {
  console.log(`[test:docker ${new Date().toISOString().slice(11, 19)}] ${text}`)
}

/** Runs a command in the repository; its output streams through. Rejects on a non-zero exit. */
function sh(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, env, stdio: 'inherit' })
    child.on('error', reject)
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`\`${command} ${args.join(' ')}\` exited ${code}`)),
    )
  })
}

async function output(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return (await run(command, args, { cwd: root, env, maxBuffer: 16 * 2 ** 20 })).stdout.trim()
}

/** `docker compose` when the plugin is there, else `docker-compose`. */
async function composeCommand(): Promise<string[]> {
  try {
    await output('docker', ['compose', 'version'])
    return ['docker', 'compose']
  } catch {
    return ['docker-compose']
  }
}

const ports = {
  PRODUCER_HOST_PORT: await freePort(),
  CONSUMER_HOST_PORT: await freePort(),
  RABBITMQ_HOST_PORT: await freePort(),
  RABBITMQ_MANAGEMENT_HOST_PORT: await freePort(),
  MYSQL_HOST_PORT: await freePort(),
}
const env = { ...process.env, ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])) }
const [composeBin, ...composePrefix] = await composeCommand()
const compose = (...args: string[]) => sh(composeBin as string, [...composePrefix, '-p', project, ...args], env)
const composeOut = (...args: string[]) => output(composeBin as string, [...composePrefix, '-p', project, ...args], env)
const api = `http://127.0.0.1:${ports.PRODUCER_HOST_PORT}`
const services = ['rabbitmq', 'mysql', 'producer-service', 'consumer-service']
const productionContainers: string[] = []
const productionImages: string[] = []

async function health(container: string): Promise<string> {
  return output('docker', ['inspect', '--format', '{{if .State.Health}}{{.State.Health.Status}}{{end}}', container])
}

async function containerOf(service: string): Promise<string> {
  return composeOut('ps', '-q', service)
}

async function allHealthy(timeoutMs: number) {
  await waitFor(
    async () => {
      const states = await Promise.all(services.map(async (s) => health(await containerOf(s))))
      return states.every((state) => state === 'healthy')
    },
    { what: 'all four services healthy', timeoutMs, intervalMs: 1000 },
  )
}

async function post(event: Record<string, unknown>): Promise<{ status: number | 'error'; eventId?: string }> {
  try {
    const res = await fetch(`${api}/api/v1/events/track`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(event),
    })
    const body = (await res.json()) as { event_id?: string }
    return { status: res.status, eventId: body.event_id }
  } catch {
    return { status: 'error' }
  }
}

async function storedIds(): Promise<Set<string>> {
  const connection = await mysql.createConnection({
    host: '127.0.0.1',
    port: ports.MYSQL_HOST_PORT,
    user: 'user',
    password: 'user_password',
    database: 'user_activity_db',
  })
  try {
    const [rows] = await connection.query<RowDataPacket[]>('SELECT event_id FROM user_activities')
    return new Set(rows.map((row) => row.event_id as string))
  } finally {
    await connection.end()
  }
}

const seed = {
  user_id: 123,
  event_type: 'page_view',
  timestamp: '2026-02-20T10:00:00Z',
  metadata: { page_url: '/products/item-xyz', session_id: 'abc123' },
}

async function stack() {
  step(`docker compose up --build (project ${project}, host ports ${JSON.stringify(ports)})`)
  await compose('up', '-d', '--build')
  await allHealthy(180_000)

  step('the seed event: 202, then its row')
  const answer = await post(seed)
  if (answer.status !== 202 || !answer.eventId) throw new Error(`the seed event got ${answer.status}`)
  const seedId = answer.eventId
  await waitFor(async () => (await storedIds()).has(seedId), { what: 'the seed row', timeoutMs: 30_000 })

  for (const service of ['producer-service', 'consumer-service']) {
    step(`docker compose exec ${service} npm test`)
    await compose('exec', '-T', service, 'npm', 'test')
  }

  step('a consumer restart and a 15 s MySQL stop while posting: nothing lost')
  const accepted = new Set<string>()
  const statuses = new Map<string, number>()
  let posting = true
  const poster = (async () => {
    for (let i = 0; posting; i++) {
      const outcome = await post({ ...seed, user_id: 1 + i, event_id: randomUUID() })
      statuses.set(String(outcome.status), (statuses.get(String(outcome.status)) ?? 0) + 1)
      if (outcome.status === 202 && outcome.eventId) accepted.add(outcome.eventId)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  })()
  try {
    await new Promise((resolve) => setTimeout(resolve, 2000))
    await compose('restart', 'consumer-service')
    await compose('stop', 'mysql')
    await new Promise((resolve) => setTimeout(resolve, 15_000))
    await compose('start', 'mysql')
    await allHealthy(120_000)
    await new Promise((resolve) => setTimeout(resolve, 2000))
  } finally {
    posting = false
    await poster
  }
  await waitFor(
    async () => {
      const stored = await storedIds()
      return [...accepted].every((id) => stored.has(id))
    },
    { what: `${accepted.size} accepted events stored`, timeoutMs: 120_000 },
  )
  step(`posted ${JSON.stringify(Object.fromEntries(statuses))}; all ${accepted.size} accepted events stored`)
  if (accepted.size === 0) throw new Error('no event was accepted while posting')

  for (const service of ['producer-service', 'consumer-service']) {
    step(`${service}: the production image, healthy as a non-root user, stops cleanly`)
    const image = `${project}-${service}:production`
    await sh('docker', ['build', '-q', '-f', `${service}/Dockerfile`, '-t', image, '.'], env)
    productionImages.push(image)
    const name = `${project}_${service}_production`
    productionContainers.push(name)
    const network = await output('docker', [
      'inspect',
      '--format',
      '{{json .NetworkSettings.Networks}}',
      await containerOf('rabbitmq'),
    ])
    const networkName = Object.keys(JSON.parse(network) as Record<string, unknown>)[0] as string
    await sh('docker', [
      'run',
      '-d',
      '--name',
      name,
      '--network',
      networkName,
      '-e',
      'RABBITMQ_HOST=rabbitmq',
      '-e',
      'MYSQL_HOST=mysql',
      '-e',
      'RABBITMQ_QUEUE=production_image_check',
      image,
    ])
    await waitFor(async () => (await health(name)) === 'healthy', {
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
  await stack()
  step('passed')
} catch (err) {
  failed = true
  console.error(err)
  await compose('ps').catch(report)
  await compose('logs', '--tail', '50').catch(report)
} finally {
  step('tearing down')
  for (const name of productionContainers) await output('docker', ['rm', '-f', name]).catch(report)
  for (const image of productionImages) await output('docker', ['rmi', image]).catch(report)
  await compose('down', '-v', '--remove-orphans').catch((err: unknown) => {
    failed = true
    console.error(err)
  })
}
process.exit(failed ? 1 : 0)
