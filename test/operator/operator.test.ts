// The operator against the Kubernetes API test server and real `keyroll controller` processes with
// stand-in gateways: rotation converges and is reported, and nothing restarts a converged gateway.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { type FleetMember, readState } from '../reconcile/support/fleet.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { killAllTracked } from '../support/processes.ts';
import {
  condition,
  createGatewayKey,
  gatewayKeySpec,
  gkStatus,
  KEY_A,
  KEY_B,
  metricsText,
  metricValue,
  NS,
  parsePrometheus,
  putKeySecrets,
  putSecret,
  type StandInPods,
  startStandInPods,
  startTestOperator,
  type TestOperator,
  TOKEN,
  waitFor,
} from './support.ts';

const APP = 'gw-rotation';
let server: KubeApiServer;
let pods: StandInPods | undefined;
let members: FleetMember[] = [];
const operators: TestOperator[] = [];
const logLines: string[] = [];

async function pids(): Promise<
  Array<{ pid: number | null | undefined; restarts: number | null | undefined }>
> {
  return Promise.all(
    members.map(async (m) => {
      const s = await readState(m);
      return { pid: s?.gateway.pid, restarts: s?.gateway.restarts };
    }),
  );
}

beforeAll(async () => {
  server = await startKubeApiServer({
    crdPaths: ['manifests/crd/gatewaykey.yaml'],
    bookmarkIntervalMs: 1_000,
  });
  pods = await startStandInPods(server, {
    prefix: 'rot',
    app: APP,
    n: 3,
    key: KEY_A,
    upstreamKeys: [KEY_A, KEY_B],
  });
  ({ members } = pods);
  putKeySecrets(server, KEY_A, 'v1');
  await createGatewayKey(server, 'rotation', gatewayKeySpec({ app: APP }));
}, 60_000);

afterAll(async () => {
  for (const o of operators) await o.stop().catch(() => {});
  await pods?.close();
  await killAllTracked();
  await server?.close();
});

/** Every metric docs/operator.md documents, with its type; the scrape must have them all. */
const DOCUMENTED_METRICS: Record<string, string> = {
  keyroll_reconcile_total: 'counter',
  keyroll_reconcile_errors_total: 'counter',
  keyroll_reconcile_time_seconds: 'histogram',
  keyroll_workqueue_depth: 'gauge',
  keyroll_leader_election_master_status: 'gauge',
  keyroll_informer_restarts_total: 'counter',
  keyroll_status_writes_total: 'counter',
  keyroll_gatewaykey_targets: 'gauge',
  keyroll_gatewaykey_condition: 'gauge',
  keyroll_gatewaykey_last_rotation_timestamp_seconds: 'gauge',
  keyroll_rotation_duration_seconds: 'histogram',
  keyroll_rotations_total: 'counter',
  process_cpu_seconds_total: 'counter',
  process_resident_memory_bytes: 'gauge',
  process_start_time_seconds: 'gauge',
  nodejs_eventloop_lag_seconds: 'gauge',
  nodejs_heap_size_used_bytes: 'gauge',
};

describe('operator end to end (test server + 3 controllers with stand-in gateways)', () => {
  it('converges an already-right fleet without restarting anything, and reports Ready', async () => {
    const before = await pids();
    const o = await startTestOperator(server, 'op-a', {}, logLines);
    operators.push(o);
    await waitFor(
      'Ready=True',
      () => condition(gkStatus(server, 'rotation'), 'Ready')?.status === 'True',
      30_000,
    );
    const s = gkStatus(server, 'rotation');
    expect(s.desiredVersion).toBe('v1');
    expect(s.targets).toEqual({ total: 3, converged: 3, progressing: 0, failed: 0 });
    expect(s.observedGeneration).toBe(1);
    expect(await pids()).toEqual(before);
  });

  it('a Secret update converges every target; status goes Progressing → Ready; an Event records it', async () => {
    const before = await pids();
    const seen: string[] = [];
    const sample = () => {
      const s = gkStatus(server, 'rotation');
      const tag = `${condition(s, 'Progressing')?.status}/${condition(s, 'Ready')?.status}/${s.desiredVersion}`;
      if (seen.at(-1) !== tag) seen.push(tag);
    };
    const poll = setInterval(sample, 10);
    try {
      putSecret(server, 'kilocode-key', { KILOCODE_API_KEY: KEY_B }, { 'keyroll.dev/version': 'v2' });
      await waitFor(
        'Ready=True at v2',
        () => {
          const s = gkStatus(server, 'rotation');
          return s.desiredVersion === 'v2' && condition(s, 'Ready')?.status === 'True';
        },
        60_000,
      );
    } finally {
      clearInterval(poll);
      sample();
    }
    expect(seen).toContain('True/False/v2');
    expect(seen.indexOf('True/False/v2')).toBeLessThan(seen.indexOf('False/True/v2'));
    const s = gkStatus(server, 'rotation');
    expect(s.targets).toEqual({ total: 3, converged: 3, progressing: 0, failed: 0 });

    const want = fingerprintEnv(TOKEN, { KILOCODE_API_KEY: KEY_B });
    const after = await Promise.all(members.map((m) => readState(m)));
    for (const [i, st] of after.entries()) {
      expect(st?.key.envHash).toBe(want);
      expect(st?.gateway.pid).not.toBe(before[i]?.pid);
    }
    // Events are recorded right after the status write.
    const rotated = await waitFor(
      'a KeyRotated Event',
      () => {
        const r = server.hooks
          .objects('events', NS)
          .filter((e) => (e as { reason?: string }).reason === 'KeyRotated');
        return r.length > 0 && r;
      },
      5_000,
    ).catch((err: Error) => {
      throw new Error(
        `${err.message}\n${logLines
          .filter((l) => /Event|warn/i.test(l))
          .slice(-5)
          .join('\n')}`,
      );
    });
    expect(rotated[0]).toMatchObject({
      type: 'Normal',
      involvedObject: {
        kind: 'GatewayKey',
        name: 'rotation',
        namespace: NS,
        apiVersion: 'keyroll.dev/v1alpha1',
      },
    });
    const m = await metricsText(operators[0]!.op);
    expect(metricValue(m, 'keyroll_rotations_total')).toBeGreaterThanOrEqual(1);
    expect(metricValue(m, 'keyroll_rotation_duration_seconds_count')).toBeGreaterThanOrEqual(1);

    // The scrape parses as Prometheus text and has every name docs/operator.md documents.
    const { types } = parsePrometheus(m);
    const doc = readFileSync('docs/operator.md', 'utf8');
    for (const [name, type] of Object.entries(DOCUMENTED_METRICS)) {
      expect([name, types.get(name)]).toEqual([name, type]);
      expect(doc, name).toContain(`\`${name}`);
    }
    const gk = { namespace: NS, name: 'rotation' };
    const cond = (type: string, status: string) =>
      metricValue(
        m,
        `keyroll_gatewaykey_condition{namespace="${NS}",name="rotation",type="${type}",status="${status}"}`,
      );
    expect([cond('Ready', 'True'), cond('Ready', 'False'), cond('Degraded', 'False')]).toEqual([1, 0, 1]);
    const last = Date.parse(gkStatus(server, 'rotation').lastRotationTime ?? '') / 1000;
    expect(
      metricValue(
        m,
        `keyroll_gatewaykey_last_rotation_timestamp_seconds{namespace="${gk.namespace}",name="${gk.name}"}`,
      ),
    ).toBe(last);
  });

  it('calm: a resync, a watch expiring (410), an operator restart and a leader change restart no gateway', async () => {
    const before = await pids();
    const o = operators[0]!;
    // A resync: every GatewayKey reconciled again.
    const reconciled = metricValue(await metricsText(o.op), 'keyroll_reconcile_total{');
    putSecret(server, 'gateway-token', { OPENCLAW_GATEWAY_TOKEN: TOKEN }); // same data, new resourceVersion
    await waitFor(
      'another reconcile',
      async () => metricValue(await metricsText(o.op), 'keyroll_reconcile_total{') > reconciled,
    );
    await o.op.idle();

    // A watch expiring: history compacted, watches dropped → 410 → relist.
    server.hooks.compactHistory();
    server.hooks.dropWatches();
    await waitFor(
      'relist after 410',
      async () => metricValue(await metricsText(o.op), 'keyroll_informer_restarts_total{') >= 1,
    );
    await waitFor('watches back', () => server.hooks.activeWatches() >= 3);
    await o.op.idle();

    // An operator restart under another identity: the Lease is released and taken over at once.
    await o.stop();
    operators.shift();
    const o2 = await startTestOperator(server, 'op-b', {}, logLines);
    operators.push(o2);
    await waitFor('new leader', () => o2.op.isLeader(), 15_000);
    await waitFor(
      'a reconcile by the new leader',
      async () => metricValue(await metricsText(o2.op), 'keyroll_reconcile_total{') >= 1,
    );
    await o2.op.idle();
    expect(condition(gkStatus(server, 'rotation'), 'Ready')?.status).toBe('True');
    expect(await pids()).toEqual(before);
    const lease = server.hooks.get('leases.coordination.k8s.io', NS, 'keyroll-operator') as {
      spec?: { holderIdentity?: string; renewTime?: string; leaseTransitions?: number };
    };
    expect(lease.spec?.holderIdentity).toBe('op-b');
    expect(lease.spec?.renewTime).toMatch(/\.\d{6}Z$/);
  });

  it('no secret value in stored objects (but Secrets), Events, logs or metrics', async () => {
    const secrets = [KEY_A, KEY_B, TOKEN];
    const b64s = secrets.map((s) => Buffer.from(s).toString('base64'));
    const stored = server.hooks
      .dump()
      .filter((o) => (o as { kind?: string }).kind !== 'Secret')
      .map((o) => JSON.stringify(o))
      .join('\n');
    const metrics = (await Promise.all(operators.map((o) => metricsText(o.op)))).join('\n');
    const all = [stored, logLines.join('\n'), metrics];
    for (const text of all) {
      for (const s of [...secrets, ...b64s]) expect(text.includes(s)).toBe(false);
    }
    expect(logLines.length).toBeGreaterThan(10);
  });
});
