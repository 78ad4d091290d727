// The dead-letter queue's letters as the DLQ CLI reads them: each letter's kind and reason, read
// one by one, or counted by kind in constant memory.
import type { ConfirmChannel, Message } from 'amqplib'

export interface Letter {
  message: Message
  kind: string
  error: string
}

/** The reason a letter carries: the consumer's headers, or RabbitMQ's own x-death. */
export function letterOf(message: Message): Letter {
  const headers = message.properties.headers ?? {}
  const kind = headers['x-error-kind']
  if (typeof kind === 'string') return { message, kind, error: String(headers['x-error'] ?? '') }
  const death = (headers['x-death'] as { reason?: string }[] | undefined)?.[0]
  return { message, kind: `broker:${death?.reason ?? 'unknown'}`, error: 'dead-lettered by RabbitMQ' }
}

/**
 * Reads up to `limit` letters one by one with basic.get and hands each to `each`, keeping none:
 * they stay unacknowledged, and go back to the DLQ when the channel closes.
 */
export async function scan(channel: ConfirmChannel, queue: string, limit: number, each: (letter: Letter) => void) {
  for (let read = 0; read < limit; read++) {
    const message = await channel.get(queue, { noAck: false })
    if (!message) return
    each(letterOf(message))
  }
}

/** Letters one consumer of countKinds may hold unacknowledged: RabbitMQ sends that many at once. */
const PER_CONSUMER = 2000

/**
 * Counts the first `limit` letters by kind without removing any, in constant memory. Consumers
 * rather than a get per letter (100,000 round trips take minutes), each with a prefetch of
 * PER_CONSUMER: the letters stay unacknowledged until the channel closes, so each consumer takes
 * its share and stops, and the next one starts only when the ones before have delivered most of
 * theirs. That paces RabbitMQ to the counting: no more than two shares are on their way at once.
 * Each letter is counted and dropped.
 */
export async function countKinds(
  channel: ConfirmChannel,
  queue: string,
  limit: number,
): Promise<Record<string, number>> {
  const kinds: Record<string, number> = {}
  if (limit === 0) return kinds
  let counted = 0
  let credit = 0
  let adding = false
  let stalled: NodeJS.Timeout | undefined
  let finish: (err?: unknown) => void = () => {}
  const finished = new Promise<void>((resolve, reject) => (finish = (err) => (err ? reject(err) : resolve())))
  const done = (err?: unknown) => {
    clearTimeout(stalled)
    finish(err)
  }
  // The depth read at the start may include letters another client takes meanwhile: five quiet
  // seconds end the count rather than a wait for letters that will never come.
  const quiet = () => {
    clearTimeout(stalled)
    stalled = setTimeout(done, 5000)
  }
  const more = () => {
    if (adding || credit >= limit || credit - counted > PER_CONSUMER) return
    adding = true
    const share = Math.min(PER_CONSUMER, limit - credit)
    credit += share
    channel
      .prefetch(share)
      .then(() => channel.consume(queue, count))
      .then(() => {
        adding = false
        more()
      }, done)
  }
  const count = (message: Message | null) => {
    if (!message || counted >= limit) return
    const { kind } = letterOf(message)
    kinds[kind] = (kinds[kind] ?? 0) + 1
    if (++counted === limit) return done()
    quiet()
    more()
  }
  more()
  quiet()
  await finished
  return kinds
}
