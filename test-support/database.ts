// Helpers for the tests that talk to the real MySQL/MariaDB (consumer and end-to-end tests only).
import mysql from 'mysql2/promise'
import { database, uniqueName } from './index.js'

export { database }

export async function connectDatabase(
  databaseName?: string,
  options: mysql.ConnectionOptions = {},
): Promise<mysql.Connection> {
  try {
    return await mysql.createConnection({ ...database, database: databaseName, timezone: 'Z', ...options })
  } catch (err) {
    throw new Error(
      `MySQL/MariaDB is not reachable at ${database.host}:${database.port} as ${database.user}. Start it (on this ` +
        'machine: `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`; with Docker: ' +
        '`docker compose up -d mysql`) or set MYSQL_HOST/MYSQL_PORT/TEST_MYSQL_USER/TEST_MYSQL_PASSWORD.',
      { cause: err },
    )
  }
}

/** Creates an empty database of the test's own; `drop()` removes it. */
export async function createTestDatabase(): Promise<{ name: string; drop: () => Promise<void> }> {
  const name = uniqueName('test')
  const connection = await connectDatabase()
  try {
    await connection.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4`)
  } finally {
    await connection.end()
  }
  return {
    name,
    drop: async () => {
      const c = await connectDatabase()
      try {
        await c.query(`DROP DATABASE IF EXISTS \`${name}\``)
      } finally {
        await c.end()
      }
    },
  }
}

/**
 * A MySQL/MariaDB user of the test's own (the services then run without root's rights, which
 * bypass read_only); `grant` runs as root with `??` the user; `drop()` removes it.
 */
export async function createTestUser(): Promise<{
  user: string
  password: string
  grant: (sql: string) => Promise<void>
  drop: () => Promise<void>
}> {
  const user = uniqueName('u')
  const password = uniqueName('pw')
  const admin = await connectDatabase()
  try {
    await admin.query("CREATE USER ?@'%' IDENTIFIED BY ?", [user, password])
  } finally {
    await admin.end()
  }
  const asRoot = async (sql: string, values: unknown[]) => {
    const c = await connectDatabase()
    try {
      await c.query(sql, values)
    } finally {
      await c.end()
    }
  }
  return {
    user,
    password,
    grant: (sql) => asRoot(`${sql.replace('??', "?@'%'")}`, [user]),
    drop: () => asRoot("DROP USER IF EXISTS ?@'%'", [user]),
  }
}

export interface CountDrift {
  hour: string
  eventType: string
  rows: number
  counted: number
}

/**
 * Where the hourly counts (user_activity_counts) differ from COUNT(*) over the rows, by hour and
 * event type (compared as the columns compare them, case-insensitively): none, if every INSERT
 * added its counts in its own transaction.
 */
export async function countsDrift(databaseName: string): Promise<CountDrift[]> {
  const connection = await connectDatabase(databaseName)
  try {
    const [rows] = await connection.query<mysql.RowDataPacket[]>(
      "SELECT DATE_FORMAT(`timestamp`, '%Y-%m-%d %H:00:00') AS hour, event_type, COUNT(*) AS n " +
        'FROM user_activities GROUP BY hour, event_type',
    )
    const [counts] = await connection.query<mysql.RowDataPacket[]>(
      "SELECT DATE_FORMAT(bucket_start, '%Y-%m-%d %H:00:00') AS hour, event_type, event_count AS n " +
        'FROM user_activity_counts WHERE event_count > 0',
    )
    const drift = new Map<string, CountDrift>()
    const entry = (row: mysql.RowDataPacket): CountDrift => {
      const key = `${row.hour as string} ${(row.event_type as string).toLowerCase()}`
      const known = drift.get(key)
      if (known) return known
      const fresh = { hour: row.hour as string, eventType: row.event_type as string, rows: 0, counted: 0 }
      drift.set(key, fresh)
      return fresh
    }
    for (const row of rows) entry(row).rows += Number(row.n)
    for (const row of counts) entry(row).counted += Number(row.n)
    return [...drift.values()].filter((d) => d.rows !== d.counted)
  } finally {
    await connection.end()
  }
}
