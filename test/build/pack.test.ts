// The package is publishable: `npm pack` of the package as package.json describes it (the bundle
// built as prepack builds it), installed offline from the npm cache into an empty project, runs
// `keyroll --help` and `keyroll diff --targets FILE` under the system's Node (re-executed under the
// Node 24 the package depends on when the system's is older).
import { execFile } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { rm } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  private?: boolean;
  files: string[];
  bin: Record<string, string>;
};
const KEY = 'sk-test-pack-key-0123456789';
const TOKEN = 'pack-controller-token-0123456789';

let tmp = '';
let app = '';
let packed: string[] = [];
let installMode = '';

/** The npm on PATH (the system's); it runs under the system's Node, as a user's would. */
async function npm(args: string[], cwd: string): Promise<string> {
  const { stdout } = await run('npm', args, {
    cwd,
    env: { ...process.env, npm_config_update_notifier: 'false', npm_config_loglevel: 'error' },
    timeout: 120_000,
  });
  return stdout;
}

const run = promisify(execFile);

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `keyroll …` from the installed package, under the system's Node (PATH without this Node 24). */
async function keyroll(args: string[], env: Record<string, string> = {}): Promise<Ran> {
  const path = (process.env.PATH ?? '')
    .split(':')
    .filter((p) => !p.startsWith(ROOT))
    .join(':');
  try {
    const r = await run(join(app, 'node_modules', '.bin', 'keyroll'), args, {
      cwd: app,
      env: { PATH: path, HOME: tmp, ...env },
      timeout: 60_000,
    });
    return { status: 0, ...r };
  } catch (err) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw err;
    return { status: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/**
 * An empty project that depends on the tarball, with a lockfile: keyroll from `spec`, its runtime
 * dependencies at the versions and integrity of this checkout's lockfile (dev ones left out).
 */
function writeAppProject(dir: string, spec: string): { path: string; integrity?: string }[] {
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean } & Record<string, unknown>>;
  };
  const root = lock.packages['']! as { dependencies?: object; optionalDependencies?: object };
  const packages: Record<string, unknown> = {
    '': { name: 'app', version: '1.0.0', dependencies: { [PKG.name]: spec } },
    [`node_modules/${PKG.name}`]: {
      version: PKG.version,
      resolved: spec,
      dependencies: root.dependencies,
      optionalDependencies: root.optionalDependencies,
      bin: PKG.bin,
    },
  };
  const runtime: { path: string; integrity?: string }[] = [];
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (path === '' || entry.dev) continue;
    packages[path] = entry;
    runtime.push({ path, ...(typeof entry.integrity === 'string' ? { integrity: entry.integrity } : {}) });
  }
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({ name: 'app', version: '1.0.0', private: true, dependencies: { [PKG.name]: spec } }),
  );
  writeFileSync(
    join(dir, 'package-lock.json'),
    JSON.stringify({ name: 'app', version: '1.0.0', lockfileVersion: 3, requires: true, packages }),
  );
  return runtime;
}

/** Whether npm's cache (content-addressed by integrity) holds a tarball. */
function inNpmCache(integrity: string): boolean {
  const [algo, b64] = integrity.split('-', 2) as [string, string];
  const hex = Buffer.from(b64, 'base64').toString('hex');
  const cache = process.env.npm_config_cache ?? join(homedir(), '.npm');
  return existsSync(
    join(cache, '_cacache', 'content-v2', algo, hex.slice(0, 2), hex.slice(2, 4), hex.slice(4)),
  );
}

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'keyroll-pack-'));
  // The package as `npm pack` would make it from a clean checkout: the files package.json lists,
  // with dist/ built as prepack builds it (into the stage, so a dist/ in the checkout is untouched).
  const stage = join(tmp, 'stage');
  mkdirSync(stage);
  for (const f of ['package.json', 'README.md', ...PKG.files]) {
    const from = join(ROOT, f);
    if (f !== 'dist/' && existsSync(from)) cpSync(from, join(stage, f), { recursive: true });
  }
  await run(process.execPath, [join(ROOT, 'scripts', 'build.mjs'), '--outdir', join(stage, 'dist')], {
    cwd: ROOT,
  });
  const out = await npm(
    ['pack', '--offline', '--ignore-scripts', '--json', '--pack-destination', tmp],
    stage,
  );
  const report = JSON.parse(out) as { filename: string; files: { path: string }[] }[];
  packed = report[0]!.files.map((f) => f.path);
  app = join(tmp, 'app');
  mkdirSync(app);
  const tarball = join(tmp, report[0]!.filename);
  const runtime = writeAppProject(app, `file:${tarball}`);
  const missing = runtime.filter((p) => !p.integrity || !inNpmCache(p.integrity));
  if (missing.length === 0) {
    // Offline: the lockfile names every dependency, and the npm cache holds each tarball.
    installMode = 'npm ci --offline';
    await npm(['ci', '--offline', '--no-audit', '--no-fund'], app);
  } else {
    // The cache lacks some tarball (this checkout was installed another way): lay the package out
    // as npm does — the tarball under node_modules/keyroll, its runtime dependencies (the lockfile's
    // non-dev packages) beside it, taken from this checkout, and the bin link — without a network.
    installMode = `from the checkout (${missing.length} of ${runtime.length} tarballs not in the npm cache)`;
    const into = join(app, 'node_modules', PKG.name);
    mkdirSync(into, { recursive: true });
    await run('tar', ['-xzf', tarball, '-C', into, '--strip-components=1']);
    for (const p of runtime) {
      if (p.path.split('/node_modules/').length > 1) continue; // nested: inside its parent's link
      mkdirSync(dirname(join(app, p.path)), { recursive: true });
      symlinkSync(join(ROOT, p.path), join(app, p.path));
    }
    for (const [name, target] of Object.entries(PKG.bin)) {
      chmodSync(join(into, target), 0o755);
      mkdirSync(join(app, 'node_modules', '.bin'), { recursive: true });
      symlinkSync(join('..', PKG.name, target), join(app, 'node_modules', '.bin', name));
    }
  }
  process.stdout.write(`pack test: installed ${installMode}\n`);
}, 180_000);

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
}, 60_000);

describe('npm package', () => {
  it('is publishable and ships the bundle, not the sources or the tests', () => {
    expect(PKG.private).toBeUndefined();
    expect(PKG.bin.keyroll).toBe('bin/keyroll.mjs');
    expect(packed).toContain('bin/keyroll.mjs');
    expect(packed).toContain('dist/keyroll.js');
    expect(packed).toContain('manifests/crd/gatewaykey.yaml');
    expect(packed.filter((p) => /^(src|test|bench|scripts)\//.test(p))).toEqual([]);
    expect(readdirSync(join(app, 'node_modules', PKG.name))).not.toContain('src');
  });

  it('keyroll --help runs from the installed package', async () => {
    const r = await keyroll(['--help']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^keyroll — make API-key rotation reach running AI gateways/);
    const v = await keyroll(['--version']);
    expect(v.stdout.trim()).toBe(PKG.version);
  });

  it('keyroll diff --targets FILE observes the target and reports it (unreachable: exit 1)', async () => {
    writeFileSync(join(app, 'key'), `${KEY}\n`);
    writeFileSync(
      join(app, 'targets.yaml'),
      [
        'source: {file: {path: key}}',
        'defaults: {requestTimeout: 500ms}',
        'targets:',
        '  - {name: gw-pack, url: "http://127.0.0.1:9", token: {env: PACK_TOKEN}}',
        '',
      ].join('\n'),
    );
    const r = await keyroll(['diff', '--targets', 'targets.yaml', '--retries', '0'], { PACK_TOKEN: TOKEN });
    expect(r.status, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toContain('gw-pack');
    expect(r.stdout + r.stderr).not.toContain(KEY);
    expect(r.stdout + r.stderr).not.toContain(TOKEN);
    const bad = await keyroll(['diff', '--nope']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/Run `keyroll diff --help` for usage\./);
  });
});
