// The store's connections to MySQL/MariaDB: a pool whose sessions are replaced when they can
// no longer do what a new one would (a refused grant, a raised max_allowed_packet).
import mysql, { type Pool, type PoolConnection, type PoolOptions, type RowDataPacket } from 'mysql2/promise'
import type { Logger } from 'pino'
import { refusedSession } from './store-errors.js'

/** Sessions run in UTC and in strict mode, so a bad value is an error, never a silent change. */
const SESSION_SQL = "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"
/** How long `close()` lets a running query finish before it drops the connections. */
const CLOSE_TIMEOUT_MS = 2000
/** The server's max_allowed_packet is read again this often (and before refusing a row). */
const PACKET_REREAD_MS = 60_000

export class Sessions {
  readonly #pool: Pool
  readonly #log: Logger
  /** The pool's open connections, to drop those still busy when closing. */
  readonly #open = new Set<{ destroy(): void; once(event: string, listener: () => void): unknown }>()
  /**
   * The server's max_allowed_packet, and its generation: a session's limit is the global one
   * when it connected, so a connection of an older generation is replaced when taken.
   */
  #packet: { bytes: number; readAt: number } | undefined
  #generation = 0
  readonly #generationOf = new WeakMap<object, number>()

  constructor(options: PoolOptions, log: Logger) {
    this.#log = log
    this.#pool = mysql.createPool({ ...options, connectionLimit: 4, maxIdle: 4 })
    // mysql2 runs these before any query on the new connection.
    this.#pool.pool.on('connection', (connection) => {
      this.#open.add(connection)
      this.#generationOf.set(connection, this.#generation)
      connection.once('end', () => this.#open.delete(connection))
      connection.query(SESSION_SQL, (err: Error | null) => {
        if (err) this.#log.error({ err }, 'could not set the session time zone and SQL mode')
      })
    })
  }

  /**
   * Runs `use` on a pooled connection of the current packet generation. A connection refused
   * for a reason its session keeps (see refusedSession) is closed instead of going back.
   */
  async withConnection<R>(use: (connection: PoolConnection) => Promise<R>): Promise<R> {
    const connection = await this.#take()
    try {
      const result = await use(connection)
      connection.release()
      return result
    } catch (err) {
      if (refusedSession(err)) {
        this.#log.debug({ error: (err as Error).message }, 'closing a refused database session')
        connection.destroy()
      } else {
        connection.release()
      }
      throw err
    }
  }

  /** A pooled connection opened under the current max_allowed_packet; older ones are closed. */
  async #take(): Promise<PoolConnection> {
    // Every stale one is closed on the way, so the pool's size bounds the loop.
    for (let tries = 0; ; tries++) {
      const connection = await this.#pool.getConnection()
      const generation = this.#generationOf.get(connection.connection) ?? this.#generation
      if (generation === this.#generation || tries > 8) return connection
      connection.destroy()
    }
  }

  /** The server's max_allowed_packet: read again every PACKET_REREAD_MS, or now if `fresh`. */
  async maxAllowedPacket(fresh = false): Promise<number> {
    const known = this.#packet
    if (!fresh && known && Date.now() - known.readAt < PACKET_REREAD_MS) return known.bytes
    const bytes = await this.withConnection(async (connection) => {
      const [rows] = await connection.query<RowDataPacket[]>('SELECT @@GLOBAL.max_allowed_packet AS bytes')
      return Number(rows[0]?.bytes)
    })
    if (known && known.bytes !== bytes) {
      this.#generation++
      this.#log.info({ bytes, was: known.bytes }, "the server's max_allowed_packet changed; reconnecting")
    }
    this.#packet = { bytes, readAt: Date.now() }
    return bytes
  }

  /** True when the database answers within `timeoutMs`. */
  async ping(timeoutMs = 1000): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)))
    const query = this.#pool.query({ sql: 'SELECT 1', timeout: timeoutMs }).then(
      () => true,
      (err: unknown) => {
        this.#log.debug({ err }, 'database ping failed')
        return false
      },
    )
    try {
      return await Promise.race([query, timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  /** Closes the pool; a query still running after a grace (a hung database) is dropped. */
  async close(): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const ended = this.#pool.end().then(
      () => true,
      (err: unknown) => {
        // A connection that was failing anyway (the database is down): nothing is left to close.
        this.#log.warn({ err }, 'closing the database connections failed')
        return true
      },
    )
    const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), CLOSE_TIMEOUT_MS)))
    try {
      if (await Promise.race([ended, late])) return
      this.#log.warn({ connections: this.#open.size }, 'database queries still running at close; dropping them')
      for (const connection of this.#open) connection.destroy()
    } finally {
      clearTimeout(timer)
    }
  }
}
