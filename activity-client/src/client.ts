// The client apps send events with: track() queues, batches go to /batch by size and by time,
// each retried with the same event_ids until the server accepts it, splits what it refuses, and
// reports through onError whatever it will not deliver. Bounded; flush() and close().
import { ActivityClientError, type ActivityErrorCode, type ActivityEvent } from './errors.js'
import { bodyOf, prepare, type Pending, type TrackInput } from './event.js'
import { postBatch, type PostResult } from './http.js'
import { batchUrl, withDefaults, type ActivityClientOptions, type Settings } from './options.js'
import { Keepalive, watchPageHide } from './page.js'
import { backoffMs, retryAfterMs } from './retry.js'
import type { ValidationDetail } from './rules.js'
import { Settlement } from './settlement.js'
import { uuidv7 } from './uuid.js'

export type { TrackInput } from './event.js'
export type { ActivityClientOptions } from './options.js'

/** A 400 says which events of the batch it refuses at ['body', 'batch', index, ...]. */
const indexOf = (detail: ValidationDetail | null) =>
  Array.isArray(detail?.loc) && detail.loc[1] === 'batch' ? detail.loc[2] : undefined

export class ActivityClient {
  readonly #o: Settings
  readonly #url: string
  /** Waiting to be sent, oldest first. */
  #queue: Pending[] = []
  /** Every event not yet delivered or reported, and flush()'s promises. */
  readonly #held = new Settlement()
  #timer: ReturnType<typeof setTimeout> | undefined
  /** Send every waiting event now, not only full batches (the timer fired, flush() or close()). */
  #due = false
  #requests = 0
  #state: 'open' | 'closing' | 'closed' | 'unauthorized' = 'open'
  /** Aborted when close() gives up: waits and requests end at once. */
  readonly #stop = new AbortController()
  /** Aborted when the key is refused: batches waiting to retry wake to be reported. */
  readonly #wake = new AbortController()
  readonly #unwatch: () => void
  readonly #keepalive = new Keepalive()

  constructor(options: ActivityClientOptions) {
    this.#o = withDefaults(options)
    this.#url = batchUrl(options)
    this.#unwatch = watchPageHide(() => this.#sendBeforeHide())
  }

  /** Events tracked and neither delivered nor reported yet. */
  get pending(): number {
    return this.#held.size
  }

  /** Queues an event and returns its event_id at once; an event it cannot send goes to onError. Never throws. */
  track(input: TrackInput): string {
    const now = Date.now()
    // As the server stores it: lower-case (two spellings of one id are one event).
    const id = typeof input?.event_id === 'string' ? input.event_id.toLowerCase() : (input?.event_id ?? uuidv7(now))
    try {
      return this.#track(input, id, now)
    } catch (err) {
      // A metadata getter that throws, a Proxy, input that is no object: reported, never thrown at the app.
      // Only its id: reading the input again could throw again.
      const event = { event_id: String(id) } as ActivityEvent
      this.#report('invalid', `not tracked: ${(err as Error).message}`, [event])
      return String(id)
    }
  }

  #track(input: TrackInput, id: string, now: number): string {
    if (this.#held.has(id)) return id
    const { event, json, bytes, detail } = prepare(input, id, now)
    if (this.#state !== 'open') {
      const code = this.#state === 'unauthorized' ? 'unauthorized' : 'closed'
      this.#report(code, `not sent: the client is ${this.#state}`, [event])
    } else if (detail.length > 0) {
      const problems = detail.map((d) => `${d.loc.join('.')}: ${d.msg}`).join('; ')
      this.#report('invalid', `invalid event: ${problems}`, [event], detail)
    } else if (this.#held.size >= this.#o.maxQueuedEvents) {
      const message = `not queued: ${this.#o.maxQueuedEvents} events wait already (maxQueuedEvents)`
      this.#report('queue_full', message, [event])
    } else if (this.#held.bytes + bytes > this.#o.maxQueuedBytes) {
      const message = `not queued: ${this.#held.bytes} bytes of events wait already (maxQueuedBytes)`
      this.#report('queue_full', message, [event])
    } else {
      this.#queue.push(this.#held.add(event, json, bytes))
      this.#pump()
    }
    return id
  }

  /** Resolves once every event tracked before it was accepted by the server (202) or reported through onError. */
  flush(): Promise<void> {
    const done = this.#held.settled()
    this.#due = true
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
      const left = this.#held.values()
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
      void this.#deliver(batch)
        .catch((err: unknown) => {
          // A fault of this code must not strand events: whatever of the batch is not done is reported.
          this.#settle(batch, 'rejected', `not delivered: the client failed: ${(err as Error).message}`)
        })
        .finally(() => {
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
    this.#wake.abort() // batches waiting to retry are reported now, not after their backoff
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
    const settled = this.#held.settle(events)
    if (code && settled.length > 0) {
      this.#report(
        code,
        message,
        settled.map((p) => p.event),
        detail,
        status,
      )
    }
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

  /** Waits `ms`, or less if close() gives up or the key is refused meanwhile. */
  #sleep(ms: number): Promise<void> {
    const signals = [this.#stop.signal, this.#wake.signal]
    if (signals.some((signal) => signal.aborted)) return Promise.resolve()
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        for (const signal of signals) signal.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      for (const signal of signals) signal.addEventListener('abort', done)
    })
  }

  /** The page is going (or hidden): what waits goes now, in requests that outlive it. */
  #sendBeforeHide(): void {
    if (this.#state !== 'open' && this.#state !== 'closing') return
    const post = (body: string) => postBatch(body, this.#post(true))
    // Accepted: done, wherever else they are.
    this.#keepalive.send(this.#held.values(), this.#o.maxBatchEvents, post, (chunk) => this.#settle(chunk))
    this.#pump()
  }
}
