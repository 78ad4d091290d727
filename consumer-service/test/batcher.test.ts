import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { Batcher } from '../src/batcher.js'

beforeEach(() => {
  vi.useFakeTimers()
})
afterEach(() => {
  vi.useRealTimers()
})

function recorder(delayMs = 0) {
  const batches: number[][] = []
  let active = 0
  let maxActive = 0
  const handle = async (batch: number[]) => {
    active++
    maxActive = Math.max(maxActive, active)
    batches.push(batch)
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs))
    active--
  }
  return { batches, handle, maxActive: () => maxActive }
}

describe('Batcher', () => {
  it('hands out a full batch at once, without waiting', async () => {
    const r = recorder()
    const batcher = new Batcher<number>({ maxSize: 3, maxWaitMs: 1000, handle: r.handle })
    for (const n of [1, 2, 3]) batcher.push(n)
    await vi.advanceTimersByTimeAsync(0)
    expect(r.batches).toEqual([[1, 2, 3]])
  })

  it('counts items by their weight against maxSize (the rows a message carries)', async () => {
    const r = recorder()
    // Each number weighs itself: 2 + 3 fill a batch of 5, and 7 goes alone though it weighs more.
    const batcher = new Batcher<number>({ maxSize: 5, maxWaitMs: 1000, weightOf: (n) => n, handle: r.handle })
    for (const n of [2, 3, 7, 1]) batcher.push(n)
    await vi.advanceTimersByTimeAsync(0)
    expect(r.batches).toEqual([[2, 3], [7]])
    await vi.advanceTimersByTimeAsync(1000)
    expect(r.batches).toEqual([[2, 3], [7], [1]])
  })

  it('closes a batch at maxItems items however little they weigh, and at maxSize however few they are', async () => {
    const r = recorder()
    const batcher = new Batcher<number>({
      maxSize: 500,
      maxItems: 3,
      maxWaitMs: 1000,
      weightOf: (n) => n,
      handle: r.handle,
    })
    for (const n of [1, 1, 1, 250, 250, 250, 250]) batcher.push(n)
    await vi.advanceTimersByTimeAsync(0)
    // Three light ones make a batch; two messages of 250 rows fill 500 rows.
    expect(r.batches).toEqual([
      [1, 1, 1],
      [250, 250],
      [250, 250],
    ])
  })

  it('hands out a partial batch once its oldest item has waited maxWaitMs', async () => {
    const r = recorder()
    const batcher = new Batcher<number>({ maxSize: 10, maxWaitMs: 20, handle: r.handle })
    batcher.push(1)
    await vi.advanceTimersByTimeAsync(10)
    batcher.push(2)
    await vi.advanceTimersByTimeAsync(9)
    expect(r.batches).toEqual([])
    await vi.advanceTimersByTimeAsync(1)
    expect(r.batches).toEqual([[1, 2]])
  })

  it('splits by maxSize and keeps arrival order', async () => {
    const r = recorder()
    const batcher = new Batcher<number>({ maxSize: 2, maxWaitMs: 5, handle: r.handle })
    for (let n = 1; n <= 5; n++) batcher.push(n)
    await vi.advanceTimersByTimeAsync(10)
    expect(r.batches.flat()).toEqual([1, 2, 3, 4, 5])
    expect(r.batches.every((b) => b.length <= 2)).toBe(true)
  })

  it('caps a batch by bytes, letting a single oversized item through alone', async () => {
    const r = recorder()
    const batcher = new Batcher<number>({
      maxSize: 100,
      maxWaitMs: 5,
      maxBytes: 10,
      sizeOf: (n) => n,
      handle: r.handle,
    })
    for (const n of [4, 4, 4, 50, 1]) batcher.push(n)
    await vi.advanceTimersByTimeAsync(10)
    expect(r.batches).toEqual([[4, 4], [4], [50], [1]])
  })

  it('runs one batch at a time and collects what arrives meanwhile', async () => {
    const r = recorder(100)
    const batcher = new Batcher<number>({ maxSize: 2, maxWaitMs: 5, handle: r.handle })
    batcher.push(1)
    batcher.push(2)
    await vi.advanceTimersByTimeAsync(1)
    for (const n of [3, 4, 5]) batcher.push(n)
    await vi.advanceTimersByTimeAsync(500)
    expect(r.maxActive()).toBe(1)
    expect(r.batches).toEqual([[1, 2], [3, 4], [5]])
  })

  it('hands out up to `concurrency` batches at once, in arrival order', async () => {
    const r = recorder(100)
    const batcher = new Batcher<number>({ maxSize: 2, maxWaitMs: 5, concurrency: 2, handle: r.handle })
    for (let n = 1; n <= 6; n++) batcher.push(n)
    await vi.advanceTimersByTimeAsync(1)
    expect(r.batches).toEqual([
      [1, 2],
      [3, 4],
    ])
    await vi.advanceTimersByTimeAsync(500)
    expect(r.maxActive()).toBe(2)
    expect(r.batches).toEqual([
      [1, 2],
      [3, 4],
      [5, 6],
    ])
  })

  it('flush hands out everything now and waits for the handler', async () => {
    const r = recorder(50)
    const batcher = new Batcher<number>({ maxSize: 2, maxWaitMs: 10_000, handle: r.handle })
    for (const n of [1, 2, 3]) batcher.push(n)
    const flushed = batcher.flush()
    await vi.advanceTimersByTimeAsync(200)
    await flushed
    expect(r.batches).toEqual([[1, 2], [3]])
    expect(batcher.pending).toBe(0)
  })

  it('discard drops what is not handed out yet', async () => {
    const r = recorder()
    const batcher = new Batcher<number>({ maxSize: 10, maxWaitMs: 20, handle: r.handle })
    batcher.push(1)
    expect(batcher.discard()).toEqual([1])
    await vi.advanceTimersByTimeAsync(50)
    expect(r.batches).toEqual([])
  })
})
