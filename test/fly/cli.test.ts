// `keyroll fly` as a command: usage errors name the flag and exit 2, a Fly API error exits 2
// without the token, and `--dry-run` only reads (the fake Fly API and the controllers see GETs only).
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APP, envHash, FlyFleet, KEYS, secretsIn } from './support/loop-fleet.ts';

const fleet = new FlyFleet();

beforeAll(async () => {
  await fleet.start(2, KEYS.A);
  fleet.addStopped('s01', KEYS.A);
}, 120_000);

afterAll(async () => {
  await fleet.stop();
}, 60_000);

describe('keyroll fly: flags and configuration', () => {
  it('--help prints the usage and exits 0', async () => {
    const r = await fleet.run(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Usage: keyroll fly -a APP/);
    for (const flag of [
      '--once',
      '--dry-run',
      '--max-changes',
      '--pass-deadline',
      '--interval',
      '--jitter',
    ]) {
      expect(r.stdout).toContain(flag);
    }
  });

  it.each([
    [['--app', 'Bad_App'], {}, /--app: expected a Fly app name/],
    [['--max-changes', '0'], {}, /--max-changes: expected at least 1/],
    [['--interval', 'soon'], {}, /--interval: expected a duration/],
    [['--interval', '300'], {}, /--interval: expected a duration .*no unit: write 300s/],
    [['--poll=-5s'], {}, /--poll: expected a duration .*cannot be negative/],
    [['--deadline', '1x'], {}, /--deadline: expected a duration .*unknown unit 'x'/],
    [['--delivery', 'carrier-pigeon'], {}, /--delivery: /],
    [['--controller-port', '70000'], {}, /--controller-port: expected a port at most 65535/],
    [['--fly-api-url', 'ftp://x'], {}, /--fly-api-url: /],
    [[], { FLY_API_TOKEN: undefined }, /FLY_API_TOKEN: is not set \(a Fly API token\)/],
    [[], { OPENCLAW_GATEWAY_TOKEN: undefined }, /environment variable OPENCLAW_GATEWAY_TOKEN is not set/],
    [['--controller-token-env', 'A', '--controller-token-file', 'B'], {}, /not both/],
    [['--no-such-flag'], {}, /Unknown option '--no-such-flag'/],
  ] as const)('%j %j → exit 2 naming the problem', async (argv, env, message) => {
    const r = await fleet.run(['--once', ...argv], { env: { ...env } });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(fleet.fly.requests.filter((q) => !q.read)).toEqual([]);
  });

  it('a Fly API error (bad token) exits 2 and names the call, never the token', async () => {
    const r = await fleet.run(['--once'], { env: { FLY_API_TOKEN: 'test-fly-token-wrong-0123456789' } });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Fly API list keyroll-test-app failed: unauthorized \(HTTP 401\)/);
    expect(r.stdout + r.stderr).not.toContain('test-fly-token-wrong-0123456789');
  });

  it('a key source that cannot be read exits 2 and changes nothing', async () => {
    fleet.resetLogs();
    const r = await fleet.run(['--once', '--source-file', '/nonexistent/keyroll-key']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/key source file \/nonexistent\/keyroll-key: cannot read/);
    expect(fleet.fly.requests).toEqual([]);
  });
});

describe('keyroll fly --dry-run', () => {
  it('writes nothing: the fake Fly API sees only reads, the controllers only GETs', async () => {
    fleet.setKey(KEYS.B);
    const pidsBefore = await fleet.pids();
    fleet.resetLogs();
    const r = await fleet.run(['--dry-run']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(fleet.fly.requests.length).toBeGreaterThan(0);
    expect(fleet.fly.writes()).toEqual([]);
    expect(fleet.fly.requests.every((q) => q.method === 'GET')).toBe(true);
    for (const m of fleet.machines) {
      expect(m.proxy.requests.length).toBeGreaterThan(0);
      expect(m.proxy.requests.every((q) => q.method === 'GET' && q.path === '/_kilo/state')).toBe(true);
    }
    expect(await fleet.pids()).toEqual(pidsBefore);
    expect(fleet.fly.storedEnv(APP, 's01').KILOCODE_API_KEY).toBe(KEYS.A);
    // The diff: what a pass would do, per machine, durable and live apart.
    expect(r.stdout).toMatch(/m00 +started +deferred \S+ +stale pid \d+ +would live +not-converged/);
    expect(r.stdout).toMatch(/s01 +stopped +stale \S+ +not-running +would durable +not-converged/);
    expect(r.stdout).toMatch(/^--- observed m00 http:\/\/127\.0\.0\.1:\d+$/m);
    expect(r.stdout).toMatch(/plan write with skip_launch under the machine lease/);
    expect(r.stdout).toMatch(/dry run, nothing written: 0\/3 converged/);
  });

  it.each([[['-o', 'json']], [['--output=json']], [['--json']]])(
    '%j carries fingerprints and plans, never the key',
    async (flags) => {
      fleet.resetLogs();
      const r = await fleet.run(['--dry-run', ...flags]);
      expect(r.code).toBe(1);
      const pass = JSON.parse(r.stdout);
      expect(pass.dryRun).toBe(true);
      expect(pass.desiredHash).toBe(envHash(KEYS.B));
      expect(pass.machines.map((m: { id: string; planned: string }) => [m.id, m.planned])).toEqual([
        ['m00', 'live'],
        ['m01', 'live'],
        ['s01', 'durable'],
      ]);
      expect(fleet.fly.writes()).toEqual([]);
    },
  );

  it('-o yaml is a usage error on stderr, exit 2, before any Fly call', async () => {
    fleet.resetLogs();
    const r = await fleet.run(['--dry-run', '-o', 'yaml']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/--output: expected text or json, got 'yaml'/);
    expect(fleet.fly.requests).toEqual([]);
  });

  it('after a real pass the dry run finds no drift and exits 0', async () => {
    const r = await fleet.run(['--once']);
    expect(r.code, r.stdout).toBe(0);
    fleet.resetLogs();
    const d = await fleet.run(['--dry-run']);
    expect(d.code, d.stdout).toBe(0);
    expect(fleet.fly.writes()).toEqual([]);
    expect(d.stdout).toMatch(/dry run, nothing written: 3\/3 converged/);
  });

  it('an HTTP key source near expiry mints a fresh key, and the pass targets the minted key', async () => {
    const seen: string[] = [];
    const server = createServer((req, res) => {
      seen.push(
        `${req.method} ${req.url} ${req.headers.authorization === 'Bearer test-source-token-0123456789' ? 'auth' : 'noauth'}`,
      );
      res.writeHead(200, { 'content-type': 'application/json' });
      if (req.method === 'POST') {
        res.end(
          JSON.stringify({
            token: KEYS.D,
            version: 'v4',
            expiresAt: new Date(Date.now() + 30 * 86_400_000).toISOString(),
          }),
        );
      } else {
        res.end(
          JSON.stringify({
            key: KEYS.C,
            version: 'v3',
            expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
          }),
        );
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      fleet.resetLogs();
      const r = await fleet.run(
        [
          '--dry-run',
          '--json',
          '--source-url',
          `${base}/current`,
          '--source-token-env',
          'SRC_TOKEN',
          '--mint-url',
          `${base}/mint`,
        ],
        { sourceFile: false, env: { SRC_TOKEN: 'test-source-token-0123456789' } },
      );
      expect(r.code, r.stderr).toBe(1);
      const pass = JSON.parse(r.stdout);
      expect(pass.keyVersion).toBe('v4');
      expect(pass.desiredHash).toBe(envHash(KEYS.D));
      expect(seen).toEqual(['GET /current auth', 'POST /mint auth']);
      expect(fleet.fly.writes()).toEqual([]);
      expect(r.stdout + r.stderr).not.toContain('test-source-token-0123456789');
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('printed no secret in any output', () => {
    expect(secretsIn(fleet.transcript)).toEqual([]);
  });
});
