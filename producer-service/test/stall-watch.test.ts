// StallWatch: when a channel that confirms nothing counts as stalled, and when it is a slow link.
import { describe, expect, it } from 'vitest'
import { SLOWEST_LINK_BYTES_PER_SECOND, StallWatch } from '../src/stall-watch.js'

const TIMEOUT = 5000

describe('StallWatch', () => {
  it('a small message unconfirmed for a publish timeout, nothing moving: stalled, once', () => {
    const watch = new StallWatch(TIMEOUT)
    watch.reset(0)
    const oldest = { bytes: 300, sentAt: 0 }
    const idle = { bytesWritten: 300, writableLength: 0 }
    expect(watch.stalledFor(idle, oldest, 4000)).toBeUndefined()
    expect(watch.stalledFor(idle, oldest, 5100)).toBe(5100)
    expect(watch.stalledFor(idle, oldest, 5200)).toBeUndefined() // counted from the drop again
  })

  it('a confirm restarts the clock', () => {
    const watch = new StallWatch(TIMEOUT)
    watch.reset(0)
    watch.confirmed(4000)
    expect(watch.stalledFor(undefined, { bytes: 300, sentAt: 1000 }, 8000)).toBeUndefined()
    expect(watch.stalledFor(undefined, { bytes: 300, sentAt: 1000 }, 9100)).toBe(5100)
  })

  it('the kernel taking more of what waits in the socket is progress', () => {
    const watch = new StallWatch(TIMEOUT)
    watch.reset(0)
    const oldest = { bytes: 300, sentAt: 0 }
    expect(watch.stalledFor({ bytesWritten: 2_000_000, writableLength: 1_000_000 }, oldest, 5100)).toBeUndefined()
    expect(watch.stalledFor({ bytesWritten: 2_000_000, writableLength: 500_000 }, oldest, 9000)).toBeUndefined()
    // Frozen: nothing more taken for a publish timeout.
    expect(watch.stalledFor({ bytesWritten: 2_000_000, writableLength: 500_000 }, oldest, 14_100)).toBe(5100)
  })

  it('bytes handed over while nothing waits are not progress: a broker that reads and never confirms', () => {
    const watch = new StallWatch(TIMEOUT)
    watch.reset(0)
    const oldest = { bytes: 300, sentAt: 0 }
    expect(watch.stalledFor({ bytesWritten: 1000, writableLength: 0 }, oldest, 2000)).toBeUndefined()
    expect(watch.stalledFor({ bytesWritten: 9000, writableLength: 0 }, oldest, 5100)).toBe(5100)
  })

  it('gives a large oldest message time to cross at the slowest link speed', () => {
    const watch = new StallWatch(TIMEOUT)
    watch.reset(0)
    const big = { bytes: 1_100_000, sentAt: 0 }
    const allowed = TIMEOUT + (big.bytes / SLOWEST_LINK_BYTES_PER_SECOND) * 1000
    const handed = { bytesWritten: big.bytes, writableLength: 0 }
    expect(watch.stalledFor(handed, big, 10_000)).toBeUndefined()
    expect(watch.stalledFor(handed, big, allowed - 1)).toBeUndefined()
    expect(watch.stalledFor(handed, big, allowed + 1)).toBe(allowed + 1)
  })
})
