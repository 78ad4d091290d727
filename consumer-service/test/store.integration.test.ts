// Integration: the store against the real MariaDB/MySQL, in a database of its own.
import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { RowDataPacket } from 'mysql2/promise'
import { pino } from 'pino'
import { connectDatabase, createTestDatabase, database } from '../../test-support/database.js'
import { Store, type Row } from '../src/store.js'

let db: Awaited<ReturnType<typeof createTestDatabase>>
let store: Store

beforeAll(async () => {
  db = await createTestDatabase()
  store = new Store({ ...database, database: db.name, logger: pino({ level: 'silent' }) })
})
afterAll(async () => {
  await store.close()
  await db.drop()
})

const row = (overrides: Partial<Record<number, unknown>> = {}): Row =>
  Object.assign([randomUUID(), 7, 'login', '2026-02-20 04:30:00.123', '{"a":1}'], overrides) as Row

describe('Store', () => {
  it('applies db/init.sql to an empty database, and again without harm', async () => {
    await store.applySchema()
    await store.applySchema()
    const connection = await connectDatabase(db.name)
    const [columns] = await connection.query<RowDataPacket[]>('SHOW COLUMNS FROM user_activities')
    await connection.end()
    expect(columns.map((c) => c.Field)).toEqual([
      'id',
      'event_id',
      'user_id',
      'event_type',
      'timestamp',
      'metadata',
      'created_at',
    ])
  })

  it('counts new rows, treats a known event_id as stored, and isolates the row the database refuses', async () => {
    await store.applySchema()
    const known = row()
    expect((await store.insert([known], (r) => r)).inserted).toBe(1)

    const fresh = [row(), row(), row()]
    const refused = row({ 1: 2147483648 }) // out of INT range
    const outcome = await store.insert([fresh[0], known, refused, fresh[1], fresh[2]] as Row[], (r) => r)
    expect(outcome.inserted).toBe(3)
    // Stored in event_id order (see below), whatever order they came in.
    expect(new Set(outcome.stored)).toEqual(new Set([fresh[0], known, fresh[1], fresh[2]]))
    expect(outcome.stored).toHaveLength(4)
    expect(outcome.rejected.map((r) => r.item)).toEqual([refused])
    expect(outcome.rejected[0]?.err.message).toMatch(/out of range/i)
  })

  it('stores timestamps as given, in UTC, whatever the server time zone', async () => {
    await store.applySchema()
    const r = row({ 3: '2026-07-01 23:59:59.999' })
    await store.insert([r], (x) => x)
    const connection = await connectDatabase(db.name)
    await connection.query("SET time_zone = '+09:00'")
    const [result] = await connection.query<RowDataPacket[]>(
      'SELECT DATE_FORMAT(`timestamp`, "%Y-%m-%d %H:%i:%s.%f") AS t FROM user_activities WHERE event_id = ?',
      [r[0]],
    )
    await connection.end()
    expect(result[0]?.t).toBe('2026-07-01 23:59:59.999000')
  })

  it('answers ping while the database is up', async () => {
    expect(await store.ping()).toBe(true)
  })

  it('inserts a batch in event_id order, so that concurrent consumers lock the index in one order', async () => {
    await store.applySchema()
    const ids = ['c', 'a', 'd', 'b'].map((letter) => `${letter}${randomUUID().slice(1)}`)
    const outcome = await store.insert(ids, (id) => row({ 0: id }))
    expect(outcome.stored).toEqual([...ids].sort())
    const connection = await connectDatabase(db.name)
    const [rows] = await connection.query<RowDataPacket[]>(
      'SELECT event_id FROM user_activities WHERE event_id IN (?) ORDER BY id',
      [ids],
    )
    await connection.end()
    expect(rows.map((r) => r.event_id)).toEqual([...ids].sort())
  })
})
