// Which events are still in the client's hands, and flush()'s promises: each resolves once every
// event tracked before it is settled (delivered, or reported), whatever order they settle in.
import type { Pending } from './event.js'

export class Settlement {
  /** Every event not yet settled, by event_id. */
  readonly #unsettled = new Map<string, Pending>()
  /** Events not yet settled, by flush() generation: keys ascending, as generations only grow. */
  readonly #byEpoch = new Map<number, number>()
  #epoch = 0
  /** JSON bytes of the events not yet settled. */
  #bytes = 0
  #waiters: { epoch: number; resolve: () => void }[] = []

  get size(): number {
    return this.#unsettled.size
  }

  /** Bytes of JSON held: what a long outage costs in memory. */
  get bytes(): number {
    return this.#bytes
  }

  has(eventId: string): boolean {
    return this.#unsettled.has(eventId)
  }

  values(): Pending[] {
    return [...this.#unsettled.values()]
  }

  /** Takes an event in, of the current generation. */
  add(event: Pending['event'], json: string, bytes: number): Pending {
    const pending: Pending = { event, json, bytes, epoch: this.#epoch, done: false }
    this.#unsettled.set(event.event_id, pending)
    this.#bytes += bytes
    this.#byEpoch.set(this.#epoch, (this.#byEpoch.get(this.#epoch) ?? 0) + 1)
    return pending
  }

  /** Resolves once every event taken in before this call is settled. */
  settled(): Promise<void> {
    if (this.#unsettled.size === 0) return Promise.resolve()
    const epoch = this.#epoch++
    return new Promise<void>((resolve) => this.#waiters.push({ epoch, resolve }))
  }

  /** Marks these done; returns those that were not yet (each event settles once). */
  settle(events: Pending[]): Pending[] {
    const settled = events.filter((p) => !p.done)
    if (settled.length === 0) return settled
    for (const p of settled) {
      p.done = true
      this.#unsettled.delete(p.event.event_id)
      this.#bytes -= p.bytes
      const left = (this.#byEpoch.get(p.epoch) ?? 1) - 1
      if (left === 0) this.#byEpoch.delete(p.epoch)
      else this.#byEpoch.set(p.epoch, left)
    }
    const oldest = this.#byEpoch.keys().next()
    const first = oldest.done ? Infinity : oldest.value
    const ready = this.#waiters.filter((w) => w.epoch < first)
    this.#waiters = this.#waiters.filter((w) => w.epoch >= first)
    for (const w of ready) w.resolve()
    return settled
  }
}
