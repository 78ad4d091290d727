// E2E: the consumer's store commits what it inserts whatever a server's session defaults are
// (a private MariaDB: the setting is global, and no other test may see it).
import { randomUUID } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { PrivateMariadb } from '../test-support/private-servers.js'
import { Store, type Row } from '../consumer-service/src/store.js'

const logger = pino({ level: 'silent' })
const row = (): Row => [randomUUID(), 7, 'login', '2026-02-20 04:30:00.123', '{"a":1}', '2026-02-20 04:30:01.000']

// Each would leave the store's INSERTs in a transaction never committed: CHAIN through the
// probe's ROLLBACK, which starts the next transaction at once.
describe.each(['autocommit = 0', "completion_type = 'CHAIN'"])('Store on a private MariaDB with %s', (setting) => {
  it('commits what it inserts: another session counts every row, and the probe leaves none', async () => {
    const server = await PrivateMariadb.start()
    let store: Store | undefined
    try {
      await server.sql(`SET GLOBAL ${setting}`)
      store = new Store({
        ...server.address,
        ...server.user,
        database: server.database,
        logger,
      })
      await store.prepare()
      await store.prepare() // the probe, in its transaction, on a session of those defaults
      const rows = Array.from({ length: 10 }, row)
      expect((await store.insert(rows, (r) => r)).inserted).toBe(10)
      const count = () =>
        server.sql<{ n: number; probes: number }[]>(
          `SELECT COUNT(*) AS n, COALESCE(SUM(event_type = 'probe'), 0) AS probes FROM ${server.database}.user_activities`,
        )
      const [seen] = await count()
      expect(Number(seen?.n)).toBe(10)
      expect(Number(seen?.probes)).toBe(0)
      await store.close()
      store = undefined
      const [after] = await count()
      expect(Number(after?.n)).toBe(10)
    } finally {
      await store?.close()
      await server.stop()
    }
  }, 180_000)
})
