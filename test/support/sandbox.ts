// Owns per-test sandboxes for the real gateway: a scratch HOME/state/TMPDIR and the exact,
// minimal environment OpenClaw runs with (reference/openclaw.md §4), plus raw-byte searches.
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Sandbox {
  /** The sandbox root; also HOME and OPENCLAW_HOME. */
  dir: string;
  home: string;
  /** OPENCLAW_STATE_DIR (`<dir>/.openclaw`). */
  stateDir: string;
  /** TMPDIR: OpenClaw's lock files and compile cache land here instead of /tmp. */
  tmpDir: string;
  /**
   * The whole environment for an OpenClaw process in this sandbox. Nothing is inherited from
   * the test process: a developer's own KILOCODE_API_KEY or NODE_OPTIONS never
   * leaks in. `extra` entries win; an `undefined` value removes a variable.
   */
  env(extra?: Record<string, string | undefined>): Record<string, string>;
  cleanup(): void;
}

/** The directory of a Node >= 22.19 binary: this process's if new enough, else the project's. */
export function node24BinDir(): string {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  if (major > 22 || (major === 22 && minor >= 19)) return dirname(process.execPath);
  const local = join(REPO_ROOT, 'node_modules', '.bin');
  if (existsSync(join(local, 'node'))) return local;
  throw new Error('No Node >= 22.19 found: run `npm ci` (it installs Node 24 from the npm registry).');
}

/** Absolute path of a Node >= 22.19 binary for spawning OpenClaw. */
export function node24(): string {
  return join(node24BinDir(), 'node');
}

export function createSandbox(prefix = 'keyroll-oc-'): Sandbox {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const stateDir = join(dir, '.openclaw');
  const tmpDir = join(dir, 'tmp');
  mkdirSync(tmpDir, { recursive: true, mode: 0o700 });
  const basePath = [node24BinDir(), '/usr/local/bin', '/usr/bin', '/bin'].join(delimiter);
  return {
    dir,
    home: dir,
    stateDir,
    tmpDir,
    env(extra = {}) {
      const env: Record<string, string | undefined> = {
        PATH: basePath,
        HOME: dir,
        OPENCLAW_HOME: dir,
        OPENCLAW_STATE_DIR: stateDir,
        TMPDIR: tmpDir,
        XDG_CONFIG_HOME: join(dir, '.config'),
        XDG_CACHE_HOME: join(dir, '.cache'),
        OPENCLAW_NO_RESPAWN: '1',
        OPENCLAW_DISABLE_PLUGIN_REGISTRY_MIGRATION: '1',
        LANG: 'C.UTF-8',
        // Set for the unit project only (vitest.config.ts): a shared compile cache for the sources.
        NODE_COMPILE_CACHE: process.env.NODE_COMPILE_CACHE,
        ...extra,
      };
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
      return out;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
}

/** `fn()`, or `fallback` when the path went away meanwhile (a running gateway's staging files). */
function unlessGone<T>(fn: () => T, fallback: T): T {
  try {
    return fn();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return fallback;
    throw err;
  }
}

/**
 * Every regular file under `dir` (symlinks are not followed). A file or folder removed while the
 * walk runs (2026.9.6 stages its UI assets in the state dir) is left out, not an error.
 */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of unlessGone(() => readdirSync(d), [])) {
      const p = join(d, name);
      const st = unlessGone(() => lstatSync(p), null);
      if (st?.isDirectory()) walk(p);
      else if (st?.isFile()) out.push(p);
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

/**
 * Files under `dir` whose raw bytes contain `needle` (UTF-8 or UTF-16LE), SQLite databases, WAL
 * and shared-memory files included — how a test proves a key is gone from a state dir.
 */
export function filesContaining(dir: string, needle: string): string[] {
  const utf8 = Buffer.from(needle, 'utf8');
  const utf16 = Buffer.from(needle, 'utf16le');
  return listFiles(dir).filter((f) => {
    const bytes = unlessGone(() => readFileSync(f), Buffer.alloc(0));
    return bytes.includes(utf8) || bytes.includes(utf16);
  });
}
