// The ceiling for the producer: a minimal Fastify server that validates the same body, publishes
// it with one confirmed persistent publish, and answers 202. No recovery, no limits, no logs.
import amqp from 'amqplib'
import Fastify from 'fastify'
import { assertTopology, messageProperties, parseEvent, topologyFor } from 'event-contract'

const queue = process.env.RABBITMQ_QUEUE as string
const connection = await amqp.connect({
  hostname: process.env.RABBITMQ_HOST,
  port: Number(process.env.RABBITMQ_PORT),
  username: process.env.RABBITMQ_USER,
  password: process.env.RABBITMQ_PASS,
})
const channel = await connection.createConfirmChannel()
await assertTopology(channel, topologyFor(queue, 'quorum'))

const app = Fastify()
app.post('/api/v1/events/track', async (request, reply) => {
  const result = parseEvent(request.body)
  if (!result.ok) return reply.code(400).send({ detail: result.errors })
  const message = result.value
  await new Promise<void>((resolve, reject) =>
    channel.publish('', queue, Buffer.from(JSON.stringify(message)), messageProperties(message.event_id), (err) =>
      err ? reject(err) : resolve(),
    ),
  )
  return reply
    .code(202)
    .send({ status: 'accepted', message: 'Event queued for processing', event_id: message.event_id })
})
app.get('/health', async () => ({ status: 'healthy' }))
await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT) })
process.on(
  'SIGTERM',
  () =>
    void app
      .close()
      .then(() => connection.close())
      .then(() => process.exit(0)),
)
