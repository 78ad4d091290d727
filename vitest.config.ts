import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

export default defineConfig({
  resolve: {
    // Tests run against the contract's source, so unit tests need no build first.
    alias: { 'event-contract': fileURLToPath(new URL('./event-contract/src/index.ts', import.meta.url)) },
  },
  test: {
    // RabbitMQ and MySQL: the configured ones, or containers when they do not answer.
    globalSetup: ['./test-support/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: {
          name: 'main',
          include: ['*/test/**/*.test.ts', 'e2e/**/*.test.ts'],
          exclude: ['e2e/faults.test.ts', '**/node_modules/**'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        // Restarts the shared RabbitMQ: runs alone, after everything else.
        extends: true,
        test: {
          name: 'faults',
          include: ['e2e/faults.test.ts'],
          testTimeout: 180_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
})
