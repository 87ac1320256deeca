// The one openclaw.json module (src/profiles/openclaw-config.ts), used by `keyroll profiles` and by
// the controller: where the file is, JSON5 in, atomic 0600 out only on change, conflicts refused,
// and the provider's config-level key (models.providers.<p>.apiKey) found, classified, migrated.
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { applyConfigEdits, writeConfigEdits } from '../../src/controller/openclaw-config.ts';
import { migrateProfiles, scanProfiles } from '../../src/profiles/index.ts';
import {
  applyConfigKey,
  configKeyForm,
  configPath,
  planConfigKey,
  readConfigFile,
  registerFileProvider,
  updateConfigFile,
} from '../../src/profiles/openclaw-config.ts';
import { makeStateDir } from '../fixtures/profiles/generate.ts';
import { filesContaining } from '../support/sandbox.ts';

const KEY = 'test-key-C-config-level-cccc';
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function stateDir(config?: string, mode = 0o600): string {
  const dir = makeStateDir('keyroll-cfg-');
  dirs.push(dir);
  if (config !== undefined) writeFileSync(join(dir, 'openclaw.json'), config, { mode });
  return dir;
}

const provider = (apiKey: unknown) => ({
  models: { providers: { kilocode: { baseUrl: 'http://127.0.0.1:9/', api: 'openai-completions', apiKey } } },
});

describe('openclaw.json: location, reading, writing', () => {
  it('is <state dir>/openclaw.json unless OPENCLAW_CONFIG_PATH says otherwise', () => {
    expect(configPath('/s')).toBe('/s/openclaw.json');
    expect(configPath('/s', { OPENCLAW_CONFIG_PATH: '/etc/oc.json' })).toBe('/etc/oc.json');
    expect(configPath('/s', { OPENCLAW_CONFIG_PATH: '' })).toBe('/s/openclaw.json');
  });

  it('reads JSON5 and writes plain JSON, atomically, 0600 (even over a 0644 file), only on change', async () => {
    const dir = stateDir("{\n  // comment\n  gateway: { port: 1, },\n  'x': 'y',\n}\n", 0o644);
    const path = configPath(dir);
    expect((await readConfigFile(path)).root).toEqual({ gateway: { port: 1 }, x: 'y' });
    const before = readFileSync(path, 'utf8');
    expect(await updateConfigFile(path, (root) => Object.assign(root, { x: 'y' }))).toBe(false);
    expect(readFileSync(path, 'utf8')).toBe(before); // nothing changed: not rewritten
    expect(statSync(path).mode & 0o777).toBe(0o644);
    expect(await updateConfigFile(path, (root) => Object.assign(root, { x: 'z' }))).toBe(true);
    expect(JSON.parse(readFileSync(path, 'utf8'))).toEqual({ gateway: { port: 1 }, x: 'z' });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir).filter((n) => n.includes('keyroll-tmp'))).toEqual([]);
  });

  it('refuses a file that is not JSON5 by position only, a symlink, and a non-object; writes nothing', async () => {
    const dir = stateDir(`{ "models": { "apiKey": "${KEY}" `);
    const path = configPath(dir);
    const err = await readConfigFile(path).catch((e: Error) => e);
    expect(String(err)).toMatch(/openclaw\.json is not valid JSON5 \(line 1, column \d+\)/);
    expect(String(err)).not.toContain(KEY);
    await expect(updateConfigFile(path, (r) => Object.assign(r, { a: 1 }))).rejects.toThrow(/JSON5/);

    const real = join(dir, 'real.json');
    writeFileSync(real, '{}', { mode: 0o600 });
    const linked = stateDir();
    symlinkSync(real, join(linked, 'openclaw.json'));
    await expect(updateConfigFile(configPath(linked), (r) => Object.assign(r, { a: 1 }))).rejects.toThrow(
      /not a regular file/,
    );
    expect(readFileSync(real, 'utf8')).toBe('{}');

    const arr = stateDir('[1, 2]');
    await expect(readConfigFile(configPath(arr))).rejects.toThrow(/not a JSON object/);
    expect((await readConfigFile(join(stateDir(), 'openclaw.json'))).root).toBeNull();
  });

  it('a file provider alias that names something else is refused by both users, never overwritten', async () => {
    const other = {
      secrets: { providers: { kilofile: { source: 'file', path: '/elsewhere', mode: 'json' } } },
    };
    const dir = stateDir(JSON.stringify(other));
    const path = configPath(dir);
    const before = readFileSync(path, 'utf8');
    await expect(registerFileProvider(path, 'kilofile', '/k/key', false)).rejects.toThrow(
      /already defines secrets\.providers\.kilofile differently/,
    );
    await expect(
      writeConfigEdits(path, {
        provider: 'kilocode',
        stateDir: dir,
        providerBaseUrl: null,
        enableChatCompletions: false,
        keyFile: '/k/key',
      }),
    ).rejects.toThrow(/differently/);
    expect(readFileSync(path, 'utf8')).toBe(before);
    // The same registration again is no change.
    const same = stateDir('{}');
    expect((await registerFileProvider(configPath(same), 'kilofile', '/k/key', false)).changed).toBe(true);
    expect((await registerFileProvider(configPath(same), 'kilofile', '/k/key', false)).changed).toBe(false);
  });

  it("the controller's edits keep every other setting, keep a `__proto__` key as data, and respect an explicit plugin switch", () => {
    const doc = JSON.parse(
      '{"__proto__": {"polluted": true}, "plugins": {"entries": {"kilocode": {"enabled": true}}}}',
    );
    const out = applyConfigEdits(doc, {
      provider: 'kilocode',
      stateDir: '/s',
      providerBaseUrl: 'http://u/',
      enableChatCompletions: true,
      keyFile: null,
      disableProviderPlugin: true,
    });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.hasOwn(out, '__proto__')).toBe(true);
    expect(out).toMatchObject({
      plugins: { entries: { kilocode: { enabled: true } } },
      models: { providers: { kilocode: { baseUrl: 'http://u/' } } },
      gateway: { http: { endpoints: { chatCompletions: { enabled: true } } } },
      update: { checkOnStart: false },
      logging: { file: '/s/logs/openclaw.log' },
    });
    const fresh = applyConfigEdits(
      {},
      {
        provider: 'kilocode',
        stateDir: '/s',
        providerBaseUrl: null,
        enableChatCompletions: false,
        keyFile: null,
        disableProviderPlugin: true,
      },
    );
    expect(fresh).toMatchObject({ plugins: { entries: { kilocode: { enabled: false } } } });
  });
});

describe('the config-level key', () => {
  it('is classified by what it holds', () => {
    expect(configKeyForm(provider(KEY), 'kilocode')).toBe('plaintext');
    expect(configKeyForm(provider(''), 'kilocode')).toBe('missing');
    expect(configKeyForm(provider(`\${CUSTOM_API_KEY}`), 'kilocode')).toBe('keyRef-env');
    expect(configKeyForm(provider('$KILOCODE_API_KEY'), 'kilocode')).toBe('keyRef-env');
    expect(configKeyForm(provider({ source: 'env', provider: 'default', id: 'X' }), 'kilocode')).toBe(
      'keyRef-env',
    );
    expect(configKeyForm(provider({ source: 'file', provider: 'kilofile', id: 'value' }), 'kilocode')).toBe(
      'keyRef-file',
    );
    expect(configKeyForm(provider({ source: 'exec', provider: 'vault', id: 'k' }), 'kilocode')).toBe(
      'unreadable',
    );
    expect(configKeyForm(provider(42), 'kilocode')).toBe('unreadable');
    expect(configKeyForm({ models: { providers: { kilocode: {} } } }, 'kilocode')).toBeNull();
    expect(configKeyForm(provider(KEY), 'other')).toBeNull();
  });

  it('is re-pointed at the delivery ref: a literal key, another env variable, the other source', () => {
    const env = { to: 'env' as const, envVar: 'KILOCODE_API_KEY' };
    const file = { to: 'file' as const, keyFile: '/k', providerAlias: 'kilofile' };
    expect(planConfigKey(provider(KEY), 'kilocode', env)).toEqual({
      form: 'plaintext',
      formAfter: 'keyRef-env',
      changes: true,
    });
    const custom = provider({ source: 'env', provider: 'default', id: 'CUSTOM_API_KEY' });
    expect(planConfigKey(custom, 'kilocode', env)?.changes).toBe(true);
    applyConfigKey(custom, 'kilocode', env);
    expect(custom.models.providers.kilocode.apiKey).toEqual({
      source: 'env',
      provider: 'default',
      id: 'KILOCODE_API_KEY',
    });
    expect(planConfigKey(custom, 'kilocode', env)?.changes).toBe(false);
    expect(planConfigKey(custom, 'kilocode', file)).toEqual({
      form: 'keyRef-env',
      formAfter: 'keyRef-file',
      changes: true,
    });
    const exec = provider({ source: 'exec', provider: 'vault', id: 'k' });
    expect(planConfigKey(exec, 'kilocode', env)).toEqual({
      form: 'unreadable',
      formAfter: 'unreadable',
      changes: false,
    });
  });

  it('a plaintext config key: scan reports it, migrate --to env replaces it, the key is nowhere after', async () => {
    const dir = stateDir(JSON.stringify({ gateway: { port: 1 }, ...provider(KEY) }, null, 2), 0o644);
    const scan = await scanProfiles({ stateDir: dir, provider: 'kilocode' });
    expect(scan.stores).toEqual([
      {
        path: join(dir, 'openclaw.json'),
        layout: 'config',
        agentId: null,
        changed: false,
        error: null,
        profiles: [
          { profileId: 'models.providers.kilocode.apiKey', form: 'plaintext', formAfter: 'plaintext' },
        ],
      },
    ]);
    const r = await migrateProfiles({
      stateDir: dir,
      provider: 'kilocode',
      target: { to: 'env', envVar: 'KILOCODE_API_KEY' },
    });
    expect(JSON.stringify(r)).not.toContain(KEY);
    expect(r).toMatchObject({ profilesMigrated: 1, storesFailed: 0 });
    expect(r.stores[0]).toMatchObject({ layout: 'config', changed: true });
    const cfg = JSON.parse(readFileSync(join(dir, 'openclaw.json'), 'utf8'));
    expect(cfg.models.providers.kilocode.apiKey).toEqual({
      source: 'env',
      provider: 'default',
      id: 'KILOCODE_API_KEY',
    });
    expect(cfg.gateway).toEqual({ port: 1 });
    expect(statSync(join(dir, 'openclaw.json')).mode & 0o777).toBe(0o600);
    expect(filesContaining(dir, KEY)).toEqual([]);
  });

  it('migrate --to file seeds the key file from the config key and registers the provider; layouts without `config` leave it', async () => {
    const dir = stateDir(JSON.stringify(provider(KEY)));
    const keyDir = join(dir, 'keys');
    mkdirSync(keyDir, { mode: 0o700 });
    const keyFile = join(keyDir, 'kilocode.key');
    const skipped = await migrateProfiles({
      stateDir: dir,
      provider: 'kilocode',
      target: { to: 'file', keyFile, providerAlias: 'kilofile' },
      layouts: ['json'],
    });
    expect(skipped.stores[0]).toMatchObject({ layout: 'config', changed: false });
    expect(existsSync(keyFile)).toBe(false);

    const r = await migrateProfiles({
      stateDir: dir,
      provider: 'kilocode',
      target: { to: 'file', keyFile, providerAlias: 'kilofile' },
    });
    expect(r.keyFile).toMatchObject({ status: 'created' });
    expect(r.config).toMatchObject({ changed: true, error: null });
    expect(readFileSync(keyFile, 'utf8').trim()).toBe(KEY);
    const cfg = JSON.parse(readFileSync(join(dir, 'openclaw.json'), 'utf8'));
    expect(cfg.models.providers.kilocode.apiKey).toEqual({
      source: 'file',
      provider: 'kilofile',
      id: 'value',
    });
    expect(cfg.secrets.providers.kilofile).toEqual({ source: 'file', path: keyFile, mode: 'singleValue' });
    expect(filesContaining(dir, KEY)).toEqual([keyFile]);
  });

  it("OpenClaw's config backups holding the literal key are hardened to 0600 and counted, never deleted", async () => {
    const dir = stateDir(JSON.stringify(provider(KEY)));
    writeFileSync(join(dir, 'openclaw.json.bak'), JSON.stringify(provider(KEY)), { mode: 0o644 });
    writeFileSync(join(dir, 'openclaw.json.bak.1'), JSON.stringify(provider(`\${X_KEY}`)), { mode: 0o644 });
    const r = await migrateProfiles({
      stateDir: dir,
      provider: 'kilocode',
      target: { to: 'env', envVar: 'KILOCODE_API_KEY' },
      purgePlaintextBackups: true,
    });
    expect(r).toMatchObject({ backupsHardened: 2, backupsPlaintext: 1, backupsPurged: 0 });
    expect(r.warnings.join('\n')).toContain(
      "openclaw.json.bak: kept, it is OpenClaw's backup of the whole config",
    );
    for (const f of ['openclaw.json.bak', 'openclaw.json.bak.1']) {
      expect(statSync(join(dir, f)).mode & 0o777).toBe(0o600);
    }
    expect(filesContaining(dir, KEY)).toEqual([join(dir, 'openclaw.json.bak')]);
    chmodSync(join(dir, 'openclaw.json.bak'), 0o600);
  });
});
