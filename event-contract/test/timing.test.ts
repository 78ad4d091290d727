// The waiting helpers, in milliseconds: backoff, sleeps ended by a signal, a promise's time limit.
import { describe, expect, it } from 'vitest'
import { backoffDelay, orAfter, sleep } from '../src/timing.js'

describe('backoffDelay', () => {
  it('grows exponentially from 100 ms', () => {
    const mid = () => 0.5
    expect([0, 1, 2, 3].map((attempt) => backoffDelay(attempt, 30_000, mid))).toEqual([100, 200, 400, 800])
  })

  it('is capped', () => {
    expect(backoffDelay(50, 30_000, () => 1)).toBe(30_000)
    expect(backoffDelay(50, 30_000, () => 0)).toBe(24_000)
  })
})

describe('sleep', () => {
  it('waits its time and says so', async () => {
    const started = performance.now()
    expect(await sleep(20, new AbortController().signal)).toBe(true)
    expect(performance.now() - started).toBeGreaterThanOrEqual(19)
  })

  it('ends at once, false, when a signal aborts, and leaves no listener behind', async () => {
    const stop = new AbortController()
    const other = new AbortController()
    const listeners = { count: 0 }
    const counted = other.signal.addEventListener.bind(other.signal)
    other.signal.addEventListener = ((...args: Parameters<AbortSignal['addEventListener']>) => {
      listeners.count++
      counted(...args)
    }) as AbortSignal['addEventListener']
    const removed = other.signal.removeEventListener.bind(other.signal)
    other.signal.removeEventListener = ((...args: Parameters<AbortSignal['removeEventListener']>) => {
      listeners.count--
      removed(...args)
    }) as AbortSignal['removeEventListener']
    const slept = sleep(60_000, stop.signal, other.signal)
    stop.abort()
    expect(await slept).toBe(false)
    expect(listeners.count).toBe(0)
  })

  it('does not wait when a signal is already aborted', async () => {
    expect(await sleep(60_000, AbortSignal.abort())).toBe(false)
  })
})

describe('orAfter', () => {
  it('gives the promise its value when it comes in time', async () => {
    expect(await orAfter(Promise.resolve(7), 1000, 'late')).toBe(7)
  })

  it('gives the fallback when the time is up; a later rejection is not unhandled', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const slow = new Promise((_, reject) => setTimeout(() => reject(new Error('too late anyway')), 30))
      expect(await orAfter(slow, 5, 'late')).toBe('late')
      await new Promise((resolve) => setTimeout(resolve, 60))
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  it('passes a rejection in time on', async () => {
    await expect(orAfter(Promise.reject(new Error('refused')), 1000, 'late')).rejects.toThrow('refused')
  })
})
