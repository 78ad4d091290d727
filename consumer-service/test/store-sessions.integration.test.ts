// Integration: the store's sessions against the real database, bounded through a frozen link (a
// TcpProxy in front of it). e2e/server-defaults.test.ts has their transaction defaults.
import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { TcpProxy, waitFor } from '../../test-support/index.js'
import { createTestDatabase, database } from '../../test-support/database.js'
import { Store, TransientStoreError, type Row } from '../src/store.js'

const logger = pino({ level: 'silent' })
const row = (): Row => [randomUUID(), 7, 'login', '2026-02-20 04:30:00.123', '{"a":1}', '2026-02-20 04:30:01.000']

/** How long `promise` took to settle, or `undefined` if still pending after `boundMs`. */
async function settledWithin(promise: Promise<unknown>, boundMs: number) {
  const started = Date.now()
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<'pending'>((resolve) => (timer = setTimeout(() => resolve('pending'), boundMs)))
  const outcome = await Promise.race([
    promise.then(
      () => ({ ok: true as const, ms: Date.now() - started }),
      (err: unknown) => ({ ok: false as const, err, ms: Date.now() - started }),
    ),
    late,
  ])
  clearTimeout(timer)
  return outcome === 'pending' ? undefined : outcome
}

describe('Store through a frozen database link', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>
  beforeAll(async () => {
    db = await createTestDatabase()
  })
  afterAll(async () => {
    await db.drop()
  })

  it('rejects an insert within the query timeout, and stores once the link is back', async () => {
    const proxy = await new TcpProxy(database).start()
    const queryTimeoutMs = 1500
    const store = new Store({
      ...database,
      host: proxy.host,
      port: proxy.port,
      database: db.name,
      logger,
      queryTimeoutMs,
    })
    try {
      // Warm: the schema and the probe ran, a session is idle; max_allowed_packet not read yet.
      await store.prepare()
      expect(await store.ping()).toBe(true)
      proxy.freeze()
      const insert = store.insert([row()], (r) => r)
      const outcome = await settledWithin(insert, queryTimeoutMs + 3000)
      expect(outcome, 'the insert is still pending').toBeDefined()
      expect(outcome?.ok).toBe(false)
      expect(outcome && !outcome.ok && outcome.err).toBeInstanceOf(TransientStoreError)
      expect(outcome?.ms).toBeLessThan(queryTimeoutMs + 2000)
      // A health check meanwhile must not leave a hung session for the next insert.
      expect(await store.ping(500)).toBe(false)
      const again = await settledWithin(
        store.insert([row()], (r) => r),
        queryTimeoutMs + 3000,
      )
      expect(again, 'the second insert is still pending').toBeDefined()
      expect(again?.ok).toBe(false)

      await proxy.restore()
      const stored = await waitFor(async () => (await store.insert([row()], (r) => r)).inserted === 1, {
        timeoutMs: 10_000,
        intervalMs: 200,
        what: 'an insert after the restore',
      })
      expect(stored).toBe(true)
    } finally {
      await proxy.restore()
      await store.close()
      await proxy.stop()
    }
  })

  it('bounds the write probe when the link hangs inside its transaction', async () => {
    const proxy = await new TcpProxy(database).start()
    const store = new Store({
      ...database,
      host: proxy.host,
      port: proxy.port,
      database: db.name,
      logger,
      queryTimeoutMs: 1500,
    })
    try {
      await store.prepare()
      // 1 byte/s from now: START TRANSACTION passes, the probe's INSERT waits half a minute.
      proxy.throttle(1)
      const outcome = await settledWithin(store.probeWrite(), 5000 + 4000)
      expect(outcome, 'the probe is still pending').toBeDefined()
      expect(outcome?.ok).toBe(false)
      expect(outcome?.ms).toBeLessThan(5000 + 2000)
    } finally {
      await store.close()
      await proxy.stop()
    }
  })

  it('bounds applySchema through a link that hangs after the handshake', async () => {
    // 1 byte/s from the client: the handshake passes, the schema's statements then wait minutes.
    const proxy = await new TcpProxy(database, { bytesPerSecond: 1 }).start()
    const queryTimeoutMs = 1500
    const store = new Store({
      ...database,
      host: proxy.host,
      port: proxy.port,
      database: db.name,
      logger,
      queryTimeoutMs,
    })
    try {
      const outcome = await settledWithin(store.applySchema(), queryTimeoutMs + 4000)
      expect(outcome, 'applySchema is still pending').toBeDefined()
      expect(outcome?.ok).toBe(false)
      expect(outcome?.ms).toBeLessThan(queryTimeoutMs + 3000)
    } finally {
      await store.close()
      await proxy.stop()
    }
  })
})
