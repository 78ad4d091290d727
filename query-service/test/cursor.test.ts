// The timeline cursor: what it carries comes back only unaltered and with the same query.
import { describe, expect, it } from 'vitest'
import { Cursors } from '../src/cursor.js'

const position = { timestamp: '2026-02-20 10:00:00.123', id: '9007199254740993' }
const scope = JSON.stringify([7, null, null, null])

describe('Cursors', () => {
  const cursors = new Cursors()

  it('gives back the position it was made from, ids past 2^53 intact', () => {
    expect(cursors.decode(cursors.encode(position, scope), scope)).toEqual(position)
  })

  it('refuses a cursor of another query, an edited one, a cut one, and garbage', () => {
    const cursor = cursors.encode(position, scope)
    expect(cursors.decode(cursor, JSON.stringify([8, null, null, null]))).toBeUndefined()
    const [payload, mac] = cursor.split('.') as [string, string]
    const forged = Buffer.from(JSON.stringify(['2026-02-20 10:00:00.123', '1'])).toString('base64url')
    expect(cursors.decode(`${forged}.${mac}`, scope)).toBeUndefined()
    expect(cursors.decode(`${payload}.${mac.slice(0, -2)}`, scope)).toBeUndefined()
    expect(cursors.decode(payload, scope)).toBeUndefined()
    expect(cursors.decode(`${cursor}.x`, scope)).toBeUndefined()
    for (const junk of ['', '.', 'a.b', '%%%.!!!']) expect(cursors.decode(junk, scope)).toBeUndefined()
  })

  it('refuses a cursor signed with another secret', () => {
    const other = new Cursors('another secret')
    expect(other.decode(cursors.encode(position, scope), scope)).toBeUndefined()
  })
})
