// Reconcile fleet benchmark: 500 simulated targets on loopback (one simulator process), one
// rotation pass per concurrency level with keyroll's own reconciler (`runPass`, as
// `keyroll reconcile --once` runs it), then a converged pass. Prints time to converge, keyroll's
// CPU per target per pass, and keyroll's peak RSS. The simulator's CPU and memory are not counted.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { silentLogger } from '../src/log.ts';
import { systemClock } from '../src/clock.ts';
import { runPass } from '../src/engine/pass.ts';
import type { Target } from '../src/engine/target.ts';
import { httpControllerClient } from '../src/reconcile/controller-client.ts';
import { DEFAULT_RETRY } from '../src/reconcile/retry.ts';

const TARGETS = Number(process.env.BENCH_TARGETS ?? 500);
const RESTART_MS = 200;
const LEVELS = [10, 50, 100, 250];
const TOKEN = 'bench-token-fleet-0123456789abcdef';

const sim = spawn(
  process.execPath,
  [new URL('./support/simulated-fleet.ts', import.meta.url).pathname, String(TARGETS)],
  {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, FLEET_TOKEN: TOKEN, FLEET_KEY: 'bench-key-0', RESTART_MS: String(RESTART_MS) },
  },
);
const first = await new Promise<string>((resolve, reject) => {
  const rl = createInterface({ input: sim.stdout! });
  rl.once('line', resolve);
  sim.once('exit', (code) => reject(new Error(`simulator exited ${code}`)));
  setTimeout(() => reject(new Error('simulator did not start within 120 s')), 120_000).unref();
});
const { urls } = JSON.parse(first) as { urls: string[] };

const targets: Target[] = urls.map((url, i) => ({
  name: `sim-${i}`,
  url,
  labels: {},
  token: TOKEN,
  client: httpControllerClient({ url, token: TOKEN, timeoutMs: 10_000 }),
}));

let peakRss = 0;
const sampler = setInterval(() => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}, 20);

async function pass(version: number, concurrency: number) {
  const cpu = process.cpuUsage();
  const started = performance.now();
  const result = await runPass(targets, {
    key: { key: `bench-key-${version}`, version: `v${version}` },
    spec: { envVar: 'KILOCODE_API_KEY', delivery: 'restart' },
    rollout: { concurrency, maxUnavailable: concurrency, failureBudget: 1, paused: false },
    dryRun: false,
    env: {
      clock: systemClock,
      log: silentLogger(),
      retry: DEFAULT_RETRY,
      deadlineMs: 60_000,
      pollIntervalMs: 50,
      signal: AbortSignal.timeout(600_000),
    },
  });
  const ms = performance.now() - started;
  const used = process.cpuUsage(cpu);
  return { ms, cpuMsPerTarget: (used.user + used.system) / 1000 / TARGETS, summary: result.summary };
}

const rows: string[] = [];
console.log(
  `reconcile fleet: ${TARGETS} simulated targets (restart ${RESTART_MS} ms each), Node ${process.version}`,
);
let version = 1;
for (const c of LEVELS) {
  const rotate = await pass(version++, c);
  const again = await pass(version - 1, c);
  const line =
    `| ${c} | ${(rotate.ms / 1000).toFixed(2)} s | ${rotate.summary.converged}/${rotate.summary.total} ` +
    `| ${rotate.cpuMsPerTarget.toFixed(2)} ms | ${(again.ms / 1000).toFixed(2)} s, ${again.summary.patched} patched ` +
    `| ${again.cpuMsPerTarget.toFixed(2)} ms |`;
  console.log(line);
  rows.push(line);
  if (rotate.summary.converged !== TARGETS || again.summary.patched !== 0) process.exitCode = 1;
}
clearInterval(sampler);
console.log(
  '\n| concurrency (= maxUnavailable) | rotation pass | converged | keyroll CPU / target | converged pass | CPU / target |',
);
console.log('|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
console.log(`\nkeyroll peak RSS during all passes: ${(peakRss / 1e6).toFixed(1)} MB`);
sim.kill('SIGTERM');
await new Promise((r) => sim.once('exit', r));
