// Unit: when a delivery is worn enough to be queued again as a fresh copy, and what the copy carries.
import type { ConsumeMessage } from 'amqplib'
import { describe, expect, it } from 'vitest'
import { topologyFor } from 'event-contract'
import { copyHeaders, isWorn, PRIOR_DELIVERIES_HEADER } from '../src/redelivery.js'

const quorum = topologyFor('q', 'quorum')
const delivery = (headers: Record<string, unknown>) => ({ properties: { headers } }) as unknown as ConsumeMessage

describe('isWorn', () => {
  it('is true from half the delivery limit on, on quorum queues only', () => {
    expect(isWorn(delivery({}), quorum)).toBe(false)
    expect(isWorn(delivery({ 'x-delivery-count': 9 }), quorum)).toBe(false)
    expect(isWorn(delivery({ 'x-delivery-count': 10 }), quorum)).toBe(true)
    expect(isWorn(delivery({ 'x-delivery-count': 10 }), topologyFor('q', 'classic'))).toBe(false)
  })

  it('leaves a message to the broker once its copies were delivered five limits in all', () => {
    expect(isWorn(delivery({ 'x-delivery-count': 10, [PRIOR_DELIVERIES_HEADER]: 89 }), quorum)).toBe(true)
    expect(isWorn(delivery({ 'x-delivery-count': 10, [PRIOR_DELIVERIES_HEADER]: 90 }), quorum)).toBe(false)
  })

  it('ignores counts that are not numbers', () => {
    expect(isWorn(delivery({ 'x-delivery-count': 'many' }), quorum)).toBe(false)
  })
})

describe('copyHeaders', () => {
  it('keeps the headers, drops RabbitMQ’s count and adds it to the prior deliveries', () => {
    const headers = copyHeaders(delivery({ 'x-delivery-count': 10, [PRIOR_DELIVERIES_HEADER]: 10, 'x-event-count': 3 }))
    expect(headers).toEqual({ 'x-event-count': 3, [PRIOR_DELIVERIES_HEADER]: 20 })
  })
})
