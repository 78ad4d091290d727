// What the client reports through onError: events it will not deliver, and why.
import type { ValidationDetail } from './rules.js'

/** An event as queued: what track() was given, made complete (event_id and timestamp). */
export interface ActivityEvent {
  event_id: string
  user_id: number
  event_type: string
  timestamp: string
  metadata?: Record<string, unknown> | null
}

/**
 * Why events were not delivered:
 * - `invalid`: the contract refuses them (found by track(), or by the server's 400); `detail` says why.
 * - `too_large`: one event larger than the server takes (its 413).
 * - `queue_full`: `maxQueuedEvents` were waiting already; the new event was not queued.
 * - `unauthorized`: the server refused the write key (401/403); the client stopped sending.
 * - `rejected`: another answer that retrying cannot change (404, 415, ...); `status` says which.
 * - `closed`: tracked after close(), or still undelivered when close()'s time ran out.
 */
export type ActivityErrorCode = 'invalid' | 'too_large' | 'queue_full' | 'unauthorized' | 'rejected' | 'closed'

export class ActivityClientError extends Error {
  override readonly name = 'ActivityClientError'
  constructor(
    readonly code: ActivityErrorCode,
    message: string,
    /** The events concerned: none of them is delivered by this client. */
    readonly events: ActivityEvent[],
    /** The server's (or track()'s) validation problems, for `invalid`. */
    readonly detail?: ValidationDetail[],
    /** The HTTP status, when the server answered. */
    readonly status?: number,
  ) {
    super(message)
  }
}
