// activity-client driven the way an app drives it, for the end-to-end tests of the client.
import { ActivityClient, type ActivityClientError } from '../activity-client/src/index.js'
import type { System } from './harness.js'

/** A client of `s`'s producer, with the errors it reports. */
export function clientOf(s: System, options: { flushAt?: number; flushIntervalMs?: number } = {}) {
  const errors: ActivityClientError[] = []
  const client = new ActivityClient({ endpoint: s.api, onError: (e) => errors.push(e), maxBackoffMs: 2000, ...options })
  return { client, errors }
}

/** Tracks `count` events at `perSecond`; returns their event_ids. */
export async function trackAt(client: ActivityClient, count: number, perSecond: number, first = 0): Promise<string[]> {
  const ids: string[] = []
  const started = Date.now()
  for (let i = 0; i < count; i++) {
    ids.push(client.track({ user_id: 1 + (i % 50), event_type: 'page_view', metadata: { i: first + i } }))
    const due = started + ((i + 1) * 1000) / perSecond
    if (due > Date.now()) await new Promise((resolve) => setTimeout(resolve, due - Date.now()))
  }
  return ids
}
