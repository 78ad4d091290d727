// Faults of the broker and Redis, of clients and of operators (database-faults.ts has the database's).
import { spawn } from 'node:child_process'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { assertTopology, topologyFor } from 'event-contract'
import { waitFor } from '../../test-support/index.js'
import { QUEUE } from './cluster.js'
import { DLQ, dlqDepth, fixed, producers, service, withChannel, type Fault } from './faults.js'

const dlqMain = fileURLToPath(new URL('../../consumer-service/dist/dlq.js', import.meta.url))
/** `npm run dlq -- replay` must end within this, letters failing again or not. */
export const REPLAY_BOUND_MS = 30_000

/** A heal that needs the broker application: retried while a `broker-stop-app` lasts (12 s at most). */
async function whenBrokerRuns<T>(heal: () => Promise<T>): Promise<T> {
  for (const giveUp = Date.now() + 60_000; ;) {
    try {
      return await heal()
    } catch (err) {
      if (Date.now() > giveUp) throw err
      await new Promise((r) => setTimeout(r, 1000))
    }
  }
}

export const brokerFaults: Fault[] = [
  {
    name: 'dlq-deleted',
    targets: fixed(DLQ),
    resource: () => 'dlq',
    seconds: [2, 15],
    // Takes the letters off first (noted, so that the verdict does not blame the services), then
    // deletes the queue; quorum queues refuse `ifEmpty`, so a letter that comes in between is
    // only counted (`deleteQueue` answers how many went), and the verdict allows for that many.
    apply: async (c) =>
      withChannel(c, async (ch) => {
        for (let i = 0; i < 100_000; i++) {
          const letter = await ch.get(DLQ, { noAck: true })
          if (!letter) break
          c.lettersRemoved.add(String(letter.properties.messageId))
        }
        c.lettersRemovedUnseen += (await ch.deleteQueue(DLQ)).messageCount
      }),
    // The services re-declare it on a reconnect; a fresh one now, so that the end can read it.
    heal: async (c) => whenBrokerRuns(() => withChannel(c, (ch) => assertTopology(ch, topologyFor(QUEUE, 'quorum')))),
  },
  {
    name: 'dlq-full',
    targets: fixed(DLQ),
    resource: () => 'dlq',
    seconds: [2, 15],
    apply: async (c) =>
      c.rabbit.ctl(
        'set_policy',
        '--apply-to',
        'queues',
        'chaos-dlq-full',
        `^${DLQ.replaceAll('.', '\\.')}$`,
        '{"max-length":0,"overflow":"reject-publish"}',
      ),
    // RabbitMQ 3.10 keeps a quorum queue refusing after its max-length policy is cleared
    // (rabbitmq-server #12206); a higher limit lifts it, and then the policy can go.
    heal: async (c) => {
      await whenBrokerRuns(() =>
        c.rabbit.ctl(
          'set_policy',
          '--apply-to',
          'queues',
          'chaos-dlq-full',
          `^${DLQ.replaceAll('.', '\\.')}$`,
          '{"max-length":100000000,"overflow":"reject-publish"}',
        ),
      )
      await new Promise((resolve) => setTimeout(resolve, 1000))
      await whenBrokerRuns(() => c.rabbit.ctl('clear_policy', 'chaos-dlq-full'))
    },
  },
  {
    name: 'memory-alarm',
    targets: fixed('rabbitmq'),
    resource: () => 'broker-node',
    seconds: [2, 12],
    apply: async (c) => c.rabbit.ctl('set_vm_memory_high_watermark', '0.0001'),
    heal: async (c) => void (await c.rabbit.ctl('set_vm_memory_high_watermark', '0.4')),
  },
  {
    name: 'broker-stop-app',
    targets: fixed('rabbitmq'),
    resource: () => 'broker-node',
    seconds: [2, 12],
    apply: async (c) => c.rabbit.ctl('stop_app'),
    // start_app right after stop_app can fail with eaddrinuse while the old listener closes: retried.
    heal: async (c) => {
      for (let attempt = 1; ; attempt++) {
        try {
          await c.rabbit.ctl('start_app')
          return
        } catch (err) {
          if (attempt >= 10) throw err
          await new Promise((r) => setTimeout(r, 2000))
        }
      }
    },
  },
  {
    name: 'redis-stall',
    targets: fixed('redis'),
    resource: () => 'redis',
    seconds: [5, 20],
    apply: async (c) => c.redis.child?.kill('SIGSTOP'),
    heal: async (c) => void c.redis.child?.kill('SIGCONT'),
  },
]

/** A few hundred uploads that declare 1 MiB, send most of it slowly, then stall until healed. */
export const slowClients: Fault = {
  name: 'slow-clients',
  targets: producers,
  resource: (t) => `slow-clients:${t}`,
  seconds: [5, 20],
  apply: async (c, t) => {
    const { port } = service(c, t)
    const sockets: net.Socket[] = []
    const timers: NodeJS.Timeout[] = []
    for (let i = 0; i < 200; i++) {
      const socket = net.connect(port, '127.0.0.1')
      socket.on('error', () => undefined) // the producer closing a slow upload is what it should do
      socket.write(
        'POST /api/v1/events/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n' +
          `Content-Length: ${1024 * 1024}\r\n\r\n{"batch":[`,
      )
      let sent = 0
      const chunk = Buffer.alloc(64 * 1024, 0x20)
      const timer = setInterval(() => {
        if (sent + chunk.length > 1000 * 1000 || socket.destroyed) return clearInterval(timer)
        socket.write(chunk)
        sent += chunk.length
      }, 500)
      timers.push(timer)
      sockets.push(socket)
    }
    return { sockets, timers }
  },
  heal: async (_c, _t, state) => {
    const { sockets, timers } = state as { sockets: net.Socket[]; timers: NodeJS.Timeout[] }
    timers.forEach(clearInterval)
    sockets.forEach((s) => s.destroy())
  },
}

/** 60 batch messages of 1,000 events of about 1 KB at once: the consumers' heap must hold. */
export const batchBurst: Fault = {
  name: 'batch-burst',
  targets: fixed(QUEUE),
  resource: () => 'batch-burst',
  seconds: [1, 2],
  apply: async (c) => c.batchBurst(60),
  heal: async () => undefined,
}

/** An operator's `npm run dlq -- replay`, against the soak's broker; it must end on its own. */
export const dlqReplay: Fault = {
  name: 'dlq-replay',
  targets: fixed('operator'),
  resource: () => 'dlq-replay',
  seconds: [1, 2],
  // A thousand letters first: letters that fail again must not come round (a replay takes the
  // letters present when it starts, once each).
  apply: async (c) => {
    await c.poisonBurst(1000)
    await waitFor(async () => ((await dlqDepth(c)) ?? 0) >= 900, {
      timeoutMs: 30_000,
      intervalMs: 500,
      what: 'letters in the DLQ',
    }).catch(
      () => undefined, // fewer letters (the DLQ is full, deleted, or the consumers are slow): replay what there is
    )
    const child = spawn(process.execPath, [dlqMain, 'replay'], {
      env: {
        PATH: process.env.PATH,
        RABBITMQ_HOST: '127.0.0.1',
        RABBITMQ_PORT: String(c.rabbit.address.port),
        RABBITMQ_QUEUE: QUEUE,
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let output = ''
    child.stdout.on('data', (d) => (output = (output + d).slice(-3000)))
    child.stderr.on('data', (d) => (output = (output + d).slice(-3000)))
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
    return { child, exited, output: () => output, started: Date.now() }
  },
  heal: async (c, _t, state) => {
    const { child, exited, output, started } = state as {
      child: ReturnType<typeof spawn>
      exited: Promise<number | null>
      output: () => string
      started: number
    }
    const left = Math.max(0, REPLAY_BOUND_MS - (Date.now() - started))
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), left))])
    if (code === 'timeout') {
      c.incident('dlq replay', `did not end within ${REPLAY_BOUND_MS} ms`, output())
      child.kill('SIGKILL')
      await exited
      return 'killed'
    }
    return `exit ${code} after ${Date.now() - started} ms: ${output().trim().split('\n').at(-1)}`
  },
}
