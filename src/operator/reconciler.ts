// Owns the operator's side of reconcile(key): the engine decides (src/engine/gateway-key.ts); this writes status (409-safe), records Events, reports metrics.
import type { Clock } from '../clock.ts';
import {
  type GatewayKeyCaches,
  type GatewayKeyResult,
  type ReconcileResult,
  type Rotation,
  reconcileGatewayKey,
} from '../engine/gateway-key.ts';
import type { KeyLifecycle } from '../lifecycle/lifecycle.ts';
import {
  type Announcer,
  type CallPolicy,
  DEFAULT_CALL_POLICY,
  httpAnnouncer,
  httpRevoker,
  type Revoker,
  retire,
} from '../lifecycle/retire.ts';
import type { Logger, SecretRegistry } from '../log.ts';
import type { ControllerClient } from '../reconcile/controller-client.ts';
import type { RetryPolicy } from '../reconcile/retry.ts';
import { EventRecorder, type EventSpec } from './events.ts';
import { type CachedGatewayKey, type GatewayKeyStatus, parseGatewayKey, splitKey } from './gateway-key.ts';
import { isKubeError, type KubeClient } from './kube-port.ts';
import type { OperatorMetrics } from './metrics.ts';
import { statusChanged, statusWithLifecycle } from './status.ts';

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

export interface ReconcilerDeps extends GatewayKeyCaches {
  kube: KubeClient;
  log: Logger;
  /** Time for status timestamps, rotation durations and the pass's verification polling. */
  clock: Clock;
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
  /** Revoke and webhook calls: retries with capped backoff, per-call timeout. */
  retireCalls?: CallPolicy;
}

/** Thrown after status is written when a revoke or the webhook failed: the queue retries with capped backoff. */
export class RetirementFailedError extends Error {
  override name = 'RetirementFailedError';
}

/** Thrown after status is written when targets failed: the queue retries with capped backoff. */
export class TargetsNotConvergedError extends Error {
  override name = 'TargetsNotConvergedError';
}

const MAX_STATUS_CONFLICTS = 5;

/**
 * Reconciles one GatewayKey and applies the engine's result: status, Events, metrics. Resolves
 * with what was decided (also when targets did not converge); rejects only on an API error.
 */
export type GatewayKeyReconciler = (key: string) => Promise<GatewayKeyResult>;

export function createGatewayKeyReconciler(deps: ReconcilerDeps): GatewayKeyReconciler {
  const rotations = new Map<string, Rotation>();
  // The lifecycle as this reconciler last stored it: a cache that has not yet seen a write must not
  // take a retirement back (one reconciler per leadership term, so no other writer meanwhile).
  const lifecycles = new Map<string, { uid: string; lifecycle: KeyLifecycle }>();
  const recorder = new EventRecorder({
    kube: deps.kube,
    now: () => deps.clock.now(),
    instance: deps.identity,
  });

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

  return async function reconcile(key: string): Promise<GatewayKeyResult> {
    const { namespace, name } = splitKey(key);
    const log = deps.log.child({ component: 'operator', gatewayKey: name, namespace });
    // The stored object the next write starts from: a Progressing write mid-pass moves it on.
    let current: CachedGatewayKey | undefined;
    const result = await reconcileGatewayKey(
      key,
      {
        gatewayKeys: deps.gatewayKeys,
        secrets: deps.secrets,
        pods: deps.pods,
        env: {
          clock: deps.clock,
          log: deps.log,
          retry: deps.pass.retry,
          deadlineMs: deps.pass.deadlineMs,
          pollIntervalMs: deps.pass.pollIntervalMs,
          signal: deps.signal,
        },
        pass: { requestTimeoutMs: deps.pass.requestTimeoutMs, concurrency: deps.pass.concurrency },
        resyncMs: deps.resyncMs,
        missingSourceRequeueMs: deps.missingSourceRequeueMs,
        secretValues: deps.secretValues,
        rotations,
        lifecycles,
        ...(deps.controllerClient ? { controllerClient: deps.controllerClient } : {}),
        onProgress: async (next) => {
          const from = current ?? deps.gatewayKeys.get(namespace, name);
          if (!from) return next;
          try {
            current = await writeStatus(from, next);
          } catch (err) {
            log.warn({ error: (err as Error).message }, 'Could not write Progressing status');
          }
          return current?.status ?? from.status;
        },
      },
      { dryRun: false },
    );
    const gk = result.gatewayKey;
    if (!gk || !result.status) {
      lifecycles.delete(key);
      deps.metrics.forget(namespace, name);
      return result;
    }
    let stored = await writeStatus(current ?? gk, result.status);
    if (result.lifecycle) lifecycles.set(key, { uid: gk.uid, lifecycle: result.lifecycle.lifecycle });
    await record(gk, result.events);

    // Retiring: every durable step is a status write (Retiring before the revoke call, Retired after).
    const lc = result.lifecycle?.lifecycle;
    const plan = result.retirement;
    if (lc && plan && lc.previous.some((p) => p.state === 'Retirable' || p.state === 'Retiring')) {
      const policy = deps.retireCalls ?? DEFAULT_CALL_POLICY;
      const revoker: Revoker | undefined =
        plan.revokeUrl && plan.sourceToken
          ? httpRevoker(plan.revokeUrl, plan.sourceToken, policy)
          : undefined;
      const announcer: Announcer | undefined = plan.webhook ? httpAnnouncer(plan.webhook, policy) : undefined;
      let status = result.status;
      const done = await retire(
        lc,
        { gatewayKey: name, namespace, provenTargets: plan.provenTargets },
        {
          async persist(next) {
            status = statusWithLifecycle(status, next, gk.generation, new Date(deps.clock.now()));
            stored = await writeStatus(stored, status);
            if (stored.uid !== gk.uid || statusChanged(stored.rawStatus, status))
              throw new Error(`status of ${key}: the lifecycle could not be stored (GatewayKey gone?)`);
            lifecycles.set(key, { uid: gk.uid, lifecycle: next });
          },
          ...(revoker ? { revoker } : {}),
          ...(announcer ? { announcer } : {}),
          clock: deps.clock,
          log,
          signal: deps.signal,
        },
      );
      result.status = status;
      result.lifecycle = { ...result.lifecycle!, lifecycle: done.lifecycle };
      await record(gk, [
        ...done.revoked.map((v) => ({
          type: 'Normal' as const,
          reason: 'PreviousKeyRevoked',
          message: `Revoked key version ${v} at the source: every target proved ${lc.current?.version}`,
        })),
        ...(done.error
          ? [{ type: 'Warning' as const, reason: 'RetirementFailed', message: done.error }]
          : []),
      ]);
      if (done.error) result.retireError = deps.secretValues.scrub(done.error);
    }
    deps.metrics.reportStatus(namespace, name, result.status);

    if (result.unresolved) {
      deps.metrics.targets.deleteMatching({ namespace, name });
      deps.log.warn(
        {
          gatewayKey: name,
          namespace,
          reason: result.unresolved.reason,
          message: result.status.conditions?.find((c) => c.type === 'Degraded')?.message,
        },
        'GatewayKey degraded',
      );
      return result;
    }
    const pass = result.pass;
    if (pass) {
      const s = pass.summary;
      const labels = { namespace, name };
      deps.metrics.targets.set({ ...labels, state: 'converged' }, s.converged);
      deps.metrics.targets.set({ ...labels, state: 'failed' }, s.notConverged + s.unreachable);
      deps.metrics.targets.set({ ...labels, state: 'pending' }, s.drift + s.skipped);
      if (result.rotation?.completed) {
        deps.metrics.rotationDuration.observe((deps.clock.now() - result.rotation.since) / 1000);
        deps.metrics.rotations.inc();
      }
      log.info(
        {
          version: pass.keyVersion,
          total: s.total,
          converged: s.converged,
          patched: s.patched,
          failed: s.notConverged + s.unreachable,
          keyRejected: result.digest?.keyRejected.count ?? 0,
          durationMs: pass.durationMs,
        },
        'Reconciled GatewayKey',
      );
    }
    return result;
  };
}

/**
 * The work queue's handler: a GatewayKey whose targets did not converge throws (after its status
 * is written) so the queue retries it with capped backoff; otherwise the engine's requeue stands.
 */
export function createReconciler(
  deps: ReconcilerDeps,
): (key: string) => Promise<ReconcileResult | undefined> {
  const reconcile = createGatewayKeyReconciler(deps);
  return async (key) => {
    const r = await reconcile(key);
    if (r.retireError) throw new RetirementFailedError(`retiring a previous key of ${key}: ${r.retireError}`);
    if (r.retry && r.pass) {
      const s = r.pass.summary;
      throw new TargetsNotConvergedError(
        `${s.total - s.converged} of ${s.total} target(s) not converged; retrying with backoff`,
      );
    }
    return r.requeueAfterMs !== undefined ? { requeueAfterMs: r.requeueAfterMs } : undefined;
  };
}
