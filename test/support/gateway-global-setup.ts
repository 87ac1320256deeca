// Vitest global setup for the `gateway` project: make sure every OpenClaw version the real-gateway
// tests run is installed (each from its committed lockfile; a no-op once installed). Vitest runs
// every project's global setup before any test, so this time is on the whole run's wall: the
// versions install side by side (the install script locks per version).
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { OPENCLAW_VERSIONS_TESTED } from './openclaw.ts';

const INSTALL_TIMEOUT_MS = 10 * 60_000;

function install(script: string, version: string): Promise<void> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, version], { stdio: 'inherit' });
    const timer = setTimeout(() => child.kill('SIGKILL'), INSTALL_TIMEOUT_MS);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) {
        reject(
          new Error(
            `npm run gateway:install -- ${version} failed (exit ${code ?? signal}); the real-gateway tests cannot run`,
          ),
        );
        return;
      }
      process.stderr.write(`gateway global setup: OpenClaw ${version} ready in ${Date.now() - started} ms\n`);
      resolve();
    });
  });
}

export default async function setup(): Promise<void> {
  const script = fileURLToPath(new URL('../../scripts/gateway-install.mjs', import.meta.url));
  // Versions are passed explicitly: the tests run `openclawEntry(version)`, whatever
  // KEYROLL_OPENCLAW_VERSION says.
  await Promise.all(OPENCLAW_VERSIONS_TESTED.map((v) => install(script, v)));
}
