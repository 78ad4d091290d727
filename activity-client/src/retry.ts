// When to try a batch again: capped exponential backoff with jitter, never before Retry-After.

/** First wait after a failure, doubled each time up to `maxBackoffMs`. */
export const BASE_BACKOFF_MS = 250

/** The Retry-After header (seconds, or an HTTP date) as milliseconds from `now`; undefined when absent or unreadable. */
export function retryAfterMs(header: string | null, now: number = Date.now()): number | undefined {
  if (header === null || header.trim() === '') return undefined
  const text = header.trim()
  const ms = /^\d+$/.test(text) ? Number(text) * 1000 : Date.parse(text) - now
  // An hour at most: past 2^31 ms a timer fires at once, and a server asking for days is wrong.
  return Number.isNaN(ms) ? undefined : Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms))
}

/** The longest Retry-After honoured. */
export const MAX_RETRY_AFTER_MS = 3_600_000

/**
 * The wait before attempt `attempt` + 1 (attempt 0 failed first): a random point in the upper half
 * of min(cap, base x 2^attempt), so that clients failing together do not come back together; at
 * least `retryAfter` when the server said it.
 */
export function backoffMs(
  attempt: number,
  maxBackoffMs: number,
  retryAfter: number | undefined,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxBackoffMs, BASE_BACKOFF_MS * 2 ** Math.min(attempt, 30))
  const jittered = ceiling / 2 + random() * (ceiling / 2)
  return Math.round(retryAfter === undefined ? jittered : Math.max(retryAfter, jittered))
}
