// GET /metrics through app.inject: each counter moves for what it counts.
import { gzipSync } from 'node:zlib'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { metricValue } from '../../test-support/index.js'
import { buildApp } from '../src/app.js'
import { createProducerMetrics } from '../src/metrics.js'
import { FakePublisher, seed } from './fake-publisher.js'

let publisher: FakePublisher
let app: Awaited<ReturnType<typeof buildApp>>

beforeEach(async () => {
  publisher = new FakePublisher()
  app = await buildApp({ publisher, logger: pino({ level: 'silent' }), metrics: createProducerMetrics() })
})
afterEach(async () => {
  await app.close()
})

const post = (url: string, payload: unknown, headers: Record<string, string> = {}) =>
  app.inject({
    method: 'POST',
    url,
    headers: { 'content-type': 'application/json', ...headers },
    payload: Buffer.isBuffer(payload) || typeof payload === 'string' ? payload : JSON.stringify(payload),
  })
const track = (payload: unknown, headers?: Record<string, string>) => post('/api/v1/events/track', payload, headers)
async function scrape() {
  const res = await app.inject('/metrics')
  expect(res.statusCode).toBe(200)
  expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/)
  return res.body
}

describe('GET /metrics', () => {
  it('counts a valid event: received, accepted, its request, its body size; includes process metrics', async () => {
    await track(seed)
    const text = await scrape()
    expect(metricValue(text, 'producer_events_received_total')).toBe(1)
    expect(metricValue(text, 'producer_events_accepted_total')).toBe(1)
    expect(metricValue(text, 'producer_http_requests_total', { route: '/api/v1/events/track', status: '202' })).toBe(1)
    expect(metricValue(text, 'producer_request_body_bytes_count')).toBe(1)
    expect(metricValue(text, 'producer_request_body_bytes_sum')).toBe(JSON.stringify(seed).length)
    expect(metricValue(text, 'process_resident_memory_bytes')).toBeGreaterThan(0)
  })

  it('counts the events of a batch one by one', async () => {
    await post('/api/v1/events/batch', { batch: [seed, seed, seed] })
    await post('/api/v1/events/batch', { batch: [seed, { ...seed, user_id: 0 }] })
    const text = await scrape()
    expect(metricValue(text, 'producer_events_received_total')).toBe(5)
    expect(metricValue(text, 'producer_events_accepted_total')).toBe(3)
    expect(metricValue(text, 'producer_events_rejected_total', { reason: 'validation' })).toBe(2)
  })

  it.each([
    ['validation', () => track({ ...seed, user_id: 'x' })],
    ['too_large', () => track({ ...seed, metadata: { x: 'x'.repeat(70_000) } })],
    ['unsupported_media_type', () => track(JSON.stringify(seed), { 'content-type': 'text/plain' })],
    ['unsupported_media_type', () => track(gzipSync(JSON.stringify(seed)), { 'content-encoding': 'zip' })],
  ])('counts an event rejected for %s', async (reason, send) => {
    expect((await send()).statusCode).toBeGreaterThanOrEqual(400)
    const text = await scrape()
    expect(metricValue(text, 'producer_events_rejected_total', { reason })).toBe(1)
    expect(metricValue(text, 'producer_events_accepted_total')).toBe(0)
  })

  it.each([
    ['BROKER_UNAVAILABLE', 'broker_unavailable'],
    ['CONFIRM_TIMEOUT', 'timeout'],
    ['OVERLOADED', 'overloaded'],
    ['BROKER_BACKPRESSURE', 'overloaded'],
    ['BROKER_NACK', 'broker_rejected'],
  ] as const)('counts a publish that failed with %s as %s', async (code, reason) => {
    publisher.failWith = code
    await track(seed)
    const text = await scrape()
    expect(metricValue(text, 'producer_events_rejected_total', { reason })).toBe(1)
  })

  it('reads the in-flight publishes and the broker state from the publisher', async () => {
    publisher.inFlight = 7
    publisher.state = 'down'
    const text = await scrape()
    expect(metricValue(text, 'producer_publishes_in_flight')).toBe(7)
    expect(metricValue(text, 'producer_broker_up')).toBe(0)
  })

  it('labels requests by route pattern, never by what a client sent', async () => {
    await app.inject('/nope/123?user_id=5')
    const text = await scrape()
    expect(metricValue(text, 'producer_http_requests_total', { route: 'unmatched', status: '404' })).toBe(1)
    expect(text).not.toContain('nope')
  })
})

it('serves no /metrics when metrics are off (METRICS_ENABLED=false)', async () => {
  const bare = await buildApp({ publisher, logger: pino({ level: 'silent' }) })
  expect((await bare.inject('/metrics')).statusCode).toBe(404)
  await bare.close()
})
