// --purge-plaintext-backups: credential backups holding a plaintext key of the managed provider are
// zeroed, fsynced and unlinked once the migrated stores verify; every other backup is kept, with
// the reason; scans and /_kilo/state count the ones that remain.
import {
  closeSync,
  existsSync,
  linkSync,
  openSync,
  readSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import { countBackups, migrateProfiles, scanProfiles } from '../../src/profiles/index.ts';
import {
  agentDir,
  aliasStore,
  ENV_REF,
  KEY_A,
  KEY_B,
  KEY_OTHER,
  TOKEN_OAUTH,
  versionedStore,
  writeAgentDb,
  writeJsonStore,
} from '../fixtures/profiles/generate.ts';
import { captureIo as capture, stateDirs } from './support.ts';

const ENV = { to: 'env', envVar: 'KILOCODE_API_KEY' } as const;
const stateDir = stateDirs();

const ONLY_KILOCODE = {
  version: 1,
  profiles: { 'kilocode:default': { type: 'api_key', provider: 'kilocode', key: KEY_B } },
};

/** A migrated-to-be store and one backup of each kind; returns their paths. */
function setup() {
  const dir = stateDir();
  writeJsonStore(dir, 'main', versionedStore(KEY_A));
  const agent = agentDir(dir, 'main');
  const b = (name: string, body: unknown) => {
    const path = join(agent, name);
    writeFileSync(path, JSON.stringify(body), { mode: 0o600 });
    return path;
  };
  const paths = {
    // doctor's copy before the SQLite import: every profile it holds is in the live store.
    plain: b('auth-profiles.json.sqlite-import.1795478361679.bak', versionedStore(KEY_B)),
    alias: b('auth-profiles.json.api-key-alias.17.bak', aliasStore(KEY_B)),
    // holds a profile the live store does not have: may be the only copy of that credential.
    foreign: b('auth-profiles.json.legacy-flat.18.bak', {
      version: 1,
      profiles: {
        ...ONLY_KILOCODE.profiles,
        'mistral:default': { type: 'api_key', provider: 'mistral', key: KEY_OTHER },
      },
    }),
    // no plaintext of the managed provider: nothing to purge.
    refOnly: b('auth-profiles.json.oauth-ref.19.bak', {
      version: 1,
      profiles: {
        'kilocode:default': { type: 'api_key', provider: 'kilocode', keyRef: ENV_REF },
        'anthropic:me': { type: 'oauth', provider: 'anthropic', access: TOKEN_OAUTH },
      },
    }),
    linked: b('auth-profiles.json.bak', ONLY_KILOCODE),
    notAStore: b('auth-profiles.json.aws-sdk-profile.20.bak', ['not', 'a', 'store']),
  };
  // A second link to the last backup: zeroing it would zero the other name too.
  linkSync(paths.linked, join(dir, 'elsewhere-link'));
  // A symlinked backup name is never followed.
  symlinkSync(join(dir, 'elsewhere-link'), join(agent, 'auth-profiles.json.legacy-flat.21.bak'));
  return { dir, ...paths };
}

describe('plaintext credential backups', () => {
  it('are counted by scan; a migration without the flag keeps them all', async () => {
    const s = setup();
    const scan = await scanProfiles({ stateDir: s.dir, provider: 'kilocode' });
    expect(scan.backupsHardened).toBe(6);
    expect(scan.backupsPlaintext).toBe(4); // plain, alias, foreign, linked
    const r = await migrateProfiles({ stateDir: s.dir, provider: 'kilocode', target: ENV });
    expect(r.backupsPurged).toBeUndefined();
    expect(r.backupsPlaintext).toBe(4);
    for (const p of [s.plain, s.alias, s.foreign, s.refOnly, s.linked, s.notAStore])
      expect(existsSync(p)).toBe(true);
  });

  it('are zeroed, fsynced and removed once the stores verify; the others are kept with the reason', async () => {
    const s = setup();
    // Hold the inode open: after the purge its bytes must be zeros, not the key.
    const fd = openSync(s.plain, 'r');
    try {
      const r = await migrateProfiles({
        stateDir: s.dir,
        provider: 'kilocode',
        target: ENV,
        purgePlaintextBackups: true,
      });
      expect(r.profilesMigrated).toBe(1);
      expect(r.backupsPurged).toBe(2);
      expect(existsSync(s.plain)).toBe(false);
      expect(existsSync(s.alias)).toBe(false);
      const buf = Buffer.alloc(4096);
      const n = readSync(fd, buf, 0, buf.length, 0);
      expect(n).toBeGreaterThan(100);
      expect(buf.subarray(0, n).every((b) => b === 0)).toBe(true);
      for (const p of [s.foreign, s.refOnly, s.linked, s.notAStore]) expect(existsSync(p)).toBe(true);
      expect(r.backupsPlaintext).toBe(2); // foreign and linked remain
      expect(r.warnings.join('\n')).toContain(`${s.foreign}: kept, it holds 1 profile(s) no store has`);
      expect(r.warnings.join('\n')).toContain(`${s.linked}: kept, it has more than one link`);
      expect(JSON.stringify(r)).not.toContain(KEY_B);
      expect(await countBackups(s.dir, 'kilocode')).toEqual({ total: 4, plaintext: 2 });
    } finally {
      closeSync(fd);
    }
  });

  it('are not purged while a store is not verified (a store failed, or a SQLite store kept plaintext)', async () => {
    const s = setup();
    writeJsonStore(s.dir, 'broken', null, '{"version":1,"profiles":');
    const failed = await migrateProfiles({
      stateDir: s.dir,
      provider: 'kilocode',
      target: ENV,
      purgePlaintextBackups: true,
    });
    expect(failed.storesFailed).toBe(1);
    expect(failed.backupsPurged).toBe(0);
    expect(failed.warnings.join('\n')).toMatch(
      /plaintext backups not purged: the stores are not all verified/,
    );
    expect(existsSync(s.plain)).toBe(true);

    rmSync(join(s.dir, 'agents', 'broken'), { recursive: true });
    writeAgentDb(s.dir, 'main', versionedStore(KEY_A));
    // The controller migrates only JSON stores while the gateway runs: SQLite keeps its plaintext.
    const partial = await migrateProfiles({
      stateDir: s.dir,
      provider: 'kilocode',
      target: ENV,
      layouts: ['json'],
      purgePlaintextBackups: true,
    });
    expect(partial.backupsPurged).toBe(0);
    expect(existsSync(s.plain)).toBe(true);

    const all = await migrateProfiles({
      stateDir: s.dir,
      provider: 'kilocode',
      target: ENV,
      purgePlaintextBackups: true,
    });
    expect(all.backupsPurged).toBe(2);
    expect(existsSync(s.plain)).toBe(false);
  });

  it('a purge killed after claiming a backup is finished by the next migration, flag or not', async () => {
    const s = setup();
    const claimed = join(
      s.dir,
      'agents',
      'main',
      'agent',
      '.auth-profiles.json.legacy-flat.9.bak.keyroll-purge',
    );
    writeFileSync(claimed, JSON.stringify(versionedStore(KEY_B)).slice(0, 40), { mode: 0o600 });
    const dry = await migrateProfiles({ stateDir: s.dir, provider: 'kilocode', target: ENV, dryRun: true });
    expect(dry.warnings).toEqual([]);
    expect(existsSync(claimed)).toBe(true);
    await migrateProfiles({ stateDir: s.dir, provider: 'kilocode', target: ENV });
    expect(existsSync(claimed)).toBe(false);
    expect(existsSync(s.plain)).toBe(true); // without the flag nothing else is purged
  });

  it('keyroll profiles migrate --purge-plaintext-backups: JSON and text reports, no key anywhere', async () => {
    const s = setup();
    const dry = capture();
    expect(
      await main(
        ['profiles', 'migrate', '--state-dir', s.dir, '--purge-plaintext-backups', '--dry-run'],
        dry,
      ),
    ).toBe(0);
    expect(existsSync(s.plain)).toBe(true);
    const json = capture();
    expect(
      await main(['profiles', 'migrate', '--state-dir', s.dir, '--purge-plaintext-backups', '--json'], json),
    ).toBe(0);
    expect(JSON.parse(json.out)).toMatchObject({ ok: true, backupsPurged: 2, backupsPlaintext: 2 });
    const text = capture();
    expect(await main(['profiles', 'scan', '--state-dir', s.dir], text)).toBe(0);
    expect(text.out).toContain(
      '1 store(s) scanned, 0 unreadable, 4 credential backup(s), 2 backup(s) still hold a plaintext key',
    );
    const refused = capture();
    expect(await main(['profiles', 'scan', '--state-dir', s.dir, '--purge-plaintext-backups'], refused)).toBe(
      2,
    );
    expect(refused.err).toMatch(/--purge-plaintext-backups applies to migrate only/);
    for (const out of [dry.out, dry.err, json.out, json.err, text.out, text.err]) {
      for (const key of [KEY_A, KEY_B, KEY_OTHER, TOKEN_OAUTH]) expect(out).not.toContain(key);
    }
  });
});
