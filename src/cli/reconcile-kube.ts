// Owns `keyroll reconcile --once --kube`: one snapshot of the namespace → the operator's reconciler once per GatewayKey → report and exit code.
import { hostname } from 'node:os';
import { type Clock, systemClock } from '../clock.ts';
import type { GatewayKeyCaches } from '../engine/gateway-key.ts';
import { errorMessage } from '../errors.ts';
import type { Logger, SecretRegistry } from '../log.ts';
import {
  type CachedGatewayKey,
  type GatewayKeyStatus,
  objectKey,
  parseGatewayKey,
} from '../operator/gateway-key.ts';
import type { Cached, CacheReader } from '../operator/informer.ts';
import { defaultNamespace, kubeAdapter, loadKubeConfig } from '../operator/kube.ts';
import {
  type CachedPod,
  type CachedSecret,
  isKubeError,
  type KubeClient,
  type ListOptions,
  parsePod,
  parseSecret,
  SECRET_LABEL_SELECTOR,
  type WatchedResource,
} from '../operator/kube-port.ts';
import { OperatorMetrics } from '../operator/metrics.ts';
import { createGatewayKeyReconciler } from '../operator/reconciler.ts';
import { takeRunLease } from '../operator/run-lease.ts';
import { DEFAULT_RETRY, type RetryPolicy } from '../reconcile/retry.ts';
import { VERSION } from '../version.ts';
import { type CommandContext, commandContext } from './shell.ts';
import { EXIT_NOT_DONE, EXIT_OK, EXIT_USAGE, type Io, UsageError } from './usage.ts';

const NAMESPACE_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** Upper bound of listing one resource, all pages together (each request has its own timeout). */
const LIST_TIMEOUT_MS = 60_000;

export interface KubeReconcileOptions {
  namespace?: string | undefined;
  kubeconfig?: string | undefined;
  /** A kubeconfig context other than the current one. */
  context?: string | undefined;
  json: boolean;
  /** Per target: delivery plus verification. */
  deadlineMs: number;
  pollIntervalMs: number;
  retries?: number | undefined;
  /** Targets worked on at once within one GatewayKey. */
  concurrency?: number | undefined;
  /** Per Kubernetes API request. */
  requestTimeoutMs?: number;
}

/** What a `--kube` command prints and logs through, and its stop signal: the command's shell. */
export type KubeShell = Pick<CommandContext, 'stdout' | 'stderr' | 'log' | 'secrets' | 'signal'>;

export interface KubeDeps {
  /** Replaces the client built from the kubeconfig (tests). */
  kube?: KubeClient;
  signal?: AbortSignal;
  clock?: Clock;
  /**
   * The command's shell (`reconcile`/`diff` pass theirs); without one, a shell of its own is made
   * for the call (scrubbed output, logger, SIGINT/SIGTERM) and disposed after.
   */
  shell?: KubeShell;
}

/** One GatewayKey's outcome, as printed. */
export interface GatewayKeyOutcome {
  name: string;
  converged: boolean;
  desiredVersion: string | null;
  targets: { total: number; converged: number; progressing: number; failed: number };
  /** Why it is not converged (empty when converged); the reason code first. */
  reason: string;
  /** Set when the reconcile failed with an error other than "targets not converged". */
  error?: string;
}

/** A cache filled once from one list: what the reconciler reads instead of an informer. */
export function snapshotCache<T extends Cached>(items: readonly T[]): CacheReader<T> {
  const store = new Map<string, T>();
  for (const o of items) store.set(objectKey(o.namespace, o.name), Object.freeze(o));
  return {
    get: (namespace, name) => store.get(objectKey(namespace, name)),
    list: () => [...store.values()],
  };
}

/** Pure: the outcome a GatewayKey's status reports. Converged only when Ready is True. */
export function outcomeOf(name: string, status: GatewayKeyStatus): GatewayKeyOutcome {
  const ready = status.conditions?.find((c) => c.type === 'Ready');
  const degraded = status.conditions?.find((c) => c.type === 'Degraded');
  const converged = ready?.status === 'True';
  const why = degraded?.status === 'True' ? degraded : ready;
  return {
    name,
    converged,
    desiredVersion: status.desiredVersion ?? null,
    targets: status.targets ?? { total: 0, converged: 0, progressing: 0, failed: 0 },
    reason: converged ? '' : why ? `${why.reason}: ${why.message}` : 'no status written',
  };
}

/** Pure: one plain line per GatewayKey. */
export function renderOutcomes(outcomes: readonly GatewayKeyOutcome[]): string {
  return outcomes
    .map((o) => {
      const counts = `${o.targets.converged}/${o.targets.total}`;
      if (o.error !== undefined) return `${o.name}: error: ${o.error}\n`;
      return o.converged
        ? `${o.name}: converged ${counts}\n`
        : `${o.name}: not converged ${counts}: ${o.reason}\n`;
    })
    .join('');
}

async function listAll<T>(
  kube: KubeClient,
  resource: WatchedResource,
  namespace: string,
  opts: ListOptions,
  parse: (raw: unknown) => T | null,
  signal: AbortSignal,
  log: Logger,
): Promise<T[]> {
  const { items } = await kube.list(
    resource,
    namespace,
    opts,
    AbortSignal.any([signal, AbortSignal.timeout(LIST_TIMEOUT_MS)]),
  );
  const out: T[] = [];
  let skipped = 0;
  for (const raw of items) {
    const o = parse(raw);
    if (o) out.push(o);
    else skipped++;
  }
  if (skipped > 0) log.warn({ resource, skipped }, 'Skipped objects that could not be parsed');
  return out;
}

/** The client and namespace a `--kube` command works on; an exit code when the kubeconfig is unusable. */
export function connectKube(
  command: 'reconcile' | 'diff',
  opts: { namespace?: string | undefined; kubeconfig?: string | undefined; context?: string | undefined },
  io: Io,
  err: (text: string) => void,
  injected: KubeClient | undefined,
  requestTimeoutMs: number,
): { kube: KubeClient; namespace: string } | number {
  let kube = injected;
  let namespace = opts.namespace ?? io.env.KEYROLL_NAMESPACE;
  if (!kube || !namespace) {
    const path = opts.kubeconfig ?? io.env.KUBECONFIG;
    let kc: ReturnType<typeof loadKubeConfig>;
    try {
      kc = loadKubeConfig(path || undefined);
    } catch (e) {
      err(`keyroll ${command}: cannot load the kubeconfig${path ? ` ${path}` : ''}: ${errorMessage(e)}\n`);
      return EXIT_USAGE;
    }
    if (opts.context !== undefined) {
      if (!kc.getContextObject(opts.context))
        throw new UsageError(`--context: no context '${opts.context}' in the kubeconfig`);
      kc.setCurrentContext(opts.context);
    }
    namespace ??= defaultNamespace(kc, io.env);
    kube ??= kubeAdapter(kc, {
      kubeconfigPath: path || undefined,
      requestTimeoutMs,
      userAgent: `keyroll-${command}/${VERSION}`,
    });
  }
  if (!NAMESPACE_RE.test(namespace))
    throw new UsageError(`--namespace: expected a namespace name, got '${namespace}'`);
  return { kube, namespace };
}

export interface NamespaceSnapshot {
  gatewayKeys: CachedGatewayKey[];
  /** Only the Secrets labelled as key sources: all the operator may read. */
  secrets: CachedSecret[];
  pods: CachedPod[];
}

/** One list of each resource the reconciler reads (list verbs only); an exit code when the API refuses. */
export async function listNamespace(
  command: 'reconcile' | 'diff',
  kube: KubeClient,
  namespace: string,
  signal: AbortSignal,
  log: Logger,
  err: (text: string) => void,
): Promise<NamespaceSnapshot | number> {
  try {
    const [gatewayKeys, secrets, pods] = await Promise.all([
      listAll(kube, 'gatewaykeys', namespace, {}, parseGatewayKey, signal, log),
      listAll(kube, 'secrets', namespace, { labelSelector: SECRET_LABEL_SELECTOR }, parseSecret, signal, log),
      listAll(kube, 'pods', namespace, {}, parsePod, signal, log),
    ]);
    return { gatewayKeys, secrets, pods };
  } catch (e) {
    const hint = isKubeError(e, 403) ? ' (check the keyroll-reconcile Role in manifests/base/rbac.yaml)' : '';
    err(`keyroll ${command}: namespace ${namespace}: ${errorMessage(e)}${hint}\n`);
    return EXIT_USAGE;
  }
}

/** One `--kube` command's view of its namespace, listed once, with scrubbed output. */
export interface KubeSession {
  out: (text: string) => void;
  log: Logger;
  secrets: SecretRegistry;
  kube: KubeClient;
  namespace: string;
  snapshot: NamespaceSnapshot;
  caches: GatewayKeyCaches;
  /** The GatewayKeys not being deleted, by name. */
  live: CachedGatewayKey[];
  signal: AbortSignal;
  clock: Clock;
}

/**
 * Connects, lists the namespace once, and runs `fn` over it with SIGINT/SIGTERM wired to the
 * signal; an exit code when the kubeconfig or the API refuses.
 */
export async function withKubeSession(
  command: 'reconcile' | 'diff',
  opts: {
    namespace?: string | undefined;
    kubeconfig?: string | undefined;
    context?: string | undefined;
    requestTimeoutMs?: number;
    json?: boolean;
  },
  io: Io,
  deps: KubeDeps,
  fn: (s: KubeSession) => Promise<number>,
): Promise<number> {
  const own = deps.shell ? null : commandContext([], io, { name: command, usage: '', output: false });
  try {
    return await inKubeSession(command, opts, io, deps, deps.shell ?? own!, fn);
  } finally {
    own?.dispose();
  }
}

async function inKubeSession(
  command: 'reconcile' | 'diff',
  opts: Parameters<typeof withKubeSession>[1],
  io: Io,
  deps: KubeDeps,
  shell: KubeShell,
  fn: (s: KubeSession) => Promise<number>,
): Promise<number> {
  const { secrets, stdout: out, stderr: err } = shell;
  const log = shell.log.child({ command, mode: 'kube' });
  const conn = connectKube(command, opts, io, err, deps.kube, opts.requestTimeoutMs ?? 10_000);
  if (typeof conn === 'number') return conn;
  const { kube, namespace } = conn;
  const interrupted = deps.signal ? AbortSignal.any([deps.signal, shell.signal]) : shell.signal;
  // reconcile acts only while it holds the operator's Lease (src/operator/run-lease.ts): exit 0
  // "skipped" when the operator holds it. diff only reads.
  const lease =
    command === 'reconcile'
      ? await takeRunLease({
          kube,
          namespace,
          env: io.env,
          log,
          out,
          err,
          json: opts.json === true,
          signal: interrupted,
          ...(deps.clock ? { clock: deps.clock } : {}),
        })
      : null;
  if (typeof lease === 'number') return lease;
  const signal = lease?.signal ?? interrupted;
  try {
    const snapshot = await listNamespace(command, kube, namespace, signal, log, err);
    if (typeof snapshot === 'number') return snapshot;
    log.info(
      {
        namespace,
        gatewayKeys: snapshot.gatewayKeys.length,
        secrets: snapshot.secrets.length,
        pods: snapshot.pods.length,
      },
      'Listed the namespace',
    );
    const caches: GatewayKeyCaches = {
      gatewayKeys: snapshotCache(snapshot.gatewayKeys),
      secrets: snapshotCache(snapshot.secrets),
      pods: snapshotCache(snapshot.pods),
    };
    const live = snapshot.gatewayKeys.filter((g) => !g.deleting).sort((a, b) => a.name.localeCompare(b.name));
    const clock = deps.clock ?? systemClock;
    return await fn({ out, log, secrets, kube, namespace, snapshot, caches, live, signal, clock });
  } finally {
    await lease?.release();
  }
}

export async function runKubeReconcile(
  opts: KubeReconcileOptions,
  io: Io,
  deps: KubeDeps = {},
): Promise<number> {
  return withKubeSession('reconcile', opts, io, deps, async (k) => {
    const retry: RetryPolicy = {
      ...DEFAULT_RETRY,
      ...(opts.retries !== undefined ? { retries: opts.retries } : {}),
    };
    // The operator's own reconcile (status, Events), once per GatewayKey; what it decided is printed.
    const reconcile = createGatewayKeyReconciler({
      ...k.caches,
      kube: k.kube,
      log: k.log,
      clock: k.clock,
      metrics: new OperatorMetrics(),
      identity: io.env.POD_NAME || `${hostname()}-${process.pid}`,
      // A one-shot pass never requeues: these only shape the values it returns, which are ignored.
      resyncMs: 300_000,
      missingSourceRequeueMs: 30_000,
      apiTimeoutMs: opts.requestTimeoutMs ?? 10_000,
      pass: {
        retry,
        deadlineMs: opts.deadlineMs,
        pollIntervalMs: opts.pollIntervalMs,
        requestTimeoutMs: 5_000,
        concurrency: opts.concurrency ?? 10,
      },
      signal: k.signal,
      secretValues: k.secrets,
    });

    const outcomes: GatewayKeyOutcome[] = [];
    // Sequential: a Job bounds its load on the API server and the fleet; targets within one
    // GatewayKey are still worked on concurrently under its rollout limits.
    for (const gk of k.live) {
      let status: GatewayKeyStatus = gk.status;
      let error: string | undefined;
      try {
        status = (await reconcile(objectKey(gk.namespace, gk.name))).status ?? status;
      } catch (e) {
        if (k.signal.aborted) throw k.signal.reason ?? e;
        error = k.secrets.scrub(errorMessage(e));
      }
      const outcome = outcomeOf(gk.name, status);
      if (error !== undefined) {
        outcome.converged = false;
        outcome.error = error;
        outcome.reason = error;
        k.log.error({ gatewayKey: gk.name, namespace: k.namespace, error }, 'Reconcile failed');
      }
      outcomes.push(outcome);
    }

    if (opts.json) {
      k.out(
        `${JSON.stringify({ namespace: k.namespace, converged: outcomes.every((o) => o.converged), gatewayKeys: outcomes }, null, 2)}\n`,
      );
    } else if (outcomes.length === 0) {
      k.out(`no GatewayKeys in namespace ${k.namespace}\n`);
    } else {
      k.out(renderOutcomes(outcomes));
    }
    if (outcomes.some((o) => o.error !== undefined)) return EXIT_USAGE;
    return outcomes.every((o) => o.converged) ? EXIT_OK : EXIT_NOT_DONE;
  });
}
