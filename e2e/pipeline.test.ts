// End to end: the built producer and consumer as processes, a real RabbitMQ and a real database.
// HTTP in, rows out.
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { RowDataPacket } from 'mysql2/promise'
import { waitFor } from '../test-support/index.js'
import { connectDatabase } from '../test-support/database.js'
import { acceptedIds, System } from './harness.js'

const readmeExample = {
  user_id: 123,
  event_type: 'page_view',
  timestamp: '2026-02-20T10:00:00Z',
  metadata: { page_url: '/products/item-xyz', session_id: 'abc123' },
}

describe('the pipeline', () => {
  const system = new System()

  beforeAll(async () => {
    await system.start()
  })
  afterAll(async () => {
    await system.stop()
  })

  async function row(eventId: string): Promise<RowDataPacket | undefined> {
    const connection = await connectDatabase(system.databaseName)
    try {
      const [rows] = await connection.query<RowDataPacket[]>(
        'SELECT event_id, user_id, event_type, `timestamp`, metadata FROM user_activities WHERE event_id = ?',
        [eventId],
      )
      return rows[0]
    } finally {
      await connection.end()
    }
  }

  it('reports both services healthy', async () => {
    expect(await (await fetch(system.producerHealth)).json()).toEqual({
      status: 'healthy',
      checks: { rabbitmq: 'up' },
    })
    expect(await (await fetch(system.consumerHealth)).json()).toEqual({
      status: 'healthy',
      checks: { rabbitmq: 'up', mysql: 'up', progress: 'ok', dlq: 'ok' },
    })
  })

  it("stores the README's example as one row with its values", async () => {
    const { status, eventId } = await system.post(readmeExample)
    expect(status).toBe(202)
    const stored = await waitFor(() => row(eventId as string), { what: 'the example row' })
    expect({
      ...stored,
      metadata: typeof stored.metadata === 'string' ? JSON.parse(stored.metadata) : stored.metadata,
    }).toEqual({
      event_id: eventId,
      user_id: 123,
      event_type: 'page_view',
      timestamp: new Date('2026-02-20T10:00:00Z'),
      metadata: readmeExample.metadata,
    })
  })

  it('stores each of a few hundred concurrent events exactly once, with its values, within seconds', async () => {
    const events = Array.from({ length: 400 }, (_, i) => ({
      user_id: 1000 + i,
      event_type: i % 2 ? 'login' : 'logout',
      timestamp: new Date(Date.UTC(2026, 1, 20, 10, 0, 0, i)).toISOString().replace('Z', '+00:00'),
      metadata: { i, text: 'héllo ✓' },
    }))
    const outcomes = await system.postMany(events.length, 100, (i) => events[i])
    expect(outcomes.map((o) => o.status)).toEqual(events.map(() => 202))
    const accepted = acceptedIds(outcomes)

    const started = Date.now()
    const result = await system.settle(accepted, 10_000)
    expect(Date.now() - started).toBeLessThan(10_000)
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.countsDrift).toEqual([])
    for (const [i, outcome] of outcomes.entries()) {
      const stored = await row(outcome.eventId as string)
      expect(stored?.user_id).toBe(events[i]?.user_id)
      expect(stored?.event_type).toBe(events[i]?.event_type)
      expect((stored?.timestamp as Date).toISOString()).toBe(new Date(events[i]?.timestamp as string).toISOString())
    }
  })

  it('stores each event of a compressed batch once, with its values', async () => {
    const events = Array.from({ length: 1000 }, (_, i) => ({ ...readmeExample, user_id: 5000 + i, metadata: { i } }))
    const res = await fetch(`${system.api}/api/v1/events/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body: gzipSync(JSON.stringify({ batch: events })),
    })
    expect(res.status).toBe(202)
    const body = (await res.json()) as { count: number; event_ids: string[] }
    expect(body.count).toBe(1000)
    const result = await system.settle(new Set(body.event_ids), 15_000)
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.countsDrift).toEqual([])
    expect((await row(body.event_ids[999] as string))?.user_id).toBe(5999)
  })

  it('stops both services cleanly on SIGTERM', async () => {
    expect(await system.producer?.stop()).toBe(0)
    expect(await system.consumer?.stop()).toBe(0)
  })
})
