// When a delivery is worn: the quorum queue dead-letters a message at its delivery limit (20)
// whatever it holds, and every lost channel or killed consumer adds a delivery to each message it
// held. A good event the database cannot take yet (rows locked, say) while the broker link keeps
// dropping would be dead-lettered that way; a worn delivery is queued again as a fresh copy
// (delivery count 0) and the original acked, up to five limits' worth in all, so that a message that
// kills every consumer it reaches still ends in the DLQ.
import type { ConsumeMessage } from 'amqplib'
import type { Topology } from 'event-contract'

/** Deliveries of earlier copies, carried by each copy. */
export const PRIOR_DELIVERIES_HEADER = 'x-prior-deliveries'

/** Earlier deliveries of this message and of the copies before it. */
export function deliveriesOf(msg: ConsumeMessage): { count: number; prior: number } {
  const headers = msg.properties.headers ?? {}
  const count = Number(headers['x-delivery-count'] ?? 0)
  const prior = Number(headers[PRIOR_DELIVERIES_HEADER] ?? 0)
  return { count: Number.isFinite(count) ? count : 0, prior: Number.isFinite(prior) ? prior : 0 }
}

/**
 * True when the delivery should be queued again as a fresh copy: half its limit used, and fewer
 * than five limits' worth of deliveries in all (quorum queues only; classic ones have no limit).
 */
export function isWorn(msg: ConsumeMessage, topology: Topology): boolean {
  if (topology.queueType !== 'quorum') return false
  const { count, prior } = deliveriesOf(msg)
  return count >= topology.deliveryLimit / 2 && prior + count < 5 * topology.deliveryLimit
}

/** The headers of the fresh copy: the original's, its deliveries added up, RabbitMQ's count gone. */
export function copyHeaders(msg: ConsumeMessage): Record<string, unknown> {
  const { count, prior } = deliveriesOf(msg)
  const { 'x-delivery-count': _count, ...headers } = msg.properties.headers ?? {}
  return { ...headers, [PRIOR_DELIVERIES_HEADER]: prior + count }
}
