import { defineConfig } from 'vitest/config';

// Two projects: fast tests run in parallel; tests that start the real OpenClaw gateway (650+ MB,
// 7-10 s to ready each) run one file at a time so a 2-core CI machine is not overcommitted.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: ['test/gateway/**', '**/node_modules/**'],
          testTimeout: 30_000,
          hookTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'gateway',
          include: ['test/gateway/**/*.test.ts'],
          globalSetup: ['test/support/gateway-global-setup.ts'],
          pool: 'forks',
          poolOptions: { forks: { singleFork: true } },
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
