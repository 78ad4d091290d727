// The retention's part of `npm run bench`: the consumer's stored rate while it also purges
// 1,000,000 expired rows (RETENTION_DAYS), against the same consumer and load without the purge,
// and the longest row lock wait the server saw meanwhile. On a MariaDB of its own.
import mysql from 'mysql2/promise'
import { readFileSync } from 'node:fs'
import { PrivateMariadb } from '../test-support/private-servers.js'
import { batchBody, mysqlEnvOf, postLoad, root, startService, waitForHttp } from './lib.js'

export interface PurgeFigures {
  expiredRows: number
  /** Rows stored per second by the consumer, without and with the purge running. */
  storedWithout: number
  storedWith: number
  /** Expired rows the purge removed while it was measured. */
  purged: number
  /** Innodb_row_lock_time_max during the runs, in ms. */
  longestLockWaitMs: number
}

/** `rows` events 40 days old, made inside the server (each round copies the table onto itself). */
async function fillExpired(connection: mysql.Connection, rows: number) {
  await connection.query(
    'INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`, metadata, received_at) ' +
      "SELECT UUID(), 1, 'expired', UTC_TIMESTAMP(3) - INTERVAL 40 DAY, '{}', UTC_TIMESTAMP(3) - INTERVAL 40 DAY",
  )
  for (let count = 1; count < rows;) {
    const take = Math.min(count, rows - count)
    await connection.query(
      'INSERT INTO user_activities (event_id, user_id, event_type, `timestamp`, metadata, received_at) ' +
        `SELECT UUID(), 1 + FLOOR(RAND() * 100000), event_type, \`timestamp\`, metadata, received_at FROM user_activities LIMIT ${take}`,
    )
    count += take
  }
  // The counts as the consumer would have kept them.
  await connection.query('DELETE FROM user_activity_counts')
  await connection.query(
    'INSERT INTO user_activity_counts (bucket_start, event_type, event_count) ' +
      "SELECT CAST(DATE_FORMAT(`timestamp`, '%Y-%m-%d %H:00:00') AS DATETIME) AS h, event_type, COUNT(*) " +
      'FROM user_activities GROUP BY h, event_type',
  )
}

export async function purgeBench(
  options: { queue: string; broker: Record<string, string>; consumer: string[]; seconds: number },
  expiredRows = 1_000_000,
): Promise<PurgeFigures> {
  const { queue, broker, seconds } = options
  const server = await PrivateMariadb.start({ bufferPoolSize: '1G' })
  const connection = await mysql.createConnection({
    ...server.address,
    user: 'root',
    password: '',
    database: server.database,
    multipleStatements: true,
  })
  const mysqlEnv = mysqlEnvOf(server)
  const services: { stop(): Promise<unknown> }[] = []
  const number = async (sql: string) => {
    const [[row]] = await connection.query<mysql.RowDataPacket[]>(sql)
    return Number(row?.n)
  }
  try {
    await connection.query(readFileSync(`${root}db/init.sql`, 'utf8'))
    await fillExpired(connection, expiredRows)
    const producer = startService(['producer-service/dist/main.js'], {
      ...broker,
      RABBITMQ_QUEUE: queue,
      HOST: '127.0.0.1',
      PORT: '18186',
      PUBLISH_MAX_IN_FLIGHT: '2000',
    })
    services.push(producer)
    await waitForHttp('http://127.0.0.1:18186/health')

    /** The consumer's stored rate over `seconds` of /batch load, with `env`; MAX(id) grows by the rows stored. */
    const measure = async (env: Record<string, string>) => {
      const consumer = startService(options.consumer, {
        ...broker,
        ...mysqlEnv,
        RABBITMQ_QUEUE: queue,
        HEALTH_HOST: '127.0.0.1',
        HEALTH_PORT: '18187',
        ...env,
      })
      try {
        await waitForHttp('http://127.0.0.1:18187/health')
        const load = postLoad('http://127.0.0.1:18186', {
          connections: 8,
          seconds: seconds + 2,
          path: '/api/v1/events/batch',
          body: batchBody(100),
        })
        await new Promise((resolve) => setTimeout(resolve, 2000))
        const [firstId, expiredBefore, startedAt] = [
          await number('SELECT MAX(id) AS n FROM user_activities'),
          await number("SELECT COUNT(*) AS n FROM user_activities WHERE event_type = 'expired'"),
          Date.now(),
        ]
        await load
        const stored = (await number('SELECT MAX(id) AS n FROM user_activities')) - firstId
        const expiredAfter = await number("SELECT COUNT(*) AS n FROM user_activities WHERE event_type = 'expired'")
        return {
          perSecond: Math.round(stored / ((Date.now() - startedAt) / 1000)),
          purged: expiredBefore - expiredAfter,
        }
      } finally {
        await consumer.stop()
      }
    }
    const without = await measure({})
    await connection.query('FLUSH STATUS')
    const withPurge = await measure({ RETENTION_DAYS: '30', LIFECYCLE_INTERVAL_MS: '500' })
    const [[lock]] = await connection.query<mysql.RowDataPacket[]>("SHOW GLOBAL STATUS LIKE 'Innodb_row_lock_time_max'")
    return {
      expiredRows,
      storedWithout: without.perSecond,
      storedWith: withPurge.perSecond,
      purged: withPurge.purged,
      longestLockWaitMs: Number(lock?.Value ?? 0),
    }
  } finally {
    for (const service of services) await service.stop()
    await connection.end()
    await server.stop()
  }
}
