// Benchmarks of `keyroll operator` against the Kubernetes API test server:
//  1. Secret update → GatewayKey Ready for one target (a real controller with the stand-in gateway),
//     as a ratio to that gateway's own restart time (POST /_kilo/gateway/restart → ready);
//  2. operator RSS with 10,000 labelled Secrets and 1,000 GatewayKeys loaded and reconciled, with
//     the operator run as the operator image runs it (`npm run build`'s bundle and the Dockerfile's
//     operator ENTRYPOINT, Node flags included).
// Prints one JSON line per figure and a summary table.
//   node bench/operator.bench.ts      BENCH_RUNS=N rotations (default 5)
//   BENCH_ONLY=latency|rss            one part
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
import {
  type FleetMember,
  readState,
  startStandInMember,
  stopMember,
  waitGatewayReady,
} from '../test/reconcile/support/fleet.ts';
import { startFakeUpstream } from '../test/support/fake-upstream.ts';
import { freePort, getText } from '../test/support/http.ts';
import { buildPackage, imageCommand } from '../test/support/image-command.ts';
import { startKubeApiServer } from '../test/support/kube/index.ts';
import { killAllTracked, spawnTracked } from '../test/support/processes.ts';
import { node24, REPO_ROOT } from '../test/support/sandbox.ts';

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
    const t0 = performance.now();
    const p = spawnTracked(
      node24(),
      [
        ...operatorLaunch(),
        '--kubeconfig',
        server.kubeconfigPath,
        '--namespace',
        NS,
        '--identity',
        'bench-rss',
        '--metrics-port',
        String(port),
        '--metrics-bind',
        '127.0.0.1',
        '--concurrency',
        '8',
        '--log-level',
        'warn',
      ],
      { name: 'operator-rss' },
    );
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
    await waitFor(
      'all GatewayKeys reconciled',
      async () => (await metric('keyroll_reconcile_total{')) >= KEYS,
      180_000,
      200,
    );
    const secs = (performance.now() - t0) / 1000;
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
    await p.stop('SIGTERM', 15_000);
  } finally {
    await killAllTracked();
    await server.close();
  }
}

/** Node argv up to the operator's flags: the operator image's entrypoint on a fresh build. */
function operatorLaunch(): string[] {
  const pkg = buildPackage('keyroll-bench-operator-');
  process.on('exit', () => pkg.cleanup());
  const image = imageCommand('operator', pkg.root);
  const flags = process.env.BENCH_OPERATOR_NODE_FLAGS?.split(' ').filter(Boolean) ?? image.nodeFlags;
  return [...flags, image.script, ...image.args, 'operator'];
}

const only = process.env.BENCH_ONLY;
if (!only || only === 'latency') await latency();
if (!only || only === 'rss') {
  await rss(0, 0); // baseline: the process with an empty namespace
  await rss(10_000, 1_000);
}
console.log('\n| figure | value | unit | note |\n|---|---|---|---|');
for (const r of results) console.log(`| ${r.name} | ${r.value} | ${r.unit} | ${r.note ?? ''} |`);
process.exit(0);
