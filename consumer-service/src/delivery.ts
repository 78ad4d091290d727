// A delivery as the worker handles it: held as the broker's bytes, parsed when its batch is
// handled into the events to store and the letters of what can never be stored.
import type { ConsumeMessage } from 'amqplib'
import { EVENT_COUNT_HEADER, parseQueueMessage, type QueueMessage } from 'event-contract'
import type { DeadLetter, DeadLetterOutbox } from './dead-letter.js'
import type { Ledger } from './ledger.js'

/**
 * A delivery and the ledger of the channel it came on (a batch never spans two channels). It is
 * settled once every event is stored and every letter confirmed on the DLQ.
 */
export interface Delivery {
  ledger: Ledger
  /** Where its letters go: the dead-letter exchange, on the channel it came on. */
  outbox: DeadLetterOutbox
  msg: ConsumeMessage
  events: QueueMessage[]
  letters: DeadLetter[]
}

/** One event to store, and the delivery it came in. */
export interface Item {
  delivery: Delivery
  message: QueueMessage
}

/** A delivery just arrived: nothing parsed yet. */
export function delivery(ledger: Ledger, outbox: DeadLetterOutbox, msg: ConsumeMessage): Delivery {
  return { ledger, outbox, msg, events: [], letters: [] }
}

/** What a delivery carries, unparsed: a batch message says so in a header; anything else is one. */
export function eventCountOf(msg: ConsumeMessage): number {
  const count = msg.properties.headers?.[EVENT_COUNT_HEADER]
  return typeof count === 'number' && Number.isInteger(count) && count > 0 ? count : 1
}

/** Fills in a delivery's events and letters from its bytes (the contract's checks). */
export function parse(delivery: Delivery): void {
  const parsed = parseQueueMessage(delivery.msg.content, delivery.msg.properties.type)
  if (!parsed.ok) {
    delivery.letters = [{ kind: 'validation', error: JSON.stringify(parsed.errors) }]
    return
  }
  delivery.events = parsed.value.events
  delivery.letters = parsed.value.invalid.map(({ event, errors }) => ({
    kind: 'validation',
    error: JSON.stringify(errors),
    event,
  }))
}
