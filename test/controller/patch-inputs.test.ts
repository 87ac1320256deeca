// POST /_kilo/env/patch refuses key values that are not one printable token (src/keys.ts) with
// 400 and KiloClaw's "Value for 'X' must be …" wording, applies nothing, and never echoes the value.
import { afterEach, describe, expect, it } from 'vitest';
import {
  createControllerHandler,
  type GatewayControl,
  listen,
  validatePatch,
} from '../../src/controller/server.ts';
import { SecretRegistry, silentLogger } from '../../src/log.ts';
import { TOKEN } from './helpers.ts';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});

async function serve() {
  const patches: Record<string, string>[] = [];
  const versions: (string | null)[] = [];
  const gateway: GatewayControl = {
    getStats: () => ({
      state: 'running',
      pid: 1,
      startedAt: null,
      uptime: 0,
      restarts: 0,
      requestedRestarts: 0,
      spawns: 1,
      lastExit: null,
      port: 1,
      lastRestart: null,
    }),
    getState: () => 'running',
    start: async () => {},
    stop: async () => {},
    restart: async () => {},
  };
  const handler = createControllerHandler({
    token: TOKEN,
    patchable: ['KILOCODE_API_KEY', 'OTHER_API_KEY'],
    gatewayPort: () => 1,
    lifecycle: () => ({ state: 'ready' }),
    gateway,
    deliver: async (vars) => {
      patches.push(vars);
      return { signaled: true, migratedProfiles: 0 };
    },
    setKeyVersion: (v) => versions.push(v),
    observe: async () => ({}),
    version: () => ({}),
    secrets: new SecretRegistry(),
    log: silentLogger(),
  });
  const h = await listen(handler, { port: 0, host: '127.0.0.1' });
  closers.push(h.close);
  const post = async (body: string, headers: Record<string, string> = {}) => {
    const res = await fetch(`http://127.0.0.1:${h.port}/_kilo/env/patch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...headers },
      body,
      signal: AbortSignal.timeout(5_000),
    });
    return { status: res.status, text: await res.text() };
  };
  return { post, patches, versions };
}

// The four values a fuzzer found applied (issue 13), and their neighbours.
const BAD = [
  ['a space', ' ', 'must not contain whitespace or control characters'],
  ['a tab', '\t', 'must not contain whitespace or control characters'],
  ['two words', 'a b', 'must not contain whitespace or control characters'],
  ['a header injection', 'key\nX-Injected: 1', 'must not contain whitespace or control characters'],
  [
    'a valid key with a trailing newline',
    'test-key-inputs-000001\n',
    'must not contain whitespace or control characters',
  ],
  [
    'a CRLF injection',
    'test-key-inputs-000001\r\nX-Injected: 1',
    'must not contain whitespace or control characters',
  ],
  ['a NUL', 'test-key-inputs\u0000000001', 'must not contain whitespace or control characters'],
  ['non-ASCII', 'test-key-inputs-ключ-0001', 'must be printable ASCII'],
  ['too short', 'short', 'must be 8 to 4096 characters long'],
  ['too long', 'k'.repeat(5_000), 'must be 8 to 4096 characters long'],
] as const;

describe('env/patch key values', () => {
  it.each(BAD)('validatePatch refuses %s', (_name, value, why) => {
    expect(validatePatch(JSON.stringify({ KILOCODE_API_KEY: value }), ['KILOCODE_API_KEY'])).toEqual({
      ok: false,
      error: `Value for 'KILOCODE_API_KEY' ${why}`,
    });
  });

  it('checks every patchable variable, and refuses the whole patch for one bad value', () => {
    const body = JSON.stringify({ KILOCODE_API_KEY: 'test-key-inputs-000001', OTHER_API_KEY: 'a b' });
    expect(validatePatch(body, ['KILOCODE_API_KEY', 'OTHER_API_KEY'])).toEqual({
      ok: false,
      error: "Value for 'OTHER_API_KEY' must not contain whitespace or control characters",
    });
  });

  it('over HTTP: 400 for each, nothing delivered, no version recorded, the value never echoed', async () => {
    const s = await serve();
    for (const [, value, why] of BAD) {
      const r = await s.post(JSON.stringify({ KILOCODE_API_KEY: value }), { 'x-keyroll-key-version': 'v1' });
      expect(r.status).toBe(400);
      expect(JSON.parse(r.text)).toEqual({ error: `Value for 'KILOCODE_API_KEY' ${why}` });
      if (value.trim().length >= 3) expect(r.text).not.toContain(value.trim().slice(0, 12));
    }
    expect(s.patches).toEqual([]);
    expect(s.versions).toEqual([]);
  });

  it('a version label is trimmed of HTTP whitespace only: a trailing no-break space is refused', async () => {
    const s = await serve();
    const body = JSON.stringify({ KILOCODE_API_KEY: 'test-key-inputs-000001' });
    expect((await s.post(body, { 'x-keyroll-key-version': 'v1\u00a0' })).status).toBe(400);
    expect(s.patches).toEqual([]);
    expect((await s.post(body, { 'x-keyroll-key-version': ' v1\t' })).status).toBe(200);
    expect(s.versions).toEqual(['v1']);
  });

  it('real key shapes are applied', async () => {
    const s = await serve();
    const jwt = `eyJhbGciOiJIUzI1NiJ9.${'eyJzdWIiOiJrIn0'.repeat(10)}.sig-_0123456789`;
    for (const key of ['sk-proj-Ab1_-test-inputs-0000000000', jwt]) {
      const r = await s.post(JSON.stringify({ KILOCODE_API_KEY: key }));
      expect(r.status).toBe(200);
    }
    expect(s.patches.map((p) => p.KILOCODE_API_KEY?.length)).toEqual([35, jwt.length]);
  });
});
