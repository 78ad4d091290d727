// Handles one batch of deliveries: parse, store (retrying while the database cannot take it),
// dead-letter what can never be stored (retrying while the DLQ refuses), then settle.
import type { Logger } from 'pino'
import { DeadLetterRefusedError } from './dead-letter.js'
import { parse, type Delivery, type Item } from './delivery.js'
import { describeFailure, RowTooLargeError, toRow, type Store } from './store.js'
import { backoffDelay, sleep } from 'event-contract'
import type { WorkerEmitter } from './worker-events.js'

/** The worker's lifetime, as the handler needs it; each start() makes new signals. */
export interface Lifetime {
  /** Aborted when stop() begins: a held letter is left to the broker's redelivery. */
  readonly stopped: AbortSignal
  /** Aborted when stop()'s grace is over: a held batch is left unsettled too. */
  readonly gaveUp: AbortSignal
}

export interface BatchHandlerOptions {
  store: Store
  logger: Logger
  events: WorkerEmitter
  lifetime: Lifetime
  /** CONSUMER_RETRY_MAX_MS: the cap of the backoff between retries. */
  retryMaxMs: number
  /** Named when the DLQ had to be declared again. */
  deadLetterQueue: string
}

export class BatchHandler {
  readonly #options: BatchHandlerOptions
  readonly #log: Logger
  #heldBatches = 0
  #lettersHeld = 0
  #lastStoredAt = Date.now()

  constructor(options: BatchHandlerOptions) {
    this.#options = options
    this.#log = options.logger
  }

  /** Batches held while the database is unavailable. */
  get heldBatches(): number {
    return this.#heldBatches
  }

  /** Deliveries whose letters the broker refused, retried in the background. */
  get lettersHeld(): number {
    return this.#lettersHeld
  }

  /** When an event was last stored (ms since the epoch), or when the worker was made. */
  get lastStoredAt(): number {
    return this.#lastStoredAt
  }

  async handle(batch: Delivery[]): Promise<void> {
    const ledger = batch[0]?.ledger
    if (!ledger || ledger.lost) return
    for (const delivery of batch) parse(delivery)

    const items: Item[] = batch.flatMap((delivery) => delivery.events.map((message) => ({ delivery, message })))
    if (items.length > 0) {
      const outcome = await this.#storeWithRetry(items, ledger.signal)
      if (!outcome) return // given up, or the channel died: left unsettled, the broker redelivers
      for (const { item, err } of outcome.rejected) {
        const kind = err instanceof RowTooLargeError ? 'too-large' : 'database-rejected'
        item.delivery.letters.push({ kind, error: describeFailure(err).error, event: item.message })
      }
      this.#lastStoredAt = Date.now()
      this.#options.events.emit('stored', {
        inserted: outcome.inserted,
        duplicates: outcome.stored.length - outcome.inserted - outcome.erased,
        erased: outcome.erased,
        rows: items.length,
        seconds: outcome.seconds,
        lagMs: Date.now() - Date.parse((items[0] as Item).message.received_at),
      })
      this.#log.debug({ stored: outcome.stored.length, inserted: outcome.inserted }, 'batch stored')
    }
    const refused = new Set<Delivery>()
    await Promise.all(
      batch
        .filter((delivery) => delivery.letters.length > 0)
        .map(async (delivery) => {
          if (!(await this.#deadLetter(delivery, 0))) refused.add(delivery)
        }),
    )
    // Parked first, so that what is stored behind them is acked now, not after their retries.
    for (const delivery of refused) this.#retryDeadLetters(delivery)
    ledger.stored(batch.filter((delivery) => !refused.has(delivery)).map((delivery) => delivery.msg))
  }

  /** Inserts until it works, backing off; undefined when given up or the channel is gone. */
  async #storeWithRetry(items: Item[], channelLost: AbortSignal) {
    for (let attempt = 0; ; attempt++) {
      try {
        const started = performance.now()
        const outcome = await this.#options.store.insert(items, (item) => toRow(item.message))
        if (attempt > 0) {
          this.#log.info({ attempt }, 'the database is available again')
          this.#heldBatches--
        }
        return { ...outcome, seconds: (performance.now() - started) / 1000 }
      } catch (err) {
        if (attempt === 0) this.#heldBatches++
        const delay = backoffDelay(attempt, this.#options.retryMaxMs)
        this.#options.events.emit('retrying', { attempt, delayMs: delay, rows: items.length })
        this.#log.warn(
          { ...describeFailure(err), attempt, delay, held: items.length },
          'could not store the batch; holding it and retrying',
        )
        if (!(await sleep(delay, channelLost, this.#options.lifetime.gaveUp))) {
          this.#heldBatches--
          return undefined
        }
      }
    }
  }

  /**
   * Retries a delivery's refused letters with backoff until the broker queues them, then settles
   * it; meanwhile it holds that delivery only (parked), never the ones behind it. Stops when the
   * channel is lost or the worker stops: the broker then redelivers it, and the letters are made
   * again.
   */
  #retryDeadLetters(delivery: Delivery): void {
    const { ledger } = delivery
    if (ledger.lost) return
    ledger.park(delivery.msg)
    this.#lettersHeld++
    // In the background: the batch is settled without it; the loop ends with the channel or stop().
    void (async () => {
      try {
        for (let attempt = 1; ; attempt++) {
          const delay = backoffDelay(attempt, this.#options.retryMaxMs)
          if (!(await sleep(delay, ledger.signal, this.#options.lifetime.stopped))) return
          if (await this.#deadLetter(delivery, attempt)) {
            this.#log.info({ attempt, messageId: delivery.msg.properties.messageId }, 'dead letter queued at last')
            ledger.stored([delivery.msg])
            return
          }
        }
      } finally {
        this.#lettersHeld--
      }
    })()
  }

  /**
   * Publishes a delivery's letters not yet queued, each confirmed; false if one was not (it
   * stays unsettled). A letter the broker returned (no DLQ) makes it declare the topology again.
   */
  async #deadLetter(delivery: Delivery, attempt: number): Promise<boolean> {
    const { outbox, msg } = delivery
    const { messageId, type } = msg.properties
    if (attempt === 0) {
      for (const letter of delivery.letters) {
        const eventId = (letter.event as { event_id?: unknown } | undefined)?.event_id
        this.#log.error(
          { kind: letter.kind, error: letter.error, messageId, type, ...(eventId ? { eventId } : {}) },
          'dead-lettering',
        )
      }
    }
    const outcomes = await Promise.allSettled(delivery.letters.map((letter) => outbox.publish(letter, msg)))
    for (const [i, letter] of delivery.letters.entries()) {
      if (outcomes[i]?.status === 'fulfilled')
        this.#options.events.emit('deadLettered', { kind: letter.kind, count: 1 })
    }
    // Only the refused ones are tried again: a letter is queued once per delivery.
    delivery.letters = delivery.letters.filter((_, i) => outcomes[i]?.status === 'rejected')
    if (delivery.letters.length === 0) return true
    const err = (outcomes.find((outcome) => outcome.status === 'rejected') as PromiseRejectedResult).reason as Error
    if (err instanceof DeadLetterRefusedError) {
      this.#options.events.emit('deadLetterRefused', { reason: err.reason, count: delivery.letters.length })
      if (err.reason === 'returned') {
        await outbox.redeclare().then(
          () =>
            this.#log.warn(
              { queue: this.#options.deadLetterQueue },
              'the dead-letter queue was gone; declared it again',
            ),
          (redeclareErr: unknown) =>
            this.#log.warn({ err: redeclareErr }, 'could not declare the dead-letter queue again'),
        )
      }
    }
    // One line when a delivery's letters are first refused, then one every tenth retry.
    if (attempt % 10 === 0) {
      this.#log.warn(
        { error: err.message, messageId, letters: delivery.letters.length, attempt },
        'could not dead-letter; holding the message and retrying',
      )
    }
    return false
  }
}
