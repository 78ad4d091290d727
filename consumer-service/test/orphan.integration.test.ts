// Integration: a transaction whose link dies between its INSERT and its COMMIT, the server never
// told (a partition, a paused consumer). Its locks must not outlive it for long: the server ends
// such a session, so that the batch, retried on another session, is stored soon.
import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { blackholeAfter } from '../../test-support/blackhole.js'
import { countsDrift, createTestDatabase, database } from '../../test-support/database.js'
import { Store, TransientStoreError, type Row } from '../src/store.js'

const logger = pino({ level: 'silent' })
const row = (): Row => [randomUUID(), 7, 'login', '2026-02-20 04:30:00.123', '{"a":1}', '2026-02-20 04:30:01.000']

describe('a transaction cut off before its COMMIT', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>
  beforeAll(async () => {
    db = await createTestDatabase()
  })
  afterAll(async () => {
    await db.drop()
  })

  it('leaves no idle session to the server to end: a store idle past wait_timeout inserts at once', async () => {
    // The statement bound of 2 s makes the sessions' wait_timeout 5 s.
    const store = new Store({ ...database, database: db.name, logger, queryTimeoutMs: 2000 })
    try {
      await store.applySchema()
      expect((await store.insert([row(), row()], (r) => r)).inserted).toBe(2)
      await new Promise((resolve) => setTimeout(resolve, 7000))
      expect((await store.insert([row()], (r) => r)).inserted).toBe(1)
    } finally {
      await store.close()
    }
  }, 30_000)

  it('holds its rows only briefly: the retried batch is stored within seconds, counted once', async () => {
    const direct = new Store({ ...database, database: db.name, logger, queryTimeoutMs: 2000 })
    await direct.applySchema()
    const hole = await blackholeAfter('INSERT INTO user_activity_counts', database)
    const cut = new Store({ ...database, port: hole.port, database: db.name, logger, queryTimeoutMs: 2000 })
    const batch = [row(), row(), row()]
    try {
      // The INSERT runs on the server; the counts and the COMMIT never arrive.
      await expect(cut.insert(batch, (r) => r)).rejects.toBeInstanceOf(TransientStoreError)
      // The batch again, on a sound session, as the consumer retries it: it waits on the orphan's
      // row locks until the server ends the orphan.
      const started = Date.now()
      let outcome: Awaited<ReturnType<Store['insert']>> | undefined
      while (!outcome && Date.now() - started < 40_000) {
        outcome = await direct
          .insert(batch, (r) => r)
          .catch((err: unknown) => {
            if (!(err instanceof TransientStoreError)) throw err
            return undefined
          })
      }
      const storedAfterMs = Date.now() - started
      console.log(`[orphan] the retried batch stored ${storedAfterMs} ms after the cut`)
      expect(outcome?.inserted).toBe(3)
      expect(storedAfterMs).toBeLessThan(15_000)
      expect(await countsDrift(db.name)).toEqual([])
    } finally {
      hole.close()
      await cut.close()
      await direct.close()
    }
  }, 60_000)
})
