// What the engine keeps alive per target in flight, without the network: N targets whose
// controllers live in memory (they answer the JSON the simulated fleet sends, parsed as the HTTP
// client parses it) hold either every first state read (`observe`) or every read that waits after
// the patch (`verify`, where a rotation target spends most of its ≈300 ms) until all N hold one;
// the heap used then, after a full GC, less the heap used after the pass, over N. The targets
// themselves are made before and kept after, so they are not counted; the HTTP client, its
// connection and its strings are not either (bench/support/heap-summary.ts, on the fleet, has them).
//   node --expose-gc bench/support/engine-heap.ts [N=1000] [dir: heap snapshots in flight and after]
import { join } from 'node:path';
import { getHeapStatistics, writeHeapSnapshot } from 'node:v8';
import { systemClock } from '../../src/clock.ts';
import { runPass } from '../../src/engine/pass.ts';
import type { Target } from '../../src/engine/target.ts';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { parseObservedState, type StateWait } from '../../src/kilo-state.ts';
import { createLogger } from '../../src/log.ts';
import type { ControllerClient } from '../../src/reconcile/controller-client.ts';
import { DEFAULT_RETRY } from '../../src/reconcile/retry.ts';

const N = Number(process.argv[2] ?? 1000);
const snapDir = process.argv[3];
const TOKEN = 'bench-token-engine-0123456789abcdef';
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');
const usedAfterGc = () => {
  gc();
  return getHeapStatistics().used_heap_size;
};

let nextPid = 40_000;
/** One controller's `GET /_kilo/state` body, as the simulated fleet sends it. */
function body(pid: number, running: boolean, key: string, version: string): string {
  return JSON.stringify({
    controller: { version: '0.0.0-sim', state: 'ready', delivery: 'restart', waitMaxMs: 20_000 },
    gateway: {
      state: running ? 'running' : 'restarting',
      pid,
      startedAt: new Date().toISOString(),
      restarts: 0,
      ready: running,
      lastExit: null,
    },
    key: { envHash: fingerprintEnv(TOKEN, { KILOCODE_API_KEY: key }), fileHash: null, version },
    profiles: [{ agentId: 'main', profileId: 'kilocode:default', store: 'sqlite', form: 'keyRef-env' }],
  });
}
const read = (text: string) => {
  const parsed = parseObservedState(JSON.parse(text));
  if (!parsed.ok) throw new Error(`bad state: ${parsed.fields.join(', ')}`);
  return parsed.state;
};

/** Reads held until `release`; `onFull` once all N hold one. */
class Holds {
  #held: Array<() => void> = [];
  readonly #onFull: () => void;
  constructor(onFull: () => void) {
    this.#onFull = onFull;
  }
  hold(answer: () => void): void {
    this.#held.push(answer);
    // Once every target that holds a read has also run what follows its call (microtasks).
    if (this.#held.length === N) setImmediate(this.#onFull);
  }
  release(): void {
    for (const answer of this.#held.splice(0)) answer();
  }
}

async function measure(phase: 'observe' | 'verify', warmUp: boolean): Promise<void> {
  let inFlight = 0;
  const holds = new Holds(() => {
    inFlight = usedAfterGc();
    if (snapDir && !warmUp) writeHeapSnapshot(join(snapDir, `${phase}-inflight.heapsnapshot`));
    holds.release();
  });
  const client = (): ControllerClient => {
    let pid = nextPid++;
    let state = body(pid, true, 'bench-key-0', 'v0');
    return {
      getState(_signal: AbortSignal, wait?: StateWait) {
        if ((phase === 'observe') === (wait !== undefined)) return Promise.resolve(read(state));
        return new Promise((resolve) => holds.hold(() => resolve(read(state))));
      },
      patchEnv() {
        pid = nextPid++;
        state = body(pid, true, 'bench-key-1', 'v1');
        return Promise.resolve({ ok: true, signaled: true, migratedProfiles: 0 });
      },
      // As the HTTP client does to a controller that holds reads: the read written behind the patch.
      patchEnvThenState(vars, version, wait, signal) {
        const patch = this.patchEnv(vars, version, signal);
        return { patch, state: this.getState(signal, wait) };
      },
    };
  };
  const targets: Target[] = Array.from({ length: N }, (_, i) => ({
    name: `eng-${i}`,
    url: `http://127.0.0.1:${10_000 + i}`,
    labels: {},
    token: TOKEN,
    client: client(),
  }));
  const before = usedAfterGc();
  const result = await runPass(targets, {
    key: { key: 'bench-key-1', version: 'v1' },
    spec: { envVar: 'KILOCODE_API_KEY', delivery: 'restart' },
    rollout: { concurrency: N, maxUnavailable: N, failureBudget: 1, paused: false },
    dryRun: false,
    keepResults: false,
    env: {
      clock: systemClock,
      log: createLogger({ level: 'warn', destination: { write: () => {} } }),
      retry: DEFAULT_RETRY,
      deadlineMs: 60_000,
      pollIntervalMs: 50,
      signal: AbortSignal.timeout(60_000),
    },
  });
  const after = usedAfterGc();
  if (snapDir && !warmUp) writeHeapSnapshot(join(snapDir, `${phase}-after.heapsnapshot`));
  if (result.summary.converged !== N || result.summary.patched !== N) {
    throw new Error(`pass did not converge: ${JSON.stringify(result.summary)}`);
  }
  if (targets.length !== N) throw new Error('targets lost');
  if (warmUp) return;
  console.log(
    `${phase}: heap used ${(before / 1e6).toFixed(2)} MB before, ${(inFlight / 1e6).toFixed(2)} MB with ${N} in flight, ` +
      `${(after / 1e6).toFixed(2)} MB after: ${((inFlight - after) / N).toFixed(0)} bytes per target in flight`,
  );
}

// Once to warm up (compiled code, feedback and the logger's first use are not a target's).
for (const phase of ['observe', 'verify'] as const) await measure(phase, true);
for (const phase of ['observe', 'verify'] as const) await measure(phase, false);
