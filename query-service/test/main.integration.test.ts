// Integration: the built query service as a process: configuration at boot, reading closed until
// keys are set, and SIGTERM (at start-up and while serving) exiting 0 within its grace.
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { waitFor } from '../../test-support/index.js'
import { freePort, shippedNodeOptions, spawnService, terminatedAtStart } from '../../test-support/process.js'
import { createTestDatabase, database } from '../../test-support/database.js'
import { pino } from 'pino'
import { Store } from '../../consumer-service/src/store.js'

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url))
let db: Awaited<ReturnType<typeof createTestDatabase>>
beforeAll(async () => {
  db = await createTestDatabase()
})

/** The tables, as the consumer creates them at its start. */
async function applySchema() {
  const store = new Store({ ...database, database: db.name, logger: pino({ level: 'silent' }) })
  try {
    await store.applySchema()
  } finally {
    await store.close()
  }
}
afterAll(async () => {
  await db.drop()
})

function serviceEnv(port: number, extra: Record<string, string> = {}): Record<string, string> {
  return {
    MYSQL_HOST: database.host,
    MYSQL_PORT: String(database.port),
    MYSQL_USER: database.user,
    MYSQL_PASSWORD: database.password,
    MYSQL_DATABASE: db.name,
    HOST: '127.0.0.1',
    PORT: String(port),
    NODE_OPTIONS: shippedNodeOptions('query-service'),
    ...extra,
  }
}

describe('configuration', () => {
  it.each([
    ['PORT', 'x'],
    ['QUERY_TIMEOUT_MS', '10'],
    ['QUERY_OPEN', 'maybe'],
    ['MYSQL_READ_PORT', '70000'],
  ])('exits 1 naming %s when it is %j', async (name, value) => {
    const proc = spawnService(main, { [name]: value })
    expect(await proc.exited).toBe(1)
    expect(proc.output()).toContain(`${name}=${JSON.stringify(value)}`)
  })

  it('exits 1 when QUERY_API_KEYS_FILE cannot be read', async () => {
    const proc = spawnService(main, { QUERY_API_KEYS_FILE: '/no/such/keys' })
    expect(await proc.exited).toBe(1)
    expect(proc.output()).toContain('QUERY_API_KEYS_FILE="/no/such/keys"')
  })
})

describe('the process', () => {
  it('says at start-up how to open reading, answers 401 until then, and exits 0 on SIGTERM', async () => {
    const port = await freePort()
    const proc = spawnService(main, { ...serviceEnv(port), LOG_LEVEL: 'info' })
    try {
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined))?.ok, {
        what: 'the query service healthy',
      })
      expect(proc.output()).toMatch(/no read keys: the read routes answer 401.*QUERY_API_KEYS/)
      expect((await fetch(`http://127.0.0.1:${port}/api/v1/users/1/events`)).status).toBe(401)
      const stopped = Date.now()
      expect(await proc.stop()).toBe(0)
      expect(Date.now() - stopped).toBeLessThan(10_000)
    } finally {
      await proc.stop('SIGKILL')
    }
  })

  it('warns when QUERY_OPEN opens reading; 503 until the consumer has made the tables, 200 after', async () => {
    const port = await freePort()
    const open = spawnService(main, { ...serviceEnv(port, { QUERY_OPEN: 'true' }), LOG_LEVEL: 'info' })
    try {
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined))?.ok, {
        what: 'the query service healthy',
      })
      expect(open.output()).toContain('QUERY_OPEN=true: anyone who can reach this service')
      const early = await fetch(`http://127.0.0.1:${port}/api/v1/users/1/events`)
      expect(early.status).toBe(503)
      expect(early.headers.get('retry-after')).toBe('2')
      await applySchema()
      const answer = await fetch(`http://127.0.0.1:${port}/api/v1/users/1/events`)
      expect(answer.status).toBe(200)
      expect(await answer.json()).toEqual({ events: [], next_cursor: null })
    } finally {
      expect(await open.stop()).toBe(0)
    }
  })

  it('exits 0 on a SIGTERM during start-up', async () => {
    const { code, signal } = await terminatedAtStart(main, serviceEnv(await freePort()))
    expect({ code, signal }).toEqual({ code: 0, signal: null })
  })
})
