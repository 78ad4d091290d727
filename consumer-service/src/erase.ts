// `npm run erase -- --user N`: erases a user from the command line, as the query service's
// DELETE route does: records the erasure (the consumer then drops the user's events still queued
// or held), then removes the stored rows itself, unless a consumer is removing rows right now.
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'
import type { RowDataPacket } from 'mysql2/promise'
import { DatabaseConfigSchema, erasureTime, loadConfig, RECORD_ERASURE_SQL } from 'event-contract'
import { lockName } from './lifecycle.js'
import { eraseRows, removalSession } from './removal.js'

export const USAGE = `Usage: npm run erase -- --user <user_id> [--json]

Erases a user: their stored events, and those the producer received up to now that are still
queued, held by a consumer or in the dead-letter queue (the consumer drops them when it meets
them). Events the user sends afterwards are stored as usual.

Options:
  --user N      the user_id, a positive integer
  --json        prints JSON
  -h, --help    this text

MySQL comes from the services' variables (MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_PASSWORD,
MYSQL_DATABASE).
Exit codes: 0 done, 1 failed, 2 wrong usage, 3 MySQL not reachable.`

export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3 } as const

export interface Output {
  out(line: string): void
  err(line: string): void
}

/** Errors of a connection that never reached the server. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ETIMEDOUT', 'EAI_AGAIN'])

/** Runs the command; resolves with the exit code. */
export async function main(argv: string[], env: NodeJS.ProcessEnv, io: Output): Promise<number> {
  let args
  try {
    args = parseArgs({
      args: argv,
      options: { user: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    }).values
  } catch (err) {
    io.err(`${(err as Error).message}\n\n${USAGE}`)
    return EXIT.usage
  }
  if (args.help) {
    io.out(USAGE)
    return EXIT.ok
  }
  const userId = Number(args.user)
  if (args.user === undefined || !/^\d+$/.test(args.user) || userId < 1 || userId > 2147483647) {
    io.err(
      `--user takes a user_id, a whole number from 1 to 2147483647; got ${JSON.stringify(args.user ?? null)}\n\n${USAGE}`,
    )
    return EXIT.usage
  }
  let config
  try {
    config = loadConfig(DatabaseConfigSchema, env)
  } catch (err) {
    io.err((err as Error).message)
    return EXIT.usage
  }
  const target = { host: config.MYSQL_HOST, port: config.MYSQL_PORT, database: config.MYSQL_DATABASE }
  let session
  try {
    session = await removalSession({ ...target, user: config.MYSQL_USER, password: config.MYSQL_PASSWORD })
  } catch (err) {
    const { code } = err as { code?: string }
    io.err(`MySQL is not reachable at ${target.host}:${target.port}: ${(err as Error).message}`)
    return code !== undefined && UNREACHABLE.has(code) ? EXIT.unreachable : EXIT.failed
  }
  try {
    await session.query({ sql: RECORD_ERASURE_SQL[0], values: [userId], timeout: 30_000 })
    const [[row]] = await session.query<RowDataPacket[]>({
      sql: RECORD_ERASURE_SQL[1],
      values: [userId],
      timeout: 30_000,
    })
    const erasedBefore = erasureTime(String(row?.erased_before))
    // The rows now, unless a consumer holds the lock: it removes them within its interval.
    const [[lock]] = await session.query<RowDataPacket[]>({
      sql: 'SELECT GET_LOCK(?, 10) AS taken',
      values: [lockName(config.MYSQL_DATABASE)],
      timeout: 15_000,
    })
    const taken = Number(lock?.taken) === 1
    let removed: number | null = null
    if (taken) {
      try {
        removed = await eraseRows(session, { userId, erasedBefore: erasedBefore.slice(0, 23).replace('T', ' ') })
      } catch (err) {
        // The erasure is recorded, which is what counts: the consumers drop the user's queued
        // events and remove the rows left. A server that answered rolls back its chunk here.
        if ((err as { errno?: unknown }).errno === undefined) throw err
        await session.query({ sql: 'ROLLBACK', timeout: 5000 })
        io.err(`removing the stored events failed (${(err as Error).message}); a consumer removes them`)
      }
    }
    if (taken)
      await session.query({ sql: 'DO RELEASE_LOCK(?)', values: [lockName(config.MYSQL_DATABASE)], timeout: 5000 })
    const result = { status: 'accepted', user_id: userId, erased_before: erasedBefore, rows_removed: removed }
    if (args.json) io.out(JSON.stringify(result))
    else
      io.out(
        `user ${userId} erased as of ${erasedBefore}: ` +
          (removed !== null
            ? `${removed} stored events removed`
            : taken
              ? 'a consumer removes the stored events'
              : 'a consumer is removing rows now; it removes this user’s too'),
      )
    return EXIT.ok
  } catch (err) {
    io.err(`erasing user ${userId} failed: ${(err as Error).message}`)
    return EXIT.failed
  } finally {
    // A failed chunk is rolled back, and the lock released, with the session.
    await session.end().catch((err: unknown) => {
      io.err(`closing the MySQL session failed: ${(err as Error).message}`)
      session.destroy()
    })
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const io: Output = { out: (line) => console.log(line), err: (line) => console.error(line) }
  process.exitCode = await main(process.argv.slice(2), process.env, io)
}
