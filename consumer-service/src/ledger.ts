// What is settled on one channel. RabbitMQ numbers a channel's deliveries 1, 2, 3, ... and an
// ack with `allUpTo` settles every unsettled delivery at or below its tag. So the ledger sends
// one only for a run of stored deliveries at its front: nothing below that run is unsettled,
// and no ack can cover a delivery that is held. A stored delivery behind a held one waits for
// it (or is acked alone by `ackStored`). "Stored" means done with: its events are in the table
// and what could not be stored is confirmed on the dead-letter queue. A delivery that may wait
// long (its dead letter refused, retried with backoff) is parked: stored deliveries behind it are
// acked one by one instead of waiting for it, so the prefetch never fills behind one letter.
import type { ConfirmChannel, ConsumeMessage } from 'amqplib'
import type { Logger } from 'pino'

interface Entry {
  msg: ConsumeMessage
  stored: boolean
  /** Waiting long, for something other than the database (its letter is being retried). */
  parked: boolean
  since: number
  /** The events it carries (a batch message many). */
  events: number
}

export class Ledger {
  readonly channel: ConfirmChannel
  /** Unsettled deliveries by tag, in tag order (they arrive in order): held, or stored. */
  readonly #open = new Map<number, Entry>()
  readonly #lost = new AbortController()
  readonly #log: Logger
  #events = 0
  #bytes = 0
  /** Parked deliveries among the open ones. */
  #parked = 0
  /** Told when nothing is left unsettled (or the channel is lost). */
  #drainWaiters: (() => void)[] = []

  constructor(channel: ConfirmChannel, logger: Logger) {
    this.channel = channel
    this.#log = logger
  }

  /** Aborted when the channel is gone: its deliveries come back from the broker. */
  get signal(): AbortSignal {
    return this.#lost.signal
  }

  get lost(): boolean {
    return this.#lost.signal.aborted
  }

  /** What the unsettled deliveries weigh: their events and their bytes. */
  get inHand(): { events: number; bytes: number } {
    return { events: this.#events, bytes: this.#bytes }
  }

  /** Since when the oldest unsettled delivery has waited (undefined: none). */
  get oldestSince(): number | undefined {
    for (const entry of this.#open.values()) return entry.since
    return undefined
  }

  hold(msg: ConsumeMessage, events = 1): void {
    this.#open.set(msg.fields.deliveryTag, { msg, stored: false, parked: false, since: Date.now(), events })
    this.#events += events
    this.#bytes += msg.content.length
  }

  #forget(tag: number, entry: Entry): void {
    this.#open.delete(tag)
    if (entry.parked) this.#parked--
    this.#events -= entry.events
    this.#bytes -= entry.msg.content.length
    this.#wakeIfDrained()
  }

  /**
   * Resolves once every delivery so far is settled or parked (a parked one may wait for as long
   * as the DLQ refuses), or the channel is lost.
   */
  drained(): Promise<void> {
    if (this.#open.size === this.#parked || this.lost) return Promise.resolve()
    return new Promise((resolve) => this.#drainWaiters.push(resolve))
  }

  #wakeIfDrained(): void {
    if (this.#open.size !== this.#parked && !this.lost) return
    for (const wake of this.#drainWaiters.splice(0)) wake()
  }

  /**
   * Marks deliveries stored and acks the run of stored ones at the front, in one frame; and,
   * behind a parked delivery, each stored one alone.
   */
  stored(msgs: ConsumeMessage[]): void {
    if (this.lost) return
    for (const msg of msgs) {
      const entry = this.#open.get(msg.fields.deliveryTag)
      if (entry) entry.stored = true
    }
    this.#settle()
  }

  /**
   * Acks one delivery alone, whatever is held before it: a worn one whose fresh copy is queued.
   * Left to wait for the ones before it, it would come back at every lost channel, a delivery
   * more each time, and be copied again, until the broker dead-lettered it at its limit.
   */
  settleAlone(msg: ConsumeMessage): void {
    const entry = this.#open.get(msg.fields.deliveryTag)
    if (this.lost || !entry) return
    this.#forget(msg.fields.deliveryTag, entry)
    this.#send(() => this.channel.ack(msg, false))
    // It may have been the front: what is stored behind it goes now.
    this.#settle()
  }

  /** Marks a delivery as one that may wait long: what is stored behind it is acked without it. */
  park(msg: ConsumeMessage): void {
    const entry = this.#open.get(msg.fields.deliveryTag)
    if (this.lost || !entry || entry.parked || entry.stored) return
    entry.parked = true
    this.#parked++
    this.#settle()
    this.#wakeIfDrained()
  }

  #settle(): void {
    let last: ConsumeMessage | undefined
    for (const [tag, entry] of this.#open) {
      if (!entry.stored) break
      this.#forget(tag, entry)
      last = entry.msg
    }
    if (last) this.#send(() => this.channel.ack(last, true))
    if (this.#parked === 0) return
    let behindParked = false
    for (const [tag, entry] of this.#open) {
      if (entry.parked && !entry.stored) behindParked = true
      else if (entry.stored && behindParked) {
        this.#forget(tag, entry)
        this.#send(() => this.channel.ack(entry.msg, false))
      }
    }
  }

  /** Acks, one by one, the stored deliveries still waiting behind held ones (before a stop). */
  ackStored(): void {
    if (this.lost) return
    for (const [tag, entry] of this.#open) {
      if (!entry.stored) continue
      this.#forget(tag, entry)
      this.#send(() => this.channel.ack(entry.msg, false))
    }
  }

  /** The channel is gone: nothing can be settled on it any more. */
  lose(): void {
    this.#open.clear()
    this.#parked = 0
    this.#events = 0
    this.#bytes = 0
    this.#lost.abort()
    this.#wakeIfDrained()
  }

  #send(settle: () => void): void {
    try {
      settle()
    } catch (err) {
      // The channel closed under us: the broker redelivers, and the duplicate is ignored.
      this.#log.warn({ err }, 'could not settle a delivery; the broker will redeliver it')
      this.lose()
    }
  }
}
