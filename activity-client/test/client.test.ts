// Unit: the client against a stand-in producer (a real HTTP server): batching by size and time,
// retries with the same event_ids and Retry-After, the 400 and 413 splits, a refused key, the
// bound, flush() and close().
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { ActivityClient, ActivityClientError, type ActivityClientOptions } from '../src/index.js'
import { backoffMs, retryAfterMs } from '../src/retry.js'
import { FakeProducer, type Answer, type Received } from './fake-producer.js'

const servers: FakeProducer[] = []
const clients: ActivityClient[] = []
afterEach(async () => {
  for (const client of clients.splice(0)) await client.close(100)
  for (const server of servers.splice(0)) await server.stop()
})

async function setUp(
  answer?: (request: Received, index: number) => Answer,
  options: Partial<ActivityClientOptions> = {},
) {
  const server = await new FakeProducer(answer).start()
  servers.push(server)
  const errors: ActivityClientError[] = []
  const client = new ActivityClient({
    endpoint: server.endpoint,
    flushIntervalMs: 60_000,
    onError: (e) => errors.push(e),
    ...options,
  })
  clients.push(client)
  return { server, client, errors }
}

const track = (client: ActivityClient, n: number, extra: Record<string, unknown> = {}) =>
  Array.from({ length: n }, (_, i) => client.track({ user_id: 1 + i, event_type: 'page_view', ...extra }))

const sentIds = (server: FakeProducer) => server.requests.flatMap((r) => r.events.map((e) => e.event_id))

describe('batching', () => {
  it('sends a batch as soon as flushAt events wait, the rest at flush()', async () => {
    const { server, client } = await setUp(undefined, { flushAt: 10 })
    const ids = track(client, 25)
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(server.requests.map((r) => r.events.length)).toEqual([10, 10])
    await client.flush()
    expect(server.requests.map((r) => r.events.length)).toEqual([10, 10, 5])
    expect([...sentIds(server)].sort()).toEqual([...ids].sort()) // each once
    for (const request of server.requests) {
      // Each request the oldest waiting, in the order tracked (two requests may arrive either way round).
      const first = ids.indexOf(request.events[0]?.event_id ?? '')
      expect(request.events.map((e) => e.event_id)).toEqual(ids.slice(first, first + request.events.length))
    }
  })

  it('sends what waits flushIntervalMs after it was tracked', async () => {
    const { server, client } = await setUp(undefined, { flushAt: 100, flushIntervalMs: 300 })
    const started = Date.now()
    track(client, 3)
    await new Promise((resolve) => setTimeout(resolve, 150))
    expect(server.requests).toHaveLength(0)
    await vi.waitFor(() => expect(server.requests).toHaveLength(1), { timeout: 5000 })
    expect(server.requests[0]?.at).toBeGreaterThanOrEqual(started + 290)
  })

  it('completes an event: a UUIDv7 event_id, the time now, gzip with the write key', async () => {
    const { server, client } = await setUp(undefined, { writeKey: 'k-123' })
    const id = client.track({ user_id: 7, event_type: 'login', metadata: { page: 'x'.repeat(2000) } })
    await client.flush()
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    const [request] = server.requests
    expect(request?.headers['content-encoding']).toBe('gzip')
    expect(request?.headers.authorization).toBe('Bearer k-123')
    const [event] = request?.events ?? []
    expect(event?.event_id).toBe(id)
    expect(Math.abs(Date.parse(event?.timestamp ?? '') - Date.now())).toBeLessThan(5000)
  })

  it('keeps one of an event tracked twice with its event_id while it waits', async () => {
    const { server, client } = await setUp()
    const id = client.track({ user_id: 1, event_type: 'login' })
    client.track({ user_id: 1, event_type: 'login', event_id: id })
    await client.flush()
    expect(sentIds(server)).toEqual([id])
  })
})

describe('retries', () => {
  it('retries 503, 500, 429 and a dropped connection with the same event_ids, honouring Retry-After', async () => {
    const answers: Answer[] = [
      { status: 503, headers: { 'retry-after': '1' } },
      { status: 500 },
      'drop',
      { status: 429, headers: { 'retry-after': '1' } },
    ]
    const { server, client, errors } = await setUp((_, i) => answers[i] ?? { status: 202 }, { maxBackoffMs: 200 })
    const ids = track(client, 5)
    await client.flush()
    expect(server.requests).toHaveLength(5)
    for (const request of server.requests) expect(request.events.map((e) => e.event_id)).toEqual(ids)
    const gap = (i: number) => (server.requests[i]?.at ?? 0) - (server.requests[i - 1]?.at ?? 0)
    expect(gap(1)).toBeGreaterThanOrEqual(990) // Retry-After: 1 over a backoff of 200 ms at most
    expect(gap(4)).toBeGreaterThanOrEqual(990)
    expect(errors).toEqual([])
  })

  it('backs off exponentially, capped, with jitter, never before Retry-After', () => {
    const low = (attempt: number, retryAfter?: number) => backoffMs(attempt, 1000, retryAfter, () => 0)
    const high = (attempt: number) => backoffMs(attempt, 1000, undefined, () => 1)
    expect([0, 1, 2, 3, 10].map((a) => [low(a), high(a)])).toEqual([
      [125, 250],
      [250, 500],
      [500, 1000],
      [500, 1000],
      [500, 1000],
    ])
    expect(low(0, 3000)).toBe(3000)
    expect(retryAfterMs('2')).toBe(2000)
    expect(retryAfterMs(new Date(Date.now() + 5000).toUTCString())).toBeGreaterThan(3000)
    expect(retryAfterMs('soon')).toBeUndefined()
    expect(retryAfterMs('3000000')).toBe(3_600_000) // an hour at most: past 2^31 ms a timer fires at once
    expect(retryAfterMs(null)).toBeUndefined()
  })
})

describe('what the server refuses', () => {
  it('400: reports the events it names, sends the rest', async () => {
    const { server, client, errors } = await setUp((request) => {
      const bad = request.events.flatMap((e, i) => (e.event_type === 'poison' ? [i] : []))
      if (bad.length === 0) return { status: 202 }
      const detail = bad.map((i) => ({ loc: ['body', 'batch', i, 'metadata'], msg: 'refused', type: 'value_error' }))
      return { status: 400, body: { detail, message: 'Invalid UserActivityEvent payload' } }
    })
    const good = [...track(client, 3), ...track(client, 2)]
    const poison = client.track({ user_id: 9, event_type: 'poison' })
    good.push(...track(client, 2))
    await client.flush()
    expect([...server.accepted.keys()].sort()).toEqual([...good].sort())
    expect(errors.map((e) => [e.code, e.events.map((x) => x.event_id), e.detail?.[0]?.loc])).toEqual([
      ['invalid', [poison], ['body', 'metadata']],
    ])
  })

  it('400 without the events named, and 413: split until each part passes, one too large reported', async () => {
    const { server, client, errors } = await setUp((request) => {
      if (request.events.length > 3)
        return { status: 400, body: { detail: [{ loc: ['body', 'batch'], msg: 'too long', type: 'too_long' }] } }
      if (request.bytes > 3000) return { status: 413, body: { detail: 'Request body is larger than 3000 bytes' } }
      return { status: 202 }
    })
    const ids = track(client, 10)
    const big = client.track({ user_id: 1, event_type: 'big', metadata: { a: 'x'.repeat(4000) } })
    await client.flush()
    expect([...server.accepted.keys()].sort()).toEqual([...ids].sort())
    expect(errors.map((e) => [e.code, e.events.map((x) => x.event_id), e.status])).toEqual([['too_large', [big], 413]])
  })

  it('a 400 whose detail is not the contract’s (a proxy’s): split, delivered, nothing thrown', async () => {
    const { server, client, errors } = await setUp((request) =>
      request.events.length > 1
        ? { status: 400, body: { detail: ['Bad Request', null, { msg: 'no loc' }] } }
        : { status: 202 },
    )
    const ids = track(client, 4)
    await client.flush()
    expect([...server.accepted.keys()].sort()).toEqual([...ids].sort())
    expect(errors).toEqual([])
  })

  it('a batch waiting to retry is reported at once when another gets a 401', async () => {
    const { client, errors } = await setUp(
      (request) =>
        request.events[0]?.event_type === 'first' ? { status: 503, headers: { 'retry-after': '30' } } : { status: 401 },
      { flushAt: 1 },
    )
    client.track({ user_id: 1, event_type: 'first' })
    await new Promise((resolve) => setTimeout(resolve, 200))
    const started = Date.now()
    client.track({ user_id: 1, event_type: 'second' })
    await client.flush()
    expect(Date.now() - started).toBeLessThan(5000) // not the 30 s the first was told to wait
    expect(errors.map((e) => [e.code, e.events[0]?.event_type]).sort()).toEqual([
      ['unauthorized', 'first'],
      ['unauthorized', 'second'],
    ])
  })

  it('401: stops sending, reports what waits and what comes after', async () => {
    const { server, client, errors } = await setUp(() => ({ status: 401, body: { detail: 'Invalid API key' } }), {
      flushAt: 2,
      maxInFlight: 1,
    })
    track(client, 5)
    await client.flush()
    client.track({ user_id: 1, event_type: 'late' })
    expect(server.requests).toHaveLength(1)
    expect(errors.every((e) => e.code === 'unauthorized')).toBe(true)
    expect(errors.flatMap((e) => e.events)).toHaveLength(6)
    expect(client.pending).toBe(0)
  })

  it('an invalid event is reported at track() and never sent', async () => {
    const { server, client, errors } = await setUp()
    client.track({ user_id: 0, event_type: 'login' })
    client.track({ user_id: 1, event_type: 'x'.repeat(51), timestamp: '2026-02-30T00:00:00Z' })
    await client.flush()
    expect(server.requests).toHaveLength(0)
    expect(errors.map((e) => [e.code, e.detail?.map((d) => d.loc.at(-1))])).toEqual([
      ['invalid', ['user_id']],
      ['invalid', ['event_type', 'timestamp']],
    ])
  })

  it('a Date timestamp is sent in the contract’s form; an invalid Date or year 10000 is reported', async () => {
    const { server, client, errors } = await setUp()
    client.track({ user_id: 1, event_type: 'login', timestamp: new Date(Date.UTC(2026, 1, 20, 10, 0, 0, 5)) })
    client.track({ user_id: 1, event_type: 'login', timestamp: new Date('not a date') })
    client.track({ user_id: 1, event_type: 'login', timestamp: new Date(Date.UTC(10000, 0, 1)) })
    await client.flush()
    expect(server.requests[0]?.events.map((e) => e.timestamp)).toEqual(['2026-02-20T10:00:00.005Z'])
    expect(errors.map((e) => [e.code, e.detail?.[0]?.loc])).toEqual([
      ['invalid', ['body', 'timestamp']],
      ['invalid', ['body', 'timestamp']],
    ])
  })

  it('input that throws when read (a Proxy, a getter) is reported; track() returns an id and never throws', async () => {
    const { server, client, errors } = await setUp()
    const hostile = new Proxy(
      {},
      {
        ownKeys: () => {
          throw new Error('no keys for you')
        },
      },
    )
    const getter = Object.defineProperty({}, 'user_id', {
      get: () => {
        throw new Error('no user')
      },
    })
    const ids = [
      client.track({ user_id: 1, event_type: 'login', metadata: hostile }),
      client.track(getter as never),
      client.track(null as never),
    ]
    await client.flush()
    expect(ids.every((id) => typeof id === 'string' && id.length === 36)).toBe(true)
    expect(errors.map((e) => e.code)).toEqual(['invalid', 'invalid', 'invalid'])
    expect(server.requests).toHaveLength(0)
  })

  it('one event_id in two spellings is one event, sent lower-case as the server stores it', async () => {
    const { server, client } = await setUp()
    const id = '0195d3a0-1b2c-7d3e-8f40-123456789ABC'
    expect(client.track({ user_id: 1, event_type: 'login', event_id: id })).toBe(id.toLowerCase())
    client.track({ user_id: 1, event_type: 'login', event_id: id.toLowerCase() })
    await client.flush()
    expect(sentIds(server)).toEqual([id.toLowerCase()])
  })

  it('a key or endpoint that no request could carry is refused at construction', () => {
    expect(() => new ActivityClient({ endpoint: 'http://user:pw@127.0.0.1:1' })).toThrow(TypeError)
    expect(() => new ActivityClient({ endpoint: 'ftp://127.0.0.1:1' })).toThrow(TypeError)
    expect(() => new ActivityClient({ endpoint: 'http://127.0.0.1:1', writeKey: 'clé' })).toThrow(TypeError)
    expect(() => new ActivityClient({ endpoint: 'http://127.0.0.1:1', writeKey: 'a b' })).toThrow(TypeError)
  })

  it('metadata that is not JSON (a BigInt, a cycle) is reported, and track() does not throw', async () => {
    const { server, client, errors } = await setUp()
    const cycle: Record<string, unknown> = {}
    cycle.self = cycle
    client.track({ user_id: 1, event_type: 'login', metadata: { n: 10n } })
    client.track({ user_id: 1, event_type: 'login', metadata: cycle })
    await client.flush()
    expect(server.requests).toHaveLength(0)
    expect(errors.map((e) => [e.code, e.detail?.[0]?.loc])).toEqual([
      ['invalid', ['body', 'metadata']],
      ['invalid', ['body', 'metadata']],
    ])
  })

  it('an onError that throws stops nothing: the other events are delivered', async () => {
    const { server } = await setUp()
    const client = new ActivityClient({
      endpoint: server.endpoint,
      onError: () => {
        throw new Error('the app’s handler failed')
      },
    })
    clients.push(client)
    client.track({ user_id: 0, event_type: 'login' })
    const id = client.track({ user_id: 1, event_type: 'login' })
    await client.flush()
    expect([...server.accepted.keys()]).toEqual([id])
  })
})

describe('a request that never answers', () => {
  it('times out and is retried even while the app makes garbage (the timeout is not collected)', async () => {
    // Each of the first 10 requests hangs; the client must give each up at requestTimeoutMs.
    const { server, client, errors } = await setUp((_, i) => (i < 10 ? 'hang' : { status: 202 }), {
      requestTimeoutMs: 200,
      maxBackoffMs: 50,
      flushAt: 1,
      maxInFlight: 10,
    })
    const ids = track(client, 10)
    let flushed = false
    const flushing = client.flush().then(() => (flushed = true))
    // An app's ordinary garbage: young objects, scavenged many times over while the requests hang.
    for (let round = 0; round < 40 && !flushed; round++) {
      for (let k = 0; k < 20; k++) new Array(100_000).fill(round)
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    await Promise.race([flushing, new Promise((resolve) => setTimeout(resolve, 3000))])
    expect(flushed).toBe(true)
    expect(errors).toEqual([])
    expect([...server.accepted.keys()].sort()).toEqual([...ids].sort())
  })
})

describe('bounds, flush and close', () => {
  it('refuses events past maxQueuedEvents, reporting them, while the server hangs', async () => {
    const { client, errors } = await setUp(() => 'hang', { maxQueuedEvents: 5, flushAt: 2 })
    const ids = track(client, 8)
    expect(client.pending).toBe(5)
    expect(errors.map((e) => [e.code, e.events[0]?.event_id])).toEqual(ids.slice(5).map((id) => ['queue_full', id]))
  })

  it('bounds the bytes held by default (16 MiB): 60 KB events past it refused until some are delivered', async () => {
    let answer: 'hang' | { status: number } = 'hang'
    const { client, errors } = await setUp(() => answer, { maxBackoffMs: 50, requestTimeoutMs: 300 })
    const big = (i: number) => ({ user_id: 1 + i, event_type: 'upload', metadata: { blob: 'x'.repeat(60_000) } })
    const ids = Array.from({ length: 400 }, (_, i) => client.track(big(i)))
    // 279 of 60,0xx bytes fit in 16 MiB (16,777,216 / 60,040), far fewer than maxQueuedEvents.
    const held = client.pending
    expect(held).toBeGreaterThan(270)
    expect(held).toBeLessThan(280)
    expect(errors.map((e) => [e.code, e.events[0]?.event_id])).toEqual(ids.slice(held).map((id) => ['queue_full', id]))
    expect(errors[0]?.message).toMatch(/maxQueuedBytes/)
    answer = { status: 202 }
    await client.flush()
    expect(client.pending).toBe(0)
    const later = client.track(big(0))
    await client.flush()
    expect(errors.some((e) => e.events.some((event) => event.event_id === later))).toBe(false)
  })

  it('counts maxQueuedBytes in UTF-8 bytes, not characters', async () => {
    const { client, errors } = await setUp(() => 'hang', { maxQueuedBytes: 1024 * 1024 })
    // 20,000 characters of 3 bytes each: about 60 KB an event as JSON, 17 of them in 1 MiB.
    for (let i = 0; i < 40; i++)
      client.track({ user_id: 1, event_type: 'note', metadata: { text: '中'.repeat(20_000) } })
    expect(client.pending).toBe(17)
    expect(errors.map((e) => e.code)).toEqual(Array(23).fill('queue_full'))
  })

  it('flush() waits for the events tracked before it, not for those after', async () => {
    let open = false
    const { client } = await setUp(
      (request) => (request.events[0]?.event_type === 'late' ? 'hang' : open ? { status: 202 } : { status: 503 }),
      { maxBackoffMs: 50 },
    )
    track(client, 2)
    let flushed = false
    const flushing = client.flush().then(() => (flushed = true))
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(flushed).toBe(false) // refused so far: still waiting
    client.track({ user_id: 1, event_type: 'late' }) // after the flush(): never answered
    void client.flush()
    open = true
    await flushing
    expect(client.pending).toBe(1)
  })

  it('close() sends what waits, then reports what the server would not take within its time', async () => {
    const { server, client, errors } = await setUp((request) =>
      request.events.some((e) => e.event_type === 'stuck') ? { status: 503 } : { status: 202 },
    )
    const sent = track(client, 3)
    await client.flush()
    const stuck = track(client, 2, { event_type: 'stuck' })
    const started = Date.now()
    await client.close(500)
    expect(Date.now() - started).toBeLessThan(1500)
    expect([...server.accepted.keys()]).toEqual(sent)
    expect(errors.map((e) => [e.code, e.events.map((x) => x.event_id)])).toEqual([['closed', stuck]])
    client.track({ user_id: 1, event_type: 'after' })
    expect(errors.at(-1)?.code).toBe('closed')
  })

  it('a Node process exits by itself once close() resolves', async () => {
    const { server } = await setUp()
    const entry = fileURLToPath(new URL('../dist/index.js', import.meta.url))
    const script = `
      const { ActivityClient } = await import(${JSON.stringify(entry)})
      const client = new ActivityClient({ endpoint: ${JSON.stringify(server.endpoint)} })
      for (let i = 0; i < 150; i++) client.track({ user_id: 1, event_type: 'login' })
      await client.close()
      console.log('closed')`
    const started = Date.now()
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let output = ''
    child.stdout.on('data', (d) => (output += d))
    const code = await new Promise((resolve) => child.on('exit', resolve))
    expect(code).toBe(0)
    expect(output.trim()).toBe('closed')
    expect(Date.now() - started).toBeLessThan(5000)
    expect(server.accepted.size).toBe(150)
  })

  it('a Node process exits at once when close() gives up on a batch waiting to retry', async () => {
    const { server } = await setUp((_, i) => (i < 3 ? { status: 503 } : 'hang'))
    const entry = fileURLToPath(new URL('../dist/index.js', import.meta.url))
    const script = `
      const { ActivityClient } = await import(${JSON.stringify(entry)})
      const client = new ActivityClient({ endpoint: ${JSON.stringify(server.endpoint)}, maxBackoffMs: 30000, onError: () => {} })
      client.track({ user_id: 1, event_type: 'login' })
      void client.flush()
      await new Promise((r) => setTimeout(r, 2500))
      await client.close(100)
      console.log('closed', Date.now())`
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let output = ''
    child.stdout.on('data', (d) => (output += d))
    await new Promise((resolve) => child.on('exit', resolve))
    const closedAt = Number(output.trim().split(' ')[1])
    expect(Date.now() - closedAt).toBeLessThan(2000)
  })

  it('a page hidden, then left: what waits is sent once, within the keepalive budget; the rest when due', async () => {
    // A browser's window and document, as far as the client uses them.
    const page = new EventTarget()
    const doc = Object.assign(new EventTarget(), { visibilityState: 'visible' })
    const globals = globalThis as unknown as Record<string, unknown>
    Object.assign(globals, {
      addEventListener: page.addEventListener.bind(page),
      removeEventListener: page.removeEventListener.bind(page),
      document: doc,
    })
    try {
      const { server, client } = await setUp(undefined, { flushAt: 10_000, maxBatchEvents: 100, gzip: false })
      const ids = track(client, 600, { metadata: { path: '/products/'.padEnd(100, 'x') } })
      doc.visibilityState = 'hidden'
      doc.dispatchEvent(new Event('visibilitychange'))
      page.dispatchEvent(new Event('pagehide'))
      await vi.waitFor(() => expect(server.requests.length).toBeGreaterThan(0))
      await new Promise((resolve) => setTimeout(resolve, 200))
      const leaving = server.requests.reduce((sum, r) => sum + r.bytes, 0)
      expect(leaving).toBeLessThanOrEqual(64 * 1024)
      expect(sentIds(server).length).toBeGreaterThan(200) // most of the 60 KiB used
      expect(client.pending).toBe(600 - sentIds(server).length)
      await client.flush() // the page lived on: the rest goes as usual
      expect([...server.accepted.keys()].sort()).toEqual([...ids].sort())
      expect([...server.accepted.values()].every((n) => n === 1)).toBe(true)
    } finally {
      for (const name of ['addEventListener', 'removeEventListener', 'document']) delete globals[name]
    }
  })
})
