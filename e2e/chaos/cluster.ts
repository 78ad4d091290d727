// The soak's world: private servers, two producers and two consumers each behind its own
// proxies, a supervisor that restarts what the schedule killed, and the samples the verdict needs.
import type { AppProxy } from './app-proxy.js'
import { fileURLToPath } from 'node:url'
import { TcpProxy, metricValue, waitFor } from '../../test-support/index.js'
import {
  freePort,
  rssBytes,
  shippedNodeOptions,
  spawnService,
  type ServiceProcess,
} from '../../test-support/process.js'
import { PrivateMariadb, PrivateRabbit, PrivateRedis } from '../../test-support/private-servers.js'

const producerMain = fileURLToPath(new URL('../../producer-service/dist/main.js', import.meta.url))
const consumerMain = fileURLToPath(new URL('../../consumer-service/dist/main.js', import.meta.url))

export const QUEUE = 'chaos_events'
const MiB = 2 ** 20
/** Node 20's semi-space on 64-bit hosts when --max-semi-space-size is not given. */
const DEFAULT_SEMI_SPACE_MIB = 16
/** What each service holds outside the V8 heap by its default settings (see its config.ts). */
const BYTE_BUDGETS_MIB = {
  // BODY_MAX_IN_FLIGHT_BYTES and PUBLISH_MAX_IN_FLIGHT_BYTES
  producer: 16 + 20,
  // CONSUMER_MAX_IN_HAND_BYTES
  consumer: 32,
}

/**
 * The resident memory a service's own settings allow on top of what it used idle: its old space
 * cap, a young generation of three semi-spaces (two, and as much again for large new objects),
 * and its byte budgets. Read from the flags it ships with, so that the bound follows them.
 */
export function rssAllowance(kind: 'producer' | 'consumer'): number {
  const flags = shippedNodeOptions(`${kind}-service`)
  const flag = (name: string) => Number(new RegExp(`--${name}=(\\d+)`).exec(flags)?.[1] ?? NaN)
  const oldSpace = flag('max-old-space-size')
  if (!Number.isFinite(oldSpace)) throw new Error(`${kind}: its start script sets no --max-old-space-size`)
  const semiSpace = Number.isFinite(flag('max-semi-space-size')) ? flag('max-semi-space-size') : DEFAULT_SEMI_SPACE_MIB
  return (oldSpace + 3 * semiSpace + BYTE_BUDGETS_MIB[kind]) * MiB
}

/** Something a service did that the schedule did not ask for, or did wrong. */
export interface Incident {
  at: number
  service: string
  what: string
  output: string
}

export class Service {
  process: ServiceProcess | undefined
  /** The schedule's signals in flight: an exit that follows one is expected. */
  expectedExit: NodeJS.Signals | undefined
  maxRss = 0
  /** RSS once it first answered healthy, before any load: code, modules, native buffers. */
  idleRss = 0
  restarts = 0
  readonly brokerLink: TcpProxy
  readonly databaseLink: TcpProxy | undefined
  port = 0
  readonly #cluster: Cluster

  constructor(
    readonly name: string,
    readonly kind: 'producer' | 'consumer',
    cluster: Cluster,
    brokerLink: TcpProxy,
    databaseLink?: TcpProxy,
  ) {
    this.#cluster = cluster
    this.brokerLink = brokerLink
    this.databaseLink = databaseLink
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  get alive(): boolean {
    const child = this.process?.child
    return !!child && child.exitCode === null && child.signalCode === null
  }

  async start(): Promise<void> {
    this.port ||= await freePort()
    const c = this.#cluster
    const broker = {
      RABBITMQ_HOST: '127.0.0.1',
      RABBITMQ_PORT: String(this.brokerLink.port),
      RABBITMQ_USER: 'guest',
      RABBITMQ_PASS: 'guest',
      RABBITMQ_QUEUE: QUEUE,
    }
    const env =
      this.kind === 'producer'
        ? {
            ...broker,
            NODE_OPTIONS: shippedNodeOptions('producer-service'),
            HOST: '127.0.0.1',
            PORT: String(this.port),
            RATE_LIMIT_MAX: '10000000',
            RATE_LIMIT_REDIS_URL: c.redis.url,
          }
        : {
            ...broker,
            NODE_OPTIONS: shippedNodeOptions('consumer-service'),
            MYSQL_HOST: '127.0.0.1',
            MYSQL_PORT: String(this.databaseLink?.port),
            MYSQL_USER: c.mariadb.user.user,
            MYSQL_PASSWORD: c.mariadb.user.password,
            MYSQL_DATABASE: c.mariadb.database,
            HEALTH_HOST: '127.0.0.1',
            HEALTH_PORT: String(this.port),
          }
    const started = spawnService(this.kind === 'producer' ? producerMain : consumerMain, env)
    this.process = started
    this.expectedExit = undefined
    void started.exited.then((code) => {
      if (this.process !== started) return
      const signal = started.child.signalCode
      if (this.expectedExit === 'SIGKILL') return
      if (this.expectedExit === 'SIGTERM' && code === 0) return
      c.incident(this.name, `exited unexpectedly (code ${code}, signal ${signal})`, started.output())
      // Keep the soak going: a dead service proves nothing more, a restarted one may. Not when
      // the broker is gone too: the soak itself is being killed, and a restart would be an orphan.
      if (!c.stopping && c.rabbit.alive)
        setTimeout(() => void this.start().catch((err) => c.incident(this.name, `restart failed: ${err}`, '')), 1000)
    })
  }

  /** The process's resident set, recorded against its bound. */
  sample(): void {
    const pid = this.process?.child.pid
    if (!pid || !this.alive) return
    try {
      const rss = rssBytes(pid)
      this.maxRss = Math.max(this.maxRss, rss)
    } catch {
      // exited between the check and the read
    }
  }

  async metrics(): Promise<string> {
    const res = await fetch(`${this.url}/metrics`, { signal: AbortSignal.timeout(5000) })
    return res.text()
  }

  async inHand(): Promise<number> {
    return metricValue(await this.metrics(), 'consumer_events_in_hand') ?? NaN
  }

  /** Its HTTP server answers (any status): it is past start-up, where SIGTERM is handled. */
  async answering(): Promise<boolean> {
    try {
      await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(2000) })
      return true
    } catch {
      return false
    }
  }

  async healthy(): Promise<boolean> {
    try {
      return (await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(5000) })).status === 200
    } catch {
      return false
    }
  }
}

export class Cluster {
  readonly incidents: Incident[] = []
  readonly services: Service[] = []
  /** Time zero of the log lines and the schedule: reset when the schedule starts. */
  t0 = Date.now()
  stopping = false
  /** Letters the schedule's dlq-deleted took off the DLQ before deleting it (by messageId). */
  readonly lettersRemoved = new Set<string>()
  /** Letters it deleted with the queue, unread (they came in after the reading). */
  lettersRemovedUnseen = 0
  /** Faults in effect now, as `name target` (the schedule keeps it). */
  readonly applied = new Set<string>()
  /**
   * Set once table-renamed merged a re-created table back: events stored in both tables were
   * counted in both, so the hourly counts no longer equal the rows (the fault's doing).
   */
  tableMerged = false
  /** Publishes that many poison messages (the load sets it): a DLQ worth replaying. */
  poisonBurst: (count: number) => Promise<void> = async () => undefined
  /** The proxy in front of each producer for its activity-client, by producer (app-clients.ts sets them). */
  readonly appProxies = new Map<string, AppProxy>()
  /** Publishes that many batch messages of 1,000 events of about 1 KB (the load sets it). */
  batchBurst: (count: number) => Promise<void> = async () => undefined
  #sampler: NodeJS.Timeout | undefined

  private constructor(
    readonly rabbit: PrivateRabbit,
    readonly mariadb: PrivateMariadb,
    readonly redis: PrivateRedis,
  ) {}

  /** Starts the servers (in parallel) and the four services; on failure stops what started. */
  static async start(): Promise<Cluster> {
    const started = await Promise.allSettled([PrivateRabbit.start(), PrivateMariadb.start(), PrivateRedis.start()])
    const failed = started.find((s) => s.status === 'rejected')
    if (failed) {
      await Promise.all(started.map((s) => (s.status === 'fulfilled' ? s.value.stop() : undefined)))
      throw (failed as PromiseRejectedResult).reason
    }
    const [rabbit, mariadb, redis] = started.map((s) => (s as PromiseFulfilledResult<unknown>).value) as [
      PrivateRabbit,
      PrivateMariadb,
      PrivateRedis,
    ]
    const cluster = new Cluster(rabbit, mariadb, redis)
    try {
      const link = (to: { host: string; port: number }) => new TcpProxy(to).start()
      for (const name of ['producer-1', 'producer-2']) {
        cluster.services.push(new Service(name, 'producer', cluster, await link(rabbit.address)))
      }
      for (const name of ['consumer-1', 'consumer-2']) {
        cluster.services.push(
          new Service(name, 'consumer', cluster, await link(rabbit.address), await link(mariadb.address)),
        )
      }
      // One producer first: it declares the topology; then the rest.
      for (const service of cluster.services) {
        await service.start()
        await waitFor(() => service.healthy(), { timeoutMs: 60_000, what: `${service.name} healthy` })
        service.idleRss = rssBytes(service.process?.child.pid as number)
      }
      cluster.#sampler = setInterval(() => cluster.services.forEach((s) => s.sample()), 1000)
    } catch (err) {
      await cluster.stop()
      throw err
    }
    return cluster
  }

  get producers(): Service[] {
    return this.services.filter((s) => s.kind === 'producer')
  }

  get consumers(): Service[] {
    return this.services.filter((s) => s.kind === 'consumer')
  }

  elapsed(): number {
    return (Date.now() - this.t0) / 1000
  }

  incident(service: string, what: string, output: string): void {
    this.incidents.push({ at: this.elapsed(), service, what, output: output.slice(-3000) })
  }

  /** Everything down, whatever state it is in; temp directories removed. */
  async stop(): Promise<void> {
    this.stopping = true
    clearInterval(this.#sampler)
    await Promise.all(
      this.services.map(async (s) => {
        s.expectedExit = 'SIGKILL'
        s.process?.child.kill('SIGCONT')
        await s.process?.stop('SIGKILL')
      }),
    )
    await Promise.all(this.services.flatMap((s) => [s.brokerLink.stop(), s.databaseLink?.stop()]))
    await Promise.allSettled([this.rabbit.stop(), this.mariadb.stop(), this.redis.stop()])
  }
}
