// A JSON5 openclaw.json (OpenClaw accepts it): the real controller binary bootstraps, edits the
// config into JSON OpenClaw still reads, starts the (stand-in) gateway, and no fragment of the
// file — a fake key sits right before the first comment — reaches any log line.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import JSON5 from 'json5';
import { afterAll, describe, expect, it } from 'vitest';
import { controllerFlags } from '../support/controller-process.ts';
import { startFakeUpstream } from '../support/fake-upstream.ts';
import { freePort } from '../support/http.ts';
import { killAllTracked, spawnTracked } from '../support/processes.ts';
import { node24, REPO_ROOT } from '../support/sandbox.ts';
import { standInPath } from '../support/stand-in-gateway.ts';
import { TOKEN, tempDir, waitFor } from './helpers.ts';

const KEY = 'test-key-A-json5-0000000001';
// V8's JSON.parse stops at the single quote before this key and quotes what follows it
// (`Unexpected token ''', ...""apiKey": 'sk-test-j"... is not valid JSON`).
const CONFIG_KEY = 'sk-test-json5-config-fake-key-0001';
const JSON5_CONFIG = `{ "models": { "providers": { "custom": { "apiKey": '${CONFIG_KEY}', // not kilocode's
        baseUrl: 'https://example.invalid/v1', // unquoted key
      },
    },
  },
  /* a block comment */
  gateway: { mode: 'local', },
}
`;

afterAll(async () => {
  await killAllTracked();
});

describe('controller with a JSON5 openclaw.json', () => {
  it('bootstraps, starts the gateway, keeps the settings, and logs no fragment of the file', async () => {
    const { dir, cleanup } = tempDir('keyroll-json5-');
    const upstream = await startFakeUpstream({ keys: [KEY] });
    try {
      const stateDir = join(dir, 'state');
      mkdirSync(stateDir, { recursive: true });
      const configPath = join(stateDir, 'openclaw.json');
      writeFileSync(configPath, JSON5_CONFIG, { mode: 0o600 });
      const [port, gatewayPort] = [await freePort(), await freePort()];
      const controller = spawnTracked(
        node24(),
        [
          join(REPO_ROOT, 'bin', 'keyroll.mjs'),
          'controller',
          ...controllerFlags({ stateDir, port, gatewayPort, gatewayCmd: `'${node24()}' '${standInPath()}'` }),
          '--provider-base-url',
          upstream.baseUrl,
          '--stop-timeout',
          '3000ms',
        ],
        {
          name: 'controller-json5',
          env: {
            PATH: process.env.PATH ?? '/usr/bin:/bin',
            HOME: dir,
            TMPDIR: dir,
            OPENCLAW_STATE_DIR: stateDir,
            OPENCLAW_GATEWAY_TOKEN: TOKEN,
            KILOCODE_API_KEY: KEY,
            STANDIN_READY_DELAY_MS: '50',
            KEYROLL_LOG_LEVEL: 'debug',
          },
        },
      );
      const base = `http://127.0.0.1:${port}`;
      const health = await waitFor(
        async () => {
          if (controller.exitInfo()) throw new Error('controller exited');
          const r = await fetch(`${base}/_kilo/health`).catch(() => null);
          const body = r ? ((await r.json()) as { state: string }) : null;
          return body && (body.state === 'ready' || body.state === 'degraded') ? body : null;
        },
        30_000,
        'bootstrap to end',
      );
      expect(health).toEqual({ status: 'ok', state: 'ready' });
      type State = { gateway: { state: string; pid: number | null; ready: boolean } };
      const state = await waitFor(
        async () => {
          const r = await fetch(`${base}/_kilo/state`, { headers: { authorization: `Bearer ${TOKEN}` } });
          const s = (await r.json()) as State;
          return s.gateway.ready && s.gateway.state === 'running' ? s : null;
        },
        20_000,
        'the gateway to be ready',
      );
      expect(state.gateway).toMatchObject({ state: 'running', ready: true });
      expect(state.gateway.pid).toBeGreaterThan(0);

      // Rewritten as plain JSON (valid JSON5): every setting kept, the controller's added.
      const written = readFileSync(configPath, 'utf8');
      const doc = JSON.parse(written);
      expect(doc.models.providers.custom).toEqual({
        apiKey: CONFIG_KEY,
        baseUrl: 'https://example.invalid/v1',
      });
      expect(doc.models.providers.kilocode.baseUrl).toBe(upstream.baseUrl);
      expect(doc.gateway).toEqual({ mode: 'local' });
      expect(doc.update.checkOnStart).toBe(false);
      expect(JSON5.parse(written)).toEqual(doc);

      await controller.stop('SIGTERM', 10_000);
      const logs = controller.lines.join('\n');
      expect(logs).toContain('Controller ready');
      // No 8-character window of the key, and none of the comments, in any line.
      for (let i = 0; i + 8 <= CONFIG_KEY.length; i++) {
        expect(logs.includes(CONFIG_KEY.slice(i, i + 8)), 'a fragment of openclaw.json was logged').toBe(
          false,
        );
      }
      for (const fragment of ['not kilocode', 'block comment', 'unquoted key', 'example.invalid']) {
        expect(logs).not.toContain(fragment);
      }
    } finally {
      await upstream.close();
      cleanup();
    }
  }, 60_000);
});
