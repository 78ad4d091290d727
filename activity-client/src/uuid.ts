// UUIDv7 (RFC 9562) from the platform's crypto: 48 bits of Unix milliseconds, then random bits.

/** A UUIDv7 for `now` (ms since the epoch): sortable by creation, unique by its 74 random bits. */
export function uuidv7(now: number = Date.now()): string {
  const bytes = new Uint8Array(16)
  globalThis.crypto.getRandomValues(bytes)
  const time = now.toString(16).padStart(12, '0')
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
  // Version 7 in the 13th digit; the variant (10xx) in the 17th.
  const variant = ((parseInt(hex[16] as string, 16) & 0x3) | 0x8).toString(16)
  return `${time.slice(0, 8)}-${time.slice(8, 12)}-7${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20, 32)}`
}
