// The client's options, their defaults, and the checks of what would fail every request alike.
import type { ActivityClientError } from './errors.js'
import { BATCH_PATH } from './http.js'

export interface ActivityClientOptions {
  /** The producer's base URL, e.g. `https://track.example.com` (batches go to its /api/v1/events/batch). */
  endpoint: string
  /** A key of the producer's API_KEYS; none when the producer is open. */
  writeKey?: string
  /** Send as soon as this many events wait (default 100). */
  flushAt?: number
  /** Send what waits at the latest this long after it was tracked (default 1000 ms). */
  flushIntervalMs?: number
  /** Most events waiting or in flight; past it new events are refused, reported `queue_full` (default 10,000). */
  maxQueuedEvents?: number
  /** Most bytes of events' JSON waiting or in flight; past it new events are refused, reported `queue_full` (default 16 MiB). */
  maxQueuedBytes?: number
  /** Gzip bodies of 1 KiB and more, with Node's zlib or the browser's CompressionStream (default true). */
  gzip?: boolean
  /** Told of every event this client will not deliver, and why. */
  onError?: (error: ActivityClientError) => void
  /** Most events a request (default 500; the producer's BATCH_MAX_EVENTS is 1,000). */
  maxBatchEvents?: number
  /** Most bytes of JSON a request (default 512 KiB; the producer's BATCH_BODY_LIMIT_BYTES is 1 MiB). */
  maxBatchBytes?: number
  /** Requests at once (default 4). */
  maxInFlight?: number
  /** Longest wait between two tries of a batch (default 30 s). */
  maxBackoffMs?: number
  /** Longest wait for an answer; then the batch is tried again (default 10 s). */
  requestTimeoutMs?: number
}

export type Settings = Required<Omit<ActivityClientOptions, 'writeKey' | 'onError'>> & ActivityClientOptions

export function withDefaults(options: ActivityClientOptions): Settings {
  return {
    flushAt: 100,
    flushIntervalMs: 1000,
    maxQueuedEvents: 10_000,
    maxQueuedBytes: 16 * 1024 * 1024,
    gzip: true,
    maxBatchEvents: 500,
    maxBatchBytes: 512 * 1024,
    maxInFlight: 4,
    maxBackoffMs: 30_000,
    requestTimeoutMs: 10_000,
    ...options,
  }
}

/**
 * The producer's /batch URL. A missing endpoint, one that is not http(s) or carries credentials,
 * a write key no header can carry: thrown at once rather than retried for ever.
 */
export function batchUrl(options: ActivityClientOptions): string {
  if (!options.endpoint) throw new TypeError('ActivityClient: endpoint is required (the producer’s base URL)')
  const url = new URL(BATCH_PATH, options.endpoint.endsWith('/') ? options.endpoint : `${options.endpoint}/`)
  if (!/^https?:$/.test(url.protocol) || url.username || url.password) {
    throw new TypeError('ActivityClient: endpoint must be an http(s) URL without credentials; give the key as writeKey')
  }
  if (options.writeKey !== undefined && !/^[\x21-\x7e]+$/.test(options.writeKey)) {
    throw new TypeError('ActivityClient: writeKey must be printable ASCII without spaces (it goes in a header)')
  }
  return url.href
}
