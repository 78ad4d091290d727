// Dead letters that say why. The worker publishes each to the dead-letter exchange itself, with
// its reason in headers, and settles the message it came in only once the broker has confirmed
// it onto the dead-letter queue: no letter is lost or left unexplained in between (a crash before
// the confirm redelivers the message, and the letter is made again). An event of a batch message
// is a letter of its own. A letter the broker refuses (nacked: the DLQ is full) or cannot route
// (returned: the DLQ is gone) is retried with backoff; the delivery it came in waits meanwhile.
// The same channel queues fresh copies of worn deliveries on the main queue (redelivery.ts).
import { randomUUID } from 'node:crypto'
import type { ConfirmChannel, ConsumeMessage, Message, Options } from 'amqplib'
import { assertTopology, BATCH_MESSAGE_TYPE, MESSAGE_TYPE, type Topology } from 'event-contract'

/** Why a message or event can never be stored. */
export type DeadLetterKind = 'validation' | 'database-rejected' | 'too-large'

export interface DeadLetter {
  kind: DeadLetterKind
  /** What is wrong, in words (validation errors as JSON). */
  error: string
  /** The event as found (for a batch message's event), or undefined for the whole message. */
  event?: unknown
}

/** Headers longer than this are cut: amqplib encodes a message's headers into 64 KiB at most. */
const MAX_ERROR_LENGTH = 2000
/** Names one publish of a letter, so that its return (unroutable) is told from its confirm. */
const LETTER_ID_HEADER = 'x-letter-id'

/** The headers `npm run dlq` reads; RabbitMQ's own `x-death` is added only by broker dead-lettering. */
export function deadLetterHeaders(letter: DeadLetter, from: ConsumeMessage, queue: string) {
  return {
    'x-error-kind': letter.kind,
    'x-error': letter.error.slice(0, MAX_ERROR_LENGTH),
    'x-original-message-id': from.properties.messageId ?? null,
    'x-original-type': from.properties.type ?? null,
    'x-source-queue': queue,
    'x-dead-lettered-at': new Date().toISOString(),
  }
}

/** The broker did not queue a letter: `nacked` (the DLQ refuses, e.g. full) or `returned` (no DLQ). */
export class DeadLetterRefusedError extends Error {
  readonly code = 'ERR_DEAD_LETTER_REFUSED'
  constructor(readonly reason: 'nacked' | 'returned') {
    super(
      reason === 'nacked'
        ? 'the dead-letter queue refused the letter (full?)'
        : 'no dead-letter queue took the letter (deleted?)',
    )
    this.name = 'DeadLetterRefusedError'
  }
}

/**
 * Publishes letters on one confirm channel, mandatory: a letter counts as queued only when the
 * broker confirmed it and did not return it. RabbitMQ sends a mandatory message's basic.return
 * before its basic.ack, so the return is known when the confirm arrives.
 */
export class DeadLetterOutbox {
  readonly #channel: ConfirmChannel
  readonly #topology: Topology
  readonly #returned = new Set<string>()
  #redeclaring: Promise<void> | undefined

  constructor(channel: ConfirmChannel, topology: Topology) {
    this.#channel = channel
    this.#topology = topology
    channel.on('return', (msg: Message) => {
      const id = msg.properties.headers?.[LETTER_ID_HEADER]
      if (typeof id === 'string') this.#returned.add(id)
    })
  }

  /** Resolves once the letter is on the dead-letter queue; rejects with why not. */
  publish(letter: DeadLetter, from: ConsumeMessage): Promise<void> {
    const ofBatch = letter.event !== undefined && from.properties.type === BATCH_MESSAGE_TYPE
    const body = ofBatch ? Buffer.from(JSON.stringify(letter.event)) : from.content
    const eventId = ofBatch ? (letter.event as { event_id?: unknown }).event_id : undefined
    return this.#publish(this.#topology.deadLetterExchange, body, {
      contentType: from.properties.contentType ?? 'application/json',
      messageId: typeof eventId === 'string' ? eventId : from.properties.messageId,
      type: ofBatch ? MESSAGE_TYPE : from.properties.type,
      headers: deadLetterHeaders(letter, from, this.#topology.queue),
    })
  }

  /** Resolves once a copy of the message, with `headers`, is on the main queue again. */
  requeue(from: ConsumeMessage, headers: Record<string, unknown>): Promise<void> {
    const { contentType, messageId, type, timestamp, appId } = from.properties
    return this.#publish('', from.content, { contentType, messageId, type, timestamp, appId, headers })
  }

  /** Publishes persistent and mandatory to `exchange` with the queue's name as routing key. */
  #publish(exchange: string, body: Buffer, options: Options.Publish & { headers: Record<string, unknown> }) {
    const letterId = randomUUID()
    return new Promise<void>((resolve, reject) => {
      const confirmed = (err: Error | null) => {
        const returned = this.#returned.delete(letterId)
        if (err) reject(err.message === 'message nacked' ? new DeadLetterRefusedError('nacked') : err)
        else if (returned) reject(new DeadLetterRefusedError('returned'))
        else resolve()
      }
      try {
        this.#channel.publish(
          exchange,
          this.#topology.queue,
          body,
          {
            ...options,
            persistent: true,
            mandatory: true,
            headers: { ...options.headers, [LETTER_ID_HEADER]: letterId },
          },
          confirmed,
        )
      } catch (err) {
        reject(err as Error) // the channel is closed: the delivery comes back from the broker
      }
    })
  }

  /** Declares the topology again (the DLQ was deleted), once at a time. */
  redeclare(): Promise<void> {
    this.#redeclaring ??= assertTopology(this.#channel, this.#topology).finally(() => {
      this.#redeclaring = undefined
    })
    return this.#redeclaring
  }
}
