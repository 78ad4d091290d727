// Integration: the hourly counts kept with the rows, on the real MariaDB/MySQL: exact whatever
// the duplicates, the refused rows and the races between sessions, and for a table that
// predates them (filled once, from its rows, when the counts table is created).
import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { RowDataPacket } from 'mysql2/promise'
import { pino } from 'pino'
import { connectDatabase, countsDrift, createTestDatabase, database } from '../../test-support/database.js'
import { Store, type Row } from '../src/store.js'

const logger = pino({ level: 'silent' })
const row = (overrides: Partial<Record<number, unknown>> = {}): Row =>
  Object.assign(
    [randomUUID(), 7, 'login', '2026-02-20 04:30:00.123', '{"a":1}', '2026-02-20 04:30:01.000'],
    overrides,
  ) as Row

/** The table before received_at and the counts. */
const OLD_SCHEMA = `CREATE TABLE user_activities (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  event_id CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  user_id INT NOT NULL, event_type VARCHAR(50) NOT NULL, \`timestamp\` DATETIME(3) NOT NULL,
  metadata JSON, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id), UNIQUE KEY uq_user_activities_event_id (event_id),
  KEY idx_user_activities_user_id_timestamp (user_id, \`timestamp\`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci`

async function counted(databaseName: string): Promise<Record<string, number>> {
  const connection = await connectDatabase(databaseName)
  try {
    const [rows] = await connection.query<RowDataPacket[]>(
      "SELECT DATE_FORMAT(bucket_start, '%Y-%m-%dT%H') AS hour, event_type, event_count FROM user_activity_counts",
    )
    return Object.fromEntries(rows.map((r) => [`${r.hour as string} ${r.event_type as string}`, Number(r.event_count)]))
  } finally {
    await connection.end()
  }
}

describe('counts', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>
  let store: Store
  beforeAll(async () => {
    db = await createTestDatabase()
    store = new Store({ ...database, database: db.name, logger })
    await store.applySchema()
  })
  afterAll(async () => {
    await store.close()
    await db.drop()
  })

  it('counts the rows an INSERT adds: not a known event_id, not one given twice, not a refused row', async () => {
    const known = row({ 2: 'logout' })
    await store.insert([known], (r) => r)
    const twice = row()
    const batch = [
      row(),
      twice,
      [...twice] as Row,
      known,
      row({ 1: 2147483648 }), // refused: out of INT range
      row({ 2: 'page_view', 3: '2026-02-20 05:59:59.999' }),
      row({ 0: twice[0].toUpperCase() }), // the same event_id: it compares case-insensitively
    ]
    const outcome = await store.insert(batch, (r) => r)
    expect(outcome.inserted).toBe(3)
    expect(outcome.rejected).toHaveLength(1)
    expect(await counted(db.name)).toEqual({
      '2026-02-20T04 login': 2,
      '2026-02-20T04 logout': 1,
      '2026-02-20T05 page_view': 1,
    })
    expect(await countsDrift(db.name)).toEqual([])
  })

  it('stays exact while two sessions store the same events at once, in different orders', async () => {
    const other = new Store({ ...database, database: db.name, logger })
    try {
      for (let round = 0; round < 20; round++) {
        const shared = Array.from({ length: 50 }, (_, i) =>
          row({ 2: `type_${i % 3}`, 3: `2026-03-0${1 + (i % 5)} 10:00:00.000` }),
        )
        const own = () => Array.from({ length: 10 }, () => row({ 2: 'own' }))
        const outcomes = await Promise.all([
          store.insert([...shared, ...own()], (r) => r),
          other.insert([...own(), ...shared].reverse(), (r) => r),
        ])
        expect(outcomes[0].inserted + outcomes[1].inserted).toBe(70)
      }
      expect(await countsDrift(db.name)).toEqual([])
    } finally {
      await other.close()
    }
  })
})

describe('a table of an earlier version', () => {
  it('is changed without stalling the table behind a long transaction: the change waits 2 s, then later', async () => {
    const db = await createTestDatabase()
    const store = new Store({ ...database, database: db.name, logger, queryTimeoutMs: 10_000 })
    const holder = await connectDatabase(db.name)
    const reader = await connectDatabase(db.name)
    try {
      await holder.query(OLD_SCHEMA)
      await holder.query('START TRANSACTION')
      await holder.query('SELECT COUNT(*) FROM user_activities') // holds the table's metadata lock
      const started = Date.now()
      const applied = store.applySchema().then(
        () => 'applied',
        (err: Error) => err.message,
      )
      await new Promise((resolve) => setTimeout(resolve, 200))
      // Another session's read while the change waits.
      const readStarted = Date.now()
      await reader.query('SELECT COUNT(*) FROM user_activities')
      const readMs = Date.now() - readStarted
      expect(await applied).toMatch(/lock wait timeout/i)
      const refusedMs = Date.now() - started
      console.log(`[counts] the change gave up after ${refusedMs} ms; a read meanwhile took ${readMs} ms`)
      expect(refusedMs).toBeLessThan(5000)
      expect(readMs).toBeLessThan(5000)
      await holder.query('COMMIT')
      await store.applySchema()
      const [columns] = await reader.query<RowDataPacket[]>('SHOW COLUMNS FROM user_activities')
      expect(columns.map((c) => c.Field)).toContain('received_at')
    } finally {
      await holder.end()
      await reader.end()
      await store.close()
      await db.drop()
    }
  })

  it('gains received_at, and counts filled once from its rows; applied again, nothing is counted twice', async () => {
    const db = await createTestDatabase()
    const store = new Store({ ...database, database: db.name, logger })
    const connection = await connectDatabase(db.name)
    try {
      await connection.query(OLD_SCHEMA)
      const old = Array.from({ length: 1000 }, (_, i) => [
        randomUUID(),
        1 + (i % 10),
        ['login', 'Login', 'page_view'][i % 3],
        `2026-02-2${i % 3} 0${i % 4}:15:00.000`,
        '{}',
      ])
      await connection.query(
        'INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`, metadata) VALUES ?',
        [old],
      )
      await store.applySchema()
      const [columns] = await connection.query<RowDataPacket[]>('SHOW COLUMNS FROM user_activities')
      expect(columns.map((c) => c.Field)).toContain('received_at')
      const [[nulls]] = (await connection.query(
        'SELECT COUNT(*) AS n FROM user_activities WHERE received_at IS NULL',
      )) as unknown as [{ n: number }[]]
      expect(Number(nulls?.n)).toBe(1000)
      expect(await countsDrift(db.name)).toEqual([])
      const [[total]] = (await connection.query(
        'SELECT SUM(event_count) AS n FROM user_activity_counts',
      )) as unknown as [{ n: string }[]]
      expect(Number(total?.n)).toBe(1000)

      await store.insert([row(), row({ 2: 'page_view' })], (r) => r)
      await store.applySchema()
      expect(await countsDrift(db.name)).toEqual([])
    } finally {
      await connection.end()
      await store.close()
      await db.drop()
    }
  })
})
