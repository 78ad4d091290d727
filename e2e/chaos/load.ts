// The soak's load: clients that retry with the same event_id until a 202, and a poison trickle
// published straight to the queue. Both record what the verdict is checked against.
import { randomUUID } from 'node:crypto'
import type { ChannelModel, ConfirmChannel } from 'amqplib'
import { BATCH_MESSAGE_TYPE, MESSAGE_TYPE } from 'event-contract'
import { AppClients } from './app-clients.js'
import { QUEUE, type Cluster } from './cluster.js'

/** A request unanswered this long is hung (DESIGN: a dependency down is a 500 within seconds). */
export const REQUEST_BOUND_MS = 10_000
const BACKOFF_CAP_MS = 5000

/** Users an `erase-user` fault may erase: some of the clients' events are theirs (erasure.ts judges them). */
export const ERASABLE_USERS = { first: 2_000_000_001, count: 20 }
const erasable = (user: number) => user >= ERASABLE_USERS.first && user < ERASABLE_USERS.first + ERASABLE_USERS.count

/** An event of an erasable user, and when it was first sent and answered 202 (ms since the epoch). */
export interface ErasableEvent {
  user: number
  firstSent: number
  acceptedAt?: number
}

export interface LoadRecord {
  /** Every event_id answered 202, or confirmed on the queue inside a poison batch; not the erasable users'. */
  accepted: Set<string>
  /** The erasable users' events, by event_id: whether they must be stored depends on the erasures. */
  erasable: Map<string, ErasableEvent>
  /** Identities (messageId) of the letters the DLQ must hold: confirmed poison. */
  poison: Set<string>
  /** Poison whose confirm never came: it may or may not be on the queue. */
  maybePoison: Set<string>
  /** Client events given up on at the end, with their last answer. */
  unaccepted: Map<string, string>
  hung: { at: number; producer: string; path: string }[]
  /** Answers no retry can fix (a 4xx to a valid event). */
  refused: { at: number; status: number; body: string }[]
  statuses: Map<string, number>
  requests: number
}

/** An event; with `mayBeErasable`, one in twenty is an erasable user's. */
export function event(random: () => number, mayBeErasable = false) {
  // Mostly small, some up to about 6 KB: each fits a 64 KiB max_allowed_packet alone.
  const pad = random() < 0.05 ? 6000 : Math.floor(random() * 600)
  return {
    event_id: randomUUID(),
    user_id:
      mayBeErasable && random() < 0.05
        ? ERASABLE_USERS.first + Math.floor(random() * ERASABLE_USERS.count)
        : 1 + Math.floor(random() * 100_000),
    event_type: random() < 0.3 ? 'login' : 'page_view',
    timestamp: new Date(Date.UTC(2026, 1, 20) + Math.floor(random() * 86_400_000)).toISOString(),
    metadata: { page_url: `/products/${Math.floor(random() * 1000)}`, pad: 'x'.repeat(pad) },
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export class Load {
  readonly record: LoadRecord = {
    accepted: new Set(),
    erasable: new Map(),
    poison: new Set(),
    maybePoison: new Set(),
    unaccepted: new Map(),
    hung: [],
    refused: [],
    statuses: new Map(),
    requests: 0,
  }
  #making = true
  #giveUpAt = Infinity
  #next = 0
  #workers: Promise<void>[] = []
  readonly #apps: AppClients

  constructor(readonly cluster: Cluster) {
    this.#apps = new AppClients(cluster, this.record)
    cluster.poisonBurst = (count) => this.poisonBurst(count)
    cluster.batchBurst = (count) => this.batchBurst(count)
  }

  /**
   * ~150 events/s on /track (16 clients), ~10 batches/s of 1 to 200 events (4 clients), ~30
   * events/s through activity-client (app-clients.ts), 1 poison/2 s.
   */
  async start(): Promise<void> {
    await this.#apps.start()
    for (let i = 0; i < 16; i++) this.#workers.push(this.#client(() => [event(Math.random, true)], 16 / 150))
    for (let i = 0; i < 4; i++) {
      this.#workers.push(
        this.#client(
          () => Array.from({ length: 1 + Math.floor(Math.random() * 200) }, () => event(Math.random, true)),
          4 / 10,
        ),
      )
    }
    this.#workers.push(this.#poison())
  }

  /** No new events; the ones in hand are retried until a 202 or `retryMs` from now. */
  async stop(retryMs: number): Promise<void> {
    this.#making = false
    this.#giveUpAt = Date.now() + retryMs
    await Promise.all([...this.#workers, this.#apps.stop(retryMs)])
  }

  async #client(make: () => ReturnType<typeof event>[], everySeconds: number): Promise<void> {
    while (this.#making) {
      const started = Date.now()
      const events = make()
      await this.#deliver(events)
      await sleep(Math.max(0, everySeconds * 1000 - (Date.now() - started)))
    }
  }

  /** One request's events, retried with the same event_ids until a 202 or the give-up time. */
  async #deliver(events: ReturnType<typeof event>[]): Promise<void> {
    const single = events.length === 1 && Math.random() < 0.9
    const path = single ? '/api/v1/events/track' : '/api/v1/events/batch'
    const body = JSON.stringify(single ? events[0] : { batch: events })
    let last = ''
    const firstSent = Date.now()
    for (const e of events) {
      if (erasable(e.user_id)) this.record.erasable.set(e.event_id, { user: e.user_id, firstSent })
    }
    for (let attempt = 0; attempt < 10_000 && Date.now() < this.#giveUpAt; attempt++) {
      const producers = this.cluster.producers
      const producer = producers[this.#next++ % producers.length]!
      let wait = Math.min(BACKOFF_CAP_MS, 100 * 2 ** Math.min(attempt, 10))
      const sent = Date.now()
      this.record.requests++
      try {
        const res = await fetch(`${producer.url}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          signal: AbortSignal.timeout(REQUEST_BOUND_MS),
        })
        const text = await res.text()
        this.#count(String(res.status))
        if (res.status === 202) {
          const acceptedAt = Date.now()
          for (const e of events) {
            const known = this.record.erasable.get(e.event_id)
            if (known) known.acceptedAt = acceptedAt
            else this.record.accepted.add(e.event_id)
          }
          return
        }
        last = `${res.status} ${text.slice(0, 200)}`
        if (![429, 500, 502, 503].includes(res.status)) {
          this.record.refused.push({ at: this.cluster.elapsed(), status: res.status, body: text.slice(0, 300) })
          return
        }
        const retryAfter = Number(res.headers.get('retry-after'))
        if (retryAfter > 0) wait = Math.min(BACKOFF_CAP_MS, retryAfter * 1000)
      } catch (err) {
        const name = (err as Error).name
        if (name === 'TimeoutError') {
          this.record.hung.push({ at: (sent - this.cluster.t0) / 1000, producer: producer.name, path })
        }
        this.#count(name === 'TimeoutError' ? 'timeout' : 'network error')
        last = `${name}: ${(err as Error).message}`
      }
      await sleep(wait * (0.5 + Math.random() / 2))
    }
    for (const e of events) this.record.unaccepted.set(e.event_id, last)
  }

  #count(status: string): void {
    this.record.statuses.set(status, (this.record.statuses.get(status) ?? 0) + 1)
  }

  /** One poison every 2 s while the load runs. */
  async #poison(): Promise<void> {
    for (let n = 0; this.#making && n < 100_000; n++) {
      await sleep(2000)
      await this.publishPoison(n % 3)
    }
    await this.#poisonConnection?.close().catch(() => undefined)
  }

  /** `count` poison messages at once (a DLQ worth replaying), 50 awaiting confirms at a time. */
  async poisonBurst(count: number): Promise<void> {
    for (let i = 0; i < count; i += 50) {
      await Promise.all(Array.from({ length: Math.min(50, count - i) }, (_, j) => this.publishPoison((i + j) % 3)))
    }
  }

  /**
   * `count` batch messages of 1,000 good events of about 1 KB, straight to the queue as a
   * producer publishes them: the queue turning from single events to big batches at once.
   */
  async batchBurst(count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const events = Array.from({ length: 1000 }, () => ({
        ...event(Math.random),
        metadata: { page_url: '/burst', pad: 'b'.repeat(900) },
        received_at: new Date().toISOString(),
      }))
      const confirmed = await this.#publish(Buffer.from(JSON.stringify({ events })), randomUUID(), BATCH_MESSAGE_TYPE)
      if (confirmed) for (const e of events) this.record.accepted.add(e.event_id)
    }
  }

  /** One message with a confirm (5 s at most); false when none came (a new connection next time). */
  async #publish(content: Buffer, messageId: string, type: string): Promise<boolean> {
    try {
      const channel = await this.#channel()
      await Promise.race([
        new Promise<void>((resolve, reject) =>
          channel.sendToQueue(
            QUEUE,
            content,
            { persistent: true, messageId, type, contentType: 'application/json' },
            (err) => (err ? reject(err) : resolve()),
          ),
        ),
        sleep(5000).then(() => Promise.reject(new Error('no confirm within 5 s'))),
      ])
      return true
    } catch {
      const connection = this.#poisonConnection
      this.#poisonChannel = undefined
      await connection?.close().catch(() => undefined)
      return false
    }
  }

  #poisonChannel: Promise<ConfirmChannel> | undefined
  #poisonConnection: ChannelModel | undefined

  #channel(): Promise<ConfirmChannel> {
    this.#poisonChannel ??= (async () => {
      const connection = await this.cluster.rabbit.connect()
      this.#poisonConnection = connection
      connection.on('error', () => undefined) // a stop_app closes it: the next poison reconnects
      const channel = await connection.createConfirmChannel()
      channel.on('error', () => undefined)
      channel.on('close', () => (this.#poisonChannel = undefined))
      return channel
    })()
    return this.#poisonChannel
  }

  /**
   * Publishes one poison message with a confirm, of `kind` 0 (not JSON), 1 (JSON that is no
   * event) or 2 (a batch message with one bad event among four good ones), and records it.
   */
  async publishPoison(kind: number): Promise<void> {
    const id = randomUUID()
    let content: Buffer
    let type: string = MESSAGE_TYPE
    let letter = id
    let good: string[] = []
    if (kind === 0) content = Buffer.from(`not json ${id} {`)
    else if (kind === 1) content = Buffer.from(JSON.stringify({ hello: 'not an event', id }))
    else {
      const events = Array.from({ length: 5 }, () => ({ ...event(Math.random), received_at: new Date().toISOString() }))
      const bad = { ...events[2]!, user_id: -1 }
      events[2] = bad
      letter = bad.event_id
      good = events.filter((e) => e !== bad).map((e) => e.event_id)
      content = Buffer.from(JSON.stringify({ events }))
      type = BATCH_MESSAGE_TYPE
    }
    this.record.maybePoison.add(letter)
    // Unconfirmed, it stays a "maybe": it may or may not be on the queue.
    if (!(await this.#publish(content, id, type))) return
    this.record.maybePoison.delete(letter)
    this.record.poison.add(letter)
    for (const g of good) this.record.accepted.add(g)
  }
}
