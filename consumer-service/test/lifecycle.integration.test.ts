// Integration: erasure and retention on the real MariaDB/MySQL. An erased user's events are not
// stored whenever they arrive (received before the erasure), their rows go in chunks, expired
// events go, the hourly counts follow exactly, and one process at a time removes.
import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { RowDataPacket } from 'mysql2/promise'
import { pino } from 'pino'
import { RECORD_ERASURE_SQL } from 'event-contract'
import { blackholeAfter } from '../../test-support/blackhole.js'
import { connectDatabase, countsDrift, createTestDatabase, database } from '../../test-support/database.js'
import { Lifecycle, lockName } from '../src/lifecycle.js'
import { EXIT, main } from '../src/erase.js'
import { CHUNK_ROWS } from '../src/removal.js'
import { Store, type Row } from '../src/store.js'

const logger = pino({ level: 'silent' })
const iso = (ms: number) => new Date(ms).toISOString().slice(0, 23).replace('T', ' ')
const DAY = 86_400_000

/** A row of `user`, received `receivedAgoMs` ago, its timestamp `ageMs` old. */
const row = (user: number, { ageMs = 0, receivedAgoMs = 0, type = 'login' } = {}): Row => [
  randomUUID(),
  user,
  type,
  iso(Date.now() - ageMs),
  '{"a":1}',
  iso(Date.now() - receivedAgoMs),
]

let db: Awaited<ReturnType<typeof createTestDatabase>>
let store: Store
let sql: Awaited<ReturnType<typeof connectDatabase>>
const lifecycle = (retentionDays?: number) =>
  new Lifecycle({ connection: { ...database, database: db.name }, logger, retentionDays })

async function rowsOf(user: number): Promise<number> {
  const [[row]] = await sql.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM user_activities WHERE user_id = ?', [
    user,
  ])
  return Number(row?.n)
}

async function erase(user: number): Promise<string> {
  await sql.query(RECORD_ERASURE_SQL[0], [user])
  const [[row]] = await sql.query<RowDataPacket[]>(RECORD_ERASURE_SQL[1], [user])
  return String(row?.erased_before)
}

beforeAll(async () => {
  db = await createTestDatabase()
  store = new Store({ ...database, database: db.name, logger })
  await store.applySchema()
  sql = await connectDatabase(db.name)
})
afterAll(async () => {
  await sql.end()
  await store.close()
  await db.drop()
})
beforeEach(async () => {
  await sql.query('DELETE FROM user_activities')
  await sql.query('DELETE FROM user_activity_counts')
  await sql.query('DELETE FROM user_erasures')
})

describe('erasure', () => {
  it("drops an erased user's events received before the erasure, keeps those after, counts exact", async () => {
    await erase(11)
    const before = [row(11, { receivedAgoMs: 60_000 }), row(11, { receivedAgoMs: 60_000 })]
    const unknown: Row = [...row(11)]
    unknown[5] = null // stored by an earlier version: no receipt time
    const after = row(11, { receivedAgoMs: -60_000 })
    const others = [row(12), row(13, { type: 'logout' })]
    const outcome = await store.insert([...before, unknown, after, ...others], (r) => r)
    expect(outcome).toMatchObject({ inserted: 3, erased: 3, rejected: [] })
    expect(outcome.stored).toHaveLength(6) // all settled: the erased ones are done with too
    expect(await rowsOf(11)).toBe(1)
    expect(await countsDrift(db.name)).toEqual([])
  })

  it('removes the rows stored before, in chunks, the counts following; then marks it done', async () => {
    const stored = Array.from({ length: 2 * CHUNK_ROWS + 500 }, (_, i) =>
      row(21, { receivedAgoMs: 60_000, ageMs: (i % 48) * 3_600_000 }),
    )
    await store.insert(stored, (r) => r)
    await store.insert([row(22), row(22)], (r) => r)
    await erase(21)
    const outcome = await lifecycle().runOnce()
    expect(outcome).toEqual({ ran: true, erased: stored.length, expired: 0 })
    expect(await rowsOf(21)).toBe(0)
    expect(await rowsOf(22)).toBe(2)
    expect(await countsDrift(db.name)).toEqual([])
    const [[record]] = await sql.query<RowDataPacket[]>('SELECT completed_at FROM user_erasures WHERE user_id = 21')
    expect(record?.completed_at).not.toBeNull()
  })

  it('leaves no row of a batch whose INSERT waited while the erasure was recorded and done', async () => {
    // Another session holds the batch's event_id (for another user), so the batch's INSERT waits
    // on it; meanwhile the user is erased and the erasure done. Then the INSERT goes through: its
    // transaction must see the erasure, though it began before it.
    const blocked = row(31)
    const holder = await connectDatabase(db.name)
    try {
      await holder.query('START TRANSACTION')
      await holder.query(
        'INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`) VALUES (?, 99, ?, ?)',
        [blocked[0], 'login', blocked[3]],
      )
      const storing = store.insert([blocked, row(32)], (r) => r)
      await new Promise((resolve) => setTimeout(resolve, 300))
      await erase(31)
      expect(await lifecycle().runOnce()).toMatchObject({ ran: true, erased: 0 })
      await holder.query('ROLLBACK')
      expect(await storing).toMatchObject({ inserted: 1, erased: 1 })
    } finally {
      await holder.end()
    }
    expect(await rowsOf(31)).toBe(0)
    expect(await rowsOf(32)).toBe(1)
    expect(await countsDrift(db.name)).toEqual([])
  })

  it('drops the rest of a batch message whose first part was stored before the erasure', async () => {
    // A batch message's events are stored in parts (CONSUMER_BATCH_SIZE): the erasure comes
    // between two. The first part's rows go with the erasure, the second is never stored.
    const message = Array.from({ length: 200 }, () => row(33, { receivedAgoMs: 1000 }))
    await store.insert(message.slice(0, 100), (r) => r)
    await erase(33)
    expect((await store.insert(message.slice(100), (r) => r)).erased).toBe(100)
    await lifecycle().runOnce()
    expect(await rowsOf(33)).toBe(0)
    expect(await countsDrift(db.name)).toEqual([])
  })
  it('removes again the rows of an erased user that came back (a restore) after it was done', async () => {
    // An operator restores the table (a backup, a table renamed away and back): rows the erasure
    // had removed, or never saw, are there again. The erasure stays recorded: they go again.
    await store.insert([row(34, { receivedAgoMs: 60_000 }), row(34, { receivedAgoMs: 60_000 }), row(35)], (r) => r)
    await sql.query('DROP TABLE IF EXISTS restore_copy')
    await sql.query('CREATE TABLE restore_copy AS SELECT * FROM user_activities WHERE user_id = 34')
    try {
      await erase(34)
      const after = row(34, { receivedAgoMs: -60_000 })
      await store.insert([after], (r) => r)
      expect(await lifecycle().runOnce()).toMatchObject({ erased: 2 })
      await sql.query('INSERT INTO user_activities SELECT * FROM restore_copy')
      expect(await rowsOf(34)).toBe(3)
      expect(await lifecycle().runOnce()).toMatchObject({ ran: true, erased: 2 })
      expect(await rowsOf(34)).toBe(1) // the event sent after the erasure stays
      expect(await rowsOf(35)).toBe(1)
      const [[record]] = await sql.query<RowDataPacket[]>('SELECT completed_at FROM user_erasures WHERE user_id = 34')
      expect(record?.completed_at).not.toBeNull()
    } finally {
      await sql.query('DROP TABLE IF EXISTS restore_copy')
    }
  })
})

describe('the removal cut off halfway', () => {
  it('holds no count a batch needs: a batch of the same hour and type is stored at once', async () => {
    // A removal whose link goes silent (a paused process, a partition) once it sends its DELETE:
    // whatever it sent before must not lock the hourly counts every batch of that hour adds to.
    const hour = iso(Date.now()).slice(0, 13)
    const at = `${hour}:10:00.000`
    await store.insert(
      [0, 1, 2].map(() => Object.assign(row(91), { 3: at }) as Row),
      (r) => r,
    )
    await erase(91)
    const hole = await blackholeAfter('DELETE FROM user_activities WHERE', database)
    const remover = new Lifecycle({ connection: { ...database, port: hole.port, database: db.name }, logger })
    const removing = remover.runOnce().catch((err: unknown) => err)
    try {
      await new Promise((resolve) => setTimeout(resolve, 500))
      const started = Date.now()
      await store.insert([Object.assign(row(92), { 3: at }) as Row], (r) => r)
      expect(Date.now() - started).toBeLessThan(1000)
    } finally {
      hole.close()
      await removing
    }
    await lifecycle().runOnce()
    expect(await rowsOf(91)).toBe(0)
    expect(await countsDrift(db.name)).toEqual([])
  })
})

describe('retention', () => {
  it('removes events older than RETENTION_DAYS, keeps the younger ones, the counts following', async () => {
    const old = Array.from({ length: CHUNK_ROWS + 10 }, () => row(41, { ageMs: 40 * DAY }))
    const young = Array.from({ length: 20 }, () => row(41, { ageMs: 10 * DAY }))
    // Interleaved in id order, as events sent late are.
    await store.insert(old.slice(0, 500), (r) => r)
    await store.insert(young, (r) => r)
    await store.insert(old.slice(500), (r) => r)
    expect(await lifecycle().runOnce()).toEqual({ ran: true, erased: 0, expired: 0 })
    expect(await lifecycle(30).runOnce()).toEqual({ ran: true, erased: 0, expired: old.length })
    expect(await rowsOf(41)).toBe(young.length)
    expect(await countsDrift(db.name)).toEqual([])
  })

  it('runs in one process at a time: the other finds the lock taken and leaves the work', async () => {
    await store.insert([row(51, { ageMs: 40 * DAY })], (r) => r)
    const holder = await connectDatabase(db.name)
    try {
      await holder.query('SELECT GET_LOCK(?, 0)', [lockName(db.name)])
      expect(await lifecycle(30).runOnce()).toEqual({ ran: false, erased: 0, expired: 0 })
      expect(await rowsOf(51)).toBe(1)
    } finally {
      await holder.end()
    }
    const both = await Promise.all([lifecycle(30).runOnce(), lifecycle(30).runOnce()])
    expect(both.reduce((sum, outcome) => sum + outcome.expired, 0)).toBe(1)
    expect(await rowsOf(51)).toBe(0)
  })
})

describe('the schema of the previous version', () => {
  it('gains the erasures without touching a populated table', async () => {
    const scratch = await createTestDatabase()
    const own = new Store({ ...database, database: scratch.name, logger })
    const connection = await connectDatabase(scratch.name)
    try {
      await own.applySchema()
      await own.insert(
        Array.from({ length: 300 }, () => row(61)),
        (r) => r,
      )
      await connection.query('DROP TABLE user_erasures') // as the previous version left it
      await own.applySchema()
      await own.applySchema()
      const [[rows]] = await connection.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM user_activities')
      expect(Number(rows?.n)).toBe(300)
      await connection.query('INSERT INTO user_erasures (user_id, erased_before) VALUES (61, UTC_TIMESTAMP(3))')
      expect(await countsDrift(scratch.name)).toEqual([])
    } finally {
      await connection.end()
      await own.close()
      await scratch.drop()
    }
  })
})

describe('npm run erase', () => {
  const run = async (argv: string[], env: Record<string, string> = {}) => {
    const out: string[] = []
    const err: string[] = []
    const code = await main(
      argv,
      {
        MYSQL_HOST: database.host,
        MYSQL_PORT: String(database.port),
        MYSQL_USER: database.user,
        MYSQL_PASSWORD: database.password,
        MYSQL_DATABASE: db.name,
        ...env,
      },
      { out: (line) => out.push(line), err: (line) => err.push(line) },
    )
    return { code, out: out.join('\n'), err: err.join('\n') }
  }

  it('erases a user: records it, removes the rows, says so in JSON', async () => {
    await store.insert([row(81, { receivedAgoMs: 1000 }), row(81, { receivedAgoMs: 1000 }), row(82)], (r) => r)
    const { code, out } = await run(['--user', '81', '--json'])
    expect(code).toBe(EXIT.ok)
    expect(JSON.parse(out)).toMatchObject({ status: 'accepted', user_id: 81, rows_removed: 2 })
    expect(await rowsOf(81)).toBe(0)
    expect(await rowsOf(82)).toBe(1)
    // Queued events of the user, received before, are not stored afterwards.
    const outcome = await store.insert([row(81, { receivedAgoMs: 60_000 })], (r) => r)
    expect(outcome.erased).toBe(1)
    expect(await countsDrift(db.name)).toEqual([])
  })

  it('records the erasure and exits 0 when a row it would remove stays locked (a consumer removes it)', async () => {
    const stuck = row(83, { receivedAgoMs: 1000 })
    await store.insert([stuck], (r) => r)
    const holder = await connectDatabase(db.name)
    try {
      await holder.query('START TRANSACTION')
      await holder.query('SELECT id FROM user_activities WHERE event_id = ? FOR UPDATE', [stuck[0]])
      const { code, out, err } = await run(['--user', '83', '--json'])
      expect(code).toBe(EXIT.ok)
      expect(JSON.parse(out)).toMatchObject({ status: 'accepted', user_id: 83, rows_removed: null })
      expect(err).toMatch(/a consumer removes them/)
    } finally {
      await holder.end()
    }
    expect(await lifecycle().runOnce()).toMatchObject({ ran: true, erased: 1 })
    expect(await rowsOf(83)).toBe(0)
  }, 60_000)

  it.each([[[]], [['--user', 'abc']], [['--user', '0']], [['--user', '1.5']], [['--nope']]])(
    'refuses %j with exit code 2 and the usage',
    async (argv) => {
      const { code, err } = await run(argv)
      expect(code).toBe(EXIT.usage)
      expect(err).toMatch(/Usage: npm run erase/)
    },
  )

  it('exits 3 when MySQL is not reachable', async () => {
    const { code, err } = await run(['--user', '5'], { MYSQL_HOST: '127.0.0.1', MYSQL_PORT: '1' })
    expect(code).toBe(EXIT.unreachable)
    expect(err).toMatch(/not reachable/)
  })
})
