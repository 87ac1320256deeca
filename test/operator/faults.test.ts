// The operator under faults, against the Kubernetes API test server and one real controller:
// 409 on status, 429/503 from the API, missing Secret or key, invalid specs, two replicas, RBAC.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getText } from '../support/http.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { killAllTracked, spawnTracked, type Tracked } from '../support/processes.ts';
import { node24 } from '../support/sandbox.ts';
import { bundledKeyroll, sharedBundleRoot } from '../support/shared-bundle.ts';
import {
  condition,
  createGatewayKey,
  gatewayKeySpec,
  gkStatus,
  KEY_A,
  kubeRequest,
  metricsText,
  metricValue,
  NS,
  processOperatorFlags,
  putKeySecrets,
  putSecret,
  requestsSent,
  roleAllows,
  type StandInPods,
  startStandInPods,
  startTestOperator,
  type TestOperator,
  TOKEN,
  waitFor,
} from './support.ts';

const APP = 'gw-faults';
let server: KubeApiServer;
let pods: StandInPods | undefined;
const operators: TestOperator[] = [];
const logLines: string[] = [];
const processLines: string[][] = [];

beforeAll(async () => {
  // The two replicas run as the operator image runs them, on the run's shared bundle (a third of
  // the CPU per start of the sources: test/support/shared-bundle.ts).
  await sharedBundleRoot();
  server = await startKubeApiServer({
    crdPaths: ['manifests/crd/gatewaykey.yaml'],
    bookmarkIntervalMs: 1_000,
  });
  pods = await startStandInPods(server, {
    prefix: 'faults',
    app: APP,
    n: 1,
    key: KEY_A,
    upstreamKeys: [KEY_A],
  });
  putKeySecrets(server, KEY_A, 'v1');
}, 90_000);

afterAll(async () => {
  for (const o of operators) await o.stop().catch(() => {});
  await pods?.close();
  await killAllTracked();
  await server?.close();
});

describe('operator faults', () => {
  it('429/503 from the API: informers back off and sync; readyz waits for the caches', async () => {
    const removeList = server.hooks.injectFailure({
      verb: 'list',
      resource: 'secrets',
      code: 503,
      count: 3,
      retryAfterSeconds: 1,
    });
    const remove429 = server.hooks.injectFailure({
      verb: 'list',
      resource: 'pods',
      code: 429,
      count: 2,
      retryAfterSeconds: 1,
    });
    const o = await startTestOperator(server, 'faults-a', {}, logLines);
    operators.push(o);
    const early = await getText(`http://127.0.0.1:${o.op.port}/readyz`);
    expect(early.status).toBe(503);
    expect((await getText(`http://127.0.0.1:${o.op.port}/healthz`)).status).toBe(200);
    await waitFor('caches synced', () => o.op.synced(), 20_000);
    expect((await getText(`http://127.0.0.1:${o.op.port}/readyz`)).status).toBe(200);
    const m = await metricsText(o.op);
    expect(metricValue(m, 'keyroll_informer_restarts_total{reason="error",resource="secrets"}')).toBe(3);
    expect(metricValue(m, 'keyroll_informer_restarts_total{reason="error",resource="pods"}')).toBe(2);
    removeList();
    remove429();
    await waitFor('leader', () => o.op.isLeader(), 10_000);
  });

  it('409 on the status update: re-read and retry; 429 on it: requeue with backoff', async () => {
    const o = operators[0]!;
    const remove409 = server.hooks.injectFailure({
      verb: 'update',
      resource: 'gatewaykeys',
      subresource: 'status',
      code: 409,
      count: 2,
    });
    await createGatewayKey(server, 'conflict', gatewayKeySpec({ app: APP }));
    await waitFor(
      'Ready despite 409s',
      () => condition(gkStatus(server, 'conflict'), 'Ready')?.status === 'True',
      20_000,
    );
    remove409();
    let m = await metricsText(o.op);
    expect(metricValue(m, 'keyroll_status_writes_total{result="conflict"}')).toBeGreaterThanOrEqual(2);

    const remove429 = server.hooks.injectFailure({
      verb: 'update',
      resource: 'gatewaykeys',
      subresource: 'status',
      code: 429,
      count: 2,
      retryAfterSeconds: 1,
    });
    await createGatewayKey(server, 'throttled', gatewayKeySpec({ app: APP }));
    await waitFor(
      'Ready despite 429s',
      () => condition(gkStatus(server, 'throttled'), 'Ready')?.status === 'True',
      20_000,
    );
    remove429();
    m = await metricsText(o.op);
    expect(metricValue(m, 'keyroll_reconcile_errors_total')).toBeGreaterThanOrEqual(2);
    expect(logLines.some((l) => l.includes('Reconcile failed; requeued with backoff'))).toBe(true);
  });

  it('a missing Secret, then a missing key: Degraded with the reason; recovers when they appear', async () => {
    await createGatewayKey(server, 'late', gatewayKeySpec({ app: APP, secret: 'late-key' }));
    await waitFor(
      'Degraded SecretNotFound',
      () => condition(gkStatus(server, 'late'), 'Degraded')?.reason === 'SecretNotFound',
    );
    const d = condition(gkStatus(server, 'late'), 'Degraded');
    expect(d?.status).toBe('True');
    expect(d?.message).toContain(`Secret ${NS}/late-key not found`);
    expect(condition(gkStatus(server, 'late'), 'Ready')?.status).toBe('False');
    await waitFor('a Warning Event', () =>
      server.hooks
        .objects('events', NS)
        .some((e) => (e as { reason?: string; type?: string }).reason === 'SecretNotFound'),
    );

    putSecret(server, 'late-key', { OTHER: 'x' });
    await waitFor(
      'Degraded KeyNotFound',
      () => condition(gkStatus(server, 'late'), 'Degraded')?.reason === 'KeyNotFound',
    );
    expect(condition(gkStatus(server, 'late'), 'Degraded')?.message).toContain('has no such key');

    putSecret(server, 'late-key', { KILOCODE_API_KEY: KEY_A }, { 'keyroll.dev/version': 'v1' });
    await waitFor('recovered', () => condition(gkStatus(server, 'late'), 'Ready')?.status === 'True', 20_000);
    expect(condition(gkStatus(server, 'late'), 'Degraded')?.status).toBe('False');
  });

  it('an invalid spec is rejected by the CRD schema; one the schema lets through is Degraded, not retried', async () => {
    const path = `/apis/keyroll.dev/v1alpha1/namespaces/${NS}/gatewaykeys`;
    const bad = await kubeRequest(server, 'POST', path, {
      apiVersion: 'keyroll.dev/v1alpha1',
      kind: 'GatewayKey',
      metadata: { name: 'bad' },
      spec: { ...gatewayKeySpec({ app: APP }), delivery: 'teleport' },
    });
    expect(bad.status).toBe(422);
    expect(JSON.stringify(bad.json)).toContain('spec.delivery');

    // An empty selector is valid for the schema but would select every pod: the operator refuses it.
    await createGatewayKey(server, 'everything', {
      ...gatewayKeySpec({ app: APP }),
      targets: { selector: {} },
    });
    await waitFor(
      'Degraded InvalidSpec',
      () => condition(gkStatus(server, 'everything'), 'Degraded')?.reason === 'InvalidSpec',
    );
    expect(condition(gkStatus(server, 'everything'), 'Degraded')?.message).toContain('spec.targets.selector');
    // Terminal (no retry until the spec changes): test/operator/engine.test.ts shows it on a manual
    // clock over ten minutes instead of sleeping here.
  });

  it('two replicas: only the leader acts; the other takes over after the Lease expires; SIGTERM releases it', async () => {
    // The in-process operator steps aside first, so the two processes compete for a free Lease.
    await operators[0]?.stop();
    operators.length = 0;
    // Port 0, read back from the operator's start-up line: a port picked by the test can be taken
    // by another test's server before the operator listens (the likely cause of one ECONNREFUSED
    // on a loaded host).
    const start = async (identity: string): Promise<{ p: Tracked; port: number }> => {
      const p = spawnTracked(
        node24(),
        [
          ...(await bundledKeyroll()),
          'operator',
          ...processOperatorFlags(server.kubeconfigPath, NS, identity),
        ],
        { name: identity, env: { ...process.env, KEYROLL_LOG_LEVEL: 'info' } },
      );
      processLines.push(p.lines);
      const line = await p.waitForLine(/metrics on port \d+/, 45_000);
      return { p, port: Number(/metrics on port (\d+)/.exec(line)?.[1]) };
    };
    const a = await start('replica-a');
    const b = await start('replica-b');
    const leaderOf = async (port: number) =>
      metricValue(
        (await getText(`http://127.0.0.1:${port}/metrics`).catch(() => ({ text: '' }))).text,
        'keyroll_leader_election_master_status',
      );
    const first = await waitFor(
      'one leader',
      async () => {
        const [la, lb] = [await leaderOf(a.port), await leaderOf(b.port)];
        if (la + lb !== 1) return null;
        return la === 1 ? { leader: a, follower: b } : { leader: b, follower: a };
      },
      45_000, // two fresh processes load, sync and campaign; slow on a busy CI host
    );
    // Give the leader time to reconcile; the follower must not have reconciled anything.
    await waitFor(
      'leader reconciled',
      async () =>
        metricValue(
          (await getText(`http://127.0.0.1:${first.leader.port}/metrics`)).text,
          'keyroll_reconcile_total{',
        ) >= 1,
    );
    const followerMetrics = (await getText(`http://127.0.0.1:${first.follower.port}/metrics`)).text;
    expect(metricValue(followerMetrics, 'keyroll_reconcile_total{')).toBe(0);

    // The leader dies without releasing: the follower waits out the Lease, then takes over.
    const killedAt = Date.now();
    first.leader.p.child.kill('SIGKILL');
    await first.leader.p.exited;
    await waitFor('takeover', async () => (await leaderOf(first.follower.port)) === 1, 15_000);
    const tookMs = Date.now() - killedAt;
    expect(tookMs).toBeGreaterThanOrEqual(2_500);
    const lease = server.hooks.get('leases.coordination.k8s.io', NS, 'keyroll-operator') as {
      spec?: { holderIdentity?: string; leaseTransitions?: number };
    };
    expect(lease.spec?.holderIdentity).toBe(first.follower === a ? 'replica-a' : 'replica-b');
    expect(lease.spec?.leaseTransitions).toBeGreaterThanOrEqual(1);

    // SIGTERM: graceful stop, exit 0, Lease released for the next replica.
    const exit = await first.follower.p.stop('SIGTERM', 15_000);
    expect(exit.code).toBe(0);
    const released = server.hooks.get('leases.coordination.k8s.io', NS, 'keyroll-operator') as {
      spec?: { holderIdentity?: string };
    };
    expect(released.spec?.holderIdentity ?? '').toBe('');
  }, 150_000);

  it('RBAC: every request the operator sent is allowed by the Role in manifests/base/rbac.yaml', () => {
    const allowed = roleAllows('keyroll-operator');
    // client-node's watches go out with undici's own User-Agent; the test's own requests say keyroll-test.
    const sent = requestsSent(server, (ua) => /^keyroll-operator/.test(ua) || ua === 'undici');
    const denied = [...sent].filter((s) => !allowed.has(s));
    expect(denied).toEqual([]);
    // And the Role grants nothing the operator did not use over this file's runs (which include a
    // status conflict, lease takeovers and Secret/Pod informers): least privilege, both ways.
    // Event aggregation patches an Event only when one repeats, which these runs do not provoke;
    // test/operator/events.test.ts shows the operator sending that patch (count 4, one Event).
    const exercisedElsewhere = new Set(['|events|patch']);
    const unused = [...allowed].filter((a) => !sent.has(a) && !exercisedElsewhere.has(a));
    expect(unused).toEqual([]);
  });

  it('no secret value in stored objects (but Secrets), Events, logs or metrics', async () => {
    const needles = [
      KEY_A,
      TOKEN,
      Buffer.from(KEY_A).toString('base64'),
      Buffer.from(TOKEN).toString('base64'),
    ];
    const stored = server.hooks
      .dump()
      .filter((o) => (o as { kind?: string }).kind !== 'Secret')
      .map((o) => JSON.stringify(o))
      .join('\n');
    const texts = [stored, logLines.join('\n'), processLines.flat().join('\n')];
    for (const t of texts) for (const n of needles) expect(t.includes(n)).toBe(false);
  });
});
