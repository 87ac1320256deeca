// Reconcile fleet benchmark: BENCH_TARGETS simulated targets (default 500) on loopback, served by
// one simulator process; per concurrency level one rotation pass (every target gets a new key, is
// restarted and verified) and then a converged pass (one GET /_kilo/state per target, nothing to
// do). Each pass runs in a fresh keyroll process (bench/support/fleet-pass.ts) started with the
// reconcile CronJob's Node flags, as the CronJob runs one pass per Job, so keyroll's
// time, CPU and peak RSS are its own: the simulator's are measured apart and printed beside them.
//   BENCH_TARGETS=10000 npm run bench -- reconcile-fleet
//   BENCH_LEVELS=250,1000             concurrency levels (= maxUnavailable); default 10,50,100,250,
//                                     or 250,1000 above 1,000 targets
//   BENCH_KEYROLL_NODE_FLAGS="…"      Node flags instead of the CronJob's (experiments); what a
//                                     pass prints besides its JSON (--trace-gc) goes to stderr,
//                                     summed per pass by bench/support/gc-summary.ts
//   BENCH_KEEP_RESULTS=1              keep every target's result (reconcile --targets); default: streamed,
//                                     none kept, as the GatewayKey engine runs the CronJob's pass
//   BENCH_CPU_PROF=dir                write each pass's --cpu-prof profile to dir (bundle not minified),
//                                     and the simulator's whole life as simulator.cpuprofile
//   BENCH_ALLOC_PROF=dir              write each pass's sampling allocation profile to dir
//                                     (summed by bench/support/alloc-summary.ts)
//   BENCH_HEAP_SNAPSHOT=dir           write a heap snapshot of each pass to dir, 1.5 s into it
//                                     (BENCH_HEAP_SNAPSHOT_MS) or at its end if sooner (summed, and
//                                     retained per target in flight, by bench/support/heap-summary.ts)
//   FLEET_WAIT=0                      the simulated controllers answer every state read at once (an
//                                     older keyroll controller), so the reconciler polls; default:
//                                     they hold a read that asks to wait, as keyroll's controller does
//   BENCH_TW_WAIT=0                   do not wait for the host's TCP connections in TIME_WAIT to expire
//                                     before the simulator starts and before each pass (see quietTimeWait)
//   BENCH_CLIENT_MODULE=path          bundle this controller-client module instead of src's (an
//                                     older copy, for a before/after comparison on the same tree)
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { build } from 'esbuild';
import { containerCommand } from '../test/support/image-command.ts';

const TARGETS = Number(process.env.BENCH_TARGETS ?? 500);
const RESTART_MS = 200;
const LEVELS = (process.env.BENCH_LEVELS ?? (TARGETS > 1000 ? '250,1000' : '10,50,100,250'))
  .split(',')
  .map(Number);
const TOKEN = 'bench-token-fleet-0123456789abcdef';
const CPU_PROF = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : null;
const NODE_FLAGS = [
  ...(process.env.BENCH_KEYROLL_NODE_FLAGS?.split(' ').filter(Boolean) ??
    containerCommand('operator', 'components/reconcile-cronjob/cronjob.yaml', 'CronJob', 'reconcile', '/app')
      .nodeFlags),
  ...(CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${CPU_PROF}`] : []),
];

// The pass as the image runs code: one esbuild bundle, builtins taken with getBuiltinModule (as
// scripts/build.mjs does, so node:http does not load undici), no type stripping at run time.
const bundleDir = mkdtempSync(join(tmpdir(), 'keyroll-fleet-pass-'));
process.on('exit', () => rmSync(bundleDir, { recursive: true, force: true }));
const passScript = join(bundleDir, 'fleet-pass.mjs');
const clientModule = process.env.BENCH_CLIENT_MODULE ? resolve(process.env.BENCH_CLIENT_MODULE) : null;
const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
await build({
  entryPoints: [new URL('./support/fleet-pass.ts', import.meta.url).pathname],
  outfile: passScript,
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node22.19',
  minifyWhitespace: !CPU_PROF,
  minifySyntax: !CPU_PROF,
  banner: {
    js: "import { createRequire as __keyrollRequire } from 'node:module';\nconst require = __keyrollRequire(import.meta.url);",
  },
  logLevel: 'warning',
  plugins: [
    {
      name: 'bench-pass',
      setup(b) {
        b.onResolve({ filter: /controller-client\.ts$/ }, (args) =>
          clientModule && !args.importer.startsWith(resolve(clientModule, '..'))
            ? { path: clientModule }
            : undefined,
        );
        b.onResolve({ filter: /^[a-z_:/]+$/ }, (args) =>
          builtins.has(args.path) && args.kind === 'import-statement'
            ? { path: args.path.replace(/^node:/, ''), namespace: 'node-builtin' }
            : undefined,
        );
        b.onLoad({ filter: /.*/, namespace: 'node-builtin' }, (args) => ({
          contents: `module.exports = process.getBuiltinModule(${JSON.stringify(`node:${args.path}`)});`,
          loader: 'js',
        }));
      },
    },
  ],
});

/**
 * TCP connections in TIME_WAIT on this host (Linux: /proc/net/sockstat), or null. Whichever side
 * closes a connection first keeps it so for a minute, holding its local port. A pass leaves up to
 * one per target; the next pass's connects then search longer for a free port (keyroll's CPU per
 * target +40 % measured with 20,000 left by the run before, BENCHMARKS.md, session 9), and the
 * simulator may find no port to listen on.
 */
function timeWait(): number | null {
  try {
    const m = /\btw (\d+)/.exec(readFileSync('/proc/net/sockstat', 'latin1'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * Waits (at most 75 s: TIME_WAIT lasts 60 s on Linux) until at most TW_QUIET connections are in
 * TIME_WAIT: a CronJob pass starts in a fresh pod, with a network namespace of its own and none.
 * BENCH_TW_WAIT=0 skips it (and the figures then carry the runs before).
 */
const TW_QUIET = 1_000;
async function quietTimeWait(): Promise<void> {
  if (process.env.BENCH_TW_WAIT === '0') return;
  let tw = timeWait();
  if (tw === null || tw <= TW_QUIET) return;
  console.log(`waiting for ${tw} TCP connections in TIME_WAIT to expire (a CronJob pass starts with none)`);
  const until = Date.now() + 75_000;
  while (tw !== null && tw > TW_QUIET && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 1_000));
    tw = timeWait();
  }
}

await quietTimeWait();
const sim = spawn(
  process.execPath,
  [
    ...(CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${CPU_PROF}`, '--cpu-prof-name=simulator.cpuprofile'] : []),
    new URL('./support/simulated-fleet.ts', import.meta.url).pathname,
    String(TARGETS),
  ],
  {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, FLEET_TOKEN: TOKEN, FLEET_KEY: 'bench-key-0', RESTART_MS: String(RESTART_MS) },
  },
);
process.on('exit', () => sim.kill('SIGKILL'));
const simLines = createInterface({ input: sim.stdout! });
const nextSimLine = () =>
  new Promise<string>((resolve, reject) => {
    simLines.once('line', resolve);
    sim.once('exit', (code) => reject(new Error(`simulator exited ${code}`)));
    setTimeout(() => reject(new Error('simulator did not answer within 300 s')), 300_000).unref();
  });
const { urls } = JSON.parse(await nextSimLine()) as { urls: string[] };

interface SimStats {
  get: number;
  post: number;
  cpuMs: number;
  rssMb: number;
}
async function simStats(): Promise<SimStats> {
  const line = nextSimLine();
  sim.stdin!.write('stats\n');
  return JSON.parse(await line) as SimStats;
}

interface PassOut {
  ms: number;
  cpuMs: number;
  peakRssMb: number;
  summary: { total: number; converged: number; patched: number };
}

async function pass(
  version: number,
  concurrency: number,
): Promise<PassOut & { sim: SimStats; timeWait: number | null }> {
  await quietTimeWait();
  await simStats(); // resets the request counts
  const tw = timeWait();
  const child = spawn(process.execPath, [...NODE_FLAGS, passScript], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => {
    out += c.toString('utf8');
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  child.stdin!.end(
    JSON.stringify({ urls, token: TOKEN, key: `bench-key-${version}`, version: `v${version}`, concurrency }),
  );
  const code = await exited;
  if (code !== 0) throw new Error(`keyroll pass exited ${code}: ${out.slice(0, 2000)}`);
  // The pass's JSON is its last line: --trace-gc and the like write there too, and go to stderr.
  const lines = out.trimEnd().split('\n');
  const r = JSON.parse(lines.pop()!) as PassOut;
  if (lines.length > 0) process.stderr.write(`${lines.join('\n')}\n`);
  return { ...r, sim: await simStats(), timeWait: tw };
}

const simBefore = await simStats();
console.log(
  `reconcile fleet: ${TARGETS} simulated targets (restart ${RESTART_MS} ms each), Node ${process.version}, ` +
    `keyroll flags: ${NODE_FLAGS.join(' ') || '(none)'}${clientModule ? `, client ${clientModule}` : ''}; simulator RSS ${simBefore.rssMb.toFixed(0)} MB`,
);
const rows: string[] = [];
let peak = 0;
let version = 1;
for (const c of LEVELS) {
  const rotate = await pass(version++, c);
  const again = await pass(version - 1, c);
  peak = Math.max(peak, rotate.peakRssMb, again.peakRssMb);
  const bound = (Math.ceil(TARGETS / c) * RESTART_MS) / 1000;
  const perTarget = (ms: number) => `${(ms / TARGETS).toFixed(3)} ms`;
  const line =
    `| ${c} | ${(rotate.ms / 1000).toFixed(2)} s (bound ${bound.toFixed(1)} s, ×${(rotate.ms / 1000 / bound).toFixed(2)}) ` +
    `| ${rotate.summary.converged}/${rotate.summary.total}, ${rotate.summary.patched} patched, ${rotate.sim.get} GETs ` +
    `| ${perTarget(rotate.cpuMs)} | ${rotate.peakRssMb.toFixed(1)} MB | ${perTarget(rotate.sim.cpuMs)} ` +
    `| ${(again.ms / 1000).toFixed(2)} s, ${again.summary.patched} patched, ${again.sim.get} GETs ` +
    `| ${perTarget(again.cpuMs)} | ${again.peakRssMb.toFixed(1)} MB | ${perTarget(again.sim.cpuMs)} |`;
  console.log(line);
  console.log(
    `  (TCP connections in TIME_WAIT on the host before the passes: ${rotate.timeWait} and ${again.timeWait})`,
  );
  rows.push(line);
  if (
    rotate.summary.converged !== TARGETS ||
    rotate.sim.post !== TARGETS ||
    again.summary.patched !== 0 ||
    again.sim.post !== 0 ||
    again.sim.get !== TARGETS
  )
    process.exitCode = 1;
}
console.log(
  '\n| concurrency (= maxUnavailable) | rotation pass | converged | keyroll CPU / target | keyroll peak RSS | simulator CPU / target ' +
    '| converged pass | keyroll CPU / target | keyroll peak RSS | simulator CPU / target |',
);
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
console.log(`\nkeyroll peak RSS, highest of all passes: ${peak.toFixed(1)} MB`);
sim.kill('SIGTERM');
await new Promise((r) => sim.once('exit', r));
