// The controller with --purge-plaintext-backups: bootstrap migrates, verifies and purges the
// credential backups holding a plaintext key; /_kilo/state counts the backups that remain (and
// the reconciler's schema reads the field). Without the flag the backups stay, and are counted.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createProfilePort } from '../../src/controller/profiles-adapter.ts';
import { observedOrThrow } from '../support/observed.ts';
import { seedStandInState } from '../support/stand-in-gateway.ts';
import { startTestController, TOKEN, waitFor } from './helpers.ts';

const KEY = 'test-key-A-purge-0000000001';
const OLD_KEY = 'test-key-old-purge-0000000002';

async function run(purge: boolean) {
  const backupIn = (stateDir: string) =>
    join(stateDir, 'agents', 'main', 'agent', 'auth-profiles.json.sqlite-import.1795478361679.bak');
  const c = await startTestController({
    prefix: 'keyroll-purge-',
    env: { OPENCLAW_GATEWAY_TOKEN: TOKEN, KILOCODE_API_KEY: KEY },
    seed: ({ stateDir }) => {
      seedStandInState(stateDir, {
        baseUrl: 'http://127.0.0.1:9/v1',
        profile: { key: OLD_KEY },
        store: 'json',
      });
      writeFileSync(
        backupIn(stateDir),
        JSON.stringify({
          version: 1,
          profiles: { 'kilocode:default': { type: 'api_key', provider: 'kilocode', key: OLD_KEY } },
        }),
        { mode: 0o644 },
      );
    },
    flags: purge ? ['--purge-plaintext-backups'] : [],
    profiles: ({ stateDir, config, log }) =>
      createProfilePort({
        stateDir,
        provider: 'kilocode',
        target: { to: 'env', envVar: 'KILOCODE_API_KEY' },
        log,
        purgePlaintextBackups: config.purgePlaintextBackups,
      }),
  });
  const { ctl, config, lines } = c;
  const backup = backupIn(c.stateDir);
  try {
    expect(config.purgePlaintextBackups).toBe(purge);
    await ctl.bootstrapped;
    const state = await waitFor(
      async () => {
        const r = await fetch(`http://127.0.0.1:${ctl.port}/_kilo/state`, {
          headers: { authorization: `Bearer ${TOKEN}` },
        });
        const body = (await r.json()) as Record<string, unknown> & { gateway: { ready: boolean } };
        return body.gateway.ready ? body : null;
      },
      15_000,
      'gateway ready',
    );
    return { state, backupExists: existsSync(backup), logs: lines.join('') };
  } finally {
    await c.stop();
  }
}

describe('controller --purge-plaintext-backups', () => {
  it('without the flag: the backup stays and /_kilo/state counts it', async () => {
    const r = await run(false);
    expect(r.backupExists).toBe(true);
    expect(r.state.backups).toEqual({ total: 1, plaintext: 1 });
    expect(observedOrThrow(r.state).backups).toEqual({ total: 1, plaintext: 1 });
    expect(r.state.profiles).toEqual([
      { agentId: 'main', store: 'json', profileId: 'kilocode:default', form: 'keyRef-env' },
    ]);
  }, 30_000);

  it('with the flag: bootstrap migrates, verifies, purges; /_kilo/state shows none left', async () => {
    const r = await run(true);
    expect(r.backupExists).toBe(false);
    expect(r.state.backups).toEqual({ total: 0, plaintext: 0 });
    expect(r.logs).toContain('"backupsPurged":1');
    expect(r.logs).not.toContain(OLD_KEY);
    expect(r.logs).not.toContain(KEY);
  }, 30_000);

  it('the reconciler tolerates a missing or malformed backups field', () => {
    const base = {
      controller: { state: 'ready' },
      gateway: { state: 'running' },
      key: { envHash: null },
      profiles: [],
    };
    expect(observedOrThrow(base).backups).toBeUndefined();
    expect(observedOrThrow({ ...base, backups: { plaintext: 'many' } }).backups).toBeNull();
  });
});
