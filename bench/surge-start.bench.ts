// Where a surge gateway's start loses time (issue 10): the real OpenClaw 2026.6.8 gateway, started
// on one state dir the ways a restart starts it, each condition timed from the spawn to /readyz 200
// and on to the first upstream call with the new key, with the CPU both gateways used meanwhile.
//   lone            the old gateway stopped first (a bare or hold restart)
//   beside-idle     beside the old gateway, which serves nobody
//   beside-load     beside the old gateway serving the front-door bench's rotation clients
//   beside-yield    the same, every thread of the old gateway at niceness 10 from the spawn on
//                   (the supervisor's own setGroupNice, as a surge does it)
//   beside-yield-autogroup   the same, its autogroup too (the supervisor's surgeAutogroup)
//   …-cold          the same with Node's compile cache emptied first (OpenClaw 2026.6.8 keeps it
//                   in $TMPDIR/node-compile-cache; Node writes it only when a process exits)
//   node bench/surge-start.bench.ts
//   BENCH_CONDS=lone,beside-load,beside-yield   conditions, in this order, every run (the default)
//   BENCH_RUNS=N                                 rounds of all conditions (default 2)
import { rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { setGroupNice } from '../src/controller/supervisor.ts';
import { startFakeUpstream } from '../test/support/fake-upstream.ts';
import { chat, freePort } from '../test/support/http.ts';
import { type GatewayHandle, onboard, pointAtUpstream, startGateway } from '../test/support/openclaw.ts';
import { createSandbox } from '../test/support/sandbox.ts';
import { type RequestOutcome, startTraffic } from '../test/support/traffic.ts';
import { cpuMs } from './support/proc-stats.ts';

const TOKEN = 'bench-token-surge-start-0123456789';
const KEY_A = 'bench-key-A-surge-start-aaaaaaaa';
const KEY_B = 'bench-key-B-surge-start-bbbbbbbb';
const CONDS = (process.env.BENCH_CONDS ?? 'lone,beside-load,beside-yield').split(',').map((c) => c.trim());
const RUNS = Number(process.env.BENCH_RUNS ?? 2);
const KNOWN = ['lone', 'beside-idle', 'beside-load', 'beside-yield', 'beside-yield-autogroup'];
for (const c of CONDS)
  if (!KNOWN.includes(c.replace(/-cold$/, ''))) throw new Error(`unknown condition ${c}`);
/** The front-door bench's rotation clients (bench/front-door.bench.ts). */
const CLIENTS = ['chat', 'chat-stream', 'healthz'] as const;
const GAP_MS = 20;
const WARM_MS = 5_000;
const SETTLE_MS = 3_000;

for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cpuOf = (pid: number) => {
  try {
    return cpuMs(pid);
  } catch {
    return Number.NaN;
  }
};
const s1 = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : 'n/a');

function chatsIn(outcomes: readonly RequestOutcome[], from: number, to: number) {
  const inWin = outcomes.filter((o) => o.endedAt >= from && o.startedAt <= to);
  const ms = inWin
    .filter((o) => o.kind !== 'healthz')
    .map((o) => o.endedAt - o.startedAt)
    .sort((a, b) => a - b);
  const q = (p: number) => (ms.length ? ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]! : Number.NaN);
  return {
    requests: inWin.length,
    failed: inWin.filter((o) => !o.ok).length,
    chats: ms.length,
    p50: q(0.5),
    max: q(1),
  };
}

const sb = createSandbox('keyroll-bench-surge-start-');
const upstream = await startFakeUpstream({ keys: [KEY_A, KEY_B] });
const ports = [await freePort(), await freePort()] as const;
const env = (key: string) => ({ OPENCLAW_GATEWAY_TOKEN: TOKEN, KILOCODE_API_KEY: key });
let gw: GatewayHandle | null = null;
try {
  await onboard(sb, { mode: 'ref', key: KEY_A, token: TOKEN, port: ports[0] });
  pointAtUpstream(sb, upstream.baseUrl);
  // One start and stop first, so the compile cache holds the gateway's modules (as after any
  // earlier gateway of a pod exited), then the gateway every condition starts beside or after.
  gw = await startGateway(sb, { port: ports[0], env: env(KEY_A) });
  await chat(ports[0], TOKEN);
  await gw.stop();
  gw = await startGateway(sb, { port: ports[0], env: env(KEY_A) });
  await chat(ports[0], TOKEN);
  let key = KEY_A;
  for (let run = 1; run <= RUNS; run++) {
    for (const cond of CONDS) {
      await sleep(SETTLE_MS);
      const old: GatewayHandle = gw;
      const next = key === KEY_A ? KEY_B : KEY_A;
      const loaded = cond.startsWith('beside-load') || cond.startsWith('beside-yield');
      const traffic = loaded
        ? startTraffic({ port: old.port, token: TOKEN, clients: [...CLIENTS], gapMs: GAP_MS })
        : null;
      if (traffic) await sleep(WARM_MS);
      const t0 = Date.now();
      const oldCpu0 = cpuOf(old.pid);
      const lone = cond.startsWith('lone');
      if (lone) await old.stop();
      const tSpawn = Date.now();
      let yielded = '';
      if (cond.startsWith('beside-yield')) {
        const r = await setGroupNice(old.pid, 10, null, cond.includes('autogroup'));
        yielded = `, old reniced (threads ${r.threads}, autogroup ${r.autogroup})`;
      }
      if (cond.endsWith('-cold'))
        rmSync(join(sb.tmpDir, 'node-compile-cache'), { recursive: true, force: true });
      const port = lone ? old.port : old.port === ports[0] ? ports[1] : ports[0];
      const started = await startGateway(sb, { port, env: env(next) });
      gw = started;
      const tReady = Date.now();
      const newCpu = cpuOf(started.pid);
      const oldCpu = lone ? Number.NaN : cpuOf(old.pid) - oldCpu0;
      const sent = chat(port, TOKEN).catch(() => null);
      const first = await upstream.waitForRequest(
        (r) => r.at >= t0 && r.key === next && r.path.endsWith('/chat/completions'),
        400_000,
      );
      await sent;
      await traffic?.stop();
      if (!lone) await old.stop();
      key = next;
      const w = traffic ? chatsIn(traffic.outcomes, tSpawn, tReady) : null;
      console.log(
        JSON.stringify({
          name: `surge start, ${cond}, run ${run}: spawn → first upstream call with the new key`,
          value: first.at - tSpawn,
          unit: 'ms',
          note:
            `spawn → /readyz 200 ${tReady - tSpawn} ms, → first call ${first.at - tReady} ms` +
            `${lone ? `, after the old one stopped in ${tSpawn - t0} ms` : ''}; CPU to /readyz 200: new ` +
            `${s1(newCpu)}${lone ? '' : `, old ${s1(oldCpu)}`}${yielded}` +
            (w
              ? `; clients while it started: ${w.requests} requests, ${w.failed} failed, chats ${w.chats} ` +
                `(p50 ${w.p50} / max ${w.max} ms)`
              : '') +
            `; load average ${loadavg()[0]!.toFixed(2)}`,
        }),
      );
    }
  }
} finally {
  await gw?.stop().catch(() => undefined);
  await upstream.close();
  sb.cleanup();
}
