// Splits the events of one /batch request into queue messages of at most MAX_MESSAGE_BYTES, so
// that no message is larger than the consumer sizes its prefetch for (one event alone may be).
import { MAX_MESSAGE_BYTES, type QueueMessage } from 'event-contract'

export interface BatchMessage {
  /** `{"events":[...]}` */
  body: Buffer
  /** How many events it carries (the consumer reads it unparsed, from a header). */
  count: number
}

/** `{"events":[` and `]}` */
const ENVELOPE_BYTES = 13

/** The events as few messages of at most `maxBytes` each as they fit in, in their order. */
export function batchMessages(messages: QueueMessage[], maxBytes = MAX_MESSAGE_BYTES): BatchMessage[] {
  const out: BatchMessage[] = []
  let parts: string[] = []
  let bytes = ENVELOPE_BYTES
  const close = () => {
    out.push({ body: Buffer.from(`{"events":[${parts.join(',')}]}`), count: parts.length })
    parts = []
    bytes = ENVELOPE_BYTES
  }
  for (const message of messages) {
    const event = JSON.stringify(message)
    const size = Buffer.byteLength(event)
    // The comma before it counts too.
    if (parts.length > 0 && bytes + 1 + size > maxBytes) close()
    bytes += size + (parts.length > 0 ? 1 : 0)
    parts.push(event)
  }
  if (parts.length > 0) close()
  return out
}
