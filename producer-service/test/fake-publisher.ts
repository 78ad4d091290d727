// A publisher for the HTTP tests: records what would have been published, and can be told to
// fail the way the broker does.
import type { QueueMessage } from 'event-contract'
import { publishError, type PublishErrorCode } from '../src/errors.js'
import type { EventPublisher, PublisherHealth } from '../src/publisher.js'

export class FakePublisher implements EventPublisher {
  published: QueueMessage[] = []
  batches: QueueMessage[][] = []
  failWith: PublishErrorCode | undefined
  state: PublisherHealth = 'up'
  inFlight = 0
  inFlightBytes = 0

  async publish(message: QueueMessage): Promise<void> {
    if (this.failWith) throw publishError(this.failWith)
    this.published.push(message)
  }

  async publishBatch(messages: QueueMessage[]): Promise<void> {
    if (this.failWith) throw publishError(this.failWith)
    this.batches.push(messages)
  }

  health() {
    return this.state
  }
}

export const seed = {
  user_id: 123,
  event_type: 'page_view',
  timestamp: '2026-02-20T10:00:00Z',
  metadata: { page_url: '/products/item-xyz', session_id: 'abc123' },
}
