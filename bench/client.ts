// activity-client's part of `npm run bench`: events a second through the client into /batch,
// against /batch driven directly (autocannon, 100-event bodies, 16 connections) on the same
// producer, uncompressed and gzip-compressed alike, alternated twice, best of each.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { batchBody, postLoad, startService, waitForHttp } from './lib.js'

export interface ClientFigures {
  /** /batch driven directly, uncompressed and gzip-compressed bodies (level 1, as the client). */
  direct: number
  directGzip: number
  /** Through the client, gzip off and with its defaults (gzip on). */
  client: number
  clientGzip: number
  failed: number
}

/** The client driver (client-driver.ts) against `url` for `seconds`. */
async function throughClient(
  url: string,
  seconds: number,
  options: Record<string, unknown>,
): Promise<{ perSecond: number; failed: number }> {
  const driver = fileURLToPath(new URL('./client-driver.ts', import.meta.url))
  const output = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', driver, url, String(seconds)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, BENCH_CLIENT_OPTIONS: JSON.stringify(options) },
    })
    let text = ''
    child.stdout.on('data', (chunk) => (text += chunk))
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`the client driver exited ${code}`))))
  })
  const result = JSON.parse(output.trim().split('\n').at(-1) ?? '{}') as {
    delivered: number
    failed: number
    seconds: number
  }
  return { perSecond: Math.round(result.delivered / result.seconds), failed: result.failed }
}

export async function clientBench(options: { producerEnv: Record<string, string>; port: number; seconds: number }) {
  const { seconds } = options
  const url = `http://127.0.0.1:${options.port}`
  // 16 batches of 100 in flight take 1,600 slots: the default PUBLISH_MAX_IN_FLIGHT would answer 503.
  const producer = startService(['producer-service/dist/main.js'], {
    ...options.producerEnv,
    PUBLISH_MAX_IN_FLIGHT: '2000',
    PORT: String(options.port),
    HOST: '127.0.0.1',
  })
  const figures: ClientFigures = { direct: 0, directGzip: 0, client: 0, clientGzip: 0, failed: 0 }
  try {
    await waitForHttp(`${url}/health`)
    const body = batchBody(100)
    const gzipped = gzipSync(body, { level: 1 })
    const batch = { connections: 16, path: '/api/v1/events/batch', seconds }
    await postLoad(url, { ...batch, body, seconds: 2 }) // warm-up
    for (let round = 0; round < 2; round++) {
      const direct = await postLoad(url, { ...batch, body })
      figures.direct = Math.max(figures.direct, direct.requestsPerSecond * 100)
      const plain = await throughClient(url, seconds, { gzip: false })
      figures.client = Math.max(figures.client, plain.perSecond)
      const directGzip = await postLoad(url, { ...batch, body: gzipped, encoding: 'gzip' })
      figures.directGzip = Math.max(figures.directGzip, directGzip.requestsPerSecond * 100)
      const withGzip = await throughClient(url, seconds, {})
      figures.clientGzip = Math.max(figures.clientGzip, withGzip.perSecond)
      figures.failed += plain.failed + withGzip.failed
    }
  } finally {
    await producer.stop()
  }
  return figures
}
