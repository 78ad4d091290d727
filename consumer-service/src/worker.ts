// Consumes events from RabbitMQ in batches and stores them: ack after commit, dead-letter what
// can never be stored, hold and retry what cannot be stored yet.
import type { Channel, ConsumeMessage } from 'amqplib'
import type { Logger } from 'pino'
import {
  connectBroker,
  parseQueueMessage,
  topologyFor,
  type BrokerConfig,
  type BrokerConnection,
  type QueueMessage,
  type Topology,
} from 'event-contract'
import { Batcher } from './batcher.js'
import { toRow, type Store } from './store.js'

/** Upper bound of a batch's bytes, well under MySQL's and MariaDB's max_allowed_packet. */
const MAX_BATCH_BYTES = 4 * 1024 * 1024
const RETRY_BASE_MS = 100
/** Batches in flight: one is parsed while the other is inserted. */
const BATCH_CONCURRENCY = 2

export interface WorkerConfig extends BrokerConfig {
  CONSUMER_PREFETCH: number
  CONSUMER_BATCH_SIZE: number
  CONSUMER_BATCH_WAIT_MS: number
  CONSUMER_RETRY_MAX_MS: number
}

interface Delivery {
  channel: Channel
  msg: ConsumeMessage
}

interface Valid {
  delivery: Delivery
  message: QueueMessage
}

/** Delay before retry `attempt` (0-based): exponential from 100 ms, capped, with ±20 % jitter. */
export function backoffDelay(attempt: number, capMs: number, random: () => number = Math.random): number {
  const base = Math.min(capMs, RETRY_BASE_MS * 2 ** Math.min(attempt, 30))
  return Math.round(Math.min(capMs, base * (0.8 + 0.4 * random())))
}

export class Worker {
  readonly #config: WorkerConfig
  readonly #store: Store
  readonly #log: Logger
  readonly #topology: Topology
  readonly #batcher: Batcher<Delivery>
  #broker: BrokerConnection | undefined
  #channel: Channel | undefined
  #consumerTag: string | undefined
  #stopping: AbortController | undefined
  #databaseDown = false
  /** Resolves when the batch handed out last has been settled: acks go out in delivery order. */
  #settled: Promise<void> = Promise.resolve()

  constructor({ config, store, logger }: { config: WorkerConfig; store: Store; logger: Logger }) {
    this.#config = config
    this.#store = store
    this.#log = logger.child({ component: 'worker' })
    this.#topology = topologyFor(config.RABBITMQ_QUEUE, config.RABBITMQ_QUEUE_TYPE)
    this.#batcher = new Batcher<Delivery>({
      maxSize: config.CONSUMER_BATCH_SIZE,
      maxWaitMs: config.CONSUMER_BATCH_WAIT_MS,
      maxBytes: MAX_BATCH_BYTES,
      concurrency: BATCH_CONCURRENCY,
      sizeOf: (delivery) => delivery.msg.content.length,
      handle: (batch) => this.#handle(batch),
    })
  }

  /** Starts connecting and consuming; returns at once. The connection recovers by itself. */
  async start(): Promise<void> {
    if (this.#broker) return
    this.#stopping = undefined
    this.#broker = await connectBroker({
      config: this.#config,
      logger: this.#log,
      name: 'consumer-service',
      openChannel: (model) => model.createChannel(),
      ready: (channel) => this.#consume(channel),
      lost: (channel) => {
        if (this.#channel === channel) this.#lostChannel()
      },
    })
  }

  /** Resolves on the first successful connection (for tests and tools). */
  async waitForConnect(): Promise<void> {
    await this.#broker?.connection.waitForConnect()
  }

  health(): 'up' | 'down' {
    return this.#channel && this.#consumerTag ? 'up' : 'down'
  }

  async #consume(channel: Channel): Promise<void> {
    await channel.prefetch(this.#config.CONSUMER_PREFETCH)
    this.#channel = channel
    const { consumerTag } = await channel.consume(
      this.#topology.queue,
      (msg) => {
        if (msg) this.#batcher.push({ channel, msg })
        else {
          // The broker cancelled us (the queue was deleted): start over, redeclaring it.
          this.#log.warn({ queue: this.#topology.queue }, 'consumer cancelled by the broker; reconnecting')
          channel.close().catch((err: unknown) => this.#log.debug({ err }, 'channel already closed'))
        }
      },
      { noAck: false },
    )
    this.#consumerTag = consumerTag
    this.#log.info({ queue: this.#topology.queue }, 'consuming')
  }

  /** Forgets the channel; the deliveries still buffered come back from the broker. */
  #lostChannel(): void {
    this.#channel = undefined
    this.#consumerTag = undefined
    this.#batcher.discard()
  }

  async #handle(batch: Delivery[]): Promise<void> {
    // Batches are stored concurrently but settled in order, so that an ack of "all up to
    // here" never covers a message of an earlier batch still being stored.
    const previous = this.#settled
    let done!: () => void
    this.#settled = new Promise((resolve) => (done = resolve))
    try {
      await this.#storeAndSettle(batch, previous)
    } finally {
      // Even a batch with nothing to ack counts as settled only after those before it.
      void previous.then(done)
    }
  }

  async #storeAndSettle(batch: Delivery[], previous: Promise<void>): Promise<void> {
    const channel = this.#channel
    // Deliveries of a channel that has died are redelivered on the new one: leave them.
    const live = batch.filter((delivery) => delivery.channel === channel)
    if (!channel || live.length === 0) return

    const valid: Valid[] = []
    for (const delivery of live) {
      const result = parseQueueMessage(delivery.msg.content)
      if (result.ok) valid.push({ delivery, message: result.value })
      else this.#deadLetter(delivery, 'invalid message', { errors: result.errors })
    }
    if (valid.length === 0) return

    const outcome = await this.#storeWithRetry(valid, channel)
    await previous
    if (!outcome) return // stopping, or the channel died: the broker redelivers
    for (const { item, err } of outcome.rejected) {
      this.#deadLetter(item.delivery, 'rejected by the database', { err, eventId: item.message.event_id })
    }
    if (outcome.rejected.length === 0 && valid.length === live.length) {
      // Every delivery of this channel up to the last one is settled by now: one ack for all.
      this.#settle(channel, () => channel.ack((live.at(-1) as Delivery).msg, true))
    } else {
      for (const { delivery } of outcome.stored) this.#settle(channel, () => channel.ack(delivery.msg))
    }
    this.#log.debug({ stored: outcome.stored.length, inserted: outcome.inserted }, 'batch stored')
  }

  /** Inserts until it works, backing off; undefined when stopping or the channel is gone. */
  async #storeWithRetry(valid: Valid[], channel: Channel) {
    for (let attempt = 0; ; attempt++) {
      try {
        const outcome = await this.#store.insert(valid, (item) => toRow(item.message))
        if (this.#databaseDown) this.#log.info('database available again')
        this.#databaseDown = false
        return outcome
      } catch (err) {
        this.#databaseDown = true
        const delay = backoffDelay(attempt, this.#config.CONSUMER_RETRY_MAX_MS)
        this.#log.warn(
          { err, attempt, delay, held: valid.length },
          'could not store the batch; holding it and retrying',
        )
        const stopping = this.#stopping?.signal
        if (stopping?.aborted) return undefined
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, delay)
          function done() {
            clearTimeout(timer)
            stopping?.removeEventListener('abort', done)
            resolve()
          }
          stopping?.addEventListener('abort', done)
        })
        if (this.#stopping?.signal.aborted || this.#channel !== channel) return undefined
      }
    }
  }

  #deadLetter(delivery: Delivery, reason: string, details: Record<string, unknown>): void {
    const { messageId, type } = delivery.msg.properties
    this.#log.error({ ...details, messageId, type }, `dead-lettering a message: ${reason}`)
    // requeue=false sends it to the dead-letter exchange; a bare nack would requeue it forever.
    this.#settle(delivery.channel, () => delivery.channel.nack(delivery.msg, false, false))
  }

  #settle(channel: Channel, settle: () => void): void {
    if (channel !== this.#channel) return // the broker redelivers; the duplicate is ignored
    try {
      settle()
    } catch (err) {
      this.#log.warn({ err }, 'could not settle a delivery; the broker will redeliver it')
    }
  }

  /**
   * Stops consuming, stores and acks what was delivered, and closes. Gives up on the batches
   * still waiting for the database after `graceMs`: they stay unacked and are redelivered.
   * Idempotent.
   */
  async stop(graceMs = 5000): Promise<void> {
    const broker = this.#broker
    if (!broker) return
    this.#broker = undefined
    const stopping = new AbortController()
    this.#stopping = stopping
    const giveUp = setTimeout(() => stopping.abort(), graceMs)
    try {
      const channel = this.#channel
      if (channel && this.#consumerTag) {
        await channel.cancel(this.#consumerTag).catch((err: unknown) => this.#log.warn({ err }, 'cancel failed'))
      }
      await this.#batcher.flush()
    } finally {
      clearTimeout(giveUp)
      stopping.abort()
      this.#channel = undefined
      this.#consumerTag = undefined
      await broker.close()
      this.#log.info('RabbitMQ connection closed')
    }
  }
}
