// `npm run test:chaos` only: the fault soak starts private servers of its own, so no global setup.
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

export default defineConfig({
  resolve: {
    alias: { 'event-contract': fileURLToPath(new URL('./event-contract/src/index.ts', import.meta.url)) },
  },
  test: {
    include: ['e2e/chaos/soak.ts'],
    hookTimeout: 120_000,
    // The soak's progress lines, as they come, without a header each.
    disableConsoleIntercept: true,
  },
})
