// What a failed database statement means for the rows and for the connection it ran on.

/**
 * How a failed INSERT is handled. `data`: the database refuses the values (SQLSTATE class 22,
 * data exception, or 23, integrity constraint; plus the few value errors MySQL files under
 * HY000 or 01000): retrying cannot help, so the batch is split and the refused rows are
 * dead-lettered. `too-large`: the statement exceeds the server's max_allowed_packet: split too.
 * Anything else (connection lost, deadlock, lock wait timeout, too many connections, missing
 * table, access denied, read-only) is `transient`: the batch is held and retried.
 */
export type FailureKind = 'data' | 'too-large' | 'deadlock' | 'transient'

const VALUE_ERRNOS = new Set([
  1265, // WARN_DATA_TRUNCATED (01000)
  1300, // ER_INVALID_CHARACTER_STRING (HY000)
  1366, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD (HY000 on MySQL)
  3819, // ER_CHECK_CONSTRAINT_VIOLATED (HY000, MySQL)
])
export const ER_NET_PACKET_TOO_LARGE = 1153
export const ER_LOCK_DEADLOCK = 1213
/** MariaDB's "Record has changed since last read" (innodb_snapshot_isolation): retried at once, as a deadlock. */
export const ER_CHECKREAD = 1020
export const ER_NO_SUCH_TABLE = 1146

/**
 * Refusals a session keeps making after the cause is fixed: MySQL and MariaDB apply a
 * database-level GRANT to a session only at its next USE, so a connection that was refused is
 * closed rather than reused. Read-only refusals are here too: a new session costs little, and
 * a server that was made read-only may be a demoted primary behind the same address.
 */
const SESSION_REFUSALS = new Set([
  1036, // ER_OPEN_AS_READONLY: the table is read only
  1044, // ER_DBACCESS_DENIED_ERROR
  1045, // ER_ACCESS_DENIED_ERROR
  1142, // ER_TABLEACCESS_DENIED_ERROR: INSERT command denied
  1143, // ER_COLUMNACCESS_DENIED_ERROR
  1227, // ER_SPECIFIC_ACCESS_DENIED_ERROR
  1290, // ER_OPTION_PREVENTS_STATEMENT: --read-only, --super-read-only
  1698, // ER_ACCESS_DENIED_NO_PASSWORD_ERROR
  1792, // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
  1836, // ER_READ_ONLY_MODE (InnoDB read-only)
])

export function errnoOf(err: unknown): number | undefined {
  const { errno } = (err ?? {}) as { errno?: unknown }
  return typeof errno === 'number' ? errno : undefined
}

/** True when the session that got this error should not be reused (see SESSION_REFUSALS). */
export function refusedSession(err: unknown): boolean {
  const errno = errnoOf(err)
  return errno !== undefined && SESSION_REFUSALS.has(errno)
}

/**
 * True when the connection that got this error is unusable: lost, or its statement timed out.
 * mysql2 rejects a timed-out query but keeps waiting for its answer, and queues whatever comes
 * next behind it, where a statement's own timeout has not even started.
 */
export function sessionLost(err: unknown): boolean {
  const { fatal, code } = (err ?? {}) as { fatal?: unknown; code?: unknown }
  return fatal === true || code === 'PROTOCOL_SEQUENCE_TIMEOUT' || err instanceof StoreTimeoutError
}

export function classifyFailure(err: unknown): FailureKind {
  const errno = errnoOf(err)
  const { sqlState } = (err ?? {}) as { sqlState?: unknown }
  if (err instanceof RowTooLargeError || errno === ER_NET_PACKET_TOO_LARGE) return 'too-large'
  // InnoDB rolled the statement back to break a cycle of locks: at once again is the cure.
  if (errno === ER_LOCK_DEADLOCK || errno === ER_CHECKREAD || sqlState === '40001') return 'deadlock'
  if (typeof sqlState === 'string' && /^2[23]/.test(sqlState)) return 'data'
  if (errno !== undefined && VALUE_ERRNOS.has(errno)) return 'data'
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

/** A failure that retrying may cure; the rows stay unacknowledged meanwhile. */
export class TransientStoreError extends Error {
  readonly code = 'ERR_STORE_TRANSIENT'
  constructor(cause: unknown) {
    super(`database unavailable: ${(cause as Error)?.message ?? String(cause)}`, { cause })
    this.name = 'TransientStoreError'
  }
}

/** A wait on the database that outlasted its bound (a connection from the pool, a close). */
export class StoreTimeoutError extends Error {
  readonly code = 'ERR_STORE_TIMEOUT'
  constructor(what: string, ms: number) {
    super(`${what} took longer than ${ms} ms`)
    this.name = 'StoreTimeoutError'
  }
}

/** One line of why a database operation failed: its code and message, without a stack. */
export function describeFailure(err: unknown): { error: string; code?: string } {
  const cause = err instanceof TransientStoreError ? err.cause : err
  const code = (cause as { code?: unknown } | null)?.code
  return {
    error: cause instanceof Error ? cause.message : String(cause),
    ...(typeof code === 'string' ? { code } : {}),
  }
}
