// Helpers for the tests that talk to the real MySQL/MariaDB (consumer and end-to-end tests only).
import mysql from 'mysql2/promise'
import { database, uniqueName } from './index.js'

export { database }

export async function connectDatabase(databaseName?: string): Promise<mysql.Connection> {
  try {
    return await mysql.createConnection({ ...database, database: databaseName, timezone: 'Z' })
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
