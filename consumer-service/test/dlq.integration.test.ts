// Integration: the dead-letter CLI against the real RabbitMQ (and, for replays, the real worker
// and database). Each test has its own queue.
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { ChannelModel, ConfirmChannel } from 'amqplib'
import type { RowDataPacket } from 'mysql2/promise'
import { pino } from 'pino'
import {
  assertTopology,
  deleteTopology,
  messageProperties,
  RECORD_ERASURE_SQL,
  topologyFor,
  type QueueMessage,
} from 'event-contract'
import { broker, connectBroker, uniqueName, waitFor } from '../../test-support/index.js'
import { connectDatabase, countsDrift, createTestDatabase, database } from '../../test-support/database.js'
import { spawnService } from '../../test-support/process.js'
import { readConfig } from '../src/config.js'
import { EXIT, main } from '../src/dlq.js'
import { Store } from '../src/store.js'
import { Worker } from '../src/worker.js'

const cli = fileURLToPath(new URL('../dist/dlq.js', import.meta.url))
let admin: ChannelModel
let channel: ConfirmChannel
const cleanups: (() => Promise<void>)[] = []

beforeAll(async () => {
  admin = await connectBroker()
  channel = await admin.createConfirmChannel()
})
afterAll(async () => {
  await admin.close()
})
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function envFor(queue: string): NodeJS.ProcessEnv {
  return {
    RABBITMQ_HOST: broker.host,
    RABBITMQ_PORT: String(broker.port),
    RABBITMQ_USER: broker.user,
    RABBITMQ_PASS: broker.pass,
    RABBITMQ_QUEUE: queue,
  }
}

/** Runs the CLI in this process; its exit code and what it printed. */
async function dlq(queue: string, ...args: string[]) {
  const out: string[] = []
  const err: string[] = []
  const code = await main(args, envFor(queue), { out: (l) => out.push(l), err: (l) => err.push(l) })
  return { code, out: out.join('\n'), err: err.join('\n') }
}

async function topology() {
  const queue = uniqueName('dlq_cli')
  await assertTopology(channel, topologyFor(queue, 'quorum'))
  cleanups.push(() => deleteTopology(channel, topologyFor(queue, 'quorum')))
  return queue
}

function event(overrides: Partial<QueueMessage> = {}): QueueMessage {
  return {
    event_id: randomUUID(),
    user_id: 7,
    event_type: 'login',
    timestamp: '2026-02-20T10:00:00.000Z',
    metadata: {},
    received_at: '2026-02-20T10:00:00.000Z',
    ...overrides,
  }
}

/** Puts letters straight on the DLQ, as the consumer would have published them. */
async function letters(queue: string, kind: string, events: QueueMessage[]) {
  for (const e of events) {
    channel.publish(`${queue}.dlx`, queue, Buffer.from(JSON.stringify(e)), {
      ...messageProperties(e.event_id),
      mandatory: false,
      headers: { 'x-error-kind': kind, 'x-error': `why ${kind}`, 'x-dead-lettered-at': '2026-02-20T10:00:01.000Z' },
    })
  }
  await channel.waitForConfirms()
}

async function depths(queue: string) {
  const main = (await channel.checkQueue(queue)).messageCount
  const dead = (await channel.checkQueue(`${queue}.dlq`)).messageCount
  return { main, dead }
}

/** A worker and its database storing what lands on the queue. */
async function consumer(queue: string, databaseName?: string) {
  let name = databaseName
  if (!name) {
    const db = await createTestDatabase()
    cleanups.push(db.drop)
    name = db.name
  }
  const config = readConfig({
    ...envFor(queue),
    MYSQL_HOST: database.host,
    MYSQL_PORT: String(database.port),
    MYSQL_USER: database.user,
    MYSQL_PASSWORD: database.password,
    MYSQL_DATABASE: name,
    CONSUMER_RETRY_MAX_MS: '200',
  })
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' })
  const store = Store.fromConfig(config, logger)
  await store.applySchema()
  const worker = new Worker({ config, store, logger })
  await worker.start()
  cleanups.push(async () => {
    await worker.stop()
    await store.close()
  })
  return name
}

async function storedIds(databaseName: string): Promise<string[]> {
  const connection = await connectDatabase(databaseName)
  try {
    const [rows] = await connection.query<RowDataPacket[]>('SELECT event_id FROM user_activities')
    return rows.map((row) => row.event_id as string)
  } finally {
    await connection.end()
  }
}

describe('usage and errors', () => {
  it('prints its usage with --help and exits 0; without a command, 2', async () => {
    const help = await dlq('q', '--help')
    expect(help.code).toBe(EXIT.ok)
    expect(help.out).toContain('Usage: npm run dlq -- <command>')
    expect((await dlq('q')).code).toBe(EXIT.usage)
    expect((await dlq('q', 'explode')).err).toContain('unknown command explode')
    expect((await dlq('q', 'peek', 'many')).code).toBe(EXIT.usage)
  })

  it('refuses to purge without --yes', async () => {
    const queue = await topology()
    await letters(queue, 'validation', [event()])
    const res = await dlq(queue, 'purge')
    expect(res).toMatchObject({ code: EXIT.usage, err: expect.stringContaining('--yes') })
    expect((await depths(queue)).dead).toBe(1)
  })

  it('says so, with exit 3, when RabbitMQ is not reachable (as a process)', async () => {
    const proc = spawnService(cli, { ...envFor('q'), RABBITMQ_PORT: '1' } as Record<string, string>, ['stats'])
    expect(await proc.exited).toBe(EXIT.unreachable)
    expect(proc.output()).toContain(`RabbitMQ is not reachable at ${broker.host}:1`)
  })

  it('uses the next node of RABBITMQ_HOST when the first does not answer (a cluster with a node down)', async () => {
    const queue = await topology()
    await letters(queue, 'validation', [event(), event()])
    const env = { ...envFor(queue), RABBITMQ_HOST: `${broker.host}:1,${broker.host}:${broker.port}` }
    const out: string[] = []
    const code = await main(['stats', '--json'], env, { out: (l) => out.push(l), err: () => {} })
    expect(code).toBe(EXIT.ok)
    expect(JSON.parse(out.join('\n'))).toMatchObject({ deadLettered: 2, kinds: { validation: 2 } })
  })

  it('says so, with exit 4, when the queue does not exist', async () => {
    const res = await dlq(uniqueName('missing'), 'stats')
    expect(res.code).toBe(EXIT.noQueue)
    expect(res.err).toMatch(/queue missing_\w+ does not exist/)
  })
})

describe('stats and peek', () => {
  it('counts the letters by kind, and peek shows them with their reasons without removing any', async () => {
    const queue = await topology()
    const refused = [event(), event()]
    await letters(queue, 'database-rejected', refused)
    await letters(queue, 'validation', [event()])

    const stats = await dlq(queue, 'stats', '--json')
    expect(stats.code).toBe(EXIT.ok)
    expect(JSON.parse(stats.out)).toEqual({
      queue,
      queued: 0,
      deadLettered: 3,
      kinds: { 'database-rejected': 2, validation: 1 },
    })

    const peek = await dlq(queue, 'peek', '2', '--json')
    const shown = peek.out.split('\n').map((line) => JSON.parse(line))
    expect(shown).toEqual(
      refused.map((e) =>
        expect.objectContaining({ messageId: e.event_id, kind: 'database-rejected', error: 'why database-rejected' }),
      ),
    )
    await waitFor(async () => (await depths(queue)).dead === 3, { what: 'the letters back' })
  })
})

describe('a large DLQ', () => {
  it('stats counts 100,000 letters of 1 KB by kind in under 100 MB of RSS (as a process)', async () => {
    const queue = await topology()
    const padding = 'x'.repeat(900)
    const total = 100_000
    for (let sent = 0; sent < total;) {
      // One confirm wait per 5,000: a quick fill, with the publisher's buffer bounded.
      for (const end = Math.min(total, sent + 5000); sent < end; sent++) {
        const e = event({ metadata: { padding } })
        channel.publish(`${queue}.dlx`, '', Buffer.from(JSON.stringify(e)), {
          ...messageProperties(e.event_id),
          mandatory: false,
          headers: { 'x-error-kind': sent % 10 === 0 ? 'too-large' : 'validation', 'x-error': 'why' },
        })
      }
      await channel.waitForConfirms()
    }
    expect((await depths(queue)).dead).toBe(total)

    const proc = spawnService(cli, envFor(queue) as Record<string, string>, ['stats', '--json'])
    let peakKb = 0
    const sampler = setInterval(() => {
      try {
        const status = readFileSync(`/proc/${proc.child.pid}/status`, 'utf8')
        peakKb = Math.max(peakKb, Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0))
      } catch {
        // the process has exited between two samples: the last one stands
      }
    }, 20)
    const code = await Promise.race([proc.exited, sleep(120_000).then(() => 'running' as const)])
    clearInterval(sampler)
    if (code === 'running') await proc.stop('SIGKILL')
    expect(code, proc.output().slice(-300)).toBe(EXIT.ok)
    expect(JSON.parse(proc.output())).toEqual({
      queue,
      queued: 0,
      deadLettered: total,
      kinds: { validation: total * 0.9, 'too-large': total * 0.1 },
    })
    expect(peakKb).toBeGreaterThan(0)
    expect(peakKb / 1024, `peak RSS ${Math.round(peakKb / 1024)} MB`).toBeLessThan(100)
    await waitFor(async () => (await depths(queue)).dead === total, { what: 'every letter back' })
  }, 240_000)
})

describe('replay', () => {
  it('puts back an event the database refused, once the column is wide enough, and it is stored once', async () => {
    const queue = await topology()
    const databaseName = await consumer(queue)
    const connection = await connectDatabase(databaseName)
    await connection.query('ALTER TABLE user_activities MODIFY event_type VARCHAR(10) NOT NULL')
    const long = event({ event_type: 'much_too_long_for_ten' })
    channel.publish('', queue, Buffer.from(JSON.stringify(long)), messageProperties(long.event_id))
    await channel.waitForConfirms()
    await waitFor(async () => (await depths(queue)).dead === 1, { what: 'the event dead-lettered' })
    expect(JSON.parse((await dlq(queue, 'stats', '--json')).out).kinds).toEqual({ 'database-rejected': 1 })

    await connection.query('ALTER TABLE user_activities MODIFY event_type VARCHAR(50) NOT NULL')
    await connection.end()
    const res = await dlq(queue, 'replay')
    expect(res).toMatchObject({ code: EXIT.ok, out: `replayed 1 dead letter to ${queue}` })
    await waitFor(async () => (await storedIds(databaseName)).includes(long.event_id), { what: 'the row' })
    await waitFor(async () => (await depths(queue)).main === 0, { what: 'an empty queue' })
    expect(await storedIds(databaseName)).toEqual([long.event_id])
    expect(await depths(queue)).toEqual({ main: 0, dead: 0 })
    // Counted when stored by the replay, not when refused.
    expect(await countsDrift(databaseName)).toEqual([])
  })

  it("stores nothing of an erased user's letters, and the others once", async () => {
    const queue = await topology()
    const databaseName = await consumer(queue)
    const erased = [event({ user_id: 44 }), event({ user_id: 44 })]
    const other = event({ user_id: 45 })
    await letters(queue, 'database-rejected', [...erased, other])
    const connection = await connectDatabase(databaseName)
    try {
      // Erased after the producer received them (2026-02-20), as the query service records it.
      await connection.query(RECORD_ERASURE_SQL[0], [44])
    } finally {
      await connection.end()
    }
    expect((await dlq(queue, 'replay')).code).toBe(EXIT.ok)
    await waitFor(async () => (await storedIds(databaseName)).includes(other.event_id), { what: 'the other row' })
    await waitFor(async () => (await depths(queue)).main === 0, { what: 'an empty queue' })
    expect(await storedIds(databaseName)).toEqual([other.event_id])
    expect(await depths(queue)).toEqual({ main: 0, dead: 0 })
    expect(await countsDrift(databaseName)).toEqual([])
  })

  it('moves only the kind asked for, and only as many as asked', async () => {
    const queue = await topology()
    await letters(queue, 'validation', [event(), event()])
    await letters(queue, 'database-rejected', [event(), event(), event()])
    expect((await dlq(queue, 'replay', '--kind', 'database-rejected', '--limit', '2')).out).toBe(
      `replayed 2 dead letters to ${queue} (kind database-rejected)`,
    )
    await waitFor(async () => (await depths(queue)).dead === 3, { what: 'the rest back in the DLQ' })
    expect(await depths(queue)).toEqual({ main: 2, dead: 3 })
    expect(JSON.parse((await dlq(queue, 'stats', '--json')).out).kinds).toEqual({
      validation: 2,
      'database-rejected': 1,
    })
  })

  it('takes the letters present when it starts, once each, while they fail again behind it', async () => {
    const queue = await topology()
    await consumer(queue) // the real worker: it dead-letters each invalid event straight back
    const sent = Array.from({ length: 1000 }, () => event({ user_id: 0 }))
    await letters(queue, 'validation', sent)

    const proc = spawnService(cli, envFor(queue) as Record<string, string>, ['replay'])
    const ended = await Promise.race([proc.exited, sleep(30_000).then(() => 'running' as const)])
    if (ended === 'running') {
      await proc.stop('SIGKILL')
      throw new Error(
        `replay still running after 30 s: ${proc.output().slice(-300)} ${JSON.stringify(await depths(queue))}`,
      )
    }
    expect(ended).toBe(EXIT.ok)
    expect(proc.output().trim()).toBe(`replayed ${sent.length} dead letters to ${queue}`)
    await waitFor(async () => (await depths(queue)).main === 0, { what: 'the worker done', timeoutMs: 20_000 })
    // Each came back once with its new reason: the same 1,000 events, none twice.
    const peek = await dlq(queue, 'peek', String(sent.length + 10), '--json')
    const ids = peek.out.split('\n').map((line) => JSON.parse(line).messageId as string)
    expect(ids).toHaveLength(sent.length)
    expect(new Set(ids)).toEqual(new Set(sent.map((e) => e.event_id)))
  }, 90_000)

  it('killed half-way loses nothing and stores nothing twice', async () => {
    const queue = await topology()
    const sent = Array.from({ length: 3000 }, () => event())
    await letters(queue, 'database-rejected', sent)

    const first = spawnService(cli, envFor(queue) as Record<string, string>, ['replay'])
    await waitFor(async () => (await depths(queue)).main >= 300, { what: 'the replay under way', intervalMs: 5 })
    first.child.kill('SIGKILL')
    await first.exited
    const atKill = await waitFor(
      async () => {
        const d = await depths(queue)
        return d.main + d.dead >= sent.length ? d : undefined
      },
      { what: 'every letter on one queue or the other' },
    )
    expect(atKill.main).toBeLessThan(sent.length)

    expect((await dlq(queue, 'replay')).code).toBe(EXIT.ok)
    expect((await depths(queue)).dead).toBe(0)
    const databaseName = await consumer(queue)
    await waitFor(async () => (await storedIds(databaseName)).length >= sent.length, {
      what: `${sent.length} rows`,
      timeoutMs: 20_000,
    })
    await waitFor(async () => (await depths(queue)).main === 0, { what: 'an empty queue' })
    const ids = await storedIds(databaseName)
    expect(ids).toHaveLength(sent.length)
    expect(new Set(ids)).toEqual(new Set(sent.map((e) => e.event_id)))
    expect(await countsDrift(databaseName)).toEqual([])
  })
})

describe('purge', () => {
  it('prints what it deletes, then empties the DLQ', async () => {
    const queue = await topology()
    await letters(queue, 'validation', [event(), event()])
    await letters(queue, 'too-large', [event()])
    const res = await dlq(queue, 'purge', '--yes')
    expect(res.code).toBe(EXIT.ok)
    expect(res.out).toContain(`deleting 3 dead letters from ${queue}.dlq:`)
    expect(res.out).toContain('2\tvalidation')
    expect(res.out).toContain('purged 3')
    expect(await depths(queue)).toEqual({ main: 0, dead: 0 })
  })
})
