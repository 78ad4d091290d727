// One batch's rows in one transaction: the INSERT, and the hourly counts of the rows it added.
import mysql, { type PoolConnection, type ResultSetHeader, type RowDataPacket } from 'mysql2/promise'
import type { QueueMessage } from 'event-contract'
import { sessionLost } from './store-errors.js'

const INSERT_SQL =
  'INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`, metadata, received_at) VALUES ? ' +
  'ON DUPLICATE KEY UPDATE event_id = event_id'
const EXISTING_SQL = 'SELECT event_id FROM user_activities WHERE event_id IN (?)'
const COUNTS_SQL =
  'INSERT INTO user_activity_counts (bucket_start, event_type, event_count) VALUES ? ' +
  'ON DUPLICATE KEY UPDATE event_count = event_count + VALUES(event_count)'

export type Row = [
  eventId: string,
  userId: number,
  eventType: string,
  timestamp: string,
  metadata: string,
  receivedAt: string | null,
]

/** DATETIME(3) takes 'YYYY-MM-DD HH:MM:SS.mmm'; the contract's times are UTC already. */
const toDatetime = (iso: string) => iso.slice(0, 23).replace('T', ' ')

/** A message's row. */
export function toRow(message: QueueMessage): Row {
  return [
    message.event_id,
    message.user_id,
    message.event_type,
    toDatetime(message.timestamp),
    JSON.stringify(message.metadata),
    typeof message.received_at === 'string' ? toDatetime(message.received_at) : null,
  ]
}

/** The INSERT of `rows`, formatted (as mysql2 would) so that its size is known before it is sent. */
export function insertSql(rows: Row[]): string {
  return mysql.format(INSERT_SQL, [rows])
}

/**
 * Another session stored (or removed) one of the rows between this transaction's look and its
 * INSERT, so the rows it added are not known: rolled back and tried again, like a deadlock.
 */
export class CountRaceError extends Error {
  readonly code = 'ERR_COUNT_RACE'
  /** SQLSTATE serialization failure: the store retries it at once, as it does a deadlock. */
  readonly sqlState = '40001'
  constructor(expected: number, inserted: number) {
    super(`expected to add ${expected} rows, added ${inserted}: another session wrote some of them`)
    this.name = 'CountRaceError'
  }
}

/** A session whose transaction could not be rolled back: closed, never reused. */
class RollbackFailedError extends Error {
  readonly fatal = true
  constructor(cause: unknown) {
    super(`could not roll back: ${(cause as Error).message}`, { cause })
    this.name = 'RollbackFailedError'
  }
}

/**
 * The counts' statement for rows new to the table: one VALUES entry per hour and event type,
 * in a fixed order, so that sessions adding to the same counts lock them in the same order.
 */
function countsSql(rows: Row[]): string {
  const counts = new Map<string, [string, string, number]>()
  for (const row of rows) {
    const hour = `${row[3].slice(0, 13)}:00:00`
    const key = `${hour} ${row[2].toLowerCase()}\u0000${row[2]}`
    const entry = counts.get(key)
    if (entry) entry[2]++
    else counts.set(key, [hour, row[2], 1])
  }
  const values = [...counts.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, entry]) => entry)
  return mysql.format(COUNTS_SQL, [values])
}

/** The first row of each event_id (stored lower-case, compared case-insensitively). */
function distinct(rows: Row[]): Map<string, Row> {
  const first = new Map<string, Row>()
  for (const row of rows) {
    const id = row[0].toLowerCase()
    if (!first.has(id)) first.set(id, row)
  }
  return first
}

/** The erasures that cover some of `rows`' users: user_id to erased_before (DATETIME(3) text). */
function erasuresSql(rows: Row[]): string {
  const users = [...new Set(rows.map((row) => row[1]))]
  return mysql.format(
    "SELECT user_id, DATE_FORMAT(erased_before, '%Y-%m-%d %H:%i:%s.%f') AS erased_before " +
      'FROM user_erasures WHERE user_id IN (?)',
    [users],
  )
}

/** Rows of an erased user that the producer received at or before the erasure (or at an unknown time). */
function erasedRows(rows: Row[], erasures: RowDataPacket[]): Set<Row> {
  if (erasures.length === 0) return new Set()
  const before = new Map(erasures.map((e) => [Number(e.user_id), String(e.erased_before).slice(0, 23)]))
  return new Set(
    rows.filter((row) => {
      const erased = before.get(row[1])
      return erased !== undefined && (row[5] === null || row[5] <= erased)
    }),
  )
}

export interface InsertResult {
  /** Rows new to the table. */
  added: number
  /** Rows not stored because their user was erased after the producer received them. */
  erased: Row[]
}

/**
 * Runs `sql` (insertSql of `rows`) with the counts of the rows it adds, in one transaction: both or neither. With
 * `counting` off, the counts are left alone.
 *
 * Erased users: after the INSERT, in the same transaction, the erasures of the batch's users are
 * read; if one covers a row, the transaction is rolled back and run again without the rows it
 * covers. The look comes after the INSERT on purpose: an erasure recorded later than the look
 * finds the inserted rows (its chunked DELETE waits for this transaction's locks on them), and one
 * recorded earlier is seen by it. Either way no row of an erased user is left.
 *
 * Most batches are all new: when the INSERT adds a row for every distinct event_id, those are
 * the rows counted. When it adds fewer (a redelivery, a client's retry, or another session
 * storing the same events at once), it is rolled back and run again after looking up which
 * event_ids exist: the rows new to the table are those absent then, provided the INSERT adds
 * exactly that many (else CountRaceError, retried like a deadlock).
 */
export async function insertCounted(
  connection: PoolConnection,
  sql: string,
  rows: Row[],
  timeoutMs: number,
  counting: boolean,
): Promise<InsertResult> {
  // Statements in one round trip (the pool's sessions take several at once); each one's result.
  const run = async (...statements: string[]): Promise<unknown[]> => {
    const [results] = await connection.query({ sql: statements.join(';\n'), timeout: timeoutMs })
    return statements.length === 1 ? [results] : (results as unknown[])
  }
  // Whatever fails inside the transaction rolls it back. A lost session (a timeout) is closed
  // instead, which rolls back: a ROLLBACK would only queue behind the hung statement.
  const rollingBack = async <T>(body: () => Promise<T>): Promise<T> => {
    try {
      return await body()
    } catch (err) {
      if (!sessionLost(err)) {
        try {
          await run('ROLLBACK')
        } catch (rollbackErr) {
          throw new RollbackFailedError(rollbackErr)
        }
      }
      throw err
    }
  }
  // The counts and the COMMIT go together: a link that dies before they arrive leaves a
  // transaction that holds its new rows only (and the session's wait_timeout ends it).
  const commitWith = (added: Map<string, Row>) =>
    run(...(counting && added.size > 0 ? [countsSql([...added.values()])] : []), 'COMMIT')

  const erased: Row[] = []
  let live = rows
  // Without the look-up first, unless a first try added fewer rows than it was given.
  let lookUp = false
  for (;;) {
    if (live.length === 0) return { added: 0, erased }
    const batch = live
    type Outcome = { added: number } | { covered: Set<Row> } | { retry: true }
    const outcome = await rollingBack(async (): Promise<Outcome> => {
      const fresh = distinct(batch)
      const results = await run(
        'START TRANSACTION',
        ...(lookUp ? [mysql.format(EXISTING_SQL, [[...fresh.keys()]])] : []),
        batch === rows ? sql : insertSql(batch),
        erasuresSql(batch),
      )
      const found = lookUp ? (results[1] as RowDataPacket[]) : []
      const { affectedRows } = results[lookUp ? 2 : 1] as ResultSetHeader
      const covered = erasedRows(batch, results[lookUp ? 3 : 2] as RowDataPacket[])
      if (covered.size > 0) {
        await run('ROLLBACK')
        return { covered }
      }
      for (const { event_id } of found) fresh.delete(String(event_id).toLowerCase())
      if (!counting || affectedRows === fresh.size) {
        await commitWith(fresh)
        return { added: affectedRows }
      }
      if (lookUp) throw new CountRaceError(fresh.size, affectedRows)
      await run('ROLLBACK')
      return { retry: true }
    })
    if ('added' in outcome) return { added: outcome.added, erased }
    if ('covered' in outcome) {
      erased.push(...outcome.covered)
      live = batch.filter((row) => !outcome.covered.has(row))
    } else {
      lookUp = true
    }
  }
}
