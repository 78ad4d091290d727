// A stand-in of the producer's /batch for the client's unit tests: a real HTTP server whose answer
// to each request the test decides, recording every request (its events, decompressed).
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { gunzipSync } from 'node:zlib'

export interface Received {
  at: number
  headers: IncomingMessage['headers']
  bytes: number
  events: { event_id: string; user_id: number; event_type: string; timestamp: string; metadata?: unknown }[]
}

export type Answer = { status: number; headers?: Record<string, string>; body?: unknown } | 'drop' | 'hang'

export class FakeProducer {
  readonly requests: Received[] = []
  #server: Server | undefined
  #hung: (() => void)[] = []

  constructor(public answer: (request: Received, index: number) => Answer = () => ({ status: 202 })) {}

  get endpoint(): string {
    const address = this.#server?.address()
    if (!address || typeof address === 'string') throw new Error('not listening')
    return `http://127.0.0.1:${address.port}`
  }

  /** Distinct event_ids answered 202, with how many times each was sent. */
  accepted = new Map<string, number>()

  async start(): Promise<this> {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const raw = Buffer.concat(chunks)
        const text = (req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('utf8')
        const received: Received = {
          at: Date.now(),
          headers: req.headers,
          bytes: Buffer.byteLength(text),
          events: (JSON.parse(text) as { batch: Received['events'] }).batch,
        }
        this.requests.push(received)
        const answer = this.answer(received, this.requests.length - 1)
        if (answer === 'drop') return void req.socket.destroy()
        if (answer === 'hang') return void this.#hung.push(() => res.destroy())
        if (answer.status === 202) {
          for (const e of received.events) this.accepted.set(e.event_id, (this.accepted.get(e.event_id) ?? 0) + 1)
        }
        res.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers })
        res.end(JSON.stringify(answer.body ?? { status: 'accepted', count: received.events.length }))
      })
    })
    await new Promise<void>((resolve) => this.#server?.listen(0, '127.0.0.1', resolve))
    return this
  }

  async stop(): Promise<void> {
    for (const end of this.#hung.splice(0)) end()
    this.#server?.closeAllConnections()
    await new Promise((resolve) => this.#server?.close(resolve))
  }
}
