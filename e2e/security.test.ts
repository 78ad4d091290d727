// End to end: write keys, a rate limit shared by two producers through Redis, failing open when
// Redis is away, and CORS as a real browser (headless Chromium) sees it.
import { existsSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { deleteTopology, topologyFor } from 'event-contract'
import { broker, connectBroker, metricValue, uniqueName, waitFor } from '../test-support/index.js'
import { freePort, spawnService, type ServiceProcess } from '../test-support/process.js'
import { event, System } from './harness.js'

const producerMain = fileURLToPath(new URL('../producer-service/dist/main.js', import.meta.url))
const redisUrl = process.env.TEST_REDIS_URL || 'redis://127.0.0.1:6379'
const chromium = process.env.CHROMIUM_PATH || '/usr/bin/chromium'

const stops: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop()
})

/** A producer process on a queue of the test's, with `env` on top. */
async function producer(queue: string, env: Record<string, string>) {
  stops.push(async () => {
    const connection = await connectBroker()
    await deleteTopology(await connection.createChannel(), topologyFor(queue, 'quorum'))
    await connection.close()
  })
  const port = await freePort()
  const proc: ServiceProcess = spawnService(producerMain, {
    RABBITMQ_HOST: broker.host,
    RABBITMQ_PORT: String(broker.port),
    RABBITMQ_USER: broker.user,
    RABBITMQ_PASS: broker.pass,
    RABBITMQ_QUEUE: queue,
    HOST: '127.0.0.1',
    PORT: String(port),
    LOG_LEVEL: 'warn',
    ...env,
  })
  stops.push(() => proc.stop())
  const url = `http://127.0.0.1:${port}`
  await waitFor(async () => (await fetch(`${url}/health`)).ok, { what: 'the producer healthy' }).catch((err) => {
    throw new Error(`the producer did not start:\n${proc.output()}`, { cause: err })
  })
  return { url, proc }
}

function post(url: string, key: string, body: unknown = event(0)) {
  return fetch(`${url}/api/v1/events/track`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
  })
}

describe('rate limit shared through Redis', () => {
  it('two producers count one budget per key together', async () => {
    const queue = uniqueName('ratelimit')
    const key = `key-${randomUUID()}` // a fresh bucket in the shared Redis
    const env = { API_KEYS: key, RATE_LIMIT_MAX: '6', RATE_LIMIT_WINDOW_MS: '60000', RATE_LIMIT_REDIS_URL: redisUrl }
    const a = await producer(queue, env)
    const b = await producer(queue, env)
    const statuses: number[] = []
    for (let i = 0; i < 10; i++) statuses.push((await post(i % 2 ? a.url : b.url, key)).status)
    expect(statuses.filter((s) => s === 202)).toHaveLength(6)
    expect(statuses.slice(6)).toEqual([429, 429, 429, 429])
  })

  it('lets requests through when Redis is unreachable, and counts and logs each', async () => {
    const key = `key-${randomUUID()}`
    const { url, proc } = await producer(uniqueName('ratelimit'), {
      API_KEYS: key,
      RATE_LIMIT_MAX: '1',
      RATE_LIMIT_REDIS_URL: 'redis://127.0.0.1:1',
    })
    const statuses: number[] = []
    for (let i = 0; i < 3; i++) statuses.push((await post(url, key)).status)
    expect(statuses).toEqual([202, 202, 202])
    const metrics = await (await fetch(`${url}/metrics`)).text()
    expect(metricValue(metrics, 'producer_rate_limit_store_errors_total')).toBe(3)
    expect(proc.output()).toContain('the rate-limit store (Redis) is unreachable; letting requests through')
  })
})

describe('in a real browser', () => {
  /** A page served from its own origin (127.0.0.1 on another port). */
  async function page(): Promise<string> {
    const server: Server = createServer((request, response) => {
      response.writeHead(200, { 'content-type': 'text/html' })
      response.end('<!doctype html><title>client</title>')
    })
    const port = await freePort()
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
    stops.push(() => new Promise((resolve) => server.close(resolve)))
    return `http://127.0.0.1:${port}`
  }

  it('an allowed origin posts with a key and the event is stored; an unlisted one is blocked', async () => {
    if (!existsSync(chromium)) {
      throw new Error(
        `Chromium is not at ${chromium}: install it (Debian: apt-get install -y chromium) or set CHROMIUM_PATH`,
      )
    }
    const { chromium: launcher } = await import('playwright-core')
    const allowed = await page()
    const unlisted = await page()
    const key = `browser-${randomUUID()}`
    const system = await new System({ producerEnv: { API_KEYS: key, CORS_ORIGINS: allowed } }).start()
    stops.push(() => system.stop())
    const browser = await launcher.launch({
      executablePath: chromium,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-quic',
        '--no-first-run',
        '--disable-component-update',
        '--disable-sync',
      ],
    })
    stops.push(() => browser.close())

    const fetchFrom = async (origin: string, eventId: string) => {
      const tab = await browser.newPage()
      await tab.goto(origin)
      return tab.evaluate(
        async ({ api, key, body }) => {
          try {
            const res = await fetch(`${api}/api/v1/events/track`, {
              method: 'POST',
              headers: { 'Content-Type': 'application/json', 'X-API-Key': key },
              body: JSON.stringify(body),
            })
            return { status: res.status, body: await res.json() }
          } catch (err) {
            return { blocked: String(err) }
          }
        },
        { api: system.api, key, body: { ...event(1), event_id: eventId } },
      )
    }

    const storedId = randomUUID()
    const fromAllowed = await fetchFrom(allowed, storedId)
    expect(fromAllowed).toEqual({ status: 202, body: expect.objectContaining({ event_id: storedId }) })
    const result = await system.settle(new Set([storedId]))
    expect(result.missing).toEqual([])

    const blockedId = randomUUID()
    const fromUnlisted = await fetchFrom(unlisted, blockedId)
    expect(fromUnlisted).toEqual({ blocked: expect.stringContaining('Failed to fetch') })
    // The preflight failed, so the browser never sent the event.
    await new Promise((resolve) => setTimeout(resolve, 500))
    expect(await system.storedIds()).toEqual([storedId])
    expect((await system.queueDepth()).ready).toBe(0)
  })
})
