// Where the benchmarks run: the broker and database (environment or the local defaults), a fresh
// queue or database for each run, and the wait for a consumer to have stored a number of rows.
import amqp from 'amqplib'
import mysql from 'mysql2/promise'
import { assertTopology, deleteTopology, topologyFor } from 'event-contract'
import { broker as testBroker, database } from '../test-support/index.js'

/** The services' RABBITMQ_* variables for the tests' broker. */
export const broker = {
  RABBITMQ_HOST: testBroker.host,
  RABBITMQ_PORT: String(testBroker.port),
  RABBITMQ_USER: testBroker.user,
  RABBITMQ_PASS: testBroker.pass,
}
/** The tests' database server (the right to create databases). */
export const db = database
/** The consumer as its image and `npm start` run it, from a checkout's root. */
export const consumerArgs = (main = 'consumer-service/dist/main.js') => ['--max-old-space-size=128', main]

/** The consumer's MYSQL_* variables for `database` on `db`. */
export const consumerMysqlEnv = (database: string) => ({
  MYSQL_HOST: db.host,
  MYSQL_PORT: String(db.port),
  MYSQL_USER: db.user,
  MYSQL_PASSWORD: db.password,
  MYSQL_DATABASE: database,
})

export function connectBroker() {
  return amqp.connect({
    hostname: testBroker.host,
    port: testBroker.port,
    username: testBroker.user,
    password: testBroker.pass,
  })
}

/** Runs `run` on a fresh quorum queue with the project's topology, removed afterwards. */
export async function withQueue<T>(run: (queue: string) => Promise<T>, prefix = 'bench'): Promise<T> {
  const queue = `${prefix}_${Date.now().toString(36)}`
  const connection = await connectBroker()
  const channel = await connection.createChannel()
  await assertTopology(channel, topologyFor(queue, 'quorum'))
  try {
    return await run(queue)
  } finally {
    await deleteTopology(channel, topologyFor(queue, 'quorum'))
    await connection.close()
  }
}

/** Runs `run` with a fresh database on `db` (and a connection to the server), dropped afterwards. */
export async function withDatabase<T>(
  run: (database: string, admin: mysql.Connection) => Promise<T>,
  prefix = 'bench',
): Promise<T> {
  const database = `${prefix}_${Date.now().toString(36)}`
  const admin = await mysql.createConnection(db)
  await admin.query(`CREATE DATABASE \`${database}\``)
  try {
    return await run(database, admin)
  } finally {
    await admin.query(`DROP DATABASE \`${database}\``)
    await admin.end()
  }
}

/**
 * Waits until `database`'s table holds `total` rows, reading the auto-increment key (free for the
 * server, where a COUNT(*) every 20 ms would scan the table it is filling), then counting: two
 * batches commit at once, so the highest ids may be in before lower ones. The seconds from the
 * first row to the last (at least one poll's 20 ms: a small drain may land between two polls),
 * or undefined if they were not all in within `timeoutMs`.
 */
export async function waitForRows(
  admin: mysql.Connection,
  database: string,
  total: number,
  { onTick = () => undefined, timeoutMs = 300_000 }: { onTick?: () => void; timeoutMs?: number } = {},
): Promise<number | undefined> {
  let firstAt = 0
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline;) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    const [[row]] = await admin
      .query<mysql.RowDataPacket[]>(`SELECT COALESCE(MAX(id), 0) AS n FROM \`${database}\`.user_activities`)
      // The table appears when the consumer starts.
      .catch(() => [[{ n: 0 }]] as unknown as [mysql.RowDataPacket[]])
    const last = Number(row?.n ?? 0)
    if (last > 0 && firstAt === 0) firstAt = Date.now()
    onTick()
    if (last >= total) {
      const [[counted]] = await admin.query<mysql.RowDataPacket[]>(
        `SELECT COUNT(*) AS n FROM \`${database}\`.user_activities`,
      )
      if (Number(counted?.n ?? 0) >= total) return Math.max(Date.now() - firstAt, 20) / 1000
    }
  }
  return undefined
}
