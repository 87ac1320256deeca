#!/usr/bin/env node
// Installs a pinned OpenClaw gateway into the project's cache folder, once per version, from the
// lockfile committed for that version, so every install gets the exact same tree.
//
//   npm run gateway:install                    # the default, 2026.6.8
//   npm run gateway:install -- 2026.9.6        # another pinned version (or KEYROLL_OPENCLAW_VERSION)
//   npm run gateway:install -- --lock 2026.9.6 # (re)write scripts/openclaw-lock/<version>/
//
// Each version lives in `.cache/openclaw-<version>` and is installed with
// `npm ci --ignore-scripts` against `scripts/openclaw-lock/<version>/package-lock.json`. It is
// reused while the marker records the same lockfile digest; safe to run concurrently (a lock
// directory per version).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The version tests, the demo and the gateway image use unless told otherwise. */
export const OPENCLAW_VERSION = '2026.6.8';
const VERSION_RE = /^\d{4}\.\d{1,2}\.\d{1,3}$/;

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const lockRoot = join(root, 'scripts', 'openclaw-lock');

function log(msg) {
  process.stderr.write(`gateway:install: ${msg}\n`);
}

function fail(msg) {
  log(msg);
  process.exit(2);
}

function parseCli(argv) {
  let lockOnly = false;
  const positional = [];
  for (const a of argv) {
    if (a === '--lock') lockOnly = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write(
        'Usage: npm run gateway:install [-- [--lock] [VERSION]]\n' +
          `  VERSION defaults to $KEYROLL_OPENCLAW_VERSION, else ${OPENCLAW_VERSION}.\n` +
          '  --lock  write scripts/openclaw-lock/VERSION/{package.json,package-lock.json} and exit\n',
      );
      process.exit(0);
    } else if (a.startsWith('-')) fail(`unknown option ${a}`);
    else positional.push(a);
  }
  if (positional.length > 1) fail(`expected at most one version, got ${positional.join(' ')}`);
  const version = positional[0] ?? (process.env.KEYROLL_OPENCLAW_VERSION || OPENCLAW_VERSION);
  if (!VERSION_RE.test(version)) fail(`not an exact OpenClaw version: ${JSON.stringify(version)}`);
  return { version, lockOnly };
}

function npm(args, cwd) {
  // The machine-wide npmrc may set nodedir for native builds; no package here is built.
  return spawnSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd,
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, npm_config_nodedir: undefined },
  });
}

function manifest(version) {
  return `${JSON.stringify(
    { name: `keyroll-openclaw-${version}`, private: true, dependencies: { openclaw: version } },
    null,
    2,
  )}\n`;
}

/**
 * Resolves the tree once (`npm install --package-lock-only --ignore-scripts`: nothing is
 * downloaded but metadata, nothing runs) and commits it as the version's lockfile. An existing
 * lockfile seeds the resolution, so re-running keeps every version it already pins.
 */
function writeLock(version) {
  const dir = join(lockRoot, version);
  const work = mkdtempSync(join(tmpdir(), 'keyroll-openclaw-lock-'));
  try {
    writeFileSync(join(work, 'package.json'), manifest(version));
    if (existsSync(join(dir, 'package-lock.json'))) {
      copyFileSync(join(dir, 'package-lock.json'), join(work, 'package-lock.json'));
    }
    const r = npm(['install', '--package-lock-only', '--ignore-scripts'], work);
    if (r.status !== 0) fail(`npm install --package-lock-only failed (exit ${r.status ?? r.signal})`);
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(work, 'package.json'), join(dir, 'package.json'));
    copyFileSync(join(work, 'package-lock.json'), join(dir, 'package-lock.json'));
    log(`wrote ${join('scripts', 'openclaw-lock', version)}/{package.json,package-lock.json}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

async function acquireLock(lock) {
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    try {
      mkdirSync(lock);
      return;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      // A lock older than 10 minutes belongs to a dead installer.
      try {
        if (Date.now() - statSync(lock).mtimeMs > 10 * 60_000) rmSync(lock, { recursive: true, force: true });
      } catch {
        // Released between the mkdir and the stat: try again.
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

/** The marker's lockfile digest, or null when the install is missing or from another lockfile. */
function installedDigest(marker) {
  try {
    const m = JSON.parse(readFileSync(marker, 'utf8'));
    return typeof m.lockSha256 === 'string' ? m.lockSha256 : null;
  } catch {
    return null;
  }
}

const { version, lockOnly } = parseCli(process.argv.slice(2));
if (lockOnly) {
  writeLock(version);
  process.exit(0);
}

const lockDir = join(lockRoot, version);
const lockFile = join(lockDir, 'package-lock.json');
if (!existsSync(lockFile) || !existsSync(join(lockDir, 'package.json'))) {
  fail(
    `no committed lockfile for openclaw@${version} (${lockFile}); ` +
      `create it with \`npm run gateway:install -- --lock ${version}\` and commit it`,
  );
}
/**
 * A lockfile that does not pin exactly this version, or has a package without an integrity hash
 * (bundled ones are covered by their parent's), would let `npm ci` install something unchecked.
 */
function checkLock(lockText, manifestText) {
  const lock = JSON.parse(lockText);
  const pinned = JSON.parse(manifestText).dependencies?.openclaw;
  const packages = lock.packages ?? {};
  const problems = [];
  if (pinned !== version) problems.push(`package.json pins openclaw ${JSON.stringify(pinned)}`);
  if (packages['']?.dependencies?.openclaw !== version) problems.push('the lockfile root does not pin it');
  if (packages['node_modules/openclaw']?.version !== version) {
    problems.push(`the lockfile resolves openclaw@${packages['node_modules/openclaw']?.version}`);
  }
  const unhashed = Object.entries(packages).filter(([k, v]) => k && !v.inBundle && !v.link && !v.integrity);
  if (unhashed.length > 0) problems.push(`no integrity hash for ${unhashed.map(([k]) => k).join(', ')}`);
  if (problems.length > 0) fail(`${lockDir} does not pin openclaw@${version}: ${problems.join('; ')}`);
}

const lockText = readFileSync(lockFile, 'utf8');
checkLock(lockText, readFileSync(join(lockDir, 'package.json'), 'utf8'));
const digest = createHash('sha256').update(lockText).digest('hex');
const cacheDir = process.env.KEYROLL_CACHE_DIR ?? join(root, '.cache');
const prefix = join(cacheDir, `openclaw-${version}`);
const marker = join(prefix, '.installed');
const lock = `${prefix}.lock`;

if (installedDigest(marker) === digest) {
  log(`openclaw@${version} already installed in ${prefix}`);
  process.exit(0);
}
mkdirSync(cacheDir, { recursive: true });
await acquireLock(lock);
try {
  if (installedDigest(marker) !== digest) {
    log(`installing openclaw@${version} into ${prefix} (npm ci --ignore-scripts; about 35-60 s)`);
    const started = Date.now();
    rmSync(prefix, { recursive: true, force: true });
    mkdirSync(prefix, { recursive: true });
    copyFileSync(join(lockDir, 'package.json'), join(prefix, 'package.json'));
    copyFileSync(lockFile, join(prefix, 'package-lock.json'));
    const r = npm(['ci', '--ignore-scripts'], prefix);
    if (r.status !== 0) {
      log(`npm ci failed (exit ${r.status ?? r.signal})`);
      process.exit(1);
    }
    writeFileSync(
      marker,
      `${JSON.stringify({ version, lockSha256: digest, installedAt: new Date().toISOString() })}\n`,
    );
    log(`installed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
} finally {
  rmSync(lock, { recursive: true, force: true });
}
