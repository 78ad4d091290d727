// One channel's consumer: its ledger and dead-letter outbox, the subscription to the queue, and
// the prefetch changes its plan asks for (cancel, settle what was handed over, subscribe again).
import type { ConfirmChannel, ConsumeMessage } from 'amqplib'
import type { Logger } from 'pino'
import type { Topology } from 'event-contract'
import { DeadLetterOutbox } from './dead-letter.js'
import { Ledger } from './ledger.js'
import { PrefetchPlan, type PrefetchLimits } from './prefetch.js'

export interface SubscriptionOptions {
  topology: Topology
  limits: PrefetchLimits
  logger: Logger
  /** Aborted when the worker stops: subscribe no more. Read each time (a new one per start). */
  stopped: () => AbortSignal
  /** Each delivery, in order; the subscription holds nothing itself. */
  onMessage: (subscription: Subscription, msg: ConsumeMessage) => void
}

export class Subscription {
  readonly ledger: Ledger
  /** Where the letters of this channel's deliveries go, on the same channel. */
  readonly outbox: DeadLetterOutbox
  readonly #options: SubscriptionOptions
  readonly #plan: PrefetchPlan
  #consumerTag: string | undefined
  #resizing = false

  private constructor(channel: ConfirmChannel, plan: PrefetchPlan, options: SubscriptionOptions) {
    this.#options = options
    this.#plan = plan
    this.ledger = new Ledger(channel, options.logger)
    this.outbox = new DeadLetterOutbox(channel, options.topology)
  }

  /** Sets the channel's first prefetch: small, as its queue may hold large messages (prefetch.ts). */
  static async open(channel: ConfirmChannel, options: SubscriptionOptions): Promise<Subscription> {
    const plan = new PrefetchPlan(options.limits)
    await channel.prefetch(plan.current)
    return new Subscription(channel, plan, options)
  }

  get channel(): ConfirmChannel {
    return this.ledger.channel
  }

  /** Subscribed now (not between a cancel and the next subscription). */
  get consuming(): boolean {
    return this.#consumerTag !== undefined
  }

  /** Subscribes to the queue; false if it could not (the channel is then closed: recovery starts over). */
  async subscribe(): Promise<boolean> {
    const { ledger } = this
    const { topology, logger } = this.#options
    try {
      const { consumerTag } = await ledger.channel.consume(topology.queue, (msg) => this.#deliver(msg), {
        noAck: false,
      })
      if (this.#options.stopped().aborted || ledger.lost) {
        await ledger.channel.cancel(consumerTag)
        return false
      }
      this.#consumerTag = consumerTag
      return true
    } catch (err) {
      // Usually the channel is closing with it; if not, close it: recovery starts over.
      logger.warn({ error: (err as Error).message }, 'could not start consuming; reconnecting')
      ledger.channel.close().catch((closeErr: unknown) => logger.debug({ err: closeErr }, 'channel already closed'))
      return false
    }
  }

  /** Ends the subscription (at stop); its deliveries stay in the ledger, to be settled. */
  async cancel(): Promise<void> {
    const consumerTag = this.#consumerTag
    this.#consumerTag = undefined
    if (consumerTag) await this.ledger.channel.cancel(consumerTag)
  }

  #deliver(msg: ConsumeMessage | null): void {
    if (!msg) {
      // The broker cancelled us (the queue was deleted): start over, redeclaring it.
      const { topology, logger } = this.#options
      logger.warn({ queue: topology.queue }, 'consumer cancelled by the broker; reconnecting')
      this.ledger.channel.close().catch((err: unknown) => logger.debug({ err }, 'channel already closed'))
      return
    }
    this.#options.onMessage(this, msg)
  }

  /**
   * Tells the plan a delivery's size (once it is held), and changes the prefetch when the plan
   * says so. RabbitMQ applies a prefetch to new consumers only, and a cancelled consumer's
   * deliveries stay unacknowledged on the channel: a new consumer next to them would get a whole
   * window more. So the consumer is cancelled, what it was handed is settled first, and only then
   * is a consumer with the new prefetch started.
   */
  observe(msg: ConsumeMessage): void {
    const plan = this.#plan
    const target = plan.observe(msg.content.length)
    const { ledger } = this
    if (target === undefined || this.#resizing || !this.#consumerTag || ledger.lost) return
    if (this.#options.stopped().aborted) return
    const consumerTag = this.#consumerTag
    this.#consumerTag = undefined
    this.#resizing = true
    const { logger } = this.#options
    // In the background: deliveries go on being handled meanwhile; the channel's loss ends it.
    void (async () => {
      try {
        await ledger.channel.cancel(consumerTag)
        await ledger.drained()
        if (ledger.lost || this.#options.stopped().aborted) return
        await ledger.channel.prefetch(target)
        logger.debug({ from: plan.current, to: target, bytes: msg.content.length }, 'prefetch changed')
        plan.current = target
        await this.subscribe()
      } catch (err) {
        // The channel is going: recovery starts over on a new one.
        logger.debug({ err }, 'could not change the prefetch')
      } finally {
        this.#resizing = false
      }
    })()
  }
}
