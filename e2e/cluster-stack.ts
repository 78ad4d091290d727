// `npm run test:cluster`: docker-compose.cluster.yml on a real Docker engine. With events
// flowing, the node that leads the quorum queue is stopped: the producer keeps answering (a
// failure only while a new leader is elected, each fast), the consumers go on through the
// survivors, the node rejoins when started, and every 202 is stored exactly once. Then one of
// two consumers is killed mid-drain, and the drain rate is measured with 1, 2 and 3 consumers.
// Always tears down. Exits non-zero on the first failure.
import { waitFor } from '../test-support/index.js'
import { ComposeStack, logStep, output, scriptEvent, type PostOutcome } from './compose-stack.js'

const step = logStep('test:cluster')
const stack = await new ComposeStack('docker-compose.cluster.yml').prepare()
const QUEUE = 'user_activity_events'
const NODES = ['rabbitmq1', 'rabbitmq2', 'rabbitmq3']
const figures: Record<string, unknown> = {}

interface Member {
  node: string
  state: string
}

/** The quorum queue's members and their Raft states, as one running node sees them. */
async function members(): Promise<Member[]> {
  for (const node of NODES) {
    const [container] = await stack.containersOf(node)
    if (!container || (await output('docker', ['inspect', '--format', '{{.State.Running}}', container])) !== 'true') {
      continue
    }
    try {
      const json = await output('docker', [
        ...['exec', container, 'rabbitmq-queues', 'quorum_status', QUEUE, '--formatter', 'json'],
      ])
      const rows = JSON.parse(json) as Record<string, string>[]
      return rows.map((row) => ({
        node: String(row['Node Name'] ?? row.node_name).replace('rabbit@', ''),
        state: String(row['Raft State'] ?? row.raft_state),
      }))
    } catch {
      // This node cannot say now (it may be stopping, or the queue is electing): ask another.
    }
  }
  return []
}

/** Posts one event or a batch of 10, in turn, until stopped; every outcome with its time. */
function postContinuously() {
  const outcomes: (PostOutcome & { at: number; ms: number })[] = []
  let running = true
  let i = 0
  const loop = (async () => {
    while (running) {
      const started = Date.now()
      const body = i % 2 ? scriptEvent(i++) : Array.from({ length: 10 }, () => scriptEvent(i++))
      const outcome = await stack.post(body)
      outcomes.push({ ...outcome, at: Date.now(), ms: Date.now() - started })
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  })()
  return {
    outcomes,
    async stop() {
      running = false
      await loop
      return outcomes
    },
  }
}

const accepted = (outcomes: PostOutcome[]) =>
  new Set(outcomes.filter((o) => o.status === 202).flatMap((o) => o.eventIds))

const stored = () => stack.storedCount()

/** Scales the consumers to `count` and times them draining `events` queued meanwhile. */
async function drainRate(count: number, events: number): Promise<number> {
  await stack.compose('up', '-d', '--no-recreate', '--scale', `consumer-service=0`)
  const before = await stored()
  const batches: PostOutcome[] = []
  for (let i = 0; i < events; i += 500) {
    batches.push(await stack.post(Array.from({ length: 500 }, (_, j) => scriptEvent(10_000_000 * count + i + j))))
  }
  if (batches.some((b) => b.status !== 202)) throw new Error('a batch to drain was not accepted')
  await stack.compose('up', '-d', '--no-recreate', '--scale', `consumer-service=${count}`)
  let startedAt = 0
  await waitFor(
    async () => {
      const now = await stored()
      if (now > before && startedAt === 0) startedAt = Date.now()
      return now - before >= events
    },
    { what: `${events} events drained by ${count}`, timeoutMs: 180_000, intervalMs: 20 },
  )
  return Math.round(events / ((Date.now() - startedAt) / 1000))
}

async function run() {
  step(`up --build, two consumers (project ${stack.project}, host ports ${JSON.stringify(stack.ports)})`)
  await stack.compose('up', '-d', '--build', '--scale', 'consumer-service=2')
  await stack.healthy([...NODES, 'mysql', 'producer-service', 'consumer-service'], 300_000)
  await waitFor(async () => (await members()).length === 3, { what: 'the queue on all three nodes', timeoutMs: 60_000 })
  step(`queue members: ${JSON.stringify(await members())}`)

  step('events flowing; stopping the node that leads the quorum queue')
  const traffic = postContinuously()
  await new Promise((resolve) => setTimeout(resolve, 3000))
  const leader = (await members()).find((m) => m.state === 'leader')?.node
  if (!leader) throw new Error('no leader found')
  const [leaderContainer] = await stack.containersOf(leader)
  const stoppedAt = Date.now()
  await output('docker', ['stop', leaderContainer as string])
  const stopSeconds = (Date.now() - stoppedAt) / 1000
  await waitFor(async () => (await members()).some((m) => m.state === 'leader' && m.node !== leader), {
    what: 'a new leader',
    timeoutMs: 60_000,
    intervalMs: 200,
  })
  const electedAt = Date.now()
  await new Promise((resolve) => setTimeout(resolve, 5000))

  step(`starting ${leader} again`)
  const startedAt = Date.now()
  await output('docker', ['start', leaderContainer as string])
  await waitFor(
    async () => {
      const now = await members()
      return now.length === 3 && now.every((m) => m.state === 'leader' || m.state === 'follower')
    },
    { what: `${leader} back in the queue`, timeoutMs: 120_000, intervalMs: 500 },
  )
  const rejoinSeconds = (Date.now() - startedAt) / 1000
  await new Promise((resolve) => setTimeout(resolve, 2000))

  const outcomes = await traffic.stop()

  step('one of two consumers killed mid-drain')
  await stack.compose('up', '-d', '--no-recreate', '--scale', 'consumer-service=0')
  const before = await stored()
  for (let i = 0; i < 50_000; i += 500) {
    const started = Date.now()
    const outcome = await stack.post(Array.from({ length: 500 }, (_, j) => scriptEvent(5_000_000 + i + j)))
    outcomes.push({ ...outcome, at: Date.now(), ms: Date.now() - started })
  }
  await stack.compose('up', '-d', '--no-recreate', '--scale', 'consumer-service=2')
  await waitFor(async () => (await stored()) - before >= 2000, { what: 'the drain under way', intervalMs: 20 })
  const [victim] = await stack.containersOf('consumer-service')
  await output('docker', ['kill', victim as string])
  const storedAtKill = (await stored()) - before
  figures.killedConsumerAt = `${storedAtKill} of 50000`

  // Around the stop: the longest time without a 202, and what the failures were.
  const around = outcomes.filter((o) => o.at >= stoppedAt - 1000 && o.at <= electedAt + 5000)
  let pause = 0
  let last = stoppedAt
  for (const o of around) {
    if (o.status !== 202) continue
    pause = Math.max(pause, o.at - last)
    last = o.at
  }
  const failures = outcomes.filter((o) => o.status !== 202)
  const ids = accepted(outcomes)
  const { stored: rows, duplicated } = await stack.settle(ids, 180_000)
  Object.assign(figures, {
    leaderStopped: leader,
    dockerStopSeconds: stopSeconds,
    newLeaderAfterSeconds: (electedAt - stoppedAt) / 1000,
    longestPauseBetween202sSeconds: pause / 1000,
    failures: failures.length,
    slowestFailureMs: Math.max(0, ...failures.map((o) => o.ms)),
    failureStatuses: [...new Set(failures.map((o) => o.status))],
    rejoinSeconds,
    accepted: ids.size,
    rows,
    duplicated,
  })
  step(`leader stop: ${JSON.stringify(figures)}`)
  if (duplicated > 0) throw new Error(`${duplicated} events stored twice`)
  if (failures.some((o) => o.ms > 6000)) throw new Error('a request waited longer than the publish timeout')
  if (accepted(outcomes.filter((o) => o.at > electedAt + 5000)).size === 0) {
    throw new Error('no 202 after the election')
  }

  step('drain rate with 1, 2 and 3 consumers')
  const rates: Record<string, number> = {}
  for (const count of [1, 2, 3]) rates[`${count}`] = await drainRate(count, 100_000)
  figures.drainRowsPerSecond = rates
  step(`drain rows/s by consumers: ${JSON.stringify(rates)}`)
  const all = await stack.storedIds()
  if (all.length !== new Set(all).size) throw new Error('an event stored twice')
}

const report = (err: unknown) => console.error(`[test:cluster] ${(err as Error).message ?? err}`)

let failed = false
try {
  await run()
  step(`passed: ${JSON.stringify(figures)}`)
} catch (err) {
  failed = true
  console.error(err)
  await stack.compose('ps').catch(report)
  await stack.compose('logs', '--tail', '40').catch(report)
} finally {
  step('tearing down')
  await stack.down().catch((err: unknown) => {
    failed = true
    report(err)
  })
}
process.exit(failed ? 1 : 0)
