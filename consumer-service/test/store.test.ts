import { describe, expect, it } from 'vitest'
import type { QueueMessage } from 'event-contract'
import { classifyFailure, RowTooLargeError, toRow } from '../src/store.js'

const message: QueueMessage = {
  event_id: '0195d3a0-1b2c-7d3e-8f40-123456789abc',
  user_id: 42,
  event_type: 'login',
  timestamp: '2026-02-20T04:30:00.123Z',
  metadata: { page: '/ü', nested: { list: [1, 'two', null] } },
  received_at: '2026-02-20T04:30:01.000Z',
}

describe('toRow', () => {
  it('maps a message to the columns, times as UTC DATETIME(3) text and metadata as JSON', () => {
    expect(toRow(message)).toEqual([
      '0195d3a0-1b2c-7d3e-8f40-123456789abc',
      42,
      'login',
      '2026-02-20 04:30:00.123',
      '{"page":"/ü","nested":{"list":[1,"two",null]}}',
      '2026-02-20 04:30:01.000',
    ])
  })

  it('stores empty metadata as {}', () => {
    expect(toRow({ ...message, metadata: {} })[4]).toBe('{}')
  })
})

describe('classifyFailure', () => {
  // Errors as mysql2 reports them: errno and SQLSTATE from MySQL 8.0 or MariaDB 10.11.
  it.each([
    [1406, '22001', 'data too long'],
    [1264, '22003', 'out of range'],
    [1292, '22007', 'bad datetime'],
    [1366, 'HY000', 'incorrect string value (MySQL)'],
    [1366, '22007', 'incorrect string value (MariaDB)'],
    [1048, '23000', 'NULL in a NOT NULL column'],
    [4025, '23000', 'MariaDB JSON check'],
    [3140, '22032', 'MySQL invalid JSON'],
    [3819, 'HY000', 'MySQL check constraint'],
    [1265, '01000', 'data truncated'],
    [9999, '22999', 'a data exception this list never heard of'],
  ])('errno %i, SQLSTATE %s (%s) blames the data: split and dead-letter', (errno, sqlState) => {
    expect(classifyFailure(Object.assign(new Error('x'), { errno, sqlState }))).toBe('data')
  })

  it('a deadlock is a deadlock (errno 1213, SQLSTATE 40001): retried at once', () => {
    expect(classifyFailure(Object.assign(new Error('x'), { errno: 1213, sqlState: '40001' }))).toBe('deadlock')
    expect(classifyFailure(Object.assign(new Error('x'), { sqlState: '40001' }))).toBe('deadlock')
  })

  it("so is MariaDB's record changed since last read (errno 1020, innodb_snapshot_isolation)", () => {
    expect(classifyFailure(Object.assign(new Error('x'), { errno: 1020, sqlState: 'HY000' }))).toBe('deadlock')
  })

  it('a statement over max_allowed_packet is too large: split, then dead-letter the row', () => {
    expect(classifyFailure(Object.assign(new Error('x'), { errno: 1153, sqlState: '08S01' }))).toBe('too-large')
    expect(classifyFailure(new RowTooLargeError(2_000_000, 1_048_576))).toBe('too-large')
  })

  it.each<[number | undefined, string | undefined, string]>([
    [1205, 'HY000', 'lock wait timeout'],
    [1040, '08004', 'too many connections'],
    [1146, '42S02', 'no such table'],
    [1045, '28000', 'access denied'],
    [1317, '70100', 'query interrupted'],
    [undefined, undefined, 'ECONNREFUSED'],
  ])('errno %s, SQLSTATE %s (%s) is transient: hold and retry', (errno, sqlState) => {
    expect(classifyFailure(Object.assign(new Error('x'), { errno, sqlState, code: 'X' }))).toBe('transient')
  })
})
