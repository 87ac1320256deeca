// Regenerates test/fixtures/profiles/openclaw-2026.9.6/: auth-profile stores written by the real
// OpenClaw 2026.9.6 CLI in a sandbox, trimmed to what keyroll reads.
//
//   PATH=$PWD/node_modules/.bin:$PATH node scripts/make-fixtures-9x.ts   (about 2 minutes)
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
import { openclawEntry } from '../test/support/openclaw.ts';
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

function steps(sb: Sandbox): Step[] {
  return [
    {
      // The kilocode provider is an external plugin from 2026.6.9 on and cannot be installed
      // offline (reference §1), so "kilocode" is declared as a custom OpenAI-compatible provider.
      name: 'onboard-ref',
      args: [
        'onboard',
        '--non-interactive',
        '--accept-risk',
        '--mode',
        'local',
        '--auth-choice',
        'custom-api-key',
        '--custom-provider-id',
        'kilocode',
        '--custom-base-url',
        'http://127.0.0.1:9/api/gateway/',
        '--custom-model-id',
        'kilo/auto',
        '--secret-input-mode',
        'ref',
        '--gateway-port',
        '18789',
        '--gateway-bind',
        'loopback',
        '--gateway-auth',
        'token',
        '--gateway-token-ref-env',
        'OPENCLAW_GATEWAY_TOKEN',
        '--skip-daemon',
        '--skip-channels',
        '--skip-skills',
        '--skip-search',
        '--skip-health',
        '--skip-ui',
        '--skip-hooks',
        '--skip-bootstrap',
        '--json',
      ],
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

/** Tables keyroll reads, plus `schema_meta` (which tells what wrote the database). */
const KEEP_TABLES: Record<string, string[]> = {
  'openclaw.sqlite': ['schema_meta', 'config_machine_state'],
  'openclaw-agent.sqlite': ['schema_meta', 'auth_profile_store', 'auth_profile_state'],
};
/** Rows that are large and irrelevant: the generated plugin index (≈85 KB, sandbox paths). */
const DROP_ROWS: Record<string, { table: string; column: string; value: string }[]> = {
  'openclaw.sqlite': [
    { table: 'config_machine_state', column: 'state_key', value: 'plugins.installedIndex' },
  ],
};

/**
 * Copies the kept tables of a database (its WAL included) into a fresh WAL-mode database at
 * `dst`: the same CREATE statements, rows and user_version, without the 100-odd unrelated tables.
 */
function trimDatabase(src: string, dst: string): void {
  const name = src.split('/').pop() ?? '';
  const keep = KEEP_TABLES[name] ?? [];
  const work = mkdtempSync(join(tmpdir(), 'keyroll-fixture-db-'));
  try {
    // Read a copy, so the WAL is replayed there and never into the sandbox's files.
    for (const suffix of ['', '-wal', '-shm']) {
      if (existsSync(src + suffix)) copyFileSync(src + suffix, join(work, name + suffix));
    }
    const from = new DatabaseSync(join(work, name), { readOnly: true });
    rmSync(dst, { force: true });
    mkdirSync(dirname(dst), { recursive: true });
    const to = new DatabaseSync(dst);
    try {
      const userVersion = Number(from.prepare('PRAGMA user_version').get()?.user_version ?? 0);
      to.exec('PRAGMA journal_mode = WAL');
      to.exec(`PRAGMA user_version = ${userVersion}`);
      for (const table of keep) {
        const def = from
          .prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?")
          .get(table);
        if (typeof def?.sql !== 'string') continue;
        to.exec(def.sql);
        const drops = (DROP_ROWS[name] ?? []).filter((d) => d.table === table);
        for (const row of from.prepare(`SELECT * FROM "${table}"`).all()) {
          if (drops.some((d) => row[d.column] === d.value)) continue;
          const cols = Object.keys(row);
          to.prepare(
            `INSERT INTO "${table}" (${cols.map((c) => `"${c}"`).join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`,
          ).run(...cols.map((c) => row[c] ?? null));
        }
        const indexes = from
          .prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL")
          .all(table);
        for (const ix of indexes) if (typeof ix.sql === 'string') to.exec(ix.sql);
      }
      to.exec('PRAGMA wal_checkpoint(TRUNCATE)');
    } finally {
      to.close();
      from.close();
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
    if (existsSync(join(sb.stateDir, db))) trimDatabase(join(sb.stateDir, db), join(out, db));
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
  const sb = createSandbox('keyroll-fixtures-9x-');
  try {
    writeFileSync(join(sb.dir, 'plan.json'), secretsPlan(), { mode: 0o600 });
    for (const step of steps(sb)) {
      run(sb, step);
      snapshot(sb, step.name);
    }
  } finally {
    sb.cleanup();
  }
}

if (import.meta.main) main();
