// The queue topology both services declare on every (re)connect.
import type { Channel } from 'amqplib'
import { BATCH_MESSAGE_TYPE, MESSAGE_TYPE } from './schema.js'

export type QueueType = 'quorum' | 'classic'

export interface Topology {
  queue: string
  queueType: QueueType
  deadLetterExchange: string
  deadLetterQueue: string
  /** Quorum queues only: deliveries after which a message is dead-lettered (crash-loop backstop). */
  deliveryLimit: number
}

export const DELIVERY_LIMIT = 20

export function topologyFor(queue: string, queueType: QueueType): Topology {
  return {
    queue,
    queueType,
    deadLetterExchange: `${queue}.dlx`,
    deadLetterQueue: `${queue}.dlq`,
    deliveryLimit: DELIVERY_LIMIT,
  }
}

/** The queue's arguments; declaring an existing queue with other ones fails with 406. */
export function queueArguments(topology: Topology): Record<string, unknown> {
  return {
    'x-queue-type': topology.queueType,
    'x-dead-letter-exchange': topology.deadLetterExchange,
    ...(topology.queueType === 'quorum' ? { 'x-delivery-limit': topology.deliveryLimit } : {}),
  }
}

/** Declares the dead-letter exchange and queue, then the queue itself. Idempotent. */
export async function assertTopology(channel: Channel, topology: Topology): Promise<void> {
  await channel.assertExchange(topology.deadLetterExchange, 'fanout', { durable: true })
  await channel.assertQueue(topology.deadLetterQueue, {
    durable: true,
    arguments: { 'x-queue-type': topology.queueType },
  })
  await channel.bindQueue(topology.deadLetterQueue, topology.deadLetterExchange, '')
  await channel.assertQueue(topology.queue, { durable: true, arguments: queueArguments(topology) })
}

/** Removes the queue, its dead-letter queue and exchange (tests and benchmarks clean up with it). */
export async function deleteTopology(channel: Channel, topology: Topology): Promise<void> {
  await channel.deleteQueue(topology.queue)
  await channel.deleteQueue(topology.deadLetterQueue)
  await channel.deleteExchange(topology.deadLetterExchange)
}

/** True for the channel error RabbitMQ raises when a queue exists with other arguments. */
export function isPreconditionFailed(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 406
}

/** Publish properties of an event message (`messageId` the event_id), or of a batch message. */
export function messageProperties(
  messageId: string,
  type: typeof MESSAGE_TYPE | typeof BATCH_MESSAGE_TYPE = MESSAGE_TYPE,
) {
  return {
    persistent: true,
    contentType: 'application/json',
    messageId,
    type,
    mandatory: true,
  } as const
}
