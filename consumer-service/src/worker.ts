// Consumes events from RabbitMQ in batches and stores them: ack after commit, dead-letter what
// can never be stored, hold and retry what cannot be stored yet.
import { EventEmitter } from 'node:events'
import type { ConfirmChannel, ConsumeMessage } from 'amqplib'
import type { Logger } from 'pino'
import { connectBroker, topologyFor, type BrokerConfig, type BrokerConnection, type Topology } from 'event-contract'
import { BatchHandler, type Lifetime } from './batch-handler.js'
import { Batcher } from './batcher.js'
import { delivery, eventCountOf, type Delivery } from './delivery.js'
import type { WorkerGauges } from './metrics.js'
import { prefetchFitting, type PrefetchLimits } from './prefetch.js'
import { queueDepths } from './queue-depths.js'
import { copyHeaders, deliveriesOf, isWorn } from './redelivery.js'
import { untilStorable } from './storable.js'
import type { Store } from './store.js'
import { Subscription } from './subscription.js'
import type { WorkerEvents } from './worker-events.js'

/**
 * Upper bound of a batch's message bytes; the store splits further if the server's packet limit
 * is lower. Deliveries are held as the broker sent them (bytes, outside the JS heap) and parsed
 * only when their batch is handled; a batch is copied a few times on its way into one INSERT
 * (objects, rows, SQL, packet): with this, the heap stays small enough for the 128 MiB old space
 * the service runs with (see the Dockerfile), whatever the messages in hand carry.
 */
const MAX_BATCH_BYTES = 1024 * 1024
/** Batches in flight: one is parsed while the other is inserted. */
const BATCH_CONCURRENCY = 2
/**
 * A batch holds at most this share of CONSUMER_PREFETCH: with two batches at the database and
 * one filling, the broker still has room to deliver the next. A batch as large as half the
 * prefetch stops deliveries while both are inserted (a fifth slower at the defaults), and one
 * larger than the prefetch never fills: every batch would wait out CONSUMER_BATCH_WAIT_MS.
 */
const PREFETCH_SHARE_PER_BATCH = 1 / (BATCH_CONCURRENCY + 2)

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
 * The worker: wires the channel, the ledger, the batcher and the batch handler together, starts
 * consuming once a write would succeed, and stops within its grace. It emits WorkerEvents; its
 * metrics and its summary line listen from outside (metrics.ts, summary.ts).
 */
export class Worker extends EventEmitter<WorkerEvents> implements WorkerGauges, Lifetime {
  readonly #config: WorkerConfig
  readonly #store: Store
  readonly #log: Logger
  readonly #topology: Topology
  readonly #batcher: Batcher<Delivery>
  readonly #handler: BatchHandler
  /** Messages per batch at most (see PREFETCH_SHARE_PER_BATCH); rows: CONSUMER_BATCH_SIZE. */
  readonly #messagesPerBatch: number
  #broker: BrokerConnection | undefined
  /** The open channel's ledger, outbox and consumer. */
  #subscription: Subscription | undefined
  /** Aborted when stop() begins: start no consumer, and wait no longer to. */
  #stopped = new AbortController()
  /** Aborted when stop()'s grace is over: give up on batches still waiting for the database. */
  #gaveUp = new AbortController()
  readonly #limits: PrefetchLimits

  constructor({
    config,
    store,
    logger,
    maxInHandBytes = config.CONSUMER_MAX_IN_HAND_BYTES,
  }: {
    config: WorkerConfig
    store: Store
    logger: Logger
    /** Message bytes in hand at most (CONSUMER_MAX_IN_HAND_BYTES; tests lower it). */
    maxInHandBytes?: number
  }) {
    super()
    this.#config = config
    this.#store = store
    this.#log = logger.child({ component: 'worker' })
    this.#topology = topologyFor(config.RABBITMQ_QUEUE, config.RABBITMQ_QUEUE_TYPE)
    this.#handler = new BatchHandler({
      store,
      logger: this.#log,
      events: this,
      lifetime: this,
      retryMaxMs: config.CONSUMER_RETRY_MAX_MS,
      deadLetterQueue: this.#topology.deadLetterQueue,
    })
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
      handle: (batch) => this.#handler.handle(batch),
    })
  }

  /** Starts connecting and consuming; returns at once. The connection recovers by itself. */
  async start(): Promise<void> {
    if (this.#broker) return
    this.#stopped = new AbortController()
    this.#gaveUp = new AbortController()
    this.#broker = await connectBroker({
      config: this.#config,
      logger: this.#log,
      name: 'consumer-service',
      // A confirm channel: dead letters are published on it, and confirmed before the ack.
      openChannel: (model) => model.createConfirmChannel(),
      ready: (channel) => this.#ready(channel),
      lost: (channel) => {
        if (this.#subscription?.channel === channel) this.#lostChannel()
      },
    })
  }

  /** Resolves on the first successful connection (for tests and tools). */
  async waitForConnect(): Promise<void> {
    await this.#broker?.connection.waitForConnect()
  }

  /** Events and message bytes delivered and not settled yet. */
  get inHand(): { events: number; bytes: number } {
    return this.#subscription?.ledger.inHand ?? { events: 0, bytes: 0 }
  }

  get stopped(): AbortSignal {
    return this.#stopped.signal
  }

  get gaveUp(): AbortSignal {
    return this.#gaveUp.signal
  }

  get heldBatches(): number {
    return this.#handler.heldBatches
  }

  get lettersHeld(): number {
    return this.#handler.lettersHeld
  }

  get lastStoredAt(): number {
    return this.#handler.lastStoredAt
  }

  /** Ready messages of the queue and of its dead-letter queue, asked on a channel of its own. */
  async queueDepths(timeoutMs = 2000): Promise<{ main: number; deadLetter: number }> {
    const connection = this.#broker?.connection
    if (!connection || !this.#subscription) throw new Error('not connected to RabbitMQ')
    return queueDepths(connection, this.#topology, this.#log, timeoutMs)
  }

  health(): WorkerHealth {
    const ledger = this.#subscription?.ledger
    const since = ledger?.oldestSince
    const stalled = since !== undefined && Date.now() - since > this.#config.CONSUMER_STALL_TIMEOUT_MS
    return {
      rabbitmq: ledger ? 'up' : 'down',
      progress: stalled ? 'stalled' : 'ok',
      dlq: this.#handler.lettersHeld > 0 ? 'refusing' : 'ok',
    }
  }

  async #ready(channel: ConfirmChannel): Promise<void> {
    const subscription = await Subscription.open(channel, {
      topology: this.#topology,
      limits: this.#limits,
      logger: this.#log,
      stopped: () => this.#stopped.signal,
      onMessage: (from, msg) => this.#deliver(from, msg),
    })
    this.#subscription = subscription
    // In the background: ready() returns to the connection's recovery; the channel's loss ends it.
    void this.#consumeWhenStorable(subscription)
  }

  /** Subscribes once a write would succeed (storable.ts), unless the channel or the worker went. */
  async #consumeWhenStorable(subscription: Subscription): Promise<void> {
    const quit = [subscription.ledger.signal, this.#stopped.signal]
    const { CONSUMER_RETRY_MAX_MS: retryMaxMs, CONSUMER_BATCH_SIZE: batchRows } = this.#config
    if (!(await untilStorable(this.#store, { quit, retryMaxMs, logger: this.#log }))) return
    if (await subscription.subscribe()) {
      this.#log.info({ queue: this.#topology.queue, batchRows, batchMessages: this.#messagesPerBatch }, 'consuming')
    }
  }

  #deliver(subscription: Subscription, msg: ConsumeMessage): void {
    const { ledger, outbox } = subscription
    // Held as bytes, parsed when its batch is handled: what is in hand costs the JS heap nothing.
    ledger.hold(msg, eventCountOf(msg))
    subscription.observe(msg)
    // In the background: it settles the delivery itself, or hands it to the batcher.
    if (isWorn(msg, this.#topology)) void this.#requeueWorn(subscription, msg)
    else this.#batcher.push(delivery(ledger, outbox, msg))
  }

  /**
   * Queues a fresh copy of a delivery that used half its delivery limit, then acks it alone (a crash in
   * between leaves two copies: the event_id stores one). If the copy is refused, the delivery is
   * handled as it is.
   */
  async #requeueWorn({ ledger, outbox }: Subscription, msg: ConsumeMessage): Promise<void> {
    const { count, prior } = deliveriesOf(msg)
    const { messageId } = msg.properties as { messageId?: string }
    try {
      await outbox.requeue(msg, copyHeaders(msg))
      this.#log.warn(
        { messageId, deliveries: count + prior },
        'delivered many times without being stored; queued a fresh copy',
      )
      this.emit('requeued', { messageId, deliveries: count + prior })
      ledger.settleAlone(msg)
    } catch (err) {
      if (ledger.lost) return
      this.#log.warn({ err, messageId }, 'could not queue a fresh copy; handling it as it is')
      this.#batcher.push(delivery(ledger, outbox, msg))
    }
  }

  /** Forgets the channel; its unsettled deliveries come back from the broker. */
  #lostChannel(): void {
    this.#subscription?.ledger.lose()
    this.#subscription = undefined
    this.#batcher.discard()
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
      const subscription = this.#subscription
      if (subscription?.consuming) {
        const cancelled = subscription.cancel().then(
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
      this.#subscription?.ledger.ackStored()
      // Closes the channel before the connection, so that its acks reach the broker.
      await broker.close()
      this.#lostChannel()
      this.#log.info('RabbitMQ connection closed')
    }
  }
}
