// Owns the Fly loop's pure decisions: per machine, whether its config ("durable") and its running
// gateway ("live") hold the desired key, which single action a pass takes on it, and when it is done.

/** Machine states in which an update with `skip_launch` neither boots nor restarts anything. */
export const WRITABLE_STATES: ReadonlySet<string> = new Set(['stopped', 'created']);

/**
 * durable: whether a future boot gets the desired key. The key's durable copy is the app secret
 * (written once per pass before anything else, staged); a machine config must not hold the key
 * (it would shadow the secret, and `fly deploy` rebuilds configs without it).
 * - ok: the config holds no key, so a boot (or a deploy) gets the app secret;
 * - stale: the config holds a key and the machine is not running: a `skip_launch` write takes it
 *   out restart-free;
 * - deferred: the config holds a key on a started machine. Fly has no restart-free config update
 *   of a running machine (docs/fly.md), so the write waits until the machine is seen stopped.
 */
export type DurableState = 'ok' | 'stale' | 'deferred';

/**
 * live: what the running gateway proves through `GET /_kilo/state`.
 * - ok: converged (fingerprint, profiles, ready); stale: reachable but not converged;
 * - unreachable: the controller did not answer; no-address: the machine has no usable private IP;
 * - not-running: the machine is not started, so there is no running process to prove anything.
 */
export type LiveState = 'ok' | 'stale' | 'unreachable' | 'no-address' | 'not-running';

/** The one class of action a pass takes on a machine. */
export type ActionKind = 'none' | 'live' | 'durable';

export interface MachineInput {
  id: string;
  state: string;
  durable: 'ok' | 'differs';
  /** Null when the machine is not started (nothing was observed). */
  live: Exclude<LiveState, 'not-running'> | null;
  /**
   * False when the running gateway differs in a way a key delivery cannot fix (a delivery-mode
   * mismatch, an unreadable profile store): the loop reports it and takes no lease for it.
   */
  liveFixable?: boolean;
}

export interface MachinePlan {
  id: string;
  state: string;
  durable: DurableState;
  live: LiveState;
  /** The action this pass takes (after the `--max-changes` cap). */
  action: ActionKind;
  /** True when an action was wanted but the cap left it for a later pass. */
  held: boolean;
  reason: string;
}

export interface PlanOptions {
  /** At most this many machines get an action (of either class) per pass. */
  maxChanges: number;
}

/** Pure: the durable state of one machine from its state and whether its config matches. */
export function durableState(state: string, matches: boolean): DurableState {
  if (matches) return 'ok';
  return WRITABLE_STATES.has(state) ? 'stale' : 'deferred';
}

function wanted(m: MachineInput): {
  action: ActionKind;
  durable: DurableState;
  live: LiveState;
  reason: string;
} {
  const durable = durableState(m.state, m.durable === 'ok');
  if (m.state === 'started') {
    const live = m.live ?? 'unreachable';
    if (live === 'stale' && m.liveFixable === false) {
      return {
        action: 'none',
        durable,
        live,
        reason: 'running gateway differs in a way a key delivery cannot fix',
      };
    }
    if (live === 'stale') {
      // Live first: the running gateway is what users hit. The config of a started machine is
      // not touched in the same pass (or at all while it runs): any update would reboot or stop it.
      return { action: 'live', durable, live, reason: 'running gateway lacks the desired key' };
    }
    if (live === 'ok') {
      return {
        action: 'none',
        durable,
        live,
        reason:
          durable === 'ok'
            ? 'in sync'
            : 'live ok; config write deferred until the machine is stopped (a write would restart it)',
      };
    }
    return {
      action: 'none',
      durable,
      live,
      reason: live === 'no-address' ? 'no usable private address' : 'controller unreachable',
    };
  }
  if (WRITABLE_STATES.has(m.state)) {
    return durable === 'stale'
      ? {
          action: 'durable',
          durable,
          live: 'not-running',
          reason: `machine is ${m.state}: take the key out of its config (the app secret holds it) with skip_launch`,
        }
      : { action: 'none', durable, live: 'not-running', reason: 'in sync (not running)' };
  }
  return {
    action: 'none',
    durable,
    live: 'not-running',
    reason: durable === 'ok' ? 'in sync (not running)' : `machine is ${m.state}; next pass`,
  };
}

/**
 * Pure. One class of action per machine per pass, never both: a started machine whose gateway
 * lacks the key gets a live delivery (the controller restarts the gateway, not the VM); a stopped
 * machine whose config still holds a key gets a `skip_launch` config write taking it out (nothing
 * boots; the app secret supplies the key). Live
 * deliveries go first, then config writes, each in machine-id order, up to `maxChanges`.
 */
export function planMachines(machines: readonly MachineInput[], opts: PlanOptions): MachinePlan[] {
  const plans = machines.map((m) => ({ id: m.id, state: m.state, held: false, ...wanted(m) }));
  const order = (kind: ActionKind) =>
    plans.filter((p) => p.action === kind).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  let budget = opts.maxChanges;
  for (const p of [...order('live'), ...order('durable')]) {
    if (budget > 0) {
      budget--;
      continue;
    }
    p.held = true;
    p.reason = `${p.reason}; --max-changes ${opts.maxChanges} reached, next pass`;
    p.action = 'none';
  }
  return plans;
}

/**
 * Pure: whether a machine is done. A started machine needs a proven live key and a durable one
 * (a deferred config write counts only when `requireDurable` is off); any other machine needs
 * the key in its config.
 */
export function machineConverged(
  durable: DurableState,
  live: LiveState,
  state: string,
  requireDurable: boolean,
): boolean {
  const durableDone = durable === 'ok' || (durable === 'deferred' && !requireDurable);
  if (state === 'started') return live === 'ok' && durableDone;
  return durable === 'ok';
}
