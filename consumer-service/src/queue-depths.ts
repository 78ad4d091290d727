// How many messages wait in the queue and in its dead-letter queue, asked of RabbitMQ on a
// channel of its own, within a time limit.
import type { ChannelModel } from 'amqplib'
import type { Logger } from 'pino'
import { orAfter, type Topology } from 'event-contract'

const TOO_LATE = Symbol('too late')

/** Ready messages of the queue and of its dead-letter queue; rejects if RabbitMQ does not say in time. */
export async function queueDepths(
  connection: Pick<ChannelModel, 'createChannel'>,
  topology: Topology,
  logger: Logger,
  timeoutMs: number,
): Promise<{ main: number; deadLetter: number }> {
  let late = false
  const ask = (async () => {
    const channel = await connection.createChannel()
    // Opened after the answer was given up on (the connection came back late): not leaked.
    if (late) {
      await channel.close()
      throw new Error('RabbitMQ did not say in time')
    }
    // A missing queue closes the channel with a 404: the rejection below is the answer.
    channel.on('error', (err: Error) => logger.debug({ err }, 'queue depth channel closed'))
    try {
      const main = await channel.checkQueue(topology.queue)
      const deadLetter = await channel.checkQueue(topology.deadLetterQueue)
      return { main: main.messageCount, deadLetter: deadLetter.messageCount }
    } finally {
      await channel.close().catch((err: unknown) => logger.debug({ err }, 'queue depth channel already closed'))
    }
  })()
  // When the time limit wins, ask's own failure comes after it: noted, not unhandled.
  ask.catch((err: unknown) => logger.debug({ err }, 'queue depths not known'))
  const depths = await orAfter(ask, timeoutMs, TOO_LATE)
  if (depths !== TOO_LATE) return depths
  late = true
  throw new Error('RabbitMQ did not say in time')
}
