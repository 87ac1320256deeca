// Delivery decisions against fakes: restart mode restarts (never reload/SIGUSR1), file mode writes.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Delivery, type DeliveryDeps } from '../../src/controller/delivery.ts';
import { EnvStore } from '../../src/controller/env-store.ts';
import type { StoreLayout } from '../../src/controller/profile-port.ts';
import { SecretRegistry, silentLogger } from '../../src/log.ts';
import { TOKEN, tempDir } from './helpers.ts';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function make(mode: 'restart' | 'file', live: boolean, reload = true) {
  const { dir, cleanup } = tempDir('keyroll-deliv-');
  cleanups.push(cleanup);
  const calls: string[] = [];
  const layouts: StoreLayout[][] = [];
  const env = new EnvStore({ KILOCODE_API_KEY: 'test-key-old-000000', KILO_API_KEY: 'test-key-old-000000' });
  const secrets = new SecretRegistry();
  const deps: DeliveryDeps = {
    mode,
    keyVar: 'KILOCODE_API_KEY',
    keyFile: join(dir, 'kilocode.key'),
    token: TOKEN,
    env,
    supervisor: {
      hasLiveChild: () => live,
      childEnv: () => (live ? {} : null),
      requestRestart: async () => {
        calls.push('restart');
      },
    },
    profiles: {
      migrate: async (l) => {
        layouts.push(l ?? []);
        return { profilesMigrated: 1, storesFailed: 0, backupsHardened: 0 };
      },
      scan: async () => [],
      hardenBackups: async () => 0,
    },
    secrets,
    log: silentLogger(),
    needsReload: async () => reload,
    reloadSecrets: async () => {
      calls.push('reload');
      return true;
    },
  };
  return { delivery: new Delivery(deps), calls, layouts, env, secrets, keyFile: deps.keyFile! };
}

describe('delivery', () => {
  it('restart mode: a live gateway is restarted, never reloaded; JSON stores migrate now', async () => {
    const { delivery, calls, layouts, env, secrets } = make('restart', true);
    const r = await delivery.deliver({ KILOCODE_API_KEY: 'test-key-new-111111' });
    expect(r).toEqual({ signaled: true, migratedProfiles: 1 });
    expect(calls).toEqual(['restart']); // a regression to `secrets reload` (or no restart) fails here
    expect(layouts).toEqual([['json']]); // SQLite waits for the restart's pre-spawn hook
    expect(env.get('KILOCODE_API_KEY')).toBe('test-key-new-111111');
    expect(env.get('KILO_API_KEY')).toBe('test-key-new-111111'); // the alias follows
    expect(secrets.scrub('x test-key-new-111111 y')).toBe('x [REDACTED] y');
  });

  it('restart mode without a child: nothing to signal; every layout migrates now', async () => {
    const { delivery, calls, layouts } = make('restart', false);
    expect(await delivery.deliver({ KILOCODE_API_KEY: 'test-key-new-222222' })).toEqual({
      signaled: false,
      migratedProfiles: 1,
    });
    expect(calls).toEqual([]);
    expect(layouts).toEqual([['json', 'sqlite-agent', 'sqlite-state', 'config']]);
  });

  it('file mode: the key file is replaced (0600) before the answer; reloaded only when the gateway needs it', async () => {
    const { delivery, calls, keyFile } = make('file', true, true);
    expect((await delivery.deliver({ KILOCODE_API_KEY: 'test-key-new-333333' })).signaled).toBe(true);
    expect(readFileSync(keyFile, 'utf8')).toBe('test-key-new-333333');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(calls).toEqual(['reload']);
    const noRef = make('file', true, false);
    await noRef.delivery.deliver({ KILOCODE_API_KEY: 'test-key-new-444444' });
    expect(noRef.calls).toEqual([]); // no restart, no reload: the profile ref is re-read per request
    // No gateway running: nothing to reload (the next start reads the file).
    const stopped = make('file', false, true);
    await stopped.delivery.deliver({ KILOCODE_API_KEY: 'test-key-new-555555' });
    expect(stopped.calls).toEqual([]);
    expect(readFileSync(stopped.keyFile, 'utf8')).toBe('test-key-new-555555');
  });
});
