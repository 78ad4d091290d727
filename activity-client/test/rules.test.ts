// Unit: the client's rules say what the server's contract says: an event is refused by track()
// exactly when the producer would refuse it, field by field.
import { describe, expect, it } from 'vitest'
import { parseEvent } from 'event-contract'
import { checkEvent, uuidv7 } from '../src/index.js'

const base = { user_id: 1, event_type: 'login', timestamp: '2026-02-20T10:00:00Z' }
const deep = (levels: number): Record<string, unknown> => (levels <= 1 ? {} : { a: deep(levels - 1) })

const cases: [string, Record<string, unknown>][] = [
  ['valid', base],
  ['with metadata and id', { ...base, metadata: { page: '/x', n: [1, { b: null }] }, event_id: uuidv7() }],
  ['metadata null', { ...base, metadata: null }],
  ['upper-case event_id', { ...base, event_id: uuidv7().toUpperCase() }],
  ['user_id 0', { ...base, user_id: 0 }],
  ['user_id negative', { ...base, user_id: -5 }],
  ['user_id past INT', { ...base, user_id: 2147483648 }],
  ['user_id at INT', { ...base, user_id: 2147483647 }],
  ['user_id a fraction', { ...base, user_id: 1.5 }],
  ['user_id a string', { ...base, user_id: '1' }],
  ['user_id missing', { event_type: 'login', timestamp: base.timestamp }],
  ['event_type empty', { ...base, event_type: '' }],
  ['event_type 50 characters', { ...base, event_type: 'é'.repeat(50) }],
  ['event_type 51 characters', { ...base, event_type: 'x'.repeat(51) }],
  ['event_type 50 emoji', { ...base, event_type: '😀'.repeat(50) }],
  ['event_type with a newline', { ...base, event_type: 'a\nb' }],
  ['event_type a lone surrogate', { ...base, event_type: 'a\ud800' }],
  ['event_type a number', { ...base, event_type: 5 }],
  ['timestamp with offset', { ...base, timestamp: '2026-02-20T10:00:00+05:30' }],
  ['timestamp without offset', { ...base, timestamp: '2026-02-20T10:00:00.123456' }],
  ['timestamp with a space', { ...base, timestamp: '2026-02-20 10:00:00Z' }],
  ['timestamp 30 February', { ...base, timestamp: '2026-02-30T10:00:00Z' }],
  ['timestamp hour 24', { ...base, timestamp: '2026-02-20T24:00:00Z' }],
  ['timestamp year 999', { ...base, timestamp: '0999-02-20T10:00:00Z' }],
  ['timestamp date only', { ...base, timestamp: '2026-02-20' }],
  ['timestamp garbage', { ...base, timestamp: 'yesterday' }],
  ['timestamp missing', { user_id: 1, event_type: 'login' }],
  ['metadata a list', { ...base, metadata: [1, 2] }],
  ['metadata a string', { ...base, metadata: 'x' }],
  ['metadata 16 deep', { ...base, metadata: deep(16) }],
  ['metadata 17 deep', { ...base, metadata: deep(17) }],
  ['metadata a lone surrogate', { ...base, metadata: { a: '\udc00' } }],
  ['metadata key a lone surrogate', { ...base, metadata: { ['\udc00']: 1 } }],
  ['event_id not a UUID', { ...base, event_id: 'abc' }],
  ['event_id nil', { ...base, event_id: '00000000-0000-0000-0000-000000000000' }],
  ['event_id max', { ...base, event_id: 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF' }],
]

describe('the client refuses what the server refuses', () => {
  it.each(cases)('%s', (_, event) => {
    const server = parseEvent(structuredClone(event))
    const fields = (loc: (string | number)[][]) => [...new Set(loc.map((l) => String(l[1] ?? 'body')))].sort()
    const client = checkEvent(event)
    expect(client.length === 0).toBe(server.ok)
    if (!server.ok) expect(fields(client.map((d) => d.loc))).toEqual(fields(server.errors.map((d) => d.loc)))
  })
})

describe('uuidv7', () => {
  it('is a version 7 UUID of now, ordered by time, unique', () => {
    const ids = Array.from({ length: 1000 }, (_, i) => uuidv7(1_700_000_000_000 + i))
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    expect([...ids].sort()).toEqual(ids)
    expect(new Set(ids).size).toBe(ids.length)
    expect(parseInt(uuidv7(1_700_000_000_000).replace(/-/g, '').slice(0, 12), 16)).toBe(1_700_000_000_000)
  })
})
