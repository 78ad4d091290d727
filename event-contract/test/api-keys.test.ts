// API keys as every service reads them: from a variable and a file, in three forms, compared in
// constant time.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ConfigError, fingerprint, KeyRing, keysFromConfig, presentedKey } from '../src/index.js'

describe('keysFromConfig', () => {
  it('takes the variable and the file together, trimmed, empty items dropped', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'keys-')), 'keys')
    writeFileSync(file, 'from-file-1\n\n  from-file-2  \n')
    expect(keysFromConfig({ KEYS: ' a, b ,,', KEYS_FILE: file }, 'KEYS', 'KEYS_FILE')).toEqual([
      'a',
      'b',
      'from-file-1',
      'from-file-2',
    ])
  })

  it('names the variable of a file that cannot be read or holds no key', () => {
    expect(() => keysFromConfig({ KEYS_FILE: '/no/such/file' }, 'KEYS', 'KEYS_FILE')).toThrow(ConfigError)
    const empty = join(mkdtempSync(join(tmpdir(), 'keys-')), 'empty')
    writeFileSync(empty, '\n')
    expect(() => keysFromConfig({ KEYS_FILE: empty }, 'KEYS', 'KEYS_FILE')).toThrow(/KEYS_FILE=.*holds no key/)
  })
})

describe('presentedKey and KeyRing', () => {
  it('reads the key from Bearer, Basic (the key as user name) and X-API-Key', () => {
    expect(presentedKey({ authorization: 'Bearer k1' })).toBe('k1')
    expect(presentedKey({ authorization: `Basic ${Buffer.from('k2:').toString('base64')}` })).toBe('k2')
    expect(presentedKey({ 'x-api-key': 'k3' })).toBe('k3')
    expect(presentedKey({ authorization: 'Digest x' })).toBeUndefined()
    expect(presentedKey({ authorization: `Basic ${Buffer.from(':pw').toString('base64')}` })).toBeUndefined()
    expect(presentedKey({})).toBeUndefined()
  })

  it('holds its keys and no other, and names them by fingerprint only', () => {
    const ring = new KeyRing(['alpha', 'beta'])
    expect(ring.holds('alpha') && ring.holds('beta')).toBe(true)
    expect(ring.holds('gamma') || ring.holds('alph') || ring.holds('')).toBe(false)
    expect(ring.fingerprints).toEqual([fingerprint('alpha'), fingerprint('beta')])
    expect(ring.fingerprints.join()).not.toMatch(/alpha|beta/)
  })
})
