import { randomUUID } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { MAX_MESSAGE_BYTES, type QueueMessage } from 'event-contract'
import { batchMessages } from '../src/batch-messages.js'

function event(metadataBytes = 100): QueueMessage {
  return {
    event_id: randomUUID(),
    user_id: 1,
    event_type: 'page_view',
    timestamp: '2026-02-20T10:00:00.000Z',
    metadata: { pad: 'é'.repeat(metadataBytes / 2) },
    received_at: '2026-02-20T10:00:00.000Z',
  }
}

describe('batchMessages', () => {
  it('keeps a small batch in one message', () => {
    const events = Array.from({ length: 100 }, () => event())
    const [only, ...rest] = batchMessages(events)
    expect(rest).toEqual([])
    expect(only?.count).toBe(100)
    expect(JSON.parse(only?.body.toString() as string)).toEqual({ events })
  })

  it('splits a 1 MiB batch into messages of at most 64 KiB, every event once and in order', () => {
    const events = Array.from({ length: 1000 }, () => event(1000))
    const messages = batchMessages(events)
    expect(messages.length).toBeGreaterThan(15)
    for (const message of messages) expect(message.body.length).toBeLessThanOrEqual(MAX_MESSAGE_BYTES)
    const decoded = messages.flatMap((m) => (JSON.parse(m.body.toString()) as { events: QueueMessage[] }).events)
    expect(decoded).toEqual(events)
    expect(messages.map((m) => m.count).reduce((a, b) => a + b)).toBe(1000)
  })

  it('gives an event larger than the limit a message of its own', () => {
    const big = event(100_000)
    const messages = batchMessages([event(), big, event()])
    expect(messages.map((m) => m.count)).toEqual([1, 1, 1])
    expect(JSON.parse(messages[1]?.body.toString() as string)).toEqual({ events: [big] })
  })
})
