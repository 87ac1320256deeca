// One reconcile pass over the simulated fleet in a fresh process, as the reconcile CronJob runs
// one pass per Job: the benchmark bundles this file as `npm run build` bundles the CLI (no
// TypeScript stripping at run time) and starts it with the operator image's Node flags. It runs
// keyroll's own pass (`runPass`, what `keyroll reconcile --once` runs) with the CLI's logger
// (warn level, secret scrub) and prints one JSON line: pass time, this process's CPU during the
// pass, and its peak RSS over its whole life (module loading included: the CronJob pays it too).
//   stdin: {"urls": [...], "token": "...", "key": "...", "version": "...", "concurrency": N}
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { getHeapStatistics, writeHeapSnapshot } from 'node:v8';
import { systemClock } from '../../src/clock.ts';
import { runPass } from '../../src/engine/pass.ts';
import type { Target } from '../../src/engine/target.ts';
import { createLogger, SecretRegistry } from '../../src/log.ts';
import { httpControllerClient } from '../../src/reconcile/controller-client.ts';
import { DEFAULT_RETRY } from '../../src/reconcile/retry.ts';

interface Input {
  urls: string[];
  token: string;
  key: string;
  version: string;
  concurrency: number;
}
const input = JSON.parse(readFileSync(0, 'utf8')) as Input;
const secrets = new SecretRegistry();
secrets.add(input.token);
secrets.add(input.key);
let logBytes = 0;
const log = createLogger({
  level: 'warn',
  secrets,
  destination: {
    write: (line: string) => {
      logBytes += line.length;
      if (process.env.BENCH_DEBUG) process.stderr.write(line);
    },
  },
});

// Clients are made as the pass reaches each target, as the GatewayKey engine makes them. The pass
// pulls a target when it has room for one, so targets in flight = pulled − finished.
let pulled = 0;
let finished = 0;
function* targets(): Generator<Target> {
  for (const [i, url] of input.urls.entries()) {
    pulled++;
    yield {
      name: `sim-${i}`,
      url,
      labels: {},
      token: input.token,
      client: httpControllerClient({ url, token: input.token, timeoutMs: 10_000 }),
    };
  }
}

// Where the resident memory goes: the heap's peaks, sampled (RSS comes from the kernel's maximum).
// From V8's own counters: process.memoryUsage() also reads the RSS from /proc, and showed as
// 1.3 % of a profiled rotation pass at 10,000 targets (self time), CPU the CronJob does not spend.
const heap = { used: 0, total: 0, external: 0 };
const sampler = setInterval(() => {
  const m = getHeapStatistics();
  heap.used = Math.max(heap.used, m.used_heap_size);
  heap.total = Math.max(heap.total, m.total_heap_size);
  heap.external = Math.max(heap.external, m.external_memory);
}, 100);
// As the GatewayKey engine runs a pass that is not a dry run (the CronJob's `reconcile --kube`):
// results stream to a fold and none is kept. BENCH_KEEP_RESULTS=1 keeps them, as
// `reconcile --targets` does to print its table.
const keepResults = process.env.BENCH_KEEP_RESULTS === '1';
// BENCH_ALLOC_PROF=dir: a sampling profile of everything the pass allocates (collected objects
// included), written to dir as alloc.<pid>.heapprofile (Chrome DevTools, or self size by function).
const allocDir = process.env.BENCH_ALLOC_PROF;
const inspector = allocDir ? new (await import('node:inspector/promises')).Session() : null;
if (inspector) {
  inspector.connect();
  await inspector.post('HeapProfiler.startSampling', {
    samplingInterval: 8192,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
}
// BENCH_HEAP_SNAPSHOT=dir: what the pass keeps alive mid-way, BENCH_HEAP_SNAPSHOT_MS (default
// 1,500) into it (a rotation pass at 10,000 targets and concurrency 1,000 then has ≈1,000 targets
// in flight), or at its end if it ends sooner, and one at its end; written to dir as
// <rotation|converged>-c<N>[-end].<pid>.heapsnapshot (summed by bench/support/heap-summary.ts).
// The pass stands still while V8 writes one.
const snapDir = process.env.BENCH_HEAP_SNAPSHOT;
let snapshot: { file: string; atMs: number; inFlight: number } | null = null;
const takeSnapshot = (dir: string) => {
  if (snapshot) return snapshot;
  const atMs = performance.now() - started;
  const inFlight = pulled - finished;
  snapshot = { file: writeHeapSnapshot(join(dir, `pass.${process.pid}.heapsnapshot`)), atMs, inFlight };
  return snapshot;
};
const cpu = process.cpuUsage();
const started = performance.now();
const snapTimer = snapDir
  ? setTimeout(() => takeSnapshot(snapDir), Number(process.env.BENCH_HEAP_SNAPSHOT_MS ?? 1500))
  : null;
const result = await runPass(targets(), {
  key: { key: input.key, version: input.version },
  spec: { envVar: 'KILOCODE_API_KEY', delivery: 'restart' },
  rollout: {
    concurrency: input.concurrency,
    maxUnavailable: input.concurrency,
    failureBudget: 1,
    paused: false,
  },
  dryRun: false,
  keepResults,
  onResult: () => {
    finished++;
  },
  env: {
    clock: systemClock,
    log,
    retry: DEFAULT_RETRY,
    deadlineMs: 60_000,
    pollIntervalMs: 50,
    signal: AbortSignal.timeout(600_000),
  },
});
const ms = performance.now() - started;
if (snapDir) {
  clearTimeout(snapTimer!);
  const snap = takeSnapshot(snapDir);
  const kind = result.summary.patched > 0 ? 'rotation' : 'converged';
  const file = join(snapDir, `${kind}-c${input.concurrency}.${process.pid}.heapsnapshot`);
  renameSync(snap.file, file);
  snap.file = file;
  // And what stays once no target is in flight (the pass's own baseline).
  const end = writeHeapSnapshot(
    join(snapDir, `${kind}-c${input.concurrency}-end.${process.pid}.heapsnapshot`),
  );
  process.stderr.write(
    `heap snapshots: ${file} (${snap.inFlight} targets in flight, ${snap.atMs.toFixed(0)} ms into the pass), ${end}\n`,
  );
}
if (inspector) {
  const { profile } = await inspector.post('HeapProfiler.stopSampling');
  writeFileSync(join(allocDir!, `alloc.${process.pid}.heapprofile`), JSON.stringify(profile));
}
clearInterval(sampler);
const used = process.cpuUsage(cpu);
const ru = process.resourceUsage();
process.stdout.write(
  `${JSON.stringify({
    ms,
    cpuMs: (used.user + used.system) / 1000,
    userMs: used.user / 1000,
    peakRssMb: (ru.maxRSS * 1024) / 1e6,
    peakHeapUsedMb: heap.used / 1e6,
    peakHeapTotalMb: heap.total / 1e6,
    peakExternalMb: heap.external / 1e6,
    summary: result.summary,
    logBytes,
    ...(snapshot ? { snapshot } : {}),
  })}\n`,
);
process.exit(0);
