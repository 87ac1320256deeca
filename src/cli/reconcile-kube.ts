// Owns `keyroll reconcile --once --kube`: one snapshot of the namespace → the operator's reconciler once per GatewayKey → report and exit code.
import { hostname } from 'node:os';
import * as z from 'zod';
import { createLogger, type Logger, SecretRegistry } from '../log.ts';
import {
  type CachedGatewayKey,
  type GatewayKeyStatus,
  objectKey,
  parseGatewayKey,
  parseStatus,
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
import { createReconciler, TargetsNotConvergedError } from '../operator/reconciler.ts';
import { DEFAULT_RETRY, type RetryPolicy } from '../reconcile/retry.ts';
import { VERSION } from '../version.ts';
import { EXIT_NOT_DONE, EXIT_OK, EXIT_USAGE, type Io, UsageError } from './usage.ts';

const MetaSchema = z.object({ name: z.string(), namespace: z.string() });
const NAMESPACE_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** Upper bound of listing one resource, all pages together (each request has its own timeout). */
const LIST_TIMEOUT_MS = 60_000;

export interface KubeReconcileOptions {
  namespace?: string | undefined;
  kubeconfig?: string | undefined;
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

export interface KubeReconcileDeps {
  /** Replaces the client built from the kubeconfig (tests). */
  kube?: KubeClient;
  signal?: AbortSignal;
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

/**
 * The client the reconciler gets: every call passes through, and the newest GatewayKey status
 * the reconciler wrote or re-read is remembered, so the outcome is read from what it decided.
 */
function recordingClient(kube: KubeClient): { kube: KubeClient; latest: Map<string, GatewayKeyStatus> } {
  const latest = new Map<string, GatewayKeyStatus>();
  const wrapped: KubeClient = {
    list: (...a) => kube.list(...a),
    watch: (...a) => kube.watch(...a),
    async getGatewayKey(namespace, name, signal) {
      const raw = await kube.getGatewayKey(namespace, name, signal);
      const gk = raw ? parseGatewayKey(raw) : null;
      if (gk) latest.set(objectKey(namespace, name), gk.status);
      return raw;
    },
    async replaceGatewayKeyStatus(object, signal) {
      const stored = await kube.replaceGatewayKeyStatus(object, signal);
      const gk = parseGatewayKey(stored);
      const meta = MetaSchema.safeParse(object.metadata);
      if (meta.success) {
        latest.set(
          objectKey(meta.data.namespace, meta.data.name),
          gk ? gk.status : parseStatus(object.status),
        );
      }
      return stored;
    },
    createEvent: (...a) => kube.createEvent(...a),
    getLease: (...a) => kube.getLease(...a),
    createLease: (...a) => kube.createLease(...a),
    replaceLease: (...a) => kube.replaceLease(...a),
  };
  return { kube: wrapped, latest };
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

/**
 * What a one-shot `--kube` command prints through: stdout, stderr and a pino logger (to stderr),
 * all scrubbed by `secrets`, so a key or token in an error message is replaced before it leaves
 * the process.
 */
export function scrubbedOutput(command: string, io: Io, secrets: SecretRegistry) {
  const out = (t: string) => io.stdout(secrets.scrub(t));
  const err = (t: string) => io.stderr(secrets.scrub(t));
  const log = createLogger({
    level: io.env.KEYROLL_LOG_LEVEL ?? 'warn',
    secrets,
    destination: { write: (line: string) => err(line) },
  }).child({ command, mode: 'kube' });
  return { out, err, log };
}

/** A signal aborted by SIGINT/SIGTERM (or by `outer`); `dispose()` removes the listeners. */
export function interruptible(outer?: AbortSignal): { signal: AbortSignal; dispose: () => void } {
  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => abort.abort(new Error(`interrupted by ${sig}`));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return {
    signal: outer ? AbortSignal.any([outer, abort.signal]) : abort.signal,
    dispose: () => {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
    },
  };
}

export function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The client and namespace a `--kube` command works on; an exit code when the kubeconfig is unusable. */
export function connectKube(
  command: 'reconcile' | 'diff',
  opts: { namespace?: string | undefined; kubeconfig?: string | undefined },
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
      err(`keyroll ${command}: cannot load the kubeconfig${path ? ` ${path}` : ''}: ${message(e)}\n`);
      return EXIT_USAGE;
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
    err(`keyroll ${command}: namespace ${namespace}: ${message(e)}${hint}\n`);
    return EXIT_USAGE;
  }
}

export async function runKubeReconcile(
  opts: KubeReconcileOptions,
  io: Io,
  deps: KubeReconcileDeps = {},
): Promise<number> {
  const secrets = new SecretRegistry();
  const { out, err, log } = scrubbedOutput('reconcile', io, secrets);

  const requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
  const conn = connectKube('reconcile', opts, io, err, deps.kube, requestTimeoutMs);
  if (typeof conn === 'number') return conn;
  const { kube, namespace } = conn;

  const { signal, dispose } = interruptible(deps.signal);
  try {
    const snapshot = await listNamespace('reconcile', kube, namespace, signal, log, err);
    if (typeof snapshot === 'number') return snapshot;
    const { gatewayKeys, secrets: secretList, pods } = snapshot;
    log.info(
      { namespace, gatewayKeys: gatewayKeys.length, secrets: secretList.length, pods: pods.length },
      'Listed the namespace',
    );

    const recording = recordingClient(kube);
    const retry: RetryPolicy = {
      ...DEFAULT_RETRY,
      ...(opts.retries !== undefined ? { retries: opts.retries } : {}),
    };
    const reconcile = createReconciler({
      gatewayKeys: snapshotCache(gatewayKeys),
      secrets: snapshotCache(secretList),
      pods: snapshotCache(pods),
      kube: recording.kube,
      log,
      now: () => Date.now(),
      metrics: new OperatorMetrics(),
      identity: io.env.POD_NAME || `${hostname()}-${process.pid}`,
      // A one-shot pass never requeues: these only shape the values it returns, which are ignored.
      resyncMs: 300_000,
      missingSourceRequeueMs: 30_000,
      apiTimeoutMs: requestTimeoutMs,
      pass: {
        retry,
        deadlineMs: opts.deadlineMs,
        pollIntervalMs: opts.pollIntervalMs,
        requestTimeoutMs: 5_000,
        concurrency: opts.concurrency ?? 10,
      },
      signal,
      secretValues: secrets,
    });

    const outcomes: GatewayKeyOutcome[] = [];
    const live = gatewayKeys.filter((g) => !g.deleting).sort((a, b) => a.name.localeCompare(b.name));
    // Sequential: a Job bounds its load on the API server and the fleet; targets within one
    // GatewayKey are still worked on concurrently under its rollout limits.
    for (const gk of live) {
      const key = objectKey(gk.namespace, gk.name);
      let error: string | undefined;
      try {
        await reconcile(key);
      } catch (e) {
        if (signal.aborted) throw signal.reason ?? e;
        if (!(e instanceof TargetsNotConvergedError)) error = secrets.scrub(message(e));
      }
      const outcome = outcomeOf(gk.name, recording.latest.get(key) ?? gk.status);
      if (error !== undefined) {
        outcome.converged = false;
        outcome.error = error;
        outcome.reason = error;
        log.error({ gatewayKey: gk.name, namespace, error }, 'Reconcile failed');
      }
      outcomes.push(outcome);
    }

    if (opts.json) {
      out(
        `${JSON.stringify({ namespace, converged: outcomes.every((o) => o.converged), gatewayKeys: outcomes }, null, 2)}\n`,
      );
    } else if (outcomes.length === 0) {
      out(`no GatewayKeys in namespace ${namespace}\n`);
    } else {
      out(renderOutcomes(outcomes));
    }
    if (outcomes.some((o) => o.error !== undefined)) return EXIT_USAGE;
    return outcomes.every((o) => o.converged) ? EXIT_OK : EXIT_NOT_DONE;
  } finally {
    dispose();
  }
}
