// The query service's connections to MySQL (the primary, or a replica): a small pool whose every
// wait is bounded, the server stopping a query at the bound too, and the errors that mean 503.
import mysql, { type Pool, type PoolConnection, type RowDataPacket } from 'mysql2/promise'
import type { Logger } from 'pino'
import { orAfter } from 'event-contract'

export interface ReaderOptions {
  host: string
  port: number
  user: string
  password: string
  database: string
  /** Longest a query, or the wait for a connection, may take (QUERY_TIMEOUT_MS). */
  timeoutMs: number
  logger: Logger
}

/** The database did not answer in time, or cannot be reached: the request is answered 503. */
export class DatabaseUnavailableError extends Error {
  readonly code = 'ERR_DATABASE_UNAVAILABLE'
  constructor(reason: string, options?: { cause?: unknown }) {
    super(reason, options)
    this.name = 'DatabaseUnavailableError'
  }
}

/** The server stopped a statement at its time limit: MySQL's ER_QUERY_TIMEOUT, MariaDB's ER_STATEMENT_TIMEOUT. */
const TIMEOUT_ERRNOS = new Set([3024, 1969])
/** Errors of the query's own making (bad SQL): a bug, answered 500. */
const QUERY_ERRNOS = new Set([1064])
/** A column this version reads is not there yet (the consumer of this version adds it): 503. */
const ER_BAD_FIELD_ERROR = 1054
/** The tables are not there yet (the consumer creates them): 503, retry later. */
const ER_NO_SUCH_TABLE = 1146

export class Reader {
  readonly #pool: Pool
  readonly #log: Logger
  readonly #timeoutMs: number
  readonly #ready = new WeakSet<object>()
  /** Where it reads, for the logs: never the password. */
  readonly location: { host: string; port: number; database: string; user: string }

  constructor({ logger, timeoutMs, ...connection }: ReaderOptions) {
    const { host, port, database, user } = connection
    this.location = { host, port, database, user }
    this.#log = logger.child({ component: 'reader' })
    this.#timeoutMs = timeoutMs
    this.#pool = mysql.createPool({
      ...connection,
      charset: 'utf8mb4',
      // Times as the server holds them (UTC: see the session set-up), ids as decimal strings.
      dateStrings: true,
      supportBigNumbers: true,
      bigNumberStrings: true,
      connectTimeout: Math.min(timeoutMs, 5000),
      enableKeepAlive: true,
      keepAliveInitialDelay: 10_000,
      connectionLimit: 8,
      maxIdle: 8,
    })
  }

  /** The bound of one query (QUERY_TIMEOUT_MS). */
  get timeoutMs(): number {
    return this.#timeoutMs
  }

  /**
   * Rows of `sql` with `values` (each an array with `rowsAsArray`); DatabaseUnavailableError when
   * down, slow or stopped at the bound.
   */
  async query<T extends RowDataPacket>(
    sql: string,
    values: unknown[] = [],
    { rowsAsArray = false }: { rowsAsArray?: boolean } = {},
  ): Promise<T[]> {
    const connection = await this.#take()
    try {
      // The client's bound is a second past the server's: the server's stop comes first.
      const [rows] = await connection.query<T[]>({ sql, values, rowsAsArray, timeout: this.#timeoutMs + 1000 })
      connection.release()
      return rows
    } catch (err) {
      const { errno, fatal, code } = err as { errno?: number; fatal?: boolean; code?: string }
      // A lost or timed-out session would answer later and queue the next query behind it:
      // closed. One the server answered with an error is sound.
      if (fatal === true || code === 'PROTOCOL_SEQUENCE_TIMEOUT' || errno === undefined) connection.destroy()
      else connection.release()
      if (errno !== undefined && QUERY_ERRNOS.has(errno)) throw err
      if (errno !== undefined && TIMEOUT_ERRNOS.has(errno)) {
        throw new DatabaseUnavailableError(`the query took longer than ${this.#timeoutMs} ms`, { cause: err })
      }
      if (errno === ER_BAD_FIELD_ERROR) {
        throw new DatabaseUnavailableError('the table is of an earlier version: start the consumer of this one', {
          cause: err,
        })
      }
      if (errno === ER_NO_SUCH_TABLE) {
        throw new DatabaseUnavailableError('no table yet: the consumer creates it when it starts', { cause: err })
      }
      throw new DatabaseUnavailableError(`the database failed: ${(err as Error).message}`, { cause: err })
    }
  }

  /** A pooled connection, its session in UTC and bounded; the wait for it bounded too. */
  async #take(): Promise<PoolConnection> {
    const pending = this.#pool.getConnection()
    const connection = await orAfter(
      pending.catch((err: unknown) => {
        throw new DatabaseUnavailableError(`the database cannot be reached: ${(err as Error).message}`, { cause: err })
      }),
      this.#timeoutMs,
      undefined,
    )
    if (!connection) {
      // Given up on: should it come after all, it goes back to the pool.
      pending.then(
        (late) => late.release(),
        (err: unknown) => this.#log.debug({ err }, 'a database connection given up on failed'),
      )
      throw new DatabaseUnavailableError(`no database connection within ${this.#timeoutMs} ms`)
    }
    if (this.#ready.has(connection.connection)) return connection
    try {
      await this.#setUp(connection)
    } catch (err) {
      connection.destroy()
      throw new DatabaseUnavailableError(`the database session failed: ${(err as Error).message}`, { cause: err })
    }
    this.#ready.add(connection.connection)
    return connection
  }

  /** UTC, read-only work, and the server's own time limit on every statement (by flavour). */
  async #setUp(connection: PoolConnection): Promise<void> {
    const timeout = this.#timeoutMs + 1000
    const [[version]] = await connection.query<RowDataPacket[]>({ sql: 'SELECT VERSION() AS v', timeout })
    const limit = /mariadb/i.test(String(version?.v))
      ? `max_statement_time = ${this.#timeoutMs / 1000}`
      : `max_execution_time = ${this.#timeoutMs}`
    await connection.query({ sql: `SET time_zone = '+00:00', ${limit}`, timeout })
  }

  /** True when the database answers a query within its bound. */
  async ping(): Promise<boolean> {
    try {
      await this.query('SELECT 1')
      return true
    } catch (err) {
      this.#log.debug({ err }, 'database ping failed')
      return false
    }
  }

  /** Closes the connections; any still busy after 2 s are dropped. */
  async close(): Promise<void> {
    const ended = this.#pool.end().then(
      () => true,
      (err: unknown) => {
        this.#log.warn({ err }, 'closing the database connections failed')
        return true
      },
    )
    if (!(await orAfter(ended, 2000, false))) this.#log.warn('database queries still running at close; dropped')
  }
}
