// The controller's own credential: where it comes from (KEYROLL_CONTROLLER_TOKEN, a 0400 token
// file, or — KiloClaw compatibility — OPENCLAW_GATEWAY_TOKEN with one warning), that no child ever
// gets it, and a token rotation: the previous and the current token are both accepted during the
// overlap, and a reconciler still on the previous token sees its desired fingerprints (no
// re-delivery, no 401), then switches to the current one without a single 401.
import { chmodSync, chownSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/cli/usage.ts';
import { parseControllerConfig, readControllerTokenFile } from '../../src/controller/config.ts';
import { openclawEnv } from '../../src/controller/openclaw-cli.ts';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { httpControllerClient } from '../../src/reconcile/controller-client.ts';
import { desired } from '../../src/reconcile/desired.ts';
import { needsPatch, plan } from '../../src/reconcile/plan.ts';
import { startTestController, suiteCapture, tempDir, waitFor } from './helpers.ts';

// biome-ignore lint/suspicious/noExplicitAny: responses are read field by field and asserted on.
type Json = Record<string, any>;

const CURRENT = 'test-ctl-token-current-0123456789abcdef';
const PREVIOUS = 'test-ctl-token-previous-0123456789abcdef';
const GATEWAY = 'test-gw-token-credentials-0123456789abc';
const KEY_A = 'test-key-A-credentials-aaaaaaaa';
const KEY_B = 'test-key-B-credentials-bbbbbbbb';

const { captured, cleanups } = suiteCapture([CURRENT, PREVIOUS, GATEWAY, KEY_A, KEY_B], 500);

describe('config: the controller token', () => {
  const base = { HOME: '/home/x', OPENCLAW_GATEWAY_TOKEN: GATEWAY };

  it('KEYROLL_CONTROLLER_TOKEN is the token; the gateway token is only the gateway’s', () => {
    const c = parseControllerConfig([], {
      ...base,
      KEYROLL_CONTROLLER_TOKEN: CURRENT,
      KEYROLL_CONTROLLER_TOKEN_PREVIOUS: PREVIOUS,
    });
    expect(c).toMatchObject({
      token: CURRENT,
      tokenSource: 'env',
      previousToken: PREVIOUS,
      gatewayToken: GATEWAY,
      gatewayUid: null,
      gatewayGid: null,
    });
  });

  it('only OPENCLAW_GATEWAY_TOKEN: the KiloClaw fallback', () => {
    expect(parseControllerConfig([], base)).toMatchObject({
      token: GATEWAY,
      tokenSource: 'gateway-token',
      previousToken: null,
      gatewayToken: GATEWAY,
    });
  });

  it('--controller-token-file: one line, owned by this user, 0400 or 0600; anything looser is refused', () => {
    const { dir, cleanup } = tempDir('keyroll-token-file-');
    cleanups.push(cleanup);
    const file = join(dir, 'token');
    writeFileSync(file, `${CURRENT}\n`, { mode: 0o400 });
    expect(parseControllerConfig(['--controller-token-file', file], base)).toMatchObject({
      token: CURRENT,
      tokenSource: 'file',
    });
    chmodSync(file, 0o600);
    expect(readControllerTokenFile(file)).toBe(CURRENT);
    const refused: [() => void, RegExp][] = [];
    // A Kubernetes Secret volume with fsGroup set is 0440: the gateway's group could read it.
    refused.push([() => chmodSync(file, 0o440), /readable by group or others \(mode 440\); make it 0400/]);
    refused.push([() => chmodSync(file, 0o404), /readable by group or others/]);
    for (const [make, message] of refused) {
      make();
      expect(() => parseControllerConfig(['--controller-token-file', file], base)).toThrow(message);
    }
    chmodSync(file, 0o400);
    if (process.getuid?.() === 0) {
      chownSync(file, 4242, 4242);
      expect(() => readControllerTokenFile(file)).toThrow(/must be owned by the controller's user \(uid 0\)/);
      chownSync(file, 0, 0);
    }
    expect(() => readControllerTokenFile(join(dir, 'missing'))).toThrow(/cannot read .*\(ENOENT\)/);
    expect(() => readControllerTokenFile(dir)).toThrow(/is not a regular file/);
    writeFileSync(join(dir, 'short'), 'short-secret\n', { mode: 0o400 });
    const messages: string[] = [];
    try {
      readControllerTokenFile(join(dir, 'short'));
    } catch (err) {
      messages.push(String(err));
    }
    expect(messages[0]).toMatch(/must hold one token of at least 16 characters/);
    expect(messages[0]).not.toContain('short-secret');
    expect(() =>
      parseControllerConfig(['--controller-token-file', file], {
        ...base,
        KEYROLL_CONTROLLER_TOKEN: CURRENT,
      }),
    ).toThrow(/set KEYROLL_CONTROLLER_TOKEN or --controller-token-file, not both/);
  });

  it.each([
    [{ KEYROLL_CONTROLLER_TOKEN: GATEWAY }, [], /must differ from OPENCLAW_GATEWAY_TOKEN/],
    [
      { KEYROLL_CONTROLLER_TOKEN: CURRENT },
      ['--gateway-uid', '10001'],
      /--gateway-uid and --gateway-gid go together/,
    ],
    [
      { KEYROLL_CONTROLLER_TOKEN: CURRENT },
      ['--gateway-uid', 'nobody', '--gateway-gid', '1'],
      /--gateway-uid must be a numeric id/,
    ],
    [
      { KEYROLL_CONTROLLER_TOKEN: CURRENT },
      ['--patchable', 'KILOCODE_API_KEY,KEYROLL_CONTROLLER_TOKEN'],
      /--patchable must not name the controller token/,
    ],
  ] as const)('%j %j → a UsageError that quotes no token', (extraEnv, argv, message) => {
    let err: unknown;
    try {
      parseControllerConfig([...argv], { ...base, ...extraEnv });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect(String(err)).toMatch(message);
    for (const s of [CURRENT, PREVIOUS, GATEWAY]) expect(String(err)).not.toContain(s);
  });

  it('--require-proxy-token needs the gateway token (clients must never hold the controller token)', () => {
    expect(() =>
      parseControllerConfig(['--require-proxy-token'], { HOME: '/h', KEYROLL_CONTROLLER_TOKEN: CURRENT }),
    ).toThrow(/--require-proxy-token needs OPENCLAW_GATEWAY_TOKEN/);
    expect(parseControllerConfig(['--gateway-uid', '10001', '--gateway-gid', '10002'], base)).toMatchObject({
      gatewayUid: 10001,
      gatewayGid: 10002,
    });
  });

  it('a previous token equal to the current one is no second token (step 1 of a rotation)', () => {
    expect(
      parseControllerConfig([], {
        ...base,
        KEYROLL_CONTROLLER_TOKEN: CURRENT,
        KEYROLL_CONTROLLER_TOKEN_PREVIOUS: CURRENT,
      }),
    ).toMatchObject({ token: CURRENT, previousToken: null });
  });

  it('the previous token may be the gateway token (the way out of the fallback)', () => {
    expect(
      parseControllerConfig([], {
        ...base,
        KEYROLL_CONTROLLER_TOKEN: CURRENT,
        KEYROLL_CONTROLLER_TOKEN_PREVIOUS: GATEWAY,
      }),
    ).toMatchObject({ token: CURRENT, previousToken: GATEWAY });
  });
});

describe('the child env', () => {
  it('never holds the controller tokens, by name or under another name; keeps the gateway token', () => {
    const env = openclawEnv(
      {
        PATH: '/usr/bin',
        KEYROLL_CONTROLLER_TOKEN: CURRENT,
        KEYROLL_CONTROLLER_TOKEN_PREVIOUS: PREVIOUS,
        COPIED_BY_MISTAKE: CURRENT,
        OPENCLAW_GATEWAY_TOKEN: GATEWAY,
        KILOCODE_API_KEY: KEY_A,
      },
      { gatewayPort: 3001, stateDir: '/s', withheld: [CURRENT, PREVIOUS] },
    );
    expect(Object.values(env)).not.toContain(CURRENT);
    expect(Object.values(env)).not.toContain(PREVIOUS);
    expect(Object.keys(env).filter((k) => k.startsWith('KEYROLL_'))).toEqual([]);
    expect(env).toMatchObject({ OPENCLAW_GATEWAY_TOKEN: GATEWAY, KILOCODE_API_KEY: KEY_A });
  });
});

async function setup(env: Record<string, string>, flags: string[] = []) {
  const t = await startTestController({
    prefix: 'keyroll-cred-',
    gateway: 'fixture',
    env: { KILOCODE_API_KEY: KEY_A, ...env },
    flags: ['--admin-port', '0', ...flags],
    captured,
  });
  cleanups.push(() => t.stop());
  const { ctl, config, lines, envStore: store } = t;
  const admin = `http://127.0.0.1:${ctl.adminPort}`;
  const call = async (method: string, path: string, bearer: string | null, body?: unknown) => {
    const res = await fetch(admin + path, {
      method,
      headers: {
        ...(bearer === null ? {} : { authorization: `Bearer ${bearer}` }),
        'content-type': 'application/json',
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    captured.push(text);
    return { status: res.status, body: JSON.parse(text) as Json };
  };
  await ctl.bootstrapped;
  const running = await waitFor(
    async () => {
      const s = (await call('GET', '/_kilo/state', config.token)).body;
      return s.gateway?.state === 'running' && s.gateway.ready ? s : null;
    },
    15_000,
    'gateway running',
  );
  return { ctl, call, admin, lines, store, running };
}

/** The env a process really runs with (its /proc entry), as name → value. */
function procEnviron(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
    const i = kv.indexOf('=');
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

describe('controller token rotation (stand-in child)', () => {
  it('old and new token both accepted during the overlap; a reconciler on either sees no drift; the switch costs no 401 and no restart', async () => {
    const { ctl, call, admin, running } = await setup({
      KEYROLL_CONTROLLER_TOKEN: CURRENT,
      KEYROLL_CONTROLLER_TOKEN_PREVIOUS: PREVIOUS,
      OPENCLAW_GATEWAY_TOKEN: GATEWAY,
    });
    // The child's real env: the gateway token, no controller token under any name.
    const childEnv = procEnviron(running.gateway.pid);
    expect(childEnv.OPENCLAW_GATEWAY_TOKEN).toBe(GATEWAY);
    expect(Object.values(childEnv)).not.toContain(CURRENT);
    expect(Object.values(childEnv)).not.toContain(PREVIOUS);
    // And the controller's own env store no longer has them either.
    expect(ctl.supervisor.childEnv()).not.toHaveProperty('KEYROLL_CONTROLLER_TOKEN');

    // Accepted: current and previous. Refused: the gateway token, no token, a wrong one.
    for (const t of [CURRENT, PREVIOUS]) expect((await call('GET', '/_kilo/state', t)).status).toBe(200);
    for (const t of [GATEWAY, null, 'test-not-a-token-000000000000']) {
      expect((await call('GET', '/_kilo/state', t)).status).toBe(401);
      expect((await call('POST', '/_kilo/env/patch', t, { KILOCODE_API_KEY: KEY_B })).status).toBe(401);
    }

    // A reconciler (the operator's own client, plan and fingerprints) on each token in turn:
    // previous (Secret not switched yet), then current (switched).
    const spec = { envVar: 'KILOCODE_API_KEY', delivery: 'restart' as const };
    const key = { key: KEY_A, version: 'v1' };
    for (const token of [PREVIOUS, CURRENT]) {
      const client = httpControllerClient({ url: admin, token, timeoutMs: 5_000 });
      const observed = await client.getState(AbortSignal.timeout(5_000));
      // Keyed with the token it presented: the fingerprint it computes itself.
      expect(observed.key.envHash).toBe(fingerprintEnv(token, { KILOCODE_API_KEY: KEY_A }));
      const actions = plan(desired(spec, key, token), observed);
      expect(needsPatch(actions), JSON.stringify(actions)).toBe(false);
    }
    expect((await call('GET', '/_kilo/gateway/status', CURRENT)).body).toMatchObject({
      requestedRestarts: 0,
      spawns: 1,
    });
    // A patch with the previous token is applied during the overlap.
    const patched = await call('POST', '/_kilo/env/patch', PREVIOUS, { KILOCODE_API_KEY: KEY_B });
    expect(patched.status).toBe(200);
    const after = await waitFor(
      async () => {
        const s = (await call('GET', '/_kilo/state', CURRENT)).body;
        return s.gateway.ready && s.gateway.pid !== running.gateway.pid ? s : null;
      },
      15_000,
      'restart with B',
    );
    expect(after.key.envHash).toBe(fingerprintEnv(CURRENT, { KILOCODE_API_KEY: KEY_B }));
    expect(Object.values(procEnviron(after.gateway.pid))).not.toContain(CURRENT);
  });

  it('only OPENCLAW_GATEWAY_TOKEN: KiloClaw behaviour (it opens /_kilo/*, the gateway keeps it), one warning', async () => {
    const { call, lines, running } = await setup({ OPENCLAW_GATEWAY_TOKEN: GATEWAY });
    expect((await call('GET', '/_kilo/state', GATEWAY)).status).toBe(200);
    expect(procEnviron(running.gateway.pid).OPENCLAW_GATEWAY_TOKEN).toBe(GATEWAY);
    await call('POST', '/_kilo/gateway/restart', GATEWAY);
    const warnings = lines.filter((l) => l.includes('No controller token set'));
    expect(warnings).toHaveLength(1);
    expect(JSON.parse(warnings[0]!)).toMatchObject({ level: 'warn' });
  });

  it('a dedicated token with the gateway as the controller’s own user: a warning says /proc exposes it', async () => {
    const { lines } = await setup({ KEYROLL_CONTROLLER_TOKEN: CURRENT, OPENCLAW_GATEWAY_TOKEN: GATEWAY });
    expect(lines.filter((l) => l.includes('The gateway runs as the controller user'))).toHaveLength(1);
    expect(lines.filter((l) => l.includes('No controller token set'))).toHaveLength(0);
  });
});
