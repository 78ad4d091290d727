// The RabbitMQ connection both services use: amqplib's built-in recovery, and on every
// (re)connect a fresh channel with the topology declared, handed to the service.
import { setTimeout } from 'node:timers/promises'
import amqp, { type Channel, type ChannelModel, type RecoveringChannelModel } from 'amqplib'
import type { Logger } from 'pino'
import { brokerAddresses, brokerConnectOptions, type BrokerConfig } from './config.js'
import { declareTopology, isPreconditionFailed, topologyFor } from './topology.js'

/** How long close() waits for the broker to answer, at most. */
const CLOSE_TIMEOUT_MS = 3000

export interface BrokerConnectionOptions<C extends Channel> {
  config: BrokerConfig
  logger: Logger
  /** Shown in RabbitMQ's management UI. */
  name: string
  /** Opens the service's kind of channel on a new connection. */
  openChannel: (model: ChannelModel) => Promise<C>
  /** Receives each new channel once the topology is declared; a throw makes recovery retry. */
  ready: (channel: C) => Promise<void>
  /** Told when a channel it received is gone (connection lost, or the channel closed). */
  lost: (channel: C) => void
}

export interface BrokerConnection {
  connection: RecoveringChannelModel
  /** Stops recovering and closes: the channel first, so that what it has sent (acks) is delivered. */
  close(): Promise<void>
}

export async function connectBroker<C extends Channel>(options: BrokerConnectionOptions<C>): Promise<BrokerConnection> {
  const { config, logger, openChannel, ready, lost } = options
  const topology = topologyFor(config.RABBITMQ_QUEUE, config.RABBITMQ_QUEUE_TYPE)
  let closing = false
  let current: C | undefined

  const setup = async (model: ChannelModel) => {
    // Until setup returns, amqplib's recovery has no listener on the new connection: a drop
    // now would be an 'error' nobody hears, and crash the process. This one hears it (setup
    // then fails, and recovery tries again).
    const duringSetup = (err: Error) => logger.warn({ error: err.message }, 'RabbitMQ connection lost while setting up')
    model.on('error', duringSetup)
    try {
      await setupChannel(model)
    } finally {
      model.off('error', duringSetup)
    }
  }

  const setupChannel = async (model: ChannelModel) => {
    await declare(model)
    const channel = await openChannel(model)
    channel.on('error', (err: Error) => logger.error({ err }, 'RabbitMQ channel error'))
    channel.on('handler-error', (err: Error, event: string) =>
      logger.error({ err, event }, 'RabbitMQ channel listener threw'),
    )
    current = channel
    channel.on('close', () => {
      if (current === channel) current = undefined
      lost(channel)
      if (closing) return
      // The channel may have died alone while the connection lives on: closing the connection
      // makes recovery open a fresh channel and declare the topology again.
      model.close().catch((err: unknown) => logger.debug({ err }, 'RabbitMQ connection already closed'))
    })
    await ready(channel)
  }

  // On channels of its own, before the service's: a 406 closes the channel it happens on.
  const declare = async (model: ChannelModel) => {
    try {
      for (const { queue, missing, consequence, fix } of await declareTopology(() => model.createChannel(), topology)) {
        logger.warn(
          { queue, missing, fix },
          `queue declared by an earlier version without ${Object.keys(missing).join(', ')}: ${consequence}. It works on; to fix it: ${fix}`,
        )
      }
    } catch (err) {
      if (isPreconditionFailed(err)) {
        logger.error(
          { err, queue: topology.queue, expected: topology },
          'queue exists with other arguments (406): delete it or set RABBITMQ_QUEUE_TYPE to its type',
        )
      }
      throw err
    }
  }

  // Several nodes (a cluster): amqplib's recovery reads these options at every attempt, so the
  // next node is tried after a failed attempt or a lost connection.
  const addresses = brokerAddresses(config)
  const target = brokerConnectOptions(config)
  let node = 0
  const nextNode = () => {
    if (addresses.length < 2) return
    node = (node + 1) % addresses.length
    Object.assign(target, addresses[node])
  }
  const connection = await amqp.connect(target, {
    clientProperties: { connection_name: options.name },
    // Without it Nagle's algorithm holds small frames back: confirms and acks arrive later.
    noDelay: true,
    recovery: { waitForConnect: false, initialDelay: 100, maxDelay: 5000, setup },
  })
  connection.on('connect', () =>
    logger.info({ queue: topology.queue, node: `${target.hostname}:${target.port}` }, 'connected to RabbitMQ'),
  )
  connection.on('disconnect', nextNode)
  connection.on('connect-failed', nextNode)
  // An outage is expected: one line each, without a stack.
  connection.on('disconnect', (err: Error) =>
    logger.error({ error: err.message }, 'lost the RabbitMQ connection; reconnecting'),
  )
  connection.on('connect-failed', (err: Error) =>
    logger.warn({ error: err.message }, 'RabbitMQ connection attempt failed'),
  )
  connection.on('reconnect-failed', (err: Error) => logger.error({ err }, 'gave up reconnecting to RabbitMQ'))
  connection.on('error', (err: Error) => logger.error({ err }, 'RabbitMQ connection error'))
  connection.on('handler-error', (err: Error, event: string) =>
    logger.error({ err, event }, 'RabbitMQ connection listener threw'),
  )
  return {
    connection,
    async close() {
      closing = true
      // amqplib writes connection.close straight to the socket while channel frames may still
      // wait in its buffers: the broker would close first and never see them. A channel's close
      // follows its own frames, and its close-ok comes after the broker has processed them.
      const closed = (async () => {
        await current?.close().catch((err: unknown) => logger.debug({ err }, 'RabbitMQ channel already closed'))
        await connection.close()
      })()
      // A broker that never answers (a link frozen, a connection recovering) must not hold a
      // shutdown past its grace: what was not acknowledged is redelivered anyway.
      const late = await Promise.race([closed.then(() => false), setTimeout(CLOSE_TIMEOUT_MS, true, { ref: false })])
      if (!late) return
      logger.warn({ ms: CLOSE_TIMEOUT_MS }, 'RabbitMQ did not answer the close in time; leaving the connection')
      closed.catch((err: unknown) => logger.debug({ err }, 'RabbitMQ close failed after it was left'))
    },
  }
}
