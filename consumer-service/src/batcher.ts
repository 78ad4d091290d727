// Groups items into batches by count, bytes or waiting time, and hands them to the handler in
// arrival order, with at most `concurrency` batches being handled at once.

export interface BatcherOptions<T> {
  maxSize: number
  maxWaitMs: number
  /** Batches handled at the same time (default 1). */
  concurrency?: number
  /** Upper bound of a batch's summed `sizeOf`; one item alone may exceed it. */
  maxBytes?: number
  sizeOf?: (item: T) => number
  /** What an item counts for against `maxSize` (default 1); one item alone may exceed it. */
  weightOf?: (item: T) => number
  /** Items per batch at most, whatever they weigh (default: no limit). */
  maxItems?: number
  /** Must not throw: a batch is the handler's to settle. */
  handle: (batch: T[]) => Promise<void>
}

export class Batcher<T> {
  readonly #options: Required<BatcherOptions<T>>
  readonly #running = new Set<Promise<void>>()
  #items: T[] = []
  #bytes = 0
  #weight = 0
  #oldestAt = 0
  #timer: NodeJS.Timeout | undefined

  constructor(options: BatcherOptions<T>) {
    this.#options = {
      concurrency: 1,
      maxBytes: Number.POSITIVE_INFINITY,
      sizeOf: () => 0,
      weightOf: () => 1,
      maxItems: Number.POSITIVE_INFINITY,
      ...options,
    }
  }

  get pending(): number {
    return this.#items.length
  }

  push(item: T): void {
    if (this.#items.length === 0) this.#oldestAt = Date.now()
    this.#items.push(item)
    this.#bytes += this.#options.sizeOf(item)
    this.#weight += this.#options.weightOf(item)
    this.#pump(false)
  }

  /** Drops the items not yet handed out (their messages will be redelivered). */
  discard(): T[] {
    clearTimeout(this.#timer)
    this.#timer = undefined
    const dropped = this.#items
    this.#items = []
    this.#bytes = 0
    this.#weight = 0
    return dropped
  }

  /** Hands out everything now and resolves when the handler is done with all of it. */
  async flush(): Promise<void> {
    while (this.#items.length > 0 || this.#running.size > 0) {
      this.#pump(true)
      await Promise.race(this.#running)
    }
  }

  #pump(force: boolean): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    const { concurrency, maxWaitMs, maxSize, maxBytes, maxItems } = this.#options
    while (this.#running.size < concurrency && this.#items.length > 0) {
      const due = force || Date.now() - this.#oldestAt >= maxWaitMs
      const full = this.#weight >= maxSize || this.#bytes >= maxBytes || this.#items.length >= maxItems
      if (!due && !full) break
      const run: Promise<void> = this.#options.handle(this.#take()).finally(() => {
        this.#running.delete(run)
        this.#pump(false)
      })
      this.#running.add(run)
    }
    if (this.#items.length > 0 && this.#running.size < concurrency) {
      const wait = Math.max(0, this.#oldestAt + maxWaitMs - Date.now())
      this.#timer = setTimeout(() => this.#pump(false), wait)
    }
  }

  #take(): T[] {
    const { maxSize, maxBytes, maxItems, sizeOf, weightOf } = this.#options
    let count = 0
    let bytes = 0
    let weight = 0
    while (count < this.#items.length && count < maxItems) {
      const item = this.#items[count] as T
      const size = sizeOf(item)
      const itemWeight = weightOf(item)
      if (count > 0 && (bytes + size > maxBytes || weight + itemWeight > maxSize)) break
      bytes += size
      weight += itemWeight
      count++
    }
    this.#bytes -= bytes
    this.#weight -= weight
    // What stays has waited since #oldestAt at least: it goes out as soon as there is room.
    return this.#items.splice(0, count)
  }
}
