// Consumes events from RabbitMQ in batches and stores them: ack after commit, dead-letter what
// can never be stored, hold and retry what cannot be stored yet.
import type { ConfirmChannel, ConsumeMessage } from 'amqplib'
import type { Logger } from 'pino'
import {
  connectBroker,
  EVENT_COUNT_HEADER,
  parseQueueMessage,
  topologyFor,
  type BrokerConfig,
  type BrokerConnection,
  type QueueMessage,
  type Topology,
} from 'event-contract'
import { Batcher } from './batcher.js'
import { DeadLetterOutbox, DeadLetterRefusedError, type DeadLetter } from './dead-letter.js'
import { Ledger } from './ledger.js'
import type { ConsumerMetrics, WorkerGauges } from './metrics.js'
import { PrefetchPlan, prefetchFitting, type PrefetchLimits } from './prefetch.js'
import { copyHeaders, deliveriesOf, isWorn } from './redelivery.js'
import { RowTooLargeError, toRow, TransientStoreError, type Store } from './store.js'

/**
 * Upper bound of a batch's message bytes; the store splits further if the server's packet limit
 * is lower. Deliveries are held as the broker sent them (bytes, outside the JS heap) and parsed
 * only when their batch is handled; a batch is copied a few times on its way into one INSERT
 * (objects, rows, SQL, packet): with this, the heap stays small enough for the 128 MiB old space
 * the service runs with (see the Dockerfile), whatever the messages in hand carry.
 */
const MAX_BATCH_BYTES = 1024 * 1024
const RETRY_BASE_MS = 100
/** Longest wait between database pings while waiting to start consuming. */
const PING_MAX_MS = 1000
/** Batches in flight: one is parsed while the other is inserted. */
const BATCH_CONCURRENCY = 2
/**
 * A batch holds at most this share of CONSUMER_PREFETCH: with two batches at the database and
 * one filling, the broker still has room to deliver the next. A batch as large as half the
 * prefetch stops deliveries while both are inserted (a fifth slower at the defaults), and one
 * larger than the prefetch never fills: every batch would wait out CONSUMER_BATCH_WAIT_MS.
 */
const PREFETCH_SHARE_PER_BATCH = 1 / (BATCH_CONCURRENCY + 2)
/** At most one "still waiting for the database" line this often. */
const WAITING_LOG_MS = 30_000

export interface WorkerConfig extends BrokerConfig {
  CONSUMER_PREFETCH: number
  CONSUMER_MAX_IN_HAND_BYTES: number
  CONSUMER_MAX_MESSAGE_BYTES: number
  CONSUMER_BATCH_SIZE: number
  CONSUMER_BATCH_WAIT_MS: number
  CONSUMER_RETRY_MAX_MS: number
  CONSUMER_STALL_TIMEOUT_MS: number
}

export interface WorkerHealth {
  rabbitmq: 'up' | 'down'
  /** `stalled`: an event in hand has waited longer than CONSUMER_STALL_TIMEOUT_MS. */
  progress: 'ok' | 'stalled'
  /** `refusing`: the dead-letter queue refuses letters (full, or gone); they are held and retried. */
  dlq: 'ok' | 'refusing'
}

/**
 * A delivery and the ledger of the channel it came on (a batch never spans two channels); once
 * its batch is handled, parsed: its events to store, and its letters, what of it can never be
 * stored. It is settled once every event is stored and every letter confirmed on the DLQ.
 */
interface Delivery {
  ledger: Ledger
  /** Where its letters go: the dead-letter exchange, on the channel it came on. */
  outbox: DeadLetterOutbox
  msg: ConsumeMessage
  events: QueueMessage[]
  letters: DeadLetter[]
}

/** One event to store, and the delivery it came in. */
interface Item {
  delivery: Delivery
  message: QueueMessage
}

/** Delay before retry `attempt` (0-based): exponential from 100 ms, capped, with ±20 % jitter. */
export function backoffDelay(attempt: number, capMs: number, random: () => number = Math.random): number {
  const base = Math.min(capMs, RETRY_BASE_MS * 2 ** Math.min(attempt, 30))
  return Math.round(Math.min(capMs, base * (0.8 + 0.4 * random())))
}

/** One line of why a database operation failed: its code and message, without a stack. */
function failure(err: unknown): { error: string; code?: string } {
  const cause = err instanceof TransientStoreError ? err.cause : err
  const code = (cause as { code?: unknown } | null)?.code
  return {
    error: cause instanceof Error ? cause.message : String(cause),
    ...(typeof code === 'string' ? { code } : {}),
  }
}

/** Waits `ms`; true if it did, false as soon as one of the signals is aborted. */
export function sleep(ms: number, ...signals: AbortSignal[]): Promise<boolean> {
  if (signals.some((signal) => signal.aborted)) return Promise.resolve(false)
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(true), ms)
    function done(slept: boolean) {
      clearTimeout(timer)
      for (const signal of signals) signal.removeEventListener('abort', wake)
      resolve(slept)
    }
    function wake() {
      done(false)
    }
    for (const signal of signals) signal.addEventListener('abort', wake)
  })
}

/** What a delivery carries, unparsed: a batch message says so in a header; anything else is one. */
function eventCountOf(msg: ConsumeMessage): number {
  const count = msg.properties.headers?.[EVENT_COUNT_HEADER]
  return typeof count === 'number' && Number.isInteger(count) && count > 0 ? count : 1
}

/** Fills in a delivery's events and letters from its bytes (the contract's checks). */
function parse(delivery: Delivery): void {
  const parsed = parseQueueMessage(delivery.msg.content, delivery.msg.properties.type)
  if (!parsed.ok) {
    delivery.letters = [{ kind: 'validation', error: JSON.stringify(parsed.errors) }]
    return
  }
  delivery.events = parsed.value.events
  delivery.letters = parsed.value.invalid.map(({ event, errors }) => ({
    kind: 'validation',
    error: JSON.stringify(errors),
    event,
  }))
}

export class Worker implements WorkerGauges {
  readonly #config: WorkerConfig
  readonly #store: Store
  readonly #log: Logger
  readonly #topology: Topology
  readonly #batcher: Batcher<Delivery>
  /** Messages per batch at most (see PREFETCH_SHARE_PER_BATCH); rows: CONSUMER_BATCH_SIZE. */
  readonly #messagesPerBatch: number
  #broker: BrokerConnection | undefined
  /** The open channel's ledger, and its consumer once consuming. */
  #ledger: Ledger | undefined
  #outbox: DeadLetterOutbox | undefined
  #consumerTag: string | undefined
  /** Aborted when stop() begins: start no consumer, and wait no longer to. */
  #stopped = new AbortController()
  /** Aborted when stop()'s grace is over: give up on batches still waiting for the database. */
  #gaveUp = new AbortController()
  /** What happened since the last summary line. */
  #tally = { stored: 0, duplicates: 0, deadLettered: 0, batches: 0, lagMs: 0 }
  readonly #summaryIntervalMs: number
  #summaryTimer: NodeJS.Timeout | undefined
  readonly #metrics: ConsumerMetrics | undefined
  #heldBatches = 0
  /** Deliveries whose letters the broker refused, retried in the background. */
  #lettersHeld = 0
  #lastStoredAt = Date.now()
  /** The prefetch in force on the open channel (see prefetch.ts), and whether it is changing. */
  #plan: PrefetchPlan | undefined
  #resizing = false
  readonly #limits: PrefetchLimits

  /** `summaryIntervalMs`: how often an info line sums up what was stored (tests shorten it). */
  constructor({
    config,
    store,
    logger,
    summaryIntervalMs = 10_000,
    metrics,
    maxInHandBytes = config.CONSUMER_MAX_IN_HAND_BYTES,
  }: {
    config: WorkerConfig
    store: Store
    logger: Logger
    summaryIntervalMs?: number
    metrics?: ConsumerMetrics
    /** Message bytes in hand at most (CONSUMER_MAX_IN_HAND_BYTES; tests lower it). */
    maxInHandBytes?: number
  }) {
    this.#config = config
    this.#store = store
    this.#metrics = metrics
    this.#summaryIntervalMs = summaryIntervalMs
    this.#log = logger.child({ component: 'worker' })
    this.#topology = topologyFor(config.RABBITMQ_QUEUE, config.RABBITMQ_QUEUE_TYPE)
    // CONSUMER_BATCH_SIZE, or less when the prefetch is too small for it.
    this.#limits = {
      prefetch: config.CONSUMER_PREFETCH,
      maxInHandBytes,
      maxMessageBytes: config.CONSUMER_MAX_MESSAGE_BYTES,
    }
    // Rows per INSERT up to CONSUMER_BATCH_SIZE, and messages per batch a share of the prefetch in
    // force once messages of the expected size flow: batch messages of 250 events still make
    // 500-row INSERTs (a commit each: fewer rows per commit halved the drain), single events
    // batches of 126.
    const prefetch = prefetchFitting(this.#limits, config.CONSUMER_MAX_MESSAGE_BYTES)
    this.#messagesPerBatch = Math.max(1, Math.floor(prefetch * PREFETCH_SHARE_PER_BATCH))
    this.#batcher = new Batcher<Delivery>({
      maxSize: config.CONSUMER_BATCH_SIZE,
      maxItems: this.#messagesPerBatch,
      maxWaitMs: config.CONSUMER_BATCH_WAIT_MS,
      maxBytes: MAX_BATCH_BYTES,
      concurrency: BATCH_CONCURRENCY,
      sizeOf: (delivery) => delivery.msg.content.length,
      // Rows, not messages: a batch message carries many events (it says how many, unparsed).
      weightOf: (delivery) => eventCountOf(delivery.msg),
      handle: (batch) => this.#handle(batch),
    })
  }

  /** Starts connecting and consuming; returns at once. The connection recovers by itself. */
  async start(): Promise<void> {
    if (this.#broker) return
    this.#stopped = new AbortController()
    this.#gaveUp = new AbortController()
    this.#summaryTimer = setInterval(() => this.#summarize(), this.#summaryIntervalMs)
    this.#broker = await connectBroker({
      config: this.#config,
      logger: this.#log,
      name: 'consumer-service',
      // A confirm channel: dead letters are published on it, and confirmed before the ack.
      openChannel: (model) => model.createConfirmChannel(),
      ready: (channel) => this.#ready(channel),
      lost: (channel) => {
        if (this.#ledger?.channel === channel) this.#lostChannel()
      },
    })
  }

  /** Resolves on the first successful connection (for tests and tools). */
  async waitForConnect(): Promise<void> {
    await this.#broker?.connection.waitForConnect()
  }

  /** Events and message bytes delivered and not settled yet. */
  get inHand(): { events: number; bytes: number } {
    return this.#ledger?.inHand ?? { events: 0, bytes: 0 }
  }

  get heldBatches(): number {
    return this.#heldBatches
  }

  get lettersHeld(): number {
    return this.#lettersHeld
  }

  get lastStoredAt(): number {
    return this.#lastStoredAt
  }

  /** Ready messages of the queue and of its dead-letter queue, asked on a channel of its own. */
  async queueDepths(timeoutMs = 2000): Promise<{ main: number; deadLetter: number }> {
    const connection = this.#broker?.connection
    if (!connection || !this.#ledger) throw new Error('not connected to RabbitMQ')
    let timer: NodeJS.Timeout | undefined
    let late = false
    const tooLate = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        late = true
        reject(new Error('RabbitMQ did not say in time'))
      }, timeoutMs)
    })
    const ask = (async () => {
      const channel = await connection.createChannel()
      // Opened after the answer was given up on (the connection came back late): not leaked.
      if (late) {
        await channel.close()
        throw new Error('RabbitMQ did not say in time')
      }
      // A missing queue closes the channel with a 404: the rejection below is the answer.
      channel.on('error', (err: Error) => this.#log.debug({ err }, 'queue depth channel closed'))
      try {
        const main = await channel.checkQueue(this.#topology.queue)
        const deadLetter = await channel.checkQueue(this.#topology.deadLetterQueue)
        return { main: main.messageCount, deadLetter: deadLetter.messageCount }
      } finally {
        await channel.close().catch((err: unknown) => this.#log.debug({ err }, 'queue depth channel already closed'))
      }
    })()
    try {
      // When tooLate wins, ask's own failure comes after the race: noted, not unhandled.
      ask.catch((err: unknown) => this.#log.debug({ err }, 'queue depths not known'))
      return await Promise.race([ask, tooLate])
    } finally {
      clearTimeout(timer)
    }
  }

  health(): WorkerHealth {
    const ledger = this.#ledger
    const since = ledger?.oldestSince
    const stalled = since !== undefined && Date.now() - since > this.#config.CONSUMER_STALL_TIMEOUT_MS
    return {
      rabbitmq: ledger ? 'up' : 'down',
      progress: stalled ? 'stalled' : 'ok',
      dlq: this.#lettersHeld > 0 ? 'refusing' : 'ok',
    }
  }

  async #ready(channel: ConfirmChannel): Promise<void> {
    // Each channel starts small: its queue may hold large messages (see prefetch.ts).
    const plan = new PrefetchPlan(this.#limits)
    this.#plan = plan
    this.#resizing = false
    await channel.prefetch(plan.current)
    const ledger = new Ledger(channel, this.#log)
    this.#ledger = ledger
    this.#outbox = new DeadLetterOutbox(channel, this.#topology)
    void this.#consumeWhenStorable(ledger)
  }

  /**
   * Starts consuming once a write would succeed (the store's write probe; `SELECT 1` is not
   * enough: a read-only server or a revoked INSERT answers it). Every connection that closes
   * while holding deliveries counts one delivery of each against the quorum queue's delivery
   * limit, so a worker that cannot store holds nothing new: link drops while the database is
   * down or refuses writes then cost the events nothing, and the limit stays a backstop for
   * messages that really fail. Probed once per channel, whatever the last insert did.
   */
  async #consumeWhenStorable(ledger: Ledger): Promise<void> {
    const quit = [ledger.signal, this.#stopped.signal]
    let warnedAt = 0
    for (let attempt = 0; ; attempt++) {
      try {
        // The first time this applies db/init.sql; the database may not even exist yet.
        await this.#store.prepare()
        if (attempt > 0) this.#log.info(this.#store.location, 'the database is available; consuming')
        break
      } catch (err) {
        if (Date.now() - warnedAt > WAITING_LOG_MS) {
          warnedAt = Date.now()
          this.#log.warn({ ...failure(err), attempt }, 'connected to RabbitMQ; waiting for the database to consume')
        }
        const delay = backoffDelay(attempt, Math.min(PING_MAX_MS, this.#config.CONSUMER_RETRY_MAX_MS))
        if (!(await sleep(delay, ...quit))) return
      }
    }
    if (quit.some((signal) => signal.aborted)) return
    if (await this.#startConsuming(ledger)) {
      this.#log.info(
        {
          queue: this.#topology.queue,
          batchRows: this.#config.CONSUMER_BATCH_SIZE,
          batchMessages: this.#messagesPerBatch,
        },
        'consuming',
      )
    }
  }

  /** Subscribes to the queue on the ledger's channel; false if it could not. */
  async #startConsuming(ledger: Ledger): Promise<boolean> {
    try {
      const outbox = this.#outbox as DeadLetterOutbox
      const { consumerTag } = await ledger.channel.consume(
        this.#topology.queue,
        (msg) => this.#deliver(ledger, outbox, msg),
        { noAck: false },
      )
      if (this.#stopped.signal.aborted || ledger.lost) {
        await ledger.channel.cancel(consumerTag)
        return false
      }
      this.#consumerTag = consumerTag
      return true
    } catch (err) {
      // Usually the channel is closing with it; if not, close it: recovery starts over.
      this.#log.warn({ error: (err as Error).message }, 'could not start consuming; reconnecting')
      ledger.channel.close().catch((closeErr: unknown) => this.#log.debug({ err: closeErr }, 'channel already closed'))
      return false
    }
  }

  /**
   * Changes the prefetch when the plan says so. RabbitMQ applies a prefetch to new consumers
   * only, and a cancelled consumer's deliveries stay unacknowledged on the channel: a new
   * consumer next to them would get a whole window more. So the consumer is cancelled, what it
   * was handed is settled first, and only then is a consumer with the new prefetch started.
   */
  #observe(ledger: Ledger, msg: ConsumeMessage): void {
    const plan = this.#plan
    const target = plan?.observe(msg.content.length)
    if (!plan || target === undefined || this.#resizing || !this.#consumerTag || ledger.lost) return
    if (this.#stopped.signal.aborted) return
    const consumerTag = this.#consumerTag
    this.#consumerTag = undefined
    this.#resizing = true
    void (async () => {
      try {
        await ledger.channel.cancel(consumerTag)
        await ledger.drained()
        if (ledger.lost || this.#stopped.signal.aborted) return
        await ledger.channel.prefetch(target)
        this.#log.debug({ from: plan.current, to: target, bytes: msg.content.length }, 'prefetch changed')
        plan.current = target
        await this.#startConsuming(ledger)
      } catch (err) {
        // The channel is going: recovery starts over on a new one.
        this.#log.debug({ err }, 'could not change the prefetch')
      } finally {
        if (this.#plan === plan) this.#resizing = false
      }
    })()
  }

  #deliver(ledger: Ledger, outbox: DeadLetterOutbox, msg: ConsumeMessage | null): void {
    if (!msg) {
      // The broker cancelled us (the queue was deleted): start over, redeclaring it.
      this.#log.warn({ queue: this.#topology.queue }, 'consumer cancelled by the broker; reconnecting')
      ledger.channel.close().catch((err: unknown) => this.#log.debug({ err }, 'channel already closed'))
      return
    }
    // Held as bytes, parsed when its batch is handled: what is in hand costs the JS heap nothing.
    ledger.hold(msg, eventCountOf(msg))
    this.#observe(ledger, msg)
    if (isWorn(msg, this.#topology)) void this.#requeueWorn(ledger, outbox, msg)
    else this.#batcher.push({ ledger, outbox, msg, events: [], letters: [] })
  }

  /**
   * Queues a fresh copy of a delivery that used half its delivery limit, then acks it (a crash in
   * between leaves two copies: the event_id stores one). If the copy is refused, the delivery is
   * handled as it is.
   */
  async #requeueWorn(ledger: Ledger, outbox: DeadLetterOutbox, msg: ConsumeMessage): Promise<void> {
    const { count, prior } = deliveriesOf(msg)
    try {
      await outbox.requeue(msg, copyHeaders(msg))
      this.#log.warn(
        { messageId: msg.properties.messageId, deliveries: count + prior },
        'delivered many times without being stored; queued a fresh copy',
      )
      this.#metrics?.requeued.inc()
      ledger.stored([msg])
    } catch (err) {
      if (ledger.lost) return
      this.#log.warn({ err, messageId: msg.properties.messageId }, 'could not queue a fresh copy; handling it as it is')
      this.#batcher.push({ ledger, outbox, msg, events: [], letters: [] })
    }
  }

  /** Forgets the channel; its unsettled deliveries come back from the broker. */
  #lostChannel(): void {
    this.#ledger?.lose()
    this.#ledger = undefined
    this.#outbox = undefined
    this.#plan = undefined
    this.#consumerTag = undefined
    this.#batcher.discard()
  }

  async #handle(batch: Delivery[]): Promise<void> {
    const ledger = batch[0]?.ledger
    if (!ledger || ledger.lost) return
    for (const delivery of batch) parse(delivery)

    const items: Item[] = batch.flatMap((delivery) => delivery.events.map((message) => ({ delivery, message })))
    if (items.length > 0) {
      const outcome = await this.#storeWithRetry(items, ledger)
      if (!outcome) return // given up, or the channel died: left unsettled, the broker redelivers
      for (const { item, err } of outcome.rejected) {
        const kind = err instanceof RowTooLargeError ? 'too-large' : 'database-rejected'
        item.delivery.letters.push({ kind, error: failure(err).error, event: item.message })
      }
      this.#tally.batches++
      this.#tally.stored += outcome.inserted
      this.#tally.duplicates += outcome.stored.length - outcome.inserted
      this.#lastStoredAt = Date.now()
      this.#metrics?.stored.inc(outcome.inserted)
      this.#metrics?.duplicates.inc(outcome.stored.length - outcome.inserted)
      this.#metrics?.batches.inc()
      this.#metrics?.batchSize.observe(items.length)
      this.#tally.lagMs = Date.now() - Date.parse((items[0] as Item).message.received_at)
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
    void (async () => {
      try {
        for (let attempt = 1; ; attempt++) {
          const delay = backoffDelay(attempt, this.#config.CONSUMER_RETRY_MAX_MS)
          if (!(await sleep(delay, ledger.signal, this.#stopped.signal))) return
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

  /** One info line per interval with something to say, readable at any rate. */
  #summarize(): void {
    const tally = this.#tally
    if (tally.batches === 0 && tally.deadLettered === 0) return
    this.#log.info({ ...tally, seconds: this.#summaryIntervalMs / 1000 }, 'events stored')
    this.#tally = { stored: 0, duplicates: 0, deadLettered: 0, batches: 0, lagMs: 0 }
  }

  /** Inserts until it works, backing off; undefined when given up or the channel is gone. */
  async #storeWithRetry(items: Item[], ledger: Ledger) {
    for (let attempt = 0; ; attempt++) {
      try {
        const started = performance.now()
        const outcome = await this.#store.insert(items, (item) => toRow(item.message))
        this.#metrics?.insertSeconds.observe((performance.now() - started) / 1000)
        if (attempt > 0) {
          this.#log.info({ attempt }, 'the database is available again')
          this.#heldBatches--
        }
        return outcome
      } catch (err) {
        this.#metrics?.retries.inc()
        if (attempt === 0) this.#heldBatches++
        const delay = backoffDelay(attempt, this.#config.CONSUMER_RETRY_MAX_MS)
        this.#log.warn(
          { ...failure(err), attempt, delay, held: items.length },
          'could not store the batch; holding it and retrying',
        )
        if (!(await sleep(delay, ledger.signal, this.#gaveUp.signal))) {
          this.#heldBatches--
          return undefined
        }
      }
    }
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
    const queued = delivery.letters.filter((_, i) => outcomes[i]?.status === 'fulfilled')
    this.#tally.deadLettered += queued.length
    for (const letter of queued) this.#metrics?.deadLettered.inc({ kind: letter.kind })
    // Only the refused ones are tried again: a letter is queued once per delivery.
    delivery.letters = delivery.letters.filter((_, i) => outcomes[i]?.status === 'rejected')
    if (delivery.letters.length === 0) return true
    const err = (outcomes.find((outcome) => outcome.status === 'rejected') as PromiseRejectedResult).reason as Error
    if (err instanceof DeadLetterRefusedError) {
      this.#metrics?.deadLetterRefusals.inc({ reason: err.reason }, delivery.letters.length)
      if (err.reason === 'returned') {
        await outbox.redeclare().then(
          () =>
            this.#log.warn(
              { queue: this.#topology.deadLetterQueue },
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

  /**
   * Stops consuming, stores and acks what was delivered, and closes. Gives up on the cancel and
   * the batches still waiting for the database after `graceMs`: those stay unacked and are
   * redelivered. Then the broker's close takes at most its own bound (3 s). Idempotent.
   */
  async stop(graceMs = 5000): Promise<void> {
    const broker = this.#broker
    if (!broker) return
    this.#broker = undefined
    this.#stopped.abort()
    const gaveUp = this.#gaveUp
    // Before any await: the grace bounds the cancel too (a broker that no longer answers).
    const givenUp = new Promise<false>((resolve) => {
      if (gaveUp.signal.aborted) resolve(false)
      else gaveUp.signal.addEventListener('abort', () => resolve(false), { once: true })
    })
    const giveUp = setTimeout(() => gaveUp.abort(), graceMs)
    try {
      const ledger = this.#ledger
      if (ledger && this.#consumerTag) {
        const cancelled = ledger.channel.cancel(this.#consumerTag).then(
          () => true,
          (err: unknown) => {
            this.#log.warn({ err }, 'cancel failed')
            return true
          },
        )
        if (!(await Promise.race([cancelled, givenUp]))) {
          this.#log.warn({ ms: graceMs }, 'RabbitMQ did not answer the cancel in time')
        }
      }
      await Promise.race([this.#batcher.flush(), givenUp])
    } finally {
      clearTimeout(giveUp)
      gaveUp.abort()
      // Stored deliveries waiting behind one given up on are acked alone: only the unstored return.
      this.#ledger?.ackStored()
      // Closes the channel before the connection, so that its acks reach the broker.
      await broker.close()
      this.#lostChannel()
      clearInterval(this.#summaryTimer)
      this.#summarize()
      this.#log.info('RabbitMQ connection closed')
    }
  }
}
