// The data lifecycle in the background of a consumer: erased users' rows and (RETENTION_DAYS)
// expired events removed continuously, by one process at a time across all consumers (a MySQL
// named lock), never in the way of the inserts (small transactions, READ COMMITTED).
import type { Connection, ConnectionOptions, RowDataPacket } from 'mysql2/promise'
import type { Logger } from 'pino'
import { orAfter, sleep } from 'event-contract'
import {
  eraseRows,
  expireRows,
  pendingErasures,
  removalSession,
  reopenedErasures,
  type ErasureRecord,
} from './removal.js'
import { endBounded } from './store-sessions.js'

/** How often a consumer looks for work (erasures and the retention's pass). */
const INTERVAL_MS = 10_000
/** MySQL's error for a table that does not exist. */
const ER_NO_SUCH_TABLE = 1146
/**
 * After a chunk of the retention that removed rows, a pause as long as the chunk took (5 ms at
 * least): the purge takes half of what the database gives it at most, the inserts the rest.
 */
const CHUNK_PAUSE_MS = 5
/**
 * A retention pass reads every id of the table, a look for erased users' rows that came back
 * every erased user's index entries: the next one waits this many times as long as the last one
 * took (and at least the interval), so that each runs a tenth of the time at most.
 */
const PASS_SPACING = 10

export interface LifecycleOptions {
  connection: ConnectionOptions & { database: string }
  logger: Logger
  /** RETENTION_DAYS: events older are removed; undefined keeps them forever. */
  retentionDays?: number
  intervalMs?: number
  /** Told of each run that removed rows (metrics). */
  onRemoved?: (outcome: RunOutcome) => void
}

export interface RunOutcome {
  /** False when another process held the lock: it does the work. */
  ran: boolean
  erased: number
  expired: number
}

/** The named lock of a database's lifecycle (at most 64 characters, as MySQL takes). */
export function lockName(database: string): string {
  return `user_activity_lifecycle.${database}`.slice(0, 64)
}

export class Lifecycle {
  readonly #options: LifecycleOptions
  readonly #log: Logger
  readonly #intervalMs: number
  #stop: AbortController | undefined
  #running: Promise<void> | undefined
  /** The session of the run in progress, to drop at stop(). */
  #session: Connection | undefined
  /** When this process may walk the table for expired events next (ms since the epoch). */
  #nextPassAt = 0
  /** When this process may look for erased users' rows that came back next. */
  #nextLookAt = 0

  constructor(options: LifecycleOptions) {
    this.#options = options
    this.#log = options.logger.child({ component: 'lifecycle' })
    this.#intervalMs = options.intervalMs ?? INTERVAL_MS
  }

  /** Runs every interval until stop(); idempotent. */
  start(): void {
    if (this.#stop) return
    const stop = new AbortController()
    this.#stop = stop
    this.#running = (async () => {
      // Until a run finds the tables: the consumer creates them (db/init.sql) once it reaches the
      // database and the broker; meanwhile a missing table is no failure, and the next look is soon.
      let tablesSeen = false
      while (!stop.signal.aborted) {
        let wait = this.#intervalMs
        try {
          const outcome = await this.runOnce(() => stop.signal.aborted)
          tablesSeen = true
          if (outcome.erased > 0 || outcome.expired > 0) {
            this.#log.info(outcome, 'events removed')
            this.#options.onRemoved?.(outcome)
          }
        } catch (err) {
          if (!tablesSeen && (err as { errno?: unknown }).errno === ER_NO_SUCH_TABLE) {
            this.#log.debug({ err }, 'no tables yet: the consumer creates them as it starts')
            wait = Math.min(this.#intervalMs, 1000)
          } else {
            // The next interval tries again: what was removed is committed, the rest waits.
            this.#log.warn({ err }, 'removing erased or expired events failed; trying again later')
          }
        }
        await sleep(wait, stop.signal)
      }
    })()
  }

  /** Stops the loop; a chunk still running after `graceMs` is dropped (its session closed, rolled back). */
  async stop(graceMs = 2000): Promise<void> {
    this.#stop?.abort()
    if (
      this.#running &&
      !(await orAfter(
        this.#running.then(() => true),
        graceMs,
        false,
      ))
    ) {
      this.#log.warn('a removal was still running at stop; dropped (rolled back)')
      this.#session?.destroy()
    }
    this.#stop = undefined
    this.#running = undefined
  }

  /** When the next of a spaced task (PASS_SPACING) that began at `started` and ends now may begin. */
  #spaced(started: number): number {
    return Date.now() + Math.max(this.#intervalMs, PASS_SPACING * (Date.now() - started)) - this.#intervalMs
  }

  /** Removes the rows of each erasure in turn; returns how many. */
  async #erase(session: Connection, erasures: ErasureRecord[], stopped: () => boolean): Promise<number> {
    let erased = 0
    for (const erasure of erasures) {
      if (stopped()) break
      try {
        erased += await eraseRows(session, erasure, stopped)
      } catch (err) {
        // One erasure refused (a lock held long, say) must not hold up the others, nor the
        // retention: the server answered, so its chunk is rolled back here and the next goes on.
        if ((err as { errno?: unknown }).errno === undefined) throw err
        this.#log.warn({ err, userId: erasure.userId }, 'removing an erased user’s rows failed; trying again later')
        await session.query({ sql: 'ROLLBACK', timeout: 5000 })
      }
    }
    return erased
  }

  /**
   * The completed erasures whose rows came back (a restore), when it is time to look again. A look
   * that fails (too slow on a large table, say) is logged and spaced like one that succeeded: it
   * holds up neither the pending erasures nor the retention.
   */
  async #reopened(session: Connection, stopped: () => boolean): Promise<ErasureRecord[]> {
    if (Date.now() < this.#nextLookAt || stopped()) return []
    const started = Date.now()
    try {
      const reopened = await reopenedErasures(session)
      for (const { userId } of reopened) {
        this.#log.warn({ userId }, 'rows of an erased user are back (a restored table?); removing them again')
      }
      return reopened
    } catch (err) {
      if ((err as { errno?: unknown }).errno === undefined) throw err // the session is gone: the run fails
      this.#log.warn({ err }, 'looking for erased users’ rows that came back failed; trying again later')
      return []
    } finally {
      this.#nextLookAt = this.#spaced(started)
    }
  }

  /**
   * One run, if this process gets the lock: every pending erasure (and, spaced, those whose rows
   * came back), then the retention's pass.
   * `stopped` ends it between chunks.
   */
  async runOnce(stopped: () => boolean = () => false): Promise<RunOutcome> {
    const { connection: options, retentionDays } = this.#options
    const session = await removalSession(options)
    this.#session = session
    try {
      const [[lock]] = await session.query<RowDataPacket[]>({
        sql: 'SELECT GET_LOCK(?, 0) AS taken',
        values: [lockName(options.database)],
        timeout: 5000,
      })
      if (Number(lock?.taken) !== 1) {
        await endBounded(session, this.#log)
        return { ran: false, erased: 0, expired: 0 }
      }
      // The pending erasures first; then, spaced, those whose rows came back.
      let erased = await this.#erase(session, await pendingErasures(session), stopped)
      erased += await this.#erase(session, await this.#reopened(session, stopped), stopped)
      let expired = 0
      if (retentionDays !== undefined && !stopped() && Date.now() >= this.#nextPassAt) {
        const started = Date.now()
        const pause = (chunkMs: number) => sleep(Math.max(CHUNK_PAUSE_MS, chunkMs)).then(() => undefined)
        expired = await expireRows(session, retentionDays, stopped, pause)
        this.#nextPassAt = this.#spaced(started)
      }
      // Released here, not by the end of the session: the server frees a closed session's locks a
      // moment after the client sees it closed, and the next run (here or elsewhere) would miss it.
      await session.query({ sql: 'DO RELEASE_LOCK(?)', values: [lockName(options.database)], timeout: 5000 })
      await endBounded(session, this.#log)
      return { ran: true, erased, expired }
    } catch (err) {
      // Closed at once: that rolls back a chunk that failed halfway (and releases the lock).
      session.destroy()
      throw err
    } finally {
      this.#session = undefined
    }
  }
}
