// The soak's apps: activity-client, one per producer (through a proxy the app-proxy fault turns
// hostile), tracking about 30 events a second between them through every fault. What a client
// did not report through onError must be stored once.
import { ActivityClient, type ActivityClientError } from '../../activity-client/src/index.js'
import { AppProxy } from './app-proxy.js'
import type { Cluster } from './cluster.js'
import { event, REQUEST_BOUND_MS, type LoadRecord } from './load.js'

const EVENTS_PER_SECOND_EACH = 15

export class AppClients {
  readonly #cluster: Cluster
  readonly #record: LoadRecord
  #making = true
  #running: Promise<void>[] = []
  readonly #clients: ActivityClient[] = []
  readonly #tracked: string[] = []
  readonly #reported: ActivityClientError[] = []

  constructor(cluster: Cluster, record: LoadRecord) {
    this.#cluster = cluster
    this.#record = record
  }

  async start(): Promise<void> {
    for (const producer of this.#cluster.producers) {
      // `slow` holds an answer past the client's timeout.
      const proxy = await AppProxy.start(() => producer.url, REQUEST_BOUND_MS + 1000)
      this.#cluster.appProxies.set(producer.name, proxy)
      const client = new ActivityClient({
        endpoint: proxy.url,
        flushAt: 20,
        flushIntervalMs: 250,
        maxBackoffMs: 5000,
        requestTimeoutMs: REQUEST_BOUND_MS,
        onError: (error) => this.#reported.push(error),
      })
      this.#clients.push(client)
      this.#running.push(this.#track(client))
    }
  }

  async #track(client: ActivityClient): Promise<void> {
    while (this.#making) {
      const { event_id: _, ...fields } = event(Math.random)
      this.#tracked.push(client.track(fields))
      await new Promise((resolve) => setTimeout(resolve, 1000 / EVENTS_PER_SECOND_EACH))
    }
  }

  /** No new events; the clients get `retryMs` to deliver what they hold, then the record is written. */
  async stop(retryMs: number): Promise<void> {
    this.#making = false
    await Promise.all(this.#running)
    await Promise.all(this.#clients.map((client) => client.close(retryMs)))
    const proxies = [...this.#cluster.appProxies.values()]
    await Promise.all(proxies.map((proxy) => proxy.stop()))
    const reported = new Set<string>()
    let proxyRefused = 0
    for (const error of this.#reported) {
      for (const e of error.events) {
        reported.add(e.event_id)
        // A 400 of the hostile proxy's own: the client rightly trusts it and gives the event up.
        if (error.code === 'invalid' && proxies.some((proxy) => proxy.refusedIds.has(e.event_id))) {
          proxyRefused++
          continue
        }
        // Not delivered within the time after healing: as a retrying client giving up. Anything
        // else (a 400, a refused key) is a valid event refused.
        if (error.code === 'closed' || error.code === 'queue_full')
          this.#record.unaccepted.set(e.event_id, `activity-client ${error.code}: ${error.message}`)
        else
          this.#record.refused.push({
            at: this.#cluster.elapsed(),
            status: error.status ?? 0,
            body: `activity-client ${error.code}: ${error.message}`,
          })
      }
    }
    for (const id of this.#tracked) if (!reported.has(id)) this.#record.accepted.add(id)
    this.#record.statuses.set('activity-client events delivered', this.#tracked.length - reported.size)
    this.#record.statuses.set("activity-client events given up on the proxy's 400", proxyRefused)
  }
}
