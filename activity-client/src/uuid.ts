// UUIDv7 (RFC 9562) from the platform's crypto: 48 bits of Unix milliseconds, then random bits.

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))
/** Random bytes drawn 4 KiB at a time: one call to the platform for 256 ids. */
const pool = new Uint8Array(4096)
let used = pool.length

function randomHex(): string {
  if (used + 16 > pool.length) {
    globalThis.crypto.getRandomValues(pool)
    used = 0
  }
  let hex = ''
  for (let i = used; i < used + 16; i++) hex += HEX[pool[i] as number]
  used += 16
  return hex
}

/** The time part of the ids of one millisecond, made once. */
let headMs = NaN
let head = ''

/**
 * A UUIDv7 for `now` (ms since the epoch): sortable by creation, unique by its 74 random bits.
 * The random part is a v4 UUID's where the platform makes them (its variant bits already where
 * v7 wants them: pages on https and localhost, Node); else bytes from getRandomValues.
 */
export function uuidv7(now: number = Date.now()): string {
  if (now !== headMs) {
    const time = now.toString(16).padStart(12, '0')
    head = `${time.slice(0, 8)}-${time.slice(8, 12)}-7`
    headMs = now
  }
  if (typeof globalThis.crypto.randomUUID === 'function') return head + globalThis.crypto.randomUUID().slice(15)
  const hex = randomHex()
  // The variant (10xx) in the first digit of the fourth group.
  const variant = ((parseInt(hex[16] as string, 16) & 0x3) | 0x8).toString(16)
  return `${head}${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20, 32)}`
}
