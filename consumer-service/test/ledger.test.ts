// The ack rule, pinned without a broker: a fake channel records every ack(msg, allUpTo).
import { describe, expect, it } from 'vitest'
import type { ConfirmChannel, ConsumeMessage } from 'amqplib'
import { pino } from 'pino'
import { Ledger } from '../src/ledger.js'

function setup() {
  const acks: [tag: number, allUpTo: boolean][] = []
  let closed = false
  const channel = {
    ack(msg: ConsumeMessage, allUpTo = false) {
      if (closed) throw new Error('Channel closed')
      acks.push([msg.fields.deliveryTag, allUpTo])
    },
  } as unknown as ConfirmChannel
  const ledger = new Ledger(channel, pino({ level: 'silent' }))
  const msgs = new Map<number, ConsumeMessage>()
  const deliver = (...tags: number[]) =>
    tags.map((tag) => {
      const msg = { fields: { deliveryTag: tag }, content: Buffer.alloc(10), properties: {} } as ConsumeMessage
      msgs.set(tag, msg)
      ledger.hold(msg)
      return msg
    })
  const of = (...tags: number[]) => tags.map((tag) => msgs.get(tag) as ConsumeMessage)
  return { ledger, acks, deliver, of, close: () => (closed = true) }
}

describe('Ledger', () => {
  it('acks a run of stored deliveries at the front in one multiple ack', () => {
    const { ledger, acks, deliver, of } = setup()
    deliver(1, 2, 3, 4)
    ledger.stored(of(1, 2, 3))
    expect(acks).toEqual([[3, true]])
    expect(ledger.inHand).toEqual({ events: 1, bytes: 10 })
  })

  it('never sends a multiple ack past a held delivery', () => {
    const { ledger, acks, deliver, of } = setup()
    deliver(1, 2, 3, 4)
    ledger.stored(of(2, 3, 4))
    expect(acks).toEqual([])
    ledger.stored(of(1))
    expect(acks).toEqual([[4, true]])
    expect(ledger.inHand.events).toBe(0)
  })

  it('acks stored deliveries behind a parked one one by one, and the parked one when it is done', () => {
    const { ledger, acks, deliver, of } = setup()
    deliver(1, 2, 3, 4, 5)
    ledger.stored(of(2, 3))
    ledger.park(of(1)[0] as ConsumeMessage)
    expect(acks).toEqual([
      [2, false],
      [3, false],
    ])
    // Still behind the parked one: each alone, at once.
    ledger.stored(of(5))
    expect(acks.at(-1)).toEqual([5, false])
    ledger.stored(of(1))
    expect(acks.at(-1)).toEqual([1, true])
    // 4 is held: nothing covers it.
    expect(acks.some(([tag, allUpTo]) => tag >= 4 && allUpTo)).toBe(false)
    expect(ledger.inHand.events).toBe(1)
    ledger.stored(of(4))
    expect(acks.at(-1)).toEqual([4, true])
    expect(ledger.inHand.events).toBe(0)
  })

  it('acks a worn delivery alone whatever is held before it, and the run behind it once it was the front', () => {
    const { ledger, acks, deliver, of } = setup()
    deliver(1, 2, 3)
    ledger.settleAlone(of(2)[0] as ConsumeMessage)
    expect(acks).toEqual([[2, false]])
    ledger.stored(of(3))
    expect(acks).toEqual([[2, false]]) // 1 is held: nothing covers it
    ledger.settleAlone(of(1)[0] as ConsumeMessage)
    expect(acks).toEqual([
      [2, false],
      [1, false],
      [3, true],
    ])
    expect(ledger.inHand.events).toBe(0)
  })

  it('acks the stored deliveries still behind held ones alone before a stop', () => {
    const { ledger, acks, deliver, of } = setup()
    deliver(1, 2, 3)
    ledger.stored(of(2, 3))
    ledger.ackStored()
    expect(acks).toEqual([
      [2, false],
      [3, false],
    ])
    expect(ledger.inHand.events).toBe(1)
  })

  it('settles nothing once the channel is lost, and loses itself when an ack throws', () => {
    const { ledger, acks, deliver, of, close } = setup()
    deliver(1, 2)
    close()
    ledger.stored(of(1))
    expect(ledger.lost).toBe(true)
    ledger.stored(of(2))
    ledger.ackStored()
    expect(acks).toEqual([])
    expect(ledger.inHand.events).toBe(0)
  })
})

describe('Ledger.drained', () => {
  it('resolves once every delivery is settled or parked, or the channel is lost', async () => {
    const { ledger, deliver, of } = setup()
    deliver(1, 2, 3)
    let drained = false
    void ledger.drained().then(() => (drained = true))
    ledger.stored(of(2))
    ledger.park(of(1)[0] as ConsumeMessage)
    await Promise.resolve()
    expect(drained).toBe(false)
    ledger.stored(of(3))
    await Promise.resolve()
    expect(drained).toBe(true)

    const other = setup()
    other.deliver(1)
    let lost = false
    void other.ledger.drained().then(() => (lost = true))
    other.close()
    other.ledger.stored(other.of(1))
    await Promise.resolve()
    expect(lost).toBe(true)
  })
})
