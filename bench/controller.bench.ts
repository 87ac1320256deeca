// Benchmarks of `keyroll controller`: RSS idle and under patch load (stand-in gateway), patch →
// ready in restart mode against the real gateway's own cold start, and patch → first upstream
// request with the new key in file mode. Prints one JSON line per figure and a summary table.
// The controller runs as the gateway image runs it: `npm run build`'s bundle, started with the
// Dockerfile's gateway ENTRYPOINT flags. The RSS part also measures the bundle without those
// flags and the TypeScript sources (`bin/keyroll.mjs`), for comparison.
//   node bench/controller.bench.ts            all (the real-gateway part takes a few minutes)
//   BENCH_SKIP_REAL=1                         stand-in parts only
//   BENCH_ONLY=rss,file-stand-in,restart-real,file-real   just these parts
//   BENCH_RUNS=N                              restart-mode rotations with the real gateway (default 3)
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFakeUpstream } from '../test/support/fake-upstream.ts';
import { buildPackage, imageCommand } from '../test/support/image-command.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const NODE = process.execPath;
const STAND_IN = join(ROOT, 'test', 'support', 'stand-in-gateway.ts');
const TOKEN = 'bench-token-0123456789abcdef';
const results: { name: string; value: number; unit: string; note?: string }[] = [];

const pkg = buildPackage('keyroll-bench-dist-');
process.on('exit', () => pkg.cleanup());
const image = imageCommand('gateway', pkg.root);
/** Node argv up to the controller's flags, per way of running it. */
const LAUNCH = {
  image: [...image.nodeFlags, image.script, ...image.args],
  bundle: [image.script, ...image.args],
  sources: [join(ROOT, 'bin', 'keyroll.mjs'), 'controller'],
};
const LAUNCH_LABEL: Record<keyof typeof LAUNCH, string> = {
  image: `shipped build, image flags ${image.nodeFlags.join(' ') || '(none)'}`,
  bundle: 'shipped build, Node defaults',
  sources: 'TypeScript sources, bin/keyroll.mjs',
};

function record(name: string, value: number, unit: string, note?: string) {
  const r = { name, value: Math.round(value * 10) / 10, unit, ...(note ? { note } : {}) };
  results.push(r);
  console.log(JSON.stringify(r));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = a && typeof a === 'object' ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** Memory only this process holds (private clean + dirty pages): what it adds beside the gateway. */
function privateMb(pid: number): number {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN);
  return (kb('Private_Clean') + kb('Private_Dirty')) / 1024;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Ctl {
  proc: ChildProcess;
  port: number;
  gatewayPort: number;
  dir: string;
  log: string[];
  call: (method: string, path: string, body?: unknown) => Promise<{ status: number; body: StateLike }>;
  stop: () => Promise<void>;
}

interface StateLike {
  gateway: { pid: number | null; ready: boolean; state: string };
  [k: string]: unknown;
}

async function startCtl(opts: {
  args: string[];
  env: Record<string, string>;
  dir: string;
  launch?: keyof typeof LAUNCH;
}): Promise<Ctl> {
  const port = await freePort();
  const gatewayPort = await freePort();
  const proc = spawn(
    NODE,
    [
      ...LAUNCH[opts.launch ?? 'image'],
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--gateway-port',
      String(gatewayPort),
      ...opts.args,
    ],
    { env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const log: string[] = [];
  for (const s of [proc.stdout, proc.stderr]) {
    let buf = '';
    s?.on('data', (d) => {
      buf += String(d);
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      log.push(...lines);
    });
  }
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(30_000),
    });
    return { status: res.status, body: (await res.json()) as StateLike };
  };
  const stop = async () => {
    if (proc.exitCode !== null) return;
    proc.kill('SIGTERM');
    await Promise.race([new Promise((r) => proc.once('exit', r)), sleep(30_000)]);
    if (proc.exitCode === null) proc.kill('SIGKILL');
  };
  return { proc, port, gatewayPort, dir: opts.dir, log, call, stop };
}

async function waitState(
  ctl: Ctl,
  pred: (s: StateLike) => boolean,
  timeoutMs: number,
  pollMs = 50,
): Promise<StateLike> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await ctl.call('GET', '/_kilo/state').catch(() => null);
    if (r?.status === 200 && r.body.gateway.state === 'running' && r.body.gateway.ready && pred(r.body))
      return r.body;
    if (Date.now() > deadline) throw new Error('timed out waiting for the controller');
    await sleep(pollMs);
  }
}

function sandboxEnv(dir: string, extra: Record<string, string>): Record<string, string> {
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  return {
    PATH: `${dirname(NODE)}:/usr/local/bin:/usr/bin:/bin`,
    HOME: dir,
    OPENCLAW_HOME: dir,
    OPENCLAW_STATE_DIR: join(dir, '.openclaw'),
    TMPDIR: join(dir, 'tmp'),
    OPENCLAW_DISABLE_PLUGIN_REGISTRY_MIGRATION: '1',
    OPENCLAW_GATEWAY_TOKEN: TOKEN,
    KEYROLL_LOG_LEVEL: 'warn',
    ...extra,
  };
}

async function benchRss(launch: keyof typeof LAUNCH): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'keyroll-bench-rss-'));
  const upstream = await startFakeUpstream({ keys: [] });
  const label = LAUNCH_LABEL[launch];
  const ctl = await startCtl({
    launch,
    dir,
    env: sandboxEnv(dir, { KILOCODE_API_KEY: 'bench-key-0000000' }),
    args: [
      '--state-dir',
      join(dir, '.openclaw'),
      '--gateway-cmd',
      `'${NODE}' '${STAND_IN}'`,
      '--provider-base-url',
      upstream.baseUrl,
    ],
  });
  try {
    await waitState(ctl, () => true, 30_000);
    await sleep(3_000);
    record(`controller RSS idle [${label}]`, rssMb(ctl.proc.pid!), 'MB');
    record(`controller private memory idle [${label}]`, privateMb(ctl.proc.pid!), 'MB');
    let peak = 0;
    let peakPrivate = 0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssMb(ctl.proc.pid!));
      peakPrivate = Math.max(peakPrivate, privateMb(ctl.proc.pid!));
    }, 50);
    const t0 = Date.now();
    let n = 0;
    const worker = async (w: number) => {
      for (let i = 0; i < 50; i++) {
        const r = await ctl.call('POST', '/_kilo/env/patch', {
          KILOCODE_API_KEY: `bench-key-${w}-${i}-000000`,
        });
        if (r.status !== 200) throw new Error(`patch ${r.status}`);
        n++;
        await ctl.call('GET', '/_kilo/state');
      }
    };
    await Promise.all(Array.from({ length: 10 }, (_, w) => worker(w)));
    const secs = (Date.now() - t0) / 1000;
    await waitState(ctl, () => true, 30_000);
    clearInterval(sampler);
    const status = await ctl.call('GET', '/_kilo/gateway/status');
    const restarts = Number((status.body as unknown as { requestedRestarts: number }).requestedRestarts);
    record(
      `controller RSS peak under patch load [${label}]`,
      peak,
      'MB',
      `${n} patches + ${n} state reads, 10 clients, ${secs.toFixed(1)} s, ${restarts} coalesced restarts`,
    );
    record(`controller private memory peak under patch load [${label}]`, peakPrivate, 'MB');
    await sleep(2_000);
    record(`controller RSS 2 s after load [${label}]`, rssMb(ctl.proc.pid!), 'MB');
  } finally {
    await ctl.stop();
    await upstream.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function benchFileModeStandIn(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'keyroll-bench-file-'));
  const keyA = 'bench-key-A-file-000000';
  const upstream = await startFakeUpstream({ keys: [keyA] });
  const agentDir = join(dir, '.openclaw', 'agents', 'main', 'agent');
  mkdirSync(agentDir, { recursive: true });
  writeFileSync(
    join(agentDir, 'auth-profiles.json'),
    JSON.stringify({
      version: 1,
      profiles: { 'kilocode:default': { type: 'api_key', provider: 'kilocode', key: keyA } },
    }),
  );
  mkdirSync(join(dir, 'keys'), { mode: 0o700 });
  const ctl = await startCtl({
    dir,
    env: sandboxEnv(dir, { KILOCODE_API_KEY: keyA }),
    args: [
      '--state-dir',
      join(dir, '.openclaw'),
      '--gateway-cmd',
      `'${NODE}' '${STAND_IN}'`,
      '--provider-base-url',
      upstream.baseUrl,
      '--delivery',
      'file',
      '--key-file',
      join(dir, 'keys', 'kilocode.key'),
    ],
  });
  try {
    await waitState(ctl, () => true, 30_000);
    const samples: number[] = [];
    const patchMs: number[] = [];
    for (let i = 0; i < 20; i++) {
      const key = `bench-key-file-${i}-000000`;
      upstream.setKeys([key]);
      const t0 = performance.now();
      const r = await ctl.call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: key });
      const t1 = performance.now();
      if (r.status !== 200) throw new Error('patch failed');
      const res = await fetch(`http://127.0.0.1:${ctl.gatewayPort}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'hi' }] }),
      });
      await res.text();
      const seen = upstream.chatRequests().at(-1);
      if (res.status !== 200 || seen?.key !== key)
        throw new Error('the first request after the patch did not carry the new key');
      samples.push((seen.at - (performance.timeOrigin + t0)) as number);
      patchMs.push(t1 - t0);
    }
    samples.sort((a, b) => a - b);
    patchMs.sort((a, b) => a - b);
    record(
      'file mode: patch → first upstream request with the new key (stand-in), median',
      samples[10]!,
      'ms',
    );
    record(
      'file mode: patch → first upstream request with the new key (stand-in), max',
      samples.at(-1)!,
      'ms',
    );
    record('file mode: /_kilo/env/patch latency, median', patchMs[10]!, 'ms');
  } finally {
    await ctl.stop();
    await upstream.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Timestamp (ms) of the first log line with `msg` after `after`, with its fields. */
function logEvent(
  log: string[],
  msg: string,
  after: number,
): { t: number; f: Record<string, unknown> } | null {
  for (const line of log) {
    if (!line.includes(msg)) continue;
    try {
      const f = JSON.parse(line) as Record<string, unknown>;
      const t = Date.parse(String(f.time));
      if (f.msg === msg && t >= after) return { t, f };
    } catch {
      // not JSON
    }
  }
  return null;
}

async function benchRestartReal(): Promise<void> {
  const runs = Number(process.env.BENCH_RUNS ?? 3);
  const dir = mkdtempSync(join(tmpdir(), 'keyroll-bench-real-'));
  const upstream = await startFakeUpstream({ keys: [] });
  const ctl = await startCtl({
    dir,
    env: { ...sandboxEnv(dir, { KILOCODE_API_KEY: 'bench-key-real-0-000000' }), KEYROLL_LOG_LEVEL: 'info' },
    args: [
      '--state-dir',
      join(dir, '.openclaw'),
      '--provider-base-url',
      upstream.baseUrl,
      '--ready-timeout',
      '400000ms',
    ],
  });
  try {
    const first = await waitState(ctl, () => true, 400_000, 100);
    const cold = logEvent(ctl.log, 'Gateway ready', 0);
    if (cold)
      record('real gateway cold start (spawn → /readyz 200), first start', Number(cold.f.readyMs), 'ms');
    let pid = first.gateway.pid;
    for (let i = 1; i <= runs; i++) {
      const t0 = Date.now();
      await ctl.call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: `bench-key-real-${i}-000000` });
      const s = await waitState(ctl, (st) => st.gateway.pid !== pid, 400_000, 50);
      const total = Date.now() - t0;
      pid = s.gateway.pid;
      const stopped = logEvent(ctl.log, 'Gateway stopped', t0);
      const spawned = logEvent(ctl.log, 'Gateway spawned', t0);
      const ready = logEvent(ctl.log, 'Gateway ready', t0);
      const stopMs = stopped ? stopped.t - t0 : Number.NaN;
      const gapMs = stopped && spawned ? spawned.t - stopped.t : Number.NaN;
      const readyMs = ready ? Number(ready.f.readyMs) : Number.NaN;
      const overhead = total - stopMs - readyMs;
      record(
        `restart mode run ${i}: patch → ready`,
        total,
        'ms',
        `stop ${stopMs} ms, stopped→spawned ${gapMs} ms, cold start ${readyMs} ms, controller overhead ${overhead} ms, ratio to cold start ${(total / readyMs).toFixed(2)}`,
      );
    }
  } finally {
    await ctl.stop();
    await upstream.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function chatOnce(port: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'hi' }] }),
    signal: AbortSignal.timeout(120_000),
  });
  await res.text();
  return res.status;
}

async function benchFileReal(): Promise<void> {
  const runs = Number(process.env.BENCH_RUNS ?? 3);
  const dir = mkdtempSync(join(tmpdir(), 'keyroll-bench-realf-'));
  const keyA = 'bench-key-realf-0-000000';
  const upstream = await startFakeUpstream({ keys: [keyA] });
  mkdirSync(join(dir, 'keys'), { mode: 0o700 });
  const ctl = await startCtl({
    dir,
    env: sandboxEnv(dir, { KILOCODE_API_KEY: keyA }),
    args: [
      '--state-dir',
      join(dir, '.openclaw'),
      '--provider-base-url',
      upstream.baseUrl,
      '--enable-chat-completions',
      '--delivery',
      'file',
      '--key-file',
      join(dir, 'keys', 'kilocode.key'),
      '--ready-timeout',
      '400000ms',
    ],
  });
  try {
    await waitState(ctl, () => true, 400_000, 100);
    for (let i = 0; i < 2; i++) await chatOnce(ctl.gatewayPort); // warm
    for (let i = 1; i <= runs; i++) {
      const t0 = performance.timeOrigin + performance.now();
      await chatOnce(ctl.gatewayPort);
      const baseline = upstream.chatRequests().at(-1)!.at - t0;
      const key = `bench-key-realf-${i}-000000`;
      upstream.setKeys([key]);
      const p0 = performance.timeOrigin + performance.now();
      await ctl.call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: key });
      const p1 = performance.timeOrigin + performance.now();
      const status = await chatOnce(ctl.gatewayPort);
      const seen = upstream.chatRequests().at(-1)!;
      if (status !== 200 || seen.key !== key) throw new Error('real gateway did not use the new key at once');
      record(
        `file mode run ${i} (real gateway): patch → first upstream request with the new key`,
        seen.at - p0,
        'ms',
        `patch answered in ${Math.round(p1 - p0)} ms; the gateway's own request → upstream time without rotation ${Math.round(baseline)} ms`,
      );
    }
  } finally {
    await ctl.stop();
    await upstream.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const parts: Record<string, () => Promise<void>> = {
  rss: async () => {
    for (const launch of ['image', 'bundle', 'sources'] as const) await benchRss(launch);
  },
  'file-stand-in': benchFileModeStandIn,
  'restart-real': benchRestartReal,
  'file-real': benchFileReal,
};
const only = process.env.BENCH_ONLY?.split(',');
for (const [name, run] of Object.entries(parts)) {
  if (only ? !only.includes(name) : process.env.BENCH_SKIP_REAL === '1' && name.endsWith('-real')) continue;
  await run();
}
console.log('\n| figure | value |\n|---|---|');
for (const r of results) console.log(`| ${r.name} | ${r.value} ${r.unit}${r.note ? ` (${r.note})` : ''} |`);
