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
//   BENCH_ONLY=breakdown                      where the controller's memory goes, idle, under proxy
//                                             load and across a long hold (not in the default run):
//     BENCH_HOLD_MS=N    the stand-in's start-up time, so the hold's length (default 20000)
//     BENCH_SNAPSHOT=1   heap snapshots at idle and in the hold, compared by constructor (they
//                        inflate the RSS after them: take the RSS figures from a run without)
//     BENCH_STATE_POLL_MS=N   GET /_kilo/state this often under load (default 100, as the
//                        front-door benchmark waits for a rotation; 0: never)
//     BENCH_SAMPLING=1   sample the allocations a minor GC promoted (live or collected by a major
//                        GC since), from the steady phase to after the rotation, by call site
//     BENCH_IDLE_ONLY=1  the idle figures only (no load)
//     BENCH_LOAD=0       no client traffic (state reads, /metrics scrapes and the rotation only)
//     BENCH_STATE_FIXTURE=DIR   a state dir to start from (e.g. one OpenClaw 2026.9.6 wrote, under
//                        test/fixtures/profiles/openclaw-2026.9.6/), so the state reads scan its stores
import { type ChildProcess, spawn } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFakeUpstream } from '../test/support/fake-upstream.ts';
import { buildPackage, imageCommand } from '../test/support/image-command.ts';
import { failures, startTraffic } from '../test/support/traffic.ts';
import { MEMORY_SERIES, sampleControllerMetrics } from './support/controller-metrics.ts';
import { compare, summarize, totalBytes } from './support/heap-snapshot.ts';
import { startStreamClients } from './support/http-load.ts';
import { sampleMemory } from './support/proc-stats.ts';
import { startWsLoad } from './support/ws-load.ts';

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
  /** Node flags after the launch's own (the breakdown's diagnostic preload). */
  nodeFlags?: string[];
  /** `/_kilo/*` on a port of its own (`--admin-port`), as the StatefulSet runs it. */
  adminPort?: number;
}): Promise<Ctl> {
  const port = await freePort();
  const gatewayPort = await freePort();
  const launch = LAUNCH[opts.launch ?? 'image'];
  const scriptAt = Math.max(0, launch.indexOf(image.script));
  const proc = spawn(
    NODE,
    [
      ...launch.slice(0, scriptAt),
      ...(opts.nodeFlags ?? []),
      ...launch.slice(scriptAt),
      ...(opts.adminPort ? ['--admin-port', String(opts.adminPort)] : []),
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
    const res = await fetch(`http://127.0.0.1:${opts.adminPort ?? port}${path}`, {
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

/** A controller on `dir`'s state dir with the stand-in gateway, its provider at `baseUrl`. */
function standInArgs(dir: string, baseUrl: string): string[] {
  return [
    '--state-dir',
    join(dir, '.openclaw'),
    '--gateway-cmd',
    `'${NODE}' '${STAND_IN}'`,
    '--provider-base-url',
    baseUrl,
  ];
}

async function benchRss(launch: keyof typeof LAUNCH): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'keyroll-bench-rss-'));
  const upstream = await startFakeUpstream({ keys: [] });
  const label = LAUNCH_LABEL[launch];
  const ctl = await startCtl({
    launch,
    dir,
    env: sandboxEnv(dir, { KILOCODE_API_KEY: 'bench-key-0000000' }),
    args: [...standInArgs(dir, upstream.baseUrl)],
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
      ...standInArgs(dir, upstream.baseUrl),
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

/** Private and resident kB of `pid` by mapping (`/proc/PID/smaps`): the binary, `[heap]`, anonymous… */
function smapsByMapping(pid: number): Map<string, { rss: number; priv: number }> {
  const out = new Map<string, { rss: number; priv: number }>();
  let cur = { rss: 0, priv: 0 };
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[1]?.trim() || '[anon]';
      cur = out.get(name) ?? { rss: 0, priv: 0 };
      out.set(name, cur);
      continue;
    }
    const f = /^(Rss|Private_Clean|Private_Dirty):\s+(\d+) kB/.exec(line);
    if (!f) continue;
    if (f[1] === 'Rss') cur.rss += Number(f[2]);
    else cur.priv += Number(f[2]);
  }
  return out;
}

interface SamplingNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: SamplingNode[];
}

/** The top sites of a sampled heap profile by bytes (function, file:line, and its two callers). */
function promotedBySite(file: string, top = 25): string[] {
  const root = JSON.parse(readFileSync(file, 'utf8')).head as SamplingNode;
  const sites = new Map<string, number>();
  const walk = (n: SamplingNode, path: string[]) => {
    const f = n.callFrame;
    const here = `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-1)[0]}:${f.lineNumber + 1}`;
    const p = [...path, here];
    if (n.selfSize > 0) {
      const key = p.slice(-3).reverse().join(' ← ');
      sites.set(key, (sites.get(key) ?? 0) + n.selfSize);
    }
    for (const c of n.children) walk(c, p);
  };
  walk(root, []);
  const total = [...sites.values()].reduce((a, b) => a + b, 0);
  return [
    `total ${(total / 1024).toFixed(0)} KB`,
    ...[...sites]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, v]) => `${(v / 1024).toFixed(0).padStart(6)} KB  ${k}`),
  ];
}

interface Diag {
  memoryUsage: NodeJS.MemoryUsage;
  heap: { total_heap_size: number; used_heap_size: number; malloced_memory: number; external_memory: number };
  spaces: { space_name: string; space_size: number; space_used_size: number }[];
  code: { code_and_metadata_size: number; bytecode_and_metadata_size: number };
  activeResources: Record<string, number>;
  modulesAtPreload: string[];
  modulesSincePreload: string[];
}

/**
 * Where the controller's memory goes (issue 14): the image's command with a diagnostic preload
 * (bench/support/controller-diag.cjs), a stand-in gateway whose start takes BENCH_HOLD_MS, and
 * the front-door memory benchmark's load (HTTP, SSE, WebSockets, /metrics every 0.5 s). At idle,
 * after 10 s of load, late in a hold rotation under that load, and after it: RSS and private
 * memory, the process's own memoryUsage() and V8 heap spaces, the mappings that hold the private
 * memory, and (BENCH_SNAPSHOT=1) heap snapshots compared by constructor.
 */
async function benchBreakdown(): Promise<void> {
  const holdMs = Number(process.env.BENCH_HOLD_MS ?? 20_000);
  const snapshots = process.env.BENCH_SNAPSHOT === '1';
  const sampling = process.env.BENCH_SAMPLING === '1';
  const dir = mkdtempSync(join(tmpdir(), 'keyroll-bench-breakdown-'));
  const diagDir = join(dir, 'diag');
  mkdirSync(diagDir);
  const fixture = process.env.BENCH_STATE_FIXTURE;
  if (fixture) cpSync(fixture, join(dir, '.openclaw'), { recursive: true });
  const upstream = await startFakeUpstream({ keys: ['bench-key-0000000', 'bench-key-1111111'] });
  const adminPort = await freePort();
  const ctl = await startCtl({
    dir,
    nodeFlags: [
      '--require',
      join(ROOT, 'bench', 'support', 'controller-diag.cjs'),
      // Experiments only (printed with every figure): other V8 flags beside the image's.
      ...(process.env.BENCH_EXTRA_NODE_FLAGS?.split(/\s+/).filter(Boolean) ?? []),
    ],
    adminPort,
    env: sandboxEnv(dir, {
      KILOCODE_API_KEY: 'bench-key-0000000',
      KEYROLL_DIAG_DIR: diagDir,
      STANDIN_READY_DELAY_MS: String(holdMs),
    }),
    args: [
      ...standInArgs(dir, upstream.baseUrl),
      '--hold-timeout',
      `${holdMs + 30_000}ms`,
      '--surge-port',
      String(await freePort()),
    ],
  });
  const pid = ctl.proc.pid!;
  const diags: Record<string, Diag> = {};
  const take = async (label: string, snapshot: boolean, sampling?: 'start' | 'stop') => {
    writeFileSync(join(diagDir, 'request.json'), JSON.stringify({ label, snapshot, sampling }));
    const rss = rssMb(pid);
    const priv = privateMb(pid);
    const maps = smapsByMapping(pid);
    if (process.env.BENCH_KEEP_DIAG === '1')
      writeFileSync(join(diagDir, `${label}.smaps`), readFileSync(`/proc/${pid}/smaps`));
    process.kill(pid, 'SIGUSR2');
    const deadline = Date.now() + 120_000;
    while (!existsSync(join(diagDir, `${label}.done`))) {
      if (Date.now() > deadline) throw new Error(`breakdown: no diagnostics for ${label}`);
      await sleep(50);
    }
    const d = JSON.parse(readFileSync(join(diagDir, `${label}.json`), 'utf8')) as Diag;
    diags[label] = d;
    const mb = (b: number) => (b / 1024 / 1024).toFixed(2);
    const m = d.memoryUsage;
    record(
      `breakdown ${label}: RSS`,
      rss,
      'MB',
      `private ${priv.toFixed(1)} MB; memoryUsage: rss ${mb(m.rss)}, heapTotal ${mb(m.heapTotal)}, heapUsed ${mb(m.heapUsed)}, ` +
        `external ${mb(m.external)}, arrayBuffers ${mb(m.arrayBuffers)}; V8 malloced ${mb(d.heap.malloced_memory)}; ` +
        `code+metadata ${mb(d.code.code_and_metadata_size)}, bytecode ${mb(d.code.bytecode_and_metadata_size)}`,
    );
    console.log(
      JSON.stringify({
        breakdown: label,
        spacesMB: Object.fromEntries(
          d.spaces.map((s) => [s.space_name, `${mb(s.space_used_size)} / ${mb(s.space_size)}`]),
        ),
        activeResources: d.activeResources,
        threads: readdirSync(`/proc/${pid}/task`).length,
        privateKBByMapping: Object.fromEntries(
          [...maps]
            .filter(([, v]) => v.priv >= 64)
            .sort((a, b) => b[1].priv - a[1].priv)
            .map(([k, v]) => [k, v.priv]),
        ),
      }),
    );
  };
  try {
    await waitState(ctl, () => true, holdMs + 60_000);
    await sleep(3_000);
    await take('idle', snapshots);
    const d0 = diags.idle!;
    console.log(
      JSON.stringify({
        modulesAtPreload: d0.modulesAtPreload.filter((x) => x.startsWith('NativeModule ')).length,
        modulesSincePreload: d0.modulesSincePreload,
      }),
    );
    if (process.env.BENCH_IDLE_ONLY === '1') return;
    const before = await ctl.call('GET', '/_kilo/state');
    const pollMs = Number(process.env.BENCH_STATE_POLL_MS ?? 100);
    const load = process.env.BENCH_LOAD !== '0';
    let polling = pollMs > 0;
    let polls = 0;
    const poller = (async () => {
      while (polling) {
        await ctl.call('GET', '/_kilo/state').catch(() => null);
        polls++;
        await sleep(pollMs);
      }
    })();
    const traffic = startTraffic({
      port: ctl.port,
      token: TOKEN,
      clients: load ? ['chat', 'chat', 'chat', 'healthz', 'healthz'] : [],
    });
    const sockets = startWsLoad(
      ctl.port,
      '/',
      load ? 10 : 0,
      JSON.stringify({ type: 'bench', data: 'x'.repeat(512) }),
      20,
    );
    const streams = startStreamClients(ctl.port, '/__standin/stream?n=40&ms=10', load ? 5 : 0);
    const scraper = sampleControllerMetrics(adminPort, TOKEN, 500);
    let mem = sampleMemory(pid, 50);
    await sleep(10_000);
    const steady = mem.stop();
    record(
      'breakdown steady 10 s: RSS peak',
      steady.peakRss,
      'MB',
      `private ${steady.peakPrivate.toFixed(1)} MB`,
    );
    await take('steady', false, sampling ? 'start' : undefined);
    mem = sampleMemory(pid, 50);
    const t0 = Date.now();
    const patch = await ctl.call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: 'bench-key-1111111' });
    if (patch.status !== 200) throw new Error(`breakdown: patch answered ${patch.status}`);
    await sleep(Math.max(0, holdMs * 0.8));
    await take('hold', snapshots);
    await waitState(ctl, (s) => s.gateway.pid !== before.body.gateway.pid, holdMs + 60_000);
    const rotationMs = Date.now() - t0;
    await sleep(2_000);
    const rotating = mem.stop();
    record(
      'breakdown across the hold rotation: RSS peak',
      rotating.peakRss,
      'MB',
      `private ${rotating.peakPrivate.toFixed(1)} MB; patch → serving ${rotationMs} ms`,
    );
    await take('after-rotation', false, sampling ? 'stop' : undefined);
    if (sampling) {
      console.log(
        '\nallocations promoted out of the young generation, steady → after the rotation (sampled):',
      );
      for (const row of promotedBySite(join(diagDir, 'after-rotation.heapprofile'))) console.log(row);
    }
    const sse = await streams.stop();
    const ws = await sockets.stop();
    await traffic.stop();
    const scraped = await scraper.stop();
    polling = false;
    await poller;
    record(
      'breakdown load',
      traffic.outcomes.length,
      'requests',
      `failed ${failures(traffic.outcomes).length}; ${sse.streams} SSE streams (failed ${sse.failed}); WebSocket messages ${ws.sent} sent, ${ws.received} received; ` +
        `${polls} state reads; ${scraped.scrapes} scrapes, peaks ${MEMORY_SERIES.map((n) => `${n} ${scraped.peaksMb[n].toFixed(2)}`).join(', ')} MB`,
    );
    await sleep(3_000);
    await take('after-load', false);
    if (snapshots) {
      const a = summarize(join(diagDir, 'idle.heapsnapshot'));
      const b = summarize(join(diagDir, 'hold.heapsnapshot'));
      console.log(
        `\nheap snapshot, live objects: idle ${(totalBytes(a) / 1048576).toFixed(2)} MB, hold ${(totalBytes(b) / 1048576).toFixed(2)} MB`,
      );
      console.log('| constructor | idle count / size | hold count / size | hold − idle |\n|---|---|---|---|');
      for (const row of compare(a, b)) console.log(row);
      console.log('\n| constructor (idle) | count | size |\n|---|---|---|');
      for (const row of compare(null, a)) console.log(row);
    }
  } finally {
    await ctl.stop();
    await upstream.close();
    if (process.env.BENCH_EXTRA_NODE_FLAGS) {
      console.log(`extra Node flags (NOT the image's): ${process.env.BENCH_EXTRA_NODE_FLAGS}`);
      for (const line of ctl.log) if (/^\[\d+:0x[0-9a-f]+\]/.test(line)) console.log(line);
    }
    if (process.env.BENCH_KEEP_DIAG === '1') console.log(`diagnostics kept in ${diagDir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

const parts: Record<string, () => Promise<void>> = {
  rss: async () => {
    for (const launch of ['image', 'bundle', 'sources'] as const) await benchRss(launch);
  },
  'file-stand-in': benchFileModeStandIn,
  'restart-real': benchRestartReal,
  'file-real': benchFileReal,
  breakdown: benchBreakdown,
};
const only = process.env.BENCH_ONLY?.split(',');
for (const [name, run] of Object.entries(parts)) {
  const skip = only
    ? !only.includes(name)
    : name === 'breakdown' || (process.env.BENCH_SKIP_REAL === '1' && name.endsWith('-real'));
  if (skip) continue;
  await run();
}
console.log('\n| figure | value |\n|---|---|');
for (const r of results) console.log(`| ${r.name} | ${r.value} ${r.unit}${r.note ? ` (${r.note})` : ''} |`);
