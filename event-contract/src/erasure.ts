// The erasure of a user as the database holds it (db/init.sql's user_erasures), said once for
// the query service's DELETE route, `npm run erase` and the consumer.

/**
 * Records an erasure of user `?` as of the database server's clock, and reads it back. A second
 * erasure moves erased_before on and opens it again (completed_at NULL): the rows of the first
 * may be gone, but events received since are covered now too. Two statements, one transaction.
 */
export const RECORD_ERASURE_SQL = [
  'INSERT INTO user_erasures (user_id, erased_before, completed_at) VALUES (?, UTC_TIMESTAMP(3), NULL) ' +
    'ON DUPLICATE KEY UPDATE erased_before = GREATEST(erased_before, VALUES(erased_before)), completed_at = NULL',
  "SELECT DATE_FORMAT(erased_before, '%Y-%m-%dT%H:%i:%s.%fZ') AS erased_before FROM user_erasures WHERE user_id = ?",
] as const

/**
 * True for a row of user_activities (aliased `alias`) that an erasure covers: its user was erased
 * after the producer received it, or it has no receipt time (stored by an earlier version).
 */
export function erasedCondition(alias: string): string {
  return (
    `EXISTS (SELECT 1 FROM user_erasures e WHERE e.user_id = ${alias}.user_id AND ` +
    `(${alias}.received_at IS NULL OR ${alias}.received_at <= e.erased_before))`
  )
}

/** '...T10:00:00.123000Z' (DATE_FORMAT's %f is microseconds) as the API's milliseconds. */
export function erasureTime(formatted: string): string {
  return `${formatted.slice(0, 23)}Z`
}
