// Owns `keyroll diff --kube`: one snapshot of the namespace → a dry-run pass per GatewayKey → diff report and exit code; writes nothing.
import { SecretRegistry } from '../log.ts';
import { type CachedGatewayKey, KEY_SOURCE_LABEL, parseSpec } from '../operator/gateway-key.ts';
import { decodeSecretValue, type KubeClient } from '../operator/kube-port.ts';
import { podTargets, selectorIsEmpty } from '../operator/pod-targets.ts';
import { systemClock } from '../reconcile/clock.ts';
import { httpControllerClient } from '../reconcile/controller-client.ts';
import { renderDiff } from '../reconcile/report.ts';
import { DEFAULT_RETRY } from '../reconcile/retry.ts';
import { type PassResult, runPass } from '../reconcile/rollout.ts';
import { KeySourceError } from '../reconcile/sources/key-source.ts';
import { type SecretReader, secretKeySource } from '../reconcile/sources/secret-source.ts';
import {
  connectKube,
  interruptible,
  listNamespace,
  message,
  scrubbedOutput,
  snapshotCache,
} from './reconcile-kube.ts';
import { EXIT_NOT_DONE, EXIT_OK, EXIT_USAGE, type Io } from './usage.ts';

export interface KubeDiffOptions {
  namespace?: string | undefined;
  kubeconfig?: string | undefined;
  json: boolean;
  retries?: number | undefined;
  /** Per Kubernetes API request. */
  requestTimeoutMs?: number;
  /** Per controller request. */
  controllerTimeoutMs?: number;
}

export interface KubeDiffDeps {
  /** Replaces the client built from the kubeconfig (tests). */
  kube?: KubeClient;
  signal?: AbortSignal;
}

/** One GatewayKey's section of the report. */
export interface GatewayKeyDiff {
  name: string;
  drift: boolean;
  /** Why no pass could be planned (invalid spec, missing Secret, key or token); absent when one ran. */
  reason?: string;
  /** Set when planning failed with an unexpected error (exit 2). */
  error?: string;
  pass?: PassResult;
}

/** A dry run never waits for a gateway: nothing is sent, so there is nothing to verify. */
const DRY_DEADLINE_MS = 30_000;

function missing(ns: string, name: string): string {
  return `Secret ${ns}/${name} not found (keyroll sees only Secrets labelled ${KEY_SOURCE_LABEL}=true)`;
}

/** Pure: the text report, one section per GatewayKey, then a verdict line. */
export function renderKubeDiff(namespace: string, diffs: readonly GatewayKeyDiff[]): string {
  if (diffs.length === 0) return `no GatewayKeys in namespace ${namespace}\nno drift\n`;
  const sections = diffs.map((d) => {
    const head = `=== GatewayKey ${namespace}/${d.name}\n`;
    if (d.error !== undefined) return `${head}! error: ${d.error}\n`;
    if (!d.pass) return `${head}! drift: ${d.reason ?? 'unknown'}\n`;
    return head + renderDiff(d.pass);
  });
  const drifted = diffs.filter((d) => d.drift).length;
  const verdict =
    drifted === 0
      ? 'no drift'
      : `drift in ${drifted} of ${diffs.length} GatewayKey(s) in namespace ${namespace}`;
  return `${sections.join('\n')}\n${verdict}\n`;
}

export async function runKubeDiff(opts: KubeDiffOptions, io: Io, deps: KubeDiffDeps = {}): Promise<number> {
  const secrets = new SecretRegistry();
  const { out, err, log } = scrubbedOutput('diff', io, secrets);

  const conn = connectKube('diff', opts, io, err, deps.kube, opts.requestTimeoutMs ?? 10_000);
  if (typeof conn === 'number') return conn;
  const { kube, namespace } = conn;

  const { signal, dispose } = interruptible(deps.signal);
  try {
    const snapshot = await listNamespace('diff', kube, namespace, signal, log, err);
    if (typeof snapshot === 'number') return snapshot;
    const secretCache = snapshotCache(snapshot.secrets);
    // Register every value first, so even a section printed before its own Secret is read is scrubbed.
    for (const s of snapshot.secrets)
      for (const k of Object.keys(s.data)) {
        const v = decodeSecretValue(s, k);
        if (v !== null) secrets.add(v);
      }
    const reader: SecretReader = {
      async read(ref) {
        const s = secretCache.get(ref.namespace, ref.name);
        return s ? { data: s.data, annotations: s.annotations } : null;
      },
    };

    const planOne = async (gk: CachedGatewayKey): Promise<GatewayKeyDiff> => {
      const drift = (reason: string): GatewayKeyDiff => ({ name: gk.name, drift: true, reason });
      const parsed = parseSpec(gk.spec);
      if (!parsed.ok) return drift(`InvalidSpec: ${parsed.reason}`);
      const spec = parsed.spec;
      if (selectorIsEmpty(spec.targets.selector))
        return drift('InvalidSpec: spec.targets.selector: must not be empty (it would select every pod)');
      const secretRef = spec.source.secretRef;
      if (!secretRef) return drift('InvalidSpec: spec.source.secretRef: required');
      const tokenRef = spec.controllerTokenSecretRef;
      const tokenSecret = secretCache.get(namespace, tokenRef.name);
      if (!tokenSecret)
        return drift(`SecretNotFound: spec.controllerTokenSecretRef: ${missing(namespace, tokenRef.name)}`);
      const token = decodeSecretValue(tokenSecret, tokenRef.key);
      if (token === null)
        return drift(
          `TokenNotFound: spec.controllerTokenSecretRef: Secret ${namespace}/${tokenRef.name} has no non-empty key ${tokenRef.key}`,
        );
      secrets.add(token);
      if (!secretCache.get(namespace, secretRef.name))
        return drift(`SecretNotFound: spec.source.secretRef: ${missing(namespace, secretRef.name)}`);
      let material: Awaited<ReturnType<ReturnType<typeof secretKeySource>['current']>>;
      try {
        material = await secretKeySource(
          reader,
          { namespace, name: secretRef.name, key: secretRef.key },
          token,
        ).current(signal);
      } catch (e) {
        if (!(e instanceof KeySourceError)) throw e;
        return drift(`${e.reason}: spec.source.secretRef: ${e.message}`);
      }
      secrets.add(material.key);
      const { targets: podList } = podTargets(
        snapshot.pods,
        namespace,
        spec.targets.selector,
        spec.targets.port,
      );
      const targets = podList.map((t) => ({
        ...t,
        token,
        client: httpControllerClient({ url: t.url, token, timeoutMs: opts.controllerTimeoutMs ?? 5_000 }),
      }));
      const pass = await runPass(targets, {
        key: material,
        envVar: spec.envVar,
        delivery: spec.delivery,
        rollout: {
          concurrency: 10,
          maxUnavailable: spec.rollout.maxUnavailable,
          failureBudget: spec.rollout.failureBudget,
          paused: spec.rollout.paused,
        },
        dryRun: true,
        clock: systemClock,
        log,
        retry: { ...DEFAULT_RETRY, ...(opts.retries !== undefined ? { retries: opts.retries } : {}) },
        deadlineMs: DRY_DEADLINE_MS,
        pollIntervalMs: 500,
        signal,
      });
      const s = pass.summary;
      return { name: gk.name, drift: s.converged !== s.total, pass };
    };

    const diffs: GatewayKeyDiff[] = [];
    const live = snapshot.gatewayKeys.filter((g) => !g.deleting).sort((a, b) => a.name.localeCompare(b.name));
    for (const gk of live) {
      try {
        diffs.push(await planOne(gk));
      } catch (e) {
        if (signal.aborted) throw signal.reason ?? e;
        const error = secrets.scrub(message(e));
        log.error({ gatewayKey: gk.name, namespace, error }, 'Diff failed');
        diffs.push({ name: gk.name, drift: true, error });
      }
    }

    if (opts.json) {
      out(
        `${JSON.stringify({ namespace, drift: diffs.some((d) => d.drift), gatewayKeys: diffs }, null, 2)}\n`,
      );
    } else {
      out(renderKubeDiff(namespace, diffs));
    }
    if (diffs.some((d) => d.error !== undefined)) return EXIT_USAGE;
    return diffs.some((d) => d.drift) ? EXIT_NOT_DONE : EXIT_OK;
  } finally {
    dispose();
  }
}
