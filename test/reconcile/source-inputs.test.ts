// Every key source refuses a key that is not one printable token, and a version label the
// controller would refuse, with an error that names the source and the reason and never the value.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Clock, ManualClock } from '../../src/clock.ts';
import { fileKeySource } from '../../src/reconcile/sources/file-source.ts';
import { httpKeySource } from '../../src/reconcile/sources/http-source.ts';
import { KeySourceError, type KeySourceReason } from '../../src/reconcile/sources/key-source.ts';
import { secretKeySource } from '../../src/reconcile/sources/secret-source.ts';

const GOOD = 'test-key-A-inputs-0000000001';
const TOKEN = 'test-token-inputs-0000000001';
const NOW = Date.parse('2026-03-01T00:00:00Z');
const clock: Clock = new ManualClock(NOW);
const signal = () => AbortSignal.timeout(5_000);

const BAD_KEYS = [
  ['a space', ' '],
  ['a tab', '\tx'],
  ['two words', 'test-key a b-0000001'],
  ['a header injection', 'test-key-0000001\nX-Injected: 1'],
  ['non-ASCII', 'test-key-ключ-0000001'],
  ['too short', 'short'],
] as const;
const BAD_LABELS = [
  ['a space', 'v 1'],
  ['non-ASCII', 'v1-é'],
  ['a newline inside', 'v1\nX-Injected: 1'],
  ['too long', 'v'.repeat(129)],
] as const;

let dir: string;
const servers: Server[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keyroll-source-inputs-'));
});
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  rmSync(dir, { recursive: true, force: true });
});

async function failure(p: Promise<unknown>): Promise<KeySourceError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(KeySourceError);
  return err as KeySourceError;
}

function expectRefused(err: KeySourceError, reason: KeySourceReason, where: RegExp, secret: string) {
  expect(err.reason).toBe(reason);
  expect(err.message).toMatch(where);
  expect(err.message).toMatch(reason === 'InvalidKey' ? /the key must / : /the version label must /);
  const fragment = secret.trim().slice(0, 10);
  if (fragment.length >= 4) expect(err.message).not.toContain(fragment);
}

async function api(body: unknown): Promise<string> {
  const s = createServer((_req, res) => res.end(JSON.stringify(body)));
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

const secret = (key: string, annotations: Record<string, string> = {}) =>
  secretKeySource(
    {
      read: async () => ({ data: { KILOCODE_API_KEY: Buffer.from(key).toString('base64') }, annotations }),
    },
    { namespace: 'ns', name: 'kilo', key: 'KILOCODE_API_KEY' },
    TOKEN,
  );

describe('file source', () => {
  it.each(BAD_KEYS)('refuses a key with %s (InvalidKey)', async (_name, key) => {
    writeFileSync(join(dir, 'key'), `${key}\n`);
    const err = await failure(fileKeySource({ path: join(dir, 'key'), versionKey: TOKEN }).current(signal()));
    if (key.trim() === '') {
      expect(err.message).toMatch(/the key is empty/);
      return;
    }
    expectRefused(err, 'InvalidKey', /^key source file .*\/key: /, key);
  });

  it.each(BAD_LABELS)('refuses a version sidecar with %s (InvalidVersionLabel)', async (_name, label) => {
    const d = join(dir, 'secret');
    mkdirSync(d);
    writeFileSync(join(d, 'KILOCODE_API_KEY'), GOOD);
    writeFileSync(join(d, 'version'), label);
    const err = await failure(fileKeySource({ path: d, versionKey: TOKEN }).current(signal()));
    expectRefused(err, 'InvalidVersionLabel', /^key source file .*KILOCODE_API_KEY: /, label);
  });

  it('still trims the trailing newline of a good key', async () => {
    writeFileSync(join(dir, 'key'), `${GOOD}\n`);
    expect((await fileKeySource({ path: join(dir, 'key'), versionKey: TOKEN }).current(signal())).key).toBe(
      GOOD,
    );
  });
});

describe('secret source', () => {
  it.each(BAD_KEYS.filter(([, k]) => k.trim() !== ''))(
    'refuses a key with %s (InvalidKey)',
    async (_n, key) => {
      const err = await failure(secret(key, { 'keyroll.dev/version': 'v1' }).current(signal()));
      expectRefused(err, 'InvalidKey', /^secret ns\/kilo key KILOCODE_API_KEY: /, key);
    },
  );

  it.each(BAD_LABELS)(
    'refuses a keyroll.dev/version annotation with %s (InvalidVersionLabel)',
    async (_n, label) => {
      const err = await failure(secret(GOOD, { 'keyroll.dev/version': label }).current(signal()));
      expectRefused(err, 'InvalidVersionLabel', /^secret ns\/kilo key KILOCODE_API_KEY: /, label);
    },
  );

  it('a label with surrounding whitespace is trimmed, not refused', async () => {
    expect(await secret(GOOD, { 'keyroll.dev/version': ' v2\n' }).current(signal())).toMatchObject({
      key: GOOD,
      version: 'v2',
    });
  });
});

describe('http source', () => {
  it.each(BAD_KEYS)('refuses a key with %s (InvalidKey)', async (_name, key) => {
    const url = await api({ key, version: 'v1' });
    const err = await failure(
      httpKeySource({ url, token: TOKEN, clock, versionKey: TOKEN }).current(signal()),
    );
    expectRefused(err, 'InvalidKey', /^key source http:\/\/127\.0\.0\.1:\d+: /, key);
  });

  it.each(BAD_LABELS)('refuses a version with %s (InvalidVersionLabel)', async (_name, version) => {
    const url = await api({ key: GOOD, version });
    const err = await failure(
      httpKeySource({ url, token: TOKEN, clock, versionKey: TOKEN }).current(signal()),
    );
    expectRefused(err, 'InvalidVersionLabel', /^key source http:\/\/127\.0\.0\.1:\d+: /, version);
  });

  it('a minted key is checked too, and the reason survives the mint wrapper', async () => {
    const s = createServer((req, res) => {
      if (req.method === 'POST') res.end(JSON.stringify({ token: 'minted key\nX-Injected: 1' }));
      else res.end(JSON.stringify({ key: GOOD, expiresAt: '2026-03-02T00:00:00Z' }));
    });
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    const err = await failure(
      httpKeySource({ url, mintUrl: url, token: TOKEN, clock, versionKey: TOKEN }).current(signal()),
    );
    expectRefused(err, 'InvalidKey', /^mint http:.*the next pass mints again$/, 'minted key');
  });
});
