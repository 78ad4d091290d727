import { describe, expect, it } from 'vitest'
import { LEGACY_MESSAGE_BYTES, PrefetchPlan } from '../src/prefetch.js'

const MiB = 1024 * 1024
const limits = { prefetch: 1000, maxInHandBytes: 64 * MiB, maxMessageBytes: 65 * 1024 }

/** Feeds sizes, applying each change as the worker does; returns the prefetches it went through. */
function run(plan: PrefetchPlan, sizes: number[]): number[] {
  const seen = [plan.current]
  for (const bytes of sizes) {
    const target = plan.observe(bytes)
    if (target !== undefined) {
      plan.current = target
      seen.push(target)
    }
  }
  return seen
}

describe('PrefetchPlan', () => {
  it('starts small enough for 1 MiB messages, and rises once the messages are of the expected size', () => {
    const plan = new PrefetchPlan(limits)
    expect(plan.current).toBe(Math.floor((64 * MiB) / LEGACY_MESSAGE_BYTES))
    expect(plan.current * LEGACY_MESSAGE_BYTES).toBeLessThanOrEqual(64 * MiB)
    expect(run(plan, Array(2 * plan.current).fill(300))).toEqual([60, 1000])
  })

  it('falls at once for a message larger than expected, so that a window of them fits the budget', () => {
    const plan = new PrefetchPlan(limits)
    const sizes = [...Array(200).fill(300), 2 * MiB, ...Array(100).fill(60_000), ...Array(5000).fill(300)]
    const prefetches: number[] = []
    for (const bytes of sizes) {
      const target = plan.observe(bytes)
      if (target !== undefined) plan.current = target
      // A window of messages the size of the one just seen fits in 64 MiB.
      expect(plan.current * bytes).toBeLessThanOrEqual(64 * MiB)
      if (prefetches.at(-1) !== plan.current) prefetches.push(plan.current)
    }
    expect(prefetches).toEqual([60, 1000, 32, 1000])
  })

  it('never rises above CONSUMER_PREFETCH, nor falls below 1', () => {
    const small = new PrefetchPlan({ prefetch: 40, maxInHandBytes: 64 * MiB, maxMessageBytes: 65 * 1024 })
    expect(run(small, Array(500).fill(300))).toEqual([40])
    const tiny = new PrefetchPlan({ prefetch: 1000, maxInHandBytes: MiB, maxMessageBytes: 65 * 1024 })
    expect(tiny.current).toBe(1)
    expect(run(tiny, Array(10).fill(300))).toEqual([1, 15])
  })

  it('stays low while larger messages keep coming', () => {
    const plan = new PrefetchPlan(limits)
    const mixed = Array.from({ length: 2000 }, (_, i) => (i % 50 === 0 ? MiB : 300))
    expect(run(plan, mixed)).toEqual([60])
  })
})
