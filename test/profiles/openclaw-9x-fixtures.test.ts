// keyroll against stores the real OpenClaw 2026.9.6 wrote (test/fixtures/profiles/openclaw-2026.9.6,
// made by scripts/make-fixtures-9x.ts): scan reports what is there, migrate turns the plaintext
// profile into the env keyRef OpenClaw itself writes, once, and leaves a database OpenClaw can read.
import { chmodSync, cpSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, expect, it } from 'vitest';
import { filesContaining, listFiles, REPO_ROOT } from '../support/sandbox.ts';
import { profilesCli, stateDirs } from './support.ts';

const FIXTURES = join(REPO_ROOT, 'test', 'fixtures', 'profiles', 'openclaw-2026.9.6');
/** The fake keys scripts/make-fixtures-9x.ts gave OpenClaw. */
const PLAINTEXT_KEY = 'test-key-P-fixture-9x-pppp';
/** The literal key the plaintext onboarding wrote to openclaw.json. */
const CONFIG_KEY = 'test-key-C-fixture-9x-cccc';
const ENV_REF = { source: 'env', provider: 'default', id: 'KILOCODE_API_KEY' };

/** The config-level key row `keyroll profiles` reports for openclaw.json. */
const CONFIG_ROW = (dir: string, before: string, after: string) => ({
  path: join(dir, 'openclaw.json'),
  layout: 'config',
  agentId: null,
  changed: false,
  error: null,
  profiles: [{ profileId: 'models.providers.kilocode.apiKey', before, after }],
});

const stateDir = stateDirs();

/**
 * A private copy of one fixture state dir, with the modes OpenClaw gives its files. Never open
 * a fixture in place: even a read-only open of a WAL database creates `-shm`/`-wal` beside it.
 */
function copyFixture(name: string): string {
  const dir = stateDir('keyroll-9x-fixture-');
  cpSync(join(FIXTURES, name), dir, { recursive: true });
  for (const f of listFiles(dir)) chmodSync(f, 0o600);
  return dir;
}

async function cli(...argv: string[]) {
  const { code, out, err } = await profilesCli(...argv);
  expect(`${out}${err}`).not.toContain(PLAINTEXT_KEY);
  expect(`${out}${err}`).not.toContain(CONFIG_KEY);
  return { code, report: JSON.parse(out) };
}

/** Every row of a table, read directly (not through keyroll). */
function rows(db: string, table: string): Record<string, unknown>[] {
  const conn = new DatabaseSync(db, { readOnly: true });
  try {
    return conn.prepare(`SELECT * FROM "${table}" ORDER BY 1`).all();
  } finally {
    conn.close();
  }
}

function stateRow(dir: string, key: string): Record<string, unknown> | undefined {
  return rows(join(dir, 'state', 'openclaw.sqlite'), 'config_machine_state').find((r) => r.state_key === key);
}

function integrity(db: string): unknown {
  const conn = new DatabaseSync(db, { readOnly: true });
  try {
    return conn.prepare('PRAGMA integrity_check').get()?.integrity_check;
  } finally {
    conn.close();
  }
}

describe('stores written by OpenClaw 2026.9.6', () => {
  it('onboarding in ref mode writes no auth profile: the key is a config-level env ref, and scan reports it as the config store', async () => {
    const dir = copyFixture('onboard-ref');
    const config = JSON.parse(readFileSync(join(dir, 'openclaw.json'), 'utf8'));
    expect(config.models.providers.kilocode.apiKey).toEqual({
      source: 'env',
      provider: 'default',
      id: 'CUSTOM_API_KEY',
    });
    expect(config.auth).toBeUndefined();
    expect(stateRow(dir, 'authProfiles.store')).toBeUndefined();

    const { code, report } = await cli('scan', '--state-dir', dir, '--json');
    expect(code).toBe(0);
    expect(report).toMatchObject({ ok: true, storesFailed: 0, warnings: [] });
    expect(report.stores).toEqual([CONFIG_ROW(dir, 'keyRef-env', 'keyRef-env')]);

    // migrate points the ref at the variable keyroll delivers (CUSTOM_API_KEY is onboarding's).
    const m = await cli('migrate', '--state-dir', dir, '--json');
    expect(m.code).toBe(0);
    expect(m.report.stores).toEqual([{ ...CONFIG_ROW(dir, 'keyRef-env', 'keyRef-env'), changed: true }]);
    const after = JSON.parse(readFileSync(join(dir, 'openclaw.json'), 'utf8'));
    expect(after.models.providers.kilocode.apiKey).toEqual(ENV_REF);
    expect({ ...after, models: undefined }).toEqual({ ...config, models: undefined });
    expect(statSync(join(dir, 'openclaw.json')).mode & 0o777).toBe(0o600);
    const again = await cli('migrate', '--state-dir', dir, '--json');
    expect(again.report.stores[0].changed).toBe(false);
  });

  it('onboarding in plaintext mode puts the literal key in openclaw.json: scan reports it, migrate replaces it with the env ref', async () => {
    const dir = copyFixture('onboard-plaintext');
    const cfgPath = join(dir, 'openclaw.json');
    const config = JSON.parse(readFileSync(cfgPath, 'utf8'));
    // What OpenClaw wrote, read without keyroll: the literal key, no auth profile, no store row.
    expect(config.models.providers.kilocode.apiKey).toBe(CONFIG_KEY);
    expect(config.auth).toBeUndefined();
    expect(stateRow(dir, 'authProfiles.store')).toBeUndefined();
    expect(filesContaining(dir, CONFIG_KEY)).toEqual([cfgPath]);

    const scan = await cli('scan', '--state-dir', dir, '--json');
    expect(scan.code).toBe(0);
    expect(scan.report).toMatchObject({ ok: true, storesFailed: 0, warnings: [] });
    expect(scan.report.stores).toEqual([CONFIG_ROW(dir, 'plaintext', 'plaintext')]);

    const m = await cli('migrate', '--state-dir', dir, '--json');
    expect(m.code).toBe(0);
    expect(m.report).toMatchObject({ ok: true, profilesMigrated: 1, storesFailed: 0 });
    expect(m.report.stores).toEqual([{ ...CONFIG_ROW(dir, 'plaintext', 'keyRef-env'), changed: true }]);
    const after = JSON.parse(readFileSync(cfgPath, 'utf8'));
    expect(after.models.providers.kilocode.apiKey).toEqual(ENV_REF);
    expect({ ...after, models: undefined }).toEqual({ ...config, models: undefined });
    expect(filesContaining(dir, CONFIG_KEY)).toEqual([]);
    const rescan = await cli('scan', '--state-dir', dir, '--json');
    expect(rescan.report.stores).toEqual([CONFIG_ROW(dir, 'keyRef-env', 'keyRef-env')]);
  });

  it('paste-api-key: scan reports the plaintext profile of the gateway-wide state database', async () => {
    const dir = copyFixture('paste-api-key');
    // What OpenClaw wrote, read without keyroll.
    expect(JSON.parse(String(stateRow(dir, 'authProfiles.store')?.value_json))).toEqual({
      version: 1,
      profiles: { 'kilocode:default': { type: 'api_key', provider: 'kilocode', key: PLAINTEXT_KEY } },
    });
    expect(stateRow(dir, 'auth.sharedStore')?.value_json).toBe('{"location":"state-db"}');

    const { code, report } = await cli('scan', '--state-dir', dir, '--json');
    expect(code).toBe(0);
    expect(report.stores).toEqual([
      {
        path: join(dir, 'state', 'openclaw.sqlite'),
        layout: 'sqlite-state',
        agentId: null,
        changed: false,
        error: null,
        profiles: [{ profileId: 'kilocode:default', before: 'plaintext', after: 'plaintext' }],
      },
      CONFIG_ROW(dir, 'keyRef-env', 'keyRef-env'),
    ]);
  });

  it('paste-api-key: migrate writes the env keyRef OpenClaw writes itself, once, and keeps every other row', async () => {
    const dir = copyFixture('paste-api-key');
    const db = join(dir, 'state', 'openclaw.sqlite');
    const before = rows(db, 'config_machine_state');
    const metaBefore = rows(db, 'schema_meta');
    // 2026.9.6 records each database's dev/ino (state/openclaw-quarantine.sqlite): rewrite in place.
    const inode = statSync(db).ino;

    const first = await cli('migrate', '--state-dir', dir, '--json');
    expect(first.code).toBe(0);
    expect(first.report).toMatchObject({ ok: true, profilesMigrated: 1, storesFailed: 0 });
    expect(first.report.stores).toEqual([
      expect.objectContaining({
        layout: 'sqlite-state',
        changed: true,
        error: null,
        profiles: [{ profileId: 'kilocode:default', before: 'plaintext', after: 'keyRef-env' }],
      }),
      { ...CONFIG_ROW(dir, 'keyRef-env', 'keyRef-env'), changed: true },
    ]);

    // The exact document `openclaw secrets apply` wrote for the same profile (other fixture).
    const byOpenclaw = rows(
      join(copyFixture('secrets-apply-env-ref'), 'agents', 'main', 'agent', 'openclaw-agent.sqlite'),
      'auth_profile_store',
    )[0]?.store_json;
    const after = rows(db, 'config_machine_state');
    const store = after.find((r) => r.state_key === 'authProfiles.store');
    expect(store?.value_json).toBe(byOpenclaw);
    expect(JSON.parse(String(store?.value_json)).profiles['kilocode:default'].keyRef).toEqual(ENV_REF);
    expect(Number(store?.updated_at_ms)).toBeGreaterThan(
      Number(before.find((r) => r.state_key === 'authProfiles.store')?.updated_at_ms),
    );
    expect(after.filter((r) => r.state_key !== 'authProfiles.store')).toEqual(
      before.filter((r) => r.state_key !== 'authProfiles.store'),
    );
    expect(rows(db, 'schema_meta')).toEqual(metaBefore);
    expect(integrity(db)).toBe('ok');
    expect(statSync(db).ino).toBe(inode);
    expect(filesContaining(dir, PLAINTEXT_KEY)).toEqual([]);

    const rescan = await cli('scan', '--state-dir', dir, '--json');
    expect(rescan.code).toBe(0);
    expect(rescan.report.stores[0].profiles).toEqual([
      { profileId: 'kilocode:default', before: 'keyRef-env', after: 'keyRef-env' },
    ]);

    const bytes = readFileSync(db);
    const second = await cli('migrate', '--state-dir', dir, '--json');
    expect(second.code).toBe(0);
    expect(second.report).toMatchObject({ ok: true, profilesMigrated: 0 });
    expect(second.report.stores[0].changed).toBe(false);
    expect(readFileSync(db).equals(bytes)).toBe(true);
  });

  it('secrets apply writes its keyRef to the per-agent database and leaves the plaintext in the state database; migrate fixes that one only', async () => {
    const dir = copyFixture('secrets-apply-env-ref');
    const agentDb = join(dir, 'agents', 'main', 'agent', 'openclaw-agent.sqlite');

    const scan = await cli('scan', '--state-dir', dir, '--json');
    expect(scan.code).toBe(0);
    expect(
      scan.report.stores.map((s: { layout: string; agentId: string | null; profiles: unknown }) => [
        s.layout,
        s.agentId,
        s.profiles,
      ]),
    ).toEqual([
      [
        'sqlite-agent',
        'main',
        [{ profileId: 'kilocode:default', before: 'keyRef-env', after: 'keyRef-env' }],
      ],
      ['sqlite-state', null, [{ profileId: 'kilocode:default', before: 'plaintext', after: 'plaintext' }]],
      [
        'config',
        null,
        [{ profileId: 'models.providers.kilocode.apiKey', before: 'keyRef-env', after: 'keyRef-env' }],
      ],
    ]);

    const agentBytes = readFileSync(agentDb);
    const migrate = await cli('migrate', '--state-dir', dir, '--json');
    expect(migrate.code).toBe(0);
    expect(migrate.report).toMatchObject({ ok: true, profilesMigrated: 1 });
    expect(
      migrate.report.stores.map((s: { layout: string; changed: boolean }) => [s.layout, s.changed]),
    ).toEqual([
      ['sqlite-agent', false],
      ['sqlite-state', true],
      ['config', true],
    ]);
    expect(readFileSync(agentDb).equals(agentBytes)).toBe(true);
    expect(JSON.parse(String(stateRow(dir, 'authProfiles.store')?.value_json))).toEqual(
      JSON.parse(String(rows(agentDb, 'auth_profile_store')[0]?.store_json)),
    );
    expect(filesContaining(dir, PLAINTEXT_KEY)).toEqual([]);
    expect(integrity(join(dir, 'state', 'openclaw.sqlite'))).toBe('ok');
  });
});
