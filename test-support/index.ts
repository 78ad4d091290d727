// Helpers for the tests that use the real RabbitMQ (names, polling, a TCP proxy); database.ts has MySQL's.
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { Transform } from 'node:stream'
import amqp, { type ChannelModel } from 'amqplib'

/** Where a server listens. */
export interface Address {
  host: string
  port: number
}

/** The broker the tests use: the services' variables, with this machine's defaults. */
export const broker = {
  host: process.env.RABBITMQ_HOST || '127.0.0.1',
  port: Number(process.env.RABBITMQ_PORT || 5672),
  user: process.env.RABBITMQ_USER || 'guest',
  pass: process.env.RABBITMQ_PASS || 'guest',
}

/**
 * The database server the tests use (they need the right to create databases). Here, not in
 * database.ts, so that the producer's tests, which have no MySQL driver, can name it.
 */
export const database = {
  host: process.env.MYSQL_HOST || '127.0.0.1',
  port: Number(process.env.MYSQL_PORT || 3306),
  user: process.env.TEST_MYSQL_USER || process.env.MYSQL_USER || 'root',
  password: process.env.TEST_MYSQL_PASSWORD ?? process.env.MYSQL_PASSWORD ?? '',
}

/** The Redis of the rate-limit tests (TEST_REDIS_URL, redis://host:port). */
export const redis = (() => {
  const url = new URL(process.env.TEST_REDIS_URL || 'redis://127.0.0.1:6379')
  return { host: url.hostname, port: Number(url.port || 6379) }
})()

/** A name no other test run uses: queues and databases are per test file. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`
}

export async function connectBroker(): Promise<ChannelModel> {
  try {
    return await amqp.connect({
      protocol: 'amqp',
      hostname: broker.host,
      port: broker.port,
      username: broker.user,
      password: broker.pass,
    })
  } catch (err) {
    throw new Error(
      `RabbitMQ is not reachable at ${broker.host}:${broker.port}. Start it (on this machine: ` +
        '`rabbitmq-server -detached`; with Docker: `docker compose up -d rabbitmq`) or set RABBITMQ_HOST/RABBITMQ_PORT.',
      { cause: err },
    )
  }
}

type Truthy<T> = Exclude<T, false | null | undefined | 0 | ''>

/** Polls `probe` until it returns a truthy value, or fails after `timeoutMs`. */
export async function waitFor<T>(
  probe: () => T | Promise<T>,
  { timeoutMs = 10_000, intervalMs = 50, what = 'condition' } = {},
): Promise<Truthy<T>> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await probe()
      if (value) return value as Truthy<T>
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: last })
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}

/**
 * A TCP forwarder the tests put between a service and RabbitMQ or MySQL, to make that
 * dependency unreachable (`cut`) and bring it back (`restore`) without touching the shared server.
 */
export class TcpProxy {
  readonly #target: { host: string; port: number }
  /** Current limits of what clients send (up) and receive (down); undefined: no limit. */
  #upRate: number | undefined
  #downRate: number | undefined
  readonly #sockets = new Set<net.Socket>()
  #server: net.Server | undefined
  #frozen = false
  /** Where the services reach the proxy: this process, so never the proxied server's host. */
  readonly host = '127.0.0.1'
  port = 0

  /** `bytesPerSecond` throttles what the client sends (a slow or congested broker). */
  constructor(target: { host: string; port: number }, { bytesPerSecond }: { bytesPerSecond?: number } = {}) {
    this.#target = target
    this.#upRate = bytesPerSecond
  }

  /**
   * Changes the throttle at run time, for open connections too: what clients send, and with
   * `downstream` also what they receive; undefined lifts it.
   */
  throttle(bytesPerSecond: number | undefined, { downstream = false }: { downstream?: boolean } = {}): void {
    this.#upRate = bytesPerSecond
    if (downstream) this.#downRate = bytesPerSecond
  }

  async start(): Promise<this> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.#target.port, this.#target.host)
      for (const socket of [client, upstream]) {
        this.#sockets.add(socket)
        socket.on('close', () => this.#sockets.delete(socket))
        // A reset is how a cut looks from either side; both ends are then destroyed.
        socket.on('error', () => {
          client.destroy()
          upstream.destroy()
        })
      }
      if (this.#frozen) {
        client.pause()
        upstream.pause()
        return
      }
      upstream.pipe(gate(() => this.#downRate)).pipe(client)
      client.pipe(gate(() => this.#upRate)).pipe(upstream)
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.port, this.host, () => resolve())
    })
    this.port = (server.address() as net.AddressInfo).port
    this.#server = server
    return this
  }

  /** Drops every connection and refuses new ones. */
  async cut(): Promise<void> {
    const server = this.#server
    this.#server = undefined
    for (const socket of this.#sockets) socket.destroy()
    if (server) await new Promise((resolve) => server.close(resolve))
  }

  /**
   * Stops forwarding without closing anything: connections stay open and silent, like a broker
   * node that hangs or a network that drops packets. New connections are accepted, and hang.
   */
  freeze(): void {
    this.#frozen = true
    for (const socket of this.#sockets) {
      socket.unpipe()
      socket.removeAllListeners('data')
      socket.pause()
    }
  }

  /** Accepts connections again, on the same port (a frozen proxy drops its hung ones first). */
  async restore(): Promise<void> {
    if (this.#frozen) {
      this.#frozen = false
      for (const socket of this.#sockets) socket.destroy()
    }
    if (!this.#server) await this.start()
  }

  async stop(): Promise<void> {
    await this.cut()
  }
}

/**
 * Passes chunks on at most `rate()` bytes per second (read per chunk, so it can change while a
 * connection is open); the stream's backpressure then slows the sender.
 */
function gate(rate: () => number | undefined): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      const bytesPerSecond = rate()
      if (!bytesPerSecond) return done(null, chunk)
      this.push(chunk)
      setTimeout(done, (chunk.length / bytesPerSecond) * 1000)
    },
  })
}

/**
 * The value of one sample in a Prometheus text exposition: `name` with at least `labels`
 * (undefined when absent). Histograms read as `<name>_count`, `<name>_sum`.
 */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!match || match[1] !== name) continue
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]))
    if (Object.entries(labels).every(([key, value]) => found[key] === value)) return Number(match[3])
  }
  return undefined
}
