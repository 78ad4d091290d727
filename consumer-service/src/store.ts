// Stores events in MySQL/MariaDB: the schema at start-up, multi-row idempotent inserts, the
// split that finds the rows the database refuses, and whether a write would succeed now.
import { readFile } from 'node:fs/promises'
import type { PoolOptions } from 'mysql2/promise'
import type { Logger } from 'pino'
import {
  classifyFailure,
  ER_NET_PACKET_TOO_LARGE,
  ER_NO_SUCH_TABLE,
  errnoOf,
  RowTooLargeError,
  TransientStoreError,
} from './store-errors.js'
import { insertCounted, insertSql, type InsertResult, type Row } from './store-insert.js'
import { probeOnce } from './store-probe.js'
import { Sessions } from './store-sessions.js'

export {
  classifyFailure,
  describeFailure,
  RowTooLargeError,
  TransientStoreError,
  refusedSession,
  type FailureKind,
} from './store-errors.js'

export { toRow, type Row } from './store-insert.js'

export const SCHEMA_FILE = new URL('../../db/init.sql', import.meta.url)

/** How long a statement, or the wait for a pooled connection, may take: then it is transient. */
const QUERY_TIMEOUT_MS = 30_000
/** Bytes of a query packet besides the SQL text, with room to spare. */
const PACKET_OVERHEAD = 1024
/** A deadlocked INSERT is retried at once this many times before it counts as transient. */
const DEADLOCK_RETRIES = 3
/** A missing table is created again at most this often (a DROP racing it must not spin). */
const SCHEMA_RETRY_MS = 5000
export interface InsertOutcome<T> {
  /** Rows stored now or before (duplicates count as stored). */
  stored: T[]
  /** Rows the database refuses, with its reason. */
  rejected: { item: T; err: Error }[]
  /** Rows new to the table. */
  inserted: number
  /** Rows not stored because their user was erased after the producer received them (also in `stored`: settled). */
  erased: number
}

export interface StoreOptions {
  host: string
  port: number
  user: string
  password: string
  database: string
  logger: Logger
  /** How often a missing table may be created again (tests shorten it). */
  schemaRetryMs?: number
  /** The bound of a statement, QUERY_TIMEOUT_MS unless given (tests shorten it). */
  queryTimeoutMs?: number
  /** Keep user_activity_counts with the rows (CONSUMER_KEEP_COUNTS; on unless false). */
  counting?: boolean
}

/** The database as /health reports it: `failing` answers, but the last write failed. */
export type DatabaseHealth = 'up' | 'down' | 'failing'

export class Store {
  static fromConfig(
    config: {
      MYSQL_HOST: string
      MYSQL_PORT: number
      MYSQL_USER: string
      MYSQL_PASSWORD: string
      MYSQL_DATABASE: string
      CONSUMER_KEEP_COUNTS: boolean
    },
    logger: Logger,
  ): Store {
    return new Store({
      host: config.MYSQL_HOST,
      port: config.MYSQL_PORT,
      user: config.MYSQL_USER,
      password: config.MYSQL_PASSWORD,
      database: config.MYSQL_DATABASE,
      counting: config.CONSUMER_KEEP_COUNTS,
      logger,
    })
  }

  readonly #sessions: Sessions
  readonly #log: Logger
  readonly #connection: PoolOptions
  readonly #schemaRetryMs: number
  readonly #queryTimeoutMs: number
  readonly #counting: boolean
  #schemaApplied = false
  #schemaRecreatedAt = 0
  /** How the last write (an INSERT or the probe) went; undefined before the first. */
  #lastWrite: 'ok' | 'failed' | undefined

  constructor({
    logger,
    schemaRetryMs = SCHEMA_RETRY_MS,
    queryTimeoutMs = QUERY_TIMEOUT_MS,
    counting = true,
    ...connection
  }: StoreOptions) {
    this.#counting = counting
    this.#log = logger.child({ component: 'store' })
    this.#schemaRetryMs = schemaRetryMs
    this.#queryTimeoutMs = queryTimeoutMs
    this.#connection = {
      ...connection,
      charset: 'utf8mb4',
      timezone: 'Z',
      connectTimeout: 5000,
      enableKeepAlive: true,
      // Not the OS default (two hours): an idle connection to a vanished server is found sooner.
      keepAliveInitialDelay: 10_000,
      // affectedRows then counts new rows only (0 for a duplicate), not rows found.
      flags: ['-FOUND_ROWS'],
    }
    this.#sessions = new Sessions(this.#connection, this.#log, queryTimeoutMs)
  }

  /** Where it stores, for the logs: never the password. */
  get location() {
    const { host, port, database, user } = this.#connection
    return { host, port, database, user }
  }

  /**
   * Resolves once a write would succeed: the first time, by applying the schema; after that,
   * by the write probe. Throws why not (down, no such database, INSERT denied, read-only, ...).
   */
  async prepare(): Promise<void> {
    if (!this.#schemaApplied) {
      await this.applySchema()
      this.#schemaApplied = true
    }
    await this.probeWrite()
  }

  /** Creates the table if it is missing (db/init.sql). */
  async applySchema(): Promise<void> {
    await this.#sessions.runScript(await readFile(SCHEMA_FILE, 'utf8'))
  }

  /**
   * Writes the probe row in a transaction and rolls it back: proves what `SELECT 1` does not,
   * that the table is there, the INSERT granted and the server writable. Throws why not.
   */
  async probeWrite(): Promise<void> {
    await this.#write(async () => {
      try {
        await probeOnce(this.#sessions, this.#counting, this.#log)
      } catch (err) {
        // Waiting to consume with the table gone: no INSERT would ever create it again.
        if (errnoOf(err) !== ER_NO_SUCH_TABLE || !(await this.#recreateSchema(err))) throw err
        await probeOnce(this.#sessions, this.#counting, this.#log)
      }
    })
  }

  /**
   * Inserts the items' rows in one transaction with their counts. If the database refuses the data, halves the
   * batch until the refused rows are isolated and stores the rest. Throws TransientStoreError
   * when the database is unavailable; the caller retries the whole batch (inserts are idempotent).
   */
  async insert<T>(items: T[], rowOf: (item: T) => Row): Promise<InsertOutcome<T>> {
    const outcome: InsertOutcome<T> = { stored: [], rejected: [], inserted: 0, erased: 0 }
    // In event_id order: consumers inserting at once then take the unique index's locks in one
    // order, and cannot deadlock each other.
    const rows = items.map((item) => ({ item, row: rowOf(item) }))
    rows.sort((a, b) => (a.row[0] < b.row[0] ? -1 : a.row[0] > b.row[0] ? 1 : 0))
    await this.#insertOrSplit(rows, outcome)
    return outcome
  }

  async #insertOrSplit<T>(rows: { item: T; row: Row }[], outcome: InsertOutcome<T>, reread = false): Promise<void> {
    if (rows.length === 0) return
    try {
      // Formatted here (mysql2 would do the same) so that its size is known before it is sent.
      const batch = rows.map(({ row }) => row)
      const sql = insertSql(batch)
      const bytes = Buffer.byteLength(sql) + PACKET_OVERHEAD
      let limit = await this.#sessions.maxAllowedPacket()
      // A row is refused only against the server's limit of now: it may have been raised.
      if (bytes > limit && rows.length === 1) limit = await this.#sessions.maxAllowedPacket(true)
      if (bytes > limit) throw new RowTooLargeError(bytes, limit)
      const { added, erased } = await this.#write(() => this.#execute(sql, batch))
      for (const { item } of rows) outcome.stored.push(item)
      outcome.inserted += added
      outcome.erased += erased.length
    } catch (err) {
      const kind = classifyFailure(err)
      if (kind === 'transient' || kind === 'deadlock') throw new TransientStoreError(err)
      if (errnoOf(err) === ER_NET_PACKET_TOO_LARGE && !reread) {
        // The server refused it, though smaller than the limit known: read it, and try again
        // once on a connection of the new limit.
        await this.#sessions.maxAllowedPacket(true)
        return this.#insertOrSplit(rows, outcome, true)
      }
      if (rows.length === 1) {
        outcome.rejected.push({ item: (rows[0] as { item: T }).item, err: err as Error })
        return
      }
      const half = Math.ceil(rows.length / 2)
      await this.#insertOrSplit(rows.slice(0, half), outcome)
      await this.#insertOrSplit(rows.slice(half), outcome)
    }
  }

  /**
   * Runs an INSERT with its counts (insertCounted). A deadlock, or a race with another session
   * over the same rows, is retried at once, a few times; a missing table is created
   * again from the schema (at most every SCHEMA_RETRY_MS) and the INSERT retried once.
   */
  async #execute(sql: string, rows: Row[]): Promise<InsertResult> {
    let recreated = false
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#sessions.withConnection((connection) =>
          insertCounted(connection, sql, rows, this.#queryTimeoutMs, this.#counting),
        )
      } catch (err) {
        if (classifyFailure(err) === 'deadlock' && attempt < DEADLOCK_RETRIES) {
          this.#log.debug({ attempt, error: (err as Error).message }, 'retrying the INSERT at once')
          continue
        }
        if (!recreated && errnoOf(err) === ER_NO_SUCH_TABLE && (await this.#recreateSchema(err))) {
          recreated = true
          continue
        }
        throw err
      }
    }
  }

  /** Applies db/init.sql again after the table went missing; true if it did now. */
  async #recreateSchema(cause: unknown): Promise<boolean> {
    if (Date.now() - this.#schemaRecreatedAt < this.#schemaRetryMs) return false
    this.#schemaRecreatedAt = Date.now()
    try {
      await this.applySchema()
      this.#log.warn({ error: (cause as Error).message }, 'the table was missing; created it again from db/init.sql')
      return true
    } catch (err) {
      this.#log.error({ err }, 'the table is missing and could not be created again')
      return false
    }
  }

  /** Runs a write and remembers how it went: /health and the probe's callers read it. */
  async #write<R>(run: () => Promise<R>): Promise<R> {
    try {
      const result = await run()
      this.#lastWrite = 'ok'
      return result
    } catch (err) {
      if (classifyFailure(err) === 'transient') this.#lastWrite = 'failed'
      throw err
    }
  }

  /** True when the database answers within `timeoutMs`. */
  ping(timeoutMs = 1000): Promise<boolean> {
    return this.#sessions.ping(timeoutMs)
  }

  /**
   * `down` when the database does not answer; `failing` when it answers but the last write
   * failed and the write probe, tried now, fails too; `up` otherwise.
   */
  async health(timeoutMs = 1000): Promise<DatabaseHealth> {
    if (!(await this.#sessions.ping(timeoutMs))) return 'down'
    if (this.#lastWrite !== 'failed') return 'up'
    try {
      await this.probeWrite()
      return 'up'
    } catch (err) {
      this.#log.debug({ err }, 'the write probe failed')
      return 'failing'
    }
  }

  /** Closes the connections; a query still running after a grace (a hung database) is dropped. */
  close(): Promise<void> {
    return this.#sessions.close()
  }
}
