// Vitest global setup for the `gateway` project: make sure the pinned OpenClaw is installed.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export default function setup(): void {
  const script = fileURLToPath(new URL('../../scripts/gateway-install.mjs', import.meta.url));
  const r = spawnSync(process.execPath, [script], { stdio: 'inherit', timeout: 10 * 60_000 });
  if (r.status !== 0) {
    throw new Error(
      `npm run gateway:install failed (exit ${r.status ?? r.signal}); the real-gateway tests cannot run`,
    );
  }
}
