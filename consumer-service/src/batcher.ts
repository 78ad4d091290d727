// Groups items into batches by count, bytes or waiting time, and hands them to one handler at
// a time, in arrival order.

export interface BatcherOptions<T> {
  maxSize: number
  maxWaitMs: number
  /** Upper bound of a batch's summed `sizeOf`; one item alone may exceed it. */
  maxBytes?: number
  sizeOf?: (item: T) => number
  /** Must not throw: a batch is the handler's to settle. */
  handle: (batch: T[]) => Promise<void>
}

export class Batcher<T> {
  readonly #options: Required<BatcherOptions<T>>
  #items: T[] = []
  #bytes = 0
  #oldestAt = 0
  #timer: NodeJS.Timeout | undefined
  #running: Promise<void> | undefined

  constructor(options: BatcherOptions<T>) {
    this.#options = { maxBytes: Number.POSITIVE_INFINITY, sizeOf: () => 0, ...options }
  }

  get pending(): number {
    return this.#items.length
  }

  push(item: T): void {
    if (this.#items.length === 0) this.#oldestAt = Date.now()
    this.#items.push(item)
    this.#bytes += this.#options.sizeOf(item)
    if (this.#full()) this.#kick()
    else this.#arm()
  }

  /** Drops the items not yet handed out (their messages will be redelivered). */
  discard(): T[] {
    clearTimeout(this.#timer)
    this.#timer = undefined
    const dropped = this.#items
    this.#items = []
    this.#bytes = 0
    return dropped
  }

  /** Hands out everything now, batch by batch, and resolves when the handler is done. */
  async flush(): Promise<void> {
    clearTimeout(this.#timer)
    this.#timer = undefined
    await this.#running
    while (this.#items.length > 0) await this.#options.handle(this.#take())
  }

  /** Resolves when no batch is being handled. */
  async idle(): Promise<void> {
    await this.#running
  }

  #full(): boolean {
    return this.#items.length >= this.#options.maxSize || this.#bytes >= this.#options.maxBytes
  }

  #arm(): void {
    if (this.#timer || this.#running || this.#items.length === 0) return
    const wait = Math.max(0, this.#oldestAt + this.#options.maxWaitMs - Date.now())
    this.#timer = setTimeout(() => this.#kick(), wait)
  }

  #kick(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#running) return
    this.#running = this.#drain().finally(() => {
      this.#running = undefined
      this.#arm()
    })
  }

  async #drain(): Promise<void> {
    do {
      const batch = this.#take()
      if (batch.length > 0) await this.#options.handle(batch)
    } while (this.#full() || (this.#items.length > 0 && Date.now() - this.#oldestAt >= this.#options.maxWaitMs))
  }

  #take(): T[] {
    const { maxSize, maxBytes, sizeOf } = this.#options
    let count = 0
    let bytes = 0
    while (count < this.#items.length && count < maxSize) {
      const size = sizeOf(this.#items[count] as T)
      if (count > 0 && bytes + size > maxBytes) break
      bytes += size
      count++
    }
    const batch = this.#items.splice(0, count)
    this.#bytes -= bytes
    return batch
  }
}
