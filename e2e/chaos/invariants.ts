// The promise as invariants, checked once every fault is healed and the load has stopped.
import { waitFor } from '../../test-support/index.js'
import { QUEUE, rssAllowance, type Cluster } from './cluster.js'
import { checkErasures, erasuresUndone } from './erasure.js'
import { REQUEST_BOUND_MS, type LoadRecord } from './load.js'

/** After healing, the backlog must drain within this, without a restart. */
export const DRAIN_BOUND_MS = 120_000
const DLQ = `${QUEUE}.dlq`

export interface Verdict {
  failures: string[]
  notes: string[]
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MB`
const sample = (ids: Iterable<string>, n = 5) => [...ids].slice(0, n).join(', ')

async function storedIds(cluster: Cluster): Promise<Map<string, number>> {
  const rows = await cluster.mariadb.sql<{ event_id: string; n: number }[]>(
    `SELECT event_id, COUNT(*) AS n FROM ${cluster.mariadb.database}.user_activities GROUP BY event_id`,
    [],
    600_000, // about 2,000,000 rows after a 30-minute run
  )
  return new Map(rows.map((r) => [r.event_id, Number(r.n)]))
}

/** Ready messages on a queue, or undefined when it does not exist. */
async function depth(cluster: Cluster, queue: string): Promise<number | undefined> {
  const connection = await cluster.rabbit.connect()
  try {
    const channel = await connection.createChannel()
    channel.on('error', () => undefined) // a missing queue closes the channel: answered below
    return (await channel.checkQueue(queue)).messageCount
  } catch {
    return undefined
  } finally {
    await connection.close().catch(() => undefined)
  }
}

/** Every letter's messageId, taken off the DLQ (the run is over: it is the soak's own broker). */
async function takeLetters(cluster: Cluster): Promise<string[]> {
  const connection = await cluster.rabbit.connect()
  const ids: string[] = []
  try {
    const channel = await connection.createChannel()
    for (let i = 0; i < 1_000_000; i++) {
      const message = await channel.get(DLQ, { noAck: true })
      if (!message) break
      ids.push(String(message.properties.messageId))
    }
  } finally {
    await connection.close().catch(() => undefined)
  }
  return ids
}

export async function checkInvariants(cluster: Cluster, load: LoadRecord, drainStarted: number): Promise<Verdict> {
  const failures: string[] = []
  const notes: string[] = []
  const { accepted } = load

  // 1. The backlog drains (every 202 stored, the queue empty, nothing held by a consumer)
  // within the bound and without a restart.
  const restartsBefore = cluster.services.map((s) => s.restarts)
  let stored = new Map<string, number>()
  let state = ''
  try {
    await waitFor(
      async () => {
        stored = await storedIds(cluster)
        const unstored = [...accepted].filter((id) => !stored.has(id)).length
        const ready = await depth(cluster, QUEUE)
        const held = await Promise.all(cluster.consumers.map((c) => c.inHand().catch(() => NaN)))
        const erasing = await erasuresUndone(cluster)
        state = `${unstored} accepted events not stored, queue ready ${ready}, in hand ${held.join(' and ')}, ${erasing ?? 'erasures done'}`
        return unstored === 0 && ready === 0 && held.every((n) => n === 0) && erasing === undefined
      },
      { timeoutMs: DRAIN_BOUND_MS, intervalMs: 3000, what: 'the backlog to drain' },
    )
    notes.push(`drained ${((Date.now() - drainStarted) / 1000).toFixed(0)} s after the last heal`)
  } catch {
    failures.push(`drain: not drained ${DRAIN_BOUND_MS / 1000} s after the load stopped: ${state}`)
    // What the consumers said last: why they hold what they hold.
    for (const consumer of cluster.consumers) {
      cluster.incident(consumer.name, 'its last words, not drained', consumer.process?.output() ?? '')
    }
    stored = await storedIds(cluster)
  }
  const missing = [...accepted].filter((id) => !stored.has(id))
  if (missing.length) {
    failures.push(
      `stored exactly once: ${missing.length} of ${accepted.size} accepted events not stored (${sample(missing)})`,
    )
  }
  const twice = [...stored].filter(([, n]) => n > 1)
  if (twice.length)
    failures.push(
      `stored exactly once: ${twice.length} events stored more than once (${sample(twice.map(([id]) => id))})`,
    )
  const erasures = await checkErasures(cluster, load, stored)
  failures.push(...erasures.failures)
  notes.push(...erasures.notes)
  if (cluster.services.some((s, i) => s.restarts !== restartsBefore[i]))
    failures.push('drain: a service had to restart')

  // 2. Nothing in hand: the services stop cleanly, and the queue is empty after.
  for (const service of cluster.services) {
    service.expectedExit = 'SIGTERM'
    const code = await Promise.race([
      service.process?.stop('SIGTERM'),
      new Promise((r) => setTimeout(() => r('timeout'), 10_000)),
    ])
    if (code !== 0) failures.push(`clean stop: ${service.name} answered SIGTERM with ${code}`)
  }
  const left = await depth(cluster, QUEUE)
  if (left !== 0) failures.push(`nothing in hand: the queue holds ${left} messages after the consumers stopped`)

  // 3. The DLQ holds exactly the poison; each good event stays out of it.
  const letters = await takeLetters(cluster)
  const found = new Set(letters)
  // Letters the dlq-deleted fault itself took away are not the services' loss.
  const lost = [...load.poison].filter((id) => !found.has(id) && !cluster.lettersRemoved.has(id))
  const unexpected = [...found].filter(
    (id) => !load.poison.has(id) && !load.maybePoison.has(id) && !cluster.lettersRemoved.has(id),
  )
  const dead202 = unexpected.filter((id) => accepted.has(id))
  if (lost.length > cluster.lettersRemovedUnseen)
    failures.push(`DLQ: ${lost.length} of ${load.poison.size} poison letters missing (${sample(lost)})`)
  if (unexpected.length) {
    failures.push(
      `DLQ: ${unexpected.length} letters that are no poison, ${dead202.length} of them 202'd events (${sample(unexpected)})`,
    )
  }
  if (lost.length && lost.length <= cluster.lettersRemovedUnseen) {
    notes.push(`DLQ: ${lost.length} poison letters missing, as many as dlq-deleted deleted unread`)
  }
  const duplicates = letters.length - found.size
  notes.push(
    `DLQ: ${letters.length} letters, ${found.size} distinct, ${duplicates} duplicates (a kill between a letter's confirm and the ack)`,
  )

  // 4. No process died unless the schedule killed it; every SIGTERM'd one exited 0 in time; and
  // what the faults saw go wrong (a health check that stayed 200, a replay that did not end).
  for (const i of cluster.incidents) failures.push(`incident: ${i.service} ${i.what} at ${i.at.toFixed(1)} s`)

  // 5. Memory: every RSS sample within what the service's settings allow beyond its idle RSS.
  for (const s of cluster.services) {
    const bound = s.idleRss + rssAllowance(s.kind)
    if (s.maxRss > bound)
      failures.push(`RSS: ${s.name} reached ${mb(s.maxRss)} (bound ${mb(bound)}: ${mb(s.idleRss)} idle + its settings)`)
    notes.push(`${s.name}: max RSS ${mb(s.maxRss)} of ${mb(bound)} (${mb(s.idleRss)} idle), ${s.restarts} restarts`)
  }

  // 6. The hourly counts equal COUNT(*) over the rows, by hour and event type, whatever was
  // redelivered, replayed or killed (not after table-renamed merged a re-created table back).
  const [drift] = await cluster.mariadb.sql<{ buckets: number; rows: number; counted: number }[]>(
    'SELECT COUNT(*) AS buckets, COALESCE(SUM(r), 0) AS `rows`, COALESCE(SUM(c), 0) AS counted FROM (' +
      'SELECT h, t, SUM(r) AS r, SUM(c) AS c FROM (' +
      "SELECT DATE_FORMAT(`timestamp`, '%Y-%m-%d %H') AS h, event_type AS t, COUNT(*) AS r, 0 AS c " +
      `FROM ${cluster.mariadb.database}.user_activities GROUP BY h, t UNION ALL ` +
      "SELECT DATE_FORMAT(bucket_start, '%Y-%m-%d %H'), event_type, 0, event_count " +
      `FROM ${cluster.mariadb.database}.user_activity_counts) AS x GROUP BY h, t HAVING SUM(r) <> SUM(c)) AS d`,
    [],
    600_000,
  )
  if (Number(drift?.buckets) > 0) {
    const what = `counts: ${drift?.buckets} hours differ from COUNT(*) (${drift?.rows} rows, ${drift?.counted} counted)`
    if (cluster.tableMerged) notes.push(`${what}, after table-renamed merged a re-created table back`)
    else failures.push(what)
  } else notes.push('counts: every hour equals COUNT(*) over the rows')

  // 7. Every request answered in time, every event accepted in the end.
  if (load.hung.length) {
    const first = load.hung[0]!
    failures.push(
      `requests: ${load.hung.length} unanswered after ${REQUEST_BOUND_MS / 1000} s (first at ${first.at.toFixed(1)} s on ${first.producer} ${first.path})`,
    )
  }
  if (load.refused.length)
    failures.push(`requests: ${load.refused.length} valid requests refused, e.g. ${JSON.stringify(load.refused[0])}`)
  if (load.unaccepted.size) {
    failures.push(
      `requests: ${load.unaccepted.size} events never accepted after healing, last answer ${[...load.unaccepted.values()][0]}`,
    )
  }
  notes.push(
    `load: ${load.requests} requests, ${accepted.size} events accepted, ${load.poison.size} poison (+${load.maybePoison.size} unconfirmed); ` +
      `answers ${JSON.stringify(Object.fromEntries(load.statuses))}`,
  )
  return { failures, notes }
}
