// Vitest global setup for the `gateway` project: make sure the pinned OpenClaw is installed.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { OPENCLAW_VERSION } from './openclaw.ts';

export default function setup(): void {
  const script = fileURLToPath(new URL('../../scripts/gateway-install.mjs', import.meta.url));
  // The version is passed explicitly: the tests run `openclawEntry()`'s default, whatever
  // KEYROLL_OPENCLAW_VERSION says.
  const r = spawnSync(process.execPath, [script, OPENCLAW_VERSION], {
    stdio: 'inherit',
    timeout: 10 * 60_000,
  });
  if (r.status !== 0) {
    throw new Error(
      `npm run gateway:install failed (exit ${r.status ?? r.signal}); the real-gateway tests cannot run`,
    );
  }
}
