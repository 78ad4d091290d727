// The images' commands, run on the host (no Docker engine here): each Dockerfile's production
// stage installs, builds, starts as its CMD, turns healthy by its HEALTHCHECK and stops on
// SIGTERM; its test stage passes its own tests with `npm test`, as `docker compose exec` would.
import { execFile, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { deleteTopology, topologyFor } from 'event-contract'
import { broker, connectBroker, uniqueName, waitFor } from '../test-support/index.js'
import { createTestDatabase, database } from '../test-support/database.js'
import { freePort } from '../test-support/process.js'
import { buildOnHost, type HostImage } from './dockerfile.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const workspace = mkdtempSync(path.join(tmpdir(), 'images-'))
const queues: string[] = []
const databases: Awaited<ReturnType<typeof createTestDatabase>>[] = []

afterAll(async () => {
  rmSync(workspace, { recursive: true, force: true })
  const connection = await connectBroker()
  const channel = await connection.createChannel()
  for (const queue of queues) {
    await deleteTopology(channel, topologyFor(queue, 'quorum'))
  }
  await connection.close()
  for (const db of databases) await db.drop()
})

/** The environment a container would get from compose, pointed at this machine's servers. */
async function serviceEnv(service: string): Promise<Record<string, string>> {
  const queue = uniqueName('image')
  queues.push(queue)
  const env: Record<string, string> = {
    RABBITMQ_HOST: broker.host,
    RABBITMQ_PORT: String(broker.port),
    RABBITMQ_USER: broker.user,
    RABBITMQ_PASS: broker.pass,
    RABBITMQ_QUEUE: queue,
    MYSQL_HOST: database.host,
    MYSQL_PORT: String(database.port),
  }
  if (service === 'producer-service') return { ...env, PORT: String(await freePort()), HOST: '127.0.0.1' }
  const db = await createTestDatabase()
  databases.push(db)
  return {
    ...env,
    MYSQL_USER: database.user,
    MYSQL_PASSWORD: database.password,
    MYSQL_DATABASE: db.name,
    HEALTH_PORT: String(await freePort()),
    HEALTH_HOST: '127.0.0.1',
  }
}

function runHealthcheck(image: HostImage, env: Record<string, string>): Promise<boolean> {
  const [command, ...args] = image.healthcheck ?? []
  if (!command) throw new Error('the image has no HEALTHCHECK')
  return new Promise((resolve) => {
    execFile(command === 'node' ? process.execPath : command, args, { cwd: image.workdir, env }, (err) =>
      resolve(err === null),
    )
  })
}

describe.each(['producer-service', 'consumer-service'])('%s/Dockerfile', (service) => {
  const dockerfile = path.join(root, service, 'Dockerfile')

  it('production stage: production dependencies only; starts, turns healthy, exits 0 on SIGTERM', async () => {
    const image = buildOnHost(dockerfile, 'production', root, path.join(workspace, `${service}-production`))
    const modules = path.join(image.root, 'app', 'node_modules')
    expect(existsSync(path.join(modules, 'fastify'))).toBe(true)
    for (const devOnly of ['typescript', 'vitest', 'eslint', 'tsx']) {
      expect(existsSync(path.join(modules, devOnly)), devOnly).toBe(false)
    }

    const env = { PATH: process.env.PATH ?? '', ...image.env, ...(await serviceEnv(service)), LOG_LEVEL: 'warn' }
    const [command, ...args] = image.cmd
    const child = spawn(command === 'node' ? process.execPath : (command as string), args, {
      cwd: image.workdir,
      env,
      stdio: ['ignore', 'inherit', 'inherit'],
    })
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
    try {
      await waitFor(() => runHealthcheck(image, env), { what: `${service} HEALTHCHECK`, timeoutMs: 20_000 })
    } finally {
      child.kill('SIGTERM')
    }
    expect(await exited).toBe(0)
  }, 180_000)

  it('test stage: `npm test` passes inside it', async () => {
    const image = buildOnHost(dockerfile, 'test', root, path.join(workspace, `${service}-test`))
    const env = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      ...image.env,
      ...(await serviceEnv(service)),
      TEST_MYSQL_USER: database.user,
      TEST_MYSQL_PASSWORD: database.password,
    }
    const result = await new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn('npm', ['test'], { cwd: image.workdir, env, stdio: ['ignore', 'pipe', 'pipe'] })
      let output = ''
      child.stdout.on('data', (chunk) => (output += chunk))
      child.stderr.on('data', (chunk) => (output += chunk))
      child.on('exit', (code) => resolve({ code, output }))
    })
    expect(result.output).toMatch(/Tests\s+.*\d+ passed/)
    expect(result.code, result.output.slice(-3000)).toBe(0)
  }, 240_000)
})
