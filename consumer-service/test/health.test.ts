import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { buildHealthApp } from '../src/health.js'
import type { DatabaseHealth } from '../src/store.js'
import type { WorkerHealth } from '../src/worker.js'

async function healthWith(worker: WorkerHealth, database: DatabaseHealth) {
  const app = await buildHealthApp({
    worker: { health: () => worker },
    store: { health: async () => database },
    logger: pino({ level: 'silent' }),
  })
  try {
    return await app.inject('/health')
  } finally {
    await app.close()
  }
}

describe('GET /health', () => {
  it('is 200 when connected, the database answers and events move', async () => {
    const res = await healthWith({ rabbitmq: 'up', progress: 'ok', dlq: 'ok' }, 'up')
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual({
      status: 'healthy',
      checks: { rabbitmq: 'up', mysql: 'up', progress: 'ok', dlq: 'ok' },
    })
  })

  it.each([
    [
      { rabbitmq: 'down', progress: 'ok', dlq: 'ok' },
      'up',
      { rabbitmq: 'down', mysql: 'up', progress: 'ok', dlq: 'ok' },
    ],
    [
      { rabbitmq: 'up', progress: 'ok', dlq: 'ok' },
      'down',
      { rabbitmq: 'up', mysql: 'down', progress: 'ok', dlq: 'ok' },
    ],
    // The database answers, but its writes fail (INSERT revoked, read_only, no table).
    [
      { rabbitmq: 'up', progress: 'ok', dlq: 'ok' },
      'failing',
      { rabbitmq: 'up', mysql: 'failing', progress: 'ok', dlq: 'ok' },
    ],
    [
      { rabbitmq: 'down', progress: 'ok', dlq: 'ok' },
      'down',
      { rabbitmq: 'down', mysql: 'down', progress: 'ok', dlq: 'ok' },
    ],
    [
      { rabbitmq: 'up', progress: 'stalled', dlq: 'ok' },
      'up',
      { rabbitmq: 'up', mysql: 'up', progress: 'stalled', dlq: 'ok' },
    ],
    [
      { rabbitmq: 'up', progress: 'ok', dlq: 'refusing' },
      'up',
      { rabbitmq: 'up', mysql: 'up', progress: 'ok', dlq: 'refusing' },
    ],
  ] as const)('is 503 naming the failing check (%j, database: %s)', async (worker, db, checks) => {
    const res = await healthWith(worker, db)
    expect(res.statusCode).toBe(503)
    expect(res.json()).toEqual({ status: 'unhealthy', checks })
  })
})
