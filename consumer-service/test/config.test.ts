// The consumer's variables: RETENTION_DAYS unset or empty keeps events forever; a number of days
// is taken; anything else stops the consumer naming it (main.integration.test.ts runs the process).
import { describe, expect, it } from 'vitest'
import { ConfigError } from 'event-contract'
import { readConfig } from '../src/config.js'

describe('RETENTION_DAYS', () => {
  it('is off when unset or empty, and a number of days when set', () => {
    expect(readConfig({}).RETENTION_DAYS).toBeUndefined()
    expect(readConfig({ RETENTION_DAYS: '' }).RETENTION_DAYS).toBeUndefined()
    expect(readConfig({ RETENTION_DAYS: '30' }).RETENTION_DAYS).toBe(30)
  })

  it.each(['0', '-1', '1.5', 'thirty'])('refuses %j, naming the variable', (value) => {
    expect(() => readConfig({ RETENTION_DAYS: value })).toThrow(ConfigError)
    expect(() => readConfig({ RETENTION_DAYS: value })).toThrow(/RETENTION_DAYS/)
  })
})
