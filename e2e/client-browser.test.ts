// End to end in a real browser (Debian's Chromium through playwright-core): a page loads
// activity-client's build, tracks events, and is left before any batch was due. The page hiding
// sends them with keepalive requests that outlive it: every one is stored, once.
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { metricValue } from '../test-support/index.js'
import { freePort } from '../test-support/process.js'
import { System } from './harness.js'

const chromium = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const dist = fileURLToPath(new URL('../activity-client/dist/', import.meta.url))

const stops: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop()
})

/** A site of its own origin: `/` tracks `count` events with the built client, `/client/*` is the build, `/next` another page. */
async function site(options: { endpoint: string; writeKey: string; count: number }): Promise<string> {
  const page = `<!doctype html><title>tracked</title><script type="module">
    import { ActivityClient } from '/client/index.js'
    const client = new ActivityClient({
      endpoint: ${JSON.stringify(options.endpoint)},
      writeKey: ${JSON.stringify(options.writeKey)},
      flushAt: 100000,
      flushIntervalMs: 600000,
      maxBatchEvents: 100,
      onError: (e) => window.errors.push(e.code + ': ' + e.message),
    })
    window.errors = []
    window.ids = []
    for (let i = 0; i < ${options.count}; i++) {
      window.ids.push(client.track({ user_id: 1 + (i % 7), event_type: 'page_view', metadata: { path: '/products/' + i } }))
    }
    window.pending = client.pending
  </script>`
  const server: Server = createServer((request, response) => {
    const path = request.url ?? '/'
    if (path.startsWith('/client/') && /^[\w-]+\.js$/.test(path.slice(8))) {
      void readFile(`${dist}${path.slice(8)}`).then(
        (js) => response.writeHead(200, { 'content-type': 'text/javascript' }).end(js),
        () => response.writeHead(404).end(),
      )
      return
    }
    response.writeHead(200, { 'content-type': 'text/html' })
    response.end(path === '/' ? page : '<!doctype html><title>next</title>')
  })
  const port = await freePort()
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  stops.push(() => new Promise((resolve) => server.close(resolve)))
  return `http://127.0.0.1:${port}`
}

describe('activity-client in a browser', () => {
  it('events tracked on a page that is left are sent as it goes, and stored once', async () => {
    if (!existsSync(chromium)) {
      throw new Error(
        `Chromium is not at ${chromium}: install it (Debian: apt-get install -y chromium) or set CHROMIUM_PATH`,
      )
    }
    const { chromium: launcher } = await import('playwright-core')
    const writeKey = `browser-${randomUUID()}`
    const system = await new System({ producerEnv: { API_KEYS: writeKey, CORS_ORIGINS: '*' } }).start()
    stops.push(() => system.stop())
    const url = await site({ endpoint: system.api, writeKey, count: 250 })
    const browser = await launcher.launch({
      executablePath: chromium,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', '--disable-sync'],
    })
    stops.push(() => browser.close())
    const tab = await browser.newPage()
    await tab.goto(url)
    await tab.waitForFunction(() => (globalThis as unknown as { pending?: number }).pending !== undefined)
    const { ids, errors, pending } = await tab.evaluate(() => {
      const w = globalThis as unknown as { ids: string[]; errors: string[]; pending: number }
      return { ids: w.ids, errors: w.errors, pending: w.pending }
    })
    expect(errors).toEqual([])
    expect(pending).toBe(250) // nothing was due: all of it waits in the page
    await tab.goto(`${url}/next`)
    const result = await system.settle(new Set(ids), 30_000)
    expect(result.missing).toEqual([])
    expect(result.duplicated).toEqual([])
    expect(result.stored).toBe(250)
    // Sent as three keepalive requests of 100 events at most (the page's maxBatchEvents), 45 KB in all.
    const metrics = await fetch(`${system.api}/metrics`).then((r) => r.text())
    const batch = { route: '/api/v1/events/batch', status: '202' }
    expect(metricValue(metrics, 'producer_http_requests_total', batch)).toBe(3)
  })
})
