// Write keys, the rate limit and CORS, through app.inject.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { metricValue } from '../../test-support/index.js'
import { buildApp } from '../src/app.js'
import { createProducerMetrics } from '../src/metrics.js'
import { fingerprint, securityFromConfig, type SecurityOptions } from '../src/plugins/security.js'
import { FakePublisher, seed } from './fake-publisher.js'

const KEY = 'wk_live_7f3a9c2e5b'
const OTHER = 'wk_live_other_8d1'
const open: SecurityOptions = { apiKeys: [], rateLimitMax: 0, rateLimitWindowMs: 60_000, corsOrigins: [] }

let app: Awaited<ReturnType<typeof buildApp>> | undefined
afterEach(async () => {
  await app?.close()
  app = undefined
})

async function start(security: Partial<SecurityOptions>) {
  const lines: Record<string, unknown>[] = []
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) })
  const publisher = new FakePublisher()
  const metrics = createProducerMetrics()
  app = await buildApp({ publisher, logger, metrics, security: { ...open, ...security } })
  return { app, publisher, lines, metrics }
}

function post(headers: Record<string, string> = {}, url = '/api/v1/events/track', payload: unknown = seed) {
  return (app as NonNullable<typeof app>).inject({
    method: 'POST',
    url,
    headers: { 'content-type': 'application/json', ...headers },
    payload: JSON.stringify(payload),
  })
}

const basic = (key: string) => `Basic ${Buffer.from(`${key}:`).toString('base64')}`

describe('write keys', () => {
  it('without keys, ingestion is open, and the service says so once at start-up', async () => {
    const { lines } = await start({})
    expect((await post()).statusCode).toBe(202)
    const warnings = lines.filter((line) => String(line.msg).startsWith('ingestion is open'))
    expect(warnings).toHaveLength(1)
    expect(warnings[0]?.level).toBe(40)
  })

  it.each([
    ['Authorization: Bearer', { authorization: `Bearer ${KEY}` }],
    ['Authorization: Basic base64(key:)', { authorization: basic(KEY) }],
    ['X-API-Key', { 'x-api-key': KEY }],
  ])('takes a key as %s', async (_form, headers) => {
    const { publisher } = await start({ apiKeys: [OTHER, KEY] })
    expect((await post(headers)).statusCode).toBe(202)
    expect(publisher.published).toHaveLength(1)
  })

  it.each([
    ['no key', {}, 'An API key is required'],
    ['a wrong key', { authorization: `Bearer ${KEY}x` }, 'The API key is not valid'],
    ['a wrong Basic user', { authorization: basic('nobody') }, 'The API key is not valid'],
    ['an empty Basic user', { authorization: basic('') }, 'An API key is required'],
    ['another scheme', { authorization: `Token ${KEY}` }, 'An API key is required'],
  ])(
    'answers 401 in the documented shape with WWW-Authenticate for %s, and queues nothing',
    async (_name, headers, why) => {
      const { publisher } = await start({ apiKeys: [KEY] })
      for (const url of ['/api/v1/events/track', '/api/v1/events/batch']) {
        const res = await post(headers, url, url.endsWith('batch') ? { batch: [seed] } : seed)
        expect(res.statusCode).toBe(401)
        expect(res.headers['www-authenticate']).toBe('Bearer realm="events", Basic realm="events"')
        expect(res.json()).toEqual({ detail: expect.stringContaining(why), message: 'Unauthorized' })
      }
      expect(publisher.published).toEqual([])
      expect(publisher.batches).toEqual([])
      const text = (await (app as NonNullable<typeof app>).inject('/metrics')).body
      expect(metricValue(text, 'producer_events_rejected_total', { reason: 'unauthorized' })).toBe(2)
    },
  )

  it('leaves /health, /metrics and /docs open', async () => {
    await start({ apiKeys: [KEY] })
    const server = app as NonNullable<typeof app>
    expect((await server.inject('/health')).statusCode).toBe(200)
    expect((await server.inject('/metrics')).statusCode).toBe(200)
    expect((await server.inject('/docs/')).statusCode).toBe(200)
  })

  it('never logs a key: a short fingerprint names it', async () => {
    const { lines } = await start({ apiKeys: [KEY] })
    await post({ 'x-api-key': KEY })
    await post({ 'x-api-key': `${KEY}-wrong` })
    const text = JSON.stringify(lines)
    expect(text).not.toContain(KEY)
    expect(lines.find((line) => line.msg === 'ingestion requires an API key')).toMatchObject({
      keys: [fingerprint(KEY)],
    })
    expect(lines.find((line) => line.msg === 'request' && line.statusCode === 202)).toMatchObject({
      key: fingerprint(KEY),
    })
  })

  it('declares the key forms in the OpenAPI document, so that /docs can send one', async () => {
    await start({ apiKeys: [KEY] })
    const document = (await (app as NonNullable<typeof app>).inject('/openapi.json')).json()
    expect(Object.keys(document.components.securitySchemes).sort()).toEqual(['apiKey', 'basicAuth', 'bearerAuth'])
    expect(document.components.securitySchemes.apiKey).toEqual({ type: 'apiKey', in: 'header', name: 'X-API-Key' })
    expect(document.paths['/api/v1/events/track'].post.security).toEqual([
      { bearerAuth: [] },
      { basicAuth: [] },
      { apiKey: [] },
    ])
    expect(document.paths['/health'].get.security).toBeUndefined()
  })
})

describe('configuration of the keys, the limit and the origins', () => {
  const base = {
    API_KEYS: '',
    API_KEYS_FILE: '',
    RATE_LIMIT_MAX: 0,
    RATE_LIMIT_WINDOW_MS: 60_000,
    RATE_LIMIT_REDIS_URL: '',
    RATE_LIMIT_REDIS_TIMEOUT_MS: 100,
    CORS_ORIGINS: '',
  }

  it('reads API_KEYS and API_KEYS_FILE (one a line), and CORS_ORIGINS', () => {
    const dir = mkdtempSync(join(tmpdir(), 'keys-'))
    writeFileSync(join(dir, 'keys'), 'key-from-file-1\n\n  key-from-file-2  \n')
    const options = securityFromConfig({
      ...base,
      API_KEYS: 'a, b',
      API_KEYS_FILE: join(dir, 'keys'),
      CORS_ORIGINS: 'https://app.example.com, http://localhost:3000',
    })
    expect(options.apiKeys).toEqual(['a', 'b', 'key-from-file-1', 'key-from-file-2'])
    expect(options.corsOrigins).toEqual(['https://app.example.com', 'http://localhost:3000'])
    expect(securityFromConfig({ ...base, CORS_ORIGINS: '*' }).corsOrigins).toBe('*')
  })

  it.each([
    ['API_KEYS_FILE', { API_KEYS_FILE: '/nonexistent/keys' }],
    ['API_KEYS_FILE', { API_KEYS_FILE: '/dev/null' }],
    ['CORS_ORIGINS', { CORS_ORIGINS: 'app.example.com/path' }],
  ])('refuses a bad %s, naming it', (name, values) => {
    expect(() => securityFromConfig({ ...base, ...values })).toThrow(name)
  })
})

describe('rate limit', () => {
  it('answers 429 in the documented shape with Retry-After and x-ratelimit headers, per key', async () => {
    const { publisher } = await start({ apiKeys: [KEY, OTHER], rateLimitMax: 2, rateLimitWindowMs: 60_000 })
    const first = await post({ 'x-api-key': KEY })
    expect(first.statusCode).toBe(202)
    expect(first.headers['x-ratelimit-limit']).toBe('2')
    expect(first.headers['x-ratelimit-remaining']).toBe('1')
    expect((await post({ 'x-api-key': KEY })).statusCode).toBe(202)
    const limited = await post({ 'x-api-key': KEY })
    expect(limited.statusCode).toBe(429)
    expect(limited.json()).toEqual({
      detail: expect.stringMatching(/at most 2 requests in 1 minute/),
      message: 'Too many requests',
    })
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0)
    expect(limited.headers['x-ratelimit-remaining']).toBe('0')
    // Another key has a budget of its own; a batch counts as one request.
    expect((await post({ 'x-api-key': OTHER }, '/api/v1/events/batch', { batch: [seed, seed, seed] })).statusCode).toBe(
      202,
    )
    expect(publisher.published).toHaveLength(2)
    const text = (await (app as NonNullable<typeof app>).inject('/metrics')).body
    expect(metricValue(text, 'producer_events_rejected_total', { reason: 'rate_limited' })).toBe(1)
    expect(metricValue(text, 'producer_events_accepted_total')).toBe(5)
  })

  it('limits by client address when there are no keys; /health is not limited', async () => {
    await start({ rateLimitMax: 1 })
    const server = app as NonNullable<typeof app>
    const from = (remoteAddress: string) =>
      server.inject({ method: 'POST', url: '/api/v1/events/track', remoteAddress, payload: seed })
    expect((await from('10.0.0.1')).statusCode).toBe(202)
    expect((await from('10.0.0.1')).statusCode).toBe(429)
    expect((await from('10.0.0.2')).statusCode).toBe(202)
    for (let i = 0; i < 3; i++) expect((await server.inject('/health')).statusCode).toBe(200)
  })

  it('does not spend the budget on requests without a valid key', async () => {
    await start({ apiKeys: [KEY], rateLimitMax: 1 })
    for (let i = 0; i < 3; i++) expect((await post({ 'x-api-key': 'wrong' })).statusCode).toBe(401)
    expect((await post({ 'x-api-key': KEY })).statusCode).toBe(202)
  })
})

describe('CORS', () => {
  const preflight = (origin: string) =>
    (app as NonNullable<typeof app>).inject({
      method: 'OPTIONS',
      url: '/api/v1/events/track',
      headers: {
        origin,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type,authorization,x-api-key',
      },
    })

  it('answers the preflight of a listed origin with what a browser needs to POST JSON with a key', async () => {
    await start({ apiKeys: [KEY], corsOrigins: ['https://app.example.com'] })
    const res = await preflight('https://app.example.com')
    expect(res.statusCode).toBe(204)
    expect(res.headers['access-control-allow-origin']).toBe('https://app.example.com')
    expect(String(res.headers['access-control-allow-methods'])).toContain('POST')
    expect(String(res.headers['access-control-allow-headers']).toLowerCase().split(/,\s*/)).toEqual(
      expect.arrayContaining(['content-type', 'authorization', 'x-api-key']),
    )
    const posted = await post({ origin: 'https://app.example.com', 'x-api-key': KEY })
    expect(posted.statusCode).toBe(202)
    expect(posted.headers['access-control-allow-origin']).toBe('https://app.example.com')
    // A 401 is readable by the page too.
    expect((await post({ origin: 'https://app.example.com' })).headers['access-control-allow-origin']).toBe(
      'https://app.example.com',
    )
  })

  it('gives an unlisted origin no CORS headers', async () => {
    await start({ corsOrigins: ['https://app.example.com'] })
    expect((await preflight('https://evil.example.net')).headers['access-control-allow-origin']).toBeUndefined()
    expect((await post({ origin: 'https://evil.example.net' })).headers['access-control-allow-origin']).toBeUndefined()
  })

  it('allows any origin with *, and none without CORS_ORIGINS', async () => {
    await start({ corsOrigins: '*' })
    expect((await preflight('https://anywhere.example')).headers['access-control-allow-origin']).toBe('*')
    await app?.close()
    await start({})
    expect((await preflight('https://anywhere.example')).headers['access-control-allow-origin']).toBeUndefined()
  })
})
