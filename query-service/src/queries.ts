// The SQL of the three reads, and stored rows as the API shows them. A timeline walks the
// (user_id, timestamp) index newest first, from a position (keyset pagination, never OFFSET);
// counts come from user_activity_counts, never from the raw rows.
import type { RowDataPacket } from 'mysql2/promise'
import { erasedCondition } from 'event-contract'
import type { Position } from './cursor.js'

const ERASED = erasedCondition('user_activities')

const COLUMNS =
  'id, event_id, user_id, event_type, `timestamp`, metadata, received_at, ' +
  "DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s') AS stored_at, LENGTH(metadata) AS metadata_bytes"

export interface StoredRow extends RowDataPacket {
  id: string
  event_id: string
  user_id: number
  event_type: string
  timestamp: string
  metadata: unknown
  received_at: string | null
  stored_at: string
  metadata_bytes: string | number | null
}

/** An event as the API shows it: times in the producer's canonical UTC form, metadata as sent. */
export interface StoredEvent {
  event_id: string
  user_id: number
  event_type: string
  timestamp: string
  metadata: Record<string, unknown>
  received_at: string | null
  stored_at: string
}

/** 'YYYY-MM-DD HH:MM:SS[.mmm]' (UTC) as 'YYYY-MM-DDTHH:MM:SS.mmmZ'. */
export function isoOf(datetime: string): string {
  const [date, time = '00:00:00'] = datetime.split(' ')
  return `${date}T${time.length === 8 ? `${time}.000` : time.slice(0, 12)}Z`
}

/** ISO 'YYYY-MM-DDTHH:MM:SS.mmmZ' (canonical, UTC) as DATETIME(3) text. */
export function datetimeOf(iso: string): string {
  return iso.slice(0, 23).replace('T', ' ')
}

export function toEvent(row: StoredRow): StoredEvent {
  // MySQL's JSON arrives parsed; MariaDB's JSON is text.
  const metadata = typeof row.metadata === 'string' ? (JSON.parse(row.metadata) as unknown) : row.metadata
  return {
    event_id: row.event_id,
    user_id: row.user_id,
    event_type: row.event_type,
    timestamp: isoOf(row.timestamp),
    metadata: (metadata ?? {}) as Record<string, unknown>,
    received_at: row.received_at === null ? null : isoOf(row.received_at),
    stored_at: isoOf(row.stored_at),
  }
}

export interface TimelineFilter {
  userId: number
  /** Inclusive, DATETIME(3) text. */
  from?: string
  /** Exclusive, DATETIME(3) text. */
  to?: string
  eventType?: string
}

/** One chunk of a timeline: up to `limit` rows after `after` (older), newest first. */
export function timelineQuery(filter: TimelineFilter, after: Position | undefined, limit: number) {
  const where: string[] = []
  const values: unknown[] = []
  const add = (condition: string, ...given: unknown[]) => {
    where.push(condition)
    values.push(...given)
  }
  add('user_id = ?', filter.userId)
  // An erased user's rows are hidden from the erasure on, before the consumer has removed them.
  add(`NOT ${ERASED}`)
  if (filter.from !== undefined) add('`timestamp` >= ?', filter.from)
  if (filter.to !== undefined) add('`timestamp` < ?', filter.to)
  if (filter.eventType !== undefined) add('event_type = ?', filter.eventType)
  // As two ranges rather than a row comparison: both servers then range-scan the index.
  if (after) add('(`timestamp` < ? OR (`timestamp` = ? AND id < ?))', after.timestamp, after.timestamp, after.id)
  return {
    sql: `SELECT ${COLUMNS} FROM user_activities WHERE ${where.join(' AND ')} ORDER BY \`timestamp\` DESC, id DESC LIMIT ?`,
    values: [...values, limit],
  }
}

export function eventQuery(eventId: string) {
  return { sql: `SELECT ${COLUMNS} FROM user_activities WHERE event_id = ? AND NOT ${ERASED}`, values: [eventId] }
}
