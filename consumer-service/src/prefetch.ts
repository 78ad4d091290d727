// The broker's prefetch, in messages, sized so that what the worker holds fits its byte budget
// whatever the messages weigh: prefetch × the largest message expected ≤ the budget. RabbitMQ
// counts messages, not bytes, so the bound holds by construction only for messages up to the
// size expected; a queue may still hold the 1 MiB batch messages producers made before batches
// were split, so the plan starts as if it did and rises once the messages seen are of the
// expected size. A message larger than assumed lowers it.

export interface PrefetchLimits {
  /** CONSUMER_PREFETCH: messages in hand at most. */
  prefetch: number
  /** CONSUMER_MAX_IN_HAND_BYTES: message bytes in hand at most. */
  maxInHandBytes: number
  /** CONSUMER_MAX_MESSAGE_BYTES: the largest message expected. */
  maxMessageBytes: number
}

/** The prefetch that fits the budget if every message were `bytes` large. */
export function prefetchFitting({ prefetch, maxInHandBytes }: PrefetchLimits, bytes: number): number {
  return Math.max(1, Math.min(prefetch, Math.floor(maxInHandBytes / bytes)))
}

/** The largest message producers made before batches were split: a 1 MiB body, and its envelope. */
export const LEGACY_MESSAGE_BYTES = 1024 * 1024 + 64 * 1024
/** Messages of the expected size in a row, as a multiple of the prefetch, before it rises. */
const RISE_AFTER_WINDOWS = 2

export class PrefetchPlan {
  readonly #limits: PrefetchLimits
  /** The largest message assumed possible now. */
  #assumed: number
  /** Messages of at most the expected size seen in a row. */
  #expectedRun = 0
  /** The prefetch in force. */
  current: number

  constructor(limits: PrefetchLimits) {
    this.#limits = limits
    this.#assumed = Math.max(limits.maxMessageBytes, LEGACY_MESSAGE_BYTES)
    this.current = prefetchFitting(this.#limits, this.#assumed)
  }

  /** Told each delivery's size; returns the prefetch to change to, or undefined to keep it. */
  observe(bytes: number): number | undefined {
    const { maxMessageBytes } = this.#limits
    if (bytes > this.#assumed) this.#assumed = bytes
    if (bytes <= maxMessageBytes) this.#expectedRun++
    else this.#expectedRun = 0
    if (this.#assumed > maxMessageBytes && this.#expectedRun >= RISE_AFTER_WINDOWS * this.current) {
      this.#assumed = maxMessageBytes
    }
    const target = prefetchFitting(this.#limits, this.#assumed)
    return target === this.current ? undefined : target
  }
}
