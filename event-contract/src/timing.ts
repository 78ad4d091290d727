// Waiting with bounds: backoff delays, sleeps that end when a signal aborts, and a promise given
// a time limit.

const RETRY_BASE_MS = 100

/** Delay before retry `attempt` (0-based): exponential from 100 ms, capped, with ±20 % jitter. */
export function backoffDelay(attempt: number, capMs: number, random: () => number = Math.random): number {
  const base = Math.min(capMs, RETRY_BASE_MS * 2 ** Math.min(attempt, 30))
  return Math.round(Math.min(capMs, base * (0.8 + 0.4 * random())))
}

/**
 * Waits `ms`; true if it did, false as soon as one of the signals is aborted. Its listeners go
 * when it ends (the signals live as long as a channel or the process, and sleeps come and go).
 */
export function sleep(ms: number, ...signals: AbortSignal[]): Promise<boolean> {
  if (signals.some((signal) => signal.aborted)) return Promise.resolve(false)
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(true), ms)
    function done(slept: boolean) {
      clearTimeout(timer)
      for (const signal of signals) signal.removeEventListener('abort', wake)
      resolve(slept)
    }
    function wake() {
      done(false)
    }
    for (const signal of signals) signal.addEventListener('abort', wake)
  })
}

/**
 * What `promise` settles with, or `fallback` once `ms` have passed. The promise runs on: a caller
 * that gave up on it handles what it brings later (a connection to give back, say); its
 * rejection after the fallback won is not unhandled, the race listens to it.
 */
export async function orAfter<T, F>(promise: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<F>((resolve) => {
    timer = setTimeout(() => resolve(fallback), ms)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}
