// Removes stored events in small transactions, the hourly counts following exactly: the rows of
// an erased user, and (RETENTION_DAYS) events older than the retention, walked in id order.
import mysql, { type Connection, type RowDataPacket } from 'mysql2/promise'

/**
 * Rows removed a transaction at most: its locks are held for milliseconds, never a stall. Under
 * 1,000, where MariaDB turns an IN list into a subquery and plans it otherwise.
 */
export const CHUNK_ROWS = 500
/** Ids looked at a step of the retention's walk (by the primary key). */
export const STEP_IDS = 20_000
/** The bound of a statement here. */
const STATEMENT_TIMEOUT_MS = 30_000

/**
 * Removes the rows of `ids` (locked FOR UPDATE by the caller's transaction), takes them off the
 * hourly counts and commits. Their counts are read first, by a plain read that takes no lock
 * (grouped by the server, as the counts' key compares event types). Then the DELETE, the counts
 * and the COMMIT go in one packet: the counts' rows, which every batch of the same hour needs,
 * are locked only from the server's receipt of it to its COMMIT, whatever this process or its
 * link does meanwhile, and the DELETE (which may wait for a batch being inserted) comes before
 * any of them is locked. GREATEST keeps a count that fell behind its rows (CONSUMER_KEEP_COUNTS
 * =false for a while) from going below zero.
 */
async function removeLocked(connection: Connection, ids: string[]): Promise<void> {
  const [groups] = await connection.query<RowDataPacket[]>({
    sql:
      "SELECT DATE_FORMAT(`timestamp`, '%Y-%m-%d %H:00:00') AS h, event_type AS t, COUNT(*) AS n " +
      'FROM user_activities FORCE INDEX (PRIMARY) WHERE id IN (?) GROUP BY h, t',
    values: [ids],
    timeout: STATEMENT_TIMEOUT_MS,
  })
  const counted = groups.map((g) => mysql.format('SELECT CAST(? AS DATETIME) AS h, ? AS t, ? AS n', [g.h, g.t, g.n]))
  const hours = [...new Set(groups.map((g) => String(g.h)))]
  const statements = [
    mysql.format('DELETE FROM user_activities WHERE id IN (?)', [ids]),
    ...(counted.length > 0
      ? [
          `UPDATE user_activity_counts c JOIN (${counted.join(' UNION ALL ')}) d ` +
            'ON c.bucket_start = d.h AND c.event_type = d.t COLLATE utf8mb4_unicode_ci SET c.event_count = GREATEST(c.event_count, d.n) - d.n',
          mysql.format('DELETE FROM user_activity_counts WHERE event_count = 0 AND bucket_start IN (?)', [hours]),
        ]
      : []),
    'COMMIT',
  ]
  await connection.query({ sql: statements.join(';\n'), timeout: STATEMENT_TIMEOUT_MS })
}

/**
 * Runs `select` (rows with `id`, locked) in a transaction and removes what it found. A failure
 * leaves nothing half done: the caller closes the session, which rolls the transaction back (a
 * ROLLBACK would queue behind a statement that timed out).
 */
async function removeChunk(connection: Connection, select: string, values: unknown[]): Promise<string[]> {
  await connection.query({ sql: 'START TRANSACTION', timeout: STATEMENT_TIMEOUT_MS })
  const [rows] = await connection.query<RowDataPacket[]>({ sql: select, values, timeout: STATEMENT_TIMEOUT_MS })
  const ids = rows.map((row) => String(row.id))
  if (ids.length === 0) await connection.query({ sql: 'COMMIT', timeout: STATEMENT_TIMEOUT_MS })
  else await removeLocked(connection, ids)
  return ids
}

export interface ErasureRecord {
  userId: number
  /** DATETIME(3) text, as the table holds it. */
  erasedBefore: string
}

const erasureRecord = (row: RowDataPacket): ErasureRecord => ({
  userId: Number(row.user_id),
  erasedBefore: String(row.erased_before).slice(0, 23),
})

/** The erasures whose rows are not all gone yet. */
export async function pendingErasures(connection: Connection): Promise<ErasureRecord[]> {
  const [rows] = await connection.query<RowDataPacket[]>({
    sql:
      "SELECT user_id, DATE_FORMAT(erased_before, '%Y-%m-%d %H:%i:%s.%f') AS erased_before " +
      'FROM user_erasures WHERE completed_at IS NULL ORDER BY user_id',
    timeout: STATEMENT_TIMEOUT_MS,
  })
  return rows.map(erasureRecord)
}

/**
 * The completed erasures some of whose rows are back (a table restored from a backup, or renamed
 * away during the erasure and back after): an erasure stays recorded, so they go again. Reads
 * the erased users' rows by the (user_id, timestamp) index (the caller spaces it).
 */
export async function reopenedErasures(connection: Connection): Promise<ErasureRecord[]> {
  const [rows] = await connection.query<RowDataPacket[]>({
    sql:
      "SELECT e.user_id, DATE_FORMAT(e.erased_before, '%Y-%m-%d %H:%i:%s.%f') AS erased_before " +
      'FROM user_erasures e WHERE e.completed_at IS NOT NULL AND EXISTS (SELECT 1 FROM user_activities a ' +
      'WHERE a.user_id = e.user_id AND (a.received_at IS NULL OR a.received_at <= e.erased_before)) ORDER BY e.user_id',
    timeout: STATEMENT_TIMEOUT_MS,
  })
  return rows.map(erasureRecord)
}

/**
 * Removes the rows an erasure covers, a chunk a transaction, until none is left, then marks it
 * completed (unless a newer erasure of the user came meanwhile). Returns the rows removed.
 * `stopped` ends it between chunks; the next run goes on.
 */
export async function eraseRows(
  connection: Connection,
  erasure: ErasureRecord,
  stopped: () => boolean = () => false,
): Promise<number> {
  let removed = 0
  // By the (user_id, timestamp) index: a locking read of it waits for a batch being inserted
  // for that user, so rows of a transaction that looked before the erasure are removed too.
  const select =
    `SELECT id FROM user_activities WHERE user_id = ? ` +
    `AND (received_at IS NULL OR received_at <= ?) LIMIT ${CHUNK_ROWS} FOR UPDATE`
  for (;;) {
    if (stopped()) return removed
    const ids = await removeChunk(connection, select, [erasure.userId, erasure.erasedBefore])
    removed += ids.length
    if (ids.length < CHUNK_ROWS) break
  }
  await connection.query({
    sql: 'UPDATE user_erasures SET completed_at = UTC_TIMESTAMP(3) WHERE user_id = ? AND erased_before = ?',
    values: [erasure.userId, erasure.erasedBefore],
    timeout: STATEMENT_TIMEOUT_MS,
  })
  return removed
}

/**
 * Removes events whose `timestamp` is more than `days` days old (by the server's clock), walking
 * the table by id in steps: one pass over the whole table, whatever order the events came in.
 * Returns the rows removed. `stopped` ends it between chunks.
 */
export async function expireRows(
  connection: Connection,
  days: number,
  stopped: () => boolean = () => false,
  pause: (chunkMs: number) => Promise<void> = () => Promise.resolve(),
): Promise<number> {
  const [[bounds]] = await connection.query<RowDataPacket[]>({
    sql:
      "SELECT MIN(id) AS low, MAX(id) AS high, DATE_FORMAT(UTC_TIMESTAMP(3) - INTERVAL ? DAY, '%Y-%m-%d %H:%i:%s.%f') AS cutoff " +
      'FROM user_activities',
    values: [days],
    timeout: STATEMENT_TIMEOUT_MS,
  })
  if (!bounds || bounds.low === null) return 0
  const cutoff = String(bounds.cutoff).slice(0, 23)
  const high = BigInt(String(bounds.high))
  let removed = 0
  for (let low = BigInt(String(bounds.low)); low <= high && !stopped();) {
    const end = low + BigInt(STEP_IDS)
    const chunkStarted = Date.now()
    const ids = await removeChunk(
      connection,
      `SELECT id FROM user_activities WHERE id >= ? AND id < ? AND \`timestamp\` < ? ` +
        `ORDER BY id LIMIT ${CHUNK_ROWS} FOR UPDATE`,
      [String(low), String(end), cutoff],
    )
    removed += ids.length
    // A full chunk: the step goes on after its last row; else the next step.
    low = ids.length === CHUNK_ROWS ? BigInt(ids[ids.length - 1] as string) + 1n : end
    if (ids.length > 0) await pause(Date.now() - chunkStarted)
  }
  return removed
}

/** A session for removals: UTC, READ COMMITTED (no gap locks in the inserts' way), short lock waits. */
export async function removalSession(options: mysql.ConnectionOptions): Promise<Connection> {
  const connection = await mysql.createConnection({
    ...options,
    charset: 'utf8mb4',
    connectTimeout: 5000,
    // A chunk's DELETE, counts and COMMIT go in one packet (removeLocked); values escaped by mysql.format.
    multipleStatements: true,
    supportBigNumbers: true,
    bigNumberStrings: true,
  })
  try {
    await connection.query({
      sql:
        "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', autocommit = 1, " +
        "completion_type = 'NO_CHAIN', innodb_lock_wait_timeout = 10, wait_timeout = 60",
      timeout: STATEMENT_TIMEOUT_MS,
    })
    await connection.query({
      sql: 'SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED',
      timeout: STATEMENT_TIMEOUT_MS,
    })
    return connection
  } catch (err) {
    connection.destroy()
    throw err
  }
}
