// Tells a channel that has stalled (confirms nothing, moves nothing) from a slow link still
// moving a message, so that the publisher drops only the first.

/**
 * The slowest link a message is given time to cross before its channel counts as stalled:
 * a 1 MiB batch may take 16 s at this pace (a 512 kbit/s link), on top of the publish timeout.
 */
export const SLOWEST_LINK_BYTES_PER_SECOND = 64 * 1024

/** What the watch reads of the socket under the channel (a net.Socket). */
export interface SocketProgress {
  readonly bytesWritten: number
  readonly writableLength: number
}

export class StallWatch {
  readonly #timeoutMs: number
  /** When the channel last confirmed anything (or opened). */
  #lastConfirmAt = Date.now()
  /** Bytes the socket had handed to the kernel when last looked at, and when that grew. */
  #handed = 0
  #movedAt = 0

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs
  }

  /** A new channel: nothing is owed yet. */
  reset(now = Date.now()): void {
    this.#lastConfirmAt = now
    this.#handed = 0
    this.#movedAt = 0
  }

  confirmed(now = Date.now()): void {
    this.#lastConfirmAt = now
  }

  /**
   * How long the channel has been silent when that is too long, else undefined. It is not
   * silent while the kernel takes more of what waits in the socket (growth counts only while
   * bytes wait: then the link is what holds them), nor while the oldest message awaiting its
   * confirm may still be crossing at SLOWEST_LINK_BYTES_PER_SECOND: the kernel may have taken
   * all of it at once, and the broker confirms only once its last byte is in.
   */
  stalledFor(socket: SocketProgress | undefined, oldest: { bytes: number; sentAt: number }, now = Date.now()) {
    if (socket) {
      const handed = socket.bytesWritten - socket.writableLength
      if (handed > this.#handed && socket.writableLength > 0) this.#movedAt = now
      this.#handed = handed
    }
    const silentMs = now - Math.max(this.#lastConfirmAt, this.#movedAt, oldest.sentAt)
    const allowedMs = this.#timeoutMs + (oldest.bytes / SLOWEST_LINK_BYTES_PER_SECOND) * 1000
    if (silentMs < allowedMs) return undefined
    this.#lastConfirmAt = now // one drop per stall
    return silentMs
  }
}
