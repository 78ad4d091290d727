// One POST of a batch to the producer's /batch: the body gzip-compressed where the platform can,
// the write key as a Bearer token, a bound on the wait. Says what came back; never throws.
import type { ValidationDetail } from './rules.js'

export const BATCH_PATH = '/api/v1/events/batch'
/** Bodies smaller than this go as they are: compressing them saves less than it costs. */
const GZIP_FROM_BYTES = 1024

export interface PostOptions {
  url: string
  writeKey?: string
  gzip: boolean
  timeoutMs: number
  /** A browser's page being hidden: the request outlives the page (its body at most 64 KiB). */
  keepalive?: boolean
  /** Ends the request at once (the client closing gave up). */
  signal?: AbortSignal
}

/** What the server answered (`status` 0: no answer, `error` says why). */
export interface PostResult {
  status: number
  retryAfter: string | null
  /** A 400's problems, each at ['body', 'batch', index, ...]. */
  detail?: ValidationDetail[]
  error?: string
}

/** Node's zlib where the platform offers it (Node 20.16+): off the event loop, and 4 times as fast as a web stream. */
type Gzip = (text: string, options: { level: number }, done: (err: Error | null, out: Uint8Array) => void) => void
const zlib = (
  globalThis as { process?: { getBuiltinModule?: (name: string) => { gzip: Gzip } | undefined } }
).process?.getBuiltinModule?.('node:zlib')

const canGzip = () => zlib !== undefined || typeof CompressionStream === 'function'

async function gzipped(text: string): Promise<ArrayBuffer | Uint8Array> {
  if (zlib) {
    // Level 1: most of the saving for a fifth of the default's time.
    return new Promise((resolve, reject) =>
      zlib.gzip(text, { level: 1 }, (err, out) => (err ? reject(err) : resolve(out))),
    )
  }
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream('gzip'))
  return new Response(stream).arrayBuffer()
}

/** Sends `body` (the JSON text of `{"batch": [...]}`). */
export async function postBatch(body: string, options: PostOptions): Promise<PostResult> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (options.writeKey) headers.authorization = `Bearer ${options.writeKey}`
  let payload: string | ArrayBuffer | Uint8Array = body
  const limit = timeLimit(options.timeoutMs, options.signal)
  try {
    // Not on a page being hidden: the request must be made before the page goes, synchronously.
    if (options.gzip && !options.keepalive && body.length >= GZIP_FROM_BYTES && canGzip()) {
      payload = await gzipped(body)
      headers['content-encoding'] = 'gzip'
    }
    const response = await fetch(options.url, {
      method: 'POST',
      headers,
      body: payload as NonNullable<Parameters<typeof fetch>[1]>['body'],
      keepalive: options.keepalive === true,
      signal: limit.signal,
    })
    const result: PostResult = { status: response.status, retryAfter: response.headers.get('retry-after') }
    if (response.status === 400) {
      const answer = (await response.json().catch(() => undefined)) as { detail?: unknown } | undefined
      if (Array.isArray(answer?.detail)) result.detail = answer.detail as ValidationDetail[]
    } else {
      await response.body?.cancel().catch(() => undefined)
    }
    return result
  } catch (err) {
    return { status: 0, retryAfter: null, error: (err as Error).message }
  } finally {
    limit.clear()
  }
}

/**
 * A signal aborted after `ms`, or as soon as `outer` is. By hand: Node 20's
 * AbortSignal.any([outer, AbortSignal.timeout(ms)]) may lose its timeout to the garbage collector
 * (nodejs/node#55428), and the request then waits for ever. Here the timer holds the controller.
 */
function timeLimit(ms: number, outer: AbortSignal | undefined) {
  const controller = new AbortController()
  const onAbort = () => controller.abort(outer?.reason)
  const timer = setTimeout(() => controller.abort(new DOMException(`no answer within ${ms} ms`, 'TimeoutError')), ms)
  // Node: the request itself keeps the process alive while it runs, not this timer.
  ;(timer as { unref?: () => void }).unref?.()
  if (outer?.aborted) onAbort()
  else outer?.addEventListener('abort', onAbort, { once: true })
  return {
    signal: controller.signal,
    clear() {
      clearTimeout(timer)
      outer?.removeEventListener('abort', onAbort)
    },
  }
}
