// Integration: the queue topology against the real RabbitMQ: RabbitMQ's own dead-lettering keeps
// what it cannot deliver, and queues declared by the previous version keep working.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { ChannelModel, ConfirmChannel } from 'amqplib'
import { pino } from 'pino'
import {
  assertTopology,
  BrokerConfigSchema,
  connectBroker,
  deleteTopology,
  DELIVERY_LIMIT,
  loadConfig,
  topologyFor,
  type Topology,
} from 'event-contract'
import { broker, connectBroker as connectAdmin, uniqueName, waitFor } from '../../test-support/index.js'

const run = promisify(execFile)
// How to reach rabbitmqctl: the local one, or (set by the global setup) the one in a container.
const rabbitmqctl = (process.env.TEST_RABBITMQCTL || 'rabbitmqctl').split(' ')

let admin: ChannelModel
let channel: ConfirmChannel
const cleanups: (() => Promise<unknown>)[] = []

beforeAll(async () => {
  admin = await connectAdmin()
  admin.on('error', () => {}) // a channel error is reported by the command that caused it
  channel = await admin.createConfirmChannel()
})
afterAll(async () => {
  await admin.close()
})
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

function ownTopology(): Topology {
  const topology = topologyFor(uniqueName('topology'), 'quorum')
  cleanups.push(async () => {
    // A fresh channel: a 406 in the test may have closed the shared one.
    const fresh = await admin.createChannel()
    await deleteTopology(fresh, topology)
    await fresh.close()
  })
  return topology
}

/** Messages RabbitMQ holds for a queue, those waiting to be dead-lettered included. */
async function held(queue: string): Promise<number> {
  const [command, ...args] = rabbitmqctl as [string, ...string[]]
  const { stdout } = await run(command, [...args, 'list_queues', '-q', '--no-table-headers', 'name', 'messages'])
  const line = stdout.split('\n').find((row) => row.split('\t')[0] === queue)
  if (!line) throw new Error(`rabbitmqctl does not list ${queue}`)
  return Number(line.split('\t')[1])
}

/** Takes the one message and puts it back until RabbitMQ stops delivering it (its delivery limit). */
async function exhaustDeliveries(queue: string): Promise<number> {
  let deliveries = 0
  for (; deliveries <= DELIVERY_LIMIT + 5; deliveries++) {
    const message = await channel.get(queue, { noAck: false })
    if (!message) break
    channel.nack(message, false, true)
  }
  return deliveries
}

/** Declares the topology the way the previous version did (before at-least-once dead-lettering). */
async function declarePrevious(topology: Topology) {
  await channel.assertExchange(topology.deadLetterExchange, 'fanout', { durable: true })
  await channel.assertQueue(topology.deadLetterQueue, { durable: true, arguments: { 'x-queue-type': 'quorum' } })
  await channel.bindQueue(topology.deadLetterQueue, topology.deadLetterExchange, '')
  await channel.assertQueue(topology.queue, {
    durable: true,
    arguments: {
      'x-queue-type': 'quorum',
      'x-dead-letter-exchange': topology.deadLetterExchange,
      'x-delivery-limit': DELIVERY_LIMIT,
    },
  })
}

describe('RabbitMQ dead-lettering after the delivery limit', () => {
  it('keeps a message whose delivery limit is reached while the DLQ is missing, instead of dropping it', async () => {
    const topology = ownTopology()
    await assertTopology(channel, topology)
    await channel.deleteQueue(topology.deadLetterQueue)
    channel.sendToQueue(topology.queue, Buffer.from('{"crash":"loop"}'), { persistent: true })
    await channel.waitForConfirms()

    expect(await exhaustDeliveries(topology.queue)).toBe(DELIVERY_LIMIT + 1)
    // Not delivered any more, and not gone: RabbitMQ holds it for the DLQ (and, measured on
    // 3.10, moves it there within its 3-minute retry once the DLQ exists again).
    expect((await channel.checkQueue(topology.queue)).messageCount).toBe(0)
    await waitFor(async () => (await held(topology.queue)) === 1, { what: 'the message held for the DLQ' })
  })
})

describe('queues declared by the previous version', () => {
  it('keep working, with a warning that names what is missing and how to add it', async () => {
    const topology = ownTopology()
    await declarePrevious(topology)
    const logs: { level: number; msg: string; [key: string]: unknown }[] = []
    const logger = pino({ level: 'warn' }, { write: (line: string) => logs.push(JSON.parse(line)) })
    const config = loadConfig(BrokerConfigSchema, {
      RABBITMQ_HOST: broker.host,
      RABBITMQ_PORT: String(broker.port),
      RABBITMQ_USER: broker.user,
      RABBITMQ_PASS: broker.pass,
      RABBITMQ_QUEUE: topology.queue,
    })
    let ready: (channel: ConfirmChannel) => void = () => {}
    const opened = new Promise<ConfirmChannel>((resolve) => (ready = resolve))
    const connection = await connectBroker({
      config,
      logger,
      name: 'topology test',
      openChannel: (model) => model.createConfirmChannel(),
      ready: async (serviceChannel) => ready(serviceChannel),
      lost: () => {},
    })
    cleanups.push(() => connection.close())
    const serviceChannel = await opened

    // The service's channel works: a message goes through it and comes back.
    serviceChannel.sendToQueue(topology.queue, Buffer.from('{"still":"working"}'), { persistent: true })
    await serviceChannel.waitForConfirms()
    const message = await waitFor(() => serviceChannel.get(topology.queue, { noAck: false }), { what: 'the message' })
    expect(message.content.toString()).toBe('{"still":"working"}')
    serviceChannel.ack(message)

    const warnings = logs.filter((line) => line.level === 40)
    expect(warnings.map((line) => line.queue)).toEqual([topology.deadLetterQueue, topology.queue])
    const warning = warnings[1] as (typeof warnings)[number]
    expect(warning.missing).toEqual({ 'x-dead-letter-strategy': 'at-least-once', 'x-overflow': 'reject-publish' })
    expect(warning.msg).toContain('at-most-once')
    expect(warning.fix).toContain('rabbitmqctl set_policy')

    // The fix it prints works: with the policy, the old queue keeps what it cannot dead-letter.
    const policy = `${topology.queue}-at-least-once`
    const [command, ...args] = rabbitmqctl as [string, ...string[]]
    const fix = String(warning.fix).match(/set_policy --apply-to queues (\S+) '([^']+)' '([^']+)'/)
    expect(fix?.[1]).toBe(policy)
    await run(command, [...args, 'set_policy', '--apply-to', 'queues', policy, fix?.[2] ?? '', fix?.[3] ?? ''])
    cleanups.push(() => run(command, [...args, 'clear_policy', policy]))
    await channel.deleteQueue(topology.deadLetterQueue)
    channel.sendToQueue(topology.queue, Buffer.from('{"crash":"loop"}'), { persistent: true })
    await channel.waitForConfirms()
    expect(await exhaustDeliveries(topology.queue)).toBe(DELIVERY_LIMIT + 1)
    await waitFor(async () => (await held(topology.queue)) === 1, { what: 'the message held for the DLQ' })
  })

  it('of another type still fail with the 406 that says so', async () => {
    const topology = ownTopology()
    await channel.assertQueue(topology.queue, { durable: true, arguments: { 'x-queue-type': 'classic' } })
    const logs: { level: number; msg: string }[] = []
    const logger = pino({ level: 'warn' }, { write: (line: string) => logs.push(JSON.parse(line)) })
    const config = loadConfig(BrokerConfigSchema, {
      RABBITMQ_HOST: broker.host,
      RABBITMQ_PORT: String(broker.port),
      RABBITMQ_QUEUE: topology.queue,
    })
    const connection = await connectBroker({
      config,
      logger,
      name: 'topology test',
      openChannel: (model) => model.createConfirmChannel(),
      ready: async () => {},
      lost: () => {},
    })
    cleanups.push(() => connection.close())
    const refused = await waitFor(() => logs.find((line) => line.msg.includes('406')), { what: 'the 406 logged' })
    expect(refused.msg).toContain('delete it or set RABBITMQ_QUEUE_TYPE to its type')
  })
})
