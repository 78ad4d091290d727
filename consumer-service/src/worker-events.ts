// What the worker tells whoever listens (its metrics, its summary line, tests): typed events.
import type { EventEmitter } from 'node:events'
import type { DeadLetterKind } from './dead-letter.js'

export interface WorkerEvents {
  /** A batch committed: rows new, rows already there, rows sent, the INSERT's time, lag of its first event. */
  stored: [{ inserted: number; duplicates: number; erased: number; rows: number; seconds: number; lagMs: number }]
  /** Letters of one kind confirmed on the dead-letter queue. */
  deadLettered: [{ kind: DeadLetterKind; count: number }]
  /** Letters the broker did not queue (`nacked`: the DLQ refuses; `returned`: no DLQ); retried. */
  deadLetterRefused: [{ reason: 'nacked' | 'returned'; count: number }]
  /** A batch the database could not take; held and retried after `delayMs`. */
  retrying: [{ attempt: number; delayMs: number; rows: number }]
  /** A worn delivery queued again as a fresh copy (see redelivery.ts). */
  requeued: [{ messageId: string | undefined; deliveries: number }]
}

/** Where the worker's parts emit. */
export type WorkerEmitter = EventEmitter<WorkerEvents>
