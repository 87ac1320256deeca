import { describe, expect, it } from 'vitest';
import {
  classifyCredential,
  parseStoreText,
  planStore,
  profileEntries,
  serializeJsonStore,
} from '../../src/profiles/store-doc.ts';
import {
  aliasStore,
  ENV_REF,
  FILE_REF,
  flatStore,
  KEY_A,
  versionedStore,
} from '../fixtures/profiles/generate.ts';

const ENV = { to: 'env', envVar: 'KILOCODE_API_KEY' } as const;
const FILE = { to: 'file', keyFile: '/keys/k', providerAlias: 'kilofile' } as const;

describe('classifyCredential', () => {
  it.each([
    ['plaintext key', { type: 'api_key', provider: 'kilocode', key: KEY_A }, 'plaintext'],
    ['api_key alias', { type: 'api_key', api_key: KEY_A }, 'plaintext'],
    ['no type, key', { key: KEY_A }, 'plaintext'],
    ['env ref', { type: 'api_key', keyRef: ENV_REF }, 'keyRef-env'],
    ['file ref', { type: 'api_key', keyRef: FILE_REF }, 'keyRef-file'],
    ['env shorthand', { type: 'api_key', keyRef: '$' + '{KILOCODE_API_KEY}' }, 'keyRef-env'],
    ['ref wins over key', { type: 'api_key', key: KEY_A, keyRef: ENV_REF }, 'keyRef-env'],
    ['exec ref (unmanaged source)', { type: 'api_key', keyRef: { source: 'exec', id: 'x' } }, 'unreadable'],
    ['empty key', { type: 'api_key', key: '' }, 'missing'],
    ['no key at all', { type: 'api_key' }, 'missing'],
    ['oauth', { type: 'oauth', access: 'a' }, null],
    ['token', { type: 'token', token: 't' }, null],
    ['unrelated object', { email: 'x' }, null],
  ])('%s', (_name, credential, form) => {
    expect(classifyCredential(credential)).toBe(form);
  });
});

describe('parseStoreText', () => {
  it.each([
    ['BOM', `\ufeff${JSON.stringify(aliasStore())}`, /byte-order mark/],
    ['truncated', JSON.stringify(versionedStore()).slice(0, 60), /not valid JSON/],
    ['empty', '', /not valid JSON/],
    ['profiles array', '{"version":1,"profiles":[]}', /profiles: .*expected record/],
    ['version string', '{"version":"1","profiles":{}}', /version/],
    [
      'key number',
      '{"version":1,"profiles":{"kilocode:default":{"type":"api_key","key":5}}}',
      /kilocode:default\.key/,
    ],
    ['credential string', '{"version":1,"profiles":{"kilocode:default":"x"}}', /kilocode:default/],
    ['top-level array', '[]', /top level is an array/],
    ['top-level null', 'null', /top level is null/],
    ['flat with non-object value', '{"kilocode":"x"}', /kilocode/],
  ])('rejects %s with a clear error that quotes no value', (_name, text, pattern) => {
    const out = parseStoreText(text);
    expect(out.ok).toBe(false);
    if (!out.ok) {
      expect(out.error).toMatch(pattern);
      expect(out.error).not.toContain(KEY_A);
      expect(out.error).not.toContain('test-key');
    }
  });

  it('accepts the three legacy shapes', () => {
    for (const store of [versionedStore(), flatStore(), aliasStore()]) {
      expect(parseStoreText(JSON.stringify(store)).ok).toBe(true);
    }
  });
});

describe('planStore', () => {
  const parse = (v: unknown) => {
    const out = parseStoreText(JSON.stringify(v, null, 2));
    if (!out.ok) throw new Error(out.error);
    return out.doc;
  };

  it('rewrites only the managed plaintext profile and keeps everything else', () => {
    const before = versionedStore();
    const plan = planStore(parse(before), 'kilocode', ENV);
    expect(plan.migrated).toBe(1);
    expect(plan.plaintextKeys).toEqual([KEY_A]);
    const after = JSON.parse(serializeJsonStore(plan.next!));
    const expected = structuredClone(before) as { profiles: Record<string, Record<string, unknown>> };
    const cred = expected.profiles['kilocode:default']!;
    delete cred.key;
    cred.keyRef = ENV_REF;
    expect(after).toEqual(expected);
    // keyRef takes the place of key: field order is kept.
    expect(Object.keys(after.profiles['kilocode:default'])).toEqual([
      'type',
      'provider',
      'keyRef',
      'email',
      'metadata',
    ]);
  });

  it('reports profiles without changing them when nothing needs doing', () => {
    const doc = parse({ version: 1, profiles: { 'kilocode:default': { type: 'api_key', keyRef: ENV_REF } } });
    const plan = planStore(doc, 'kilocode', ENV);
    expect(plan.next).toBeNull();
    expect(plan.profiles).toEqual([
      { profileId: 'kilocode:default', form: 'keyRef-env', formAfter: 'keyRef-env' },
    ]);
  });

  it('switches a ref of the other source, both ways', () => {
    const envDoc = parse({
      version: 1,
      profiles: { 'kilocode:default': { type: 'api_key', keyRef: ENV_REF } },
    });
    const toFile = planStore(envDoc, 'kilocode', FILE);
    expect(toFile.profiles[0]).toMatchObject({ form: 'keyRef-env', formAfter: 'keyRef-file' });
    const back = planStore(toFile.next!, 'kilocode', ENV);
    expect(back.profiles[0]).toMatchObject({ form: 'keyRef-file', formAfter: 'keyRef-env' });
  });

  it('removes a stale key sitting beside a ref', () => {
    const doc = parse({
      version: 1,
      profiles: { 'kilocode:default': { type: 'api_key', key: KEY_A, keyRef: ENV_REF } },
    });
    const plan = planStore(doc, 'kilocode', ENV);
    expect(plan.next).not.toBeNull();
    expect(serializeJsonStore(plan.next!)).not.toContain(KEY_A);
    expect(plan.migrated).toBe(0);
  });

  it('matches the provider by the id prefix when `provider` is absent, and names flat profiles <provider>:default', () => {
    const doc = parse({ version: 1, profiles: { 'kilocode:work': { type: 'api_key', key: KEY_A } } });
    expect(profileEntries(doc)[0]).toMatchObject({ profileId: 'kilocode:work', provider: 'kilocode' });
    const flat = parse(flatStore());
    expect(planStore(flat, 'kilocode', null).profiles).toEqual([
      { profileId: 'kilocode:default', form: 'plaintext', formAfter: 'plaintext' },
    ]);
  });

  it('keeps a __proto__ key as data', () => {
    const text =
      '{"version":1,"profiles":{"kilocode:default":{"type":"api_key","key":"test-key-A-proto1"}},"__proto__":{"x":1}}';
    const out = parseStoreText(text);
    if (!out.ok) throw new Error(out.error);
    const next = planStore(out.doc, 'kilocode', ENV).next!;
    expect(serializeJsonStore(next)).toContain('"__proto__"');
  });
});
