import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.ts';
import { migrateProfiles, scanProfiles } from '../../src/profiles/index.ts';
import {
  agentDir,
  aliasStore,
  flatStore,
  KEY_A,
  KEY_B,
  KEY_OTHER,
  TOKEN_OAUTH,
  versionedStore,
  writeAgentDb,
  writeJsonStore,
  writeOpenclawJson,
  writeStateDb,
} from '../fixtures/profiles/generate.ts';
import { profilesCli, stateDirs } from './support.ts';

const stateDir = stateDirs();
const cli = profilesCli;

/** A state dir with every layout, good and bad stores, and backups: all of it holding keys. */
function richStateDir(): string {
  const dir = stateDir();
  writeOpenclawJson(dir);
  writeJsonStore(dir, 'main', versionedStore(KEY_A));
  writeAgentDb(dir, 'main', versionedStore(KEY_A));
  writeJsonStore(dir, 'flat', flatStore(KEY_B));
  writeJsonStore(dir, 'alias', aliasStore(KEY_B));
  writeJsonStore(dir, 'broken', null, `{"version":1,"profiles":{"kilocode:default":{"key":"${KEY_A}"`);
  writeJsonStore(dir, 'bom', null, `\ufeff${JSON.stringify(aliasStore(KEY_B))}`);
  writeStateDb(dir, versionedStore(KEY_B));
  writeFileSync(
    join(agentDir(dir, 'main'), 'auth-profiles.json.sqlite-import.1.bak'),
    JSON.stringify(aliasStore(KEY_A)),
  );
  return dir;
}

const SECRETS = [KEY_A, KEY_B, KEY_OTHER, TOKEN_OAUTH];
function expectNoKeys(text: string): void {
  for (const s of SECRETS) expect(text).not.toContain(s);
  expect(text).not.toMatch(/test-key-[A-Z]/);
}

describe('keyroll profiles', () => {
  it('prints help and exits 0; bad usage exits 2', async () => {
    expect((await cli('--help')).code).toBe(0);
    expect((await cli('scan', '--help')).out).toMatch(/keyroll profiles scan/);
    expect((await cli('migrate', '--help')).code).toBe(0);
    expect((await cli('scan')).code).toBe(2);
    const noKeyFile = await cli('migrate', '--state-dir', '/tmp/x', '--to', 'file');
    expect(noKeyFile).toMatchObject({ code: 2 });
    expect(noKeyFile.err).toMatch(/--to file requires --key-file/);
    expect(
      (await cli('migrate', '--state-dir', '/tmp/x', '--to', 'file', '--key-file', 'rel/key')).err,
    ).toMatch(/absolute/);
    expect((await cli('migrate', '--state-dir', '/tmp/x', '--to', 'nowhere')).code).toBe(2);
    expect((await cli('migrate', '--state-dir', '/tmp/x', '--env-var', 'lower')).code).toBe(2);
    expect((await cli('scan', '--state-dir', '/tmp/x', '--dry-run')).code).toBe(2);
    expect((await cli('frobnicate')).code).toBe(2);
    expect((await cli('scan', '--state-dir', '/tmp/x', '--bogus')).code).toBe(2);
  });

  it('exits 0 when nothing needs doing, also for an empty state dir', async () => {
    const dir = stateDir();
    expect(await cli('scan', '--state-dir', dir)).toMatchObject({ code: 0 });
    const r = await cli('migrate', '--state-dir', dir, '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ ok: true, stores: [], profilesMigrated: 0 });
  });

  it('--json has one entry per store with path, layout, forms before/after and errors; exit 1 when a store failed', async () => {
    const dir = richStateDir();
    const scan = await cli('scan', '--state-dir', dir, '--json');
    expect(scan.code).toBe(1);
    const report = JSON.parse(scan.out);
    expect(report.stores.map((s: { layout: string }) => s.layout)).toEqual([
      'json',
      'json',
      'json',
      'json',
      'json',
      'sqlite-agent',
      'sqlite-state',
    ]);
    const byPath = (p: string) => report.stores.find((s: { path: string }) => s.path.endsWith(p));
    expect(byPath('agents/main/agent/auth-profiles.json')).toEqual({
      path: join(dir, 'agents/main/agent/auth-profiles.json'),
      layout: 'json',
      agentId: 'main',
      changed: false,
      error: null,
      profiles: [{ profileId: 'kilocode:default', before: 'plaintext', after: 'plaintext' }],
    });
    expect(byPath('agents/broken/agent/auth-profiles.json').error).toMatch(/not valid JSON/);

    const migrate = await cli('migrate', '--state-dir', dir, '--json');
    expect(migrate.code).toBe(1);
    const m = JSON.parse(migrate.out);
    expect(m).toMatchObject({
      command: 'migrate',
      ok: false,
      profilesMigrated: 5,
      storesFailed: 2,
      backupsHardened: 1,
    });
    expect(byPathIn(m, 'state/openclaw.sqlite').profiles).toEqual([
      { profileId: 'kilocode:default', before: 'plaintext', after: 'keyRef-env' },
    ]);
  });

  it('text output is a table per store', async () => {
    const dir = richStateDir();
    const r = await cli('migrate', '--state-dir', dir, '--dry-run');
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/auth-profiles\.json {2}\[json, agent main\] {2}changed/);
    expect(r.out).toMatch(/kilocode:default {2}plaintext {2}→ {2}keyRef-env/);
    expect(r.out).toMatch(/error: store starts with a UTF-8 byte-order mark/);
    expect(r.out).toMatch(/\[dry run\] 5 profile\(s\) would migrate, 2 store\(s\) failed/);
  });

  it('no key material appears in any output of scan or migrate, or in the logs', async () => {
    const dir = richStateDir();
    let all = '';
    for (const argv of [
      ['scan', '--state-dir', dir],
      ['scan', '--state-dir', dir, '--json'],
      ['migrate', '--state-dir', dir, '--dry-run'],
      ['migrate', '--state-dir', dir, '--to', 'file', '--key-file', join(dir, 'k', 'key'), '--json'],
      ['migrate', '--state-dir', dir, '--json'],
      ['migrate', '--state-dir', dir],
      ['scan', '--state-dir', dir, '--json'],
    ]) {
      const r = await cli(...argv);
      all += r.out + r.err;
    }
    expect(all).toMatch(/keyRef-file/); // the runs did happen
    expectNoKeys(all);

    // The library's own log lines and results, at debug level.
    const dir2 = richStateDir();
    let logs = '';
    const sink = new Writable({
      write(chunk, _enc, cb) {
        logs += String(chunk);
        cb();
      },
    });
    const log = createLogger({ level: 'debug', destination: sink });
    const results = [
      await scanProfiles({ stateDir: dir2, provider: 'kilocode' }),
      await migrateProfiles({
        stateDir: dir2,
        provider: 'kilocode',
        target: { to: 'file', keyFile: join(dir2, 'k'), providerAlias: 'kilofile' },
        log,
      }),
      await migrateProfiles({
        stateDir: dir2,
        provider: 'kilocode',
        target: { to: 'env', envVar: 'KILOCODE_API_KEY' },
        log,
      }),
    ];
    expect(logs).toMatch(/Migrated auth-profile store/);
    expectNoKeys(logs + JSON.stringify(results));
  });

  it('runs end to end through bin/keyroll.mjs', async () => {
    const dir = richStateDir();
    const node = join(process.cwd(), 'node_modules/.bin/node');
    const run = promisify(execFile);
    const r = await run(node, ['bin/keyroll.mjs', 'profiles', 'scan', '--state-dir', dir, '--json'], {
      timeout: 20_000,
    }).catch((e: { code: number; stdout: string; stderr: string }) => e);
    expect(r).toMatchObject({ code: 1 });
    expect(JSON.parse(r.stdout).stores).toHaveLength(7);
    expectNoKeys(r.stdout + r.stderr);
  });
});

function byPathIn(report: { stores: { path: string; profiles: unknown[] }[] }, suffix: string) {
  const s = report.stores.find((x) => x.path.endsWith(suffix));
  if (!s) throw new Error(`no store ${suffix}`);
  return s;
}
