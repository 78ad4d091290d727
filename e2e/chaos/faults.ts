// The fault vocabulary's shape and its process and link faults; server-faults.ts has the rest.
import { QUEUE, type Cluster, type Service } from './cluster.js'

export const DLQ = `${QUEUE}.dlq`
/** A consumer or producer asked to stop must exit 0 within this (DESIGN: 10 s). */
const TERM_BOUND_MS = 10_000

export interface Fault {
  name: string
  /** What it can hit: service names, or one fixed target. */
  targets(cluster: Cluster): string[]
  /** Faults sharing a resource never overlap (two cuts of one link, a stop_app during an alarm). */
  resource(target: string): string
  /** Seconds it lasts, at least and at most. */
  seconds: [number, number]
  /** Returns what heal needs; `param` (0 to 1, from the seed) picks a strength where there is one. */
  apply(cluster: Cluster, target: string, param: number): Promise<unknown>
  /** May say what it saw (printed with the heal). */
  heal(cluster: Cluster, target: string, state: unknown): Promise<string | void>
}

export const service = (cluster: Cluster, name: string): Service => {
  const found = cluster.services.find((s) => s.name === name)
  if (!found) throw new Error(`no service ${name}`)
  return found
}
export const all = (cluster: Cluster) => cluster.services.map((s) => s.name)
export const consumers = (cluster: Cluster) => cluster.consumers.map((s) => s.name)
export const producers = (cluster: Cluster) => cluster.producers.map((s) => s.name)
export const fixed = (name: string) => () => [name]

export function linkFaults(which: 'broker' | 'db', targets: (c: Cluster) => string[]): Fault[] {
  const link = (c: Cluster, t: string) => {
    const s = service(c, t)
    const proxy = which === 'broker' ? s.brokerLink : s.databaseLink
    if (!proxy) throw new Error(`${t} has no ${which} link`)
    return proxy
  }
  const base = { targets, resource: (t: string) => `${which}-link:${t}`, seconds: [2, 15] as [number, number] }
  return [
    {
      ...base,
      name: `${which}-cut`,
      apply: async (c, t) => link(c, t).cut(),
      heal: async (c, t) => link(c, t).restore(),
    },
    {
      ...base,
      name: `${which}-freeze`,
      apply: async (c, t) => link(c, t).freeze(),
      heal: async (c, t) => link(c, t).restore(),
    },
    {
      ...base,
      name: `${which}-throttle`,
      // 20 to 200 KB/s, both ways: a congested link, slower than a 1 MiB batch needs.
      apply: async (c, t, param) => link(c, t).throttle(20_000 + Math.floor(param * 180_000), { downstream: true }),
      heal: async (c, t) => link(c, t).throttle(undefined, { downstream: true }),
    },
  ]
}

/**
 * SIGTERM: exit 0 within the bound, or an incident (and a SIGKILL). Sent once the process answers
 * on its port: while Node is still loading modules nothing handles it, and it dies of the signal.
 */
async function terminate(cluster: Cluster, s: Service): Promise<void> {
  for (const giveUp = Date.now() + TERM_BOUND_MS; s.alive && Date.now() < giveUp && !(await s.answering());) {
    await new Promise((r) => setTimeout(r, 100))
  }
  if (!s.alive || !s.process) return
  s.expectedExit = 'SIGTERM'
  const started = Date.now()
  const process = s.process
  process.child.kill('SIGTERM')
  const code = await Promise.race([process.exited, new Promise((r) => setTimeout(() => r('timeout'), TERM_BOUND_MS))])
  if (code === 'timeout') {
    cluster.incident(s.name, `did not exit within ${TERM_BOUND_MS} ms of SIGTERM`, process.output())
    s.expectedExit = 'SIGKILL'
    await process.stop('SIGKILL')
  } else if (code !== 0) {
    cluster.incident(s.name, `exited ${code} after SIGTERM (${Date.now() - started} ms)`, process.output())
  }
}

export function processFaults(kind: 'consumer' | 'producer'): Fault[] {
  const targets = kind === 'consumer' ? consumers : producers
  const base = { targets, resource: (t: string) => `process:${t}`, seconds: [1, 10] as [number, number] }
  const restart = async (c: Cluster, t: string) => {
    const s = service(c, t)
    if (!s.alive) {
      s.restarts++
      await s.start()
    }
  }
  const faults: Fault[] = [
    {
      ...base,
      name: `${kind}-kill`,
      apply: async (c, t) => {
        const s = service(c, t)
        s.expectedExit = 'SIGKILL'
        await s.process?.stop('SIGKILL')
      },
      heal: restart,
    },
    { ...base, name: `${kind}-term`, apply: async (c, t) => terminate(c, service(c, t)), heal: restart },
  ]
  if (kind === 'consumer') {
    faults.push({
      ...base,
      name: 'consumer-crash-loop',
      // A crash loop: SIGKILL as soon as it holds deliveries, started again, over and over;
      // each crash adds a delivery to every message it held (the quorum queue's limit is 20).
      seconds: [20, 40],
      apply: async (c, t) => {
        const s = service(c, t)
        const loop = { healed: false, crashes: 0, done: Promise.resolve() }
        loop.done = (async () => {
          for (let i = 0; i < 1000 && !loop.healed; i++) {
            if (!s.alive) await s.start()
            const deadline = Date.now() + 5000
            while (Date.now() < deadline && !loop.healed && !((await s.inHand().catch(() => 0)) > 0)) {
              await new Promise((r) => setTimeout(r, 100))
            }
            if (loop.healed) break
            s.expectedExit = 'SIGKILL'
            await s.process?.stop('SIGKILL')
            loop.crashes++
          }
        })()
        return loop
      },
      heal: async (c, t, state) => {
        const loop = state as { healed: boolean; crashes: number; done: Promise<void> }
        loop.healed = true
        await loop.done
        await restart(c, t)
        return `${loop.crashes} crashes`
      },
    })
    faults.push({
      ...base,
      name: 'consumer-stop',
      apply: async (c, t) => service(c, t).process?.child.kill('SIGSTOP'),
      heal: async (c, t) => void service(c, t).process?.child.kill('SIGCONT'),
    })
  }
  return faults
}

export async function dlqDepth(c: Cluster): Promise<number | undefined> {
  return withChannel(c, async (ch) => (await ch.checkQueue(DLQ)).messageCount).catch(() => undefined)
}

export async function withChannel<T>(c: Cluster, use: (ch: import('amqplib').Channel) => Promise<T>): Promise<T> {
  const connection = await c.rabbit.connect()
  connection.on('error', () => undefined) // a connection exception rejects the operation too
  try {
    const channel = await connection.createChannel()
    channel.on('error', () => undefined) // the failed operation rejects with the same error
    return await use(channel)
  } finally {
    await connection.close().catch(() => undefined) // already closed by a channel error: nothing to close
  }
}
