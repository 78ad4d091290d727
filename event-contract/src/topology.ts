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

/**
 * The DLQ's own delivery limit (quorum). The CLI's stats, peek and purge read letters and give
 * them back by closing their channel, which counts as a failed delivery; RabbitMQ 4 limits a
 * quorum queue to 20 by default, and the DLQ has no dead-letter exchange of its own: the 21st
 * look would delete the letter. A million looks never happen; an explicit number works on 3.x too.
 */
export const DEAD_LETTER_DELIVERY_LIMIT = 1_000_000

export function topologyFor(queue: string, queueType: QueueType): Topology {
  return {
    queue,
    queueType,
    deadLetterExchange: `${queue}.dlx`,
    deadLetterQueue: `${queue}.dlq`,
    deliveryLimit: DELIVERY_LIMIT,
  }
}

/**
 * `current` is what this version declares; `previous` what the version before it declared, so
 * that queues it created keep working (RabbitMQ refuses a declaration with added arguments: 406).
 */
export type Generation = 'current' | 'previous'

/** What `current` adds to the queue over `previous`: quorum queues only. */
function addedToQueue(topology: Topology): Record<string, unknown> {
  if (topology.queueType !== 'quorum') return {}
  // RabbitMQ's own dead-lettering (after the delivery limit) keeps a message until the DLQ has
  // confirmed it, instead of dropping it when the DLQ is missing or full. It needs
  // reject-publish: a full queue refuses new messages rather than dropping its head unconfirmed.
  return { 'x-dead-letter-strategy': 'at-least-once', 'x-overflow': 'reject-publish' }
}

function addedToDeadLetterQueue(topology: Topology): Record<string, unknown> {
  return topology.queueType === 'quorum' ? { 'x-delivery-limit': DEAD_LETTER_DELIVERY_LIMIT } : {}
}

/** The queue's arguments; declaring an existing queue with other ones fails with 406. */
export function queueArguments(topology: Topology, generation: Generation = 'current'): Record<string, unknown> {
  return {
    'x-queue-type': topology.queueType,
    'x-dead-letter-exchange': topology.deadLetterExchange,
    ...(topology.queueType === 'quorum' ? { 'x-delivery-limit': topology.deliveryLimit } : {}),
    ...(generation === 'current' ? addedToQueue(topology) : {}),
  }
}

export function deadLetterQueueArguments(topology: Topology, generation: Generation = 'current') {
  return {
    'x-queue-type': topology.queueType,
    ...(generation === 'current' ? addedToDeadLetterQueue(topology) : {}),
  }
}

/** The generation each queue was found with by declareTopology, so that re-declaring it works. */
const found = new Map<string, Generation>()

/**
 * Declares the dead-letter exchange and queue, then the queue itself, each queue with the
 * arguments declareTopology found it with (this version's, when it has not run). Idempotent.
 */
export async function assertTopology(channel: Channel, topology: Topology): Promise<void> {
  await channel.assertExchange(topology.deadLetterExchange, 'fanout', { durable: true })
  await channel.assertQueue(topology.deadLetterQueue, {
    durable: true,
    arguments: deadLetterQueueArguments(topology, found.get(topology.deadLetterQueue)),
  })
  await channel.bindQueue(topology.deadLetterQueue, topology.deadLetterExchange, '')
  await channel.assertQueue(topology.queue, {
    durable: true,
    arguments: queueArguments(topology, found.get(topology.queue)),
  })
}

/** A queue the previous version declared: what it lacks, and how an operator adds it. */
export interface OutdatedQueue {
  queue: string
  missing: Record<string, unknown>
  consequence: string
  fix: string
}

function outdated(queue: string, missing: Record<string, unknown>, consequence: string): OutdatedQueue {
  const policy = Object.fromEntries(Object.entries(missing).map(([name, value]) => [name.slice(2), value]))
  const pattern = `^${queue.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`
  const command = `rabbitmqctl set_policy --apply-to queues ${queue}-${Object.keys(missing).length > 1 ? 'at-least-once' : 'limit'}`
  return {
    queue,
    missing,
    consequence,
    fix:
      `${command} '${pattern}' '${JSON.stringify(policy)}' (only one policy applies to a queue: merge it ` +
      'into one that already matches), or drain the queue, delete it and restart the service',
  }
}

/**
 * Declares the topology with this version's arguments on channels from `open`, one queue at a
 * time; a queue the previous version declared (406 with this version's arguments) is declared
 * with that version's instead, on a fresh channel (a 406 closes the channel), and reported.
 * A queue that matches neither (another type, say) fails with its 406, as before.
 */
export async function declareTopology(open: () => Promise<Channel>, topology: Topology): Promise<OutdatedQueue[]> {
  const reports: OutdatedQueue[] = []
  const channels: Channel[] = []
  const closed = new WeakSet<Channel>()
  const fresh = async () => {
    const channel = await open()
    // A 406 closes the channel with an 'error' event; the declaration's rejection reports it.
    channel.on('error', () => {})
    channel.on('close', () => closed.add(channel))
    channels.push(channel)
    return channel
  }
  const queues = [
    {
      name: topology.deadLetterQueue,
      args: (generation: Generation) => deadLetterQueueArguments(topology, generation),
      added: addedToDeadLetterQueue(topology),
      consequence: 'RabbitMQ 4 deletes a letter after 20 looks by npm run dlq (its default delivery limit)',
    },
    {
      name: topology.queue,
      args: (generation: Generation) => queueArguments(topology, generation),
      added: addedToQueue(topology),
      consequence: "RabbitMQ's own dead-lettering is at-most-once: it drops a message the DLQ cannot take",
    },
  ]
  try {
    let channel = await fresh()
    await channel.assertExchange(topology.deadLetterExchange, 'fanout', { durable: true })
    for (const { name, args, added, consequence } of queues) {
      try {
        await channel.assertQueue(name, { durable: true, arguments: args('current') })
        found.set(name, 'current')
      } catch (err) {
        if (!isPreconditionFailed(err) || Object.keys(added).length === 0) throw err
        channel = await fresh()
        await channel.assertQueue(name, { durable: true, arguments: args('previous') })
        found.set(name, 'previous')
        reports.push(outdated(name, added, consequence))
      }
      if (name === topology.deadLetterQueue) await channel.bindQueue(name, topology.deadLetterExchange, '')
    }
  } finally {
    // One closed by a 406 is already gone.
    for (const channel of channels) if (!closed.has(channel)) await channel.close()
  }
  return reports
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
