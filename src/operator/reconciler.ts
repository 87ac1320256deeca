// Owns reconcile(key) for one GatewayKey: read caches → parse → resolve key and targets → runPass → status, Events, metrics.
import type { Logger, SecretRegistry } from '../log.ts';
import { systemClock as reconcileClock } from '../reconcile/clock.ts';
import { type ControllerClient, httpControllerClient } from '../reconcile/controller-client.ts';
import type { TargetResult } from '../reconcile/reconcile-target.ts';
import type { RetryPolicy } from '../reconcile/retry.ts';
import { type PassResult, runPass } from '../reconcile/rollout.ts';
import { KeySourceError } from '../reconcile/sources/key-source.ts';
import { type SecretReader, secretKeySource } from '../reconcile/sources/secret-source.ts';
import { EventRecorder, type EventSpec, eventForDegraded, eventsForPass } from './events.ts';
import {
  type CachedGatewayKey,
  type GatewayKeyStatus,
  KEY_SOURCE_LABEL,
  parseGatewayKey,
  parseSpec,
  splitKey,
} from './gateway-key.ts';
import type { CacheReader } from './informer.ts';
import {
  type CachedPod,
  type CachedSecret,
  decodeSecretValue,
  isKubeError,
  type KubeClient,
} from './kube-port.ts';
import type { OperatorMetrics } from './metrics.ts';
import { podTargets, selectorIsEmpty } from './pod-targets.ts';
import {
  type DegradedReason,
  rotationCompleted,
  statusChanged,
  statusDegraded,
  statusFromPass,
  statusProgressing,
} from './status.ts';
import type { ReconcileResult } from './work-queue.ts';

export interface PassSettings {
  retry: RetryPolicy;
  /** Per target: delivery plus verification must finish within this. */
  deadlineMs: number;
  pollIntervalMs: number;
  /** Per controller request. */
  requestTimeoutMs: number;
  /** Targets observed at once within one GatewayKey. */
  concurrency: number;
}

export interface ReconcilerDeps {
  gatewayKeys: CacheReader<CachedGatewayKey>;
  secrets: CacheReader<CachedSecret>;
  pods: CacheReader<CachedPod>;
  kube: KubeClient;
  log: Logger;
  now: () => number;
  metrics: OperatorMetrics;
  /** Written into Events as reportingInstance. */
  identity: string;
  resyncMs: number;
  /** Requeue delay while a Secret or key is missing (its arrival also wakes the key at once). */
  missingSourceRequeueMs: number;
  /** Upper bound of one API call made by the reconciler. */
  apiTimeoutMs: number;
  pass: PassSettings;
  /** Aborted on shutdown or loss of leadership: a pass stops where it is. */
  signal: AbortSignal;
  /** Every key and token the operator reads is registered here, so no log line can carry it. */
  secretValues: SecretRegistry;
  controllerClient?: (url: string, token: string, timeoutMs: number) => ControllerClient;
}

/** Thrown after status is written when targets failed: the queue retries with capped backoff. */
export class TargetsNotConvergedError extends Error {
  override name = 'TargetsNotConvergedError';
}

const MAX_STATUS_CONFLICTS = 5;

interface Rotation {
  version: string;
  since: number;
  delivered: boolean;
}

export function createReconciler(
  deps: ReconcilerDeps,
): (key: string) => Promise<ReconcileResult | undefined> {
  const rotations = new Map<string, Rotation>();
  const recorder = new EventRecorder({ kube: deps.kube, now: deps.now, instance: deps.identity });
  const makeClient =
    deps.controllerClient ??
    ((url: string, token: string, timeoutMs: number) => httpControllerClient({ url, token, timeoutMs }));

  const reader: SecretReader = {
    async read(ref) {
      const s = deps.secrets.get(ref.namespace, ref.name);
      return s ? { data: s.data, annotations: s.annotations } : null;
    },
  };

  function bounded(): AbortSignal {
    return AbortSignal.any([deps.signal, AbortSignal.timeout(deps.apiTimeoutMs)]);
  }

  /** PUT /status with the cached resourceVersion; on 409 re-read, re-compare and retry. Returns the stored object. */
  async function writeStatus(gk: CachedGatewayKey, status: GatewayKeyStatus): Promise<CachedGatewayKey> {
    let current = gk;
    for (let attempt = 1; attempt <= MAX_STATUS_CONFLICTS; attempt++) {
      if (!statusChanged(current.rawStatus, status)) return current;
      try {
        const stored = await deps.kube.replaceGatewayKeyStatus(
          {
            metadata: {
              name: current.name,
              namespace: current.namespace,
              resourceVersion: current.resourceVersion,
              ...(current.uid ? { uid: current.uid } : {}),
            },
            spec: current.spec,
            status,
          },
          bounded(),
        );
        deps.metrics.statusWrites.inc({ result: 'written' });
        return parseGatewayKey(stored) ?? current;
      } catch (err) {
        if (!isKubeError(err, 409)) {
          deps.metrics.statusWrites.inc({ result: 'error' });
          throw err;
        }
        deps.metrics.statusWrites.inc({ result: 'conflict' });
        const fresh = parseGatewayKey(
          await deps.kube.getGatewayKey(current.namespace, current.name, bounded()),
        );
        if (!fresh || fresh.uid !== current.uid) return current; // deleted (or replaced) meanwhile
        current = fresh;
      }
    }
    throw new Error(
      `status of ${gk.namespace}/${gk.name}: still conflicting after ${MAX_STATUS_CONFLICTS} attempts`,
    );
  }

  async function record(gk: CachedGatewayKey, events: readonly EventSpec[]): Promise<void> {
    for (const e of events) {
      const message = deps.secretValues.scrub(e.message);
      try {
        await recorder.record(gk, { ...e, message }, bounded());
      } catch (err) {
        // Events are a courtesy to humans; failing to record one must not fail the reconcile.
        deps.log.warn(
          { gatewayKey: gk.name, reason: e.reason, error: (err as Error).message },
          'Could not record Event',
        );
      }
    }
  }

  async function degrade(gk: CachedGatewayKey, reason: DegradedReason, message: string): Promise<void> {
    const next = statusDegraded(
      gk.status,
      gk.generation,
      reason,
      deps.secretValues.scrub(message),
      new Date(deps.now()),
    );
    const event = eventForDegraded(gk.status, next);
    await writeStatus(gk, next);
    if (event) await record(gk, [event]);
    deps.metrics.targets.deleteMatching({ namespace: gk.namespace, name: gk.name });
    deps.metrics.reportStatus(gk.namespace, gk.name, next);
    deps.log.warn(
      {
        gatewayKey: gk.name,
        namespace: gk.namespace,
        reason,
        message: next.conditions?.find((c) => c.type === 'Degraded')?.message,
      },
      'GatewayKey degraded',
    );
  }

  function missing(ns: string, name: string): string {
    return `Secret ${ns}/${name} not found (the operator sees only Secrets labelled ${KEY_SOURCE_LABEL}=true)`;
  }

  return async function reconcile(key: string): Promise<ReconcileResult | undefined> {
    const { namespace, name } = splitKey(key);
    const gk = deps.gatewayKeys.get(namespace, name);
    const log = deps.log.child({ component: 'operator', gatewayKey: name, namespace });
    if (!gk || gk.deleting) {
      rotations.delete(key);
      deps.metrics.forget(namespace, name);
      return undefined;
    }

    const parsed = parseSpec(gk.spec);
    if (!parsed.ok || selectorIsEmpty(parsed.spec.targets.selector)) {
      const reason = parsed.ok
        ? 'spec.targets.selector: must not be empty (it would select every pod)'
        : parsed.reason;
      await degrade(gk, 'InvalidSpec', reason);
      // Terminal until the spec changes: the GatewayKey's next generation enqueues it again.
      return undefined;
    }
    const spec = parsed.spec;
    const secretRef = spec.source.secretRef;
    if (!secretRef) {
      await degrade(gk, 'InvalidSpec', 'spec.source.secretRef: required');
      return undefined;
    }

    // The controller token: every target's fingerprints are keyed with it.
    const tokenRef = spec.controllerTokenSecretRef;
    const tokenSecret = deps.secrets.get(namespace, tokenRef.name);
    if (!tokenSecret) {
      await degrade(
        gk,
        'SecretNotFound',
        `spec.controllerTokenSecretRef: ${missing(namespace, tokenRef.name)}`,
      );
      return { requeueAfterMs: deps.missingSourceRequeueMs };
    }
    const token = decodeSecretValue(tokenSecret, tokenRef.key);
    if (token === null) {
      await degrade(
        gk,
        'TokenNotFound',
        `spec.controllerTokenSecretRef: Secret ${namespace}/${tokenRef.name} has no non-empty key ${tokenRef.key}`,
      );
      return { requeueAfterMs: deps.missingSourceRequeueMs };
    }
    // Slots per GatewayKey: a long-running operator keeps the current and previous value only.
    deps.secretValues.add(token, `controller-token:${key}`);

    if (!deps.secrets.get(namespace, secretRef.name)) {
      await degrade(gk, 'SecretNotFound', `spec.source.secretRef: ${missing(namespace, secretRef.name)}`);
      return { requeueAfterMs: deps.missingSourceRequeueMs };
    }
    let material: Awaited<ReturnType<ReturnType<typeof secretKeySource>['current']>>;
    try {
      material = await secretKeySource(
        reader,
        { namespace, name: secretRef.name, key: secretRef.key },
        token,
      ).current(deps.signal);
    } catch (err) {
      if (!(err instanceof KeySourceError)) throw err;
      // KeyNotFound, InvalidKey or InvalidVersionLabel: nothing is delivered; a fixed Secret wakes
      // the key at once, the requeue is a backstop.
      await degrade(gk, err.reason, `spec.source.secretRef: ${err.message}`);
      return { requeueAfterMs: deps.missingSourceRequeueMs };
    }
    deps.secretValues.add(material.key, `key:${key}`);

    const rotation = rotations.get(key);
    if (!rotation || rotation.version !== material.version) {
      rotations.set(key, { version: material.version, since: deps.now(), delivered: false });
    }

    const { targets: podList } = podTargets(
      deps.pods.list(),
      namespace,
      spec.targets.selector,
      spec.targets.port,
    );
    const targets = podList.map((t) => ({
      ...t,
      token,
      client: makeClient(t.url, token, deps.pass.requestTimeoutMs),
    }));

    // Progress is reported once per pass, when the first delivery starts, so a reader sees
    // Progressing while gateways restart; the final status follows when the pass ends.
    let current = gk;
    let progress: Promise<void> | null = null;
    const done: TargetResult[] = [];
    const result: PassResult = await runPass(targets, {
      key: material,
      envVar: spec.envVar,
      delivery: spec.delivery,
      rollout: {
        concurrency: deps.pass.concurrency,
        maxUnavailable: spec.rollout.maxUnavailable,
        failureBudget: spec.rollout.failureBudget,
        paused: spec.rollout.paused,
      },
      dryRun: false,
      clock: reconcileClock,
      log: deps.log,
      retry: deps.pass.retry,
      deadlineMs: deps.pass.deadlineMs,
      pollIntervalMs: deps.pass.pollIntervalMs,
      signal: deps.signal,
      onPhase: (_target, phase) => {
        if (phase !== 'delivering' || progress) return;
        const next = statusProgressing(
          current.status,
          gk.generation,
          material.version,
          targets.length,
          done,
          new Date(deps.now()),
        );
        progress = writeStatus(current, next).then(
          (stored) => {
            current = stored;
          },
          (err: unknown) => {
            log.warn({ error: (err as Error).message }, 'Could not write Progressing status');
          },
        );
      },
      onResult: (r) => {
        done.push(r);
      },
    });
    if (progress) await progress;
    deps.signal.throwIfAborted();

    const pending = rotations.get(key);
    const rotated = rotationCompleted(result, pending?.delivered === true);
    const next = statusFromPass(current.status, gk.generation, result, new Date(deps.now()), rotated);
    for (const t of next.targetStatuses ?? []) t.message = deps.secretValues.scrub(t.message);
    for (const c of next.conditions ?? []) c.message = deps.secretValues.scrub(c.message);
    const events = eventsForPass(result, current.status, next);
    await writeStatus(current, next);
    await record(gk, events);
    deps.metrics.reportStatus(namespace, name, next);

    const s = result.summary;
    const labels = { namespace, name };
    deps.metrics.targets.set({ ...labels, state: 'converged' }, s.converged);
    deps.metrics.targets.set({ ...labels, state: 'failed' }, s.notConverged + s.unreachable);
    deps.metrics.targets.set({ ...labels, state: 'pending' }, s.drift + s.skipped);
    const r = rotations.get(key);
    if (r && s.patched > 0) r.delivered = true;
    if (r?.delivered && s.total > 0 && s.converged === s.total) {
      deps.metrics.rotationDuration.observe((deps.now() - r.since) / 1000);
      deps.metrics.rotations.inc();
      r.delivered = false;
    }
    log.info(
      {
        version: material.version,
        total: s.total,
        converged: s.converged,
        patched: s.patched,
        failed: s.notConverged + s.unreachable,
        keyRejected: result.targets.filter((t) => t.reason === 'KeyRejected').length,
        durationMs: result.durationMs,
      },
      'Reconciled GatewayKey',
    );
    if (s.notConverged + s.unreachable + s.skipped > 0 && !result.paused) {
      throw new TargetsNotConvergedError(
        `${s.total - s.converged} of ${s.total} target(s) not converged; retrying with backoff`,
      );
    }
    return { requeueAfterMs: deps.resyncMs };
  };
}
