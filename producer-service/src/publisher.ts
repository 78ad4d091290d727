// Publishes events to RabbitMQ with publisher confirms, over a self-recovering connection.
import { createHash } from 'node:crypto'
import type { Duplex } from 'node:stream'
import type { ConfirmChannel } from 'amqplib'
import type { Logger } from 'pino'
import {
  assertTopology,
  BATCH_MESSAGE_TYPE,
  connectBroker,
  EVENT_COUNT_HEADER,
  messageProperties,
  topologyFor,
  uuidv7,
  type BrokerConfig,
  type BrokerConnection,
  type QueueMessage,
  type Topology,
} from 'event-contract'
import { batchMessages } from './batch-messages.js'
import { publishError, type PublishError } from './errors.js'
import { socketOf, WriteCoalescer } from './amqp-socket.js'
import { StallWatch, type SocketProgress } from './stall-watch.js'

export { socketOf }

/** One message to publish, worth `weight` events of the in-flight limit. */
interface Part {
  body: Buffer
  properties: ReturnType<typeof messageProperties> & { headers?: Record<string, unknown> }
  weight: number
}

/** What the HTTP layer needs from a publisher; tests pass a fake. */
export interface EventPublisher {
  /** Resolves once the broker has confirmed the message; rejects with a PublishError. */
  publish(message: QueueMessage): Promise<void>
  /**
   * Publishes the events of one batch in one message, counted against the in-flight budget by
   * its bytes (and its events); resolves once the broker has confirmed it.
   */
  publishBatch(messages: QueueMessage[]): Promise<void>
  /** The `checks.rabbitmq` value of `/health`: `up` or why not. */
  health(): PublisherHealth
  /** Events published and not yet answered by the broker. */
  readonly inFlight: number
  /** Bytes of the messages published and not yet answered (each charged its overhead too). */
  readonly inFlightBytes: number
}

export type PublisherHealth = 'up' | 'down' | 'blocked' | 'queue missing'

/** How long close() waits for the broker to answer publishes already answered 500. */
const CLOSE_WAIT_MS = 500
/** What a message costs besides its body (amqplib's frames, the request's state): bounds small ones. */
export const MESSAGE_OVERHEAD_BYTES = 1024

/** A message awaiting its confirm; a retry of the same events waits for the same confirm. */
interface Pending {
  confirmed: Promise<void>
  channel: ConfirmChannel
  bytes: number
  sentAt: number
}

export interface AmqpPublisherOptions {
  config: BrokerConfig & {
    PUBLISH_TIMEOUT_MS: number
    /** Events awaiting confirms at most; 0: no cap but the bytes'. */
    PUBLISH_MAX_IN_FLIGHT: number
    PUBLISH_MAX_IN_FLIGHT_BYTES: number
  }
  logger: Logger
  /** Told how long each confirm took (for a latency histogram). */
  onConfirm?: (seconds: number) => void
}

export class AmqpPublisher implements EventPublisher {
  readonly #config: AmqpPublisherOptions['config']
  readonly #log: Logger
  readonly #topology: Topology
  #broker: BrokerConnection | undefined
  #channel: ConfirmChannel | undefined
  #socket: Duplex | undefined
  readonly #writes = new WriteCoalescer()
  #blocked = false
  /** False while amqplib's buffer for the channel is full (the broker reads slower than we write). */
  #writable = true
  /** Set when the broker returned a message unroutable, until the queue is declared again. */
  #queueMissing = false
  /** Publishes the broker has not answered yet, including those whose request timed out. */
  #inFlight = 0
  #inFlightBytes = 0
  /** By event_id (a batch: by the hash of its event_ids), in the order they were published. */
  readonly #pending = new Map<string, Pending>()
  readonly #stall: StallWatch
  /** messageIds the broker returned as unroutable; their confirm must not count as success. */
  readonly #returned = new Set<string>()

  readonly #onConfirm: (seconds: number) => void

  constructor({ config, logger, onConfirm = () => {} }: AmqpPublisherOptions) {
    this.#config = config
    this.#stall = new StallWatch(config.PUBLISH_TIMEOUT_MS)
    this.#onConfirm = onConfirm
    this.#log = logger.child({ component: 'publisher' })
    this.#topology = topologyFor(config.RABBITMQ_QUEUE, config.RABBITMQ_QUEUE_TYPE)
  }

  /** Starts connecting; returns at once. The connection then recovers by itself forever. */
  async start(): Promise<void> {
    if (this.#broker) return
    this.#broker = await connectBroker({
      config: this.#config,
      logger: this.#log,
      name: 'producer-service',
      openChannel: (model) => model.createConfirmChannel(),
      ready: async (channel) => {
        channel.on('return', (msg: { properties: { messageId?: string } }) => {
          if (msg.properties.messageId) this.#returned.add(msg.properties.messageId)
          this.#redeclare(channel)
        })
        channel.on('drain', () => {
          if (this.#channel === channel) this.#writable = true
        })
        this.#returned.clear() // returns of the previous channel are settled by its closing
        this.#blocked = false
        this.#writable = true
        this.#queueMissing = false
        this.#stall.reset()
        this.#socket = socketOf(channel)
        this.#channel = channel
      },
      lost: (channel) => {
        if (this.#channel === channel) this.#channel = undefined
      },
    })
    this.#broker.connection.on('blocked', (reason: string) => {
      this.#blocked = true
      this.#log.warn({ reason }, 'RabbitMQ blocked publishing')
    })
    this.#broker.connection.on('unblocked', () => {
      this.#blocked = false
      this.#log.info('RabbitMQ unblocked publishing')
    })
  }

  /** Resolves on the first successful connection (for tests and tools). */
  async waitForConnect(): Promise<void> {
    await this.#broker?.connection.waitForConnect()
  }

  get inFlight(): number {
    return this.#inFlight
  }

  get inFlightBytes(): number {
    return this.#inFlightBytes
  }

  health(): PublisherHealth {
    if (!this.#channel) return 'down'
    if (this.#queueMissing) return 'queue missing'
    return this.#blocked ? 'blocked' : 'up'
  }

  /** The queue was deleted under us: declare it again (the topology helper), once at a time. */
  #redeclare(channel: ConfirmChannel): void {
    if (this.#queueMissing) return
    this.#queueMissing = true
    this.#log.error({ queue: this.#topology.queue }, 'the queue is gone; declaring it again')
    assertTopology(channel, this.#topology).then(
      () => {
        this.#queueMissing = false
        this.#log.info({ queue: this.#topology.queue }, 'queue declared again')
      },
      // The channel closes with the failure; recovery declares the topology on the next one.
      (err: unknown) => this.#log.error({ err }, 'could not declare the queue again'),
    )
  }

  publish(message: QueueMessage): Promise<void> {
    const joined = this.#pending.get(message.event_id)
    if (joined) return this.#answer(joined)
    const body = Buffer.from(JSON.stringify(message))
    return this.#send(message.event_id, [{ body, properties: messageProperties(message.event_id), weight: 1 }])
  }

  publishBatch(messages: QueueMessage[]): Promise<void> {
    const hash = createHash('sha256')
    for (const message of messages) hash.update(message.event_id)
    const key = `batch:${hash.digest('base64')}`
    const joined = this.#pending.get(key)
    if (joined) return this.#answer(joined)
    // Messages of at most 64 KiB: the consumer sizes its prefetch for them.
    const parts = batchMessages(messages).map(({ body, count }) => ({
      body,
      properties: { ...messageProperties(uuidv7(), BATCH_MESSAGE_TYPE), headers: { [EVENT_COUNT_HEADER]: count } },
      weight: count,
    }))
    return this.#send(key, parts)
  }

  /**
   * Publishes messages worth `weight` events each, all or none admitted; resolves once the
   * broker has confirmed every one. A client that resends the same events while the first copy
   * still travels (its 500 came before the confirm, over a slow link) waits for that copy's
   * confirm instead of sending them again.
   */
  #send(key: string, parts: Part[]): Promise<void> {
    const channel = this.#channel
    if (!channel) return Promise.reject(publishError('BROKER_UNAVAILABLE'))
    if (this.#blocked) return Promise.reject(publishError('BROKER_BLOCKED'))
    if (!this.#writable) return Promise.reject(publishError('BROKER_BACKPRESSURE'))
    const bytes = parts.reduce((sum, part) => sum + part.body.length + MESSAGE_OVERHEAD_BYTES, 0)
    const weight = parts.reduce((sum, part) => sum + part.weight, 0)
    const maxEvents = this.#config.PUBLISH_MAX_IN_FLIGHT
    if (
      (maxEvents > 0 && this.#inFlight + weight > maxEvents) ||
      this.#inFlightBytes + bytes > this.#config.PUBLISH_MAX_IN_FLIGHT_BYTES
    ) {
      return Promise.reject(publishError('OVERLOADED'))
    }

    // Settled by the first failure, or once every part is confirmed.
    let settle: (err?: PublishError) => void = () => {}
    const confirmed = new Promise<void>((resolve, reject) => {
      settle = (err) => (err ? reject(err) : resolve())
    })
    const pending: Pending = { confirmed, channel, bytes, sentAt: Date.now() }
    this.#pending.set(key, pending)
    this.#inFlight += weight
    this.#inFlightBytes += bytes
    let unanswered = parts.length
    // Each part's budget is freed when the broker answers it or the channel dies (amqplib then
    // calls back with an error), never at the timeout: until then the message may sit in
    // amqplib's buffers, and the budget is what bounds them.
    const releases = parts.map((part) => {
      let released = false
      return () => {
        if (released) return
        released = true
        this.#inFlight -= part.weight
        this.#inFlightBytes -= part.body.length + MESSAGE_OVERHEAD_BYTES
        if (--unanswered === 0 && this.#pending.get(key) === pending) this.#pending.delete(key)
      }
    })
    const started = performance.now()
    for (const [i, { body, properties }] of parts.entries()) {
      const onConfirm = (err: Error | null) => {
        releases[i]?.()
        this.#stall.confirmed()
        // A returned message is confirmed too, after its return: it reached no queue.
        if (this.#returned.delete(properties.messageId)) settle(publishError('BROKER_UNROUTABLE'))
        else if (err) {
          const code = err.message === 'message nacked' ? 'BROKER_NACK' : 'BROKER_UNAVAILABLE'
          settle(publishError(code, { cause: err }))
        } else if (unanswered === 0) {
          this.#onConfirm((performance.now() - started) / 1000)
          settle()
        }
      }
      try {
        const writable = channel.publish('', this.#topology.queue, body, properties, onConfirm)
        if (!writable && this.#channel === channel) this.#writable = false
      } catch (err) {
        // The channel is gone: what was not published frees its budget now.
        for (const release of releases.slice(i)) release()
        settle(publishError('BROKER_UNAVAILABLE', { cause: err }))
        break
      }
    }
    if (this.#socket) this.#writes.coalesce(this.#socket)
    return this.#answer(pending)
  }

  /** The confirm of `pending`, or CONFIRM_TIMEOUT after the publish timeout. */
  #answer(pending: Pending): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(publishError('CONFIRM_TIMEOUT'))
        this.#dropIfStalled(pending.channel)
      }, this.#config.PUBLISH_TIMEOUT_MS)
      pending.confirmed.then(
        () => {
          clearTimeout(timer)
          resolve()
        },
        (err: unknown) => {
          clearTimeout(timer)
          reject(err)
        },
      )
    })
  }

  /**
   * A channel that confirms nothing for a whole publish timeout while events wait is dead, though
   * its socket may look alive (a cluster node that died mid-election, a network that drops
   * packets): amqplib would notice only after two missed heartbeats, and a connection opened
   * to a survivor just then may never be confirmed. Drop it: recovery connects again, to the
   * next node when there are several. A slow link still moving bytes is left alone (StallWatch).
   */
  #dropIfStalled(channel: ConfirmChannel): void {
    const oldest = this.#pending.values().next().value
    if (this.#channel !== channel || !oldest) return
    const silentMs = this.#stall.stalledFor(this.#socket as SocketProgress | undefined, oldest)
    if (silentMs === undefined) return
    this.#log.warn(
      { inFlight: this.#inFlight, inFlightBytes: this.#inFlightBytes, silentMs },
      'RabbitMQ has confirmed nothing for a whole publish timeout; dropping the connection',
    )
    socketOf(channel)?.destroy(new Error('no publisher confirm within the publish timeout'))
  }

  /**
   * Waits a little for outstanding confirms, then closes. Called after the HTTP server has
   * answered every request, so what is still unconfirmed was answered 500 already. Idempotent.
   */
  async close(): Promise<void> {
    const broker = this.#broker
    if (!broker) return
    const deadline = Date.now() + Math.min(CLOSE_WAIT_MS, this.#config.PUBLISH_TIMEOUT_MS)
    while (this.#inFlight > 0 && this.#channel && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    this.#broker = undefined
    this.#channel = undefined
    await broker.close()
    this.#log.info('RabbitMQ connection closed')
  }
}
