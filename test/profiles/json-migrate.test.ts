import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hardenBackups, migrateProfiles, profileForms, scanProfiles } from '../../src/profiles/index.ts';
import {
  agentDir,
  aliasStore,
  ENV_REF,
  flatStore,
  KEY_A,
  KEY_OTHER,
  versionedStore,
  writeJsonStore,
  writeOpenclawJson,
} from '../fixtures/profiles/generate.ts';
import { stateDirs } from './support.ts';

const ENV = { to: 'env', envVar: 'KILOCODE_API_KEY' } as const;
const stateDir = stateDirs();

function snapshot(path: string) {
  const st = lstatSync(path);
  return {
    sha256: createHash('sha256').update(readFileSync(path)).digest('hex'),
    mtimeMs: st.mtimeMs,
    ino: st.ino,
    mode: st.mode & 0o777,
  };
}

describe('legacy JSON stores', () => {
  it.each([
    ['versioned', versionedStore()],
    ['flat', flatStore()],
    ['api_key alias', aliasStore()],
  ])(
    'migrates the %s shape, keeps every other field, and a second run changes no byte',
    async (_n, store) => {
      const dir = stateDir();
      const path = writeJsonStore(dir, 'main', store);
      const first = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
      expect(first.storesFailed).toBe(0);
      expect(first.profilesMigrated).toBe(1);
      expect(first.stores[0]).toMatchObject({
        path,
        layout: 'json',
        agentId: 'main',
        changed: true,
        error: null,
      });

      const text = readFileSync(path, 'utf8');
      expect(text).not.toContain(KEY_A);
      const after = JSON.parse(text);
      const expected = structuredClone(store) as Record<string, Record<string, Record<string, unknown>>>;
      const cred = 'profiles' in expected ? expected.profiles!['kilocode:default']! : expected.kilocode!;
      delete cred.key;
      delete cred.api_key;
      cred.keyRef = ENV_REF;
      expect(after).toEqual(expected);
      if ('openai' in store || 'profiles' in store)
        expect(text.includes(KEY_OTHER)).toBe(JSON.stringify(store).includes(KEY_OTHER));
      expect(lstatSync(path).mode & 0o777).toBe(0o600);

      const before = snapshot(path);
      const second = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
      expect(second.profilesMigrated).toBe(0);
      expect(second.stores[0]!.changed).toBe(false);
      expect(snapshot(path)).toEqual(before);
      expect(profileForms(second)).toEqual([
        { agentId: 'main', store: 'json', profileId: 'kilocode:default', form: 'keyRef-env' },
      ]);
    },
  );

  it('dry run reports the change and writes nothing', async () => {
    const dir = stateDir();
    const path = writeJsonStore(dir, 'main', versionedStore());
    const before = snapshot(path);
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV, dryRun: true });
    expect(r.profilesMigrated).toBe(1);
    expect(r.stores[0]!.profiles[0]).toMatchObject({ form: 'plaintext', formAfter: 'keyRef-env' });
    expect(snapshot(path)).toEqual(before);
  });

  it('migrates several agents and skips the layouts it is told to skip', async () => {
    const dir = stateDir();
    const a = writeJsonStore(dir, 'main', versionedStore());
    const b = writeJsonStore(dir, 'work', aliasStore());
    const skipped = await migrateProfiles({
      stateDir: dir,
      provider: 'kilocode',
      target: ENV,
      layouts: ['sqlite-agent'],
    });
    expect(skipped.profilesMigrated).toBe(0);
    expect(readFileSync(a, 'utf8')).toContain(KEY_A);
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV, layouts: ['json'] });
    expect(r.profilesMigrated).toBe(2);
    expect(readFileSync(a, 'utf8') + readFileSync(b, 'utf8')).not.toContain(KEY_A);
  });

  it('reports a declared profile no store holds as missing', async () => {
    const dir = stateDir();
    writeOpenclawJson(dir);
    writeJsonStore(dir, 'main', {
      version: 1,
      profiles: { 'openai:default': { type: 'api_key', key: KEY_OTHER } },
    });
    const r = await scanProfiles({ stateDir: dir, provider: 'kilocode' });
    expect(profileForms(r)).toEqual([
      { agentId: 'main', store: 'json', profileId: 'kilocode:default', form: 'missing' },
    ]);
    const empty = stateDir();
    writeOpenclawJson(empty);
    const r2 = await scanProfiles({ stateDir: empty, provider: 'kilocode' });
    expect(profileForms(r2)).toEqual([
      { agentId: 'main', store: 'sqlite-agent', profileId: 'kilocode:default', form: 'missing' },
    ]);
  });
});

describe('bad input: clear error, file byte-identical', () => {
  const cases: [string, (dir: string) => string, RegExp][] = [
    [
      'truncated JSON',
      (d) => writeJsonStore(d, 'main', null, JSON.stringify(versionedStore()).slice(0, 80)),
      /not valid JSON/,
    ],
    [
      'a UTF-8 BOM',
      (d) => writeJsonStore(d, 'main', null, `\ufeff${JSON.stringify(aliasStore())}`),
      /byte-order mark/,
    ],
    [
      'wrong types',
      (d) =>
        writeJsonStore(d, 'main', {
          version: 1,
          profiles: { 'kilocode:default': { type: 'api_key', key: 42 } },
        }),
      /kilocode:default\.key/,
    ],
    [
      'a profiles array',
      (d) => writeJsonStore(d, 'main', { version: 1, profiles: [{ key: KEY_A }] }),
      /profiles/,
    ],
    [
      'invalid UTF-8',
      (d) => {
        const p = writeJsonStore(d, 'main', aliasStore());
        writeFileSync(
          p,
          Buffer.concat([
            Buffer.from('{"version":1,"profiles":{"a\xff'),
            Buffer.from([0xff, 0xfe]),
            Buffer.from('"}}'),
          ]),
        );
        return p;
      },
      /UTF-8/,
    ],
    [
      'a 50 MB store',
      (d) => {
        const p = writeJsonStore(d, 'main', aliasStore());
        truncateSync(p, 50 * 1024 * 1024); // sparse: cheap to make, 50 MB to stat
        return p;
      },
      /over the .*limit/,
    ],
    [
      'a read-only store (mode 0400)',
      (d) => {
        const p = writeJsonStore(d, 'main', versionedStore());
        chmodSync(p, 0o400);
        return p;
      },
      /read-only/,
    ],
  ];

  it.each(cases)('%s', async (_name, make, pattern) => {
    const dir = stateDir();
    const path = make(dir);
    const before = snapshot(path);
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    expect(r.storesFailed).toBe(1);
    expect(r.stores[0]!.error).toMatch(pattern);
    expect(JSON.stringify(r)).not.toContain(KEY_A);
    expect(snapshot(path)).toEqual(before);
    expect(readdirSync(agentDir(dir, 'main'))).toEqual(['auth-profiles.json']);
    expect(profileForms(r)[0]).toMatchObject({ profileId: 'kilocode:default', form: 'unreadable' });
  });

  it('a symlinked store is refused, and neither it nor its target changes', async () => {
    const dir = stateDir();
    const real = join(dir, 'elsewhere.json');
    writeFileSync(real, JSON.stringify(versionedStore()), { mode: 0o600 });
    const link = join(agentDir(dir, 'main'), 'auth-profiles.json');
    symlinkSync(real, link);
    const before = snapshot(real);
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    expect(r.stores[0]!.error).toMatch(/symbolic link/);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(snapshot(real)).toEqual(before);
  });

  it('a store in a directory that cannot be written is reported and left unchanged', async () => {
    const dir = stateDir();
    const path = writeJsonStore(dir, 'main', versionedStore());
    const before = snapshot(path);
    const agent = agentDir(dir, 'main');
    // Root ignores permission bits, so as root the directory is made immutable instead.
    const root = process.getuid?.() === 0;
    if (root) execFileSync('chattr', ['+i', agent]);
    else chmodSync(agent, 0o500);
    let r: Awaited<ReturnType<typeof migrateProfiles>>;
    try {
      r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    } finally {
      if (root) execFileSync('chattr', ['-i', agent]);
      else chmodSync(agent, 0o700);
    }
    expect(r.storesFailed).toBe(1);
    expect(r.stores[0]!.error).toMatch(/cannot replace store: open failed with (EACCES|EPERM)/);
    expect(snapshot(path)).toEqual(before);
    expect(readdirSync(agent)).toEqual(['auth-profiles.json']);
  });
});

describe('credential backups', () => {
  it('are set to 0600, counted, and never deleted', async () => {
    const dir = stateDir();
    writeJsonStore(dir, 'main', versionedStore());
    const agent = agentDir(dir, 'main');
    const names = [
      'auth-profiles.json.sqlite-import.1795478361679.bak',
      'auth-profiles.json.legacy-flat.17.bak',
      'auth.json.api-key-alias.1.bak',
      'auth-profiles.json.oauth-ref.99.bak',
      'auth-profiles.json.bak',
    ];
    for (const n of names) writeFileSync(join(agent, n), JSON.stringify(aliasStore()), { mode: 0o644 });
    writeFileSync(join(agent, 'notes.bak'), 'x', { mode: 0o644 });
    for (const n of [...names, 'notes.bak']) chmodSync(join(agent, n), 0o644);

    const scan = await scanProfiles({ stateDir: dir, provider: 'kilocode' });
    expect(scan.backupsHardened).toBe(5);
    expect(lstatSync(join(agent, names[0]!)).mode & 0o777).toBe(0o644); // scan changes nothing

    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    expect(r.backupsHardened).toBe(5);
    for (const n of names) {
      expect(existsSync(join(agent, n))).toBe(true);
      expect(lstatSync(join(agent, n)).mode & 0o777).toBe(0o600);
    }
    expect(lstatSync(join(agent, 'notes.bak')).mode & 0o777).toBe(0o644);
    expect(await hardenBackups(dir)).toBe(5);
  });
});
