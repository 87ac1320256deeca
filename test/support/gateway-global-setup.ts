// Vitest global setup for the `gateway` project: make sure every OpenClaw version the real-gateway
// tests run is installed (each from its committed lockfile; a no-op once installed).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { OPENCLAW_VERSION, OPENCLAW_VERSIONS_TESTED } from './openclaw.ts';

export default function setup(): void {
  const script = fileURLToPath(new URL('../../scripts/gateway-install.mjs', import.meta.url));
  // Versions are passed explicitly: the tests run `openclawEntry(version)`, whatever
  // KEYROLL_OPENCLAW_VERSION says.
  for (const version of [
    OPENCLAW_VERSION,
    ...OPENCLAW_VERSIONS_TESTED.filter((v) => v !== OPENCLAW_VERSION),
  ]) {
    const started = Date.now();
    const r = spawnSync(process.execPath, [script, version], { stdio: 'inherit', timeout: 10 * 60_000 });
    if (r.status !== 0) {
      throw new Error(
        `npm run gateway:install -- ${version} failed (exit ${r.status ?? r.signal}); the real-gateway tests cannot run`,
      );
    }
    process.stderr.write(`gateway global setup: OpenClaw ${version} ready in ${Date.now() - started} ms\n`);
  }
}
