// Owns the key lifecycle of one key (a GatewayKey, a targets file, a Fly app): which version is
// current, which previous versions may be retired, and when. Pure: the caller observes the targets
// and persists the result; src/lifecycle/retire.ts makes the calls.
//
// The rule: a previous version becomes Retirable only when every target the key has (Ready or
// not) was observed proving the current version, no delivery is pending, and the grace
// `retireAfterMs` (for requests already in flight) has passed since that proof was first
// complete. An unobservable target blocks retirement and is named. Versions retire oldest first:
// after a rotation A → B → C, A is retired before B.
import * as z from 'zod';

export const PREVIOUS_STATES = ['Pending', 'Blocked', 'Retirable', 'Retiring', 'Retired'] as const;
export type PreviousState = (typeof PREVIOUS_STATES)[number];

const Iso = z.iso.datetime({ offset: true });

export const CurrentKeySchema = z.object({
  version: z.string().min(1),
  firstSeen: Iso,
  /** When every target was first seen proving this version, continuously since; null until then. */
  provenAt: Iso.nullable(),
});

export const PreviousKeySchema = z.object({
  version: z.string().min(1),
  state: z.enum(PREVIOUS_STATES),
  /** When the version stopped being current. */
  supersededAt: Iso,
  reason: z.string().optional(),
  message: z.string().optional(),
  /** Targets that hold retirement back (unobserved, or not yet proving the current version). */
  blockedBy: z.array(z.string()).optional(),
  /** When it may be retired at the earliest (proof complete + grace). */
  retirableAt: Iso.optional(),
  /** Revoke calls started (the state is `Retiring` from before the first one). */
  revokeAttempts: z.number().int().nonnegative().optional(),
  retiredAt: Iso.optional(),
  /** When the webhook for this version was delivered. */
  announcedAt: Iso.optional(),
});

export const KeyLifecycleSchema = z.object({
  current: CurrentKeySchema.nullable(),
  previous: z.array(PreviousKeySchema),
});

export type CurrentKey = z.infer<typeof CurrentKeySchema>;
export type PreviousKey = z.infer<typeof PreviousKeySchema>;
export type KeyLifecycle = z.infer<typeof KeyLifecycleSchema>;

export const EMPTY_LIFECYCLE: KeyLifecycle = { current: null, previous: [] };

/** One target as the pass saw it. */
export interface TargetProof {
  name: string;
  /** The pass reached the target's controller and read its state. */
  observed: boolean;
  /** The running process shows the current version (the convergence rule holds for it). */
  proves: boolean;
}

/** Targets that hold retirement back: how many, and the first few names. */
export interface Holdouts {
  count: number;
  names: string[];
}

/**
 * One pass's proof, as counts and a few names (a pass over 10,000 targets keeps no per-target
 * list): `summarize` builds it from a list, a streaming pass folds it as results arrive.
 */
export interface ProofObservation {
  /** The desired version this pass delivered. */
  version: string;
  /** Every target the key has: every pod the selector matches, Ready or not. */
  total: number;
  /** Targets the pass could not observe. */
  unobserved: Holdouts;
  /** Targets observed but not (yet) proving the current version. */
  unproven: Holdouts;
  /** A delivery was started and not yet verified, or the pass stopped early. */
  pending: boolean;
}

export const MAX_NAMES = 10;

/** Pure: the observation of a target list. */
export function summarize(
  version: string,
  targets: readonly TargetProof[],
  pending: boolean,
): ProofObservation {
  const pick = (list: TargetProof[]): Holdouts => ({
    count: list.length,
    names: list.slice(0, MAX_NAMES).map((t) => t.name),
  });
  return {
    version,
    total: targets.length,
    unobserved: pick(targets.filter((t) => !t.observed)),
    unproven: pick(targets.filter((t) => t.observed && !t.proves)),
    pending,
  };
}

export interface LifecyclePolicy {
  retireAfterMs: number;
  /** Retired entries kept for the record (the newest ones). */
  keepRetired: number;
}

export const DEFAULT_POLICY: LifecyclePolicy = { retireAfterMs: 60_000, keepRetired: 3 };

export type LifecycleEvent =
  | { type: 'Rotated'; from: string | null; to: string }
  | { type: 'Proven'; version: string }
  | { type: 'Retirable'; version: string; current: string }
  | { type: 'Blocked'; version: string; reason: string; targets: string[] }
  | { type: 'CurrentWasRetired'; version: string };

export interface Advanced {
  lifecycle: KeyLifecycle;
  /** The entry to retire now (oldest first), when one is Retirable or a retirement is under way. */
  next: PreviousKey | null;
  events: LifecycleEvent[];
}

const iso = (ms: number) => new Date(ms).toISOString();

/**
 * Pure: the lifecycle after one observation at `now`. Never marks the current version for
 * retirement; a rollback to a previous version takes it out of the queue (or, when it was already
 * retired, reports `CurrentWasRetired`).
 */
export function advance(
  prev: KeyLifecycle,
  obs: ProofObservation,
  now: number,
  policy: LifecyclePolicy = DEFAULT_POLICY,
): Advanced {
  const events: LifecycleEvent[] = [];
  let current = prev.current;
  let previous = prev.previous.map((p) => ({ ...p }));

  if (current?.version !== obs.version) {
    if (current && !previous.some((p) => p.version === current!.version)) {
      previous.push({ version: current.version, state: 'Pending', supersededAt: iso(now) });
    }
    const back = previous.find((p) => p.version === obs.version);
    if (back && (back.state === 'Retired' || back.state === 'Retiring')) {
      events.push({ type: 'CurrentWasRetired', version: obs.version });
    }
    previous = previous.filter(
      (p) => p.version !== obs.version || p.state === 'Retired' || p.state === 'Retiring',
    );
    events.push({ type: 'Rotated', from: current?.version ?? null, to: obs.version });
    current = { version: obs.version, firstSeen: iso(now), provenAt: null };
  }

  const { unobserved, unproven } = obs;
  const allProven = obs.total > 0 && unobserved.count === 0 && unproven.count === 0 && !obs.pending;
  if (allProven && current.provenAt === null) {
    current = { ...current, provenAt: iso(now) };
    events.push({ type: 'Proven', version: current.version });
  } else if (!allProven && current.provenAt !== null) {
    current = { ...current, provenAt: null };
  }

  const retirableAtMs =
    current.provenAt === null ? null : Date.parse(current.provenAt) + policy.retireAfterMs;
  for (const p of previous) {
    if (p.state === 'Retired' || p.state === 'Retiring') continue;
    const was = p.state;
    const { blockedBy: _b, reason: _r, message: _m, retirableAt: _a, ...base } = p;
    let next: PreviousKey;
    if (obs.total === 0) {
      next = {
        ...base,
        state: 'Blocked',
        reason: 'NoTargets',
        message: 'no target matches: nothing proved the current version',
      };
    } else if (unobserved.count > 0) {
      next = {
        ...base,
        state: 'Blocked',
        reason: 'TargetUnobserved',
        message: `cannot observe ${names(unobserved)}`,
        blockedBy: unobserved.names,
      };
    } else if (unproven.count > 0 || obs.pending) {
      next = {
        ...base,
        state: 'Pending',
        reason: 'AwaitingProof',
        message:
          unproven.count > 0
            ? `not yet proving ${current.version}: ${names(unproven)}`
            : 'a delivery is pending',
        ...(unproven.count > 0 ? { blockedBy: unproven.names } : {}),
      };
    } else if (retirableAtMs !== null && now < retirableAtMs) {
      next = {
        ...base,
        state: 'Pending',
        reason: 'Grace',
        message: `every target proved ${current.version}; retirable after the grace`,
        retirableAt: iso(retirableAtMs),
      };
    } else {
      next = { ...base, state: 'Retirable', retirableAt: iso(retirableAtMs ?? now) };
    }
    Object.assign(p, next);
    for (const k of ['blockedBy', 'reason', 'message', 'retirableAt'] as const) if (!(k in next)) delete p[k];
    if (next.state === 'Retirable' && was !== 'Retirable') {
      events.push({ type: 'Retirable', version: p.version, current: current.version });
    }
    if (next.state === 'Blocked' && was !== 'Blocked') {
      events.push({
        type: 'Blocked',
        version: p.version,
        reason: next.reason!,
        targets: next.blockedBy ?? [],
      });
    }
  }

  previous = trimRetired(previous, policy.keepRetired);
  const candidate = previous.find((p) => p.state !== 'Retired') ?? null;
  const next =
    candidate && (candidate.state === 'Retirable' || candidate.state === 'Retiring') ? candidate : null;
  return { lifecycle: { current, previous }, next, events };
}

function names(h: Holdouts): string {
  const shown = h.names.slice(0, 5);
  return h.count <= shown.length
    ? shown.join(', ')
    : `${shown.join(', ')} and ${h.count - shown.length} more`;
}

function trimRetired(previous: PreviousKey[], keep: number): PreviousKey[] {
  const retired = previous.filter((p) => p.state === 'Retired');
  const drop = new Set(retired.slice(0, Math.max(0, retired.length - keep)));
  return previous.filter((p) => !drop.has(p));
}

/** Pure: the lifecycle with `version` marked as being retired (written before the revoke call). */
export function markRetiring(lc: KeyLifecycle, version: string): KeyLifecycle {
  if (lc.current?.version === version) throw new Error(`refusing to retire the current version ${version}`);
  return {
    ...lc,
    previous: lc.previous.map((p) =>
      p.version === version
        ? { ...p, state: 'Retiring', revokeAttempts: (p.revokeAttempts ?? 0) + 1, message: 'revoking' }
        : p,
    ),
  };
}

/** Pure: the lifecycle with `version` retired at `now` (written after the revoke call succeeded). */
export function markRetired(lc: KeyLifecycle, version: string, now: number): KeyLifecycle {
  return {
    ...lc,
    previous: lc.previous.map((p) => {
      if (p.version !== version) return p;
      const { blockedBy: _b, reason: _r, message: _m, ...rest } = p;
      return { ...rest, state: 'Retired', retiredAt: iso(now) };
    }),
  };
}

/** Pure: a note on an entry (a failed call), the state kept. */
export function noteOn(lc: KeyLifecycle, version: string, reason: string, message: string): KeyLifecycle {
  return { ...lc, previous: lc.previous.map((p) => (p.version === version ? { ...p, reason, message } : p)) };
}

/** Pure: the webhook for `version` was delivered at `now`. */
export function markAnnounced(lc: KeyLifecycle, version: string, now: number): KeyLifecycle {
  return {
    ...lc,
    previous: lc.previous.map((p) => (p.version === version ? { ...p, announcedAt: iso(now) } : p)),
  };
}
