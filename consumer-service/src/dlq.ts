// `npm run dlq -- <command>`: look at the dead-letter queue and put its messages back.
// Every move is publish-with-confirm first, remove second: a crash in between leaves the letter
// where it was and a copy on the queue, which the consumer stores once (event_id is unique).
import { parseArgs } from 'node:util'
import v8 from 'node:v8'
import { pathToFileURL } from 'node:url'
import amqp, { type ChannelModel, type ConfirmChannel } from 'amqplib'
import {
  brokerAddresses,
  brokerConnectOptions,
  BrokerConfigSchema,
  loadConfig,
  topologyFor,
  type Topology,
} from 'event-contract'
import { countKinds, letterOf, scan } from './dlq-letters.js'

export const USAGE = `Usage: npm run dlq -- <command> [options]

Commands:
  stats                       depth of the queue and of its dead-letter queue, letters by kind
  peek [N]                    the first N dead letters (10) with their reasons; removes nothing
  replay [--limit N] [--kind K]
                              moves dead letters (all, or N, or those of kind K) back to the
                              queue, each confirmed by RabbitMQ before it leaves the DLQ
  purge --yes                 prints what the DLQ holds, then deletes it all

Options:
  --json                      stats and peek print JSON
  -h, --help                  this text

RabbitMQ and the queue come from the services' variables (RABBITMQ_HOST, RABBITMQ_PORT,
RABBITMQ_USER, RABBITMQ_PASS, RABBITMQ_QUEUE, RABBITMQ_QUEUE_TYPE).
Exit codes: 0 done, 1 failed, 2 wrong usage, 3 RabbitMQ not reachable, 4 a queue does not exist.`

export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3, noQueue: 4 } as const

/** Letters stats and purge count by kind, at most: each is held unacknowledged by RabbitMQ meanwhile. */
const SCAN_LIMIT = 100_000

export interface Output {
  out(line: string): void
  err(line: string): void
}

class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message)
  }
}

/** Connects to the first node of RABBITMQ_HOST that answers (a cluster's nodes, in order). */
async function connect(config: ReturnType<typeof readBrokerConfig>): Promise<ChannelModel> {
  const failures: string[] = []
  for (const address of brokerAddresses(config)) {
    try {
      // Without noDelay, Nagle's algorithm holds each small frame back ~40 ms: a get, a publish
      // and its confirm per letter would crawl.
      const connection = await amqp.connect({ ...brokerConnectOptions(config), ...address }, { noDelay: true })
      // A dropped connection fails the command in progress (its await rejects); this is its echo.
      connection.on('error', () => {})
      return connection
    } catch (err) {
      failures.push(`${address.hostname}:${address.port}: ${(err as Error).message}`)
    }
  }
  throw new CliError(`RabbitMQ is not reachable at ${failures.join('; ')}`, EXIT.unreachable)
}

const closed = new WeakSet<ConfirmChannel>()

/** A confirm channel whose failures reject the caller's await instead of crashing the process. */
async function openChannel(connection: ChannelModel): Promise<ConfirmChannel> {
  const channel = await connection.createConfirmChannel()
  channel.on('error', () => {}) // a 404 closes the channel; checkQueue's rejection reports it
  channel.on('close', () => closed.add(channel))
  return channel
}

/**
 * Closes the channels, then the connection: amqplib writes connection.close ahead of acks still
 * in a channel's buffer, and the broker would put back letters already replayed. A channel's
 * close comes after its acks. What was taken and not acknowledged goes back to the DLQ.
 */
async function closeAll(connection: ChannelModel, channels: ConfirmChannel[], io: Output) {
  for (const channel of channels) {
    if (closed.has(channel)) continue
    await channel.close().catch((err: unknown) => io.err(`closing a channel: ${(err as Error).message}`))
  }
  await connection.close().catch((err: unknown) => io.err(`closing the connection: ${(err as Error).message}`))
}

async function depth(channel: ConfirmChannel, queue: string): Promise<number> {
  try {
    return (await channel.checkQueue(queue)).messageCount
  } catch (err) {
    if ((err as { code?: number }).code === 404) throw new CliError(`queue ${queue} does not exist`, EXIT.noQueue)
    throw err
  }
}

function readBrokerConfig(env: NodeJS.ProcessEnv) {
  return loadConfig(BrokerConfigSchema, env)
}

async function stats(channel: ConfirmChannel, topology: Topology, json: boolean, io: Output) {
  const queued = await depth(channel, topology.queue)
  const dead = await depth(channel, topology.deadLetterQueue)
  const kinds = await countKinds(channel, topology.deadLetterQueue, Math.min(dead, SCAN_LIMIT))
  if (json) return io.out(JSON.stringify({ queue: topology.queue, queued, deadLettered: dead, kinds }))
  io.out(`${topology.queue}: ${queued} ready`)
  io.out(
    `${topology.deadLetterQueue}: ${dead} dead letters${dead > SCAN_LIMIT ? ` (kinds of the first ${SCAN_LIMIT})` : ''}`,
  )
  for (const [kind, count] of Object.entries(kinds).sort((a, b) => b[1] - a[1])) io.out(`  ${count}\t${kind}`)
}

/** Prints each letter as it reads it: only the one being printed is in memory. */
async function peek(channel: ConfirmChannel, topology: Topology, count: number, json: boolean, io: Output) {
  await depth(channel, topology.deadLetterQueue)
  await scan(channel, topology.deadLetterQueue, count, ({ message, kind, error }) => {
    const headers = message.properties.headers ?? {}
    const letter = {
      messageId: message.properties.messageId,
      kind,
      error,
      deadLetteredAt: headers['x-dead-lettered-at'],
      originalMessageId: headers['x-original-message-id'],
      body: message.content.toString('utf8').slice(0, 500),
    }
    if (json) io.out(JSON.stringify(letter))
    else io.out(`${letter.messageId ?? '-'}  ${kind}  ${letter.deadLetteredAt ?? ''}\n  ${error}\n  ${letter.body}`)
  })
}

async function replay(
  channel: ConfirmChannel,
  topology: Topology,
  limit: number,
  kind: string | undefined,
  io: Output,
) {
  await depth(channel, topology.queue)
  // The letters present now, once each: a replayed letter that fails again is dead-lettered
  // behind them, and reading on until the DLQ is empty would take it again, and again.
  const present = await depth(channel, topology.deadLetterQueue)
  // A copy RabbitMQ could not route (the queue deleted meanwhile) must not cost the letter.
  let returned = false
  channel.on('return', () => (returned = true))
  let moved = 0
  let scanned = 0
  while (moved < limit && scanned < present) {
    const message = await channel.get(topology.deadLetterQueue, { noAck: false })
    if (!message) break
    scanned++
    const letter = letterOf(message)
    if (kind && letter.kind !== kind) continue // left unacknowledged: back in the DLQ at the end
    const { headers = {}, ...properties } = message.properties
    const kept = Object.fromEntries(Object.entries(headers).filter(([name]) => !name.startsWith('x-')))
    await new Promise<void>((resolve, reject) =>
      channel.publish(
        '',
        topology.queue,
        message.content,
        {
          ...properties,
          persistent: true,
          mandatory: true,
          headers: { ...kept, 'x-replayed-from-kind': letter.kind, 'x-replayed-at': new Date().toISOString() },
        },
        (err) => (err ? reject(err) : resolve()),
      ),
    )
    if (returned) throw new CliError(`${topology.queue} did not take the message; the letter stays`, EXIT.noQueue)
    channel.ack(message) // only now: the copy is safe on the queue
    moved++
  }
  await channel.waitForConfirms()
  io.out(`replayed ${moved} dead letter${moved === 1 ? '' : 's'} to ${topology.queue}${kind ? ` (kind ${kind})` : ''}`)
}

async function purge(open: () => Promise<ConfirmChannel>, topology: Topology, io: Output) {
  const counting = await open()
  const dead = await depth(counting, topology.deadLetterQueue)
  const kinds = await countKinds(counting, topology.deadLetterQueue, Math.min(dead, SCAN_LIMIT))
  io.out(
    `deleting ${dead} dead letters from ${topology.deadLetterQueue}${dead > SCAN_LIMIT ? ` (kinds of the first ${SCAN_LIMIT})` : ''}:`,
  )
  for (const [name, count] of Object.entries(kinds)) io.out(`  ${count}\t${name}`)
  // Closing puts the letters taken for counting back, so that the purge takes them too.
  await counting.close()
  const { messageCount } = await (await open()).purgeQueue(topology.deadLetterQueue)
  io.out(`purged ${messageCount}`)
}

/** Runs one command; resolves with the exit code. */
export async function main(argv: string[], env: NodeJS.ProcessEnv, io: Output): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        limit: { type: 'string' },
        kind: { type: 'string' },
        yes: { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (err) {
    io.err(`${(err as Error).message}\n\n${USAGE}`)
    return EXIT.usage
  }
  const { values, positionals } = parsed
  const [command, ...rest] = positionals
  if (values.help || !command) {
    ;(values.help ? io.out : io.err)(USAGE)
    return values.help ? EXIT.ok : EXIT.usage
  }
  const count = (text: string | undefined, fallback: number) => {
    if (text === undefined) return fallback
    const n = Number(text)
    if (!Number.isInteger(n) || n < 1) throw new CliError(`expected a positive whole number, got ${text}`, EXIT.usage)
    return n
  }

  let connection: ChannelModel | undefined
  const channels: ConfirmChannel[] = []
  const open = async () => {
    const channel = await openChannel(connection as ChannelModel)
    channels.push(channel)
    return channel
  }
  try {
    if (!['stats', 'peek', 'replay', 'purge'].includes(command)) {
      throw new CliError(`unknown command ${command}\n\n${USAGE}`, EXIT.usage)
    }
    if (command === 'purge' && !values.yes) {
      throw new CliError('purge deletes every dead letter: say so with --yes', EXIT.usage)
    }
    const peekCount = count(rest[0], 10)
    const limit = count(values.limit, Number.POSITIVE_INFINITY)
    const config = readBrokerConfig(env)
    const topology = topologyFor(config.RABBITMQ_QUEUE, config.RABBITMQ_QUEUE_TYPE)
    connection = await connect(config)
    if (command === 'purge') await purge(open, topology, io)
    else {
      const channel = await open()
      if (command === 'stats') await stats(channel, topology, values.json ?? false, io)
      else if (command === 'peek') await peek(channel, topology, peekCount, values.json ?? false, io)
      else await replay(channel, topology, limit, values.kind, io)
    }
    return EXIT.ok
  } catch (err) {
    if (err instanceof CliError) {
      io.err(err.message)
      return err.exitCode
    }
    io.err(`failed: ${(err as Error).message}`)
    return EXIT.failed
  } finally {
    if (connection) await closeAll(connection, channels, io)
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  // A scan makes a little garbage per letter, and V8 would grow its young generation from 2 MB
  // to 32 MB for it: the RSS of stats over 100,000 letters went from 90 to 115 MB. Kept at its
  // first size, it stays near the CLI's 75 MB at rest, whatever the DLQ holds.
  v8.setFlagsFromString('--semi-space-growth-factor=1')
  const io: Output = { out: (line) => console.log(line), err: (line) => console.error(line) }
  process.exitCode = await main(process.argv.slice(2), process.env, io)
}
