import { chmodSync, existsSync, linkSync, lstatSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { migrateProfiles, profileForms } from '../../src/profiles/index.ts';
import {
  aliasStore,
  FILE_REF,
  KEY_A,
  KEY_B,
  readAgentDb,
  versionedStore,
  writeAgentDb,
  writeJsonStore,
  writeOpenclawJson,
} from '../fixtures/profiles/generate.ts';
import { stateDirs } from './support.ts';

const stateDir = stateDirs();
const fileTarget = (dir: string) =>
  ({ to: 'file', keyFile: join(dir, 'keys', 'kilocode.key'), providerAlias: 'kilofile' }) as const;

describe('file-ref migration', () => {
  it('writes the key file (0600, one link), registers the provider, switches the profile, and is idempotent', async () => {
    const dir = stateDir();
    const configPath = writeOpenclawJson(dir);
    const configBefore = JSON.parse(readFileSync(configPath, 'utf8'));
    const db = writeAgentDb(dir, 'main', versionedStore());
    const target = fileTarget(dir);

    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target });
    expect(r.storesFailed).toBe(0);
    expect(r.keyFile).toEqual({ path: target.keyFile, status: 'created', differingKeys: 0, error: null });
    expect(r.config).toEqual({ path: configPath, changed: true, error: null });
    const st = lstatSync(target.keyFile);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.nlink).toBe(1);
    expect(readFileSync(target.keyFile, 'utf8')).toBe(KEY_A);
    const config = JSON.parse(readFileSync(configPath, 'utf8'));
    expect(config).toEqual({
      ...configBefore,
      secrets: { providers: { kilofile: { source: 'file', path: target.keyFile, mode: 'singleValue' } } },
    });
    expect(JSON.stringify(readAgentDb(db))).toContain(JSON.stringify(FILE_REF));
    expect(profileForms(r)).toEqual([
      { agentId: 'main', store: 'sqlite-agent', profileId: 'kilocode:default', form: 'keyRef-file' },
    ]);

    const snap = () =>
      [configPath, target.keyFile, db].map((p) => [readFileSync(p).toString('base64'), lstatSync(p).mtimeMs]);
    const before = snap();
    const again = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target });
    expect(again.profilesMigrated).toBe(0);
    expect(again.keyFile?.status).toBe('unchanged');
    expect(again.config?.changed).toBe(false);
    expect(snap()).toEqual(before);
  });

  it('never overwrites a key file with other content, and still drops the plaintext', async () => {
    const dir = stateDir();
    writeOpenclawJson(dir);
    const json = writeJsonStore(dir, 'main', aliasStore(KEY_A));
    const target = fileTarget(dir);
    writeJsonStore(dir, 'other', aliasStore(KEY_B));
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(dir, 'keys'), { mode: 0o700 });
    writeFileSync(target.keyFile, 'test-key-NEWER-from-rotation', { mode: 0o600 });
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target });
    expect(r.keyFile).toMatchObject({ status: 'kept-existing', differingKeys: 2 });
    expect(readFileSync(target.keyFile, 'utf8')).toBe('test-key-NEWER-from-rotation');
    expect(readFileSync(json, 'utf8')).not.toContain(KEY_A);
    expect(r.profilesMigrated).toBe(2);
  });

  it('repairs a key file holding the same key at a loose mode or with a second link', async () => {
    const dir = stateDir();
    writeJsonStore(dir, 'main', aliasStore(KEY_A));
    const target = fileTarget(dir);
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(dir, 'keys'), { mode: 0o700 });
    writeFileSync(target.keyFile, `${KEY_A}\n`);
    chmodSync(target.keyFile, 0o644);
    linkSync(target.keyFile, join(dir, 'keys', 'second-link'));
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target });
    expect(r.keyFile?.status).toBe('repaired');
    const st = lstatSync(target.keyFile);
    expect([st.mode & 0o777, st.nlink]).toEqual([0o600, 1]);
  });

  it('switches env refs to file refs and back', async () => {
    const dir = stateDir();
    const json = writeJsonStore(dir, 'main', versionedStore());
    const target = fileTarget(dir);
    await migrateProfiles({
      stateDir: dir,
      provider: 'kilocode',
      target: { to: 'env', envVar: 'KILOCODE_API_KEY' },
    });
    const toFile = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target });
    expect(toFile.stores[0]!.profiles).toEqual([
      { profileId: 'kilocode:default', form: 'keyRef-env', formAfter: 'keyRef-file' },
    ]);
    // No plaintext was left to write the key file from: the caller is told.
    expect(toFile.keyFile?.status).toBe('missing');
    expect(toFile.warnings.join('\n')).toMatch(/key file does not exist/);
    const back = await migrateProfiles({
      stateDir: dir,
      provider: 'kilocode',
      target: { to: 'env', envVar: 'KILOCODE_API_KEY' },
    });
    expect(back.stores[0]!.profiles[0]).toMatchObject({ form: 'keyRef-file', formAfter: 'keyRef-env' });
    expect(readFileSync(json, 'utf8')).toContain('"source": "env"');
  });

  it('reads a JSON5 openclaw.json (comments, trailing commas, unquoted keys, single quotes) and registers the provider', async () => {
    const dir = stateDir();
    const configPath = join(dir, 'openclaw.json');
    const json5 =
      "{\n  // comment\n  auth: { profiles: { 'kilocode:default': { provider: 'kilocode', mode: 'api_key', }, }, },\n  gateway: { port: 3001, },\n}\n";
    writeFileSync(configPath, json5, { mode: 0o600 });
    writeJsonStore(dir, 'main', versionedStore());
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: fileTarget(dir) });
    expect(r.config).toMatchObject({ changed: true, error: null });
    expect(r.storesFailed).toBe(0);
    expect(r.stores[0]!.profiles[0]).toMatchObject({ form: 'plaintext', formAfter: 'keyRef-file' });
    // Written back as plain JSON (valid JSON5 for OpenClaw); the comment is not kept.
    const written = JSON.parse(readFileSync(configPath, 'utf8'));
    expect(written.gateway).toEqual({ port: 3001 });
    expect(written.auth.profiles['kilocode:default']).toEqual({ provider: 'kilocode', mode: 'api_key' });
    expect(written.secrets.providers.kilofile).toMatchObject({ source: 'file', mode: 'singleValue' });
  });

  it('refuses an openclaw.json that is not even JSON5, by position only, and switches no store', async () => {
    const dir = stateDir();
    const configPath = join(dir, 'openclaw.json');
    const broken = '{\n  models: { apiKey: sk-test-key-in-broken-config-0001 }\n}\n';
    writeFileSync(configPath, broken, { mode: 0o600 });
    const store = writeJsonStore(dir, 'main', versionedStore());
    const before = readFileSync(store, 'utf8');
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: fileTarget(dir) });
    expect(r.config?.error).toBe('openclaw.json is not valid JSON5 (line 2, column 21)');
    expect(JSON.stringify(r)).not.toContain('sk-test');
    expect(r.storesFailed).toBe(1);
    expect(r.stores[0]!.error).toMatch(/not migrated/);
    expect(readFileSync(store, 'utf8')).toBe(before);
    expect(readFileSync(configPath, 'utf8')).toBe(broken);
  });

  it('refuses an alias already bound to another file', async () => {
    const dir = stateDir();
    writeOpenclawJson(dir, {
      secrets: { providers: { kilofile: { source: 'file', path: '/elsewhere', mode: 'singleValue' } } },
    });
    writeJsonStore(dir, 'main', versionedStore());
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: fileTarget(dir) });
    expect(r.config?.error).toMatch(/already defines secrets\.providers\.kilofile/);
    expect(r.storesFailed).toBe(1);
  });

  it('dry run writes no key file and no config', async () => {
    const dir = stateDir();
    const configPath = writeOpenclawJson(dir);
    const before = readFileSync(configPath, 'utf8');
    writeJsonStore(dir, 'main', versionedStore());
    const target = fileTarget(dir);
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target, dryRun: true });
    expect(r.keyFile?.status).toBe('would-create');
    expect(r.config?.changed).toBe(true);
    expect(existsSync(target.keyFile)).toBe(false);
    expect(readFileSync(configPath, 'utf8')).toBe(before);
  });
});
