// Owns the running operator: informers → handlers that enqueue keys → leader-gated work queue → reconciler; health and metrics.
import { createServer, type Server } from 'node:http';
import type { Clock } from '../clock.ts';
import type { Logger, SecretRegistry } from '../log.ts';
import { DEFAULT_RETRY } from '../reconcile/retry.ts';
import type { OperatorConfig } from './config.ts';
import {
  type CachedGatewayKey,
  type LabelSelector,
  objectKey,
  parseGatewayKey,
  parseSpec,
} from './gateway-key.ts';
import { Informer } from './informer.ts';
import {
  type CachedPod,
  type CachedSecret,
  type KubeClient,
  parsePod,
  parseSecret,
  SECRET_LABEL_SELECTOR,
} from './kube-port.ts';
import { LeaderElector } from './leader.ts';
import { OperatorMetrics } from './metrics.ts';
import { selectorMatches } from './pod-targets.ts';
import { createReconciler, type PassSettings } from './reconciler.ts';
import { WorkQueue } from './work-queue.ts';

const SECRET_INDEX = 'secretName';
const SHUTDOWN_GRACE_MS = 10_000;

export interface OperatorDeps {
  kube: KubeClient;
  config: OperatorConfig & { namespace: string };
  log: Logger;
  clock: Clock;
  secretValues: SecretRegistry;
  /** Overrides for tests (faster polls, fewer retries). */
  pass?: Partial<PassSettings>;
}

export interface RunningOperator {
  readonly metrics: OperatorMetrics;
  /** The port /healthz, /readyz and /metrics listen on. */
  readonly port: number;
  readonly isLeader: () => boolean;
  readonly synced: () => boolean;
  /** Resolves when nothing is queued or running (tests). */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

export async function startOperator(deps: OperatorDeps): Promise<RunningOperator> {
  const { kube, config, clock } = deps;
  const log = deps.log.child({ component: 'operator' });
  const metrics = new OperatorMetrics();
  const ns = config.namespace;
  const backoff = { baseMs: 500, maxMs: 30_000 };
  const watchTimeoutSeconds = 300;

  let queue: WorkQueue | null = null;
  let leadership: AbortController | null = null;
  const enqueue = (key: string) => queue?.add(key);

  const gatewayKeys: Informer<CachedGatewayKey> = new Informer<CachedGatewayKey>({
    resource: 'gatewaykeys',
    namespace: ns,
    kube,
    parse: parseGatewayKey,
    clock,
    log: deps.log,
    backoff,
    watchTimeoutSeconds,
    onChange: (prev, cur) => {
      // Status-only updates (including our own writes) do not change the generation: ignoring
      // them keeps a status write from waking its own reconcile.
      if (prev && cur && prev.generation === cur.generation && prev.deleting === cur.deleting) return;
      const o = cur ?? prev;
      if (o) enqueue(objectKey(o.namespace, o.name));
    },
    onRestart: (reason) => metrics.informerRestarts.inc({ resource: 'gatewaykeys', reason }),
  });
  gatewayKeys.addIndex(SECRET_INDEX, (gk) => gk.secretNames.map((n) => objectKey(gk.namespace, n)));

  const secrets = new Informer<CachedSecret>({
    resource: 'secrets',
    namespace: ns,
    labelSelector: SECRET_LABEL_SELECTOR,
    kube,
    parse: parseSecret,
    clock,
    log: deps.log,
    backoff,
    watchTimeoutSeconds,
    onChange: (prev, cur) => {
      const o = cur ?? prev;
      if (!o) return;
      for (const key of gatewayKeys.byIndex(SECRET_INDEX, objectKey(o.namespace, o.name))) enqueue(key);
    },
    onRestart: (reason) => metrics.informerRestarts.inc({ resource: 'secrets', reason }),
  });

  const podsChanged = (prev: CachedPod | undefined, cur: CachedPod | undefined) => {
    if (
      prev &&
      cur &&
      prev.ready === cur.ready &&
      prev.podIP === cur.podIP &&
      prev.portOverride === cur.portOverride &&
      sameLabels(prev.labels, cur.labels)
    ) {
      return; // nothing target discovery reads has changed
    }
    // Not leading: nothing to wake (a new leader reconciles every GatewayKey once). This is every
    // pod of the first list, which would otherwise match each pod against every GatewayKey.
    if (!queue) return;
    for (const gk of gatewayKeys.list()) {
      const sel = selectorOf(gk);
      if (!sel) continue;
      const hit = [prev, cur].some(
        (p) => p && p.namespace === gk.namespace && selectorMatches(sel, p.labels),
      );
      if (hit) enqueue(objectKey(gk.namespace, gk.name));
    }
  };
  const pods = new Informer<CachedPod>({
    resource: 'pods',
    namespace: ns,
    kube,
    parse: parsePod,
    clock,
    log: deps.log,
    backoff,
    watchTimeoutSeconds,
    onChange: podsChanged,
    onRestart: (reason) => metrics.informerRestarts.inc({ resource: 'pods', reason }),
  });

  const informers = [gatewayKeys, secrets, pods];
  const synced = () => informers.every((i) => i.hasSynced);

  const pass: PassSettings = {
    retry: DEFAULT_RETRY,
    deadlineMs: config.targetDeadline,
    pollIntervalMs: 500,
    requestTimeoutMs: 5_000,
    concurrency: 10,
    ...deps.pass,
  };

  function startLeading(): void {
    leadership = new AbortController();
    const reconcile = createReconciler({
      gatewayKeys,
      secrets,
      pods,
      kube,
      log: deps.log,
      clock,
      metrics,
      identity: config.identity,
      resyncMs: config.resync,
      missingSourceRequeueMs: Math.min(config.resync, 30_000),
      apiTimeoutMs: config.requestTimeout,
      pass,
      signal: leadership.signal,
      secretValues: deps.secretValues,
    });
    const q = new WorkQueue(
      async (key) => {
        const started = clock.now();
        try {
          const r = await reconcile(key);
          metrics.reconciles.inc({ result: 'success' });
          return r;
        } catch (err) {
          metrics.reconciles.inc({ result: 'error' });
          metrics.reconcileErrors.inc();
          throw err;
        } finally {
          metrics.reconcileDuration.observe((clock.now() - started) / 1000);
          metrics.queueDepth.set(queue?.depth ?? 0);
        }
      },
      { concurrency: config.concurrency, baseDelayMs: 1_000, maxDelayMs: 60_000, clock },
    );
    q.onError = (key, err, retryInMs) =>
      log.warn(
        { gatewayKey: key, error: deps.secretValues.scrub((err as Error).message), retryInMs },
        'Reconcile failed; requeued with backoff',
      );
    queue = q;
    metrics.leader.set(1);
    // Level-triggered: a new leader reconciles everything once; converged targets see only a GET.
    for (const gk of gatewayKeys.list()) q.add(objectKey(gk.namespace, gk.name));
  }

  /**
   * Losing the Lease aborts running passes at once (another replica may act now). A shutdown first
   * lets running passes finish for up to `graceMs`, so a gateway is not left mid-rotation.
   */
  async function stopLeading(graceMs = 0): Promise<void> {
    const q = queue;
    const lead = leadership;
    queue = null;
    leadership = null;
    metrics.leader.set(0);
    if (!q) return;
    const drained = q.shutdown();
    if (graceMs > 0) {
      await new Promise<void>((resolve) => {
        const cancel = clock.setTimeout(resolve, graceMs);
        void drained.then(() => {
          cancel();
          resolve();
        });
      });
    }
    lead?.abort();
    await drained;
  }

  const elector = new LeaderElector({
    kube,
    namespace: ns,
    name: config.leaseName,
    identity: config.identity,
    leaseDurationMs: config.leaseDuration,
    renewDeadlineMs: config.renewDeadline,
    retryPeriodMs: config.retryPeriod,
    timeoutMs: Math.min(config.requestTimeout, config.retryPeriod),
    clock,
    log: deps.log,
    onStartedLeading: () => {
      if (synced()) startLeading();
    },
    onStoppedLeading: () => void stopLeading(),
  });
  metrics.leader.set(0);

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') {
      res.writeHead(405, { 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const ok = synced();
      res
        .writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' })
        .end(ok ? 'ok\n' : 'caches not synced\n');
    } else if (path === '/metrics') {
      metrics.queueDepth.set(queue?.depth ?? 0);
      metrics.render().then(
        (text) => res.writeHead(200, { 'content-type': metrics.contentType }).end(text),
        (err: unknown) =>
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`),
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  const port = await listen(server, config.metricsPort, config.metricsBind);
  log.info({ port, namespace: ns, identity: config.identity }, 'Operator listening for health and metrics');

  for (const i of informers) i.start();
  let stopping = false;
  // Act only on synced caches: a reconcile on a half-filled cache would see targets as missing.
  void Promise.all(informers.map((i) => i.whenSynced())).then(() => {
    if (stopping) return;
    log.info(
      { gatewayKeys: gatewayKeys.size, secrets: secrets.size, pods: pods.size },
      'Caches synced; campaigning for leadership',
    );
    elector.start();
  });

  return {
    metrics,
    port,
    isLeader: () => elector.isLeader,
    synced,
    idle: async () => {
      await queue?.idle();
    },
    async stop() {
      stopping = true;
      log.info({}, 'Shutting down');
      await stopLeading(SHUTDOWN_GRACE_MS);
      await elector.stop();
      await Promise.all(informers.map((i) => i.stop()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections?.();
      log.info({}, 'Stopped');
    },
  };
}

/** A GatewayKey's target selector, parsed once per cached object (objects are replaced, never changed). */
const selectors = new WeakMap<CachedGatewayKey, LabelSelector | null>();
function selectorOf(gk: CachedGatewayKey): LabelSelector | null {
  let sel = selectors.get(gk);
  if (sel === undefined) {
    const spec = parseSpec(gk.spec);
    sel = spec.ok ? spec.spec.targets.selector : null;
    selectors.set(gk, sel);
  }
  return sel;
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const addr = server.address();
      resolve(addr && typeof addr === 'object' ? addr.port : port);
    });
  });
}
