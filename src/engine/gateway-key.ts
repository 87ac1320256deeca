// Owns one GatewayKey end to end for every driver: resolveGatewayKey (pure: spec, token, key, targets) → the API
// source's key (I/O) → runPass → the key lifecycle (src/lifecycle advance()) → status and Events.
import { parseDuration } from '../duration.ts';
import {
  type Advanced,
  advance,
  EMPTY_LIFECYCLE,
  type Holdouts,
  type KeyLifecycle,
  type LifecycleEvent,
  MAX_NAMES,
  type ProofObservation,
} from '../lifecycle/lifecycle.ts';
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
  statusWithLifecycle,
  statusWithUnobserved,
} from '../operator/status.ts';
import { type ControllerClient, httpControllerClient } from '../reconcile/controller-client.ts';
import { httpKeySource } from '../reconcile/sources/http-source.ts';
import { type KeyMaterial, type KeySource, KeySourceError } from '../reconcile/sources/key-source.ts';
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
  /** The key, read from the Secret; null for an API source (read by reconcileGatewayKey, it is I/O). */
  material: KeyMaterial | null;
  /** `spec.source.api` with its token resolved from the Secret; null for a Secret source. */
  api: ApiSourceInputs | null;
  /** Ready pods the selector matches, sorted by name. */
  targets: PodTarget[];
  /**
   * Pods the selector matches that cannot be observed (not ready, no IP). The key lifecycle needs
   * them: a previous key is retirable only when every matching pod, ready or not, proves the current one.
   */
  notReady: number;
  /** The first of them by name. */
  notReadyNames: string[];
}

/** An API key source as the spec names it, its token read from the referenced Secret. */
export interface ApiSourceInputs {
  url: string;
  mintUrl?: string;
  /** The source token: GET, mint and revoke carry it; never written anywhere. */
  token: string;
  refreshBeforeMs?: number;
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
  const { secretRef, api } = spec.source;

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

  let material: KeyMaterial | null = null;
  let apiInputs: ApiSourceInputs | null = null;
  if (api) {
    const ref = api.tokenSecretRef;
    const sourceSecret = caches.secrets.get(ns, ref.name);
    if (!sourceSecret)
      return fail('SecretNotFound', `spec.source.api.tokenSecretRef: ${missingSecret(ns, ref.name)}`);
    const sourceToken = decodeSecretValue(sourceSecret, ref.key);
    if (sourceToken === null)
      return fail(
        'TokenNotFound',
        `spec.source.api.tokenSecretRef: Secret ${ns}/${ref.name} has no non-empty key ${ref.key}`,
      );
    apiInputs = {
      url: api.url,
      token: sourceToken,
      ...(api.mintUrl ? { mintUrl: api.mintUrl } : {}),
      ...(api.refreshBefore ? { refreshBeforeMs: parseDuration(api.refreshBefore) } : {}),
    };
  } else if (secretRef) {
    const keySecret = caches.secrets.get(ns, secretRef.name);
    if (!keySecret)
      return fail('SecretNotFound', `spec.source.secretRef: ${missingSecret(ns, secretRef.name)}`);
    try {
      material = secretMaterial(
        keySecret,
        { namespace: ns, name: secretRef.name, key: secretRef.key },
        token,
      );
    } catch (err) {
      if (!(err instanceof KeySourceError)) throw err;
      // KeyNotFound, InvalidKey or InvalidVersionLabel: a fixed Secret wakes the key at once.
      return fail(err.reason, `spec.source.secretRef: ${err.message}`);
    }
  }
  const { targets, notReady, notReadyNames } = podTargets(
    caches.pods.list(),
    ns,
    spec.targets.selector,
    spec.targets.port,
  );
  return { ok: true, spec, token, material, api: apiInputs, targets, notReady, notReadyNames };
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
 * it. The key lifecycle (current/previous versions, Pending → Retirable → Retiring → Retired) is
 * not kept here but in the status (`status.lifecycle`), advanced by reconcileGatewayKey.
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
  /**
   * The lifecycle this driver last stored per GatewayKey (uid and record), newer than a cache that
   * has not seen the write yet; absent: the stored status is the only record.
   */
  lifecycles?: Map<string, { uid: string; lifecycle: KeyLifecycle }>;
  /** Replaces the HTTP key source of `spec.source.api` (tests). */
  apiSource?: (api: ApiSourceInputs, versionKey: string) => KeySource;
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
  /** The key lifecycle after this pass (also in `status.lifecycle`); null when no pass ran. */
  lifecycle: Advanced | null;
  /** What retiring needs beyond the lifecycle (the driver makes the calls); null on a dry run. */
  retirement: Retirement | null;
  /** Set by the driver when a revoke or webhook call failed (recorded in the lifecycle; retried). */
  retireError?: string;
}

/** How a driver retires a previous version of this GatewayKey: `spec.retire` with the source token. */
export interface Retirement {
  revokeUrl?: string;
  webhook?: string;
  /** The API source's token, for the revoke call only. */
  sourceToken?: string;
  /** Targets that proved the current version (bounded), for the webhook. */
  provenTargets: string[];
}

/** Proven targets named in the webhook, at most. */
export const MAX_PROVEN_NAMES = 100;

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
    lifecycle: null,
    retirement: null,
  };
}

function degradedResult(
  gk: CachedGatewayKey,
  u: Unresolved,
  deps: GatewayKeyDeps,
  now: Date,
): GatewayKeyResult {
  const unresolved: Unresolved = { ...u, message: deps.secretValues.scrub(u.message) };
  const status = statusDegraded(gk.status, gk.generation, unresolved.reason, unresolved.message, now);
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
    lifecycle: null,
    retirement: null,
    ...(unresolved.requeue ? { requeueAfterMs: deps.missingSourceRequeueMs } : {}),
  };
}

/** Pure: the Events a lifecycle step deserves (a version became retirable, retirement blocked). */
export function eventsForLifecycle(events: readonly LifecycleEvent[]): EventSpec[] {
  const out: EventSpec[] = [];
  for (const e of events) {
    if (e.type === 'Retirable')
      out.push({
        type: 'Normal',
        reason: 'PreviousKeyRetirable',
        message: `Key version ${e.version} may be retired: every target proved ${e.current}`,
      });
    else if (e.type === 'Blocked')
      out.push({
        type: 'Warning',
        reason: 'RetirementBlocked',
        message: `Key version ${e.version} cannot be retired yet (${e.reason})${e.targets.length > 0 ? `: ${e.targets.join(', ')}` : ''}`,
      });
    else if (e.type === 'CurrentWasRetired')
      out.push({
        type: 'Warning',
        reason: 'CurrentKeyRetired',
        message: `Key version ${e.version} is desired again but was already retired at the source`,
      });
  }
  return out;
}

/** Folds per-target results into what the lifecycle reads: who could not be observed, who does not prove the version. */
function proofFold() {
  const hold = (): Holdouts => ({ count: 0, names: [] });
  const add = (h: Holdouts, name: string, max: number) => {
    h.count++;
    if (h.names.length < max) h.names.push(name);
  };
  const unobserved = hold();
  const unproven = hold();
  const proven = hold();
  return {
    unobserved,
    unproven,
    proven,
    add(r: TargetResult) {
      if (r.after === null) add(unobserved, r.name, MAX_NAMES);
      else if (r.outcome !== 'converged') add(unproven, r.name, MAX_NAMES);
      else add(proven, r.name, MAX_PROVEN_NAMES);
    },
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
  if (!resolved.ok) return degradedResult(gk, resolved, deps, now());
  const { spec, token, api, targets: podList } = resolved;
  // Slots per GatewayKey: a long-running process keeps the current and previous value only.
  deps.secretValues.add(token, `controller-token:${key}`);
  let material = resolved.material;
  if (api) {
    deps.secretValues.add(api.token, `source-token:${key}`);
    const source =
      deps.apiSource?.(api, token) ??
      httpKeySource({
        url: api.url,
        token: api.token,
        ...(api.mintUrl ? { mintUrl: api.mintUrl } : {}),
        ...(api.refreshBeforeMs !== undefined ? { refreshBeforeMs: api.refreshBeforeMs } : {}),
        timeoutMs: deps.pass.requestTimeoutMs,
        clock: deps.env.clock,
        versionKey: token,
      });
    try {
      material = await source.current(deps.env.signal);
    } catch (err) {
      if (!(err instanceof KeySourceError)) throw err;
      deps.env.signal.throwIfAborted();
      // Unreachable, refused or a failed mint: nothing is delivered, the targets keep the key they
      // run, and the next pass (the key is still near expiry) tries again.
      const reason: DegradedReason = err.reason === 'KeyNotFound' ? 'SourceUnavailable' : err.reason;
      return degradedResult(
        gk,
        { reason, message: `spec.source.api: ${err.message}`, requeue: true },
        deps,
        now(),
      );
    }
  }
  if (!material) throw new Error(`${key}: no key source resolved`);
  deps.secretValues.add(material.key, `key:${key}`);
  const desired: KeyMaterial = material;

  let rotation = deps.rotations.get(key);
  if (!rotation || rotation.version !== desired.version) {
    rotation = { version: desired.version, since: deps.env.clock.now(), delivered: false };
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
    keyVersion: desired.version,
    dryRun: opts.dryRun,
    paused: spec.rollout.paused,
  });
  // Progress is reported once per pass, when the first delivery starts, so a reader sees
  // Progressing while gateways restart; the final status follows when the pass ends.
  let prev = gk.status;
  let progress: Promise<void> | null = null;
  const onProgress = deps.onProgress;
  const proof = proofFold();
  const pass = await runPass(targets(), {
    key: desired,
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
    onResult: (r: TargetResult) => {
      digest.add(r);
      proof.add(r);
    },
    ...(onProgress
      ? {
          onPhase: (_target: string, phase: Phase) => {
            if (phase !== 'delivering' || progress) return;
            const next = statusProgressing(
              prev,
              gk.generation,
              desired.version,
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
  const s = pass.summary;
  const completed = rotationCompleted(d, rotation.delivered);

  // The key lifecycle: every pod the selector matches counts, Ready or not (issue 12).
  const notReady = { count: resolved.notReady, names: resolved.notReadyNames };
  const observation: ProofObservation = {
    version: desired.version,
    total: s.total + notReady.count,
    unobserved: {
      count: proof.unobserved.count + notReady.count,
      names: [...notReady.names, ...proof.unobserved.names].slice(0, MAX_NAMES),
    },
    unproven: proof.unproven,
    pending: pass.paused || pass.dryRun || s.skipped > 0,
  };
  const remembered = deps.lifecycles?.get(key);
  const before =
    (remembered && remembered.uid === gk.uid ? remembered.lifecycle : undefined) ??
    gk.status.lifecycle ??
    EMPTY_LIFECYCLE;
  const retireAfterMs = parseDuration(spec.retire.after);
  const lifecycle = advance(before, observation, deps.env.clock.now(), { retireAfterMs, keepRetired: 3 });

  let status = scrubStatus(statusFromPass(prev, gk.generation, d, now(), completed), deps.secretValues);
  status = statusWithUnobserved(status, notReady, gk.generation, now());
  status = statusWithLifecycle(status, lifecycle.lifecycle, gk.generation, now());
  const events = [...eventsForPass(d, prev, status), ...eventsForLifecycle(lifecycle.events)];
  if (!opts.dryRun) {
    if (s.patched > 0) rotation.delivered = true;
  }
  const finished = rotation.delivered && s.total > 0 && s.converged === s.total;
  // A grace running out is a planned wake-up: come back when the previous key becomes retirable.
  let requeueAfterMs = deps.resyncMs;
  for (const p of lifecycle.lifecycle.previous) {
    if (p.state !== 'Pending' || !p.retirableAt) continue;
    const due = Date.parse(p.retirableAt) - deps.env.clock.now() + 10;
    requeueAfterMs = Math.min(requeueAfterMs, Math.max(due, 10));
  }
  const result: GatewayKeyResult = {
    gatewayKey: gk,
    status,
    events,
    pass,
    digest: d,
    unresolved: null,
    rotation: { ...rotation, completed: finished },
    retry: s.notConverged + s.unreachable + s.skipped > 0 && !pass.paused,
    requeueAfterMs,
    lifecycle,
    retirement: opts.dryRun
      ? null
      : {
          ...(spec.retire.revokeUrl ? { revokeUrl: spec.retire.revokeUrl } : {}),
          ...(spec.retire.webhook ? { webhook: spec.retire.webhook } : {}),
          ...(api ? { sourceToken: api.token } : {}),
          provenTargets: [...proof.proven.names].sort(),
        },
  };
  if (finished) rotation.delivered = false;
  return result;
}
