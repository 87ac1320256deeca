// Fault tests: each injects one failure at the HTTP boundary and checks the pass's end state.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { endWorkspaceTest, Workspace } from './support/cli-harness.ts';
import {
  type FakeController,
  type FakeControllerOptions,
  startFakeController,
  unreachableUrl,
} from './support/fake-controller.ts';

const KEY_A = 'test-key-A-faults-00000000001';
const KEY_B = 'test-key-B-faults-00000000002';
const SOURCE_TOKEN = 'test-token-source-api-0001';

let ws: Workspace;
let fakes: FakeController[] = [];
let servers: Server[] = [];

beforeEach(() => {
  ws = new Workspace();
  fakes = [];
  servers = [];
});

afterEach(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  await endWorkspaceTest(ws, fakes, [KEY_A, KEY_B, SOURCE_TOKEN]);
});

async function target(name: string, opts: Partial<FakeControllerOptions> = {}) {
  const token = `test-token-${name}-00000000`;
  const fake = await startFakeController({ token, key: KEY_A, restartMs: 30, ...opts });
  fakes.push(fake);
  return { name, url: fake.url, token, fake };
}

const FAST = ['--poll', '20ms', '--retries', '3'];
const count = (f: FakeController, method: string) => f.requests.filter((r) => r.method === method).length;

describe('a state read that waits (controller.waitMaxMs)', () => {
  it('a keyroll controller is read once after the patch, held until its new gateway serves; an older one is polled', async () => {
    const waits = await target('waits', { restartMs: 300, waitMaxMs: 20_000 });
    const polled = await target('polled', { restartMs: 300 });
    const pidBefore = waits.fake.snapshot().pid;
    ws.write('key', KEY_B);
    const r = await ws.run('reconcile', [
      '--once',
      '--targets',
      ws.targets([waits, polled]),
      ...FAST,
      '--json',
    ]);
    expect(r.code, r.stdout).toBe(0);
    const afterPatch = (f: FakeController) =>
      f.requests.slice(f.requests.findIndex((q) => q.method === 'POST') + 1);
    // One read after the patch, asking for a gateway other than the one observed, proven at once.
    expect(afterPatch(waits.fake)).toEqual([
      {
        method: 'GET',
        path: '/_kilo/state',
        wait: { ms: expect.stringMatching(/^\d+$/), pid: String(pidBefore) },
      },
    ]);
    expect(waits.fake.snapshot().pid).not.toBe(pidBefore);
    // The controller without waitMaxMs is never asked to wait, and was polled through its restart.
    expect(polled.fake.requests.every((q) => q.wait === undefined)).toBe(true);
    expect(afterPatch(polled.fake).length).toBeGreaterThan(2);
    expect(JSON.parse(r.stdout).targets.map((t: { outcome: string }) => t.outcome)).toEqual([
      'converged',
      'converged',
    ]);
  });
});

describe('faults', () => {
  it('controller unreachable: that target is reported unreachable, the others converge (exit 1)', async () => {
    const ok = await target('ok');
    const file = ws.targets([
      ok,
      { name: 'down', url: await unreachableUrl(), token: 'test-token-down-000000' },
    ]);
    ws.write('key', KEY_B);
    const r = await ws.run('reconcile', ['--once', '--targets', file, ...FAST, '--json']);
    expect(r.code).toBe(1);
    const json = JSON.parse(r.stdout);
    expect(json.targets.map((t: { outcome: string }) => t.outcome)).toEqual(['converged', 'unreachable']);
    expect(json.targets[1].message).toMatch(/cannot observe: GET _kilo\/state failed: ECONNREFUSED/);
  });

  it('500s then success: the patch is retried and the target converges', async () => {
    const t = await target('flaky', { faults: { failFirst: { method: 'POST', count: 2, status: 500 } } });
    ws.write('key', KEY_B);
    const r = await ws.run('reconcile', ['--once', '--targets', ws.targets([t]), ...FAST, '--json']);
    expect(r.code, r.stdout).toBe(0);
    expect(count(t.fake, 'POST')).toBe(3);
    expect(JSON.parse(r.stdout).targets[0].attempts).toBe(3);
    expect(r.stderr).toContain('Patch failed; retrying');
  });

  it('503s on observe then success: observation is retried too', async () => {
    const t = await target('slowstart', { faults: { failFirst: { method: 'GET', count: 2, status: 503 } } });
    ws.write('key', KEY_B);
    const r = await ws.run('reconcile', ['--once', '--targets', ws.targets([t]), ...FAST]);
    expect(r.code, r.stdout).toBe(0);
    expect(count(t.fake, 'POST')).toBe(1);
  });

  it('a 4xx is terminal: one POST, no retry, not converged', async () => {
    const t = await target('strict', {
      faults: { rejectPatch: { status: 400, error: "Key 'KILOCODE_API_KEY' is not patchable" } },
    });
    ws.write('key', KEY_B);
    const r = await ws.run('reconcile', ['--once', '--targets', ws.targets([t]), ...FAST]);
    expect(r.code).toBe(1);
    expect(count(t.fake, 'POST')).toBe(1);
    expect(r.stdout).toMatch(
      /delivery failed after 1 attempt\(s\): POST _kilo\/env\/patch answered HTTP 400: Key 'KILOCODE_API_KEY' is not patchable/,
    );
  });

  it('hanging controller: each call times out, the pass ends, the target is unreachable', async () => {
    const t = await target('hang', { faults: { hang: 'GET' } });
    ws.write('key', KEY_B);
    const file = ws.targets([t], { requestTimeout: '200ms' });
    const started = Date.now();
    const r = await ws.run('reconcile', ['--once', '--targets', file, '--retries', '1', '--json']);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(r.code).toBe(1);
    const res = JSON.parse(r.stdout).targets[0];
    expect(res.outcome).toBe('unreachable');
    expect(res.message).toMatch(/GET _kilo\/state timed out after 200 ms/);
    expect(count(t.fake, 'GET')).toBe(2);
    expect(count(t.fake, 'POST')).toBe(0);
  });

  it('hanging patch: retried under the timeout, then not converged', async () => {
    const t = await target('hangpost', { faults: { hang: 'POST' } });
    ws.write('key', KEY_B);
    const r = await ws.run('reconcile', [
      '--once',
      '--targets',
      ws.targets([t], { requestTimeout: '200ms' }),
      '--retries',
      '1',
    ]);
    expect(r.code).toBe(1);
    expect(count(t.fake, 'POST')).toBe(2);
    expect(r.stdout).toMatch(
      /delivery failed after 2 attempt\(s\): POST _kilo\/env\/patch timed out after 200 ms/,
    );
  });

  it('signaled:true but the state never changes: not converged with the reason, exit 1', async () => {
    const t = await target('cosmetic', { faults: { ignorePatch: true } });
    ws.write('key', KEY_B);
    const r = await ws.run('reconcile', [
      '--once',
      '--targets',
      ws.targets([t]),
      ...FAST,
      '--deadline',
      '500ms',
    ]);
    expect(r.code).toBe(1);
    expect(count(t.fake, 'POST')).toBe(1);
    expect(r.stdout).toMatch(
      /cosmetic: not-converged: not converged within 1 s after the patch \(controller answered signaled:true\): state still shows envHash [0-9a-f]{12} after the patch, desired [0-9a-f]{12}; gateway still runs as pid \d+/,
    );
    expect(r.stdout).toMatch(/0\/1 converged/);
  });

  it('crash-looping gateway: the failure budget stops the rollout, the rest are skipped untouched', async () => {
    const bad = await target('a-crashy', { faults: { crashLoop: true } });
    const rest = [await target('b-next'), await target('c-last')];
    ws.write('key', KEY_B);
    const file = ws.targets([bad, ...rest], {
      rollout: { concurrency: 1, maxUnavailable: 1, failureBudget: 1 },
    });
    const r = await ws.run('reconcile', [
      '--once',
      '--targets',
      file,
      ...FAST,
      '--deadline',
      '600ms',
      '--json',
    ]);
    expect(r.code).toBe(1);
    const json = JSON.parse(r.stdout);
    expect(json.targets.map((t: { outcome: string }) => t.outcome)).toEqual([
      'not-converged',
      'skipped',
      'skipped',
    ]);
    expect(json.targets[0].message).toMatch(/gateway is backoff after \d+ restarts \(last exit 1\)/);
    expect(json.targets[1].message).toBe('failure budget spent (1/1); not delivered');
    for (const t of rest) {
      expect(count(t.fake, 'POST')).toBe(0);
      expect(t.fake.snapshot().restarts).toBe(0);
    }
  });

  it('paused rollout plans only: no POST, exit 1 while there is drift', async () => {
    const t = await target('paused');
    ws.write('key', KEY_B);
    const r = await ws.run('reconcile', [
      '--once',
      '--targets',
      ws.targets([t], { rollout: { paused: true } }),
    ]);
    expect(r.code).toBe(1);
    expect(count(t.fake, 'POST')).toBe(0);
    expect(r.stdout).toMatch(/rollout paused, nothing sent/);
  });
});

describe('mint API failure', () => {
  async function keyApi(mintStatus: number) {
    const seen: string[] = [];
    const server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      if (req.headers.authorization !== `Bearer ${SOURCE_TOKEN}`) {
        res.writeHead(401).end();
        return;
      }
      if (req.method === 'GET') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            key: KEY_A,
            version: 'v1',
            expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
          }),
        );
        return;
      }
      res.writeHead(mintStatus, { 'content-type': 'application/json' });
      res.end(
        mintStatus === 200
          ? JSON.stringify({ token: KEY_B, expiresAt: new Date(Date.now() + 30 * 86_400_000).toISOString() })
          : `{"error":"pepper unavailable for ${KEY_A}"}`,
      );
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
  }

  it('a failing mint changes nothing and says why (exit 2)', async () => {
    const api = await keyApi(500);
    const t = await target('minted');
    ws.env.SOURCE_TOKEN = SOURCE_TOKEN;
    const file = ws.targets(
      [t],
      {},
      { http: { url: `${api.url}/keys/current`, tokenEnv: 'SOURCE_TOKEN', mintUrl: `${api.url}/keys/mint` } },
    );
    const snap = t.fake.snapshot();
    const r = await ws.run('reconcile', ['--once', '--targets', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /mint http:\/\/127\.0\.0\.1:\d+\/keys\/mint: HTTP 500; the current key expires in 1\.0 h; nothing was delivered, the next pass mints again/,
    );
    expect(api.seen).toEqual(['GET /keys/current', 'POST /keys/mint']);
    expect(t.fake.requests).toHaveLength(0);
    expect(t.fake.snapshot()).toEqual(snap);
  });

  it('a working mint near expiry delivers the minted key', async () => {
    const api = await keyApi(200);
    const t = await target('minted-ok');
    ws.env.SOURCE_TOKEN = SOURCE_TOKEN;
    const file = ws.targets(
      [t],
      {},
      { http: { url: `${api.url}/keys/current`, tokenEnv: 'SOURCE_TOKEN', mintUrl: `${api.url}/keys/mint` } },
    );
    const r = await ws.run('reconcile', ['--once', '--targets', file, ...FAST]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(t.fake.patches).toEqual([KEY_B]);
  });
});
