// The store's connections to MySQL/MariaDB: a pool whose sessions are replaced when they can
// no longer do what a new one would (a refused grant, a raised max_allowed_packet).
import mysql, {
  type Connection,
  type Pool,
  type PoolConnection,
  type PoolOptions,
  type RowDataPacket,
} from 'mysql2/promise'
import type { Logger } from 'pino'
import { refusedSession, sessionLost, StoreTimeoutError } from './store-errors.js'
import { orAfter } from 'event-contract'

/**
 * Sessions run in UTC and in strict mode, so a bad value is an error, never a silent change;
 * and with autocommit, never chaining a transaction on, so a stored row is committed when its
 * INSERT returns whatever the server's defaults (autocommit=0 in my.cnf or init_connect, or
 * completion_type=CHAIN after the probe's ROLLBACK, would roll acked events back).
 *
 * A batch's transaction whose link dies between its INSERT and its COMMIT, the server never told
 * (a partition, a paused consumer), would hold its rows' locks until the server's wait_timeout
 * (8 hours by default), and the batch, retried on another session, would wait on them: the
 * session's wait_timeout is twice the statement bound instead, and its lock waits end before the
 * statement bound (or sooner, as the server's own setting says). READ COMMITTED: a transaction
 * reads what is committed when it reads, so servers that check snapshots on write (MariaDB 11.6's
 * innodb_snapshot_isolation) do not refuse a count another session has just added to.
 */
function sessionSql(timeoutMs: number): string[] {
  const waitSeconds = Math.max(5, Math.ceil((2 * timeoutMs) / 1000))
  const lockSeconds = Math.max(1, Math.floor((2 * timeoutMs) / 3000))
  return [
    "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', " +
      `autocommit = 1, completion_type = 'NO_CHAIN', wait_timeout = ${waitSeconds}, ` +
      `innodb_lock_wait_timeout = LEAST(@@GLOBAL.innodb_lock_wait_timeout, ${lockSeconds})`,
    'SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED',
  ]
}
/**
 * Closes one connection: `end()` waits for the server's answer, and a hung server gives none, so
 * it is dropped after CLOSE_TIMEOUT_MS.
 */
export async function endBounded(connection: Connection, log: Logger): Promise<void> {
  const ended = connection.end().then(
    () => true,
    (err: unknown) => {
      log.debug({ err }, 'closing a database connection failed')
      return false
    },
  )
  if (!(await orAfter(ended, CLOSE_TIMEOUT_MS, false))) connection.destroy()
}

/** How long `close()` lets a running query finish before it drops the connections. */
const CLOSE_TIMEOUT_MS = 2000
/** The server's max_allowed_packet is read again this often (and before refusing a row). */
const PACKET_REREAD_MS = 60_000

export class Sessions {
  readonly #pool: Pool
  readonly #options: PoolOptions
  readonly #log: Logger
  /** The bound of each wait: a connection from the pool, the session set-up, a statement. */
  readonly #timeoutMs: number
  /** Connections whose session settings are in place. */
  readonly #ready = new WeakSet<object>()
  /** The pool's open connections, to drop those still busy when closing. */
  readonly #open = new Set<{ destroy(): void; once(event: string, listener: () => void): unknown }>()
  /**
   * The server's max_allowed_packet, and its generation: a session's limit is the global one
   * when it connected, so a connection of an older generation is replaced when taken.
   */
  #packet: { bytes: number; readAt: number } | undefined
  #generation = 0
  readonly #generationOf = new WeakMap<object, number>()

  constructor(options: PoolOptions, log: Logger, timeoutMs: number) {
    this.#log = log
    this.#options = options
    this.#timeoutMs = timeoutMs
    // A session the server ends after its wait_timeout (sessionSql) while idle in the pool is
    // noticed (the server says so) and left out: the next batch takes a sound one.
    this.#pool = mysql.createPool({
      ...options,
      // A batch's transaction sends its statements two at a time (store-insert.ts); every value
      // in them is escaped by mysql.format.
      multipleStatements: true,
      connectionLimit: 4,
      maxIdle: 4,
    })
    this.#pool.pool.on('connection', (connection) => {
      this.#open.add(connection)
      this.#generationOf.set(connection, this.#generation)
      connection.once('end', () => this.#open.delete(connection))
    })
  }

  /**
   * Runs `use` on a pooled connection of the current packet generation. A connection refused
   * for a reason its session keeps (see refusedSession), or lost (see sessionLost), is closed
   * instead of going back.
   */
  async withConnection<R>(use: (connection: PoolConnection) => Promise<R>): Promise<R> {
    const connection = await this.#take()
    try {
      const result = await use(connection)
      connection.release()
      return result
    } catch (err) {
      if (refusedSession(err) || sessionLost(err)) {
        this.#log.debug({ error: (err as Error).message }, 'closing a refused or lost database session')
        connection.destroy()
      } else {
        connection.release()
      }
      throw err
    }
  }

  /**
   * A pooled connection opened under the current max_allowed_packet (older ones are closed),
   * its session set up.
   */
  async #take(): Promise<PoolConnection> {
    // Every stale one is closed on the way, so the pool's size bounds the loop.
    for (let tries = 0; ; tries++) {
      const connection = await this.#acquire()
      const generation = this.#generationOf.get(connection.connection) ?? this.#generation
      if (generation === this.#generation || tries > 8) {
        await this.#setUp(connection)
        return connection
      }
      connection.destroy()
    }
  }

  /**
   * The pool's getConnection, bounded: mysql2's pool has no acquire timeout, and its
   * connectTimeout bounds only a new connection, not the wait for a busy one to come back.
   */
  async #acquire(): Promise<PoolConnection> {
    const pending = this.#pool.getConnection()
    const connection = await orAfter(pending, this.#timeoutMs, undefined)
    if (connection) return connection
    // Given up on: should it come after all, it goes back to the pool for the next caller.
    pending.then(
      (connection) => connection.release(),
      (err: unknown) => this.#log.debug({ err }, 'a database connection given up on failed'),
    )
    throw new StoreTimeoutError('a database connection from the pool', this.#timeoutMs)
  }

  /** Sets the session up once; a connection whose set-up failed is closed, never used. */
  async #setUp(connection: PoolConnection): Promise<void> {
    if (this.#ready.has(connection.connection)) return
    try {
      for (const sql of sessionSql(this.#timeoutMs)) {
        await connection.query({ sql, timeout: this.#timeoutMs })
      }
    } catch (err) {
      this.#log.error({ err }, 'could not set up the database session; closing it')
      connection.destroy()
      throw err
    }
    this.#ready.add(connection.connection)
  }

  /** Runs `sql` (statements separated by `;`) on a connection of its own, and closes it. */
  async runScript(sql: string): Promise<void> {
    const connection = await mysql.createConnection({ ...this.#options, multipleStatements: true })
    let lost = false
    try {
      await connection.query({ sql, timeout: this.#timeoutMs })
    } catch (err) {
      lost = sessionLost(err)
      throw err
    } finally {
      if (lost) connection.destroy()
      else await endBounded(connection, this.#log)
    }
  }

  /** The server's max_allowed_packet: read again every PACKET_REREAD_MS, or now if `fresh`. */
  async maxAllowedPacket(fresh = false): Promise<number> {
    const known = this.#packet
    if (!fresh && known && Date.now() - known.readAt < PACKET_REREAD_MS) return known.bytes
    const bytes = await this.withConnection(async (connection) => {
      const [rows] = await connection.query<RowDataPacket[]>({
        sql: 'SELECT @@GLOBAL.max_allowed_packet AS bytes',
        timeout: this.#timeoutMs,
      })
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
    // Through withConnection, so that a ping that timed out closes its connection.
    const query = this.withConnection((connection) => connection.query({ sql: 'SELECT 1', timeout: timeoutMs })).then(
      () => true,
      (err: unknown) => {
        this.#log.debug({ err }, 'database ping failed')
        return false
      },
    )
    return orAfter(query, timeoutMs, false)
  }

  /** Closes the pool; a query still running after a grace (a hung database) is dropped. */
  async close(): Promise<void> {
    const ended = this.#pool.end().then(
      () => true,
      (err: unknown) => {
        // A connection that was failing anyway (the database is down): nothing is left to close.
        this.#log.warn({ err }, 'closing the database connections failed')
        return true
      },
    )
    if (await orAfter(ended, CLOSE_TIMEOUT_MS, false)) return
    this.#log.warn({ connections: this.#open.size }, 'database queries still running at close; dropping them')
    for (const connection of this.#open) connection.destroy()
  }
}
