// Publishes events to RabbitMQ with publisher confirms, over a self-recovering connection.
import amqp, { type ConfirmChannel, type ChannelModel, type RecoveringChannelModel } from 'amqplib'
import type { Logger } from 'pino'
import {
  assertTopology,
  brokerConnectOptions,
  isPreconditionFailed,
  messageProperties,
  topologyFor,
  type BrokerConfig,
  type QueueMessage,
  type Topology,
} from 'event-contract'
import { PublishError } from './errors.js'

/** What the HTTP layer needs from a publisher; tests pass a fake. */
export interface EventPublisher {
  /** Resolves once the broker has confirmed the message; rejects with a PublishError. */
  publish(message: QueueMessage): Promise<void>
  /** The `checks.rabbitmq` value of `/health`: `up` or why not. */
  health(): 'up' | 'down' | 'blocked'
}

export interface AmqpPublisherOptions {
  config: BrokerConfig & { PUBLISH_TIMEOUT_MS: number; PUBLISH_MAX_IN_FLIGHT: number }
  logger: Logger
}

export class AmqpPublisher implements EventPublisher {
  readonly #config: AmqpPublisherOptions['config']
  readonly #log: Logger
  readonly #topology: Topology
  #connection: RecoveringChannelModel | undefined
  #channel: ConfirmChannel | undefined
  #blocked = false
  #inFlight = 0
  #closing = false
  /** messageIds the broker returned as unroutable; their confirm must not count as success. */
  readonly #returned = new Set<string>()

  constructor({ config, logger }: AmqpPublisherOptions) {
    this.#config = config
    this.#log = logger.child({ component: 'publisher' })
    this.#topology = topologyFor(config.RABBITMQ_QUEUE, config.RABBITMQ_QUEUE_TYPE)
  }

  /** Starts connecting; returns at once. The connection then recovers by itself forever. */
  async start(): Promise<void> {
    if (this.#connection) return
    this.#closing = false
    const connection = await amqp.connect(brokerConnectOptions(this.#config), {
      clientProperties: { connection_name: 'producer-service' },
      // Without it Nagle's algorithm holds small publishes back and confirms arrive later.
      noDelay: true,
      recovery: {
        waitForConnect: false,
        initialDelay: 100,
        maxDelay: 5000,
        setup: (model: ChannelModel) => this.#setup(model),
      },
    })
    connection.on('connect', () => this.#log.info({ queue: this.#topology.queue }, 'connected to RabbitMQ'))
    connection.on('disconnect', (err: Error) => {
      this.#channel = undefined
      this.#log.error({ err }, 'lost the RabbitMQ connection; reconnecting')
    })
    connection.on('connect-failed', (err: Error) => this.#log.warn({ err }, 'RabbitMQ connection attempt failed'))
    connection.on('reconnect-failed', (err: Error) => this.#log.error({ err }, 'gave up reconnecting to RabbitMQ'))
    connection.on('error', (err: Error) => this.#log.error({ err }, 'RabbitMQ connection error'))
    connection.on('handler-error', (err: Error, event: string) =>
      this.#log.error({ err, event }, 'RabbitMQ connection listener threw'),
    )
    connection.on('blocked', (reason: string) => {
      this.#blocked = true
      this.#log.warn({ reason }, 'RabbitMQ blocked publishing')
    })
    connection.on('unblocked', () => {
      this.#blocked = false
      this.#log.info('RabbitMQ unblocked publishing')
    })
    this.#connection = connection
  }

  /** Resolves on the first successful connection (for tests and tools). */
  async waitForConnect(): Promise<void> {
    await this.#connection?.waitForConnect()
  }

  async #setup(model: ChannelModel): Promise<void> {
    const channel = await model.createConfirmChannel()
    channel.on('error', (err: Error) => this.#log.error({ err }, 'RabbitMQ channel error'))
    channel.on('handler-error', (err: Error, event: string) =>
      this.#log.error({ err, event }, 'RabbitMQ channel listener threw'),
    )
    channel.on('return', (msg: { properties: { messageId?: string } }) => {
      if (msg.properties.messageId) this.#returned.add(msg.properties.messageId)
    })
    channel.on('close', () => {
      if (this.#channel !== channel) return
      this.#channel = undefined
      if (this.#closing) return
      // The channel died while the connection may live on: close the connection so that
      // recovery opens a fresh channel and redeclares the topology.
      this.#log.warn('RabbitMQ channel closed; reconnecting')
      model.close().catch((err: unknown) => this.#log.debug({ err }, 'connection already closed'))
    })
    try {
      await assertTopology(channel, this.#topology)
    } catch (err) {
      if (isPreconditionFailed(err)) {
        this.#log.error(
          { err, queue: this.#topology.queue, expected: this.#topology },
          'queue exists with other arguments (406): delete it or set RABBITMQ_QUEUE_TYPE to its type',
        )
      }
      throw err
    }
    this.#blocked = false
    this.#channel = channel
  }

  health(): 'up' | 'down' | 'blocked' {
    if (!this.#channel) return 'down'
    return this.#blocked ? 'blocked' : 'up'
  }

  publish(message: QueueMessage): Promise<void> {
    const channel = this.#channel
    if (!channel) return Promise.reject(new PublishError('BROKER_UNAVAILABLE'))
    if (this.#blocked) return Promise.reject(new PublishError('BROKER_BLOCKED'))
    if (this.#inFlight >= this.#config.PUBLISH_MAX_IN_FLIGHT) return Promise.reject(new PublishError('OVERLOADED'))

    const eventId = message.event_id
    const body = Buffer.from(JSON.stringify(message))
    this.#inFlight++
    return new Promise<void>((resolve, reject) => {
      let settled = false
      const settle = (err?: PublishError) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        this.#inFlight--
        if (err) reject(err)
        else resolve()
      }
      const timer = setTimeout(() => settle(new PublishError('CONFIRM_TIMEOUT')), this.#config.PUBLISH_TIMEOUT_MS)
      try {
        channel.publish('', this.#topology.queue, body, messageProperties(eventId), (err: Error | null) => {
          // A returned message is confirmed too, after its return: it reached no queue.
          if (this.#returned.delete(eventId)) settle(new PublishError('BROKER_UNROUTABLE'))
          else if (!err) settle()
          else
            settle(
              new PublishError(err.message === 'message nacked' ? 'BROKER_NACK' : 'BROKER_UNAVAILABLE', { cause: err }),
            )
        })
      } catch (err) {
        settle(new PublishError('BROKER_UNAVAILABLE', { cause: err }))
      }
    })
  }

  /** Waits for outstanding confirms (bounded by the publish timeout), then closes. Idempotent. */
  async close(): Promise<void> {
    const connection = this.#connection
    if (!connection) return
    const deadline = Date.now() + this.#config.PUBLISH_TIMEOUT_MS
    while (this.#inFlight > 0 && this.#channel && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    this.#closing = true
    this.#connection = undefined
    this.#channel = undefined
    await connection.close()
    this.#log.info('RabbitMQ connection closed')
  }
}
