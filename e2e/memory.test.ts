// The consumer's memory, as shipped (its heap cap): a backlog that turns from single events to
// large /batch requests is drained without running out of heap, within its RSS bound.
import { afterEach, describe, expect, it } from 'vitest'
import { waitFor } from '../test-support/index.js'
import { rssBytes } from '../test-support/process.js'
import { acceptedIds, event, shippedNodeOptions, System, type PostOutcome } from './harness.js'

let system: System | undefined

afterEach(async () => {
  await system?.stop()
  system = undefined
})

describe('consumer memory', () => {
  it('drains 3,000 single events then 100 batches of 1,000 events of 1 KB under its heap cap, below 220 MB', async () => {
    const s = (system = await new System({
      consumer: false,
      consumerEnv: { NODE_OPTIONS: shippedNodeOptions('consumer-service') },
    }).start())
    const outcomes: PostOutcome[] = await s.postMany(3000, 32)
    for (let b = 0; b < 100; b++) {
      const batch = Array.from({ length: 1000 }, (_, j) => {
        const i = 10_000 + b * 1000 + j
        return { ...event(i), metadata: { i, pad: 'x'.repeat(900) } }
      })
      outcomes.push(await s.postBatch(batch))
    }
    const accepted = acceptedIds(outcomes)
    expect(accepted.size).toBe(103_000)

    // Before: the prefetch grew on the single events, then a window of 1 MiB batch messages came,
    // every one parsed on arrival: 62,000 events in hand, 287 MB, or out of heap with 200.
    await s.startConsumer()
    const pid = s.consumer?.child.pid as number
    let peak = 0
    const sampler = setInterval(() => {
      if (s.consumer?.child.exitCode === null) peak = Math.max(peak, rssBytes(pid))
    }, 100)
    try {
      const result = await s.settle(accepted, 120_000)
      expect(result.missing).toEqual([])
      expect(result.duplicated).toEqual([])
      expect(result.countsDrift).toEqual([])
    } finally {
      clearInterval(sampler)
    }
    console.log(`[memory] consumer peak RSS ${Math.round(peak / 2 ** 20)} MB draining 103,000 events`)
    expect(s.consumer?.child.exitCode).toBeNull()
    expect(peak).toBeLessThan(220 * 2 ** 20)
    expect((await s.queueDepth()).dead).toBe(0)
    await waitFor(async () => (await s.health(s.consumerHealth)).status === 200, { what: 'a healthy consumer' })
  })
})
