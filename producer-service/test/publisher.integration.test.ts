// Integration: the API and the publisher against the real RabbitMQ (no mock of it).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { Channel, ChannelModel } from 'amqplib'
import { pino } from 'pino'
import { deleteTopology, topologyFor } from 'event-contract'
import {
  broker,
  connectBroker,
  metricValue,
  TcpProxy,
  uniqueName,
  waitFor,
  type Address,
} from '../../test-support/index.js'
import { buildApp } from '../src/app.js'
import { leastPublishBytes, readConfig } from '../src/config.js'
import { createProducerMetrics } from '../src/metrics.js'
import { AmqpPublisher, socketOf } from '../src/publisher.js'

const seed = {
  user_id: 123,
  event_type: 'page_view',
  timestamp: '2026-02-20T10:00:00Z',
  metadata: { page_url: '/products/item-xyz', session_id: 'abc123' },
}

let admin: ChannelModel
let channel: Channel
const queues: string[] = []

beforeAll(async () => {
  admin = await connectBroker()
  channel = await admin.createChannel()
})

afterAll(async () => {
  for (const queue of queues) {
    await deleteTopology(channel, topologyFor(queue, 'quorum'))
  }
  await admin.close()
})

async function startStack(brokerAt: Address = broker, env: Record<string, string> = {}) {
  const queue = uniqueName('producer_it')
  queues.push(queue)
  const config = readConfig({
    RABBITMQ_HOST: brokerAt.host,
    RABBITMQ_PORT: String(brokerAt.port),
    RABBITMQ_USER: broker.user,
    RABBITMQ_PASS: broker.pass,
    RABBITMQ_QUEUE: queue,
    PUBLISH_TIMEOUT_MS: '1000',
    ...env,
  })
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' })
  const metrics = createProducerMetrics()
  const publisher = new AmqpPublisher({ config, logger, onConfirm: (s) => metrics.confirmSeconds.observe(s) })
  const app = await buildApp({
    publisher,
    logger,
    metrics,
    bodyLimit: config.BODY_LIMIT_BYTES,
    batchMaxEvents: config.BATCH_MAX_EVENTS,
    batchBodyLimit: config.BATCH_BODY_LIMIT_BYTES,
    bodyMaxInFlightBytes: config.BODY_MAX_IN_FLIGHT_BYTES,
  })
  await publisher.start()
  await publisher.waitForConnect()
  const stop = async () => {
    await app.close()
    await publisher.close()
  }
  return { queue, app, publisher, stop }
}

function track(app: Awaited<ReturnType<typeof buildApp>>, payload: unknown = seed) {
  return app.inject({ method: 'POST', url: '/api/v1/events/track', payload: payload as object })
}

describe('with the broker up', () => {
  let stack: Awaited<ReturnType<typeof startStack>>
  afterEach(async () => stack?.stop())

  it('declares the documented topology', async () => {
    stack = await startStack()
    const queue = await channel.checkQueue(stack.queue)
    expect(queue.queue).toBe(stack.queue)
    await channel.checkQueue(`${stack.queue}.dlq`)
    await channel.checkExchange(`${stack.queue}.dlx`)
  })

  it('a 202 leaves exactly one persistent message with the documented body and properties', async () => {
    stack = await startStack()
    const res = await track(stack.app)
    expect(res.statusCode).toBe(202)
    const { event_id: eventId } = res.json()

    const message = await waitFor(() => channel.get(stack.queue, { noAck: false }), { what: 'the message' })
    channel.ack(message)
    expect(message.properties).toMatchObject({
      deliveryMode: 2,
      contentType: 'application/json',
      messageId: eventId,
      type: 'user_activity.v1',
    })
    expect(JSON.parse(message.content.toString())).toEqual({
      event_id: eventId,
      user_id: 123,
      event_type: 'page_view',
      timestamp: '2026-02-20T10:00:00.000Z',
      metadata: seed.metadata,
      received_at: expect.stringMatching(/Z$/),
    })
    expect(await channel.get(stack.queue)).toBe(false)
  })

  it("a 202'd batch of 1,000 puts each of its events on the queue exactly once", async () => {
    stack = await startStack()
    const batch = Array.from({ length: 1000 }, (_, i) => ({ ...seed, user_id: i + 1 }))
    const res = await stack.app.inject({ method: 'POST', url: '/api/v1/events/batch', payload: { batch } })
    expect(res.statusCode).toBe(202)
    const { event_ids: eventIds } = res.json() as { event_ids: string[] }

    const onQueue: string[] = []
    for (;;) {
      const message = await channel.get(stack.queue, { noAck: true })
      if (!message) break
      expect(message.properties).toMatchObject({ deliveryMode: 2, type: 'user_activity_batch.v1' })
      const { events } = JSON.parse(message.content.toString()) as { events: { event_id: string }[] }
      onQueue.push(...events.map((e) => e.event_id))
    }
    expect(onQueue).toEqual(eventIds)
    expect(new Set(onQueue).size).toBe(1000)
  })

  it('counts a batch by its events against the in-flight limit', async () => {
    stack = await startStack(broker, { PUBLISH_MAX_IN_FLIGHT: '10' })
    const batch = (n: number) => ({ batch: Array.from({ length: n }, () => seed) })
    const post = (n: number) => stack.app.inject({ method: 'POST', url: '/api/v1/events/batch', payload: batch(n) })
    expect((await post(11)).statusCode).toBe(503)
    expect((await post(10)).statusCode).toBe(202)
  })

  it("reaches amqplib's socket, so that the publishes of one event-loop turn share a write", async () => {
    const confirm = await admin.createConfirmChannel()
    expect(typeof socketOf(confirm)?.cork).toBe('function')
    await confirm.close()
  })

  it('a 400 publishes nothing', async () => {
    stack = await startStack()
    const res = await track(stack.app, { ...seed, user_id: 0 })
    expect(res.statusCode).toBe(400)
    expect((await channel.checkQueue(stack.queue)).messageCount).toBe(0)
  })

  it('answers 500 when the queue is gone, says so on /health, declares it again, then answers 202', async () => {
    stack = await startStack()
    await channel.deleteQueue(stack.queue)
    const res = await track(stack.app)
    expect(res.statusCode).toBe(500)
    expect(res.json()).toMatchObject({ message: 'Failed to queue event', detail: 'The event queue does not exist' })

    await waitFor(async () => (await track(stack.app)).statusCode === 202, { what: 'a 202 after the queue is back' })
    expect((await stack.app.inject('/health')).json()).toEqual({ status: 'healthy', checks: { rabbitmq: 'up' } })
    const queue = await channel.checkQueue(stack.queue)
    expect(queue.messageCount).toBeGreaterThanOrEqual(1)
  })

  it('answers 503 with Retry-After past the in-flight limit', async () => {
    stack = await startStack(broker, { PUBLISH_MAX_IN_FLIGHT: '1' })
    const responses = await Promise.all(Array.from({ length: 20 }, () => track(stack.app)))
    const codes = responses.map((r) => r.statusCode)
    expect(codes).toContain(202)
    expect(codes).toContain(503)
    expect(codes.every((c) => c === 202 || c === 503)).toBe(true)
    expect(responses.find((r) => r.statusCode === 503)?.headers['retry-after']).toBe('1')
    const accepted = codes.filter((c) => c === 202).length
    await waitFor(async () => (await channel.checkQueue(stack.queue)).messageCount === accepted, {
      what: `${accepted} messages on the queue`,
    })
  })
})

describe('with the broker unreachable', () => {
  const proxy = new TcpProxy({ host: broker.host, port: broker.port })
  let stack: Awaited<ReturnType<typeof startStack>>

  beforeAll(async () => {
    await proxy.start()
  })
  afterAll(async () => {
    await stack?.stop()
    await proxy.stop()
  })

  it('answers 500 within the publish timeout, reports 503, and recovers without a restart', async () => {
    stack = await startStack(proxy)
    expect((await track(stack.app)).statusCode).toBe(202)

    await proxy.cut()
    await waitFor(async () => (await stack.app.inject('/health')).statusCode === 503, { what: '/health 503' })
    expect((await stack.app.inject('/health')).json()).toEqual({ status: 'unhealthy', checks: { rabbitmq: 'down' } })
    const started = Date.now()
    const res = await track(stack.app)
    expect(res.statusCode).toBe(500)
    expect(Date.now() - started).toBeLessThan(1000)
    expect(res.json()).toEqual({
      detail: 'The message broker is unavailable',
      message: 'Failed to queue event',
      event_id: expect.any(String),
    })

    await proxy.restore()
    await waitFor(async () => (await stack.app.inject('/health')).statusCode === 200, {
      timeoutMs: 15_000,
      what: '/health 200 after the broker returns',
    })
    const after = await track(stack.app)
    expect(after.statusCode).toBe(202)
    const message = await waitFor(() => channel.get(stack.queue, { noAck: false }), { what: 'a message' })
    channel.ack(message)
  })

  it('shows the outage in its metrics: broker down, events rejected as broker_unavailable', async () => {
    stack = await startStack(proxy)
    expect((await track(stack.app)).statusCode).toBe(202)
    const before = (await stack.app.inject('/metrics')).body
    expect(metricValue(before, 'producer_broker_up')).toBe(1)
    expect(metricValue(before, 'producer_publish_confirm_seconds_count')).toBe(1)

    await proxy.cut()
    try {
      await waitFor(async () => (await stack.app.inject('/health')).statusCode === 503, { what: '/health 503' })
      expect((await track(stack.app)).statusCode).toBe(500)
      const during = (await stack.app.inject('/metrics')).body
      expect(metricValue(during, 'producer_broker_up')).toBe(0)
      expect(metricValue(during, 'producer_events_rejected_total', { reason: 'broker_unavailable' })).toBe(1)
      expect(metricValue(during, 'producer_publishes_in_flight')).toBe(0)
    } finally {
      await proxy.restore()
    }
  })

  it('fails publishes awaiting confirms when the connection drops, never hangs', async () => {
    stack = await startStack(proxy)
    const started = Date.now()
    const pending = Promise.all(Array.from({ length: 200 }, () => track(stack.app)))
    await proxy.cut()
    const codes = (await pending).map((r) => r.statusCode)
    expect(Date.now() - started).toBeLessThan(3000)
    expect(codes.every((c) => c === 202 || c === 500)).toBe(true)
    await proxy.restore()
    // Every 202 is on the queue (a 500 may still have been stored: the client retries with its event_id).
    const accepted = codes.filter((c) => c === 202).length
    const { messageCount } = await channel.checkQueue(stack.queue)
    expect(messageCount).toBeGreaterThanOrEqual(accepted)
  })
})

describe('several broker nodes (RABBITMQ_HOST=a,b)', () => {
  const a = new TcpProxy({ host: broker.host, port: broker.port })
  const b = new TcpProxy({ host: broker.host, port: broker.port })
  let stack: Awaited<ReturnType<typeof startStack>>

  beforeAll(async () => {
    await a.start()
    await b.start()
  })
  afterAll(async () => {
    await stack?.stop()
    await a.stop()
    await b.stop()
  })

  it('connects to the next node when one refuses, and leaves a node that stops confirming', async () => {
    await a.cut()
    stack = await startStack({ host: `${a.host}:${a.port},${b.host}:${b.port}`, port: broker.port })
    expect((await track(stack.app)).statusCode).toBe(202)

    // b hangs: its socket stays open but nothing comes back, as from a node dying mid-election.
    await a.restore()
    b.freeze()
    const started = Date.now()
    expect((await track(stack.app)).statusCode).toBe(500)
    expect(Date.now() - started).toBeLessThan(2000)
    // The producer drops b after a publish timeout without any confirm, and moves on to a.
    await waitFor(async () => (await track(stack.app)).statusCode === 202, {
      what: 'a 202 through the other node',
      timeoutMs: 10_000,
    })
    expect((await stack.app.inject('/health')).json()).toEqual({ status: 'healthy', checks: { rabbitmq: 'up' } })
  })
})

describe('the budget of bytes awaiting confirms', () => {
  let stack: Awaited<ReturnType<typeof startStack>> | undefined
  const slow = new TcpProxy({ host: broker.host, port: broker.port }, { bytesPerSecond: 200_000 })
  beforeAll(async () => {
    await slow.start()
  })
  afterEach(async () => {
    await stack?.stop()
    stack = undefined
  })
  afterAll(async () => slow.stop())

  const postBatch = (app: Awaited<ReturnType<typeof buildApp>>, batch: unknown[]) =>
    app.inject({ method: 'POST', url: '/api/v1/events/batch', payload: { batch } })

  it('lets 16 concurrent 1,000-event batches through with the defaults', async () => {
    stack = await startStack(broker, { PUBLISH_TIMEOUT_MS: '5000' })
    const app = stack.app
    const batch = Array.from({ length: 1000 }, (_, i) => ({ ...seed, user_id: i + 1 }))
    const codes = (await Promise.all(Array.from({ length: 16 }, () => postBatch(app, batch)))).map((r) => r.statusCode)
    expect(codes).toEqual(Array.from({ length: 16 }, () => 202))
  })

  it('admits the largest batch of the smallest events at the least publish budget the boot check accepts', async () => {
    const limits = { BATCH_MAX_EVENTS: 10_000, BATCH_BODY_LIMIT_BYTES: 700_000, BODY_LIMIT_BYTES: 65_536 }
    // Before, the check asked for twice the body (1,400,000): this batch was charged 1.78 MB, 503 forever.
    stack = await startStack(broker, {
      BATCH_MAX_EVENTS: String(limits.BATCH_MAX_EVENTS),
      BATCH_BODY_LIMIT_BYTES: String(limits.BATCH_BODY_LIMIT_BYTES),
      BODY_MAX_IN_FLIGHT_BYTES: String(limits.BATCH_BODY_LIMIT_BYTES),
      PUBLISH_MAX_IN_FLIGHT_BYTES: String(leastPublishBytes(limits)),
      PUBLISH_TIMEOUT_MS: '5000',
    })
    const batch = Array.from({ length: limits.BATCH_MAX_EVENTS }, (_, i) => ({
      user_id: i + 1,
      event_type: 'a',
      timestamp: '2026-02-20T10:00:00Z',
    }))
    expect(Buffer.byteLength(JSON.stringify({ batch }))).toBeLessThan(limits.BATCH_BODY_LIMIT_BYTES)
    const res = await postBatch(stack.app, batch)
    expect(res.statusCode, res.body.slice(0, 200)).toBe(202)
  })

  it('answers 503 with Retry-After once PUBLISH_MAX_IN_FLIGHT_BYTES are awaiting confirms', async () => {
    // A slow link keeps ten 200 KB batches of ten events in flight: 2 MB, past a 1 MiB budget,
    // far under the event count of PUBLISH_MAX_IN_FLIGHT.
    stack = await startStack(slow, {
      PUBLISH_MAX_IN_FLIGHT_BYTES: String(2 ** 20),
      BATCH_BODY_LIMIT_BYTES: String(2 ** 19), // the budget must hold the largest batch as messages
      PUBLISH_TIMEOUT_MS: '8000',
    })
    const app = stack.app
    const batch = Array.from({ length: 10 }, (_, i) => ({ ...seed, metadata: { i, blob: 'x'.repeat(20_000) } }))
    const responses = await Promise.all(Array.from({ length: 10 }, () => postBatch(app, batch)))
    const codes = responses.map((r) => r.statusCode)
    expect(codes).toContain(503)
    expect(codes.filter((c) => c !== 503).every((c) => c === 202)).toBe(true)
    expect(codes.filter((c) => c === 202).length).toBeGreaterThanOrEqual(3)
    const refused = responses.find((r) => r.statusCode === 503)
    expect(refused?.headers['retry-after']).toBe('1')
    expect(refused?.json()).toMatchObject({ event_ids: expect.any(Array) })
  })
})
