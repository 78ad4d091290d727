// The promise under faults: every scenario runs the built services against the real RabbitMQ and
// MariaDB/MySQL, sends a known set of events and ends by comparing the 202'd event_ids with the
// rows: none missing, none twice. This file runs alone, after every other test (vitest.config.ts),
// because one scenario restarts the shared RabbitMQ; what a scenario stops or cuts it restores in
// a `finally`. Each scenario logs what it measured.
import { execFileSync, spawn } from 'node:child_process'
import net from 'node:net'
import { randomBytes, randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import mysql from 'mysql2/promise'
import { messageProperties } from 'event-contract'
import { broker, connectBroker, metricValue, TcpProxy, waitFor } from '../test-support/index.js'
import { freePort, rssBytes } from '../test-support/process.js'
import { connectDatabase, createTestUser, database } from '../test-support/database.js'
import { clientOf, trackAt } from './client-load.js'
import { acceptedIds, event, shippedNodeOptions, System, type PostOutcome, type SystemOptions } from './harness.js'

let system: System | undefined
const proxies: TcpProxy[] = []

afterEach(async () => {
  await system?.stop()
  system = undefined
  for (const proxy of proxies.splice(0)) await proxy.stop()
})

async function start(options: SystemOptions = {}) {
  system = await new System(options).start()
  return system
}

async function proxyTo(target: { host: string; port: number }, options: { bytesPerSecond?: number } = {}) {
  const proxy = await new TcpProxy(target, options).start()
  proxies.push(proxy)
  return proxy
}

function report(scenario: string, figures: Record<string, unknown>) {
  console.log(`[faults] ${scenario}: ${JSON.stringify(figures)}`)
}

/** How the broker is stopped and started; override when RabbitMQ runs elsewhere (in Docker, say). */
const brokerStop = process.env.TEST_RABBITMQ_STOP || 'rabbitmqctl stop_app'
const brokerStart = process.env.TEST_RABBITMQ_START || 'rabbitmqctl start_app && rabbitmqctl await_startup'

function shell(command: string) {
  try {
    execFileSync('/bin/sh', ['-c', command], { stdio: 'pipe', timeout: 120_000 })
  } catch (err) {
    throw new Error(`\`${command}\` failed; set TEST_RABBITMQ_STOP / TEST_RABBITMQ_START to control the broker`, {
      cause: err,
    })
  }
}

/** Posts events in the background until `stop()`; returns the outcomes. */
function postContinuously(target: System, ratePerSecond: number) {
  const outcomes: PostOutcome[] = []
  let running = true
  let i = 0
  const loop = (async () => {
    while (running) {
      const started = Date.now()
      outcomes.push(await target.post(event(i++)))
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, 1000 / ratePerSecond - (Date.now() - started))))
    }
  })()
  return {
    outcomes,
    async stop() {
      running = false
      await loop
      return outcomes
    },
  }
}

describe('faults', () => {
  it('consumer killed: SIGKILL mid-drain of 20,000 events, restart, all stored once', async () => {
    // Small batches make the drain last long enough to be interrupted.
    const s = await start({ consumer: false, consumerEnv: { CONSUMER_PREFETCH: '100', CONSUMER_BATCH_SIZE: '50' } })
    const outcomes = await s.postMany(20_000, 64)
    const accepted = acceptedIds(outcomes)
    expect(accepted.size).toBe(20_000)

    await s.startConsumer()
    await waitFor(async () => (await s.storedCount()) >= 3000, { what: 'the drain under way', intervalMs: 10 })
    s.consumer?.child.kill('SIGKILL')
    await s.consumer?.exited
    const atKill = await s.storedCount()
    expect(atKill).toBeLessThan(20_000)

    await s.startConsumer()
    const result = await s.settle(accepted)
    const { dead } = await s.queueDepth()
    report('consumer killed', { sent: 20_000, storedAtKill: atKill, ...summary(result), deadLettered: dead })
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.countsDrift).toEqual([])
    expect(dead).toBe(0)
  })

  it('database outage: 20 s unreachable while events flow; 202s go on, 503 and back, all stored once', async () => {
    const proxy = await proxyTo({ host: database.host, port: database.port })
    const s = await start({ databaseAt: proxy, consumerEnv: { CONSUMER_RETRY_MAX_MS: '2000' } })
    const traffic = postContinuously(s, 100)
    await new Promise((resolve) => setTimeout(resolve, 2000))

    const healthDuringOutage: (number | 'down')[] = []
    const outageStarted = Date.now()
    try {
      await proxy.cut()
      while (Date.now() - outageStarted < 20_000) {
        healthDuringOutage.push(await s.healthStatus(s.consumerHealth))
        await new Promise((resolve) => setTimeout(resolve, 1000))
      }
    } finally {
      await proxy.restore()
    }
    const outageSeconds = (Date.now() - outageStarted) / 1000
    await waitFor(() => s.healthy(s.consumerHealth), { what: 'consumer /health 200 again', timeoutMs: 15_000 })
    await new Promise((resolve) => setTimeout(resolve, 1000))
    const outcomes = await traffic.stop()

    const accepted = acceptedIds(outcomes)
    const result = await s.settle(accepted)
    const { dead } = await s.queueDepth()
    report('database outage', {
      outageSeconds,
      posted: outcomes.length,
      non202: outcomes.filter((o) => o.status !== 202).length,
      consumerHealthDuringOutage: healthDuringOutage,
      ...summary(result),
      deadLettered: dead,
    })
    expect(outcomes.every((o) => o.status === 202)).toBe(true)
    expect(healthDuringOutage.slice(2).every((status) => status === 503)).toBe(true)
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.countsDrift).toEqual([])
    expect(dead).toBe(0)
  })

  it('broker restart with events queued: they survive; 500 fast and 503 meanwhile; both reconnect', async () => {
    // The consumer's database is cut first, so that events are still queued when RabbitMQ stops.
    const dbProxy = await proxyTo({ host: database.host, port: database.port })
    const s = await start({ databaseAt: dbProxy, consumerEnv: { CONSUMER_RETRY_MAX_MS: '1000' } })
    const before = await s.postMany(5000, 64)
    // And 50 batches of 20 events: batch messages must survive the restart as well.
    for (let b = 0; b < 50; b++) {
      before.push(await s.postBatch(Array.from({ length: 20 }, (_, j) => event(200_000 + b * 20 + j))))
    }
    let outage: {
      queuedAtStop: number
      seconds: number
      postStatuses: (number | 'error')[]
      slowestMs: number
      health: unknown[]
    }
    try {
      await dbProxy.cut()
      const beforeStop = await s.postMany(3000, 64)
      before.push(...beforeStop)
      const queuedAtStop = (await s.queueDepth()).ready
      const stopped = Date.now()
      const postStatuses: (number | 'error')[] = []
      const health: unknown[] = []
      let slowestMs = 0
      try {
        shell(brokerStop)
        for (let i = 0; i < 10; i++) {
          const t = Date.now()
          postStatuses.push((await s.post(event(100_000 + i))).status)
          slowestMs = Math.max(slowestMs, Date.now() - t)
          health.push([await s.healthStatus(s.producerHealth), await s.healthStatus(s.consumerHealth)])
          await new Promise((resolve) => setTimeout(resolve, 200))
        }
      } finally {
        shell(brokerStart)
      }
      outage = { queuedAtStop, seconds: (Date.now() - stopped) / 1000, postStatuses, slowestMs, health }
    } finally {
      await dbProxy.restore()
    }

    await waitFor(() => s.healthy(s.producerHealth), { what: 'producer /health 200', timeoutMs: 30_000 })
    await waitFor(() => s.healthy(s.consumerHealth), { what: 'consumer /health 200', timeoutMs: 30_000 })
    const after = await s.postMany(1000, 64)
    const accepted = acceptedIds([...before, ...after])
    const result = await s.settle(accepted)
    const { dead } = await s.queueDepth()
    report('broker restart', { ...outage, ...summary(result), deadLettered: dead })
    expect(before.every((o) => o.status === 202)).toBe(true)
    expect(outage.queuedAtStop).toBeGreaterThan(0)
    expect(after.every((o) => o.status === 202)).toBe(true)
    expect(outage.postStatuses.every((status) => status === 500)).toBe(true)
    expect(outage.slowestMs).toBeLessThan(1000)
    expect(outage.health.every((h) => (h as unknown[])[0] === 503 && (h as unknown[])[1] === 503)).toBe(true)
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.countsDrift).toEqual([])
    expect(dead).toBe(0)
  })

  it('activity-client: 5,000 track() calls while RabbitMQ is stopped 5 s; flush() resolves, each stored once', async () => {
    const s = await start()
    const { client, errors } = clientOf(s, { flushAt: 100, flushIntervalMs: 200 })
    const tracking = trackAt(client, 5000, 500)
    await new Promise((resolve) => setTimeout(resolve, 2000))
    // The client's requests the producer refused (500, 503) from the stop to the start.
    const refused = async () => {
      const text = await fetch(`${s.api}/metrics`).then((r) => r.text())
      const of = (status: string) =>
        metricValue(text, 'producer_http_requests_total', { route: '/api/v1/events/batch', status }) ?? 0
      return of('500') + of('503')
    }
    const refusedBefore = await refused()
    const stopped = Date.now()
    try {
      shell(brokerStop)
      // Stopped for 5 s once stop_app returned (in a container it takes seconds of its own).
      await new Promise((resolve) => setTimeout(resolve, 5000))
    } finally {
      shell(brokerStart)
    }
    const requestsDuring = (await refused()) - refusedBefore
    const outageMs = Date.now() - stopped
    const ids = await tracking
    const flushStarted = Date.now()
    await client.flush()
    const flushMs = Date.now() - flushStarted
    await client.close()
    const result = await s.settle(new Set(ids))
    report('activity-client, broker stopped', {
      outageMs,
      refusedWhileStopped: requestsDuring,
      flushMs,
      ...summary(result),
    })
    expect(errors).toEqual([])
    expect(requestsDuring).toBeGreaterThan(0) // the client did meet the outage
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.stored).toBe(5000)
  })

  it('a batch cut off by a broker outage: 500 with its event_ids; resent after recovery, each stored once', async () => {
    const link = await proxyTo({ host: broker.host, port: broker.port })
    const s = await start({ producerBrokerAt: link })
    const events = Array.from({ length: 500 }, (_, i) => event(300_000 + i))
    let cutOff: PostOutcome
    try {
      await link.cut()
      await waitFor(async () => (await s.healthStatus(s.producerHealth)) === 503, { what: 'the producer cut off' })
      cutOff = await s.postBatch(events)
    } finally {
      await link.restore()
    }
    expect(cutOff.status).toBe(500)
    expect(cutOff.eventIds).toHaveLength(500)
    await waitFor(() => s.healthy(s.producerHealth), { what: 'the producer reconnected', timeoutMs: 15_000 })
    const ids = cutOff.eventIds as string[]
    const resent = await s.postBatch(events.map((e, i) => ({ ...e, event_id: ids[i] })))
    expect(resent.status).toBe(202)
    expect(resent.eventIds).toEqual(ids)
    const result = await s.settle(new Set(ids))
    report('batch cut off by a broker outage', { ...summary(result) })
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.countsDrift).toEqual([])
    expect(result.stored).toBe(500)
  })

  it('link drops during a database outage: 25 reconnects dead-letter nothing, all stored once after', async () => {
    const dbProxy = await proxyTo({ host: database.host, port: database.port })
    const link = await proxyTo({ host: broker.host, port: broker.port })
    const s = await start({
      databaseAt: dbProxy,
      consumerBrokerAt: link,
      consumerEnv: { CONSUMER_RETRY_MAX_MS: '1000' },
    })
    const drops = 25
    let outcomes: PostOutcome[]
    try {
      await dbProxy.cut()
      outcomes = await s.postMany(1500, 32)
      // The consumer holds what it was handed before the outage (its first prefetch, 30 messages:
      // it starts as if the queue held 1 MiB messages), unacked, while it waits for the database.
      await waitFor(async () => (await s.queueDepth()).ready < 1500, { what: 'the consumer holding events' })
      for (let i = 0; i < drops; i++) {
        await link.cut()
        await waitFor(async () => (await s.health(s.consumerHealth)).checks?.rabbitmq === 'down', {
          what: 'the consumer to notice the link drop',
        })
        await link.restore()
        await waitFor(async () => (await s.health(s.consumerHealth)).checks?.rabbitmq === 'up', {
          what: 'the consumer to reconnect',
          timeoutMs: 15_000,
        })
        await new Promise((resolve) => setTimeout(resolve, 200)) // time for a redelivery, if it consumes
      }
    } finally {
      await dbProxy.restore()
      await link.restore()
    }
    const accepted = acceptedIds(outcomes)
    await waitFor(async () => (await s.queueDepth()).ready === 0, { what: 'the queue drained', timeoutMs: 30_000 })
    const { dead } = await s.queueDepth()
    expect(dead).toBe(0)
    const result = await s.settle(accepted)
    report('link drops during a database outage', { drops, ...summary(result), deadLettered: dead })
    expect(accepted.size).toBe(1500)
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.countsDrift).toEqual([])
  })

  it('slow broker: producer memory stays bounded by the in-flight cap; 500 and 503 carry the event_id', async () => {
    const inFlight = 100
    const eventBytes = 60 * 1024
    const slow = await proxyTo({ host: broker.host, port: broker.port }, { bytesPerSecond: 300_000 })
    const s = await start({
      producerBrokerAt: slow,
      producerEnv: {
        PUBLISH_MAX_IN_FLIGHT: String(inFlight),
        PUBLISH_TIMEOUT_MS: '1000',
        // A small heap makes V8 collect promptly, so that RSS shows what is retained, not
        // garbage not yet collected; what amqplib buffers lives outside the heap anyway.
        NODE_OPTIONS: '--max-old-space-size=48',
        BODY_LIMIT_BYTES: String(2 * eventBytes),
      },
    })
    const pid = s.producer?.child.pid as number
    const big = (i: number) => ({ ...event(i), metadata: { i, blob: 'x'.repeat(eventBytes) } })
    // Measured from the first second under load: by then the heap holds its working set (parsed
    // schemas, compiled code, one round of requests), which at start it did not; what a slow
    // broker must not do is grow it after that.
    let rssUnderLoad = 0
    let rssPeak = 0
    const outcomes: PostOutcome[] = []
    let posting = true
    let i = 0
    const samples: number[] = []
    const sampler = setInterval(() => {
      const rss = rssBytes(pid)
      samples.push(Math.round(rss / 2 ** 20))
      rssUnderLoad ||= rss
      rssPeak = Math.max(rssPeak, rss)
    }, 1000)
    const clients = Array.from({ length: 128 }, async () => {
      while (posting) {
        const outcome = await s.post(big(i++))
        outcomes.push(outcome)
        // A client that honours Retry-After, as the README asks.
        if (outcome.status === 503) await new Promise((resolve) => setTimeout(resolve, 1000))
      }
    })
    await new Promise((resolve) => setTimeout(resolve, 12_000))
    posting = false
    await Promise.all(clients)
    clearInterval(sampler)

    const statuses = new Map<string, number>()
    for (const o of outcomes) statuses.set(String(o.status), (statuses.get(String(o.status)) ?? 0) + 1)
    const failed = outcomes.filter((o) => o.status === 500 || o.status === 503)
    const growthMb = (rssPeak - rssUnderLoad) / 2 ** 20
    report('slow broker', {
      outcomes: Object.fromEntries(statuses),
      rssUnderLoadMb: Math.round(rssUnderLoad / 2 ** 20),
      rssGrowthMb: Math.round(growthMb),
      boundMb: Math.round((inFlight * eventBytes) / 2 ** 20),
      samples,
    })
    expect([...statuses.keys()].every((status) => ['202', '500', '503'].includes(status))).toBe(true)
    expect(failed.filter((o) => typeof o.eventId !== 'string')).toEqual([])
    expect(failed.filter((o) => o.status === 503 && o.retryAfter !== '1')).toEqual([])
    // The cap's worth of buffered events is 6 MB; unbounded, it grew by more than 130 MB in 12 s.
    // Bounded, the samples after the first stay within a few MB of it.
    expect(growthMb).toBeLessThan(24)
    const result = await s.settle(acceptedIds(outcomes), 120_000)
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.countsDrift).toEqual([])
  })

  it('oversized row: dead-lettered with its reason, the rest stored, the consumer keeps going', async () => {
    // A server limit small enough for a valid event to exceed it once SQL-escaped; set before
    // the consumer connects, restored after (this file runs alone).
    const admin = await connectDatabase()
    const [[limit]] = (await admin.query('SELECT @@GLOBAL.max_allowed_packet AS bytes')) as unknown as [
      { bytes: number }[],
    ]
    await admin.query('SET GLOBAL max_allowed_packet = 1048576')
    try {
      const s = await start({ producerEnv: { BODY_LIMIT_BYTES: String(4 * 2 ** 20) } })
      // 700 KB of quotes: 1.4 MB as JSON, 2.8 MB in the INSERT.
      const oversized = { ...event(0), metadata: { quotes: '"'.repeat(700_000) } }
      const outcomes = await s.postMany(50, 8, (i) => event(i + 1))
      const big = await s.post(oversized)
      outcomes.push(...(await s.postMany(50, 8, (i) => event(i + 100))))
      expect(big.status).toBe(202)
      const result = await s.settle(acceptedIds(outcomes))
      await waitFor(async () => (await s.queueDepth()).dead === 1, { what: 'the oversized event dead-lettered' })
      const health = await s.health(s.consumerHealth)
      report('oversized row', { ...summary(result), deadLettered: 1, health })
      expect(result.missing).toEqual([])
      expect(result.stored).toBe(100)
      expect(health.status).toBe(200)
    } finally {
      await admin.query('SET GLOBAL max_allowed_packet = ?', [limit?.bytes])
      await admin.end()
    }
  })

  it('poison messages: the valid ones stored, the poison ones dead-lettered, the queue empty', async () => {
    const s = await start()
    // The test's own database, narrowed so that one valid-looking event is refused by it.
    const connection = await connectDatabase(s.databaseName)
    await connection.query('ALTER TABLE user_activities MODIFY event_type VARCHAR(10) NOT NULL')
    await connection.end()

    const amqp = await connectBroker()
    const channel = await amqp.createConfirmChannel()
    const refused = {
      event_id: randomUUID(),
      user_id: 1,
      event_type: 'longer_than_ten',
      timestamp: '2026-02-20T10:00:00.000Z',
      metadata: {},
      received_at: '2026-02-20T10:00:00.000Z',
    }
    const poison = [
      randomBytes(64),
      Buffer.from('{"user_id": 1, "event_type": "login"'),
      Buffer.from(JSON.stringify({ hello: 'world' })),
      Buffer.from(JSON.stringify({ ...refused, event_id: 'not-a-uuid' })),
      Buffer.from(JSON.stringify(refused)),
    ]
    const outcomes: PostOutcome[] = []
    try {
      for (const [i, bad] of poison.entries()) {
        outcomes.push(...(await s.postMany(20, 4, (j) => ({ ...event(i * 100 + j), event_type: 'ok' }))))
        channel.publish('', s.queue, bad, messageProperties(randomUUID()))
        await channel.waitForConfirms()
      }
      outcomes.push(...(await s.postMany(20, 4, (j) => ({ ...event(1000 + j), event_type: 'ok' }))))
    } finally {
      await amqp.close()
    }

    const accepted = acceptedIds(outcomes)
    const result = await s.settle(accepted)
    await waitFor(async () => (await s.queueDepth()).dead === poison.length, { what: 'the poison dead-lettered' })
    const depth = await s.queueDepth()
    report('poison messages', { valid: accepted.size, poison: poison.length, ...summary(result), ...depth })
    expect(accepted.size).toBe(120)
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.countsDrift).toEqual([])
    expect(result.stored).toBe(120)
    expect(depth).toEqual({ ready: 0, dead: poison.length })
  })

  it('producer SIGTERM under load: exit 0; every 202 stored; the rest refused or failed visibly', async () => {
    const s = await start()
    const outcomes: PostOutcome[] = []
    let posting = true
    let i = 0
    // 56 clients post single events, 8 post batches of 20.
    const clients = Array.from({ length: 64 }, async (_, client) => {
      while (posting) {
        const outcome =
          client < 56 ? await s.post(event(i++)) : await s.postBatch(Array.from({ length: 20 }, () => event(i++)))
        outcomes.push(outcome)
        if (outcome.status === 'error') await new Promise((resolve) => setTimeout(resolve, 20))
      }
    })
    await waitFor(() => outcomes.length > 2000, { what: 'load under way' })
    const exitCode = await s.producer?.stop()
    await new Promise((resolve) => setTimeout(resolve, 500))
    posting = false
    await Promise.all(clients)

    const accepted = acceptedIds(outcomes)
    const statuses = new Map<string, number>()
    for (const o of outcomes) statuses.set(String(o.status), (statuses.get(String(o.status)) ?? 0) + 1)
    const result = await s.settle(accepted)
    report('producer SIGTERM', { exitCode, outcomes: Object.fromEntries(statuses), ...summary(result) })
    expect(exitCode).toBe(0)
    expect([...statuses.keys()].every((status) => ['202', '503', '500', 'error'].includes(status))).toBe(true)
    expect(statuses.get('error')).toBeGreaterThan(0) // refused once it stopped listening
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.countsDrift).toEqual([])
  })

  it('client retries: one event_id posted 5 times concurrently is stored once', async () => {
    const s = await start()
    const eventIds = Array.from({ length: 20 }, () => randomUUID())
    const outcomes = await Promise.all(
      eventIds.flatMap((eventId, i) => Array.from({ length: 5 }, () => s.post({ ...event(i), event_id: eventId }))),
    )
    const accepted = acceptedIds(outcomes)
    const result = await s.settle(accepted)
    report('client retries', { posts: outcomes.length, distinct: eventIds.length, ...summary(result) })
    expect(outcomes.every((o) => o.status === 202)).toBe(true)
    expect(accepted).toEqual(new Set(eventIds))
    expect(result.stored).toBe(eventIds.length)
    expect(result.duplicated).toEqual([])
    expect(result.countsDrift).toEqual([])
  })

  it('hostile input: 2,000+ malformed requests get a documented 4xx, nothing is queued, health stays', async () => {
    const s = await start({ consumer: false })
    const requests = hostileRequests(2400)
    const outcomes: PostOutcome[] = []
    let next = 0
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < requests.length) {
          const r = requests[next++] as HostileRequest
          outcomes.push(await s.post(undefined, { raw: r.body, contentType: r.contentType }))
        }
      }),
    )
    const byStatus = new Map<string, number>()
    for (const o of outcomes) byStatus.set(String(o.status), (byStatus.get(String(o.status)) ?? 0) + 1)
    const badShape = outcomes.filter((o) => !documentedShape(o.status, o.body))
    const healthy = await s.healthy(s.producerHealth)
    const { ready } = await s.queueDepth()
    report('hostile input', { requests: outcomes.length, byStatus: Object.fromEntries(byStatus), queued: ready })
    expect(outcomes).toHaveLength(requests.length)
    expect(badShape.slice(0, 5)).toEqual([])
    expect(healthy).toBe(true)
    expect(ready).toBe(0)
  })

  it('wrong keys: 2,000 valid events with a wrong or no key all get a 401, and nothing is queued', async () => {
    const key = randomUUID()
    const s = await start({ consumer: false, producerEnv: { API_KEYS: key } })
    const wrong = (i: number): Record<string, string> =>
      [
        {},
        { authorization: `Bearer ${key}x` },
        { 'x-api-key': key.toUpperCase() },
        { authorization: `Basic ${Buffer.from(`${key.slice(1)}:`).toString('base64')}` },
        { authorization: key },
      ][i % 5] as Record<string, string>
    const statuses = new Map<number, number>()
    let next = 0
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < 2000) {
          const i = next++
          const res = await fetch(`${s.api}/api/v1/events/track`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...wrong(i) },
            body: JSON.stringify(event(i)),
          })
          await res.arrayBuffer()
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
        }
      }),
    )
    const { ready } = await s.queueDepth()
    report('wrong keys', { requests: 2000, byStatus: Object.fromEntries(statuses), queued: ready })
    expect(Object.fromEntries(statuses)).toEqual({ 401: 2000 })
    expect(ready).toBe(0)
    expect((await s.post(event(0), { headers: { authorization: `Bearer ${key}` } })).status).toBe(202)
  })

  // --- The producer's budgets and bounded waits (issue 18, holes 5 and 6) ---

  it('stalled Redis: SIGSTOPped rate-limit store fails open within a bound, counted and logged', async () => {
    const port = await freePort()
    const redis = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      {
        stdio: 'ignore',
      },
    )
    const redisExited = new Promise((resolve) => redis.once('exit', resolve))
    try {
      await waitFor(() => tcpAnswers(port), { what: 'the private redis-server' })
      const s = await start({
        consumer: false,
        producerEnv: { RATE_LIMIT_MAX: '1000000', RATE_LIMIT_REDIS_URL: `redis://127.0.0.1:${port}` },
      })
      const timed = async (path: string, body?: unknown) => {
        const started = Date.now()
        try {
          const res = await fetch(`${s.api}${path}`, {
            method: body === undefined ? 'GET' : 'POST',
            headers: { 'content-type': 'application/json' },
            body: body === undefined ? undefined : JSON.stringify(body),
            signal: AbortSignal.timeout(3000),
          })
          await res.arrayBuffer()
          return { status: res.status as number | 'no answer', ms: Date.now() - started }
        } catch {
          return { status: 'no answer' as const, ms: Date.now() - started }
        }
      }
      expect((await timed('/api/v1/events/track', event(0))).status).toBe(202)
      const errorsBefore = metricValue(
        await (await fetch(`${s.api}/metrics`)).text(),
        'producer_rate_limit_store_errors_total',
      )

      redis.kill('SIGSTOP')
      let stalled: { status: number | 'no answer'; ms: number }[] = []
      let health: { status: number | 'no answer'; ms: number }
      try {
        let next = 0
        await Promise.all(
          Array.from({ length: 32 }, async () => {
            while (next < 400) stalled.push(await timed('/api/v1/events/track', event(next++)))
          }),
        )
        health = await timed('/health')
      } finally {
        redis.kill('SIGCONT')
      }
      const errorsAfter = metricValue(
        await (await fetch(`${s.api}/metrics`)).text(),
        'producer_rate_limit_store_errors_total',
      )
      // Redis back: requests are counted again (once the connection dropped meanwhile is ready).
      const storeErrors = async () =>
        metricValue(await (await fetch(`${s.api}/metrics`)).text(), 'producer_rate_limit_store_errors_total') ?? 0
      const resumedAfterMs = Date.now()
      await waitFor(
        async () => {
          const errors = await storeErrors()
          return (await timed('/api/v1/events/track', event(1000))).status === 202 && (await storeErrors()) === errors
        },
        { what: 'requests counted in Redis again', timeoutMs: 5000, intervalMs: 100 },
      )
      const resumed = { afterMs: Date.now() - resumedAfterMs }
      const byStatus = new Map<string, number>()
      for (const o of stalled) byStatus.set(String(o.status), (byStatus.get(String(o.status)) ?? 0) + 1)
      const ms = stalled.map((o) => o.ms).sort((a, b) => a - b)
      stalled = stalled.filter((o) => o.status !== 202)
      report('stalled Redis', {
        requests: ms.length,
        byStatus: Object.fromEntries(byStatus),
        p50Ms: ms[Math.floor(ms.length / 2)],
        maxMs: ms[ms.length - 1],
        health,
        storeErrors: (errorsAfter ?? 0) - (errorsBefore ?? 0),
        resumed,
      })
      expect(stalled).toEqual([])
      // The store's timeout is 100 ms; the rest is the machine's load.
      expect(ms[ms.length - 1]).toBeLessThan(1500)
      expect(health.status).toBe(200)
      expect(health.ms).toBeLessThan(1000)
      expect((errorsAfter ?? 0) - (errorsBefore ?? 0)).toBe(400)
      expect(s.producer?.output()).toContain('the rate-limit store (Redis) did not answer in time')
    } finally {
      redis.kill('SIGCONT')
      redis.kill('SIGKILL')
      await redisExited
    }
  })

  it('slow link: a 1 MiB batch over 150 KB/s gets its 202 on a retry, the connection kept', async () => {
    const slow = await proxyTo({ host: broker.host, port: broker.port }, { bytesPerSecond: 150_000 })
    const s = await start({ producerBrokerAt: slow })
    // 1,000 events of about 1 KB: just under the 1 MiB body limit, 1.1 MB as a message.
    const events = Array.from({ length: 1000 }, (_, i) => ({ ...event(i), metadata: { i, blob: 'x'.repeat(880) } }))
    const attempts: { status: number | 'error'; ms: number }[] = []
    let outcome: PostOutcome | undefined
    const deadline = Date.now() + 45_000
    while (Date.now() < deadline) {
      const started = Date.now()
      outcome = await s.postBatch(events)
      attempts.push({ status: outcome.status, ms: Date.now() - started })
      if (outcome.status === 202) break
      // A client resends the same event_ids, as the README asks.
      const ids = outcome.eventIds
      if (ids) ids.forEach((id, i) => Object.assign(events[i] as object, { event_id: id }))
    }
    const reconnects = (s.producer?.output().match(/lost the RabbitMQ connection/g) ?? []).length
    report('slow link', { attempts, reconnects })
    expect(outcome?.status).toBe(202)
    expect(reconnects).toBe(0)
    const result = await s.settle(new Set(outcome?.eventIds))
    expect(result.stored).toBe(1000)
    expect(result.duplicated).toEqual([])
    expect(result.countsDrift).toEqual([])
  })

  it('slow broker, as shipped: 64 clients of 60 KB events through 300 KB/s keep the producer under 160 MB', async () => {
    const slow = await proxyTo({ host: broker.host, port: broker.port }, { bytesPerSecond: 300_000 })
    const s = await start({
      producerBrokerAt: slow,
      producerEnv: { NODE_OPTIONS: shippedNodeOptions('producer-service') },
    })
    const pid = s.producer?.child.pid as number
    const big = (i: number) => ({ ...event(i), metadata: { i, blob: 'x'.repeat(60 * 1024) } })
    const samples: number[] = []
    const sampler = setInterval(() => samples.push(Math.round(rssBytes(pid) / 2 ** 20)), 500)
    const outcomes: PostOutcome[] = []
    let posting = true
    let i = 0
    const clients = Array.from({ length: 64 }, async () => {
      while (posting) {
        const outcome = await s.post(big(i++))
        outcomes.push(outcome)
        if (outcome.status === 503) await new Promise((resolve) => setTimeout(resolve, 1000))
      }
    })
    // 60 s: long enough for the bytes awaiting confirms to reach their budget.
    await new Promise((resolve) => setTimeout(resolve, 60_000))
    posting = false
    await Promise.all(clients)
    clearInterval(sampler)
    const statuses = new Map<string, number>()
    for (const o of outcomes) statuses.set(String(o.status), (statuses.get(String(o.status)) ?? 0) + 1)
    const peakMb = Math.max(...samples)
    report('slow broker, as shipped', {
      nodeOptions: shippedNodeOptions('producer-service'),
      outcomes: Object.fromEntries(statuses),
      peakMb,
      samples,
    })
    expect([...statuses.keys()].every((status) => ['202', '500', '503'].includes(status))).toBe(true)
    expect(outcomes.filter((o) => o.status === 503 && o.retryAfter !== '1')).toEqual([])
    expect(peakMb).toBeLessThan(160)
    const result = await s.settle(acceptedIds(outcomes), 120_000)
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.countsDrift).toEqual([])
  })

  it('slow uploads: 200 stalled 1 MiB bodies held at once keep the producer under 200 MB, 503 past the budget', async () => {
    const s = await start({
      consumer: false,
      producerEnv: { NODE_OPTIONS: shippedNodeOptions('producer-service'), REQUEST_TIMEOUT_MS: '15000' },
    })
    const pid = s.producer?.child.pid as number
    const { port } = new URL(s.api)
    const rssAtStart = Math.round(rssBytes(pid) / 2 ** 20)
    const uploads = Array.from({ length: 200 }, () => slowUpload(Number(port), 1_000_010, 1_000_000))
    const samples: number[] = []
    const sampler = setInterval(() => samples.push(Math.round(rssBytes(pid) / 2 ** 20)), 500)
    const heldAt = Date.now()
    try {
      await new Promise((resolve) => setTimeout(resolve, 10_000))
    } finally {
      clearInterval(sampler)
    }
    const answeredWhileHeld = uploads.filter((u) => u.answer !== undefined)
    const refused = answeredWhileHeld.filter((u) => /^HTTP\/1\.1 503/.test(u.answer ?? ''))
    const held = {
      rssAtStartMb: rssAtStart,
      peakMb: Math.max(...samples),
      refused: refused.length,
      answeredWhileHeld: answeredWhileHeld.length,
      refusedMedianMs: refused.map((u) => u.answeredMs ?? 0).sort((a, b) => a - b)[Math.floor(refused.length / 2)],
    }
    report('slow uploads, held', held)
    expect(held.peakMb).toBeLessThan(200)
    expect(refused.length).toBeGreaterThan(100)
    for (const u of refused) {
      expect(u.answer).toMatch(/\r\nretry-after: 1\r\n/i)
      expect(u.answer).toMatch(/\r\nconnection: close\r\n/i)
    }
    // What the budget let in is cut off by the request timeout, and a normal request then gets in.
    await waitFor(() => uploads.every((u) => u.closed), {
      what: 'every upload closed',
      timeoutMs: 40_000,
      intervalMs: 200,
    })
    const closedAfterS = (Date.now() - heldAt) / 1000
    const after = await s.post(event(0))
    report('slow uploads, after', {
      closedAfterS,
      statusesAtClose: [...new Set(uploads.map((u) => (u.answer ?? 'none').split('\r\n')[0]))],
      after: after.status,
    })
    uploads.forEach((u) => u.socket.destroy())
    expect(after.status).toBe(202)
  })

  it('INSERT revoked: 25 link drops dead-letter nothing; /health failing at once; a database-level grant is seen', async () => {
    const link = await proxyTo({ host: broker.host, port: broker.port })
    const s = await start({ consumer: false, consumerBrokerAt: link, consumerEnv: { CONSUMER_RETRY_MAX_MS: '1000' } })
    const user = await createTestUser()
    try {
      await startAsOwnUser(s, user)
      const before = await s.postMany(20, 4)
      await s.settle(acceptedIds(before))

      // A table-level REVOKE reaches the running sessions at once (a database-level one would not).
      await user.grant(`REVOKE INSERT ON \`${s.databaseName}\`.user_activities FROM ??`)
      const refusedAt = Date.now()
      const outcomes = await s.postMany(100, 8, (i) => event(1000 + i))
      const failing = await untilFailing(s, refusedAt)
      const drops = await dropLink(s, link, 25)
      const deadAfterDrops = (await s.queueDepth()).dead
      // A consumer that waits for a write to succeed holds none of them after a reconnect.
      const readyAfterDrops = (await s.queueDepth()).ready
      report('INSERT revoked, before the grant', { drops, ...failing, deadAfterDrops, readyAfterDrops })
      // Restored at database level: MariaDB applies it to a session at its next USE only.
      await user.grant(`GRANT INSERT ON \`${s.databaseName}\`.* TO ??`)
      const restoredAt = Date.now()
      await waitFor(() => s.healthy(s.consumerHealth), { what: 'consumer /health 200 again', timeoutMs: 30_000 })
      const recoveredMs = Date.now() - restoredAt
      const accepted = acceptedIds([...before, ...outcomes])
      const result = await s.settle(accepted)
      const { dead } = await s.queueDepth()
      report('INSERT revoked', {
        drops,
        ...failing,
        deadAfterDrops,
        readyAfterDrops,
        recoveredMs,
        ...summary(result),
        deadLettered: dead,
      })
      expect(failing.failingAfterMs).toBeLessThan(10_000)
      expect(readyAfterDrops).toBe(acceptedIds(outcomes).size)
      expect(failing.checks).toMatchObject({ rabbitmq: 'up', mysql: 'failing', progress: 'ok' })
      expect(deadAfterDrops).toBe(0)
      expect(dead).toBe(0)
      expect(result.missing).toEqual([])
      expect(result.duplicated).toEqual([])
      expect(result.countsDrift).toEqual([])
    } finally {
      await link.restore()
      await user.drop()
    }
  })

  it('read_only: 25 link drops dead-letter nothing; /health failing at once, 200 after; all stored once', async () => {
    const link = await proxyTo({ host: broker.host, port: broker.port })
    const s = await start({ consumer: false, consumerBrokerAt: link, consumerEnv: { CONSUMER_RETRY_MAX_MS: '1000' } })
    const user = await createTestUser()
    // The shared server's read_only: root, which every other test uses, bypasses it. Short.
    const admin = await connectDatabase()
    try {
      await startAsOwnUser(s, user)
      const before = await s.postMany(20, 4)
      await s.settle(acceptedIds(before))
      let outcomes: PostOutcome[]
      let failing: Awaited<ReturnType<typeof untilFailing>>
      let drops: number
      let readyAfterDrops: number
      try {
        await admin.query('SET GLOBAL read_only = 1')
        const refusedAt = Date.now()
        outcomes = await s.postMany(100, 8, (i) => event(1000 + i))
        failing = await untilFailing(s, refusedAt)
        drops = await dropLink(s, link, 25)
        // A consumer that waits for a write to succeed holds none of them after a reconnect.
        readyAfterDrops = (await s.queueDepth()).ready
      } finally {
        await admin.query('SET GLOBAL read_only = 0')
      }
      const deadAfterDrops = (await s.queueDepth()).dead
      report('read_only, after it', { drops, ...failing, deadAfterDrops, readyAfterDrops })
      const restoredAt = Date.now()
      await waitFor(() => s.healthy(s.consumerHealth), { what: 'consumer /health 200 again', timeoutMs: 30_000 })
      const recoveredMs = Date.now() - restoredAt
      const result = await s.settle(acceptedIds([...before, ...outcomes]))
      const { dead } = await s.queueDepth()
      report('read_only', {
        drops,
        ...failing,
        deadAfterDrops,
        readyAfterDrops,
        recoveredMs,
        ...summary(result),
        deadLettered: dead,
      })
      expect(failing.failingAfterMs).toBeLessThan(10_000)
      expect(readyAfterDrops).toBe(acceptedIds(outcomes).size)
      expect(failing.checks).toMatchObject({ rabbitmq: 'up', mysql: 'failing', progress: 'ok' })
      expect(deadAfterDrops).toBe(0)
      expect(dead).toBe(0)
      expect(result.missing).toEqual([])
      expect(result.duplicated).toEqual([])
      expect(result.countsDrift).toEqual([])
    } finally {
      await admin.query('SET GLOBAL read_only = 0')
      await admin.end()
      await link.restore()
      await user.drop()
    }
  })

  it('a dropped, then renamed-away table: /health failing while it cannot be created, then created again', async () => {
    const s = await start({ consumer: false, consumerEnv: { CONSUMER_RETRY_MAX_MS: '1000' } })
    const user = await createTestUser()
    const admin = await connectDatabase(s.databaseName)
    try {
      await startAsOwnUser(s, user)
      const before = await s.postMany(20, 4)
      await s.settle(acceptedIds(before))

      // Without CREATE (new sessions see it), the consumer cannot create the table again: failing.
      await user.grant(`REVOKE CREATE ON \`${s.databaseName}\`.* FROM ??`)
      await admin.query('DROP TABLE user_activities')
      const droppedAt = Date.now()
      const dropped = await s.postMany(50, 8, (i) => event(1000 + i))
      const failing = await untilFailing(s, droppedAt)
      report('dropped table, before the grant', failing)
      await user.grant(`GRANT CREATE ON \`${s.databaseName}\`.* TO ??`)
      const grantedAt = Date.now()
      await waitFor(() => s.healthy(s.consumerHealth), { what: 'consumer /health 200 again', timeoutMs: 30_000 })
      const recoveredMs = Date.now() - grantedAt
      const afterDrop = await s.settle(acceptedIds(dropped), 30_000)

      // Renamed away, with the right to create it: created again, nothing held for long.
      await admin.query('RENAME TABLE user_activities TO user_activities_away')
      const renamed = await s.postMany(50, 8, (i) => event(2000 + i))
      const afterRename = await s.settle(acceptedIds(renamed), 30_000)
      const { dead } = await s.queueDepth()
      report('dropped table', {
        ...failing,
        recoveredMs,
        afterDrop: summary(afterDrop),
        afterRename: summary(afterRename),
      })
      expect(failing.failingAfterMs).toBeLessThan(10_000)
      expect(failing.checks?.mysql).toBe('failing')
      expect(afterDrop.missing).toEqual([])
      expect(afterDrop.duplicated).toEqual([])
      expect(afterRename.missing).toEqual([])
      expect(afterRename.stored).toBe(50)
      expect(dead).toBe(0)
    } finally {
      await admin.end()
      await user.drop()
    }
  })

  it('max_allowed_packet raised after a too-large dead letter: the replay stores it, no restart', async () => {
    const admin = await connectDatabase()
    const [[limit]] = (await admin.query('SELECT @@GLOBAL.max_allowed_packet AS bytes')) as unknown as [
      { bytes: number }[],
    ]
    const original = Number(limit?.bytes)
    // Lowered before the consumer connects (its sessions take it), restored after.
    await admin.query('SET GLOBAL max_allowed_packet = 1048576')
    try {
      const s = await start({ producerEnv: { BODY_LIMIT_BYTES: String(4 * 2 ** 20) } })
      // 700 KB of quotes: 1.4 MB as JSON, 2.8 MB in the INSERT.
      const big = await s.post({ ...event(0), metadata: { quotes: '"'.repeat(700_000) } })
      expect(big.status).toBe(202)
      await waitFor(async () => (await s.queueDepth()).dead === 1, { what: 'the oversized event dead-lettered' })

      await admin.query('SET GLOBAL max_allowed_packet = ?', [Math.max(original, 16 * 2 ** 20)])
      const replay = execFileSync(process.execPath, [dlqCli, 'replay'], {
        env: { ...process.env, ...brokerEnv(s.queue) },
        encoding: 'utf8',
        timeout: 30_000,
      })
      let stored = false
      try {
        await s.settle(acceptedIds([big]), 20_000)
        stored = true
      } catch (err) {
        console.log(`[faults] max_allowed_packet raised: not stored (${(err as Error).message})`)
      }
      await waitFor(async () => (await s.queueDepth()).ready === 0, { what: 'the replayed letter taken' })
      const { dead } = await s.queueDepth()
      report('max_allowed_packet raised', { replay: replay.trim(), stored, deadLetteredAfterReplay: dead })
      expect(stored).toBe(true)
      expect(dead).toBe(0)
    } finally {
      await admin.query('SET GLOBAL max_allowed_packet = ?', [original])
      await admin.end()
    }
  })
})

/**
 * A raw HTTP client that declares `declared` body bytes, sends `sent` of them at once and then
 * stalls; it records the answer's head and when the server closed the socket.
 */
function slowUpload(port: number, declared: number, sent: number) {
  const started = Date.now()
  const socket = net.connect(port, '127.0.0.1')
  const upload: { socket: net.Socket; answer?: string; answeredMs?: number; closed: boolean } = {
    socket,
    closed: false,
  }
  let received = ''
  socket.on('data', (chunk) => {
    received += chunk.toString('latin1')
    if (upload.answer === undefined && received.includes('\r\n\r\n')) {
      upload.answer = received.slice(0, received.indexOf('\r\n\r\n') + 2)
      upload.answeredMs = Date.now() - started
    }
  })
  socket.on('error', () => {}) // a reset is how a refused upload may end: `closed` tells
  socket.on('close', () => {
    upload.closed = true
  })
  socket.on('connect', () => {
    socket.write(
      `POST /api/v1/events/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${declared}\r\n\r\n`,
    )
    const body = Buffer.alloc(sent, ' ')
    body.write('{"batch":[')
    socket.write(body)
  })
  return upload
}

/** Whether something listens on 127.0.0.1:port. */
function tcpAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

const schemaFile = new URL('../db/init.sql', import.meta.url)
const dlqCli = fileURLToPath(new URL('../consumer-service/dist/dlq.js', import.meta.url))

function brokerEnv(queue: string) {
  return {
    RABBITMQ_HOST: broker.host,
    RABBITMQ_PORT: String(broker.port),
    RABBITMQ_USER: broker.user,
    RABBITMQ_PASS: broker.pass,
    RABBITMQ_QUEUE: queue,
  }
}

/**
 * Starts the consumer as a user of the test's own (root bypasses read_only): rights on the
 * test's database, but INSERT on the tables only, so that a REVOKE of it takes effect at once.
 */
async function startAsOwnUser(s: System, user: Awaited<ReturnType<typeof createTestUser>>) {
  // The schema is several statements.
  const connection = await mysql.createConnection({ ...database, database: s.databaseName, multipleStatements: true })
  try {
    await connection.query(await readFile(schemaFile, 'utf8'))
  } finally {
    await connection.end()
  }
  await user.grant(`GRANT SELECT, UPDATE, CREATE ON \`${s.databaseName}\`.* TO ??`)
  await user.grant(`GRANT INSERT ON \`${s.databaseName}\`.user_activities TO ??`)
  await user.grant(`GRANT INSERT ON \`${s.databaseName}\`.user_activity_counts TO ??`)
  await s.startConsumer({ MYSQL_USER: user.user, MYSQL_PASSWORD: user.password })
}

/** How long after `since` the consumer's /health said 503 with mysql failing (at most 15 s). */
async function untilFailing(s: System, since: number) {
  const deadline = Date.now() + 15_000
  let last: Awaited<ReturnType<System['health']>> = { status: 'down' }
  while (Date.now() < deadline) {
    last = await s.health(s.consumerHealth)
    if (last.status === 503 && last.checks?.mysql === 'failing') {
      return { failingAfterMs: Date.now() - since, checks: last.checks }
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return { failingAfterMs: Infinity, checks: last.checks, status: last.status }
}

/**
 * Cuts the consumer's broker link `drops` times, each until it noticed and reconnected, then
 * waits a second: a consumer that takes deliveries again holds the whole queue by then (its
 * prefetch starts small and grows), so each drop counts one delivery of every event.
 */
async function dropLink(s: System, link: TcpProxy, drops: number) {
  for (let i = 0; i < drops; i++) {
    await link.cut()
    await waitFor(async () => (await s.health(s.consumerHealth)).checks?.rabbitmq === 'down', {
      what: 'the consumer to notice the link drop',
    })
    await link.restore()
    await waitFor(async () => (await s.health(s.consumerHealth)).checks?.rabbitmq === 'up', {
      what: 'the consumer to reconnect',
      timeoutMs: 15_000,
    })
    await new Promise((resolve) => setTimeout(resolve, 1000))
  }
  return drops
}

function summary(result: { accepted: number; stored: number; missing: string[]; duplicated: string[] }) {
  return {
    accepted: result.accepted,
    rows: result.stored,
    missing: result.missing.length,
    duplicated: result.duplicated.length,
  }
}

interface HostileRequest {
  body: string | Buffer
  contentType: string
}

/** Every answer to garbage is a 4xx in the documented shape. */
function documentedShape(status: number | 'error', body: unknown): boolean {
  if (status === 400) {
    const b = body as { detail?: unknown; message?: unknown }
    return (
      b.message === 'Invalid UserActivityEvent payload' &&
      Array.isArray(b.detail) &&
      b.detail.length > 0 &&
      b.detail.every(
        (d: { loc?: unknown; msg?: unknown; type?: unknown }) =>
          Array.isArray(d.loc) && d.loc[0] === 'body' && typeof d.msg === 'string' && typeof d.type === 'string',
      )
    )
  }
  if (status === 413 || status === 415) {
    const b = body as { detail?: unknown; message?: unknown }
    return typeof b.detail === 'string' && typeof b.message === 'string'
  }
  return false
}

/** Deterministic garbage: a seeded generator, so a failure can be replayed. */
function hostileRequests(count: number): HostileRequest[] {
  let seed = 0x5eed
  const random = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed / 0x7fffffff
  }
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)] as T
  const valid = { user_id: 1, event_type: 'login', timestamp: '2026-02-20T10:00:00Z' }
  const json = (value: unknown) => ({ body: JSON.stringify(value), contentType: 'application/json' })
  const deep = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth)
  const generators: (() => HostileRequest)[] = [
    () => ({ body: randomBytes(1 + Math.floor(random() * 2000)), contentType: 'application/json' }),
    () => ({ body: randomBytes(200), contentType: pick(['text/plain', 'application/xml', 'multipart/form-data']) }),
    () => ({ body: JSON.stringify(valid), contentType: pick(['text/html', 'application/x-www-form-urlencoded']) }),
    () => json({ ...valid, user_id: pick([0, -1, 2147483648, 1.5, '1', null, true, [], {}, 1e308]) }),
    () => json({ ...valid, event_type: pick(['', 'x'.repeat(51), 7, null, 'a\u0000b', ['x'], '\ud800']) }),
    () =>
      json({ ...valid, timestamp: pick(['2026-02-30T10:00:00Z', 'now', 0, '2026-02-20T25:00:00Z', '99999-01-01']) }),
    () => json({ ...valid, metadata: pick([[], 'x', 3, true]) }),
    () => ({
      body: JSON.stringify({ ...valid }).replace('}', `,"metadata":${deep(100 + Math.floor(random() * 5000))}}`),
      contentType: 'application/json',
    }),
    () => json({ ...valid, metadata: { big: 'x'.repeat(70_000 + Math.floor(random() * 100_000)) } }),
    () => json(pick([[], 'text', 42, null, {}, [valid]])),
    () => json({ ...valid, event_id: pick(['x', '', 5, randomUUID().slice(1)]) }),
    () => ({ body: deep(20_000), contentType: 'application/json' }),
    () => ({ body: '{"user_id":1,"__proto__":{"polluted":true}}', contentType: 'application/json' }),
    () => ({ body: '', contentType: 'application/json' }),
  ]
  return Array.from({ length: count }, (_, i) => (generators[i % generators.length] as () => HostileRequest)())
}
