import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

/** Tests that need no broker and no database: `npx vitest run --project unit`, in seconds. */
const UNIT = [
  'activity-client/test/client.test.ts',
  'activity-client/test/rules.test.ts',
  'consumer-service/test/batcher.test.ts',
  'consumer-service/test/config.test.ts',
  'consumer-service/test/health.test.ts',
  'consumer-service/test/ledger.test.ts',
  'consumer-service/test/prefetch.test.ts',
  'consumer-service/test/redelivery.test.ts',
  'consumer-service/test/store.test.ts',
  'e2e/compose.test.ts',
  'event-contract/test/api-keys.test.ts',
  'event-contract/test/timing.test.ts',
  'event-contract/test/validate.test.ts',
  'producer-service/test/app.test.ts',
  'producer-service/test/batch-messages.test.ts',
  'producer-service/test/batch.test.ts',
  'producer-service/test/stall-watch.test.ts',
  'query-service/test/app.test.ts',
  'query-service/test/cursor.test.ts',
]
// RabbitMQ and MySQL: the configured ones, or containers when they do not answer.
const SERVICES = ['./test-support/global-setup.ts']

export default defineConfig({
  resolve: {
    // Tests run against the contract's source, so unit tests need no build first.
    alias: { 'event-contract': fileURLToPath(new URL('./event-contract/src/index.ts', import.meta.url)) },
  },
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: UNIT, sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        test: {
          name: 'main',
          globalSetup: SERVICES,
          include: ['*/test/**/*.test.ts', 'e2e/**/*.test.ts'],
          exclude: [...UNIT, 'e2e/faults.test.ts', '**/node_modules/**'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        // Restarts the shared RabbitMQ: runs alone, after everything else.
        extends: true,
        test: {
          name: 'faults',
          globalSetup: SERVICES,
          include: ['e2e/faults.test.ts'],
          testTimeout: 180_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
})
