// Dead letters that say why. The worker publishes each to the dead-letter exchange itself, with
// its reason in headers, and settles the message it came in only once the broker has confirmed
// it: no letter is lost or left unexplained in between (a crash before the confirm redelivers
// the message, and the letter is made again). An event of a batch message is a letter of its own.
import type { ConfirmChannel, ConsumeMessage } from 'amqplib'
import { BATCH_MESSAGE_TYPE, MESSAGE_TYPE, type Topology } from 'event-contract'

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

/** Publishes a letter to the dead-letter exchange and resolves once the broker confirmed it. */
export function publishDeadLetter(
  channel: ConfirmChannel,
  topology: Topology,
  letter: DeadLetter,
  from: ConsumeMessage,
): Promise<void> {
  const ofBatch = letter.event !== undefined && from.properties.type === BATCH_MESSAGE_TYPE
  const body = ofBatch ? Buffer.from(JSON.stringify(letter.event)) : from.content
  const eventId = ofBatch ? (letter.event as { event_id?: unknown }).event_id : undefined
  return new Promise((resolve, reject) => {
    channel.publish(
      topology.deadLetterExchange,
      topology.queue,
      body,
      {
        persistent: true,
        contentType: from.properties.contentType ?? 'application/json',
        messageId: typeof eventId === 'string' ? eventId : from.properties.messageId,
        type: ofBatch ? MESSAGE_TYPE : from.properties.type,
        headers: deadLetterHeaders(letter, from, topology.queue),
      },
      (err: Error | null) => (err ? reject(err) : resolve()),
    )
  })
}
