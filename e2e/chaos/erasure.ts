// The soak's erasures: an operator's `npm run erase` of one of the erasable users while the load
// runs, and what the promise says of those users' events once every fault is healed.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Cluster } from './cluster.js'
import { fixed, type Fault } from './faults.js'
import { ERASABLE_USERS, type LoadRecord } from './load.js'

const eraseMain = fileURLToPath(new URL('../../consumer-service/dist/erase.js', import.meta.url))
/** `npm run erase` must end within this, whatever the database does (its statements are bounded). */
const ERASE_BOUND_MS = 60_000
/**
 * The producer's receipt and the database's erasure time are read off one host's clock here; a
 * millisecond of rounding (DATETIME(3)) either way.
 */
const MARGIN_MS = 2

export const eraseUser: Fault = {
  name: 'erase-user',
  targets: fixed('operator'),
  resource: () => 'erase-user',
  seconds: [1, 2],
  apply: async (c, _t, param) => {
    const user = ERASABLE_USERS.first + Math.floor(param * ERASABLE_USERS.count)
    const child = spawn(process.execPath, [eraseMain, '--user', String(user), '--json'], {
      env: {
        PATH: process.env.PATH,
        MYSQL_HOST: c.mariadb.address.host,
        MYSQL_PORT: String(c.mariadb.address.port),
        MYSQL_USER: c.mariadb.user.user,
        MYSQL_PASSWORD: c.mariadb.user.password,
        MYSQL_DATABASE: c.mariadb.database,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let output = ''
    child.stdout.on('data', (d) => (output = (output + d).slice(-2000)))
    child.stderr.on('data', (d) => (output = (output + d).slice(-2000)))
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
    return { user, child, exited, output: () => output, started: Date.now() }
  },
  heal: async (c, _t, state) => {
    const { user, child, exited, output, started } = state as {
      user: number
      child: ReturnType<typeof spawn>
      exited: Promise<number | null>
      output: () => string
      started: number
    }
    const left = Math.max(0, ERASE_BOUND_MS - (Date.now() - started))
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), left))])
    if (code === 'timeout') {
      c.incident('npm run erase', `did not end within ${ERASE_BOUND_MS} ms`, output())
      child.kill('SIGKILL')
      await exited
      return `user ${user}: killed`
    }
    // Exit 1 while the database refuses (a fault of its own): the erasure may not be recorded.
    return `user ${user}: exit ${code} after ${Date.now() - started} ms: ${output().trim().split('\n').at(-1)}`
  },
}

/** Rows of erased users received before their erasure, still stored. */
async function coveredRowsLeft(cluster: Cluster): Promise<number> {
  const db = cluster.mariadb.database
  const [left] = await cluster.mariadb.sql<{ n: number }[]>(
    `SELECT COUNT(*) AS n FROM ${db}.user_activities a JOIN ${db}.user_erasures e ON e.user_id = a.user_id ` +
      'WHERE a.received_at IS NULL OR a.received_at <= e.erased_before',
  )
  return Number(left?.n)
}

/**
 * What the erasures have yet to do: those not completed, and rows they cover still stored (a
 * completed one's rows brought back by table-renamed's merge, which the consumers remove again).
 */
export async function erasuresUndone(cluster: Cluster): Promise<string | undefined> {
  const [row] = await cluster.mariadb.sql<{ n: number }[]>(
    `SELECT COUNT(*) AS n FROM ${cluster.mariadb.database}.user_erasures WHERE completed_at IS NULL`,
  )
  const pending = Number(row?.n)
  const left = await coveredRowsLeft(cluster)
  return pending === 0 && left === 0 ? undefined : `${pending} erasures not done, ${left} rows they cover left`
}

/**
 * The erasable users' events: one answered 202 before its user's (last) erasure is not stored;
 * one first sent after it is stored (exactly once: the caller checks duplicates of every row);
 * one sent before and answered after may go either way. No row of an erased user received
 * before the erasure is left.
 */
export async function checkErasures(
  cluster: Cluster,
  load: LoadRecord,
  stored: Map<string, number>,
): Promise<{ failures: string[]; notes: string[] }> {
  const db = cluster.mariadb.database
  const erasures = await cluster.mariadb.sql<{ user_id: number; erased_before: string }[]>(
    `SELECT user_id, DATE_FORMAT(erased_before, '%Y-%m-%dT%H:%i:%s.%f') AS erased_before FROM ${db}.user_erasures`,
  )
  const erasedAt = new Map(erasures.map((e) => [Number(e.user_id), Date.parse(`${e.erased_before.slice(0, 23)}Z`)]))
  const lost: string[] = []
  const kept: string[] = []
  let either = 0
  for (const [id, e] of load.erasable) {
    if (e.acceptedAt === undefined) continue // never accepted: reported with the load
    const at = erasedAt.get(e.user)
    if (at === undefined || e.firstSent > at + MARGIN_MS) {
      if (!stored.has(id)) lost.push(id)
    } else if (e.acceptedAt < at - MARGIN_MS) {
      if (stored.has(id)) kept.push(id)
    } else either++
  }
  const left = await coveredRowsLeft(cluster)
  const failures: string[] = []
  if (lost.length)
    failures.push(`erasure: ${lost.length} events of erasable users sent after any erasure not stored (${lost[0]})`)
  if (kept.length) failures.push(`erasure: ${kept.length} events answered before their user's erasure stored`)
  if (left > 0) failures.push(`erasure: ${left} rows of erased users received before the erasure left`)
  const accepted = [...load.erasable.values()].filter((e) => e.acceptedAt !== undefined).length
  const notes = [
    `erasure: ${erasures.length} users erased; ${accepted} of their events accepted, ${either} sent across an erasure`,
  ]
  return { failures, notes }
}
