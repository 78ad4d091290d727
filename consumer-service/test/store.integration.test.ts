// Integration: the store against the real MariaDB/MySQL, in a database of its own.
import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { RowDataPacket } from 'mysql2/promise'
import { pino } from 'pino'
import { connectDatabase, createTestDatabase, createTestUser, database } from '../../test-support/database.js'
import { Store, TransientStoreError, type Row } from '../src/store.js'

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
  Object.assign(
    [randomUUID(), 7, 'login', '2026-02-20 04:30:00.123', '{"a":1}', '2026-02-20 04:30:01.000'],
    overrides,
  ) as Row

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
      'received_at',
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

  it('is ready only when a write would succeed: not while INSERT is revoked or read_only, though it answers', async () => {
    const user = await createTestUser()
    const own = new Store({
      ...database,
      user: user.user,
      password: user.password,
      database: db.name,
      logger: pino({ level: 'silent' }),
    })
    const admin = await connectDatabase()
    try {
      await store.applySchema()
      await user.grant(`GRANT SELECT, UPDATE, CREATE ON \`${db.name}\`.* TO ??`)
      await user.grant(`GRANT INSERT ON \`${db.name}\`.user_activities TO ??`)
      await user.grant(`GRANT INSERT ON \`${db.name}\`.user_activity_counts TO ??`)
      await own.prepare() // the first time: the schema
      await own.prepare()

      await user.grant(`REVOKE INSERT ON \`${db.name}\`.user_activities FROM ??`)
      expect(await own.ping()).toBe(true)
      await expect(own.prepare()).rejects.toThrow(/INSERT command denied/)
      await expect(own.insert([row()], (r) => r)).rejects.toBeInstanceOf(TransientStoreError)
      expect(await own.health()).toBe('failing')
      await user.grant(`GRANT INSERT ON \`${db.name}\`.user_activities TO ??`)
      await own.prepare()
      expect(await own.health()).toBe('up')

      // Root bypasses read_only, so the other users of this server are not affected; short.
      try {
        await admin.query('SET GLOBAL read_only = 1')
        expect(await own.ping()).toBe(true)
        await expect(own.prepare()).rejects.toThrow(/read-only|read_only/i)
        expect(await own.health()).toBe('failing')
      } finally {
        await admin.query('SET GLOBAL read_only = 0')
      }
      expect((await own.insert([row()], (r) => r)).inserted).toBe(1)
      expect(await own.health()).toBe('up')
    } finally {
      await admin.query('SET GLOBAL read_only = 0')
      await admin.end()
      await own.close()
      await user.drop()
    }
  })

  it('sees a grant restored at database level without a restart: refused connections are replaced', async () => {
    const user = await createTestUser()
    const own = new Store({
      ...database,
      user: user.user,
      password: user.password,
      database: db.name,
      logger: pino({ level: 'silent' }),
    })
    try {
      await store.applySchema()
      await user.grant(`GRANT SELECT, UPDATE, CREATE ON \`${db.name}\`.* TO ??`)
      await expect(own.insert([row()], (r) => r)).rejects.toThrow(/INSERT command denied/)
      // MariaDB and MySQL apply a database-level grant to a session at its next USE only.
      await user.grant(`GRANT INSERT ON \`${db.name}\`.* TO ??`)
      expect((await own.insert([row()], (r) => r)).inserted).toBe(1)
    } finally {
      await own.close()
      await user.drop()
    }
  })

  it('creates a dropped or renamed-away table again, and the retried insert is stored', async () => {
    const own = new Store({ ...database, database: db.name, logger: pino({ level: 'silent' }), schemaRetryMs: 200 })
    const admin = await connectDatabase(db.name)
    const retried = async (r: Row) => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await own.insert([r], (x) => x)
        } catch (err) {
          if (!(err instanceof TransientStoreError) || attempt >= 20) throw err
          await new Promise((resolve) => setTimeout(resolve, 250))
        }
      }
    }
    try {
      await own.prepare()
      // Gone while the worker waits to consume: the probe, not an INSERT, finds it missing.
      await admin.query('DROP TABLE user_activities')
      await own.prepare()
      const [tables] = await admin.query<RowDataPacket[]>("SHOW TABLES LIKE 'user_activities'")
      expect(tables).toHaveLength(1)

      await admin.query('DROP TABLE user_activities')
      const first = row()
      expect((await retried(first)).inserted).toBe(1)
      await admin.query('RENAME TABLE user_activities TO user_activities_away')
      const second = row()
      expect((await retried(second)).inserted).toBe(1)
      const [rows] = await admin.query<RowDataPacket[]>('SELECT event_id FROM user_activities')
      expect(rows.map((r) => r.event_id)).toEqual([second[0]])
      expect(await own.health()).toBe('up')
    } finally {
      await admin.query('DROP TABLE IF EXISTS user_activities_away')
      await admin.end()
      await own.close()
    }
  })

  it("stores a row refused as too large once the server's max_allowed_packet is raised, without a restart", async () => {
    const admin = await connectDatabase()
    const [[limit]] = (await admin.query('SELECT @@GLOBAL.max_allowed_packet AS bytes')) as unknown as [
      { bytes: number }[],
    ]
    const original = Number(limit?.bytes)
    let own: Store | undefined
    try {
      await store.applySchema()
      // Set before the store connects: its sessions take the lowered limit.
      await admin.query('SET GLOBAL max_allowed_packet = 1048576')
      own = new Store({ ...database, database: db.name, logger: pino({ level: 'silent' }) })
      await own.prepare()
      const small = row()
      expect((await own.insert([small], (r) => r)).inserted).toBe(1)
      // 700 KB of quotes: about 2.8 MB of SQL once escaped.
      const big = row({ 4: JSON.stringify({ quotes: '"'.repeat(700_000) }) })
      const refused = await own.insert([big], (r) => r)
      expect(refused.rejected.map((r) => r.err.name)).toEqual(['RowTooLargeError'])

      await admin.query('SET GLOBAL max_allowed_packet = ?', [Math.max(original, 16 * 2 ** 20)])
      const replayed = await own.insert([big], (r) => r)
      expect(replayed.rejected.map((r) => r.err.message)).toEqual([])
      expect(replayed.inserted).toBe(1)
    } finally {
      await admin.query('SET GLOBAL max_allowed_packet = ?', [original])
      await admin.end()
      await own?.close()
    }
  })
})
