// Owns the Lease a one-shot run (`keyroll reconcile --once --kube`, the reconcile CronJob) holds
// while it acts: the operator's own leader-election Lease, taken only when no live holder has it,
// renewed while the run lasts, given back at the end. So the CronJob and the operator never roll
// out at the same time, and `maxUnavailable` holds across both.
import { hostname } from 'node:os';
import { type Clock, systemClock } from '../clock.ts';
import type { Logger } from '../log.ts';
import { isKubeError, type KubeClient, type Lease, LeaseSchema } from './kube-port.ts';
import { decideLease, type LeaseParams, leaseChangeKey, leaseObject, releaseLease } from './leader.ts';

/** Reads of the Lease tried before the run gives up (a 403 is not retried). */
const ACQUIRE_ATTEMPTS = 3;

/** The operator's default `--lease-name`; the CronJob's Role names the same Lease. */
export const DEFAULT_LEASE_NAME = 'keyroll-operator';

export type RunLeaseOptions = LeaseParams;

/** A Lease this run holds. */
export interface RunLease {
  /** Aborted when the Lease is lost: not renewed within the deadline, or another holder wrote it. */
  readonly signal: AbortSignal;
  /** Stops renewing and gives the Lease back (holder cleared) if it is still ours. Never throws. */
  release(): Promise<void>;
}

export type RunLeaseOutcome =
  | { held: true; lease: RunLease }
  /** Someone else holds the Lease and renews it: this run must not act. */
  | { held: false; holder: string };

/**
 * Takes the Lease with the LeaderElector's semantics: absent → create; no holder (released) →
 * take; held by another → re-read every `retryPeriodMs`: a holder that renews is alive (refuse at
 * once), one whose record has not changed for its `leaseDurationSeconds` (by our clock, from when
 * we first saw it) has expired (take over, transitions + 1). Every write carries the
 * resourceVersion read, so a 409 means someone else wrote first: re-read and decide again.
 * Other API errors are thrown (KubeError); `signal` aborts the wait.
 */
export async function acquireRunLease(o: RunLeaseOptions, signal: AbortSignal): Promise<RunLeaseOutcome> {
  const log = o.log.child({ component: 'run-lease', lease: o.name, identity: o.identity });
  let observed: { key: string; at: number } | null = null;
  let failures = 0;
  for (;;) {
    signal.throwIfAborted();
    const call = AbortSignal.any([signal, AbortSignal.timeout(o.timeoutMs)]);
    let raw: unknown;
    try {
      raw = await o.kube.getLease(o.namespace, o.name, call);
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      // A timeout or a 5xx/429 may pass: try again a few times; a 403 will not.
      if (isKubeError(err, 403) || ++failures >= ACQUIRE_ATTEMPTS) throw err;
      log.warn({ error: (err as Error).message, attempt: failures }, 'Could not read the Lease; retrying');
      await o.clock.sleep(o.retryPeriodMs, signal).catch((e: unknown) => {
        throw signal.aborted ? signal.reason : e;
      });
      continue;
    }
    const lease = raw === null ? null : LeaseSchema.parse(raw);
    const now = o.clock.now();
    const key = leaseChangeKey(lease);
    const holder = lease?.spec.holderIdentity ?? '';
    if (observed && observed.key !== key && holder !== '' && holder !== o.identity) {
      // The holder wrote the Lease while we watched: it is alive.
      return { held: false, holder };
    }
    if (!observed || observed.key !== key) observed = { key, at: now };
    const decision = decideLease(lease, o.identity, now, observed.at, o.leaseDurationMs);
    if (decision.action === 'wait') {
      log.debug({ holder: decision.holder }, 'Lease held; watching whether its holder renews it');
      await o.clock.sleep(o.retryPeriodMs, signal).catch((err: unknown) => {
        throw signal.aborted ? signal.reason : err;
      });
      continue;
    }
    const transitions = lease?.spec.leaseTransitions ?? 0;
    const body = leaseObject({
      namespace: o.namespace,
      name: o.name,
      identity: o.identity,
      leaseDurationMs: o.leaseDurationMs,
      now,
      resourceVersion: lease?.metadata.resourceVersion,
      acquireTime: decision.action === 'renew' ? lease?.spec.acquireTime : null,
      transitions: decision.action === 'takeover' ? transitions + 1 : transitions,
    });
    let written: unknown;
    try {
      written =
        decision.action === 'create'
          ? await o.kube.createLease(o.namespace, body, call)
          : await o.kube.replaceLease(o.namespace, o.name, body, call);
    } catch (err) {
      // Another writer got there first (409 on a stale resourceVersion, or create of an existing
      // Lease): read again and decide on what it wrote.
      if (isKubeError(err, 409) || isKubeError(err, 422)) {
        log.info({ error: (err as Error).message }, 'Lost a race for the Lease; reading it again');
        continue;
      }
      throw err;
    }
    if (decision.action === 'takeover') {
      log.info({ previous: holder, reason: decision.reason }, 'Took over the Lease');
    } else {
      log.info({ action: decision.action }, 'Took the Lease');
    }
    return { held: true, lease: holdRunLease(o, written, now) };
  }
}

/** Renews every `retryPeriodMs` until released; aborts `signal` when the Lease is lost. */
function holdRunLease(o: RunLeaseOptions, written: unknown, takenAt: number): RunLease {
  const log = o.log.child({ component: 'run-lease', lease: o.name, identity: o.identity });
  const lost = new AbortController();
  const parsed = LeaseSchema.safeParse(written);
  let current: Lease | null = parsed.success ? parsed.data : null;
  let lastRenew = takenAt;
  let stopped = false;
  let cancelTimer: (() => void) | null = null;
  let tick: Promise<void> | null = null;

  const lose = (why: string) => {
    if (lost.signal.aborted) return;
    log.warn({ reason: why }, 'Lost the Lease; stopping the run');
    lost.abort(new Error(`lost the Lease ${o.namespace}/${o.name}: ${why}`));
  };

  const renew = async (): Promise<void> => {
    const signal = AbortSignal.timeout(o.timeoutMs);
    try {
      if (!current) {
        const raw = await o.kube.getLease(o.namespace, o.name, signal);
        current = raw === null ? null : LeaseSchema.parse(raw);
      }
      const holder = current?.spec.holderIdentity ?? '';
      if (!current || holder !== o.identity) {
        lose(current ? `now held by ${holder || 'nobody (released)'}` : 'the Lease was deleted');
        return;
      }
      const body = leaseObject({
        namespace: o.namespace,
        name: o.name,
        identity: o.identity,
        leaseDurationMs: o.leaseDurationMs,
        now: o.clock.now(),
        resourceVersion: current.metadata.resourceVersion,
        acquireTime: current.spec.acquireTime,
        transitions: current.spec.leaseTransitions ?? 0,
      });
      current = LeaseSchema.parse(await o.kube.replaceLease(o.namespace, o.name, body, signal));
      lastRenew = o.clock.now();
    } catch (err) {
      // 409: someone wrote it since our last read; re-read next period and see who holds it.
      current = null;
      log.warn({ error: (err as Error).message }, 'Could not renew the Lease');
    }
    if (!lost.signal.aborted && o.clock.now() - lastRenew >= o.renewDeadlineMs) {
      lose(`not renewed for ${o.renewDeadlineMs} ms`);
    }
  };

  const schedule = () => {
    if (stopped || lost.signal.aborted) return;
    cancelTimer = o.clock.setTimeout(() => {
      tick = renew().finally(() => {
        tick = null;
        schedule();
      });
    }, o.retryPeriodMs);
  };
  schedule();

  return {
    signal: lost.signal,
    async release() {
      if (stopped) return;
      stopped = true;
      cancelTimer?.();
      await tick;
      if (lost.signal.aborted) return;
      try {
        if (await releaseLease(o)) log.info({}, 'Released the Lease');
      } catch (err) {
        // It expires on its own after leaseDurationSeconds.
        log.warn({ error: (err as Error).message }, 'Could not release the Lease; it will expire');
      }
    },
  };
}

/** What a one-shot command needs to run under the Lease, from its environment. */
export interface RunLeaseCall {
  kube: KubeClient;
  namespace: string;
  env: NodeJS.ProcessEnv;
  log: Logger;
  /** Where the "skipped" line (or JSON) goes, and errors. */
  out: (text: string) => void;
  err: (text: string) => void;
  json: boolean;
  /** SIGINT/SIGTERM or the caller's signal. */
  signal: AbortSignal;
  clock?: Clock;
}

function positiveSeconds(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const text = env[name];
  if (text === undefined || text === '') return fallback * 1000;
  if (!/^\d+(\.\d+)?$/.test(text) || Number(text) <= 0) {
    throw new Error(`${name}: expected a positive number of seconds, got '${text}'`);
  }
  return Number(text) * 1000;
}

/**
 * Options from the environment: `KEYROLL_LEASE_NAME` (default keyroll-operator: the operator's
 * own), `KEYROLL_LEASE_DURATION_SECONDS` (15, as the operator's default), identity `POD_NAME`
 * (a Job's pod name is unique) or host-pid. Renew every duration/7.5 (2 s), deadline 2/3 (10 s).
 */
export function runLeaseOptions(
  call: Pick<RunLeaseCall, 'kube' | 'namespace' | 'env' | 'log' | 'clock'>,
): RunLeaseOptions {
  const leaseDurationMs = positiveSeconds(call.env, 'KEYROLL_LEASE_DURATION_SECONDS', 15);
  const name = call.env.KEYROLL_LEASE_NAME || DEFAULT_LEASE_NAME;
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name) || name.length > 253) {
    throw new Error(`KEYROLL_LEASE_NAME: expected a Lease name (DNS subdomain), got '${name}'`);
  }
  const retryPeriodMs = Math.max(50, Math.round(leaseDurationMs / 7.5));
  return {
    kube: call.kube,
    namespace: call.namespace,
    name,
    identity: call.env.POD_NAME || `keyroll-reconcile-${hostname()}-${process.pid}`,
    leaseDurationMs,
    renewDeadlineMs: Math.round((leaseDurationMs * 2) / 3),
    retryPeriodMs,
    timeoutMs: Math.max(2_000, Math.min(10_000, Math.round(leaseDurationMs / 3))),
    clock: call.clock ?? systemClock,
    log: call.log,
  };
}

/**
 * The one call a one-shot `--kube` run makes before it acts. Returns the Lease (run with its
 * `signal`, `await release()` at the end), or an exit code: 0 with a "skipped" line when a live
 * holder (the operator) has the Lease — it does this work — and 2 when the Lease cannot be read
 * or written (RBAC, API down) or the run was interrupted while waiting.
 */
export async function takeRunLease(
  call: RunLeaseCall,
): Promise<{ signal: AbortSignal; release(): Promise<void> } | number> {
  let opts: RunLeaseOptions;
  try {
    opts = runLeaseOptions(call);
  } catch (e) {
    call.err(`keyroll reconcile: ${(e as Error).message}\n`);
    return 2;
  }
  let outcome: RunLeaseOutcome;
  try {
    outcome = await acquireRunLease(opts, call.signal);
  } catch (e) {
    if (call.signal.aborted) {
      call.err(`keyroll reconcile: interrupted while waiting for the Lease ${opts.namespace}/${opts.name}\n`);
      return 2;
    }
    const hint = isKubeError(e, 403)
      ? ' (the keyroll-reconcile Role must allow get/update on this Lease and create on leases)'
      : '';
    call.err(`keyroll reconcile: Lease ${opts.namespace}/${opts.name}: ${(e as Error).message}${hint}\n`);
    return 2;
  }
  if (!outcome.held) {
    const message = `Lease ${opts.namespace}/${opts.name} is held by ${outcome.holder}, which renews it (the operator is running and reconciles these GatewayKeys); nothing done`;
    if (call.json) {
      call.out(
        `${JSON.stringify({ namespace: opts.namespace, skipped: true, leaseHolder: outcome.holder, message }, null, 2)}\n`,
      );
    } else {
      call.out(`skipped: ${message}\n`);
    }
    return 0;
  }
  const held = outcome.lease;
  return { signal: AbortSignal.any([call.signal, held.signal]), release: () => held.release() };
}
