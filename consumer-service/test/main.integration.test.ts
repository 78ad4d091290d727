// Integration: the built consumer as a process (configuration at boot, SIGTERM while draining).
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ChannelModel } from 'amqplib'
import type { RowDataPacket } from 'mysql2/promise'
import { assertTopology, deleteTopology, messageProperties, topologyFor } from 'event-contract'
import { broker, connectBroker, TcpProxy, uniqueName, waitFor } from '../../test-support/index.js'
import { freePort, spawnService, terminatedAtStart } from '../../test-support/process.js'
import { connectDatabase, createTestDatabase, database } from '../../test-support/database.js'

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url))

const run = (env: Record<string, string>) => spawnService(main, env)

/** The consumer's environment for a queue and a database of the test's own. */
function serviceEnv(queue: string, databaseName: string, healthPort: number): Record<string, string> {
  return {
    RABBITMQ_HOST: broker.host,
    RABBITMQ_PORT: String(broker.port),
    RABBITMQ_QUEUE: queue,
    MYSQL_HOST: database.host,
    MYSQL_PORT: String(database.port),
    MYSQL_USER: database.user,
    MYSQL_PASSWORD: database.password,
    MYSQL_DATABASE: databaseName,
    HEALTH_HOST: '127.0.0.1',
    HEALTH_PORT: String(healthPort),
  }
}

/** A message as the producer publishes it. */
function queued(userId: number) {
  return {
    event_id: randomUUID(),
    user_id: userId,
    event_type: 'page_view',
    timestamp: '2026-02-20T10:00:00.000Z',
    metadata: {},
    received_at: '2026-02-20T10:00:00.000Z',
  }
}

describe('configuration', () => {
  it.each([
    ['HEALTH_PORT', 'x'],
    ['HEALTH_PORT', '0'],
    ['METRICS_ENABLED', 'maybe'],
    ['CONSUMER_STALL_TIMEOUT_MS', '10'],
    ['MYSQL_PORT', '0'],
    ['CONSUMER_BATCH_SIZE', '0'],
    ['CONSUMER_BATCH_WAIT_MS', 'soon'],
    ['RABBITMQ_QUEUE_TYPE', 'lazy'],
    ['RETENTION_DAYS', '0'],
    ['RETENTION_DAYS', '-30'],
    ['RETENTION_DAYS', 'a month'],
    ['LIFECYCLE_INTERVAL_MS', '10'],
  ])('exits 1 naming %s when it is %j', async (name, value) => {
    const proc = run({ [name]: value })
    expect(await proc.exited).toBe(1)
    expect(proc.output()).toContain(`${name}=${JSON.stringify(value)}`)
  })
})

describe('SIGTERM while draining', () => {
  const queue = uniqueName('consumer_main')
  let admin: ChannelModel
  let db: Awaited<ReturnType<typeof createTestDatabase>>

  beforeAll(async () => {
    admin = await connectBroker()
    db = await createTestDatabase()
  })
  afterAll(async () => {
    const channel = await admin.createChannel()
    await deleteTopology(channel, topologyFor(queue, 'quorum'))
    await admin.close()
    await db.drop()
  })

  async function count(): Promise<{ rows: number; distinct: number }> {
    const connection = await connectDatabase(db.name)
    try {
      const [result] = await connection.query<RowDataPacket[]>(
        'SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM user_activities',
      )
      return { rows: Number(result[0]?.n), distinct: Number(result[0]?.d) }
    } finally {
      await connection.end()
    }
  }

  it('exits 0 on a SIGTERM while it is still starting up', async () => {
    const { code, signal, output } = await terminatedAtStart(main, serviceEnv(queue, db.name, await freePort()))
    expect({ code, signal }, output).toEqual({ code: 0, signal: null })
    expect(output).toContain('"msg":"shutting down"')
  })

  it('acks what it stored, exits 0 within 10 s, and a restart stores the rest once', async () => {
    const env = serviceEnv(queue, db.name, await freePort())
    const channel = await admin.createConfirmChannel()
    await assertTopology(channel, topologyFor(queue, 'quorum'))
    const total = 20_000
    for (let i = 0; i < total; i++) {
      const e = queued(i + 1)
      channel.publish('', queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
    }
    await channel.waitForConfirms()
    await channel.close()

    const first = run(env)
    await waitFor(async () => (await count()).rows > 0, { what: 'the first rows', intervalMs: 10 })
    const stoppedAt = Date.now()
    first.child.kill('SIGTERM')
    expect(await first.exited).toBe(0)
    expect(Date.now() - stoppedAt).toBeLessThan(10_000)

    const afterStop = await count()
    expect(afterStop.distinct).toBe(afterStop.rows)
    expect(afterStop.rows).toBeLessThan(total) // it stopped mid-drain
    // Its final acks reached the broker: the queue holds exactly what was not stored.
    const depth = async () => {
      const ch = await admin.createChannel()
      const { messageCount } = await ch.checkQueue(queue)
      await ch.close()
      return messageCount
    }
    await waitFor(async () => (await depth()) >= total - afterStop.rows, { what: 'the unacked requeued' })
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(await depth()).toBe(total - afterStop.rows)

    const second = run(env)
    await waitFor(async () => (await count()).rows === total, { what: `${total} rows`, timeoutMs: 30_000 })
    second.child.kill('SIGTERM')
    expect(await second.exited).toBe(0)
    expect(await count()).toEqual({ rows: total, distinct: total })
  })
})

describe('start-up before the database exists', () => {
  const queue = uniqueName('consumer_start')
  const databaseName = uniqueName('not_yet')
  let admin: ChannelModel

  beforeAll(async () => {
    admin = await connectBroker()
  })
  afterAll(async () => {
    const channel = await admin.createChannel()
    await deleteTopology(channel, topologyFor(queue, 'quorum'))
    await admin.close()
    const connection = await connectDatabase()
    await connection.query(`DROP DATABASE IF EXISTS \`${databaseName}\``)
    await connection.end()
  })

  it('connects to RabbitMQ at once, names the database on /health, and consumes once it exists', async () => {
    const healthPort = await freePort()
    const proc = run({
      ...serviceEnv(queue, databaseName, healthPort),
      CONSUMER_RETRY_MAX_MS: '200',
      LOG_LEVEL: 'info',
    })
    const health = async () => {
      const res = await fetch(`http://127.0.0.1:${healthPort}/health`)
      return { status: res.status, body: (await res.json()) as { checks: Record<string, string> } }
    }
    try {
      await waitFor(async () => (await health()).body.checks.rabbitmq === 'up', { what: 'rabbitmq up' })
      expect(await health()).toEqual({
        status: 503,
        body: { status: 'unhealthy', checks: { rabbitmq: 'up', mysql: 'down', progress: 'ok', dlq: 'ok' } },
      })

      const connection = await connectDatabase()
      await connection.query(`CREATE DATABASE \`${databaseName}\``)
      await connection.end()
      await waitFor(async () => (await health()).status === 200, { what: '/health 200', timeoutMs: 15_000 })
      const channel = await admin.createConfirmChannel()
      const e = queued(1)
      channel.publish('', queue, Buffer.from(JSON.stringify(e)), messageProperties(e.event_id))
      await channel.waitForConfirms()
      await channel.close()
      await waitFor(
        async () => {
          const db = await connectDatabase(databaseName)
          try {
            const [rows] = await db.query<RowDataPacket[]>('SELECT event_id FROM user_activities')
            return rows.length === 1
          } finally {
            await db.end()
          }
        },
        { what: 'the row' },
      )
    } finally {
      proc.child.kill('SIGTERM')
    }
    expect(await proc.exited).toBe(0)

    const lines = proc
      .output()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
    const index = (msg: string) => lines.findIndex((line) => line.msg === msg)
    // Where it stores, never the password.
    expect(lines[index('starting')]?.mysql).toEqual({
      host: database.host,
      port: database.port,
      database: databaseName,
      user: database.user,
    })
    expect(index('connected to RabbitMQ')).toBeGreaterThan(-1)
    expect(index('connected to RabbitMQ')).toBeLessThan(index('consuming'))
    // Waiting for the database is said once (then every 30 s), with why, without a stack.
    const waiting = lines.filter((line) => String(line.msg).includes('waiting for the database'))
    expect(waiting).toHaveLength(1)
    expect(waiting[0]).toMatchObject({ level: 40, error: expect.stringContaining(databaseName) })
    expect(JSON.stringify(waiting)).not.toContain('stack')
  })
})

describe('SIGTERM with the broker link frozen', () => {
  const queue = uniqueName('consumer_frozen')
  let admin: ChannelModel
  let db: Awaited<ReturnType<typeof createTestDatabase>>
  let link: TcpProxy

  beforeAll(async () => {
    admin = await connectBroker()
    db = await createTestDatabase()
    link = await new TcpProxy({ host: broker.host, port: broker.port }).start()
  })
  afterAll(async () => {
    await link.stop()
    const channel = await admin.createChannel()
    await deleteTopology(channel, topologyFor(queue, 'quorum'))
    await admin.close()
    await db.drop()
  })

  it('exits 0 within 10 s when the broker no longer answers (idle, all acked)', async () => {
    const proc = run({
      ...serviceEnv(queue, db.name, await freePort()),
      RABBITMQ_HOST: link.host,
      RABBITMQ_PORT: String(link.port),
      LOG_LEVEL: 'info',
    })
    await waitFor(async () => proc.output().includes('"msg":"consuming"'), { what: 'consuming', timeoutMs: 20_000 })
    link.freeze()
    const stoppedAt = Date.now()
    proc.child.kill('SIGTERM')
    const code = await proc.exited
    const ms = Date.now() - stoppedAt
    expect({ code, ms: ms < 10_000 }, proc.output()).toEqual({ code: 0, ms: true })
    expect(proc.output()).toContain('"msg":"RabbitMQ connection closed"')
  })
})
