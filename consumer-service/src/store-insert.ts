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

/**
 * Runs `sql` (insertSql of `rows`) with the counts of the rows it adds, in one transaction:
 * both or neither. Returns the number of rows added. With `counting` off, runs the INSERT alone.
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
): Promise<number> {
  // Statements in one round trip (the pool's sessions take several at once); the last one's result.
  const run = async <T extends ResultSetHeader | RowDataPacket[]>(...statements: string[]): Promise<T> => {
    const [results] = await connection.query({ sql: statements.join(';\n'), timeout: timeoutMs })
    return (statements.length === 1 ? results : (results as unknown[])[statements.length - 1]) as T
  }
  if (!counting) return (await run<ResultSetHeader>(sql)).affectedRows
  // Whatever fails inside the transaction rolls it back. A lost session (a timeout) is closed
  // instead, which rolls back: a ROLLBACK would only queue behind the hung statement.
  const rollingBack = async <T>(body: () => Promise<T>): Promise<T> => {
    try {
      return await body()
    } catch (err) {
      if (!sessionLost(err)) {
        try {
          await run<ResultSetHeader>('ROLLBACK')
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
    run<ResultSetHeader>(...(added.size > 0 ? [countsSql([...added.values()])] : []), 'COMMIT')
  const all = distinct(rows)
  const added = await rollingBack(async () => {
    const { affectedRows } = await run<ResultSetHeader>('START TRANSACTION', sql)
    if (affectedRows !== all.size) {
      await run<ResultSetHeader>('ROLLBACK')
      return undefined
    }
    await commitWith(all)
    return affectedRows
  })
  if (added !== undefined) return added
  const fresh = distinct(rows)
  return rollingBack(async () => {
    const found = await run<RowDataPacket[]>('START TRANSACTION', mysql.format(EXISTING_SQL, [[...fresh.keys()]]))
    for (const { event_id } of found) fresh.delete(String(event_id).toLowerCase())
    const { affectedRows } = await run<ResultSetHeader>(sql)
    if (affectedRows !== fresh.size) throw new CountRaceError(fresh.size, affectedRows)
    await commitWith(fresh)
    return affectedRows
  })
}
