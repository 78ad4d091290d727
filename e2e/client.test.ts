// End to end: activity-client against the real producer, RabbitMQ, consumer and MariaDB/MySQL.
// Every event whose track() was not reported through onError is stored exactly once, through a
// producer restarted mid-stream and a rate limit that answers 429. (RabbitMQ stopped: faults.test.ts.)
import { afterEach, describe, expect, it } from 'vitest'
import { metricValue } from '../test-support/index.js'
import { clientOf, trackAt } from './client-load.js'
import { System, type SystemOptions } from './harness.js'

let system: System | undefined
afterEach(async () => {
  await system?.stop()
  system = undefined
})

async function start(options: SystemOptions = {}) {
  system = await new System(options).start()
  return system
}

describe('activity-client end to end', () => {
  it('a producer killed and restarted mid-stream: flush() resolves, every event stored once', async () => {
    const s = await start()
    const { client, errors } = clientOf(s, { flushAt: 50, flushIntervalMs: 100 })
    const tracking = trackAt(client, 3000, 1000)
    await new Promise((resolve) => setTimeout(resolve, 1000))
    await s.producer?.stop('SIGKILL')
    await new Promise((resolve) => setTimeout(resolve, 1000))
    await s.startProducer()
    const ids = await tracking
    await client.flush()
    await client.close()
    expect(errors).toEqual([])
    const result = await s.settle(new Set(ids))
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.stored).toBe(ids.length)
  })

  it('429 under a low RATE_LIMIT_MAX: the client waits as told, and every event is stored once', async () => {
    const s = await start({ producerEnv: { RATE_LIMIT_MAX: '5', RATE_LIMIT_WINDOW_MS: '1000' } })
    const { client, errors } = clientOf(s, { flushAt: 10 })
    const ids = await trackAt(client, 600, 2000)
    await client.flush()
    await client.close()
    expect(errors).toEqual([])
    const metrics = await fetch(`${s.api}/metrics`).then((r) => r.text())
    const limited = metricValue(metrics, 'producer_http_requests_total', {
      route: '/api/v1/events/batch',
      status: '429',
    })
    expect(limited).toBeGreaterThan(0)
    const result = await s.settle(new Set(ids))
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.stored).toBe(600)
  })
})
