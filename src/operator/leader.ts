// Owns leader election on a coordination.k8s.io/v1 Lease: acquire, renew, take over after expiry, release.

import type { Clock } from '../clock.ts';
import type { Logger } from '../log.ts';
import { isKubeError, type KubeClient, type Lease, LeaseSchema } from './kube-port.ts';

/**
 * metav1.MicroTime: RFC 3339 with exactly six fractional digits. The API server rejects a Lease
 * whose times carry three (what `Date.toISOString()` gives).
 */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export type LeaseDecision =
  | { action: 'create' }
  | { action: 'renew' }
  | { action: 'takeover'; reason: 'expired' | 'released' }
  | { action: 'wait'; holder: string };

/**
 * Pure. Expiry is judged by the local clock from when this replica last saw the record change
 * (as client-go does), never by comparing another machine's timestamps with ours.
 */
export function decideLease(
  lease: Lease | null,
  identity: string,
  now: number,
  observedChangeAt: number,
  defaultDurationMs: number,
): LeaseDecision {
  if (!lease) return { action: 'create' };
  const holder = lease.spec.holderIdentity ?? '';
  if (holder === identity) return { action: 'renew' };
  if (holder === '') return { action: 'takeover', reason: 'released' };
  const durationMs = (lease.spec.leaseDurationSeconds ?? 0) * 1000 || defaultDurationMs;
  if (now >= observedChangeAt + durationMs) return { action: 'takeover', reason: 'expired' };
  return { action: 'wait', holder };
}

/** The fields of a Lease a holder writes; shared by the LeaderElector and the one-shot run Lease. */
export interface LeaseWrite {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs: number;
  now: number;
  /** The resourceVersion read last: the precondition of a replace (absent on create). */
  resourceVersion?: string | undefined;
  /** When this holder acquired it; `now` for a new acquisition. */
  acquireTime?: string | null | undefined;
  transitions: number;
}

/** Pure: the Lease object a holder creates or replaces (MicroTime timestamps). */
export function leaseObject(w: LeaseWrite): Record<string, unknown> {
  const now = microTime(w.now);
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: {
      name: w.name,
      namespace: w.namespace,
      ...(w.resourceVersion ? { resourceVersion: w.resourceVersion } : {}),
    },
    spec: {
      holderIdentity: w.identity,
      leaseDurationSeconds: Math.max(1, Math.round(w.leaseDurationMs / 1000)),
      acquireTime: w.acquireTime ?? now,
      renewTime: now,
      leaseTransitions: w.transitions,
    },
  };
}

/** Pure: the Lease a holder writes to give it back (no holder, so the next one takes it at once). */
export function releasedLeaseObject(
  lease: Lease,
  namespace: string,
  name: string,
  now: number,
): Record<string, unknown> {
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { name, namespace, resourceVersion: lease.metadata.resourceVersion },
    spec: {
      holderIdentity: '',
      leaseDurationSeconds: 1,
      acquireTime: lease.spec.acquireTime ?? microTime(now),
      renewTime: microTime(now),
      leaseTransitions: lease.spec.leaseTransitions ?? 0,
    },
  };
}

/** What changes whenever a holder writes the Lease: expiry is judged from when this key last changed. */
export function leaseChangeKey(lease: Lease | null): string {
  return lease
    ? `${lease.spec.holderIdentity ?? ''}|${lease.spec.renewTime ?? ''}|${lease.metadata.resourceVersion ?? ''}`
    : '';
}

/** Who holds which Lease and on what timing: the operator's election and the Job's run Lease alike. */
export interface LeaseParams {
  kube: KubeClient;
  namespace: string;
  name: string;
  identity: string;
  /** Written into the Lease; how long others wait after the holder's last renewal before taking it. */
  leaseDurationMs: number;
  /** The holder gives up if it could not renew for this long (must be < leaseDurationMs). */
  renewDeadlineMs: number;
  /** Renew period, and the period of re-reads while another holder is watched for expiry. */
  retryPeriodMs: number;
  /** Upper bound of each Lease call. */
  timeoutMs: number;
  clock: Clock;
  log: Logger;
}

export interface LeaderElectorOptions extends LeaseParams {
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
}

export class LeaderElector {
  readonly #o: LeaderElectorOptions;
  #leading = false;
  #stopped = false;
  #cancelTimer: (() => void) | null = null;
  #lastRenew = 0;
  #observed: { key: string; at: number } | null = null;
  #tick: Promise<void> | null = null;

  constructor(opts: LeaderElectorOptions) {
    this.#o = opts;
  }

  get isLeader(): boolean {
    return this.#leading;
  }

  start(): void {
    this.#schedule(0);
  }

  /** Stops campaigning; a leader releases the Lease so another replica takes over at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#cancelTimer?.();
    await this.#tick;
    if (this.#leading) {
      this.#setLeading(false);
      await this.#release();
    }
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#cancelTimer = this.#o.clock.setTimeout(() => {
      this.#tick = this.#attempt().finally(() => {
        this.#tick = null;
        this.#schedule(this.#o.retryPeriodMs);
      });
    }, ms);
  }

  #setLeading(leading: boolean): void {
    if (leading === this.#leading) return;
    this.#leading = leading;
    const log = this.#o.log.child({ component: 'leader', lease: this.#o.name, identity: this.#o.identity });
    if (leading) {
      log.info({}, 'Became leader');
      this.#o.onStartedLeading();
    } else {
      log.warn({}, 'Lost leadership');
      this.#o.onStoppedLeading();
    }
  }

  #body(lease: Lease | null, transitions: number, acquire: boolean): Record<string, unknown> {
    return leaseObject({
      namespace: this.#o.namespace,
      name: this.#o.name,
      identity: this.#o.identity,
      leaseDurationMs: this.#o.leaseDurationMs,
      now: this.#o.clock.now(),
      resourceVersion: lease?.metadata.resourceVersion,
      acquireTime: acquire ? null : lease?.spec.acquireTime,
      transitions,
    });
  }

  async #attempt(): Promise<void> {
    if (this.#stopped) return;
    const o = this.#o;
    const log = o.log.child({ component: 'leader', lease: o.name, identity: o.identity });
    const signal = AbortSignal.timeout(o.timeoutMs);
    try {
      const raw = await o.kube.getLease(o.namespace, o.name, signal);
      const lease = raw === null ? null : LeaseSchema.parse(raw);
      const now = o.clock.now();
      const changeKey = leaseChangeKey(lease);
      if (!this.#observed || this.#observed.key !== changeKey) this.#observed = { key: changeKey, at: now };
      const decision = decideLease(lease, o.identity, now, this.#observed.at, o.leaseDurationMs);
      const transitions = lease?.spec.leaseTransitions ?? 0;
      switch (decision.action) {
        case 'create':
          await o.kube.createLease(o.namespace, this.#body(null, 0, true), signal);
          break;
        case 'renew':
          await o.kube.replaceLease(o.namespace, o.name, this.#body(lease, transitions, false), signal);
          break;
        case 'takeover':
          log.info(
            { previous: lease?.spec.holderIdentity ?? '', reason: decision.reason },
            'Taking over the Lease',
          );
          await o.kube.replaceLease(o.namespace, o.name, this.#body(lease, transitions + 1, true), signal);
          break;
        case 'wait':
          if (this.#leading) this.#setLeading(false); // someone else holds it now
          return;
      }
      if (this.#stopped) return;
      this.#lastRenew = o.clock.now();
      this.#setLeading(true);
    } catch (err) {
      if (isKubeError(err, 409) || isKubeError(err, 422)) {
        log.info({ error: (err as Error).message }, 'Lost the race for the Lease');
      } else {
        log.warn({ error: (err as Error).message }, 'Lease request failed');
      }
      if (this.#leading && o.clock.now() - this.#lastRenew >= o.renewDeadlineMs) this.#setLeading(false);
      else if (this.#leading && isKubeError(err, 409)) {
        // Our write lost to another: re-read at once next period; still leader until the deadline.
      }
    }
  }

  async #release(): Promise<void> {
    const o = this.#o;
    try {
      if (await releaseLease(o)) o.log.info({ component: 'leader', lease: o.name }, 'Released the Lease');
    } catch (err) {
      o.log.warn({ component: 'leader', error: (err as Error).message }, 'Could not release the Lease');
    }
  }
}

/**
 * Hands the Lease back (holder cleared, so the next candidate need not wait for expiry) when we
 * still hold it; false when it is gone or someone else's. Throws on an API error.
 */
export async function releaseLease(o: LeaseParams): Promise<boolean> {
  const signal = AbortSignal.timeout(o.timeoutMs);
  const raw = await o.kube.getLease(o.namespace, o.name, signal);
  if (raw === null) return false;
  const lease = LeaseSchema.parse(raw);
  if (lease.spec.holderIdentity !== o.identity) return false;
  await o.kube.replaceLease(
    o.namespace,
    o.name,
    releasedLeaseObject(lease, o.namespace, o.name, o.clock.now()),
    signal,
  );
  return true;
}
