// The client apps send events with: track() queues, batches go to /batch by size and by time,
// each retried with the same event_ids until the server accepts it, splits what it refuses, and
// reports through onError whatever it will not deliver. Bounded; flush() and close().
import { ActivityClientError, type ActivityErrorCode, type ActivityEvent } from './errors.js'
import { BATCH_PATH, postBatch, type PostResult } from './http.js'
import { watchPageHide } from './page.js'
import { backoffMs, retryAfterMs } from './retry.js'
import { checkEvent, MAX_EVENT_BYTES, type ValidationDetail } from './rules.js'
import { uuidv7 } from './uuid.js'

export interface ActivityClientOptions {
  /** The producer's base URL, e.g. `https://track.example.com` (batches go to its /api/v1/events/batch). */
  endpoint: string
  /** A key of the producer's API_KEYS; none when the producer is open. */
  writeKey?: string
  /** Send as soon as this many events wait (default 100). */
  flushAt?: number
  /** Send what waits at the latest this long after it was tracked (default 1000 ms). */
  flushIntervalMs?: number
  /** Most events waiting or in flight; past it new events are refused, reported `queue_full` (default 10,000). */
  maxQueuedEvents?: number
  /** Gzip bodies of 1 KiB and more where the platform has CompressionStream (default true). */
  gzip?: boolean
  /** Told of every event this client will not deliver, and why. */
  onError?: (error: ActivityClientError) => void
  /** Most events a request (default 500; the producer's BATCH_MAX_EVENTS is 1,000). */
  maxBatchEvents?: number
  /** Most bytes of JSON a request (default 512 KiB; the producer's BATCH_BODY_LIMIT_BYTES is 1 MiB). */
  maxBatchBytes?: number
  /** Requests at once (default 4). */
  maxInFlight?: number
  /** Longest wait between two tries of a batch (default 30 s). */
  maxBackoffMs?: number
  /** Longest wait for an answer; then the batch is tried again (default 10 s). */
  requestTimeoutMs?: number
}

export interface TrackInput {
  user_id: number
  event_type: string
  /** When it happened (default: now); a string in ISO 8601, or a Date. */
  timestamp?: string | Date
  metadata?: Record<string, unknown> | null
  /** The idempotency key (default: a UUIDv7 made here). Tracking an id still waiting again adds nothing. */
  event_id?: string
}

/** An event in the client's hands until it is delivered or reported. */
export interface Pending {
  event: ActivityEvent
  json: string
  /** Its size as JSON: exact near the event limit, else its length (batches a 413 splits may come of it). */
  bytes: number
  /** The flush() generation it was tracked in. */
  epoch: number
  done: boolean
  /** In a keepalive request of a page being hidden, not answered yet. */
  leaving?: boolean
}

const encoder = new TextEncoder()
/** A 400 says which events of the batch it refuses at ['body', 'batch', index, ...]. */
const indexOf = (detail: ValidationDetail) => (detail.loc[1] === 'batch' ? detail.loc[2] : undefined)

export class ActivityClient {
  readonly #o: Required<Omit<ActivityClientOptions, 'writeKey' | 'onError'>> & ActivityClientOptions
  readonly #url: string
  /** Waiting to be sent, oldest first. */
  #queue: Pending[] = []
  /** Every event not yet delivered or reported, by event_id. */
  readonly #unsettled = new Map<string, Pending>()
  /** Events not yet settled, by flush() generation (keys ascending). */
  readonly #byEpoch = new Map<number, number>()
  #epoch = 0
  #waiters: { epoch: number; resolve: () => void }[] = []
  #timer: ReturnType<typeof setTimeout> | undefined
  /** Send every waiting event now, not only full batches (the timer fired, flush() or close()). */
  #due = false
  #requests = 0
  #state: 'open' | 'closing' | 'closed' | 'unauthorized' = 'open'
  /** Aborted when close() gives up: waits and requests end at once. */
  readonly #stop = new AbortController()
  readonly #unwatch: () => void
  /** Bytes of keepalive requests in flight (a browser allows 64 KiB). */
  #leavingBytes = 0

  constructor(options: ActivityClientOptions) {
    this.#o = {
      flushAt: 100,
      flushIntervalMs: 1000,
      maxQueuedEvents: 10_000,
      gzip: true,
      maxBatchEvents: 500,
      maxBatchBytes: 512 * 1024,
      maxInFlight: 4,
      maxBackoffMs: 30_000,
      requestTimeoutMs: 10_000,
      ...options,
    }
    if (!options.endpoint) throw new TypeError('ActivityClient: endpoint is required (the producer’s base URL)')
    this.#url = new URL(BATCH_PATH, options.endpoint.endsWith('/') ? options.endpoint : `${options.endpoint}/`).href
    this.#unwatch = watchPageHide(() => this.#sendBeforeHide())
  }

  /** Events tracked and neither delivered nor reported yet. */
  get pending(): number {
    return this.#unsettled.size
  }

  /** Queues an event and returns its event_id at once; an event it cannot send goes to onError. */
  track(input: TrackInput): string {
    const now = Date.now()
    const given = input.timestamp
    const made = given === undefined || given instanceof Date ? isoOf(given ?? now) : undefined
    const event: ActivityEvent = {
      event_id: input.event_id ?? uuidv7(now),
      user_id: input.user_id,
      event_type: input.event_type,
      timestamp: made ?? (given as string),
    }
    if (input.metadata !== undefined) event.metadata = input.metadata
    if (this.#unsettled.has(event.event_id)) return event.event_id
    if (this.#state !== 'open') {
      const code = this.#state === 'unauthorized' ? 'unauthorized' : 'closed'
      this.#report(code, `not sent: the client is ${this.#state}`, [event])
      return event.event_id
    }
    const detail = checkEvent(event as unknown as Record<string, unknown>, {
      madeTimestamp: made !== '' && made !== undefined,
      madeId: input.event_id === undefined,
    })
    if (made === '')
      detail.push({
        loc: ['body', 'timestamp'],
        msg: 'an invalid Date, or one outside years 1000 to 9999',
        type: 'datetime_parsing',
      })
    const json = detail.length === 0 ? toJson(event, detail) : ''
    // Bytes as JSON: its length where that cannot pass the limit (a character is 3 bytes at most).
    const bytes = json.length * 3 <= MAX_EVENT_BYTES ? json.length : encoder.encode(json).length
    if (bytes > MAX_EVENT_BYTES) {
      detail.push({
        loc: ['body'],
        msg: `the event is ${bytes} bytes as JSON; at most ${MAX_EVENT_BYTES}`,
        type: 'value_error',
      })
    }
    if (detail.length > 0) {
      this.#report(
        'invalid',
        `invalid event: ${detail.map((d) => `${d.loc.join('.')}: ${d.msg}`).join('; ')}`,
        [event],
        detail,
      )
      return event.event_id
    }
    if (this.#unsettled.size >= this.#o.maxQueuedEvents) {
      this.#report('queue_full', `not queued: ${this.#o.maxQueuedEvents} events wait already (maxQueuedEvents)`, [
        event,
      ])
      return event.event_id
    }
    const pending: Pending = { event, json, bytes, epoch: this.#epoch, done: false }
    this.#unsettled.set(event.event_id, pending)
    this.#byEpoch.set(this.#epoch, (this.#byEpoch.get(this.#epoch) ?? 0) + 1)
    this.#queue.push(pending)
    this.#pump()
    return event.event_id
  }

  /** Resolves once every event tracked before it was accepted by the server (202) or reported through onError. */
  flush(): Promise<void> {
    if (this.#unsettled.size === 0) return Promise.resolve()
    const epoch = this.#epoch++
    this.#due = true
    const done = new Promise<void>((resolve) => this.#waiters.push({ epoch, resolve }))
    this.#pump()
    return done
  }

  /**
   * Refuses new events, sends what waits, and stops: its timers are gone, so a Node process exits
   * by itself. Events still undelivered after `timeoutMs` are reported `closed`.
   */
  async close(timeoutMs = 10_000): Promise<void> {
    if (this.#state === 'closed') return
    if (this.#state === 'open') this.#state = 'closing'
    this.#unwatch()
    let timer: ReturnType<typeof setTimeout> | undefined
    const gaveUp = await Promise.race([
      this.flush().then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs))),
    ])
    clearTimeout(timer)
    this.#state = 'closed'
    clearTimeout(this.#timer)
    this.#timer = undefined
    if (gaveUp) {
      this.#stop.abort()
      const left = [...this.#unsettled.values()]
      this.#queue = []
      this.#settle(left, 'closed', `not delivered within close()'s ${timeoutMs} ms`)
    }
  }

  /** Starts requests while there is room and something to send; arms the timer for the rest. */
  #pump(): void {
    const sending = this.#state === 'open' || this.#state === 'closing'
    while (
      sending &&
      this.#requests < this.#o.maxInFlight &&
      this.#queue.length > 0 &&
      (this.#due || this.#queue.length >= this.#o.flushAt)
    ) {
      const batch = this.#take()
      this.#requests++
      void this.#deliver(batch).finally(() => {
        this.#requests--
        this.#pump()
      })
    }
    if (this.#queue.length === 0) {
      this.#due = false
      clearTimeout(this.#timer)
      this.#timer = undefined
    } else if (this.#timer === undefined && !this.#due && sending) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined
        this.#due = true
        this.#pump()
      }, this.#o.flushIntervalMs)
    }
  }

  /** The oldest waiting events, as many as one request takes. */
  #take(): Pending[] {
    let bytes = 0
    let count = 0
    for (const p of this.#queue) {
      if (count >= this.#o.maxBatchEvents || (count > 0 && bytes + p.bytes + 1 > this.#o.maxBatchBytes)) break
      bytes += p.bytes + 1
      count++
    }
    return this.#queue.splice(0, count)
  }

  /** Sends a batch until it is accepted, split or reported. */
  async #deliver(batch: Pending[]): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      batch = batch.filter((p) => !p.done) // a page being hidden may have sent some meanwhile
      if (batch.length === 0 || this.#stop.signal.aborted) return
      if (this.#state === 'unauthorized')
        return this.#settle(batch, 'unauthorized', 'not sent: the write key was refused')
      const result = await postBatch(bodyOf(batch), this.#post())
      const { status } = result
      if (status === 202 || status === 200) return this.#settle(batch)
      if (status === 400) return this.#refused(batch, result)
      if (status === 413 && batch.length > 1) return this.#split(batch)
      if (status === 413)
        return this.#settle(batch, 'too_large', 'the server refused the event as too large (413)', status)
      if (status === 401 || status === 403) return this.#unauthorized(batch, status)
      if (!(status === 0 || status === 408 || status === 429 || status >= 500)) {
        return this.#settle(batch, 'rejected', `the server answered ${status}; not retried`, status)
      }
      await this.#sleep(backoffMs(attempt, this.#o.maxBackoffMs, retryAfterMs(result.retryAfter)))
    }
  }

  /** A 400: the events it names are reported, the rest sent again; a batch it does not say more of is split. */
  async #refused(batch: Pending[], result: PostResult): Promise<void> {
    const named = new Map<number, ValidationDetail[]>()
    for (const d of result.detail ?? []) {
      const index = indexOf(d)
      if (typeof index === 'number' && batch[index]) {
        named.set(index, [...(named.get(index) ?? []), { ...d, loc: ['body', ...d.loc.slice(3)] }])
      }
    }
    if (named.size === 0) {
      if (batch.length > 1) return this.#split(batch)
      const detail = result.detail ?? []
      return this.#settle(batch, 'invalid', 'the server refused the event (400)', 400, detail)
    }
    for (const [index, detail] of named) {
      const p = batch[index] as Pending
      this.#settle([p], 'invalid', `the server refused the event: ${detail.map((d) => d.msg).join('; ')}`, 400, detail)
    }
    const rest = batch.filter((_, index) => !named.has(index))
    if (rest.length > 0) await this.#deliver(rest)
  }

  async #split(batch: Pending[]): Promise<void> {
    const half = Math.ceil(batch.length / 2)
    await this.#deliver(batch.slice(0, half))
    await this.#deliver(batch.slice(half))
  }

  /** 401/403: sending stops; this batch, and all that waits, reported. */
  #unauthorized(batch: Pending[], status: number): void {
    this.#state = 'unauthorized'
    const waiting = this.#queue
    this.#queue = []
    clearTimeout(this.#timer)
    this.#timer = undefined
    const message = `the server refused the write key (${status}); the client stopped sending`
    this.#settle([...batch, ...waiting], 'unauthorized', message, status)
  }

  /** Done with these events: delivered, or reported through onError with `code`. */
  #settle(
    events: Pending[],
    code?: ActivityErrorCode,
    message = '',
    status?: number,
    detail?: ValidationDetail[],
  ): void {
    const settled = events.filter((p) => !p.done)
    if (settled.length === 0) return
    for (const p of settled) {
      p.done = true
      this.#unsettled.delete(p.event.event_id)
      const left = (this.#byEpoch.get(p.epoch) ?? 1) - 1
      if (left === 0) this.#byEpoch.delete(p.epoch)
      else this.#byEpoch.set(p.epoch, left)
    }
    if (code)
      this.#report(
        code,
        message,
        settled.map((p) => p.event),
        detail,
        status,
      )
    const oldest = this.#byEpoch.keys().next()
    const first = oldest.done ? Infinity : oldest.value
    const ready = this.#waiters.filter((w) => w.epoch < first)
    this.#waiters = this.#waiters.filter((w) => w.epoch >= first)
    for (const w of ready) w.resolve()
  }

  #report(
    code: ActivityErrorCode,
    message: string,
    events: ActivityEvent[],
    detail?: ValidationDetail[],
    status?: number,
  ): void {
    const error = new ActivityClientError(code, message, events, detail, status)
    if (!this.#o.onError) {
      console.warn(`activity-client: ${events.length} event(s) not delivered: ${code}: ${message}`)
      return
    }
    try {
      this.#o.onError(error)
    } catch (err) {
      // The app's handler failing must not stop the deliveries of the others.
      console.error('activity-client: onError threw', err)
    }
  }

  #post(keepalive = false) {
    return {
      url: this.#url,
      writeKey: this.#o.writeKey,
      gzip: this.#o.gzip,
      timeoutMs: this.#o.requestTimeoutMs,
      keepalive,
      signal: this.#stop.signal,
    }
  }

  /** Waits `ms`, or less if close() gives up. */
  #sleep(ms: number): Promise<void> {
    const signal = this.#stop.signal
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      signal.addEventListener('abort', done)
    })
  }

  /** The page is going (or hidden): what waits goes now, in requests that outlive it. */
  #sendBeforeHide(): void {
    if (this.#state !== 'open' && this.#state !== 'closing') return
    // Hidden, then left: two calls, one request for each event; the 64 KiB shared by both.
    const waiting = [...this.#unsettled.values()].filter((p) => !p.leaving)
    for (const chunk of keepaliveChunks(waiting, this.#o.maxBatchEvents, KEEPALIVE_BYTES - this.#leavingBytes)) {
      const body = bodyOf(chunk)
      const bytes = encoder.encode(body).length
      this.#leavingBytes += bytes
      for (const p of chunk) p.leaving = true
      void postBatch(body, this.#post(true)).then((result) => {
        this.#leavingBytes -= bytes
        for (const p of chunk) p.leaving = false
        // Accepted: done, wherever else they are. Otherwise their own requests (or the queue) go on.
        if (result.status === 202 || result.status === 200) this.#settle(chunk)
      })
    }
    this.#pump()
  }
}

let lastMs = NaN
let lastIso = ''

/** A time as the contract's ISO form ('' for an invalid Date or one outside years 1000-9999), made once a millisecond. */
function isoOf(time: Date | number): string {
  const ms = typeof time === 'number' ? time : time.getTime()
  if (ms === lastMs) return lastIso
  const year = new Date(ms).getUTCFullYear()
  if (Number.isNaN(ms) || year < 1000 || year > 9999) return ''
  lastMs = ms
  lastIso = new Date(ms).toISOString()
  return lastIso
}

/** The event as JSON; a problem added to `detail` when it has none (a BigInt, a cycle in metadata). */
function toJson(event: ActivityEvent, detail: ValidationDetail[]): string {
  try {
    return JSON.stringify(event)
  } catch (err) {
    detail.push({
      loc: ['body', 'metadata'],
      msg: `not serializable as JSON: ${(err as Error).message}`,
      type: 'value_error',
    })
    return ''
  }
}

/** The body of a request: `{"batch":[...]}` of events serialized once, at track(). */
export function bodyOf(batch: Pending[]): string {
  return `{"batch":[${batch.map((p) => p.json).join(',')}]}`
}

/** A browser keeps at most 64 KiB of keepalive bodies in flight, all requests together; a margin for the wrappers. */
const KEEPALIVE_BYTES = 60 * 1024

/**
 * The oldest events whose bodies fit the keepalive limit, in requests of `perRequest` events at
 * most; those past the limit stay with their own requests (or the queue) while the page lives.
 */
export function keepaliveChunks(events: Pending[], perRequest: number, budget = KEEPALIVE_BYTES): Pending[][] {
  const chunks: Pending[][] = []
  for (const p of events) {
    const last = chunks.at(-1)
    const fresh = last === undefined || last.length >= perRequest
    budget -= p.bytes + 1 + (fresh ? 12 : 0)
    if (budget < 0) break
    if (fresh) chunks.push([p])
    else last.push(p)
  }
  return chunks
}
