// The write probe: proves that an INSERT of events would succeed now, and leaves nothing.
import type { Logger } from 'pino'
import { classifyFailure, sessionLost } from './store-errors.js'
import type { Sessions } from './store-sessions.js'

/** How long the write probe may take. */
const PROBE_TIMEOUT_MS = 5000

/**
 * The write probe: a row no event has (event_ids are UUIDs of version 4), rolled back. It needs
 * what an INSERT of events needs (the table, the INSERT grant, a writable server), and leaves
 * nothing but a gap in the AUTO_INCREMENT.
 */
const PROBE_SQL =
  'INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`, metadata) ' +
  "VALUES ('00000000-0000-0000-0000-000000000000', 0, 'probe', '1970-01-02 00:00:00', NULL) " +
  'ON DUPLICATE KEY UPDATE event_id = event_id'
/** And what adding to the counts needs (their table, INSERT and UPDATE), rolled back with it. */
const PROBE_COUNTS_SQL =
  "INSERT INTO user_activity_counts (bucket_start, event_type, event_count) VALUES ('1970-01-02 00:00:00', 'probe', 0) " +
  'ON DUPLICATE KEY UPDATE event_count = event_count'

const PROBE_ERASURES_SQL = 'SELECT user_id FROM user_erasures WHERE user_id = 0'

/**
 * Writes the probe rows in a transaction and rolls it back: proves what `SELECT 1` does not,
 * that the tables are there, INSERT granted and the server writable. Throws why not.
 */
export async function probeOnce(sessions: Sessions, counting: boolean, log: Logger): Promise<void> {
  await sessions.withConnection(async (connection) => {
    await connection.query({ sql: 'START TRANSACTION', timeout: PROBE_TIMEOUT_MS })
    try {
      await connection.query({ sql: PROBE_SQL, timeout: PROBE_TIMEOUT_MS })
      if (counting) await connection.query({ sql: PROBE_COUNTS_SQL, timeout: PROBE_TIMEOUT_MS })
      // And the look at the erasures that follows every INSERT (store-insert.ts).
      await connection.query({ sql: PROBE_ERASURES_SQL, timeout: PROBE_TIMEOUT_MS })
    } catch (err) {
      // The server took the write and refused the probe's values (a narrowed column, say):
      // writes work; what it refuses of real events is dead-lettered as data.
      if (classifyFailure(err) !== 'data') {
        // A lost session (a timeout) would only queue ROLLBACK behind the hung statement; it
        // is closed instead, which rolls back.
        if (!sessionLost(err)) await connection.query({ sql: 'ROLLBACK', timeout: PROBE_TIMEOUT_MS })
        throw err
      }
      log.debug({ error: (err as Error).message }, 'the write probe was refused as data')
    }
    await connection.query({ sql: 'ROLLBACK', timeout: PROBE_TIMEOUT_MS })
  })
}
