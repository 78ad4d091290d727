// Shared pieces of the benchmarks: child processes, load, memory.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { PrivateMariadb } from '../test-support/private-servers.js'

export const root = fileURLToPath(new URL('..', import.meta.url))

export const seedBody = JSON.stringify({
  user_id: 123,
  event_type: 'page_view',
  timestamp: '2026-02-20T10:00:00Z',
  metadata: { page_url: '/products/item-xyz', session_id: 'abc123' },
})

export interface Service {
  child: ChildProcess
  /** Highest resident set size seen by `sampleRss`, in MB. */
  peakRssMb: number
  sampleRss(): void
  stop(): Promise<number | null>
}

/** Starts a Node.js process of the project's (`args` after `node`), with the given environment. */
export function startService(args: string[], env: Record<string, string>): Service {
  const child = spawn(process.execPath, args, {
    cwd: root,
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  // A benchmark that fails half-way must not leave its services running.
  const orphan = () => child.kill('SIGTERM')
  process.on('exit', orphan)
  void exited.then(() => process.off('exit', orphan))
  const service: Service = {
    child,
    peakRssMb: 0,
    sampleRss() {
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8')
      const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0)
      service.peakRssMb = Math.max(service.peakRssMb, kb / 1024)
    },
    async stop() {
      child.kill('SIGTERM')
      return exited
    },
  }
  return service
}

export async function waitForHttp(url: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      if ((await fetch(url)).status < 500) return
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

export interface LoadResult {
  requestsPerSecond: number
  p99Ms: number
  accepted: number
  other: number
  errors: number
}

/** The body of a /batch request: `size` copies of the seed event (each gets its own event_id). */
export function batchBody(size: number): string {
  return JSON.stringify({ batch: Array.from({ length: size }, () => JSON.parse(seedBody)) })
}

/**
 * POSTs a body (the seed event by default) with autocannon, run as a process of its own (as its
 * CLI) so that the load generator neither shares an event loop with the benchmark nor hides its
 * CPU cost. Counts 202s apart from everything else.
 */
export async function postLoad(
  url: string,
  {
    connections = 64,
    seconds = 10,
    onTick = () => {},
    path = '/api/v1/events/track',
    body = seedBody as string | Buffer,
    /** The body's Content-Encoding (it is sent as given). */
    encoding = '',
  } = {},
) {
  const ticker = setInterval(onTick, 250)
  // From a file: Linux takes at most 128 KiB in one command-line argument, a batch can be 1 MiB.
  const bodyFile = join(mkdtempSync(join(tmpdir(), 'bench-')), 'body.json')
  writeFileSync(bodyFile, body)
  const cli = [
    fileURLToPath(new URL('../node_modules/autocannon/autocannon.js', import.meta.url)),
    '--json',
    ...['-c', String(connections), '-d', String(seconds), '-m', 'POST'],
    ...['-H', 'content-type=application/json', '-i', bodyFile],
    `${url}${path}`,
  ]
  // The CLI reads its body file as text: a compressed body goes through autocannon's API, as bytes.
  const api = [
    '-e',
    `require(${JSON.stringify(fileURLToPath(new URL('../node_modules/autocannon', import.meta.url)))})({ ` +
      `url: ${JSON.stringify(`${url}${path}`)}, method: 'POST', connections: ${connections}, duration: ${seconds}, ` +
      `headers: { 'content-type': 'application/json', 'content-encoding': ${JSON.stringify(encoding)} }, ` +
      `body: require('node:fs').readFileSync(${JSON.stringify(bodyFile)}) }).then((r) => console.log(JSON.stringify(r)))`,
  ]
  const args = encoding ? api : cli
  const output = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'ignore'] })
    let text = ''
    child.stdout.on('data', (chunk) => (text += chunk))
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`autocannon exited ${code}`))))
  }).finally(() => {
    clearInterval(ticker)
    rmSync(dirname(bodyFile), { recursive: true })
  })
  const result = JSON.parse(output) as {
    '2xx': number
    non2xx: number
    errors: number
    timeouts: number
    latency: { p99: number }
  }
  const accepted = result['2xx']
  return {
    requestsPerSecond: Math.round(accepted / seconds),
    p99Ms: result.latency.p99,
    accepted,
    other: result.non2xx,
    errors: result.errors + result.timeouts,
  } satisfies LoadResult
}

/** The services' MySQL variables for a MariaDB of the benchmark's own, as its service user. */
export function mysqlEnvOf(server: PrivateMariadb, database = server.database): Record<string, string> {
  return {
    MYSQL_HOST: server.address.host,
    MYSQL_PORT: String(server.address.port),
    MYSQL_USER: server.user.user,
    MYSQL_PASSWORD: server.user.password,
    MYSQL_DATABASE: database,
  }
}
