// Waits until a write would succeed before the worker takes deliveries on a new channel.
import type { Logger } from 'pino'
import { describeFailure, type Store } from './store.js'
import { backoffDelay, sleep } from 'event-contract'

/** Longest wait between write probes. */
const PROBE_MAX_MS = 1000
/** At most one "still waiting for the database" line this often. */
const WAITING_LOG_MS = 30_000

/**
 * Resolves true once a write would succeed (the store's write probe; `SELECT 1` is not enough:
 * a read-only server or a revoked INSERT answers it), false once a `quit` signal aborts. Every
 * connection that closes while holding deliveries counts one delivery of each against the quorum
 * queue's delivery limit, so a worker that cannot store takes nothing new: link drops while the
 * database is down or refuses writes then cost the events nothing, and the limit stays a
 * backstop for messages that really fail. Probed once per channel, whatever the last insert did.
 */
export async function untilStorable(
  store: Store,
  { quit, retryMaxMs, logger }: { quit: AbortSignal[]; retryMaxMs: number; logger: Logger },
): Promise<boolean> {
  let warnedAt = 0
  for (let attempt = 0; ; attempt++) {
    try {
      // The first time this applies db/init.sql; the database may not even exist yet.
      await store.prepare()
      if (attempt > 0) logger.info(store.location, 'the database is available; consuming')
      return !quit.some((signal) => signal.aborted)
    } catch (err) {
      if (Date.now() - warnedAt > WAITING_LOG_MS) {
        warnedAt = Date.now()
        logger.warn({ ...describeFailure(err), attempt }, 'connected to RabbitMQ; waiting for the database to consume')
      }
      const delay = backoffDelay(attempt, Math.min(PROBE_MAX_MS, retryMaxMs))
      if (!(await sleep(delay, ...quit))) return false
    }
  }
}
