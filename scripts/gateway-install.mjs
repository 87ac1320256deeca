#!/usr/bin/env node
// Installs the pinned OpenClaw gateway into the project's cache folder, once.
// `npm run gateway:install` — reused when present; safe to run concurrently (a lock directory).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const OPENCLAW_VERSION = '2026.6.8';
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cacheDir = process.env.KEYROLL_CACHE_DIR ?? join(root, '.cache');
const prefix = join(cacheDir, `openclaw-${OPENCLAW_VERSION}`);
const marker = join(prefix, '.installed');
const lock = `${prefix}.lock`;

function log(msg) {
  process.stderr.write(`gateway:install: ${msg}\n`);
}

async function acquireLock() {
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    try {
      mkdirSync(lock);
      return;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      // A lock older than 10 minutes belongs to a dead installer.
      if (Date.now() - statSync(lock).mtimeMs > 10 * 60_000) rmSync(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

if (existsSync(marker)) {
  log(`openclaw@${OPENCLAW_VERSION} already installed in ${prefix}`);
  process.exit(0);
}
mkdirSync(cacheDir, { recursive: true });
await acquireLock();
try {
  if (!existsSync(marker)) {
    log(`installing openclaw@${OPENCLAW_VERSION} into ${prefix} (--ignore-scripts; about 35-60 s)`);
    const started = Date.now();
    rmSync(prefix, { recursive: true, force: true });
    mkdirSync(prefix, { recursive: true });
    writeFileSync(
      join(prefix, 'package.json'),
      JSON.stringify({ name: 'keyroll-gateway-cache', private: true }),
    );
    const r = spawnSync(
      'npm',
      [
        'install',
        `openclaw@${OPENCLAW_VERSION}`,
        '--ignore-scripts',
        '--no-audit',
        '--no-fund',
        '--loglevel=error',
      ],
      {
        cwd: prefix,
        stdio: ['ignore', 'inherit', 'inherit'],
        env: { ...process.env, npm_config_nodedir: undefined },
      },
    );
    if (r.status !== 0) {
      log(`npm install failed (exit ${r.status ?? r.signal})`);
      process.exit(1);
    }
    writeFileSync(marker, `${new Date().toISOString()}\n`);
    log(`installed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
} finally {
  rmSync(lock, { recursive: true, force: true });
}
