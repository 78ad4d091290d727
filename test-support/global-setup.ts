// Before any test: the RabbitMQ and MySQL the tests use must answer. If they do not (or when
// TEST_CONTAINERS=1 asks for it), start them with testcontainers from the images
// docker-compose.yml names, and point every test at them through the variables the tests read.
// TEST_SERVICES names what a run needs (default rabbitmq,mysql,redis; the producer's own tests
// need rabbitmq only). Redis, for the shared rate limit, is started only when it does not answer.
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { parse } from 'yaml'
import type { StartedTestContainer } from 'testcontainers'
import { broker, connectBroker, database, redis, waitFor, type Address } from './index.js'

const MYSQL_ROOT_PASSWORD = 'test_root_password'
const STARTED = 'TEST_CONTAINERS_STARTED'

export default async function setup(): Promise<(() => Promise<void>) | undefined> {
  // Each vitest project runs this; the first one decides for all.
  if (process.env[STARTED]) return undefined
  process.env[STARTED] = 'yes'
  const forced = process.env.TEST_CONTAINERS === '1'
  const wanted = (process.env.TEST_SERVICES || 'rabbitmq,mysql,redis').split(',')
  const services = [
    { id: 'rabbitmq', name: 'RabbitMQ', at: broker, start: startRabbitMq, force: forced },
    { id: 'mysql', name: 'MySQL', at: database, start: startMySql, force: forced },
    { id: 'redis', name: 'Redis', at: redis, start: startRedis, force: false },
  ]
  const missing = []
  for (const service of services.filter(({ id }) => wanted.includes(id))) {
    if (service.force || !(await answers(service.at))) missing.push(service)
  }
  if (missing.length === 0) return undefined
  if (!forced) {
    const names = missing.map(({ name, at }) => `${name} at ${at.host}:${at.port}`).join(' and ')
    console.log(`[test services] ${names} does not answer: starting it with testcontainers`)
  }

  const started: StartedTestContainer[] = []
  const stopAll = async () => {
    await Promise.all(started.map((container) => container.stop()))
  }
  try {
    const images = composeImages()
    await Promise.all(missing.map(async (service) => started.push(await service.start(images))))
  } catch (err) {
    await stopAll()
    throw new Error(
      'RabbitMQ or MySQL is not reachable, and testcontainers could not start it. Start them yourself ' +
        '(README.md, "Tests"), or give the tests a Docker engine; where no image registry is reachable, ' +
        'set TESTCONTAINERS_RYUK_DISABLED=true.',
      { cause: err },
    )
  }
  console.log(
    `[test services] ${missing.map(({ name, at }) => `${name} at ${at.host}:${at.port}`).join(', ')} in containers`,
  )
  return stopAll
}

type Images = { rabbitmq: string; mysql: string; redis: string }

/** The images of the compose file: the tests run against what `docker compose up` runs. */
function composeImages(): Images {
  const compose = parse(readFileSync(new URL('../docker-compose.yml', import.meta.url), 'utf8'))
  const { rabbitmq, mysql, redis } = compose.services
  return { rabbitmq: rabbitmq.image, mysql: mysql.image, redis: redis.image }
}

async function startRedis(images: Images): Promise<StartedTestContainer> {
  const { GenericContainer, Wait } = await import('testcontainers')
  const container = await new GenericContainer(images.redis)
    .withExposedPorts(6379)
    .withWaitStrategy(Wait.forListeningPorts())
    .start()
  const url = `redis://${container.getHost()}:${container.getMappedPort(6379)}`
  Object.assign(process.env, { TEST_REDIS_URL: url })
  Object.assign(redis, { host: container.getHost(), port: container.getMappedPort(6379) })
  return container
}

async function startRabbitMq(images: Images): Promise<StartedTestContainer> {
  const { GenericContainer, Wait } = await import('testcontainers')
  const container = await new GenericContainer(images.rabbitmq)
    .withExposedPorts(5672)
    .withWaitStrategy(Wait.forListeningPorts())
    .withStartupTimeout(120_000)
    .start()
  const id = container.getId()
  Object.assign(process.env, {
    RABBITMQ_HOST: container.getHost(),
    RABBITMQ_PORT: String(container.getMappedPort(5672)),
    RABBITMQ_USER: 'guest',
    RABBITMQ_PASS: 'guest',
    // The fault suite restarts the broker: inside its container.
    TEST_RABBITMQ_STOP: `docker exec ${id} rabbitmqctl stop_app`,
    TEST_RABBITMQ_START: `docker exec ${id} sh -c 'rabbitmqctl start_app && rabbitmqctl await_startup'`,
    // The topology tests read what the broker holds (list_queues) and set a policy of their own.
    TEST_RABBITMQCTL: `docker exec ${id} rabbitmqctl`,
  })
  Object.assign(broker, {
    host: container.getHost(),
    port: container.getMappedPort(5672),
    user: 'guest',
    pass: 'guest',
  })
  // A listening port is not a booted broker.
  return ready(container, 'RabbitMQ', async () => (await connectBroker()).close())
}

async function startMySql(images: Images): Promise<StartedTestContainer> {
  const { GenericContainer, Wait } = await import('testcontainers')
  const container = await new GenericContainer(images.mysql)
    .withEnvironment({ MYSQL_ROOT_PASSWORD, MYSQL_ROOT_HOST: '%' })
    .withExposedPorts(3306)
    .withWaitStrategy(Wait.forListeningPorts())
    .withStartupTimeout(120_000)
    .start()
  Object.assign(process.env, {
    MYSQL_HOST: container.getHost(),
    MYSQL_PORT: String(container.getMappedPort(3306)),
    TEST_MYSQL_USER: 'root',
    TEST_MYSQL_PASSWORD: MYSQL_ROOT_PASSWORD,
  })
  Object.assign(database, {
    host: container.getHost(),
    port: container.getMappedPort(3306),
    user: 'root',
    password: MYSQL_ROOT_PASSWORD,
  })
  // The image initialises the database before it serves the tests' login.
  const { connectDatabase } = await import('./database.js')
  return ready(container, 'MySQL', async () => (await connectDatabase()).end())
}

/** Waits until `probe` succeeds against the container; stops it if that never happens. */
async function ready(container: StartedTestContainer, name: string, probe: () => Promise<void>) {
  try {
    await waitFor(async () => probe().then(() => true), { what: `${name} in its container`, timeoutMs: 120_000 })
    return container
  } catch (err) {
    await container.stop()
    throw err
  }
}

/** True when something accepts a TCP connection at the address (within a second). */
function answers({ host, port }: Address): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, timeout: 1000 })
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.once('connect', () => done(true))
    socket.once('timeout', () => done(false))
    socket.once('error', () => done(false))
  })
}
