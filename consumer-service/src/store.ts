// Stores events in MySQL/MariaDB: the schema at start-up, multi-row idempotent inserts, and the
// split that finds the rows the database refuses.
import { readFile } from 'node:fs/promises'
import mysql, { type Pool, type PoolOptions, type ResultSetHeader, type RowDataPacket } from 'mysql2/promise'
import type { Logger } from 'pino'
import type { QueueMessage } from 'event-contract'

export const SCHEMA_FILE = new URL('../../db/init.sql', import.meta.url)

const INSERT_SQL =
  'INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`, metadata) VALUES ? ' +
  'ON DUPLICATE KEY UPDATE event_id = event_id'

/** Sessions run in UTC and in strict mode, so a bad value is an error, never a silent change. */
const SESSION_SQL = "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"

/** How long one INSERT may take before it counts as a transient failure. */
const QUERY_TIMEOUT_MS = 30_000
/** Bytes of a query packet besides the SQL text, with room to spare. */
const PACKET_OVERHEAD = 1024
/** How long `close()` lets a running query finish before it drops the connections. */
const CLOSE_TIMEOUT_MS = 2000

/**
 * How a failed INSERT is handled. `data`: the database refuses the values (SQLSTATE class 22,
 * data exception, or 23, integrity constraint; plus the few value errors MySQL files under
 * HY000 or 01000): retrying cannot help, so the batch is split and the refused rows are
 * dead-lettered. `too-large`: the statement exceeds the server's max_allowed_packet: split too.
 * Anything else (connection lost, deadlock, lock wait timeout, too many connections, missing
 * table, access denied) is `transient`: the batch is held and retried.
 */
export type FailureKind = 'data' | 'too-large' | 'deadlock' | 'transient'

const VALUE_ERRNOS = new Set([
  1265, // WARN_DATA_TRUNCATED (01000)
  1300, // ER_INVALID_CHARACTER_STRING (HY000)
  1366, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD (HY000 on MySQL)
  3819, // ER_CHECK_CONSTRAINT_VIOLATED (HY000, MySQL)
])
const ER_NET_PACKET_TOO_LARGE = 1153
const ER_LOCK_DEADLOCK = 1213
/** A deadlocked INSERT is retried at once this many times before it counts as transient. */
const DEADLOCK_RETRIES = 3

export function classifyFailure(err: unknown): FailureKind {
  const { errno, sqlState } = (err ?? {}) as { errno?: unknown; sqlState?: unknown }
  if (err instanceof RowTooLargeError || errno === ER_NET_PACKET_TOO_LARGE) return 'too-large'
  // InnoDB rolled the statement back to break a cycle of locks: at once again is the cure.
  if (errno === ER_LOCK_DEADLOCK || sqlState === '40001') return 'deadlock'
  if (typeof sqlState === 'string' && /^2[23]/.test(sqlState)) return 'data'
  if (typeof errno === 'number' && VALUE_ERRNOS.has(errno)) return 'data'
  return 'transient'
}

/** A row whose INSERT alone is larger than the server accepts in one statement. */
export class RowTooLargeError extends Error {
  readonly code = 'ERR_ROW_TOO_LARGE'
  constructor(bytes: number, limit: number) {
    super(`the row is ${bytes} bytes as SQL, over the server's max_allowed_packet of ${limit} bytes`)
    this.name = 'RowTooLargeError'
  }
}

export type Row = [eventId: string, userId: number, eventType: string, timestamp: string, metadata: string]

/** A message's row. DATETIME takes 'YYYY-MM-DD HH:MM:SS.mmm'; the timestamp is UTC already. */
export function toRow(message: QueueMessage): Row {
  return [
    message.event_id,
    message.user_id,
    message.event_type,
    message.timestamp.slice(0, 23).replace('T', ' '),
    JSON.stringify(message.metadata),
  ]
}

/** A failure that retrying may cure; the rows stay unacknowledged meanwhile. */
export class TransientStoreError extends Error {
  readonly code = 'ERR_STORE_TRANSIENT'
  constructor(cause: unknown) {
    super(`database unavailable: ${(cause as Error)?.message ?? String(cause)}`, { cause })
    this.name = 'TransientStoreError'
  }
}

export interface InsertOutcome<T> {
  /** Rows stored now or before (duplicates count as stored). */
  stored: T[]
  /** Rows the database refuses, with its reason. */
  rejected: { item: T; err: Error }[]
  /** Rows new to the table. */
  inserted: number
}

export interface StoreOptions {
  host: string
  port: number
  user: string
  password: string
  database: string
  logger: Logger
}

export class Store {
  static fromConfig(
    config: {
      MYSQL_HOST: string
      MYSQL_PORT: number
      MYSQL_USER: string
      MYSQL_PASSWORD: string
      MYSQL_DATABASE: string
    },
    logger: Logger,
  ): Store {
    return new Store({
      host: config.MYSQL_HOST,
      port: config.MYSQL_PORT,
      user: config.MYSQL_USER,
      password: config.MYSQL_PASSWORD,
      database: config.MYSQL_DATABASE,
      logger,
    })
  }

  readonly #pool: Pool
  readonly #log: Logger
  readonly #connection: PoolOptions
  /** The pool's open connections, to drop those still busy when closing. */
  readonly #open = new Set<{ destroy(): void; once(event: string, listener: () => void): unknown }>()
  /** The server's max_allowed_packet, read on first use and again after a too-large error. */
  #maxPacket: number | undefined
  #schemaApplied = false

  constructor({ logger, ...connection }: StoreOptions) {
    this.#log = logger.child({ component: 'store' })
    this.#connection = {
      ...connection,
      charset: 'utf8mb4',
      timezone: 'Z',
      connectTimeout: 5000,
      enableKeepAlive: true,
      // affectedRows then counts new rows only (0 for a duplicate), not rows found.
      flags: ['-FOUND_ROWS'],
    }
    this.#pool = mysql.createPool({ ...this.#connection, connectionLimit: 4, maxIdle: 4 })
    // mysql2 runs these before any query on the new connection.
    this.#pool.pool.on('connection', (connection) => {
      this.#open.add(connection)
      connection.once('end', () => this.#open.delete(connection))
      connection.query(SESSION_SQL, (err: Error | null) => {
        if (err) this.#log.error({ err }, 'could not set the session time zone and SQL mode')
      })
    })
  }

  /** Where it stores, for the logs: never the password. */
  get location() {
    const { host, port, database, user } = this.#connection
    return { host, port, database, user }
  }

  /**
   * Resolves once the database can take inserts: the first time, by applying the schema; after
   * that, by answering a query. Throws why not (the database is down, does not exist, ...).
   */
  async prepare(): Promise<void> {
    if (this.#schemaApplied) {
      await this.#pool.query({ sql: 'SELECT 1', timeout: 5000 })
      return
    }
    await this.applySchema()
    this.#schemaApplied = true
  }

  /** Creates the table if it is missing (db/init.sql). */
  async applySchema(): Promise<void> {
    const sql = await readFile(SCHEMA_FILE, 'utf8')
    const connection = await mysql.createConnection({ ...this.#connection, multipleStatements: true })
    try {
      await connection.query(sql)
    } finally {
      await connection.end()
    }
  }

  /**
   * Inserts the items' rows in one statement. If the database refuses the data, halves the
   * batch until the refused rows are isolated and stores the rest. Throws TransientStoreError
   * when the database is unavailable; the caller retries the whole batch (inserts are idempotent).
   */
  async insert<T>(items: T[], rowOf: (item: T) => Row): Promise<InsertOutcome<T>> {
    const outcome: InsertOutcome<T> = { stored: [], rejected: [], inserted: 0 }
    // In event_id order: consumers inserting at once then take the unique index's locks in one
    // order, and cannot deadlock each other.
    const rows = items.map((item) => ({ item, row: rowOf(item) }))
    rows.sort((a, b) => (a.row[0] < b.row[0] ? -1 : a.row[0] > b.row[0] ? 1 : 0))
    await this.#insertOrSplit(rows, outcome)
    return outcome
  }

  async #insertOrSplit<T>(rows: { item: T; row: Row }[], outcome: InsertOutcome<T>): Promise<void> {
    if (rows.length === 0) return
    try {
      // Formatted here (mysql2 would do the same) so that its size is known before it is sent.
      const sql = mysql.format(INSERT_SQL, [rows.map(({ row }) => row)])
      const bytes = Buffer.byteLength(sql) + PACKET_OVERHEAD
      const limit = await this.#maxAllowedPacket()
      if (bytes > limit) throw new RowTooLargeError(bytes, limit)
      const result = await this.#execute(sql)
      for (const { item } of rows) outcome.stored.push(item)
      outcome.inserted += result.affectedRows
    } catch (err) {
      const kind = classifyFailure(err)
      if (kind === 'transient' || kind === 'deadlock') throw new TransientStoreError(err)
      if (kind === 'too-large' && !(err instanceof RowTooLargeError)) this.#maxPacket = undefined
      if (rows.length === 1) {
        outcome.rejected.push({ item: (rows[0] as { item: T }).item, err: err as Error })
        return
      }
      const half = Math.ceil(rows.length / 2)
      await this.#insertOrSplit(rows.slice(0, half), outcome)
      await this.#insertOrSplit(rows.slice(half), outcome)
    }
  }

  /** Runs an INSERT; a deadlock is retried at once, a few times, before it is thrown. */
  async #execute(sql: string): Promise<ResultSetHeader> {
    for (let attempt = 0; ; attempt++) {
      try {
        const [result] = await this.#pool.query<ResultSetHeader>({ sql, timeout: QUERY_TIMEOUT_MS })
        return result
      } catch (err) {
        if (classifyFailure(err) !== 'deadlock' || attempt >= DEADLOCK_RETRIES) throw err
        this.#log.debug({ attempt }, 'deadlock; retrying the INSERT at once')
      }
    }
  }

  async #maxAllowedPacket(): Promise<number> {
    if (this.#maxPacket === undefined) {
      const [rows] = await this.#pool.query<RowDataPacket[]>('SELECT @@max_allowed_packet AS bytes')
      this.#maxPacket = Number(rows[0]?.bytes)
    }
    return this.#maxPacket
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
