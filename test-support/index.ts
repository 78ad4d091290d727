// Helpers for the tests that talk to the real RabbitMQ and MySQL/MariaDB.
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import amqp, { type ChannelModel } from 'amqplib'
import mysql from 'mysql2/promise'

/** The broker the tests use: the services' variables, with this machine's defaults. */
export const broker = {
  host: process.env.RABBITMQ_HOST || '127.0.0.1',
  port: Number(process.env.RABBITMQ_PORT || 5672),
  user: process.env.RABBITMQ_USER || 'guest',
  pass: process.env.RABBITMQ_PASS || 'guest',
}

/** The database server the tests use; they need the right to create databases. */
export const database = {
  host: process.env.MYSQL_HOST || '127.0.0.1',
  port: Number(process.env.MYSQL_PORT || 3306),
  user: process.env.TEST_MYSQL_USER || process.env.MYSQL_USER || 'root',
  password: process.env.TEST_MYSQL_PASSWORD ?? process.env.MYSQL_PASSWORD ?? '',
}

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

export async function connectDatabase(databaseName?: string): Promise<mysql.Connection> {
  try {
    return await mysql.createConnection({ ...database, database: databaseName, timezone: 'Z' })
  } catch (err) {
    throw new Error(
      `MySQL/MariaDB is not reachable at ${database.host}:${database.port} as ${database.user}. Start it (on this ` +
        'machine: `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`; with Docker: ' +
        '`docker compose up -d mysql`) or set MYSQL_HOST/MYSQL_PORT/TEST_MYSQL_USER/TEST_MYSQL_PASSWORD.',
      { cause: err },
    )
  }
}

/** Creates an empty database of the test's own; `drop()` removes it. */
export async function createTestDatabase(): Promise<{ name: string; drop: () => Promise<void> }> {
  const name = uniqueName('test')
  const connection = await connectDatabase()
  try {
    await connection.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4`)
  } finally {
    await connection.end()
  }
  return {
    name,
    drop: async () => {
      const c = await connectDatabase()
      try {
        await c.query(`DROP DATABASE IF EXISTS \`${name}\``)
      } finally {
        await c.end()
      }
    },
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
  readonly #sockets = new Set<net.Socket>()
  #server: net.Server | undefined
  port = 0

  constructor(target: { host: string; port: number }) {
    this.#target = target
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
      client.pipe(upstream).pipe(client)
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.port, '127.0.0.1', () => resolve())
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

  /** Accepts connections again, on the same port. */
  async restore(): Promise<void> {
    if (!this.#server) await this.start()
  }

  async stop(): Promise<void> {
    await this.cut()
  }
}
