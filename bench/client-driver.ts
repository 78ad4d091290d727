// A process that sends events through activity-client (its build, as shipped) as fast as it
// takes them, for `seconds`, then flushes; prints what it delivered as JSON. Run by client.ts.
import { ActivityClient } from '../activity-client/dist/index.js'

const [url = '', secondsText = '10'] = process.argv.slice(2)
const seconds = Number(secondsText)
let failed = 0
const options = JSON.parse(process.env.BENCH_CLIENT_OPTIONS || '{}') as Record<string, unknown>
const client = new ActivityClient({ endpoint: url, onError: (e) => (failed += e.events.length), ...options })
/** Events held at most: the app tracks faster than any server takes, so it waits for room. */
const HELD = 5000
const started = Date.now()
const deadline = started + seconds * 1000
let tracked = 0
while (Date.now() < deadline) {
  if (client.pending < HELD) {
    for (let i = 0; i < 100; i++) {
      client.track({ user_id: 1 + (tracked % 1000), event_type: 'page_view', metadata: { page: '/products/item-xyz' } })
      tracked++
    }
  }
  await new Promise((resolve) => setImmediate(resolve))
}
await client.close(60_000)
const elapsed = (Date.now() - started) / 1000
console.log(JSON.stringify({ delivered: tracked - failed, failed, seconds: elapsed }))
