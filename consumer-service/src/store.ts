// Stores events in MySQL/MariaDB: the schema at start-up, multi-row idempotent inserts, and the
// split that finds the rows the database refuses.
import { readFile } from 'node:fs/promises'
import mysql, { type Pool, type PoolOptions, type ResultSetHeader } from 'mysql2/promise'
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

/**
 * Server errors that blame the data, not the database: retrying cannot help, so the row is
 * dead-lettered. Every other error (connection lost, deadlock, lock wait timeout, too many
 * connections, missing table, access denied) is transient: the batch is held and retried.
 */
const DATA_ERRNOS = new Set([
  1048, // ER_BAD_NULL_ERROR
  1264, // ER_WARN_DATA_OUT_OF_RANGE
  1265, // WARN_DATA_TRUNCATED
  1292, // ER_TRUNCATED_WRONG_VALUE
  1300, // ER_INVALID_CHARACTER_STRING
  1366, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
  1406, // ER_DATA_TOO_LONG
  3140, // ER_INVALID_JSON_TEXT (MySQL)
  3141, // ER_INVALID_JSON_TEXT_IN_PARAM (MySQL)
  3157, // ER_JSON_DOCUMENT_TOO_DEEP (MySQL)
  3819, // ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
  4025, // ER_CONSTRAINT_FAILED (MariaDB: its JSON type is a JSON_VALID check)
])

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

export function isDataError(err: unknown): boolean {
  const errno = (err as { errno?: unknown } | null)?.errno
  return typeof errno === 'number' && DATA_ERRNOS.has(errno)
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
      connection.query(SESSION_SQL, (err: Error | null) => {
        if (err) this.#log.error({ err }, 'could not set the session time zone and SQL mode')
      })
    })
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
    await this.#insertOrSplit(items, rowOf, outcome)
    return outcome
  }

  async #insertOrSplit<T>(items: T[], rowOf: (item: T) => Row, outcome: InsertOutcome<T>): Promise<void> {
    if (items.length === 0) return
    try {
      const [result] = await this.#pool.query<ResultSetHeader>({
        sql: INSERT_SQL,
        values: [items.map(rowOf)],
        timeout: QUERY_TIMEOUT_MS,
      })
      outcome.stored.push(...items)
      outcome.inserted += result.affectedRows
    } catch (err) {
      if (!isDataError(err)) throw new TransientStoreError(err)
      if (items.length === 1) {
        outcome.rejected.push({ item: items[0] as T, err: err as Error })
        return
      }
      const half = Math.ceil(items.length / 2)
      await this.#insertOrSplit(items.slice(0, half), rowOf, outcome)
      await this.#insertOrSplit(items.slice(half), rowOf, outcome)
    }
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

  async close(): Promise<void> {
    await this.#pool.end()
  }
}
