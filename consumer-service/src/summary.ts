// The worker's summary line: one info line per interval with something to say, readable at any
// rate, summed from the worker's events.
import type { Logger } from 'pino'
import type { WorkerEmitter } from './worker-events.js'

function empty() {
  return { stored: 0, duplicates: 0, erased: 0, deadLettered: 0, batches: 0, lagMs: 0 }
}

/** Logs a summary every `intervalMs`; `close()` logs what is left and stops. */
export function logSummaries(events: WorkerEmitter, logger: Logger, intervalMs = 10_000): { close(): void } {
  let tally = empty()
  const onStored = ({
    inserted,
    duplicates,
    erased,
    lagMs,
  }: {
    inserted: number
    duplicates: number
    erased: number
    lagMs: number
  }) => {
    tally.batches++
    tally.stored += inserted
    tally.duplicates += duplicates
    tally.erased += erased
    tally.lagMs = lagMs
  }
  const onDeadLettered = ({ count }: { count: number }) => {
    tally.deadLettered += count
  }
  events.on('stored', onStored)
  events.on('deadLettered', onDeadLettered)
  const summarize = () => {
    if (tally.batches === 0 && tally.deadLettered === 0) return
    logger.info({ ...tally, seconds: intervalMs / 1000 }, 'events stored')
    tally = empty()
  }
  // A summary keeps nothing alive: the process ends when its connections do.
  const timer = setInterval(summarize, intervalMs).unref()
  return {
    close() {
      clearInterval(timer)
      events.off('stored', onStored)
      events.off('deadLettered', onDeadLettered)
      summarize()
    },
  }
}
