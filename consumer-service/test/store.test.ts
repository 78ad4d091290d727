import { describe, expect, it } from 'vitest'
import type { QueueMessage } from 'event-contract'
import { isDataError, toRow } from '../src/store.js'
import { backoffDelay } from '../src/worker.js'

const message: QueueMessage = {
  event_id: '0195d3a0-1b2c-7d3e-8f40-123456789abc',
  user_id: 42,
  event_type: 'login',
  timestamp: '2026-02-20T04:30:00.123Z',
  metadata: { page: '/ü', nested: { list: [1, 'two', null] } },
  received_at: '2026-02-20T04:30:01.000Z',
}

describe('toRow', () => {
  it('maps a message to the columns, timestamp as UTC DATETIME(3) text and metadata as JSON', () => {
    expect(toRow(message)).toEqual([
      '0195d3a0-1b2c-7d3e-8f40-123456789abc',
      42,
      'login',
      '2026-02-20 04:30:00.123',
      '{"page":"/ü","nested":{"list":[1,"two",null]}}',
    ])
  })

  it('stores empty metadata as {}', () => {
    expect(toRow({ ...message, metadata: {} })[4]).toBe('{}')
  })
})

describe('isDataError', () => {
  it.each([
    [1406, 'data too long'],
    [1264, 'out of range'],
    [1366, 'incorrect value'],
    [4025, 'MariaDB JSON check'],
    [3140, 'MySQL invalid JSON'],
  ])('errno %i (%s) blames the data: dead-letter', (errno) => {
    expect(isDataError(Object.assign(new Error('x'), { errno }))).toBe(true)
  })

  it.each<[number | undefined, string]>([
    [1213, 'deadlock'],
    [1205, 'lock wait timeout'],
    [1040, 'too many connections'],
    [1146, 'no such table'],
    [1045, 'access denied'],
    [undefined, 'ECONNREFUSED'],
  ])('errno %s (%s) is transient: hold and retry', (errno) => {
    expect(isDataError(Object.assign(new Error('x'), { errno, code: 'X' }))).toBe(false)
  })
})

describe('backoffDelay', () => {
  it('grows exponentially from 100 ms', () => {
    const mid = () => 0.5
    expect([0, 1, 2, 3].map((attempt) => backoffDelay(attempt, 30_000, mid))).toEqual([100, 200, 400, 800])
  })

  it('is capped', () => {
    expect(backoffDelay(50, 30_000, () => 1)).toBe(30_000)
    expect(backoffDelay(50, 30_000, () => 0)).toBe(24_000)
  })
})
