import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Clock, ManualClock } from '../../src/clock.ts';
import { fingerprintValue } from '../../src/fingerprint.ts';
import { contentVersion, versionKeyOf } from '../../src/reconcile/sources/content-version.ts';
import { fileKeySource } from '../../src/reconcile/sources/file-source.ts';
import { httpKeySource, mintDue } from '../../src/reconcile/sources/http-source.ts';
import { KeySourceError } from '../../src/reconcile/sources/key-source.ts';
import { secretKeySource } from '../../src/reconcile/sources/secret-source.ts';
import { parseTargetsFile } from '../../src/reconcile/targets.ts';

const KEY = 'test-key-A-sources-0000000001';
const MINTED = 'test-key-B-sources-0000000002';
const TOKEN = 'test-token-sources-000001';
const signal = () => AbortSignal.timeout(5_000);
const fixedClock = (now: number): Clock => new ManualClock(now);

let dir: string;
let servers: Server[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keyroll-sources-'));
  servers = [];
});
afterEach(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('file source', () => {
  it('reads a file, trims the newline, and versions by content, keyed with the controller token', async () => {
    writeFileSync(join(dir, 'key'), `${KEY}\n`);
    const k = await fileKeySource({ path: join(dir, 'key'), versionKey: TOKEN }).current(signal());
    expect(k.key).toBe(KEY);
    expect(k.version).toMatch(/^hmac:[0-9a-f]{16}$/);
    // Not a plain digest of the key: without the token a guessed key cannot be tested against it.
    expect(k.version.slice(5)).not.toBe(createHash('sha256').update(KEY).digest('hex').slice(0, 16));
    const other = await fileKeySource({ path: join(dir, 'key'), versionKey: `${TOKEN}-other` }).current(
      signal(),
    );
    expect(other.version).not.toBe(k.version);
    expect(
      (await fileKeySource({ path: join(dir, 'key'), versionKey: TOKEN }).current(signal())).version,
    ).toBe(k.version);
    writeFileSync(join(dir, 'key'), MINTED);
    expect(
      (await fileKeySource({ path: join(dir, 'key'), versionKey: TOKEN }).current(signal())).version,
    ).not.toBe(k.version);
  });

  it('reads a mounted Secret directory and its version sidecar', async () => {
    const secret = join(dir, 'secret');
    mkdirSync(secret);
    writeFileSync(join(secret, 'KILOCODE_API_KEY'), KEY);
    writeFileSync(join(secret, 'version'), 'v7\n');
    const k = await fileKeySource({ path: secret, versionKey: TOKEN }).current(signal());
    expect(k).toMatchObject({ key: KEY, version: 'v7' });
  });

  it.each([
    ['missing', null, /cannot read \(ENOENT\)/],
    ['empty', '\n', /the key is empty/],
  ])('%s file → KeySourceError', async (_name, content, message) => {
    if (content !== null) writeFileSync(join(dir, 'key'), content);
    await expect(
      fileKeySource({ path: join(dir, 'key'), versionKey: TOKEN }).current(signal()),
    ).rejects.toThrow(message);
  });
});

describe('http source', () => {
  async function api(handler: Parameters<typeof createServer>[1]) {
    const s = createServer(handler);
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  }
  const NOW = Date.parse('2026-03-01T00:00:00Z');

  it('GETs with the bearer and parses {key, version, expiresAt}; no mint while far from expiry', async () => {
    const seen: string[] = [];
    const url = await api((req, res) => {
      seen.push(`${req.method} ${req.headers.authorization === `Bearer ${TOKEN}`}`);
      res.end(JSON.stringify({ key: KEY, version: 'v3', expiresAt: '2026-03-20T00:00:00Z', extra: 1 }));
    });
    const k = await httpKeySource({
      url,
      token: TOKEN,
      mintUrl: `${url}/mint`,
      clock: fixedClock(NOW),
      versionKey: TOKEN,
    }).current(signal());
    expect(k).toMatchObject({ key: KEY, version: 'v3' });
    expect(k.expiresAt?.toISOString()).toBe('2026-03-20T00:00:00.000Z');
    expect(seen).toEqual(['GET true']);
  });

  it('mints when expiry is within refreshBefore, and returns the minted key', async () => {
    const url = await api((req, res) => {
      if (req.method === 'POST')
        res.end(JSON.stringify({ token: MINTED, expiresAt: '2026-04-01T00:00:00Z' }));
      else res.end(JSON.stringify({ key: KEY, expiresAt: '2026-03-03T00:00:00Z' }));
    });
    const k = await httpKeySource({
      url,
      token: TOKEN,
      mintUrl: url,
      clock: fixedClock(NOW),
      versionKey: TOKEN,
    }).current(signal());
    expect(k.key).toBe(MINTED);
  });

  it('times out a hanging API with a clear error', async () => {
    const url = await api(() => undefined);
    await expect(
      httpKeySource({ url, token: TOKEN, timeoutMs: 150, clock: fixedClock(NOW), versionKey: TOKEN }).current(
        signal(),
      ),
    ).rejects.toThrow(/key source http:\/\/127\.0\.0\.1:\d+: timed out after 150 ms/);
  });

  it('never quotes a response body in an error', async () => {
    const url = await api((_req, res) => {
      res.writeHead(500).end(`{"error":"leaked ${KEY}"}`);
    });
    const err = await httpKeySource({ url, token: TOKEN, clock: fixedClock(NOW), versionKey: TOKEN })
      .current(signal())
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KeySourceError);
    expect(String((err as Error).message)).not.toContain(KEY);
  });

  it.each([
    [undefined, false],
    [new Date(NOW + 73 * 3_600_000), false],
    [new Date(NOW + 72 * 3_600_000), true],
    [new Date(NOW - 1), true],
  ])('mintDue(%s) → %s', (expiresAt, due) => {
    expect(mintDue(expiresAt, NOW, 72 * 3_600_000)).toBe(due);
  });
});

describe('secret source (reader port)', () => {
  it('decodes the data key and takes the version annotation', async () => {
    const src = secretKeySource(
      {
        read: async () => ({
          data: { KILOCODE_API_KEY: Buffer.from(KEY).toString('base64') },
          annotations: { 'keyroll.dev/version': 'v9' },
        }),
      },
      { namespace: 'ns', name: 'kilo', key: 'KILOCODE_API_KEY' },
      TOKEN,
    );
    expect(await src.current(signal())).toMatchObject({ key: KEY, version: 'v9' });
  });

  it('says which Secret or key is missing', async () => {
    const none = secretKeySource(
      { read: async () => null },
      { namespace: 'ns', name: 'kilo', key: 'K' },
      TOKEN,
    );
    await expect(none.current(signal())).rejects.toThrow('secret ns/kilo key K: the Secret does not exist');
  });
});

describe('content version', () => {
  it('keys by the one shared token, or by the set of distinct tokens whatever their order', () => {
    expect(versionKeyOf([TOKEN, TOKEN])).toBe(TOKEN);
    expect(versionKeyOf(['b-token', 'a-token', 'b-token'])).toBe(versionKeyOf(['a-token', 'b-token']));
    expect(versionKeyOf(['a-token', 'b-token'])).not.toBe(versionKeyOf(['a-token', 'c-token']));
    expect(() => versionKeyOf([])).toThrow(/no controller token/);
  });

  it('differs from the controller fingerprint of the same key under the same token', () => {
    expect(fingerprintValue(TOKEN, KEY)).not.toContain(contentVersion(KEY, TOKEN).slice('hmac:'.length));
  });
});

describe('targets file', () => {
  it('applies defaults', () => {
    const f = parseTargetsFile(
      'targets:\n  - {name: a, url: "http://127.0.0.1:1", token: {env: T}}\n',
      't.yaml',
    );
    expect(f.defaults).toMatchObject({
      envVar: 'KILOCODE_API_KEY',
      delivery: 'restart',
      requestTimeout: 5000,
      rollout: { concurrency: 10, maxUnavailable: 1, failureBudget: 1, paused: false },
    });
  });

  it.each([
    ['{}', /targets: /],
    ['targets: []', /targets: expected at least one target/],
    ['targets:\n  - {name: a, url: "ftp://x", token: {env: T}}', /targets\[0\]\.url: /],
    [
      'targets:\n  - {name: a, url: "http://x", token: {env: T, file: F}}',
      /targets\[0\]\.token: expected exactly one/,
    ],
    [
      'targets:\n  - {name: a, url: "http://x", token: {env: T}}\n  - {name: a, url: "http://y", token: {env: T}}',
      /targets\[1\]\.name: duplicate name 'a'/,
    ],
    [
      'defaults: {delivery: reload}\ntargets:\n  - {name: a, url: "http://x", token: {env: T}}',
      /defaults\.delivery: /,
    ],
    [
      'defaults: {rollout: {maxUnavailable: 0}}\ntargets:\n  - {name: a, url: "http://x", token: {env: T}}',
      /defaults\.rollout\.maxUnavailable: /,
    ],
    [
      'source: {http: {url: "http://k"}}\ntargets:\n  - {name: a, url: "http://x", token: {env: T}}',
      /source/,
    ],
    ['targets: [', /not valid YAML or JSON/],
  ])('%s', (text, message) => {
    expect(() => parseTargetsFile(text, 't.yaml')).toThrow(message);
  });
});
