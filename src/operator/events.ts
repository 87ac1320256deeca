// Owns which Kubernetes Events a reconcile records, pure: rotations delivered, failures, and Degraded transitions.
import { randomBytes } from 'node:crypto';
import type { PassResult } from '../engine/pass.ts';
import { getCondition, rfc3339 } from './conditions.ts';
import { API_VERSION, type CachedGatewayKey, type GatewayKeyStatus, KIND } from './gateway-key.ts';
import { isKubeError, type KubeClient } from './kube-port.ts';
import { digestOf, failureSummary, type PassDigest, podNames } from './status.ts';

export interface EventSpec {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

/** Pure: the Events a finished pass deserves. A pass that changed nothing records nothing. */
export function eventsForPass(
  pass: PassResult | PassDigest,
  prev: GatewayKeyStatus,
  next: GatewayKeyStatus,
): EventSpec[] {
  const out: EventSpec[] = [];
  const result = digestOf(pass);
  const delivered = result.delivered;
  if (delivered.count > 0) {
    out.push({
      type: 'Normal',
      reason: 'KeyRotated',
      message: `Delivered key version ${result.keyVersion} to ${delivered.count} target(s) and verified the running gateways: ${podNames(delivered)}`,
    });
  }
  // Targets whose provider rejects the key get their own Warning (below), once per change.
  const failed = result.failedOthers;
  if (failed.count > 0) {
    out.push({
      type: 'Warning',
      reason: failed.notConverged > 0 ? 'DeliveryFailed' : 'TargetUnreachable',
      message: `${failed.count} target(s) do not run key version ${result.keyVersion}: ${failureSummary({ count: failed.first.length, first: failed.first })}`,
    });
  }
  const rejected = eventForKeyRejected(prev, next);
  if (rejected) out.push(rejected);
  const wasReady = getCondition(prev.conditions, 'Ready')?.status === 'True';
  const isReady = getCondition(next.conditions, 'Ready')?.status === 'True';
  if (!wasReady && isReady && delivered.count === 0) {
    out.push({
      type: 'Normal',
      reason: 'Converged',
      message: getCondition(next.conditions, 'Ready')?.message ?? '',
    });
  }
  return out;
}

/**
 * Pure: a KeyRejected Warning when Degraded turns KeyRejected or its message (the pods) changes;
 * not on every pass of the same cause, since the reconciler keeps re-observing such targets.
 */
function eventForKeyRejected(prev: GatewayKeyStatus, next: GatewayKeyStatus): EventSpec | null {
  const after = getCondition(next.conditions, 'Degraded');
  if (after?.status !== 'True' || after.reason !== 'KeyRejected') return null;
  return eventForDegraded(prev, next);
}

/** Pure: a Warning when the Degraded reason or message is new (not on every retry of the same cause). */
export function eventForDegraded(prev: GatewayKeyStatus, next: GatewayKeyStatus): EventSpec | null {
  const before = getCondition(prev.conditions, 'Degraded');
  const after = getCondition(next.conditions, 'Degraded');
  if (after?.status !== 'True') return null;
  if (
    before &&
    before.status === 'True' &&
    before.reason === after.reason &&
    before.message === after.message
  ) {
    return null;
  }
  return { type: 'Warning', reason: after.reason, message: after.message };
}

/** A core/v1 Event about a GatewayKey. Messages are built from names, versions and fixed strings only. */
export function eventObject(
  gk: CachedGatewayKey,
  e: EventSpec,
  now: Date,
  instance: string,
): Record<string, unknown> {
  const t = rfc3339(now);
  return {
    apiVersion: 'v1',
    kind: 'Event',
    metadata: { name: `${gk.name}.${randomBytes(8).toString('hex')}`, namespace: gk.namespace },
    involvedObject: {
      apiVersion: API_VERSION,
      kind: KIND,
      name: gk.name,
      namespace: gk.namespace,
      uid: gk.uid,
      resourceVersion: gk.resourceVersion,
    },
    type: e.type,
    reason: e.reason,
    message: e.message.slice(0, 1000),
    source: { component: 'keyroll-operator' },
    reportingComponent: 'keyroll.dev/operator',
    reportingInstance: instance,
    firstTimestamp: t,
    lastTimestamp: t,
    count: 1,
  };
}

/** Events remembered for aggregation, as client-go's EventCorrelator (an LRU of 4096). */
export const MAX_AGGREGATED_EVENTS = 4096;

interface Recorded {
  name: string;
  count: number;
}

/**
 * Records Events about GatewayKeys, aggregated: an Event this process already recorded for the
 * same object, type, reason and message gets its `count` and `lastTimestamp` bumped (merge patch)
 * instead of a new Event — as client-go's recorder does, so `kubectl describe` shows "(x5 over 10m)"
 * rather than five lines. An Event that is gone (TTL) or cannot be patched (an API error) is recorded anew.
 */
export class EventRecorder {
  private readonly seen = new Map<string, Recorded>();
  private readonly deps: {
    kube: Pick<KubeClient, 'createEvent' | 'patchEvent'>;
    now: () => number;
    instance: string;
  };
  constructor(deps: EventRecorder['deps']) {
    this.deps = deps;
  }

  async record(gk: CachedGatewayKey, e: EventSpec, signal: AbortSignal): Promise<void> {
    const key = JSON.stringify([gk.namespace, gk.name, gk.uid, e.type, e.reason, e.message]);
    const now = new Date(this.deps.now());
    const prev = this.seen.get(key);
    if (prev && this.deps.kube.patchEvent) {
      try {
        await this.deps.kube.patchEvent(
          gk.namespace,
          prev.name,
          { count: prev.count + 1, lastTimestamp: rfc3339(now) },
          signal,
        );
        this.seen.delete(key);
        this.remember(key, { name: prev.name, count: prev.count + 1 });
        return;
      } catch (err) {
        // Gone (TTL, 404), not ours to patch (403 without the events patch verb) or anything else:
        // a new Event still tells the human; an abort stops here.
        this.seen.delete(key);
        signal.throwIfAborted();
        if (!isKubeError(err)) throw err;
      }
    }
    const event = eventObject(gk, e, now, this.deps.instance);
    await this.deps.kube.createEvent(gk.namespace, event, signal);
    this.remember(key, { name: (event.metadata as { name: string }).name, count: 1 });
  }

  private remember(key: string, r: Recorded): void {
    this.seen.set(key, r);
    if (this.seen.size > MAX_AGGREGATED_EVENTS) {
      const oldest = this.seen.keys().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
  }
}
