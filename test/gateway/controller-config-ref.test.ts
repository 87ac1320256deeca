// File mode where openclaw.json also holds a config-level ref: the controller must call the real
// gateway's `secrets.reload` (env-borne port and token) after replacing the key file.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeUpstream } from '../support/fake-upstream.ts';
import { chat, freePort } from '../support/http.ts';
import { killAllTracked, spawnTracked } from '../support/processes.ts';
import { createSandbox, node24, REPO_ROOT } from '../support/sandbox.ts';

const TOKEN = 'test-token-gw-cfgref-0123456789';
const KEY_A = 'test-key-A-cfgref-aaaaaaaa';
const KEY_B = 'test-key-B-cfgref-bbbbbbbb';
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await killAllTracked();
});

describe('keyroll controller, file mode with a config-level ref (real OpenClaw)', () => {
  it('replaces the key file and reloads the gateway secrets; requests carry B', async () => {
    const sb = createSandbox('keyroll-ctl-cfgref-');
    const upstream = await startFakeUpstream({ keys: [KEY_A] });
    const port = await freePort();
    const gatewayPort = await freePort();
    mkdirSync(join(sb.dir, 'keys'), { mode: 0o700 });
    const keyFile = join(sb.dir, 'keys', 'kilocode.key');
    const proc = spawnTracked(
      node24(),
      [
        join(REPO_ROOT, 'bin', 'keyroll.mjs'),
        'controller',
        '--state-dir',
        sb.stateDir,
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--gateway-port',
        String(gatewayPort),
        '--provider-base-url',
        upstream.baseUrl,
        '--enable-chat-completions',
        '--delivery',
        'file',
        '--key-file',
        keyFile,
        '--ready-timeout-ms',
        '400000',
      ],
      {
        name: 'keyroll-controller',
        cwd: sb.dir,
        env: sb.env({ OPENCLAW_GATEWAY_TOKEN: TOKEN, KILOCODE_API_KEY: KEY_A }),
      },
    );
    cleanups.push(async () => {
      await proc.stop('SIGTERM', 20_000, { group: false });
      const all = proc.lines.join('\n');
      for (const s of [TOKEN, KEY_A, KEY_B]) expect(all.includes(s)).toBe(false);
      await upstream.close();
      sb.cleanup();
    });
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`http://127.0.0.1:${port}${path}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(120_000),
      });
      return {
        status: res.status,
        body: (await res.json()) as { gateway?: { ready: boolean; state: string } },
      };
    };
    const waitReady = async () => {
      const deadline = Date.now() + 400_000;
      for (;;) {
        const r = await call('GET', '/_kilo/state').catch(() => null);
        if (r?.body.gateway?.ready && r.body.gateway.state === 'running') return;
        if (Date.now() > deadline) throw new Error(`not ready\n${proc.lines.slice(-20).join('\n')}`);
        await new Promise((res) => setTimeout(res, 200));
      }
    };
    await waitReady();
    // Add the config-level ref while the gateway is stopped, then start it again.
    expect((await call('POST', '/_kilo/gateway/stop')).status).toBe(200);
    const cfgPath = join(sb.stateDir, 'openclaw.json');
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
    cfg.models.providers.kilocode.apiKey = { source: 'file', provider: 'kilofile', id: 'value' };
    writeFileSync(cfgPath, JSON.stringify(cfg, null, 2), { mode: 0o600 });
    expect((await call('POST', '/_kilo/gateway/start')).status).toBe(200);
    await waitReady();
    expect((await chat(gatewayPort, TOKEN)).status).toBe(200);

    upstream.setKeys([KEY_B]);
    const patch = await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEY_B });
    expect(patch.status).toBe(200);
    const reload = proc.lines.find((l) => l.includes('Asked the gateway to reload its secrets'));
    expect(reload, proc.lines.slice(-30).join('\n')).toBeDefined();
    expect(JSON.parse(reload!).ok).toBe(true);
    const r = await chat(gatewayPort, TOKEN);
    expect(r.status).toBe(200);
    expect(upstream.chatRequests().at(-1)?.key).toBe(KEY_B);
  }, 900_000);
});
