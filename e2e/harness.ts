// The whole system for end-to-end tests: the built producer and consumer as processes, on a
// queue and a database of the test's own, with the probes the tests judge the promise by.
import { fileURLToPath } from 'node:url'
import type { RowDataPacket } from 'mysql2/promise'
import { deleteTopology, topologyFor } from 'event-contract'
import { broker, connectBroker, uniqueName, waitFor, type Address } from '../test-support/index.js'
import { connectDatabase, countsDrift, createTestDatabase, database } from '../test-support/database.js'
import { freePort, spawnService, type ServiceProcess } from '../test-support/process.js'
export { shippedNodeOptions } from '../test-support/process.js'

const producerMain = fileURLToPath(new URL('../producer-service/dist/main.js', import.meta.url))
const consumerMain = fileURLToPath(new URL('../consumer-service/dist/main.js', import.meta.url))

export interface SystemOptions {
  /** Where each service reaches RabbitMQ and MySQL (a TcpProxy, to cut or slow them). */
  producerBrokerAt?: Address
  consumerBrokerAt?: Address
  databaseAt?: Address
  /** Start the consumer now (default) or later with `startConsumer()`. */
  consumer?: boolean
  consumerEnv?: Record<string, string>
  producerEnv?: Record<string, string>
}

export interface PostOutcome {
  status: number | 'error'
  eventId?: string
  /** A batch's event_ids (202, 500 and 503 carry them). */
  eventIds?: string[]
  body?: unknown
  retryAfter?: string | null
}

export class System {
  readonly queue = uniqueName('e2e')
  api = ''
  producerHealth = ''
  consumerHealth = ''
  producer: ServiceProcess | undefined
  consumer: ServiceProcess | undefined
  databaseName = ''
  readonly #options: SystemOptions
  #dropDatabase: (() => Promise<void>) | undefined
  #consumerEnv: Record<string, string> = {}
  #producerEnv: Record<string, string> = {}

  constructor(options: SystemOptions = {}) {
    this.#options = options
  }

  async start(): Promise<this> {
    const db = await createTestDatabase()
    this.databaseName = db.name
    this.#dropDatabase = db.drop
    const brokerEnv = (at: Address = broker) => ({ RABBITMQ_HOST: at.host, RABBITMQ_PORT: String(at.port) })
    const common = {
      RABBITMQ_USER: broker.user,
      RABBITMQ_PASS: broker.pass,
      RABBITMQ_QUEUE: this.queue,
    }
    const port = await freePort()
    const healthPort = await freePort()
    this.api = `http://127.0.0.1:${port}`
    this.producerHealth = `${this.api}/health`
    this.consumerHealth = `http://127.0.0.1:${healthPort}/health`
    this.#consumerEnv = {
      ...common,
      ...brokerEnv(this.#options.consumerBrokerAt),
      MYSQL_HOST: (this.#options.databaseAt ?? database).host,
      MYSQL_PORT: String((this.#options.databaseAt ?? database).port),
      MYSQL_USER: database.user,
      MYSQL_PASSWORD: database.password,
      MYSQL_DATABASE: db.name,
      HEALTH_HOST: '127.0.0.1',
      HEALTH_PORT: String(healthPort),
      ...this.#options.consumerEnv,
    }
    this.#producerEnv = {
      ...common,
      ...brokerEnv(this.#options.producerBrokerAt),
      HOST: '127.0.0.1',
      PORT: String(port),
      ...this.#options.producerEnv,
    }
    await this.startProducer()
    if (this.#options.consumer !== false) await this.startConsumer()
    return this
  }

  /** Starts the producer (again, after `producer.stop()`: on the same port). */
  async startProducer(): Promise<void> {
    this.producer = spawnService(producerMain, this.#producerEnv)
    await waitFor(() => this.healthy(this.producerHealth), { what: 'the producer to be healthy', timeoutMs: 15_000 })
  }

  /** Starts the consumer; `env` is added to its environment, for this start and the next. */
  async startConsumer(env: Record<string, string> = {}): Promise<void> {
    this.#consumerEnv = { ...this.#consumerEnv, ...env }
    this.consumer = spawnService(consumerMain, this.#consumerEnv)
    await waitFor(() => this.healthy(this.consumerHealth), { what: 'the consumer to be healthy', timeoutMs: 15_000 })
    // Healthy is connected; it subscribes once its write probe succeeded, a moment later (later
    // still on a busy machine): a test that cuts the database next must not cut it before that.
    await waitFor(async () => (await this.queueConsumers()) > 0, { what: 'the consumer subscribed', timeoutMs: 15_000 })
  }

  /**
   * Another consumer process on the same queue and database (its own health port), `env` added;
   * the caller stops it.
   */
  async spawnConsumer(env: Record<string, string> = {}): Promise<ServiceProcess & { health: string }> {
    const health = `http://127.0.0.1:${await freePort()}/health`
    const consumer = spawnService(consumerMain, {
      ...this.#consumerEnv,
      ...env,
      HEALTH_PORT: new URL(health).port,
    })
    await waitFor(() => this.healthy(health), { what: 'the second consumer to be healthy', timeoutMs: 15_000 })
    return Object.assign(consumer, { health })
  }

  /** Consumers subscribed to the queue, as RabbitMQ counts them. */
  async queueConsumers(): Promise<number> {
    const connection = await connectBroker()
    try {
      const channel = await connection.createChannel()
      return (await channel.checkQueue(this.queue)).consumerCount
    } finally {
      await connection.close()
    }
  }

  async healthy(url: string): Promise<boolean> {
    try {
      return (await fetch(url)).status === 200
    } catch {
      return false // not listening: not healthy
    }
  }

  async healthStatus(url: string): Promise<number | 'down'> {
    try {
      return (await fetch(url)).status
    } catch {
      return 'down'
    }
  }

  /** A /health answer: its status and its checks (undefined when nothing answers). */
  async health(url: string): Promise<{ status: number | 'down'; checks?: Record<string, string> }> {
    try {
      const res = await fetch(url)
      return { status: res.status, checks: ((await res.json()) as { checks: Record<string, string> }).checks }
    } catch {
      return { status: 'down' }
    }
  }

  /** Stops both services and removes the queue and the database, whatever state they are in. */
  async stop(): Promise<void> {
    await this.producer?.stop()
    await this.consumer?.stop()
    const connection = await connectBroker()
    const channel = await connection.createChannel()
    await deleteTopology(channel, topologyFor(this.queue, 'quorum'))
    await connection.close()
    await this.#dropDatabase?.()
  }

  async post(
    body: unknown,
    init: { contentType?: string; raw?: string | Buffer; path?: string; headers?: Record<string, string> } = {},
  ): Promise<PostOutcome> {
    try {
      const res = await fetch(`${this.api}${init.path ?? '/api/v1/events/track'}`, {
        method: 'POST',
        headers: { 'content-type': init.contentType ?? 'application/json', ...init.headers },
        body: init.raw ?? JSON.stringify(body),
      })
      const text = await res.text()
      let parsed: unknown = text
      try {
        parsed = JSON.parse(text)
      } catch {
        // not JSON: the caller sees the text
      }
      return {
        status: res.status,
        eventId: (parsed as { event_id?: string })?.event_id,
        eventIds: (parsed as { event_ids?: string[] })?.event_ids,
        body: parsed,
        retryAfter: res.headers.get('retry-after'),
      }
    } catch (err) {
      return { status: 'error', body: (err as Error).cause ?? err }
    }
  }

  /** Posts events as one batch to /api/v1/events/batch. */
  async postBatch(events: unknown[]): Promise<PostOutcome> {
    return this.post({ batch: events }, { path: '/api/v1/events/batch' })
  }

  /** Posts `count` distinct events with `concurrency` clients; returns every outcome. */
  async postMany(count: number, concurrency = 64, make: (i: number) => unknown = event): Promise<PostOutcome[]> {
    const outcomes: PostOutcome[] = new Array(count)
    let next = 0
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < count) {
          const i = next++
          outcomes[i] = await this.post(make(i))
        }
      }),
    )
    return outcomes
  }

  async storedCount(): Promise<number> {
    const connection = await connectDatabase(this.databaseName)
    try {
      const [rows] = await connection.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM user_activities')
      return Number(rows[0]?.n)
    } catch (err) {
      if ((err as { errno?: number }).errno === 1146) return 0 // no table until the consumer starts
      throw err
    } finally {
      await connection.end()
    }
  }

  async storedIds(): Promise<string[]> {
    const connection = await connectDatabase(this.databaseName)
    try {
      const [rows] = await connection.query<RowDataPacket[]>('SELECT event_id FROM user_activities')
      return rows.map((r) => r.event_id as string)
    } catch (err) {
      if ((err as { errno?: number }).errno === 1146) return [] // no table until the consumer starts
      throw err
    } finally {
      await connection.end()
    }
  }

  async queueDepth(): Promise<{ ready: number; dead: number }> {
    const connection = await connectBroker()
    try {
      const channel = await connection.createChannel()
      const ready = (await channel.checkQueue(this.queue)).messageCount
      const dead = (await channel.checkQueue(`${this.queue}.dlq`)).messageCount
      return { ready, dead }
    } finally {
      await connection.close()
    }
  }

  /** Waits until every accepted event is stored; returns what a verdict needs. */
  async settle(accepted: Set<string>, timeoutMs = 60_000) {
    await waitFor(
      async () => {
        const stored = new Set(await this.storedIds())
        return [...accepted].every((id) => stored.has(id))
      },
      { what: `${accepted.size} accepted events stored`, timeoutMs, intervalMs: 200 },
    )
    await waitFor(async () => (await this.queueDepth()).ready === 0, { what: 'an empty queue', timeoutMs })
    return { ...verdict(accepted, await this.storedIds()), countsDrift: await this.countsDrift() }
  }

  /**
   * Where the hourly counts (user_activity_counts) differ from COUNT(*) over the rows, by hour
   * and event type: none, if every INSERT added its counts in its own transaction.
   */
  countsDrift() {
    return countsDrift(this.databaseName)
  }
}

/** The promise, checked: every accepted event_id stored, none twice. */
export function verdict(accepted: Set<string>, storedIds: string[]) {
  const counts = new Map<string, number>()
  for (const id of storedIds) counts.set(id, (counts.get(id) ?? 0) + 1)
  return {
    accepted: accepted.size,
    stored: storedIds.length,
    missing: [...accepted].filter((id) => !counts.has(id)),
    duplicated: [...counts].filter(([, n]) => n > 1).map(([id]) => id),
  }
}

/** The event_ids that got a 202, from single events and batches. */
export function acceptedIds(outcomes: PostOutcome[]): Set<string> {
  const accepted = outcomes.filter((o) => o.status === 202)
  return new Set(accepted.flatMap((o) => o.eventIds ?? (o.eventId ? [o.eventId] : [])))
}

export function event(i: number) {
  return {
    user_id: 1 + (i % 2147483000),
    event_type: i % 3 === 0 ? 'login' : 'page_view',
    timestamp: new Date(Date.UTC(2026, 1, 20, 10) + i).toISOString(),
    metadata: { i, page_url: `/products/${i}` },
  }
}
