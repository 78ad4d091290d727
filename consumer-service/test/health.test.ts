import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { buildHealthApp } from '../src/health.js'

async function healthWith(rabbitmq: 'up' | 'down', database: boolean) {
  const app = await buildHealthApp({
    worker: { health: () => rabbitmq },
    store: { ping: async () => database },
    logger: pino({ level: 'silent' }),
  })
  try {
    return await app.inject('/health')
  } finally {
    await app.close()
  }
}

describe('GET /health', () => {
  it('is 200 when consuming and the database answers', async () => {
    const res = await healthWith('up', true)
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual({ status: 'healthy', checks: { rabbitmq: 'up', mysql: 'up' } })
  })

  it.each([
    ['down', true, { rabbitmq: 'down', mysql: 'up' }],
    ['up', false, { rabbitmq: 'up', mysql: 'down' }],
    ['down', false, { rabbitmq: 'down', mysql: 'down' }],
  ] as const)('is 503 naming the failing check (rabbitmq %s, database answers: %s)', async (rabbitmq, db, checks) => {
    const res = await healthWith(rabbitmq, db)
    expect(res.statusCode).toBe(503)
    expect(res.json()).toEqual({ status: 'unhealthy', checks })
  })
})
