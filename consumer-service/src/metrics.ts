// The consumer's Prometheus metrics (GET /metrics on the health port): what it stores, what it
// dead-letters and why, how the database answers, and how deep its queues are.
import client from 'prom-client'
import type { WorkerEmitter } from './worker-events.js'

/** How often at most the queue depths are asked of RabbitMQ (a scrape in between reuses them). */
const DEPTH_POLL_MS = 5000

export type ConsumerMetrics = ReturnType<typeof createConsumerMetrics>

export function createConsumerMetrics() {
  const registry = new client.Registry()
  client.collectDefaultMetrics({ register: registry })
  const registers = [registry]
  return {
    registry,
    stored: new client.Counter({
      name: 'consumer_events_stored_total',
      help: 'Events stored as new rows',
      registers,
    }),
    duplicates: new client.Counter({
      name: 'consumer_events_duplicate_total',
      help: 'Events already stored (a redelivery or a client retry), ignored',
      registers,
    }),
    erased: new client.Counter({
      name: 'consumer_events_erased_total',
      help: 'Events not stored because their user was erased after the producer received them',
      registers,
    }),
    removed: new client.Counter({
      name: 'consumer_events_removed_total',
      help: 'Stored events this process removed: of erased users (erased), past RETENTION_DAYS (expired)',
      labelNames: ['reason'] as const,
      registers,
    }),
    batches: new client.Counter({ name: 'consumer_batches_total', help: 'INSERT batches committed', registers }),
    batchSize: new client.Histogram({
      name: 'consumer_batch_size',
      help: 'Rows per committed batch',
      buckets: [1, 10, 50, 100, 250, 500, 1000, 2500],
      registers,
    }),
    insertSeconds: new client.Histogram({
      name: 'consumer_insert_seconds',
      help: 'Time of a successful batch INSERT',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    deadLettered: new client.Counter({
      name: 'consumer_events_dead_lettered_total',
      help: 'Messages or events dead-lettered, by kind',
      labelNames: ['kind'] as const,
      registers,
    }),
    deadLetterRefusals: new client.Counter({
      name: 'consumer_dead_letter_refusals_total',
      help: 'Dead letters the broker did not queue (nacked: the DLQ refuses; returned: no DLQ), retried',
      labelNames: ['reason'] as const,
      registers,
    }),
    requeued: new client.Counter({
      name: 'consumer_deliveries_requeued_total',
      help: 'Deliveries redelivered half their delivery limit without being stored, queued again as fresh copies',
      registers,
    }),
    retries: new client.Counter({
      name: 'consumer_database_retries_total',
      help: 'Batch INSERTs that failed for the database and will be retried',
      registers,
    }),
  }
}

/** What the gauges read from the worker at scrape time. */
export interface WorkerGauges {
  /** Events and message bytes delivered and not settled yet. */
  readonly inHand: { events: number; bytes: number }
  /** Batches held while the database is unavailable. */
  readonly heldBatches: number
  /** Messages held because the broker refused their dead letters (retried). */
  readonly lettersHeld: number
  /** When an event was last stored (ms since the epoch), or when the worker started. */
  readonly lastStoredAt: number
  /** Ready messages of the queue and its dead-letter queue; throws if RabbitMQ cannot say. */
  queueDepths(): Promise<{ main: number; deadLetter: number }>
}

/** Counts the worker's events, and reads its gauges at scrape time. */
export function observeWorker(metrics: ConsumerMetrics, worker: WorkerGauges & WorkerEmitter): void {
  worker.on('stored', ({ inserted, duplicates, erased, rows, seconds }) => {
    metrics.stored.inc(inserted)
    metrics.duplicates.inc(duplicates)
    metrics.erased.inc(erased)
    metrics.batches.inc()
    metrics.batchSize.observe(rows)
    metrics.insertSeconds.observe(seconds)
  })
  worker.on('deadLettered', ({ kind, count }) => metrics.deadLettered.inc({ kind }, count))
  worker.on('deadLetterRefused', ({ reason, count }) => metrics.deadLetterRefusals.inc({ reason }, count))
  worker.on('retrying', () => metrics.retries.inc())
  worker.on('requeued', () => metrics.requeued.inc())
  const registers = [metrics.registry]
  new client.Gauge({
    name: 'consumer_batches_held',
    help: 'Batches held, unacknowledged, while the database is unavailable',
    registers,
    collect() {
      this.set(worker.heldBatches)
    },
  })
  new client.Gauge({
    name: 'consumer_dead_letters_held',
    help: 'Messages held, unacknowledged, because the dead-letter queue refuses their letters (retried)',
    registers,
    collect() {
      this.set(worker.lettersHeld)
    },
  })
  new client.Gauge({
    name: 'consumer_events_in_hand',
    help: 'Events delivered and not yet settled (a batch message counts the events it says it carries)',
    registers,
    collect() {
      this.set(worker.inHand.events)
    },
  })
  new client.Gauge({
    name: 'consumer_seconds_since_last_store',
    help: 'Seconds since an event was last stored (since start-up, before the first)',
    registers,
    collect() {
      this.set((Date.now() - worker.lastStoredAt) / 1000)
    },
  })
  let polledAt = 0
  let depths: { main: number; deadLetter: number } | undefined
  new client.Gauge({
    name: 'consumer_queue_messages',
    help: `Ready messages in the queue and its dead-letter queue (asked of RabbitMQ at most every ${DEPTH_POLL_MS / 1000} s)`,
    labelNames: ['queue'] as const,
    registers,
    async collect() {
      if (Date.now() - polledAt >= DEPTH_POLL_MS) {
        polledAt = Date.now()
        // Unknown while RabbitMQ cannot say: no sample then, rather than a stale or wrong one.
        depths = await worker.queueDepths().catch(() => undefined)
      }
      this.reset()
      if (!depths) return
      this.set({ queue: 'main' }, depths.main)
      this.set({ queue: 'dead_letter' }, depths.deadLetter)
    },
  })
}
