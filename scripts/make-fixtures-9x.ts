// Regenerates test/fixtures/profiles/openclaw-2026.9.6/: auth-profile stores written by the real
// OpenClaw 2026.9.6 CLI in a sandbox, copied whole but for one large generated row.
//
//   PATH=$PWD/node_modules/.bin:$PATH node scripts/make-fixtures-9x.ts [chain]   (about 2 minutes)
//
// Two chains, each in its own sandbox: `ref` (onboard-ref → paste-api-key → secrets-apply-env-ref)
// and `plaintext` (onboard-plaintext); with no argument, both.
//
// It installs openclaw@2026.9.6 (npm run gateway:install -- 2026.9.6), then in one sandbox
// (test/support/sandbox.ts: own HOME, OPENCLAW_STATE_DIR, TMPDIR, OPENCLAW_NO_RESPAWN=1) runs the
// steps below and copies the state dir after each one. Keys and the gateway token are fake. The
// fixture README says what each step produced; keep it in step with STEPS.
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { customOnboardArgs } from '../src/controller/openclaw-cli.ts';
import { openclawEntry, withKeyArgs } from '../test/support/openclaw.ts';
import { createSandbox, node24, REPO_ROOT, type Sandbox } from '../test/support/sandbox.ts';

export const VERSION = '2026.9.6';
export const FIXTURE_ROOT = join(REPO_ROOT, 'test', 'fixtures', 'profiles', `openclaw-${VERSION}`);

/** Fake credentials; each name says what it is, so a leak in any output is obvious. */
export const FAKE = {
  /** Onboarding's custom-provider key; onboarding stores only an env ref to CUSTOM_API_KEY. */
  customKey: 'test-key-R-fixture-9x-rrrr',
  /** The plaintext key `models auth paste-api-key` writes into the profile store. */
  plaintextKey: 'test-key-P-fixture-9x-pppp',
  /** KILOCODE_API_KEY for `secrets apply`, which resolves the new ref before writing it. */
  envKey: 'test-key-A-fixture-9x-aaaa',
  gatewayToken: 'test-token-fixture-9x-gwtk',
  /** The literal key of the plaintext onboarding (`--custom-api-key`): lands in openclaw.json. */
  configKey: 'test-key-C-fixture-9x-cccc',
};

/** Where the sandbox's own paths are replaced in the copied openclaw.json. */
const SANDBOX_PLACEHOLDER = '/sandbox';

interface Step {
  /** Fixture folder written after this step. */
  name: string;
  args: string[];
  env: Record<string, string>;
  stdin?: string;
}

const BASE_ENV = { OPENCLAW_GATEWAY_TOKEN: FAKE.gatewayToken, CUSTOM_API_KEY: FAKE.customKey };

function secretsPlan(): string {
  // reference/openclaw.md §10: the plan `openclaw secrets apply` takes to switch a profile to a ref.
  return JSON.stringify({
    version: 1,
    protocolVersion: 1,
    targets: [
      {
        type: 'auth-profiles.api_key.key',
        path: 'profiles.kilocode:default.key',
        pathSegments: ['profiles', 'kilocode:default', 'key'],
        agentId: 'main',
        authProfileProvider: 'kilocode',
        ref: { source: 'env', provider: 'default', id: 'KILOCODE_API_KEY' },
      },
    ],
  });
}

/**
 * The controller's custom-provider onboarding (src/controller/openclaw-cli.ts) with the fixture's
 * port and an unroutable base URL; `keyArgs` replace its `--secret-input-mode ref` (ref, or the
 * literal key).
 */
function onboardArgs(keyArgs: string[]): string[] {
  return withKeyArgs(customOnboardArgs(18789, 'kilocode', 'http://127.0.0.1:9/api/gateway/'), keyArgs);
}

type Chain = 'ref' | 'plaintext';

function steps(sb: Sandbox, chain: Chain): Step[] {
  if (chain === 'plaintext') {
    return [
      {
        // The plaintext custom-provider onboarding: the literal key goes to openclaw.json
        // models.providers.kilocode.apiKey (no auth profile); CUSTOM_API_KEY is not in the env.
        name: 'onboard-plaintext',
        args: onboardArgs(['--custom-api-key', FAKE.configKey]),
        env: { OPENCLAW_GATEWAY_TOKEN: FAKE.gatewayToken },
      },
    ];
  }
  return [
    {
      // The kilocode provider is an external plugin from 2026.6.9 on and cannot be installed
      // offline (reference §1), so "kilocode" is declared as a custom OpenAI-compatible provider.
      name: 'onboard-ref',
      args: onboardArgs(['--secret-input-mode', 'ref']),
      env: BASE_ENV,
    },
    {
      // The legacy plaintext profile keyroll migrates: the key is read from stdin.
      name: 'paste-api-key',
      args: ['models', 'auth', 'paste-api-key', '--provider', 'kilocode', '--profile-id', 'kilocode:default'],
      env: BASE_ENV,
      stdin: `${FAKE.plaintextKey}\n`,
    },
    {
      // OpenClaw's own switch to an env keyRef (the shape keyroll writes, from OpenClaw itself).
      name: 'secrets-apply-env-ref',
      args: ['secrets', 'apply', '--from', join(sb.dir, 'plan.json'), '--json'],
      env: { ...BASE_ENV, KILOCODE_API_KEY: FAKE.envKey },
    },
  ];
}

function redact(text: string): string {
  let out = text;
  for (const v of Object.values(FAKE)) out = out.split(v).join('[REDACTED]');
  return out;
}

function run(sb: Sandbox, step: Step): void {
  const started = Date.now();
  process.stderr.write(`make-fixtures-9x: openclaw ${step.args.slice(0, 3).join(' ')} …\n`);
  const r = spawnSync(node24(), [openclawEntry(VERSION), ...step.args], {
    cwd: sb.dir,
    env: sb.env(step.env),
    input: step.stdin ?? '',
    encoding: 'utf8',
    timeout: 10 * 60_000,
    killSignal: 'SIGKILL',
    maxBuffer: 64 * 1024 * 1024,
  });
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  if (r.status !== 0) {
    throw new Error(
      `openclaw ${step.args[0]} exited ${r.status ?? r.signal} after ${secs} s:\n${redact(`${r.stdout}\n${r.stderr}`).slice(-4000)}`,
    );
  }
  process.stderr.write(`make-fixtures-9x:   exit 0 in ${secs} s\n`);
}

/**
 * Rows that are large and irrelevant: the generated plugin index (about 85 KB of JSON full of
 * sandbox paths; OpenClaw rebuilds it). Every table stays: a 2026.9.6 gateway refuses to start on
 * a state database whose schema is incomplete ("SQLite schema is incomplete or noncanonical",
 * exit 78), and the empty tables cost about 30 KB compressed.
 */
const DROP_ROWS: Record<string, { table: string; column: string; value: string }[]> = {
  'openclaw.sqlite': [
    { table: 'config_machine_state', column: 'state_key', value: 'plugins.installedIndex' },
  ],
};

/**
 * Copies a database with its WAL folded in (`VACUUM INTO` from a private copy, so nothing is
 * replayed into the sandbox's files), minus DROP_ROWS, back in WAL mode as OpenClaw keeps it.
 */
function copyDatabase(src: string, dst: string): void {
  const name = src.split('/').pop() ?? '';
  const work = mkdtempSync(join(tmpdir(), 'keyroll-fixture-db-'));
  try {
    for (const suffix of ['', '-wal', '-shm']) {
      if (existsSync(src + suffix)) copyFileSync(src + suffix, join(work, name + suffix));
    }
    rmSync(dst, { force: true });
    mkdirSync(dirname(dst), { recursive: true });
    const db = new DatabaseSync(join(work, name));
    try {
      for (const d of DROP_ROWS[name] ?? []) {
        db.prepare(`DELETE FROM "${d.table}" WHERE "${d.column}" = ?`).run(d.value);
      }
      db.prepare('VACUUM INTO ?').run(dst);
    } finally {
      db.close();
    }
    const out = new DatabaseSync(dst);
    try {
      out.exec('PRAGMA journal_mode = WAL');
    } finally {
      out.close();
    }
    chmodSync(dst, 0o600);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function replaceStrings(value: unknown, from: string, to: string): unknown {
  if (typeof value === 'string') return value.split(from).join(to);
  if (Array.isArray(value)) return value.map((v) => replaceStrings(v, from, to));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, replaceStrings(v, from, to)]));
  }
  return value;
}

/** Copies what keyroll reads from the sandbox's state dir into `<FIXTURE_ROOT>/<name>/`. */
function snapshot(sb: Sandbox, name: string): void {
  const out = join(FIXTURE_ROOT, name);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const config = JSON.parse(readFileSync(join(sb.stateDir, 'openclaw.json'), 'utf8'));
  writeFileSync(
    join(out, 'openclaw.json'),
    `${JSON.stringify(replaceStrings(config, sb.dir, SANDBOX_PLACEHOLDER), null, 2)}\n`,
    { mode: 0o600 },
  );
  const dbs = [join('state', 'openclaw.sqlite')];
  const agents = join(sb.stateDir, 'agents');
  if (existsSync(agents)) {
    for (const id of readdirSync(agents).sort())
      dbs.push(join('agents', id, 'agent', 'openclaw-agent.sqlite'));
  }
  for (const db of dbs) {
    if (existsSync(join(sb.stateDir, db))) copyDatabase(join(sb.stateDir, db), join(out, db));
  }
  // OpenClaw's own config backups (kept: they hold what the config held, a literal key included).
  for (const f of readdirSync(sb.stateDir)
    .filter((n) => /^openclaw\.json\.bak/.test(n))
    .sort()) {
    const text = readFileSync(join(sb.stateDir, f), 'utf8').split(sb.dir).join(SANDBOX_PLACEHOLDER);
    writeFileSync(join(out, f), text, { mode: 0o600 });
  }
  // The project's formatter owns every committed JSON file; format now so a rerun is lint-clean.
  const fmt = spawnSync(join(REPO_ROOT, 'node_modules', '.bin', 'biome'), ['format', '--write', out], {
    stdio: 'ignore',
  });
  if (fmt.status !== 0) throw new Error(`biome format ${out} failed`);
  process.stderr.write(`make-fixtures-9x:   wrote ${relative(REPO_ROOT, out)}/\n`);
}

function main(): void {
  const install = spawnSync(node24(), [join(REPO_ROOT, 'scripts', 'gateway-install.mjs'), VERSION], {
    stdio: 'inherit',
  });
  if (install.status !== 0) throw new Error(`npm run gateway:install -- ${VERSION} failed`);
  const arg = process.argv[2];
  const chains: Chain[] = arg === 'ref' || arg === 'plaintext' ? [arg] : ['ref', 'plaintext'];
  for (const chain of chains) {
    const sb = createSandbox('keyroll-fixtures-9x-');
    try {
      writeFileSync(join(sb.dir, 'plan.json'), secretsPlan(), { mode: 0o600 });
      for (const step of steps(sb, chain)) {
        run(sb, step);
        snapshot(sb, step.name);
      }
    } finally {
      sb.cleanup();
    }
  }
}

if (import.meta.main) main();
