// Integration: the built producer as a process (configuration at boot, shutdown on SIGTERM).
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ChannelModel } from 'amqplib'
import { deleteTopology, topologyFor } from 'event-contract'
import { broker, connectBroker, uniqueName, waitFor } from '../../test-support/index.js'
import { freePort, spawnService, terminatedAtStart } from '../../test-support/process.js'

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url))

const run = (env: Record<string, string>) => spawnService(main, env)

describe('configuration', () => {
  it.each([
    ['PORT', 'eighty'],
    ['RABBITMQ_PORT', '70000'],
    ['RABBITMQ_QUEUE_TYPE', 'stream'],
    ['PUBLISH_TIMEOUT_MS', '-5'],
    ['PUBLISH_TIMEOUT_MS', '9000'], // past the 10 s shutdown grace, with the close around it
    ['PORT', '0'],
    ['METRICS_ENABLED', 'maybe'],
    ['PUBLISH_MAX_IN_FLIGHT_BYTES', '1000'],
    ['BODY_MAX_IN_FLIGHT_BYTES', '-1'],
    ['BODY_MAX_IN_FLIGHT_BYTES', '65536'], // under the 1 MiB batch body limit: such a batch would never fit
    ['PUBLISH_MAX_IN_FLIGHT_BYTES', '1048576'], // under the largest batch as queue messages (1,214,464)
    ['REQUEST_TIMEOUT_MS', '10'],
    ['HEADERS_TIMEOUT_MS', 'soon'],
    ['RATE_LIMIT_REDIS_TIMEOUT_MS', '0'],
  ])('exits 1 naming %s when it is %j', async (name, value) => {
    const proc = run({ [name]: value })
    expect(await proc.exited).toBe(1)
    expect(proc.output()).toContain(`${name}=${JSON.stringify(value)}`)
  })
})

describe('SIGTERM', () => {
  const queue = uniqueName('producer_main')
  let admin: ChannelModel

  beforeAll(async () => {
    admin = await connectBroker()
  })
  afterAll(async () => {
    const channel = await admin.createChannel()
    await deleteTopology(channel, topologyFor(queue, 'quorum'))
    await admin.close()
  })

  it('exits 0 on a SIGTERM while it is still starting up', async () => {
    const env = { RABBITMQ_HOST: broker.host, RABBITMQ_PORT: String(broker.port), RABBITMQ_QUEUE: queue }
    const { code, signal, output } = await terminatedAtStart(main, { ...env, PORT: String(await freePort()) })
    expect({ code, signal }, output).toEqual({ code: 0, signal: null })
    expect(output).toContain('"msg":"shutting down"')
  })

  it('finishes in-flight requests, then exits 0', async () => {
    const port = 18000 + Math.floor(Math.random() * 1000)
    const proc = run({
      RABBITMQ_HOST: broker.host,
      RABBITMQ_PORT: String(broker.port),
      RABBITMQ_QUEUE: queue,
      PORT: String(port),
      HOST: '127.0.0.1',
    })
    const url = `http://127.0.0.1:${port}`
    await waitFor(async () => (await fetch(`${url}/health`)).ok, { what: 'the producer to be healthy' })

    const body = JSON.stringify({ user_id: 1, event_type: 'login', timestamp: '2026-02-20T10:00:00Z' })
    const requests = Array.from({ length: 100 }, () =>
      fetch(`${url}/api/v1/events/track`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      }).then(
        (r) => r.status,
        () => 'refused',
      ),
    )
    proc.child.kill('SIGTERM')
    const outcomes = await Promise.all(requests)
    expect(await proc.exited).toBe(0)

    // Every request was answered or refused visibly, and every 202 is on the queue.
    expect(outcomes.every((o) => o === 202 || o === 503 || o === 'refused')).toBe(true)
    const accepted = outcomes.filter((o) => o === 202).length
    const channel = await admin.createChannel()
    expect((await channel.checkQueue(queue)).messageCount).toBe(accepted)
    await channel.close()
  })

  it('cuts a client still trickling its body, closes the broker connection and exits 0 within 10 s', async () => {
    const port = await freePort()
    const proc = run({
      RABBITMQ_HOST: broker.host,
      RABBITMQ_PORT: String(broker.port),
      RABBITMQ_QUEUE: queue,
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
    })
    await waitFor(() => proc.output().includes('"msg":"Server listening'), { what: 'listening', timeoutMs: 20_000 })
    // A body announced as 200 bytes that arrives one byte every 500 ms: never answered 202.
    const client = net.connect(port, '127.0.0.1')
    client.on('error', () => {}) // the producer cuts it: that is the point
    await new Promise((resolve) => client.once('connect', resolve))
    client.write(
      'POST /api/v1/events/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        'Content-Length: 200\r\n\r\n{"user_id":',
    )
    const drip = setInterval(() => client.write(' '), 500)
    try {
      await new Promise((resolve) => setTimeout(resolve, 1000))
      const stoppedAt = Date.now()
      proc.child.kill('SIGTERM')
      const code = await proc.exited
      const ms = Date.now() - stoppedAt
      expect({ code, within10s: ms < 10_000 }, proc.output()).toEqual({ code: 0, within10s: true })
      expect(proc.output()).toContain('"msg":"cut requests still sending their body at close"')
      expect(proc.output()).toContain('"msg":"RabbitMQ connection closed"')
    } finally {
      clearInterval(drip)
      client.destroy()
    }
  })
})
