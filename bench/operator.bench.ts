// Benchmarks of `keyroll operator` against the Kubernetes API test server:
//  1. Secret update → GatewayKey Ready for one target (a real controller with the stand-in gateway),
//     as a ratio to that gateway's own restart time (POST /_kilo/gateway/restart → ready);
//  2. operator RSS with 10,000 labelled Secrets and 1,000 GatewayKeys loaded and reconciled, with
//     the operator run as the operator image runs it (`npm run build`'s bundle and the Dockerfile's
//     operator ENTRYPOINT, Node flags included);
//  3. retirement (issue 12): the time from the last target's proof of B to the revoke of A with
//     spec.retire.after = 2s (target: under after + 1 s), in-process operator, fake controllers and
//     the fake key API; and 1,000 GatewayKeys with the API source and retirement on, run as the
//     image runs it: RSS and time from start until every one revoked its previous key.
// Prints one JSON line per figure and a summary table.
//   node bench/operator.bench.ts      BENCH_RUNS=N rotations (default 5)
//   BENCH_ONLY=latency|rss|retire|retire-rss   one part; BENCH_RETIRE_KEYS=N GatewayKeys (1,000)
//   BENCH_OPERATOR_NODE_FLAGS="…"     Node flags instead of the image's (experiments)
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  condition,
  createGatewayKey,
  gatewayKeySpec,
  gkStatus,
  NS,
  putPod,
  putSecret,
  startTestOperator,
  waitFor,
} from '../test/operator/support.ts';
import { type FakeController, startFakeController } from '../test/reconcile/support/fake-controller.ts';
import {
  type FleetMember,
  readState,
  startStandInMember,
  stopMember,
  waitGatewayReady,
} from '../test/reconcile/support/fleet.ts';
import { type FakeKeyApi, startFakeKeyApi } from '../test/support/fake-key-api.ts';
import { startFakeUpstream } from '../test/support/fake-upstream.ts';
import { freePort, getText } from '../test/support/http.ts';
import { imageCommand } from '../test/support/image-command.ts';
import { startKubeApiServer } from '../test/support/kube/index.ts';
import { killAllTracked, spawnTracked } from '../test/support/processes.ts';
import { node24, REPO_ROOT } from '../test/support/sandbox.ts';
import { sharedBundleRoot } from '../test/support/shared-bundle.ts';

const TOKEN = 'bench-token-operator-0123456789';
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const results: { name: string; value: number; unit: string; note?: string }[] = [];

function record(name: string, value: number, unit: string, note?: string) {
  const r = { name, value: Math.round(value * 100) / 100, unit, ...(note ? { note } : {}) };
  results.push(r);
  console.log(JSON.stringify(r));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** CPU seconds (user + system) the process has used so far. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime: fields 14 and 15 of proc(5), in clock ticks (100 per second on Linux).
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function restartTime(m: FleetMember): Promise<number> {
  const before = await readState(m);
  const t0 = performance.now();
  const res = await fetch(`${m.url}/_kilo/gateway/restart`, {
    method: 'POST',
    headers: { authorization: `Bearer ${m.token}` },
    signal: AbortSignal.timeout(30_000),
  });
  await res.body?.cancel();
  await waitFor(
    'restarted gateway ready',
    async () => {
      const s = await readState(m);
      return s?.gateway.ready && s.gateway.state === 'running' && s.gateway.pid !== before?.gateway.pid;
    },
    30_000,
    10,
  );
  return performance.now() - t0;
}

async function latency(): Promise<void> {
  const server = await startKubeApiServer({ crdPaths: [join(REPO_ROOT, 'manifests/crd/gatewaykey.yaml')] });
  const upstream = await startFakeUpstream({ keys: [] });
  const key = (i: number) => `test-key-bench-${String(i).padStart(4, '0')}-operator`;
  const m = await startStandInMember({
    name: 'bench',
    token: TOKEN,
    key: key(0),
    upstreamBaseUrl: upstream.baseUrl,
  });
  await waitGatewayReady(m, 30_000);
  putSecret(server, 'gateway-token', { OPENCLAW_GATEWAY_TOKEN: TOKEN });
  putSecret(server, 'kilocode-key', { KILOCODE_API_KEY: key(0) }, { 'keyroll.dev/version': 'v0' });
  putPod(server, 'gw-0', { app: 'bench' }, Number(new URL(m.url).port));
  await createGatewayKey(server, 'bench', gatewayKeySpec({ app: 'bench' }));
  const op = await startTestOperator(server, 'bench', { logLevel: 'warn' });
  try {
    await waitFor('Ready v0', () => condition(gkStatus(server, 'bench'), 'Ready')?.status === 'True', 30_000);
    const rotations: number[] = [];
    const restarts: number[] = [];
    for (let i = 1; i <= RUNS; i++) {
      restarts.push(await restartTime(m));
      const t0 = performance.now();
      putSecret(server, 'kilocode-key', { KILOCODE_API_KEY: key(i) }, { 'keyroll.dev/version': `v${i}` });
      await waitFor(
        `Ready v${i}`,
        () => {
          const s = gkStatus(server, 'bench');
          return s.desiredVersion === `v${i}` && condition(s, 'Ready')?.status === 'True';
        },
        60_000,
        5,
      );
      rotations.push(performance.now() - t0);
      await op.op.idle();
    }
    const rot = median(rotations);
    const rst = median(restarts);
    record(
      'operator.secret_update_to_ready_ms',
      rot,
      'ms',
      `median of ${RUNS}, one target, stand-in gateway`,
    );
    record(
      'operator.gateway_restart_ms',
      rst,
      'ms',
      `median of ${RUNS}, POST /_kilo/gateway/restart → ready`,
    );
    record(
      'operator.rotation_to_restart_ratio',
      rot / rst,
      'x',
      'Secret update → Ready divided by the restart alone',
    );
  } finally {
    await op.stop();
    await stopMember(m).catch(() => undefined);
    await upstream.close();
    await server.close();
  }
}

async function rss(SECRETS: number, KEYS: number): Promise<void> {
  const server = await startKubeApiServer({
    crdPaths: [join(REPO_ROOT, 'manifests/crd/gatewaykey.yaml')],
    historyLimit: 50_000,
  });
  try {
    putSecret(server, 'gateway-token', { OPENCLAW_GATEWAY_TOKEN: TOKEN });
    for (let i = 0; i < SECRETS; i++) {
      putSecret(
        server,
        `key-${i}`,
        { KILOCODE_API_KEY: `test-key-bench-rss-${String(i).padStart(6, '0')}-abcdefghijklmnop` },
        { 'keyroll.dev/version': `v${i}` },
      );
    }
    for (let i = 0; i < KEYS; i++) {
      server.hooks.upsert({
        apiVersion: 'keyroll.dev/v1alpha1',
        kind: 'GatewayKey',
        metadata: { name: `gk-${i}`, namespace: NS, generation: 1 },
        spec: gatewayKeySpec({ app: `app-${i}`, secret: `key-${i * 10}` }),
      });
    }
    const port = await freePort();
    // The bundle is built before the clock starts: esbuild took 17-24 s at load 10 (about a second
    // on an idle host), which the figure included until 2026-12-02.
    const launch = await operatorLaunch();
    const t0 = performance.now();
    const p = spawnOperator(launch, server.kubeconfigPath, 'bench-rss', port);
    const metric = async (name: string) => {
      const text = (await getText(`http://127.0.0.1:${port}/metrics`).catch(() => ({ text: '' }))).text;
      return text
        .split('\n')
        .filter((l) => l.startsWith(name))
        .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    };
    // Leading starts once every cache has synced: before that the process may not even have
    // loaded the Kubernetes client, and an empty namespace's figure would be a start-up figure.
    await waitFor(
      'caches synced and leading',
      async () => (await metric('keyroll_leader_election_master_status')) >= 1,
      180_000,
      200,
    );
    // Every GatewayKey has a status written (each reconcile writes one), read from the test server
    // in this process: polling /metrics 5 times a second made the operator render its ≈13,000
    // per-GatewayKey series each time, a cost no Prometheus scrape interval comes near.
    const withStatus = () =>
      server.hooks
        .objects('gatewaykeys.keyroll.dev', NS)
        .filter((o) => ((o as { status?: { conditions?: unknown[] } }).status?.conditions?.length ?? 0) > 0)
        .length;
    await waitFor('every GatewayKey has a status', () => withStatus() >= KEYS, 180_000, 50);
    const secs = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(p.pid);
    await waitFor(
      'all GatewayKeys reconciled',
      async () => (await metric('keyroll_reconcile_total{')) >= KEYS,
      30_000,
      200,
    );
    // What the reconciles wrote: one status write per GatewayKey is the floor, Events none here.
    const writes = await metric('keyroll_status_writes_total{result="written"}');
    const events = server.hooks.objects('events', NS).length;
    await new Promise((r) => setTimeout(r, 1_000));
    record(
      `operator.rss_${SECRETS}_secrets_${KEYS}_gatewaykeys_mb`,
      rssMb(p.pid),
      'MB',
      `after caches synced and ${KEYS} reconciles`,
    );
    if (KEYS > 0)
      record(
        'operator.first_full_reconcile_s',
        secs,
        's',
        `${SECRETS} Secrets and ${KEYS} GatewayKeys, start → all reconciled`,
      );
    record(
      `operator.cpu_${SECRETS}_secrets_${KEYS}_gatewaykeys_s`,
      cpu,
      's',
      KEYS > 0 ? 'operator CPU (user + system), start → all reconciled' : 'operator CPU, start → leading',
    );
    if (KEYS > 0) record('operator.full_reconcile_status_writes', writes, 'writes', `and ${events} Events`);
    await p.stop('SIGTERM', 15_000);
  } finally {
    await killAllTracked();
    await server.close();
  }
}

const SOURCE_TOKEN = 'bench-token-source-api-0123456789';

/** A GatewayKey on the fake key API with retirement on (revoke at the API, grace `after`). */
function retireSpec(app: string, api: FakeKeyApi, after: string, delivery: 'restart' | 'file') {
  return {
    source: { api: { url: api.currentUrl, tokenSecretRef: { name: 'source-token', key: 'token' } } },
    retire: { after, revokeUrl: api.revokeUrl },
    delivery,
    targets: { selector: { matchLabels: { app } }, port: 1 },
    controllerTokenSecretRef: { name: 'gateway-token', key: 'OPENCLAW_GATEWAY_TOKEN' },
    rollout: { maxUnavailable: 3 },
  };
}

/** Last target's proof of the new key → the revoke of the previous one, per rotation. */
async function retireLatency(): Promise<void> {
  const AFTER_MS = 2_000;
  const server = await startKubeApiServer({ crdPaths: [join(REPO_ROOT, 'manifests/crd/gatewaykey.yaml')] });
  const api = await startFakeKeyApi({ token: SOURCE_TOKEN });
  const fakes: FakeController[] = [];
  for (let i = 0; i < 3; i++)
    fakes.push(await startFakeController({ token: TOKEN, key: api.current().key, restartMs: 50 }));
  putSecret(server, 'gateway-token', { OPENCLAW_GATEWAY_TOKEN: TOKEN });
  putSecret(server, 'source-token', { token: SOURCE_TOKEN });
  fakes.forEach((f, i) => {
    putPod(server, `gw-${i}`, { app: 'retire' }, Number(new URL(f.url).port));
  });
  await createGatewayKey(server, 'retire', retireSpec('retire', api, `${AFTER_MS / 1000}s`, 'restart'));
  const op = await startTestOperator(server, 'bench-retire', { logLevel: 'warn', resync: '500ms' });
  try {
    await waitFor('Ready', () => condition(gkStatus(server, 'retire'), 'Ready')?.status === 'True', 30_000);
    const delays: number[] = [];
    for (let i = 1; i <= RUNS; i++) {
      const previous = api.current().version;
      api.mint();
      await waitFor(`${previous} revoked`, () => api.revokedCount(previous) === 1, 60_000, 5);
      const revokedAt = api.revokeCalls.find((c) => c.version === previous && c.status === 200)!.at;
      // The last target's proof: the moment its gateway was back, ready, on the new key.
      const lastProof = Math.max(...fakes.map((f) => f.restartWindows.at(-1)?.[1] ?? Number.NaN));
      delays.push(revokedAt - lastProof);
    }
    record(
      'operator.retire_last_proof_to_revoke_ms',
      median(delays),
      'ms',
      `median of ${RUNS}, retire.after ${AFTER_MS} ms (target < after + 1000 ms); max ${Math.round(Math.max(...delays))} ms`,
    );
  } finally {
    await op.stop();
    await Promise.all(fakes.map((f) => f.close()));
    await api.close();
    await server.close();
  }
}

/**
 * 1,000 GatewayKeys, each with one pod (all on one fake controller that already runs B), the API
 * source and retirement on: each was proven on A, the API now serves B; the operator (the image's
 * entrypoint) observes every pod proving B and revokes A (the first call revokes it, the rest find
 * it revoked: 409 counts as done). RSS and time from start until every GatewayKey shows A Retired.
 */
async function retireRss(KEYS: number): Promise<void> {
  const server = await startKubeApiServer({
    crdPaths: [join(REPO_ROOT, 'manifests/crd/gatewaykey.yaml')],
    historyLimit: 50_000,
  });
  const api = await startFakeKeyApi({ token: SOURCE_TOKEN });
  const a = api.current();
  // The gateway already runs B (delivered for another GatewayKey, or by hand): 1,000 GatewayKeys
  // delivering to one shared fake controller at once would measure that artifact, not retirement.
  const b = api.mint();
  const fake = await startFakeController({ token: TOKEN, key: b.key, delivery: 'file' });
  try {
    putSecret(server, 'gateway-token', { OPENCLAW_GATEWAY_TOKEN: TOKEN });
    putSecret(server, 'source-token', { token: SOURCE_TOKEN });
    const at = new Date().toISOString();
    for (let i = 0; i < KEYS; i++) {
      putPod(server, `gw-${i}`, { app: `app-${i}` }, Number(new URL(fake.url).port));
      server.hooks.upsert({
        apiVersion: 'keyroll.dev/v1alpha1',
        kind: 'GatewayKey',
        metadata: { name: `gk-${i}`, namespace: NS, generation: 1 },
        spec: retireSpec(`app-${i}`, api, '0s', 'file'),
        status: { lifecycle: { current: { version: a.version, firstSeen: at, provenAt: at }, previous: [] } },
      });
    }
    const retired = () =>
      server.hooks
        .objects('gatewaykeys.keyroll.dev', NS)
        .filter((o) =>
          (
            o as { status?: { lifecycle?: { previous?: Array<{ version: string; state: string }> } } }
          ).status?.lifecycle?.previous?.some((p) => p.version === a.version && p.state === 'Retired'),
        ).length;
    const port = await freePort();
    const launch = await operatorLaunch(); // the first builds the bundle: not part of the figure
    const t0 = performance.now();
    const p = spawnOperator(launch, server.kubeconfigPath, 'bench-retire-rss', port);
    let peak = 0;
    await waitFor(
      `${KEYS} GatewayKeys retired their previous key`,
      () => {
        peak = Math.max(peak, rssMb(p.pid));
        return retired() >= KEYS;
      },
      600_000,
      250,
    );
    const secs = (performance.now() - t0) / 1000;
    record(
      'operator.retire_1000_gatewaykeys_s',
      secs,
      's',
      `${KEYS} GatewayKeys, start → every previous key Retired`,
    );
    record(
      'operator.retire_1000_gatewaykeys_rss_mb',
      rssMb(p.pid),
      'MB',
      `at the end; peak sampled ${Math.round(peak)} MB`,
    );
    record(
      'operator.retire_1000_revoke_calls',
      api.revokeCalls.length,
      'calls',
      `200: ${api.revokedCount(a.version)}, the rest 409 (already revoked)`,
    );
    await p.stop('SIGTERM', 15_000);
  } finally {
    await killAllTracked();
    await fake.close();
    await api.close();
    await server.close();
  }
}

/** The operator as the image runs it (`launch`), against the test server, concurrency 8, quiet. */
function spawnOperator(launch: string[], kubeconfig: string, identity: string, port: number) {
  return spawnTracked(
    node24(),
    [
      ...launch,
      '--kubeconfig',
      kubeconfig,
      '--namespace',
      NS,
      '--identity',
      identity,
      '--metrics-port',
      String(port),
      '--metrics-bind',
      '127.0.0.1',
      '--concurrency',
      '8',
      '--log-level',
      'warn',
    ],
    { name: `operator-${identity}` },
  );
}

/**
 * Node argv up to the operator's flags: the operator image's entrypoint on this run's bundle, built
 * once (sharedBundleRoot: removed on exit) for every part that launches it.
 */
async function operatorLaunch(): Promise<string[]> {
  const image = imageCommand('operator', await sharedBundleRoot());
  const flags = process.env.BENCH_OPERATOR_NODE_FLAGS?.split(' ').filter(Boolean) ?? image.nodeFlags;
  return [...flags, image.script, ...image.args, 'operator'];
}

const only = process.env.BENCH_ONLY;
if (!only || only === 'latency') await latency();
if (!only || only === 'rss') {
  await rss(0, 0); // baseline: the process with an empty namespace
  await rss(10_000, 1_000);
}
if (!only || only === 'retire') await retireLatency();
if (!only || only === 'retire-rss') await retireRss(Number(process.env.BENCH_RETIRE_KEYS ?? 1_000));
console.log('\n| figure | value | unit | note |\n|---|---|---|---|');
for (const r of results) console.log(`| ${r.name} | ${r.value} | ${r.unit} | ${r.note ?? ''} |`);
process.exit(0);
