// A Fly app for loop tests: the fake Machines API with N machines whose controllers are real
// `keyroll controller` processes (stand-in gateways) on loopback, each behind a recording proxy
// that can fail `POST /_kilo/env/patch`. The address override is explicit: every machine's
// `private_ip` is 127.0.0.1 and its `keyroll_port` metadata is its proxy's port (src/fly/address.ts).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runFly } from '../../../src/cli/fly.ts';
import { UsageError } from '../../../src/cli/usage.ts';
import { fingerprintEnv } from '../../../src/fingerprint.ts';
import { type FleetMember, readState, startReadyMember, stopMember } from '../../reconcile/support/fleet.ts';
import { type FakeUpstream, startFakeUpstream } from '../../support/fake-upstream.ts';
import { type FakeFlyApi, startFakeFlyApi } from '../../support/fly/fake-fly-api.ts';
import { killAllTracked } from '../../support/processes.ts';

export const APP = 'keyroll-test-app';
export const TOKEN = 'test-token-fly-loop-0123456789abcdef';
export const FLY_TOKEN = 'test-fly-token-loop-0123456789abcdef';
export const KEYS = {
  A: 'test-key-A-fly-loop-00000000000000001',
  B: 'test-key-B-fly-loop-00000000000000002',
  C: 'test-key-C-fly-loop-00000000000000003',
  D: 'test-key-D-fly-loop-00000000000000004',
  E: 'test-key-E-fly-loop-00000000000000005',
  F: 'test-key-F-fly-loop-00000000000000006',
  G: 'test-key-G-fly-loop-00000000000000007',
} as const;

export function envHash(key: string): string {
  return fingerprintEnv(TOKEN, { KILOCODE_API_KEY: key });
}

export interface FaultProxy {
  url: string;
  port: number;
  requests: Array<{ method: string; path: string }>;
  /** Answer the next `n` env patches with `status` instead of forwarding them. */
  failPatches(n: number, status?: number): void;
  posts(): number;
  close(): Promise<void>;
}

export async function startFaultProxy(targetUrl: string): Promise<FaultProxy> {
  const target = new URL(targetUrl);
  const requests: Array<{ method: string; path: string }> = [];
  let failLeft = 0;
  let failStatus = 503;
  const server: Server = createServer((req, res) => {
    const method = req.method ?? 'GET';
    requests.push({ method, path: req.url ?? '/' });
    if (method === 'POST' && req.url?.startsWith('/_kilo/env/patch') && failLeft > 0) {
      failLeft--;
      req.resume();
      res.writeHead(failStatus, { 'content-type': 'application/json' });
      res.end('{"error":"injected by the test proxy"}');
      return;
    }
    const up = request(
      {
        host: target.hostname,
        port: target.port,
        method,
        path: req.url,
        headers: req.headers,
        timeout: 30_000,
      },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('timeout', () => up.destroy(new Error('proxy timeout')));
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
      res.end('{"error":"Bad Gateway"}');
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    failPatches(n, status = 503) {
      failLeft = n;
      failStatus = status;
    },
    posts: () => requests.filter((r) => r.method !== 'GET').length,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface LoopMachine {
  id: string;
  member: FleetMember;
  proxy: FaultProxy;
}

export interface Captured {
  code: number;
  stdout: string;
  stderr: string;
}

export class FlyFleet {
  readonly dir = mkdtempSync(join(tmpdir(), 'keyroll-fly-loop-'));
  readonly keyFile = join(this.dir, 'key');
  /** Every byte the command printed, for the secret grep. */
  transcript = '';
  fly!: FakeFlyApi;
  upstream!: FakeUpstream;
  machines: LoopMachine[] = [];
  /** Every member started, also when start() fails half-way, so stop() can stop it. */
  private started: FleetMember[] = [];
  /** stdout of the command currently running, as it arrives. */
  liveOut = '';
  /** Added to the fake's clock: lets a test expire a lease without waiting. */
  skewMs = 0;

  async start(count: number, key: string): Promise<void> {
    this.setKey(key);
    this.fly = await startFakeFlyApi({ token: FLY_TOKEN, now: () => Date.now() + this.skewMs });
    this.upstream = await startFakeUpstream({ keys: Object.values(KEYS) });
    // Started a few at a time (ten Node gateways booting at once overload a 2-core CI runner),
    // each retried once with fresh ports if its gateway crash-loops (a port taken meanwhile).
    const members: FleetMember[] = [];
    for (let i = 0; i < count; i += 3) {
      const settled = await Promise.allSettled(
        Array.from({ length: Math.min(3, count - i) }, (_, j) =>
          startReadyMember(
            'stand-in',
            { name: `fly-${i + j}`, token: TOKEN, key, upstreamBaseUrl: this.upstream.baseUrl },
            60_000,
          ),
        ),
      );
      for (const r of settled) if (r.status === 'fulfilled') members.push(r.value);
      this.started.push(...members.slice(this.started.length));
      for (const r of settled) if (r.status === 'rejected') throw r.reason;
    }
    for (const [i, member] of members.entries()) {
      const proxy = await startFaultProxy(member.url);
      const id = `m${String(i).padStart(2, '0')}`;
      this.fly.addMachine(APP, {
        id,
        private_ip: '127.0.0.1',
        env: { KILOCODE_API_KEY: key, OTHER_SETTING: 'kept-as-is' },
        metadata: { keyroll_port: String(proxy.port) },
      });
      this.machines.push({ id, member, proxy });
    }
  }

  /** A machine without a controller (a stopped machine never gets contacted). */
  addStopped(id: string, key: string): void {
    this.fly.addMachine(APP, {
      id,
      state: 'stopped',
      private_ip: '127.0.0.1',
      env: { KILOCODE_API_KEY: key },
      metadata: { keyroll_port: '9' },
    });
  }

  machine(id: string): LoopMachine {
    const m = this.machines.find((x) => x.id === id);
    if (!m) throw new Error(`no machine ${id}`);
    return m;
  }

  setKey(key: string): void {
    writeFileSync(this.keyFile, `${key}\n`, { mode: 0o600 });
  }

  async liveHashes(): Promise<Array<string | null>> {
    return Promise.all(this.machines.map(async (m) => (await readState(m.member))?.key.envHash ?? null));
  }

  async pids(): Promise<Array<number | null>> {
    return Promise.all(this.machines.map(async (m) => (await readState(m.member))?.gateway.pid ?? null));
  }

  resetLogs(): void {
    this.fly.resetLog();
    for (const m of this.machines) m.proxy.requests.length = 0;
  }

  controllerPosts(): number {
    return this.machines.reduce((n, m) => n + m.proxy.posts(), 0);
  }

  async run(
    argv: string[],
    opts: { signal?: AbortSignal; env?: NodeJS.ProcessEnv; sourceFile?: boolean } = {},
  ): Promise<Captured> {
    let stdout = '';
    let stderr = '';
    this.liveOut = '';
    const io = {
      stdout: (t: string) => {
        stdout += t;
        this.liveOut += t;
      },
      stderr: (t: string) => {
        stderr += t;
      },
      env: {
        FLY_API_TOKEN: FLY_TOKEN,
        FLY_API_URL: this.fly?.baseUrl ?? 'http://127.0.0.1:9',
        OPENCLAW_GATEWAY_TOKEN: TOKEN,
        KEYROLL_LOG_LEVEL: 'debug',
        ...opts.env,
      },
      isTty: false,
    };
    let code: number;
    try {
      code = await runFly(
        [
          '--app',
          APP,
          ...(opts.sourceFile === false ? [] : ['--source-file', this.keyFile]),
          '--deadline',
          '20s',
          '--poll',
          '100ms',
          ...argv,
        ],
        io,
        opts.signal ? { signal: opts.signal } : {},
      );
    } catch (err) {
      // What src/cli/main.ts does with a usage error.
      if (!(err instanceof UsageError)) throw err;
      stderr += `keyroll fly: ${err.message}\n`;
      code = 2;
    }
    this.transcript += stdout + stderr;
    return { code, stdout, stderr };
  }

  async stop(): Promise<void> {
    await Promise.all(this.machines.map((m) => m.proxy.close().catch(() => {})));
    await Promise.all(this.started.map((m) => stopMember(m).catch(() => {})));
    await killAllTracked();
    await this.upstream?.close();
    await this.fly?.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Every secret the tests use: none may appear in anything the command printed. */
export function secretsIn(text: string): string[] {
  return [TOKEN, FLY_TOKEN, ...Object.values(KEYS)].filter((s) => text.includes(s));
}

export async function waitFor(
  what: string,
  pred: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}
