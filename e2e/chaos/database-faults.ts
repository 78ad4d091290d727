// Faults of the database: grants revoked, read-only, the table renamed away or its rows locked,
// sessions without autocommit, the packet limit lowered.
import { metricValue } from '../../test-support/index.js'
import type { Cluster, Service } from './cluster.js'
import { fixed, type Fault } from './faults.js'

const svc = (c: Cluster) => `'${c.mariadb.user.user}'@'%'`

/** Ends the services' database sessions, so that a database-level change applies to all at once. */
async function killSessions(c: Cluster): Promise<void> {
  const rows = await c.mariadb.sql<{ Id: number }[]>(
    'SELECT ID AS Id FROM information_schema.PROCESSLIST WHERE USER = ?',
    [c.mariadb.user.user],
  )
  for (const row of rows) await c.mariadb.sql(`KILL CONNECTION ${Number(row.Id)}`).catch(() => undefined)
}

/**
 * DESIGN: a database that refuses writes is not "up": a consumer's /health must say 503 within
 * 10 s of its first failed write, and 200 again after its next success. One that tried no write
 * meanwhile (its broker link frozen, say) has nothing to say yet; its failed INSERTs are counted
 * in consumer_database_retries_total. One that stored a batch meanwhile could write after all
 * (a renamed table it created again, a failure its next retry 100 ms later cured, between two
 * of these polls): 200 is its right answer.
 */
const HEALTH_BOUND_MS = 10_000
async function counts(s: Service): Promise<{ retries: number; batches: number }> {
  const text = await s.metrics()
  return {
    retries: metricValue(text, 'consumer_database_retries_total') ?? 0,
    batches: metricValue(text, 'consumer_batches_total') ?? 0,
  }
}
/** Grew from `before` to `after`; restarted meanwhile (NaN, or fewer), above 0. */
function grew(before: number, after: number): boolean {
  return Number.isNaN(before) || after < before ? after > 0 : after > before
}
function expectUnhealthy(c: Cluster, fault: string, refusedNow: () => Promise<boolean>): void {
  // In the background: the schedule goes on; what it finds is an incident.
  void (async () => {
    const deadline = Date.now() + HEALTH_BOUND_MS
    const unknown = { retries: NaN, batches: NaN }
    const pending = new Map<Service, { retries: number; batches: number }>()
    for (const s of c.consumers.filter((s) => s.alive)) pending.set(s, await counts(s).catch(() => unknown))
    while (pending.size && Date.now() < deadline) {
      for (const s of [...pending.keys()]) if (!s.alive || !(await s.healthy())) pending.delete(s)
      await new Promise((r) => setTimeout(r, 500))
    }
    // Healed meanwhile, or the table created again: writes work, and 200 is right.
    if (!(await refusedNow())) return
    for (const [s, before] of pending) {
      const after = await counts(s).catch(() => unknown)
      const tried = grew(before.retries, after.retries)
      const stored = grew(before.batches, after.batches)
      if (s.alive && tried && !stored) {
        c.incident(s.name, `/health still 200 ${HEALTH_BOUND_MS / 1000} s into ${fault}`, '')
      }
    }
  })()
}

/**
 * A consumer re-creates a missing table at its next write (at most every 5 s); its next write may
 * be a retry as far off as CONSUMER_RETRY_MAX_MS (30 s). Writes are impossible while INSERT is
 * revoked, the database is read-only (CREATE is refused too), or no consumer is up with its
 * database link open: the bound counts from the last moment one of those held.
 */
const RECREATE_BOUND_MS = 40_000
const WRITE_BLOCKERS = ['db-revoke mariadb', 'db-read-only mariadb']
function writesPossible(c: Cluster): boolean {
  if (WRITE_BLOCKERS.some((f) => c.applied.has(f))) return false
  return c.consumers.some((s) => s.alive && !c.applied.has(`db-cut ${s.name}`) && !c.applied.has(`db-freeze ${s.name}`))
}
async function tableExists(c: Cluster): Promise<boolean> {
  const [row] = await c.mariadb.sql<{ n: number }[]>(
    "SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'user_activities'",
    [c.mariadb.database],
  )
  return Number(row?.n) > 0
}
async function tableRecreated(c: Cluster): Promise<boolean> {
  let possibleSince = Date.now()
  for (const giveUp = Date.now() + 3 * RECREATE_BOUND_MS; Date.now() < giveUp;) {
    if (await tableExists(c)) return true
    if (!writesPossible(c)) possibleSince = Date.now()
    else if (Date.now() - possibleSince > RECREATE_BOUND_MS) return false
    await new Promise((r) => setTimeout(r, 500))
  }
  return false
}

/**
 * RENAME waits for every transaction on the tables, and every statement behind it waits for the
 * RENAME: so it waits 10 s at most (lock_wait_timeout), and is tried again, for 3 minutes at most;
 * the sessions in its way are printed, the services' among them.
 */
async function swapBack(c: Cluster, rename: string): Promise<void> {
  for (const giveUp = Date.now() + 180_000; ;) {
    const session = await c.mariadb.connect()
    try {
      await session.query({ sql: 'SET SESSION lock_wait_timeout = 10', timeout: 10_000 })
      await session.query({ sql: rename, timeout: 30_000 })
      return
    } catch (err) {
      const open = await c.mariadb.sql(
        "SELECT ID, USER, COMMAND, TIME, STATE, LEFT(INFO, 80) AS INFO FROM information_schema.PROCESSLIST WHERE COMMAND <> 'Daemon'",
      )
      console.log(
        `[chaos ${c.elapsed().toFixed(1)}s] table-renamed: swap back waited: ${(err as Error).message}; sessions: ${JSON.stringify(open)}`,
      )
      if (Date.now() > giveUp) throw err
    } finally {
      session.destroy()
    }
  }
}

export const databaseFaults: Fault[] = [
  {
    name: 'db-revoke',
    targets: fixed('mariadb'),
    resource: () => 'db-grants',
    seconds: [12, 25],
    // MariaDB applies a database-level grant to a session at its next USE: the sessions go, as a DBA would end them.
    apply: async (c) => {
      await c.mariadb.sql(`REVOKE INSERT ON ${c.mariadb.database}.* FROM ${svc(c)}`)
      await killSessions(c)
      expectUnhealthy(c, 'db-revoke', async () => c.applied.has('db-revoke mariadb'))
    },
    heal: async (c) => void (await c.mariadb.sql(`GRANT INSERT ON ${c.mariadb.database}.* TO ${svc(c)}`)),
  },
  {
    name: 'db-read-only',
    targets: fixed('mariadb'),
    resource: () => 'db-read-only',
    seconds: [12, 25],
    apply: async (c) => {
      await c.mariadb.sql('SET GLOBAL read_only = 1')
      expectUnhealthy(c, 'db-read-only', async () => c.applied.has('db-read-only mariadb'))
    },
    heal: async (c) => void (await c.mariadb.sql('SET GLOBAL read_only = 0')),
  },
  {
    name: 'table-renamed',
    targets: fixed('mariadb'),
    resource: () => 'db-table',
    seconds: [12, 25],
    apply: async (c) => {
      const away = `user_activities_away_${Date.now()}`
      await c.mariadb.sql(`RENAME TABLE ${c.mariadb.database}.user_activities TO ${c.mariadb.database}.${away}`)
      expectUnhealthy(c, 'table-renamed', async () => !(await tableExists(c)))
      return away
    },
    heal: async (c, _t, away) => {
      const db = c.mariadb.database
      if (typeof away !== 'string') return // not applied
      if (!(await tableRecreated(c))) {
        c.incident(
          'consumers',
          `user_activities was not re-created within ${RECREATE_BOUND_MS / 1000} s of writes being possible`,
          '',
        )
        await c.mariadb.sql(`RENAME TABLE ${db}.${away} TO ${db}.user_activities`)
        return
      }
      // The renamed table holds nearly every row, the re-created one those of the fault: swap them
      // back at once (the consumers go on writing into the original), then merge the few.
      const recreated = `${away}_recreated`
      await swapBack(
        c,
        `RENAME TABLE ${db}.user_activities TO ${db}.${recreated}, ${db}.${away} TO ${db}.user_activities`,
      )
      const columns = 'event_id, user_id, event_type, `timestamp`, metadata, created_at, received_at'
      await c.mariadb.sql(
        `INSERT INTO ${db}.user_activities (${columns}) SELECT ${columns} FROM ${db}.${recreated} ` +
          'ON DUPLICATE KEY UPDATE event_id = user_activities.event_id',
        [],
        300_000, // a long fault's rows (100,000 and more) into a table of millions
      )
      await c.mariadb.sql(`DROP TABLE ${db}.${recreated}`)
      c.tableMerged = true
    },
  },
  {
    name: 'rows-locked',
    targets: fixed('mariadb'),
    resource: () => 'db-table',
    seconds: [10, 30],
    // Another session locks every key from '1' up: the INSERTs of most events wait 2 s for the
    // lock and fail, to be retried, while the write probe (key 0000...) passes. With link drops
    // meanwhile, each delivery wears towards the delivery limit without being stored.
    apply: async (c) => {
      const [row] = await c.mariadb.sql<{ v: number }[]>('SELECT @@GLOBAL.innodb_lock_wait_timeout AS v')
      await c.mariadb.sql('SET GLOBAL innodb_lock_wait_timeout = 2')
      await killSessions(c) // the services' new sessions take the 2 s
      const locker = await c.mariadb.connect()
      try {
        await locker.query({ sql: 'START TRANSACTION', timeout: 10_000 })
        await locker.query({
          sql: `SELECT COUNT(*) FROM ${c.mariadb.database}.user_activities WHERE event_id >= '1' FOR UPDATE`,
          timeout: 60_000,
        })
      } catch (err) {
        locker.destroy()
        await c.mariadb.sql(`SET GLOBAL innodb_lock_wait_timeout = ${Number(row?.v)}`)
        throw err
      }
      return { locker, before: Number(row?.v) }
    },
    heal: async (c, _t, state) => {
      if (!state) return
      const { locker, before } = state as { locker: import('mysql2/promise').Connection; before: number }
      // A session that is gone (killed, timed out) has rolled back already.
      await locker
        .query({ sql: 'ROLLBACK', timeout: 10_000 })
        .catch((err: Error) => console.log(`[chaos] rows-locked: the locking session was gone (${err.message})`))
      locker.destroy()
      await c.mariadb.sql(`SET GLOBAL innodb_lock_wait_timeout = ${before}`)
    },
  },
  {
    name: 'autocommit-off',
    targets: fixed('mariadb'),
    resource: () => 'db-session-defaults',
    seconds: [5, 20],
    // A server whose sessions start with autocommit off: the services' sessions must turn it on,
    // or every INSERT they make is rolled back when its session ends, after the ack.
    apply: async (c) => {
      await c.mariadb.sql('SET GLOBAL autocommit = 0')
      await killSessions(c)
    },
    heal: async (c) => void (await c.mariadb.sql('SET GLOBAL autocommit = 1')),
  },
  {
    name: 'packet-lowered',
    targets: fixed('mariadb'),
    resource: () => 'db-packet',
    seconds: [3, 20],
    // 64 KiB still fits every soak event (under 8 KiB) alone, so batches must split, nothing is too large.
    apply: async (c) => {
      const [row] = await c.mariadb.sql<{ v: number }[]>('SELECT @@GLOBAL.max_allowed_packet AS v')
      await c.mariadb.sql('SET GLOBAL max_allowed_packet = 65536')
      return Number(row?.v)
    },
    heal: async (c, _t, before) => void (await c.mariadb.sql(`SET GLOBAL max_allowed_packet = ${Number(before)}`)),
  },
]
