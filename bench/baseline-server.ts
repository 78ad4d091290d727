// The yardstick for the producer: bare Fastify validating the same body and answering 202,
// with no broker. The producer's target is a fraction of what this does on the same machine.
import Fastify from 'fastify'
import { parseEvent } from 'event-contract'

const app = Fastify()
app.post('/api/v1/events/track', async (request, reply) => {
  const result = parseEvent(request.body)
  if (!result.ok) return reply.code(400).send({ detail: result.errors })
  return reply
    .code(202)
    .send({ status: 'accepted', message: 'Event queued for processing', event_id: result.value.event_id })
})
await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT) })
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)))
