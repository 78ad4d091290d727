import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

export default defineConfig({
  resolve: {
    // Tests run against the contract's source, so unit tests need no build first.
    alias: { 'event-contract': fileURLToPath(new URL('./event-contract/src/index.ts', import.meta.url)) },
  },
  test: {
    include: ['*/test/**/*.test.ts', 'e2e/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
})
