// Benchmarks of the controller as the gateway's front door (issue 10): rotation time with the
// real OpenClaw 2026.6.8 per restart strategy (hold, surge) under continuous client traffic, side
// by side with the bare gateway's own restart; the proxy's per-request overhead and throughput;
// the controller's memory while it proxies HTTP, SSE and WebSocket load. Prints one JSON line per
// figure, then a summary table and the targets.
// The controller runs as the gateway image runs it: `npm run build`'s bundle, started with the
// Dockerfile's gateway ENTRYPOINT flags, with the StatefulSet's port split (--admin-port).
//   node bench/front-door.bench.ts             all (the rotation part takes several minutes)
//   BENCH_ONLY=rotation,overhead,memory        just these parts
//   BENCH_ONLY=memory, then BENCH_ONLY=rotation BENCH_SUBJECTS=hold,surge BENCH_RUNS=1
//                                              the controller RSS figures only (≈1 + 2 min idle)
//   BENCH_RUNS=N                               rotations per strategy and bare restarts (default 3)
//   BENCH_OVERHEAD_N=N                         sequential request pairs per request kind (default 2000)
//   BENCH_SUBJECTS=bare,surge                  rotation subjects (default bare,hold,surge)
//   BENCH_NODE_FLAGS='--flag …'                try other Node flags for the controller (not the image's)
//   BENCH_OPENCLAW_VERSION=2026.9.6            the real gateway of the rotation part (default 2026.6.8;
//                                              installed with `npm run gateway:install -- <version>`)
import { loadavg } from 'node:os';
import { join } from 'node:path';
import * as z from 'zod';
import { type FakeUpstream, startFakeUpstream, type UpstreamRequest } from '../test/support/fake-upstream.ts';
import { chat, freePort } from '../test/support/http.ts';
import { buildPackage, imageCommand } from '../test/support/image-command.ts';
import {
  type GatewayHandle,
  OPENCLAW_VERSION,
  onboard,
  openclawEntry,
  pointAtUpstream,
  startGateway,
} from '../test/support/openclaw.ts';
import {
  killAllTracked,
  pidAlive,
  spawnTracked,
  type Tracked,
  trackPid,
  waitForPidExit,
} from '../test/support/processes.ts';
import { createSandbox, REPO_ROOT, type Sandbox } from '../test/support/sandbox.ts';
import {
  failures,
  type HttpClientKind,
  latency,
  type RequestOutcome,
  startTraffic,
} from '../test/support/traffic.ts';
import { MEMORY_SERIES, sampleControllerMetrics, scrapeMetrics } from './support/controller-metrics.ts';
import {
  type BenchRequest,
  pairedLatency,
  quantile,
  startStreamClients,
  throughput,
} from './support/http-load.ts';
import { cpuMs, hwmMb, privateMb, rssMb, sampleMemory } from './support/proc-stats.ts';
import { startWsLoad } from './support/ws-load.ts';

const NODE = process.execPath;
const STAND_IN = join(REPO_ROOT, 'test', 'support', 'stand-in-gateway.ts');
const TOKEN = 'bench-token-front-door-0123456789';
const KEY_A = 'bench-key-A-front-door-aaaaaaaa';
const KEY_B = 'bench-key-B-front-door-bbbbbbbb';
const SECRETS = [TOKEN, KEY_A, KEY_B];

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const SUBJECTS = (process.env.BENCH_SUBJECTS ?? 'bare,hold,surge').split(',').map((x) => x.trim());
const OVERHEAD_N = Number(process.env.BENCH_OVERHEAD_N ?? 2000);
/** The real gateway's version (rotation part): its controllers get `--openclaw-bin`. */
const OPENCLAW = process.env.BENCH_OPENCLAW_VERSION ?? OPENCLAW_VERSION;
const OPENCLAW_BIN = OPENCLAW === OPENCLAW_VERSION ? [] : ['--openclaw-bin', openclawEntry(OPENCLAW)];
/** What the clients of the rotation part send, back to back (test/support/traffic.ts). */
const ROTATION_CLIENTS: HttpClientKind[] = ['chat', 'chat-stream', 'healthz'];
/** Pause between two requests of one client, so the /healthz loop does not spin a core. */
const TRAFFIC_GAP_MS = 20;
/** Traffic before the patch (baseline latency), and after the rotation ended. */
const WARM_MS = 5_000;
const TAIL_MS = 1_000;
/** Between two rotations of different subjects, so one's exit does not overlap the next start. */
const SETTLE_MS = 3_000;
const READY_TIMEOUT_MS = 400_000;
const STOP_TIMEOUT_MS = 30_000;

interface Result {
  name: string;
  value: number;
  unit: string;
  note?: string;
}
const results: Result[] = [];
const targets: { figure: string; measured: string; target: string; met: boolean | null }[] = [];

function record(name: string, value: number, unit: string, note?: string): void {
  const r: Result = { name, value: Math.round(value * 100) / 100, unit, ...(note ? { note } : {}) };
  results.push(r);
  console.log(JSON.stringify(r));
}

function target(figure: string, measured: string, goal: string, met: boolean | null): void {
  targets.push({ figure, measured, target: goal, met });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (ms: number) => Math.round(ms);
const fmt = (v: number, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : 'n/a');
/** CPU time a process has used so far (ms), NaN once it is gone. */
const cpuOf = (pid: number) => {
  try {
    return cpuMs(pid);
  } catch {
    return Number.NaN;
  }
};
const fmtCpu = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : 'n/a');

/** Text safe to print: every key and the token replaced. */
function scrub(text: string): string {
  let out = text;
  for (const s of SECRETS) out = out.split(s).join('[REDACTED]');
  return out;
}

const pkg = buildPackage('keyroll-bench-fd-dist-');
const shipped = imageCommand('gateway', pkg.root);
/** For trying other Node flags (never for the recorded figures): BENCH_NODE_FLAGS replaces the
 *  image's, and is printed on the first line. */
const image = process.env.BENCH_NODE_FLAGS
  ? { ...shipped, nodeFlags: process.env.BENCH_NODE_FLAGS.split(/\s+/).filter(Boolean) }
  : shipped;
/** Node argv up to the controller's flags: the gateway image's ENTRYPOINT, or the same bundle with
 *  Node's default flags (for comparison only). */
const LAUNCH = {
  image: [...image.nodeFlags, image.script, ...image.args],
  bundle: [image.script, ...image.args],
};
const LAUNCH_LABEL: Record<keyof typeof LAUNCH, string> = {
  image: `image flags ${image.nodeFlags.join(' ') || '(none)'}`,
  bundle: 'same bundle, Node defaults',
};
process.on('exit', () => pkg.cleanup());
// Children run in their own process groups: Ctrl-C reaches only this process, whose exit handlers
// (test/support/processes.ts) SIGKILL every tracked controller and gateway.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

// ---------------------------------------------------------------------------------------------
// The controller, as the image runs it

const StateSchema = z.object({
  gateway: z.object({ state: z.string(), pid: z.number().nullable(), ready: z.boolean() }),
  proxy: z.object({
    strategy: z.string(),
    state: z.string(),
    target: z.number().nullable(),
    inFlight: z.number(),
    held: z.number(),
    websockets: z.number(),
    lastHold: z
      .object({ heldRequests: z.number(), longestWaitMs: z.number(), refused: z.number() })
      .nullable(),
    lastRestart: z
      .object({ strategy: z.string(), fallback: z.string().nullable(), durationMs: z.number().nullable() })
      .nullable(),
  }),
});
type State = z.infer<typeof StateSchema>;

interface Ctl {
  label: string;
  proc: Tracked;
  pid: number;
  /** The public port: the proxy. */
  port: number;
  adminPort: number;
  gatewayPort: number;
  /** Every gateway PID the controller spawned (tracked, so nothing outlives the benchmark). */
  gatewayPids: Set<number>;
  call(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }>;
  state(): Promise<State | null>;
  /** Stops the controller (it stops its gateway); returns problems seen, if any. */
  stop(): Promise<string[]>;
}

async function startController(opts: {
  sb: Sandbox;
  label: string;
  strategy: 'hold' | 'surge';
  args: string[];
  launch?: keyof typeof LAUNCH;
}): Promise<Ctl> {
  // Four different ports: freePort() never hands out a port twice in one process.
  const [port, adminPort, gatewayPort, surgePort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const proc = spawnTracked(
    NODE,
    [
      ...LAUNCH[opts.launch ?? 'image'],
      '--state-dir',
      opts.sb.stateDir,
      '--port',
      String(port),
      '--admin-port',
      String(adminPort),
      '--bind',
      '127.0.0.1',
      '--gateway-port',
      String(gatewayPort),
      '--surge-port',
      String(surgePort),
      '--restart-strategy',
      opts.strategy,
      ...opts.args,
    ],
    {
      name: `controller-${opts.label}`,
      cwd: opts.sb.dir,
      env: opts.sb.env({ OPENCLAW_GATEWAY_TOKEN: TOKEN, KILOCODE_API_KEY: KEY_A }),
    },
  );
  const gatewayPids = new Set<number>();
  let scanned = 0;
  const scan = () => {
    for (; scanned < proc.lines.length; scanned++) {
      const line = proc.lines[scanned]!;
      if (!line.includes('"Gateway spawned"')) continue;
      const pid = parseLogLine(line)?.pid;
      if (typeof pid === 'number' && !gatewayPids.has(pid)) {
        gatewayPids.add(pid);
        trackPid(pid);
      }
    }
  };
  const scanner = setInterval(scan, 100);
  scanner.unref();
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`http://127.0.0.1:${adminPort}${path}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.status, body: parsed };
  };
  const state = async () => {
    const r = await call('GET', '/_kilo/state').catch(() => null);
    if (r?.status !== 200) return null;
    const s = StateSchema.safeParse(r.body);
    return s.success ? s.data : null;
  };
  const stop = async () => {
    const problems: string[] = [];
    const exit = await proc.stop('SIGTERM', 60_000, { group: false });
    clearInterval(scanner);
    scan();
    if (exit.code !== 0) problems.push(`controller ${opts.label} exited ${exit.code ?? exit.signal}`);
    // Its warnings and errors, by (constant) message: a SIGTERM timeout, an unexpected exit, …
    const warnings = new Map<string, number>();
    for (const line of proc.lines) {
      const f = parseLogLine(line);
      if (f && ['warn', 'error', 'fatal'].includes(String(f.level)))
        warnings.set(String(f.msg), (warnings.get(String(f.msg)) ?? 0) + 1);
    }
    if (warnings.size > 0)
      console.log(JSON.stringify({ controller: opts.label, warnings: Object.fromEntries(warnings) }));
    for (const pid of gatewayPids) {
      if (await waitForPidExit(pid, 10_000)) continue;
      problems.push(`gateway ${pid} of controller ${opts.label} outlived it`);
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
      }
    }
    return problems;
  };
  return {
    label: opts.label,
    proc,
    pid: proc.pid,
    port,
    adminPort,
    gatewayPort,
    gatewayPids,
    call,
    state,
    stop,
  };
}

/** The controller's state once the gateway runs, is ready, the proxy routes, and `pred` holds. */
async function waitServing(
  ctl: Ctl,
  pred: (s: State) => boolean,
  timeoutMs: number,
  pollMs = 100,
): Promise<State> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await ctl.state();
    if (s && s.gateway.state === 'running' && s.gateway.ready && s.proxy.state === 'routing' && pred(s))
      return s;
    if (ctl.proc.exitInfo()) throw new Error(`controller ${ctl.label} exited\n${logTail(ctl)}`);
    if (Date.now() > deadline) throw new Error(`controller ${ctl.label}: timed out waiting\n${logTail(ctl)}`);
    await sleep(pollMs);
  }
}

function logTail(ctl: Ctl, n = 30): string {
  return scrub(ctl.proc.lines.slice(-n).join('\n'));
}

function parseLogLine(line: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(line);
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** The first controller log line with message `msg` at or after `after` (ms), with its fields. */
function logEvent(
  ctl: Ctl,
  msg: string,
  after: number,
  match: (f: Record<string, unknown>) => boolean = () => true,
): { t: number; f: Record<string, unknown> } | null {
  for (const line of ctl.proc.lines) {
    if (!line.includes(msg)) continue;
    const f = parseLogLine(line);
    if (!f || f.msg !== msg) continue;
    const t = Date.parse(String(f.time));
    if (t >= after && match(f)) return { t, f };
  }
  return null;
}

const isChat = (r: UpstreamRequest) => r.path.endsWith('/chat/completions');

/** Resolves with the first log line `msg` (at or after `after`) once the controller writes it. */
async function waitLog(
  ctl: Ctl,
  msg: string,
  after: number,
  match: (f: Record<string, unknown>) => boolean,
  timeoutMs: number,
): Promise<{ t: number; f: Record<string, unknown> } | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const e = logEvent(ctl, msg, after, match);
    if (e || Date.now() > deadline || ctl.proc.exitInfo()) return e;
    await sleep(10);
  }
}

function standInArgs(upstream: FakeUpstream): string[] {
  return ['--gateway-cmd', `'${NODE}' '${STAND_IN}'`, '--provider-base-url', upstream.baseUrl];
}

// ---------------------------------------------------------------------------------------------
// 1. Rotation time with the real gateway: hold, surge, and the bare gateway's own restart

interface RotationResult {
  totalMs: number;
  parts: string;
  window: WindowStats;
}

interface WindowStats {
  requests: number;
  failed: number;
  /** Failed requests per client kind, e.g. `chat 2, healthz 40`. */
  failedByKind: string;
  failedList: string[];
  runRequests: number;
  runFailed: number;
  p50: number;
  p99: number;
  max: number;
  chat: string;
  baseline: string;
}

/** `p50 / p99 ms` of the outcomes, or `none` when there are none. */
function p50p99(outcomes: readonly RequestOutcome[]): string {
  if (outcomes.length === 0) return 'none completed';
  const l = latency(outcomes);
  return `p50 ${l.p50} / p99 ${l.p99} ms (${outcomes.length})`;
}

/** Requests that overlap [t0, tEnd] (the rotation window) against those that ended before t0. */
function windowStats(outcomes: readonly RequestOutcome[], t0: number, tEnd: number): WindowStats {
  const inWin = outcomes.filter((o) => o.endedAt >= t0 && o.startedAt <= tEnd);
  const before = outcomes.filter((o) => o.endedAt < t0);
  const lat = latency(inWin);
  const failed = inWin.filter((o) => !o.ok);
  const byKind = new Map<string, number>();
  for (const o of failed) byKind.set(o.kind, (byKind.get(o.kind) ?? 0) + 1);
  const chats = (xs: readonly RequestOutcome[]) => xs.filter((o) => o.kind !== 'healthz');
  return {
    requests: inWin.length,
    failed: failed.length,
    failedByKind: [...byKind].map(([k, n]) => `${k} ${n}`).join(', '),
    failedList: failures(inWin).slice(0, 3),
    runRequests: outcomes.length,
    runFailed: outcomes.filter((o) => !o.ok).length,
    p50: lat.p50,
    p99: lat.p99,
    max: lat.max,
    chat: p50p99(chats(inWin)),
    baseline: `all ${p50p99(before)}, chats ${p50p99(chats(before))}`,
  };
}

interface Subject {
  name: 'bare' | 'hold' | 'surge';
  rotate(key: string): Promise<RotationResult>;
  /** Controller RSS / private peaks over all rotations (controllers only). */
  memory(): { peakRss: number; peakPrivate: number; scrapes: number } | null;
  close(): Promise<string[]>;
}

async function controllerSubject(strategy: 'hold' | 'surge'): Promise<Subject> {
  const sb = createSandbox(`keyroll-bench-fd-${strategy}-`);
  const upstream = await startFakeUpstream({ keys: [KEY_A, KEY_B] });
  const ctl = await startController({
    sb,
    label: strategy,
    strategy,
    args: [
      ...OPENCLAW_BIN,
      '--provider-base-url',
      upstream.baseUrl,
      '--enable-chat-completions',
      '--ready-timeout',
      `${READY_TIMEOUT_MS}ms`,
    ],
  });
  const close = async () => {
    const problems = await ctl.stop();
    await upstream.close();
    sb.cleanup();
    return problems;
  };
  let peakRss = Number.NaN;
  let peakPrivate = Number.NaN;
  let scrapes = 0;
  try {
    const first = await waitServing(ctl, () => true, READY_TIMEOUT_MS + 60_000, 250);
    const cold = logEvent(ctl, 'Gateway ready', 0);
    if (cold)
      record(
        `real gateway first cold start under the ${strategy} controller (spawn → /readyz 200)`,
        Number(cold.f.readyMs),
        'ms',
        'all three subjects bootstrap at once, so this start competed for the CPU',
      );
    // One request of each kind proves the path before anything is timed.
    for (const kind of ['chat', 'chat-stream'] as const) {
      const run = startTraffic({ port: ctl.port, token: TOKEN, clients: [kind] });
      while (run.outcomes.length === 0) await sleep(50);
      await run.stop();
      const o = run.outcomes[0]!;
      if (!o.ok)
        throw new Error(`${strategy}: first ${kind} through the controller failed: ${o.status || o.error}`);
    }
    await sleep(2_000);
    record(`controller RSS idle, real gateway [${strategy}]`, rssMb(ctl.pid), 'MB');
    if (first.proxy.strategy !== strategy)
      throw new Error(`controller reports strategy ${first.proxy.strategy}`);
  } catch (err) {
    await close();
    throw err;
  }

  const rotate = async (key: string): Promise<RotationResult> => {
    const before = await waitServing(ctl, () => true, 120_000);
    const oldPid = before.gateway.pid!;
    const traffic = startTraffic({
      port: ctl.port,
      token: TOKEN,
      clients: ROTATION_CLIENTS,
      gapMs: TRAFFIC_GAP_MS,
    });
    const mem = sampleMemory(ctl.pid, 100);
    // /metrics in use through the rotation, as a Prometheus would scrape it (issue 14).
    const scraper = sampleControllerMetrics(ctl.adminPort, TOKEN, 500);
    let t0 = 0;
    let probeSentAt = Number.NaN;
    let oldCpu0 = Number.NaN;
    let cpuAtSwitch = { old: Number.NaN, new: Number.NaN };
    let first: UpstreamRequest;
    let after: State;
    let oldExitAt: number;
    try {
      await sleep(WARM_MS);
      t0 = Date.now();
      oldCpu0 = cpuOf(oldPid);
      const oldGone = waitForPidExit(oldPid, 120_000).then((gone) => (gone ? Date.now() : Number.NaN));
      const patch = await ctl.call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: key });
      if (patch.status !== 200) throw new Error(`${strategy}: patch answered ${patch.status}`);
      // As for the bare gateway, which gets one chat of the benchmark's own the moment its
      // /readyz is 200: one chat the moment the controller routes to the new gateway (its log
      // line), so neither side waits for a client's next turn.
      void waitLog(
        ctl,
        'Routing',
        t0,
        (f) => typeof f.pid === 'number' && f.pid !== oldPid,
        READY_TIMEOUT_MS,
      ).then((routed) => {
        if (!routed) return;
        probeSentAt = Date.now();
        const sent = chat(ctl.port, TOKEN).catch(() => null);
        // CPU both gateways used from the patch to the switch: the new one's start, and what the
        // old one (serving the clients) took from it.
        cpuAtSwitch = { old: cpuOf(oldPid) - oldCpu0, new: cpuOf(Number(routed.f.pid)) };
        return sent;
      });
      first = await upstream.waitForRequest(
        (r) => r.at >= t0 && r.key === key && isChat(r),
        READY_TIMEOUT_MS,
      );
      after = await waitServing(
        ctl,
        (s) => s.gateway.pid !== oldPid && s.proxy.lastRestart?.durationMs != null,
        READY_TIMEOUT_MS,
      );
      oldExitAt = await oldGone;
      await sleep(TAIL_MS);
    } finally {
      await traffic.stop();
      const scraped = await scraper.stop();
      scrapes += scraped.scrapes;
      const peaks = mem.stop();
      peakRss = Number.isNaN(peakRss) ? peaks.peakRss : Math.max(peakRss, peaks.peakRss);
      peakPrivate = Number.isNaN(peakPrivate) ? peaks.peakPrivate : Math.max(peakPrivate, peaks.peakPrivate);
    }
    const tEnd = Math.max(first.at, Number.isNaN(oldExitAt) ? first.at : oldExitAt);
    const window = windowStats(traffic.outcomes, t0, tEnd);
    const lr = after.proxy.lastRestart!;
    const newPid = after.gateway.pid;
    const spawned = logEvent(ctl, 'Gateway spawned', t0, (f) => f.pid === newPid);
    const ready = logEvent(ctl, 'Gateway ready', t0, (f) => f.pid === newPid);
    const readyMs = ready ? Number(ready.f.readyMs) : Number.NaN;
    let parts: string;
    const patched = logEvent(ctl, 'Env patched', t0);
    const since = (t: number | undefined) => (t === undefined || Number.isNaN(t) ? 'n/a' : `${t - t0}`);
    if (lr.strategy === 'surge') {
      const switched = logEvent(ctl, 'Switched to the surge gateway', t0);
      const yielded = logEvent(ctl, 'Old gateway yields the CPU to the surge gateway', t0);
      parts =
        `patch → surge gateway spawned ${spawned ? spawned.t - t0 : 'n/a'} ms, its cold start ${readyMs} ms, ` +
        `switch at ${switched ? switched.t - t0 : 'n/a'} ms, switch → first call with the new key ` +
        `${switched ? first.at - switched.t : 'n/a'} ms; old gateway drained and stopped ` +
        `${switched && !Number.isNaN(oldExitAt) ? oldExitAt - switched.t : 'n/a'} ms after the switch; ` +
        `timeline from the patch (ms): answered ${since(patched?.t)}, spawned ${since(spawned?.t)}, ready ${since(ready?.t)}, ` +
        `switched ${since(switched?.t)}, probe chat sent ${since(probeSentAt)}, upstream saw the new key ${since(first.at)}, ` +
        `old gateway exited ${since(oldExitAt)}; old gateway reniced ${since(yielded?.t)} ms ` +
        `(threads ${yielded?.f.threads ?? 'n/a'}, autogroup ${yielded?.f.autogroup ?? 'n/a'}); ` +
        `CPU from the patch to the switch: new gateway ${fmtCpu(cpuAtSwitch.new)}, old gateway ${fmtCpu(cpuAtSwitch.old)}`;
    } else {
      const stopped = logEvent(ctl, 'Gateway stopped', t0, (f) => f.pid === oldPid);
      const routed = logEvent(ctl, 'Routing', t0, (f) => f.pid === newPid);
      parts =
        `patch → old gateway drained and stopped ${stopped ? stopped.t - t0 : 'n/a'} ms, ` +
        `stopped → spawned ${stopped && spawned ? spawned.t - stopped.t : 'n/a'} ms, cold start ${readyMs} ms, ` +
        `routed → first call with the new key ${routed ? first.at - routed.t : 'n/a'} ms (probe chat sent ${since(probeSentAt)} ms after the patch); ` +
        `held ${after.proxy.lastHold?.heldRequests ?? 'n/a'} requests, longest wait ` +
        `${after.proxy.lastHold?.longestWaitMs ?? 'n/a'} ms, refused ${after.proxy.lastHold?.refused ?? 'n/a'}`;
    }
    parts += `; lastRestart {strategy: ${lr.strategy}, fallback: ${lr.fallback ?? 'null'}, durationMs: ${lr.durationMs}}`;
    if (lr.strategy !== strategy) parts += ` — FELL BACK from ${strategy}`;
    return { totalMs: first.at - t0, parts, window };
  };

  return {
    name: strategy,
    rotate,
    memory: () => ({ peakRss, peakPrivate, scrapes }),
    close,
  };
}

async function bareSubject(): Promise<Subject> {
  const sb = createSandbox('keyroll-bench-fd-bare-');
  const upstream = await startFakeUpstream({ keys: [KEY_A, KEY_B] });
  const port = await freePort();
  let gw: GatewayHandle | null = null;
  const close = async () => {
    const problems: string[] = [];
    if (gw) {
      const exit = await gw.stop(STOP_TIMEOUT_MS);
      if (exit.code !== 0) problems.push(`bare gateway exited ${exit.code ?? exit.signal}`);
    }
    await upstream.close();
    sb.cleanup();
    return problems;
  };
  const env = (key: string) => ({ OPENCLAW_GATEWAY_TOKEN: TOKEN, KILOCODE_API_KEY: key });
  try {
    await onboard(sb, {
      mode: 'ref',
      key: KEY_A,
      token: TOKEN,
      port,
      version: OPENCLAW,
      baseUrl: upstream.baseUrl,
    });
    pointAtUpstream(sb, upstream.baseUrl);
    gw = await startGateway(sb, { port, env: env(KEY_A), timeoutMs: READY_TIMEOUT_MS, version: OPENCLAW });
    record(
      'real gateway first cold start, bare (spawn → /readyz 200)',
      gw.readyMs,
      'ms',
      'all three subjects bootstrap at once, so this start competed for the CPU',
    );
    const r = await chat(port, TOKEN);
    if (r.status !== 200) throw new Error(`bare gateway: first chat answered ${r.status}`);
  } catch (err) {
    await close();
    throw err;
  }

  const rotate = async (key: string): Promise<RotationResult> => {
    // The same clients, straight at the gateway's port: what clients see without a front door.
    const traffic = startTraffic({ port, token: TOKEN, clients: ROTATION_CLIENTS, gapMs: TRAFFIC_GAP_MS });
    let t0 = 0;
    let tExit = 0;
    let tReady = 0;
    let readyMs = Number.NaN;
    let readyCpu = Number.NaN;
    let exitNote = '';
    let first: UpstreamRequest;
    try {
      await sleep(WARM_MS);
      t0 = Date.now();
      const exit = await gw!.stop(STOP_TIMEOUT_MS);
      tExit = Date.now();
      if (exit.code !== 0) exitNote = ` (exit ${exit.code ?? exit.signal})`;
      gw = null;
      gw = await startGateway(sb, { port, env: env(key), timeoutMs: READY_TIMEOUT_MS, version: OPENCLAW });
      tReady = Date.now();
      readyMs = gw.readyMs;
      readyCpu = cpuOf(gw.pid);
      const own = chat(port, TOKEN).catch(() => null);
      first = await upstream.waitForRequest(
        (r) => r.at >= t0 && r.key === key && isChat(r),
        READY_TIMEOUT_MS,
      );
      await own;
      await sleep(TAIL_MS);
    } finally {
      await traffic.stop();
    }
    const window = windowStats(traffic.outcomes, t0, first.at);
    const parts =
      `SIGTERM → exit ${tExit - t0} ms${exitNote}, spawn with the new key → /readyz 200 ${readyMs} ms, ` +
      `/readyz 200 → first call with the new key ${first.at - tReady} ms; CPU of the new gateway to /readyz 200 ${fmtCpu(readyCpu)}`;
    return { totalMs: first.at - t0, parts, window };
  };

  return { name: 'bare', rotate, memory: () => null, close };
}

async function benchRotation(): Promise<void> {
  console.log(JSON.stringify({ rotation: 'real gateway', openclaw: OPENCLAW }));
  // The three bootstrap at once; a failed one leaves the others to be closed here.
  const make = {
    bare: bareSubject,
    hold: () => controllerSubject('hold'),
    surge: () => controllerSubject('surge'),
  };
  const settled = await Promise.allSettled(
    (['bare', 'hold', 'surge'] as const).filter((n) => SUBJECTS.includes(n)).map((n) => make[n]()),
  );
  const subjects = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const problems: string[] = [];
  try {
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const totals: Record<Subject['name'], number[]> = { bare: [], hold: [], surge: [] };
    const windows: Record<Subject['name'], WindowStats[]> = { bare: [], hold: [], surge: [] };
    for (let run = 1; run <= RUNS; run++) {
      // Alternate keys (A → B → A …) and rotate the order, so no subject always goes first.
      const key = run % 2 === 1 ? KEY_B : KEY_A;
      const order = subjects.map((_, i) => subjects[(i + run - 1) % subjects.length]!);
      for (const s of order) {
        await sleep(SETTLE_MS);
        const r = await s.rotate(key);
        totals[s.name].push(r.totalMs);
        windows[s.name].push(r.window);
        const w = r.window;
        record(
          `rotation ${s.name} run ${run}: ${s.name === 'bare' ? 'SIGTERM' : 'patch'} → first upstream chat call with the new key`,
          r.totalMs,
          'ms',
          `${r.parts}; client requests in the rotation window ${w.requests}, failed ${w.failed}` +
            `${w.failed ? ` (${w.failedByKind}; first: ${w.failedList.join('; ')})` : ''}; whole run ${w.runRequests}, failed ${w.runFailed}; ` +
            `latency in the window p50 ${w.p50} / p99 ${w.p99} / max ${w.max} ms, chats only ${w.chat}; ` +
            `before the ${s.name === 'bare' ? 'SIGTERM' : 'patch'}: ${w.baseline}`,
        );
      }
    }
    const median = (xs: number[]) => quantile(xs, 0.5);
    for (const name of ['bare', 'hold', 'surge'] as const) {
      const ws = windows[name];
      if (ws.length === 0) continue;
      const failedSum = ws.reduce((a, w) => a + w.failed, 0);
      record(
        `rotation ${name}: median of ${RUNS}`,
        median(totals[name]),
        'ms',
        `runs ${totals[name].join(' / ')} ms`,
      );
      record(
        `rotation ${name}: failed client requests in the rotation windows`,
        failedSum,
        'requests',
        `of ${ws.reduce((a, w) => a + w.requests, 0)}; per run ${ws.map((w) => `${w.failed}${w.failed ? ` (${w.failedByKind})` : ''}`).join(' / ')}`,
      );
      record(
        `rotation ${name}: client latency p99 in the rotation window, worst run`,
        Math.max(...ws.map((w) => w.p99)),
        'ms',
        `p99 per run ${ws.map((w) => w.p99).join(' / ')} ms; p50 per run ${ws.map((w) => w.p50).join(' / ')} ms`,
      );
    }
    for (const name of ['hold', 'surge'] as const) {
      const m = subjects.find((s) => s.name === name)?.memory();
      if (m)
        record(
          `controller RSS peak during the real-gateway rotations [${name}]`,
          m.peakRss,
          'MB',
          `private ${fmt(m.peakPrivate)} MB; sampled every 100 ms while 3 clients ran through it and /metrics was scraped every 0.5 s (${m.scrapes} scrapes)`,
        );
    }
    const bare = median(totals.bare);
    if (totals.surge.length > 0 && totals.bare.length > 0) {
      const ratio = median(totals.surge) / bare;
      const perRun = totals.surge.map((s, i) => (s / totals.bare[i]!).toFixed(2)).join(' / ');
      record('rotation surge / bare (medians)', ratio, '', `per run ${perRun}`);
      target('rotation surge / bare restart (medians)', ratio.toFixed(2), '< 1', ratio < 1);
      console.log(`\nSURGE / BARE (medians of ${RUNS}): ${ratio.toFixed(2)} (per run ${perRun}; target < 1)`);
    }
    if (totals.hold.length > 0 && totals.bare.length > 0) {
      const holdOver = median(totals.hold) - bare;
      const holdPerRun = totals.hold.map((h, i) => round(h - totals.bare[i]!)).join(' / ');
      record('rotation hold − bare (medians)', holdOver, 'ms', `per run ${holdPerRun} ms`);
      target('rotation hold − bare restart (medians)', `${round(holdOver)} ms`, '< 1000 ms', holdOver < 1000);
      console.log(
        `HOLD − BARE (medians of ${RUNS}): ${round(holdOver)} ms (per run ${holdPerRun}; target ≤ +1000 ms)`,
      );
    }
    for (const name of ['hold', 'surge'] as const) {
      if (windows[name].length === 0) continue;
      const failedSum = windows[name].reduce((a, w) => a + w.failed, 0);
      target(`failed client requests during ${name} rotations`, String(failedSum), '0', failedSum === 0);
    }
    if (windows.bare.length > 0) {
      const bareFailed = windows.bare.reduce((a, w) => a + w.failed, 0);
      target('failed client requests during bare restarts (contrast)', String(bareFailed), '—', null);
    }
  } finally {
    for (const s of subjects) problems.push(...(await s.close().catch((e: Error) => [scrub(e.message)])));
    for (const p of problems) console.log(JSON.stringify({ problem: scrub(p) }));
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Proxy overhead per request (stand-in gateway)

async function benchOverhead(): Promise<void> {
  // The image's flags are what ships; the same bundle with Node's defaults shows what they cost.
  for (const launch of ['image', 'bundle'] as const) await overheadWith(launch);
}

async function overheadWith(launch: keyof typeof LAUNCH): Promise<void> {
  const label = LAUNCH_LABEL[launch];
  const sb = createSandbox('keyroll-bench-fd-ovh-');
  const upstream = await startFakeUpstream({ keys: [KEY_A] });
  const ctl = await startController({
    sb,
    label: `overhead-${launch}`,
    strategy: 'hold',
    args: standInArgs(upstream),
    launch,
  });
  try {
    const s = await waitServing(ctl, () => true, 60_000);
    const direct = s.proxy.target ?? ctl.gatewayPort;
    const requests: BenchRequest[] = [
      { label: 'GET /healthz', method: 'GET', path: '/healthz' },
      {
        label: 'small chat',
        method: 'POST',
        path: '/v1/chat/completions',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'hi' }] }),
      },
    ];
    for (const r of requests) {
      const p = await pairedLatency(direct, ctl.port, r, OVERHEAD_N, 200);
      const p50 = quantile(p.diff, 0.5);
      record(
        `proxy overhead, ${r.label}: p50 of (proxied − direct) [${label}]`,
        p50,
        'ms',
        `${p.diff.length} sequential pairs, keep-alive, errors ${p.errors}; direct p50 ${fmt(quantile(p.direct, 0.5), 3)} / p99 ${fmt(quantile(p.direct, 0.99), 3)} ms, ` +
          `proxied p50 ${fmt(quantile(p.proxied, 0.5), 3)} / p99 ${fmt(quantile(p.proxied, 0.99), 3)} ms`,
      );
      record(
        `proxy overhead, ${r.label}: p99 of (proxied − direct) [${label}]`,
        quantile(p.diff, 0.99),
        'ms',
      );
      if (launch === 'image')
        target(`proxy overhead p50, ${r.label}`, `${fmt(p50, 3)} ms`, '< 1 ms', p50 < 1);
    }
    // Throughput: direct, proxied, proxied, direct (ABBA), 4 s each, 10 keep-alive clients.
    for (const r of requests) {
      const d1 = await throughput(direct, r, 10, 4_000);
      // The controller's CPU per proxied request: unlike latency, barely moved by other load.
      const cpu0 = cpuMs(ctl.pid);
      const p1 = await throughput(ctl.port, r, 10, 4_000);
      const p2 = await throughput(ctl.port, r, 10, 4_000);
      const cpuPerRequest = (cpuMs(ctl.pid) - cpu0) / (p1.requests + p2.requests + p1.errors + p2.errors);
      const d2 = await throughput(direct, r, 10, 4_000);
      const d = (d1.perSecond + d2.perSecond) / 2;
      const p = (p1.perSecond + p2.perSecond) / 2;
      record(
        `throughput, ${r.label}, 10 keep-alive clients: direct [${label}]`,
        d,
        'req/s',
        `${round(d1.perSecond)} / ${round(d2.perSecond)}; errors ${d1.errors + d2.errors}`,
      );
      record(
        `throughput, ${r.label}, 10 keep-alive clients: through the controller [${label}]`,
        p,
        'req/s',
        `${round(p1.perSecond)} / ${round(p2.perSecond)}; errors ${p1.errors + p2.errors}; proxied / direct ${(p / d).toFixed(2)}`,
      );
      record(
        `controller CPU per proxied request, ${r.label} [${label}]`,
        cpuPerRequest,
        'ms',
        'user + system',
      );
    }
  } finally {
    const problems = await ctl.stop();
    for (const p of problems) console.log(JSON.stringify({ problem: p }));
    await upstream.close();
    sb.cleanup();
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Controller memory while proxying (stand-in gateway)

async function benchMemory(): Promise<void> {
  const sb = createSandbox('keyroll-bench-fd-mem-');
  const upstream = await startFakeUpstream({ keys: [KEY_A, KEY_B] });
  const ctl = await startController({ sb, label: 'memory', strategy: 'hold', args: standInArgs(upstream) });
  try {
    const before = await waitServing(ctl, () => true, 60_000);
    await sleep(3_000);
    const idleRss = rssMb(ctl.pid);
    record('controller RSS idle (stand-in gateway)', idleRss, 'MB');
    record('controller private memory idle', privateMb(ctl.pid), 'MB');
    // The controller's own process.memoryUsage(), from its /metrics (scraped all along: the
    // figures are with /metrics in use, as a Prometheus would scrape it).
    const idleMetrics = await scrapeMetrics(ctl.adminPort, TOKEN);
    const mb = (n: string, m: Map<string, number>) => fmt((m.get(n) ?? Number.NaN) / 1024 / 1024);
    record(
      'controller V8 heap used idle (its /metrics)',
      (idleMetrics.get('nodejs_heap_size_used_bytes') ?? Number.NaN) / 1024 / 1024,
      'MB',
      `heap total ${mb('nodejs_heap_size_total_bytes', idleMetrics)}, external ${mb('nodejs_external_memory_bytes', idleMetrics)}, ` +
        `array buffers ${mb('nodejs_array_buffers_bytes', idleMetrics)} MB`,
    );
    target('controller RSS idle', `${fmt(idleRss)} MB`, '< 60 MB', idleRss < 60);

    const traffic = startTraffic({
      port: ctl.port,
      token: TOKEN,
      clients: ['chat', 'chat', 'chat', 'healthz', 'healthz'],
    });
    // Each socket sends 50 messages/s of 0.5 KB; the stand-in echoes every one.
    const sockets = startWsLoad(
      ctl.port,
      '/',
      10,
      JSON.stringify({ type: 'bench', data: 'x'.repeat(512) }),
      20,
    );
    const streams = startStreamClients(ctl.port, '/__standin/stream?n=40&ms=10', 5);
    // Half the time steady load; then one hold rotation under the same load.
    let mem = sampleMemory(ctl.pid, 50);
    let scraper = sampleControllerMetrics(ctl.adminPort, TOKEN, 500);
    await sleep(10_000);
    const mid = await ctl.state();
    const openMid = sockets.open();
    const steady = mem.stop();
    const steadyMetrics = await scraper.stop();
    mem = sampleMemory(ctl.pid, 50);
    scraper = sampleControllerMetrics(ctl.adminPort, TOKEN, 500);
    const t0 = Date.now();
    const patch = await ctl.call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEY_B });
    if (patch.status !== 200) throw new Error(`memory: patch answered ${patch.status}`);
    const after = await waitServing(ctl, (s) => s.gateway.pid !== before.gateway.pid, 30_000);
    const rotationMs = Date.now() - t0;
    await sleep(Math.max(0, 10_000 - rotationMs));
    const sse = await streams.stop();
    const ws = await sockets.stop();
    await traffic.stop();
    const rotating = mem.stop();
    const rotatingMetrics = await scraper.stop();
    const fails = failures(traffic.outcomes);
    const heapNote = (m: Awaited<ReturnType<typeof scraper.stop>>) =>
      `${m.scrapes} scrapes of /metrics every 0.5 s; peaks: ${MEMORY_SERIES.map((n) => `${n.replace(/^(nodejs_|process_)/, '')} ${fmt(m.peaksMb[n])}`).join(', ')} MB`;
    const load =
      `${traffic.outcomes.length} HTTP requests (3 chat + 2 /healthz clients, failed ${fails.length}), ` +
      `${sse.streams} SSE streams of 40 events (5 clients, failed ${sse.failed}), ` +
      `10 WebSockets (${openMid} open and ${mid?.proxy.websockets ?? 'n/a'} proxied mid-load, ${ws.sent} messages sent, ` +
      `${ws.received} received, closes by code ${JSON.stringify(ws.closes)})`;
    record('controller RSS peak under load, steady 10 s', steady.peakRss, 'MB', load);
    record('controller private memory peak under load, steady 10 s', steady.peakPrivate, 'MB');
    record(
      'controller V8 heap used peak under load, steady 10 s (its /metrics)',
      steadyMetrics.peaksMb.nodejs_heap_size_used_bytes,
      'MB',
      heapNote(steadyMetrics),
    );
    record(
      'controller RSS peak under the same load across one hold rotation, 10 s',
      rotating.peakRss,
      'MB',
      `rotation patch → new gateway serving ${rotationMs} ms; held ${after.proxy.lastHold?.heldRequests ?? 'n/a'} requests`,
    );
    record('controller private memory peak across the rotation', rotating.peakPrivate, 'MB');
    record(
      'controller V8 heap used peak across the rotation (its /metrics)',
      rotatingMetrics.peaksMb.nodejs_heap_size_used_bytes,
      'MB',
      heapNote(rotatingMetrics),
    );
    console.log(
      `\nCONTROLLER RSS (MB, target < 60): idle ${fmt(idleRss)}, steady load peak ${fmt(steady.peakRss)}, ` +
        `peak across a hold rotation under load ${fmt(rotating.peakRss)} [${LAUNCH_LABEL.image}]`,
    );
    const peak = Math.max(steady.peakRss, rotating.peakRss);
    target('controller RSS peak while proxying', `${fmt(peak)} MB`, '< 60 MB', peak < 60);
    await sleep(2_000);
    record('controller RSS 2 s after the load', rssMb(ctl.pid), 'MB');
    record('controller VmHWM (kernel high-water mark since start)', hwmMb(ctl.pid), 'MB');
  } finally {
    const problems = await ctl.stop();
    for (const p of problems) console.log(JSON.stringify({ problem: p }));
    await upstream.close();
    sb.cleanup();
  }
}

// ---------------------------------------------------------------------------------------------

const parts: Record<string, () => Promise<void>> = {
  overhead: benchOverhead,
  memory: benchMemory,
  rotation: benchRotation,
};
const only = process.env.BENCH_ONLY?.split(',').map((s) => s.trim());
const unknown = only?.filter((p) => !(p in parts)) ?? [];
if (unknown.length > 0) {
  console.error(`BENCH_ONLY: unknown part(s) ${unknown.join(', ')}; parts: ${Object.keys(parts).join(', ')}`);
  process.exit(2);
}
console.log(
  JSON.stringify({
    controller: `node ${image.nodeFlags.join(' ')} dist/keyroll.js ${image.args.join(' ')} (${image === shipped ? "the gateway image's ENTRYPOINT" : 'BENCH_NODE_FLAGS, NOT the image flags'})`,
    node: process.version,
    loadavg: loadavg().map((l) => Number(l.toFixed(2))),
    at: new Date().toISOString(),
  }),
);
let failed = false;
try {
  for (const [name, run] of Object.entries(parts)) {
    if (only && !only.includes(name)) continue;
    try {
      await run();
    } catch (err) {
      failed = true;
      console.error(
        `front-door bench: part ${name} failed: ${scrub(err instanceof Error ? err.message : String(err))}`,
      );
    }
  }
} finally {
  await killAllTracked();
}
console.log('\n| figure | value |\n|---|---|');
for (const r of results) console.log(`| ${r.name} | ${r.value} ${r.unit}${r.note ? ` (${r.note})` : ''} |`);
console.log('\n| target | measured | goal | |\n|---|---|---|---|');
for (const t of targets)
  console.log(
    `| ${t.figure} | ${t.measured} | ${t.target} | ${t.met === null ? '' : t.met ? 'met' : '**not met**'} |`,
  );
process.exit(failed ? 1 : 0);
