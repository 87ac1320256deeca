// Owns one GatewayKey end to end for every driver: resolveGatewayKey (pure: spec, token, key, targets) → runPass → status and Events.
import type { SecretRegistry } from '../log.ts';
import { type EventSpec, eventForDegraded, eventsForPass } from '../operator/events.ts';
import {
  type CachedGatewayKey,
  type GatewayKeySpec,
  type GatewayKeyStatus,
  KEY_SOURCE_LABEL,
  parseSpec,
  splitKey,
} from '../operator/gateway-key.ts';
import type { CacheReader } from '../operator/informer.ts';
import { type CachedPod, type CachedSecret, decodeSecretValue } from '../operator/kube-port.ts';
import { type PodTarget, podTargets, selectorIsEmpty } from '../operator/pod-targets.ts';
import {
  type DegradedReason,
  type PassDigest,
  passDigest,
  rotationCompleted,
  statusDegraded,
  statusFromPass,
  statusProgressing,
} from '../operator/status.ts';
import { type ControllerClient, httpControllerClient } from '../reconcile/controller-client.ts';
import { type KeyMaterial, KeySourceError } from '../reconcile/sources/key-source.ts';
import { secretMaterial } from '../reconcile/sources/secret-source.ts';
import type { PassEnv, Phase } from './env.ts';
import { type PassResult, runPass } from './pass.ts';
import type { Target, TargetResult } from './target.ts';

/** What a driver's work queue needs from one reconcile: when to come back (a planned wake-up, not a failure). */
export interface ReconcileResult {
  /** A planned wake-up (not a failure): reconcile this key again after the delay. */
  requeueAfterMs?: number;
}

/** The caches a GatewayKey is resolved from (an informer's, or one list's snapshot). */
export interface GatewayKeyCaches {
  gatewayKeys: CacheReader<CachedGatewayKey>;
  secrets: CacheReader<CachedSecret>;
  pods: CacheReader<CachedPod>;
}

/** Everything a pass over one GatewayKey needs, resolved from the caches. */
export interface GatewayKeyInputs {
  spec: GatewayKeySpec;
  /** The controller token: the targets' bearer token and every fingerprint's HMAC key. */
  token: string;
  material: KeyMaterial;
  /** Ready pods the selector matches, sorted by name. */
  targets: PodTarget[];
  /**
   * Pods the selector matches that cannot be observed (not ready, no IP). The key lifecycle needs
   * them: a previous key is retirable only when every matching pod, ready or not, proves the current one.
   */
  notReady: number;
}

/** Why no pass can run, as the Degraded reason and message; `requeue` when the cause may appear by itself. */
export interface Unresolved {
  reason: DegradedReason;
  message: string;
  requeue: boolean;
}

export type Resolution = ({ ok: true } & GatewayKeyInputs) | ({ ok: false } & Unresolved);

function missingSecret(ns: string, name: string): string {
  return `Secret ${ns}/${name} not found (keyroll sees only Secrets labelled ${KEY_SOURCE_LABEL}=true)`;
}

/**
 * Pure: spec → controller token → key material → targets, or the first reason it cannot be done.
 * An invalid spec is terminal until the spec changes; a missing Secret, token or key is retried.
 */
export function resolveGatewayKey(
  gk: CachedGatewayKey,
  caches: Omit<GatewayKeyCaches, 'gatewayKeys'>,
): Resolution {
  const ns = gk.namespace;
  const fail = (reason: DegradedReason, message: string, requeue = true): Resolution => ({
    ok: false,
    reason,
    message,
    requeue,
  });
  const parsed = parseSpec(gk.spec);
  if (!parsed.ok) return fail('InvalidSpec', parsed.reason, false);
  const spec = parsed.spec;
  if (selectorIsEmpty(spec.targets.selector))
    return fail('InvalidSpec', 'spec.targets.selector: must not be empty (it would select every pod)', false);
  const secretRef = spec.source.secretRef;
  if (!secretRef) return fail('InvalidSpec', 'spec.source.secretRef: required', false);

  const tokenRef = spec.controllerTokenSecretRef;
  const tokenSecret = caches.secrets.get(ns, tokenRef.name);
  if (!tokenSecret)
    return fail('SecretNotFound', `spec.controllerTokenSecretRef: ${missingSecret(ns, tokenRef.name)}`);
  const token = decodeSecretValue(tokenSecret, tokenRef.key);
  if (token === null)
    return fail(
      'TokenNotFound',
      `spec.controllerTokenSecretRef: Secret ${ns}/${tokenRef.name} has no non-empty key ${tokenRef.key}`,
    );

  const keySecret = caches.secrets.get(ns, secretRef.name);
  if (!keySecret)
    return fail('SecretNotFound', `spec.source.secretRef: ${missingSecret(ns, secretRef.name)}`);
  let material: KeyMaterial;
  try {
    material = secretMaterial(keySecret, { namespace: ns, name: secretRef.name, key: secretRef.key }, token);
  } catch (err) {
    if (!(err instanceof KeySourceError)) throw err;
    // KeyNotFound, InvalidKey or InvalidVersionLabel: a fixed Secret wakes the key at once.
    return fail(err.reason, `spec.source.secretRef: ${err.message}`);
  }
  const { targets, notReady } = podTargets(caches.pods.list(), ns, spec.targets.selector, spec.targets.port);
  return { ok: true, spec, token, material, targets, notReady };
}

/** How a GatewayKey's passes run (per driver: the operator's config, a CLI's flags). */
export interface PassSettings {
  /** Per controller request. */
  requestTimeoutMs: number;
  /** Targets worked on at once within one GatewayKey. */
  concurrency: number;
}

/**
 * The engine's memory of a GatewayKey between passes (operator: for its lifetime; one-shot
 * commands: one pass): the version being rolled out, since when, and whether keyroll delivered
 * it. The seam for the key lifecycle (issue 12: current/previous version, Pending → Retirable →
 * Retired): its state joins this record, is advanced in reconcileGatewayKey from the digest and
 * `notReady`, and is reported in GatewayKeyResult.rotation and the status.
 */
export interface Rotation {
  version: string;
  since: number;
  delivered: boolean;
}

export interface GatewayKeyDeps extends GatewayKeyCaches {
  env: PassEnv;
  pass: PassSettings;
  /** Requeue delay when all is well (periodic resync). */
  resyncMs: number;
  /** Requeue delay while a Secret or key is missing (its arrival also wakes the key at once). */
  missingSourceRequeueMs: number;
  /** Every key and token read is registered here (slots per GatewayKey), and status messages are scrubbed by it. */
  secretValues: SecretRegistry;
  /** Rotation memory per GatewayKey key (`namespace/name`). */
  rotations: Map<string, Rotation>;
  controllerClient?: (url: string, token: string, timeoutMs: number) => ControllerClient;
  /**
   * Called once per pass when the first delivery starts, with the Progressing status; resolves to
   * the status then stored (the base of the final status). Absent: nothing is reported mid-pass.
   */
  onProgress?: (status: GatewayKeyStatus) => Promise<GatewayKeyStatus>;
}

/** What one reconcile of a GatewayKey decided. The driver writes `status`, records `events`. */
export interface GatewayKeyResult extends ReconcileResult {
  /** The GatewayKey as read from the cache; null when it is gone or being deleted (nothing to do). */
  gatewayKey: CachedGatewayKey | null;
  /** The status to store; null when the GatewayKey is gone. */
  status: GatewayKeyStatus | null;
  events: EventSpec[];
  /** The pass, when one ran; its `targets` only with `keepResults` (default: dry runs). */
  pass: PassResult | null;
  /** What status and Events were computed from, bounded whatever the fleet size. */
  digest: PassDigest | null;
  /** Why no pass ran. */
  unresolved: Unresolved | null;
  /** The version rolled out and whether this pass completed its rotation (every target proves it, keyroll delivered it). */
  rotation: (Rotation & { completed: boolean }) | null;
  /** Targets failed, were unreachable or skipped (and the rollout is not paused): retry with backoff. */
  retry: boolean;
}

function gone(): GatewayKeyResult {
  return {
    gatewayKey: null,
    status: null,
    events: [],
    pass: null,
    digest: null,
    unresolved: null,
    rotation: null,
    retry: false,
  };
}

function scrubStatus(s: GatewayKeyStatus, secrets: SecretRegistry): GatewayKeyStatus {
  for (const t of s.targetStatuses ?? []) t.message = secrets.scrub(t.message);
  for (const c of s.conditions ?? []) c.message = secrets.scrub(c.message);
  return s;
}

/**
 * One GatewayKey, level-triggered: resolve, run one pass (dry: observe and plan only), compute
 * the status and Events. Writes nothing itself; `onProgress` is the only call out mid-pass.
 */
export async function reconcileGatewayKey(
  key: string,
  deps: GatewayKeyDeps,
  opts: { dryRun: boolean; keepResults?: boolean },
): Promise<GatewayKeyResult> {
  const { namespace, name } = splitKey(key);
  const gk = deps.gatewayKeys.get(namespace, name);
  if (!gk || gk.deleting) {
    deps.rotations.delete(key);
    return gone();
  }
  const now = () => new Date(deps.env.clock.now());
  const resolved = resolveGatewayKey(gk, deps);
  if (!resolved.ok) {
    const unresolved: Unresolved = {
      reason: resolved.reason,
      message: deps.secretValues.scrub(resolved.message),
      requeue: resolved.requeue,
    };
    const status = statusDegraded(gk.status, gk.generation, unresolved.reason, unresolved.message, now());
    const event = eventForDegraded(gk.status, status);
    return {
      gatewayKey: gk,
      status,
      events: event ? [event] : [],
      pass: null,
      digest: null,
      unresolved,
      rotation: null,
      retry: false,
      ...(unresolved.requeue ? { requeueAfterMs: deps.missingSourceRequeueMs } : {}),
    };
  }
  const { spec, token, material, targets: podList } = resolved;
  // Slots per GatewayKey: a long-running process keeps the current and previous value only.
  deps.secretValues.add(token, `controller-token:${key}`);
  deps.secretValues.add(material.key, `key:${key}`);

  let rotation = deps.rotations.get(key);
  if (!rotation || rotation.version !== material.version) {
    rotation = { version: material.version, since: deps.env.clock.now(), delivered: false };
    deps.rotations.set(key, rotation);
  }

  const makeClient =
    deps.controllerClient ??
    ((url: string, t: string, timeoutMs: number) => httpControllerClient({ url, token: t, timeoutMs }));
  // Clients are made as the pass reaches each target, not all up front.
  function* targets(): Generator<Target> {
    for (const t of podList)
      yield { ...t, token, client: makeClient(t.url, token, deps.pass.requestTimeoutMs) };
  }

  // Results stream into a bounded digest (status and Events read only that); the pass keeps every
  // result only when asked (diff prints them all).
  const digest = passDigest({
    keyVersion: material.version,
    dryRun: opts.dryRun,
    paused: spec.rollout.paused,
  });
  // Progress is reported once per pass, when the first delivery starts, so a reader sees
  // Progressing while gateways restart; the final status follows when the pass ends.
  let prev = gk.status;
  let progress: Promise<void> | null = null;
  const onProgress = deps.onProgress;
  const pass = await runPass(targets(), {
    key: material,
    spec: { envVar: spec.envVar, delivery: spec.delivery },
    rollout: {
      concurrency: deps.pass.concurrency,
      maxUnavailable: spec.rollout.maxUnavailable,
      failureBudget: spec.rollout.failureBudget,
      paused: spec.rollout.paused,
    },
    dryRun: opts.dryRun,
    env: deps.env,
    keepResults: opts.keepResults ?? opts.dryRun,
    onResult: (r: TargetResult) => digest.add(r),
    ...(onProgress
      ? {
          onPhase: (_target: string, phase: Phase) => {
            if (phase !== 'delivering' || progress) return;
            const next = statusProgressing(
              prev,
              gk.generation,
              material.version,
              podList.length,
              digest.digest.summary,
              now(),
            );
            progress = onProgress(next).then((stored) => {
              prev = stored;
            });
          },
        }
      : {}),
  });
  if (progress) await progress;
  deps.env.signal.throwIfAborted();

  const d = { ...digest.digest, dryRun: pass.dryRun };
  const completed = rotationCompleted(d, rotation.delivered);
  const status = scrubStatus(statusFromPass(prev, gk.generation, d, now(), completed), deps.secretValues);
  const events = eventsForPass(d, prev, status);
  const s = pass.summary;
  if (!opts.dryRun) {
    if (s.patched > 0) rotation.delivered = true;
  }
  const finished = rotation.delivered && s.total > 0 && s.converged === s.total;
  const result: GatewayKeyResult = {
    gatewayKey: gk,
    status,
    events,
    pass,
    digest: d,
    unresolved: null,
    rotation: { ...rotation, completed: finished },
    retry: s.notConverged + s.unreachable + s.skipped > 0 && !pass.paused,
    requeueAfterMs: deps.resyncMs,
  };
  if (finished) rotation.delivered = false;
  return result;
}
