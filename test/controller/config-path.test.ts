// OPENCLAW_CONFIG_PATH (issue 15): when the gateway's env puts openclaw.json outside the state dir,
// `keyroll controller` scans and migrates that file — the one the gateway reads — not
// `<state dir>/openclaw.json`. A `keyroll controller` process in front of the stand-in gateway,
// whose config holds a plaintext config-level key (which OpenClaw would send before the env key).
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { spawnControllerProcess } from '../support/controller-process.ts';
import { type FakeUpstream, keyHash, startFakeUpstream } from '../support/fake-upstream.ts';
import { killAllTracked } from '../support/processes.ts';
import { createSandbox } from '../support/sandbox.ts';
import { seedStandInState } from '../support/stand-in-gateway.ts';

const GATEWAY_TOKEN = 'test-token-cfgpath-gateway-0123456789ab';
const CONTROLLER_TOKEN = 'test-token-cfgpath-controller-012345678';
/** The plaintext key in openclaw.json: must never reach the upstream again. */
const KEY_PLAIN = 'test-key-plain-cfgpath-pppppppppppp';
/** KILOCODE_API_KEY, the key the controller delivers. */
const KEY_ENV = 'test-key-env-cfgpath-eeeeeeeeeeeeee';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await killAllTracked();
});

describe('OPENCLAW_CONFIG_PATH outside the state dir', () => {
  it('the controller migrates and reports the config the gateway reads; the upstream sees the env key', async () => {
    const upstream: FakeUpstream = await startFakeUpstream({ keys: [KEY_PLAIN, KEY_ENV] });
    cleanups.push(() => upstream.close());
    const elsewhere = createSandbox('keyroll-cfgpath-');
    cleanups.push(() => elsewhere.cleanup());
    mkdirSync(elsewhere.stateDir, { recursive: true, mode: 0o700 });
    // The stand-in's config (provider, gateway auth) with a literal config-level key, in a
    // directory that is not the controller's state dir.
    seedStandInState(elsewhere.stateDir, {
      baseUrl: upstream.baseUrl,
      profile: null,
      configApiKey: KEY_PLAIN,
    });
    const cfgFile = join(elsewhere.stateDir, 'openclaw.json');

    const ctl = await spawnControllerProcess({
      name: 'cfgpath',
      token: GATEWAY_TOKEN,
      controllerToken: CONTROLLER_TOKEN,
      key: KEY_ENV,
      upstreamBaseUrl: upstream.baseUrl,
      env: { OPENCLAW_CONFIG_PATH: cfgFile },
    });
    cleanups.push(() => ctl.stop());
    const state = await ctl.waitServing();

    // Migrated where the gateway reads it: an env ref in place of the literal key.
    const cfg = JSON.parse(readFileSync(cfgFile, 'utf8'));
    expect(cfg.models.providers.kilocode.apiKey).toEqual({
      source: 'env',
      provider: 'default',
      id: 'KILOCODE_API_KEY',
    });
    expect(readFileSync(cfgFile, 'utf8')).not.toContain(KEY_PLAIN);
    // …and reported from there.
    expect(state.profiles).toContainEqual(expect.objectContaining({ store: 'config', form: 'keyRef-env' }));
    // The state dir's own openclaw.json, if the controller wrote one, holds no key either.
    const own = join(ctl.sandbox.stateDir, 'openclaw.json');
    if (existsSync(own)) expect(readFileSync(own, 'utf8')).not.toContain(KEY_PLAIN);

    const res = await fetch(`${ctl.pub}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${GATEWAY_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'hi' }] }),
      signal: AbortSignal.timeout(20_000),
    });
    expect(res.status).toBe(200);
    await res.text();
    const seen = upstream.chatRequests().map((r) => r.keyHash);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((h) => h === keyHash(KEY_ENV))).toBe(true);

    const output = ctl.proc.lines.join('\n');
    for (const secret of [KEY_PLAIN, KEY_ENV, GATEWAY_TOKEN, CONTROLLER_TOKEN]) {
      expect(output.includes(secret), 'a secret in the controller output').toBe(false);
    }
  }, 60_000);
});
