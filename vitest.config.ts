import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

/**
 * The unit tests start hundreds of Node processes on the sources (controllers, stand-in gateways,
 * CLI runs); one shared V8 compile cache halves each start's CPU (`keyroll controller --help`:
 * 1.1 s cold, 0.5 s warm). Children spawned with `process.env` or `sandbox.env()` inherit it. Not
 * for the gateway project: OpenClaw re-spawns its launcher when NODE_COMPILE_CACHE is set.
 */
const compileCache = fileURLToPath(new URL('./.cache/node-compile-cache', import.meta.url));

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
          // A directory for the one bundle the tests that start `keyroll operator` share.
          globalSetup: ['test/support/bundle-global-setup.ts'],
          testTimeout: 30_000,
          hookTimeout: 30_000,
          env: { NODE_COMPILE_CACHE: compileCache },
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
