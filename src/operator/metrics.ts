// Owns the operator's Prometheus metrics: prom-client, one registry per operator, names after
// controller-runtime's (docs/operator.md maps each to its controller-runtime counterpart).
import client from 'prom-client';
import type { GatewayKeyStatus } from './gateway-key.ts';

type Labels = Record<string, string>;
/** Every per-GatewayKey series is labelled with the GatewayKey. */
type KeyLabels = Labels & { namespace: string; name: string };

function matches(have: Labels, want: Labels): boolean {
  for (const k in want) if (have[k] !== want[k]) return false;
  return true;
}

function sameLabels(a: Labels, b: Labels): boolean {
  let n = 0;
  for (const k in a) {
    if (a[k] !== b[k]) return false;
    n++;
  }
  return n === Object.keys(b).length;
}

/**
 * A gauge of per-GatewayKey series that remembers each GatewayKey's label sets, so every series
 * of one GatewayKey can be dropped at once. A series' label object is the one prom-client holds
 * (passed again on every set), not a copy; the lookups are per GatewayKey (a dozen series at most),
 * not over every series of the operator.
 */
class GatewayKeyGauge {
  private readonly gauge: client.Gauge;
  /** `namespace/name` → the label sets of that GatewayKey's series. */
  private readonly series = new Map<string, Labels[]>();
  constructor(registry: client.Registry, name: string, help: string, labelNames: string[]) {
    this.gauge = new client.Gauge({ name, help, labelNames, registers: [registry] });
  }
  set(labels: KeyLabels, value: number): void {
    const id = `${labels.namespace}/${labels.name}`;
    let list = this.series.get(id);
    if (!list) {
      list = [];
      this.series.set(id, list);
    }
    let held = list.find((l) => sameLabels(l, labels));
    if (!held) {
      held = labels;
      list.push(held);
    }
    this.gauge.set(held, value);
  }
  /** Removes every series of the GatewayKey whose labels include these. */
  deleteMatching(labels: KeyLabels): void {
    const id = `${labels.namespace}/${labels.name}`;
    const list = this.series.get(id);
    if (!list) return;
    const kept = list.filter((have) => {
      if (!matches(have, labels)) return true;
      this.gauge.remove(have);
      return false;
    });
    if (kept.length > 0) this.series.set(id, kept);
    else this.series.delete(id);
  }
}

const CONDITION_TYPES = ['Ready', 'Progressing', 'Degraded'] as const;
const CONDITION_STATUSES = ['True', 'False', 'Unknown'] as const;

/**
 * Every series the operator exports, plus the default process_* and nodejs_* ones. Labels carry
 * resource names, condition types and outcomes only — never a key, a token, a fingerprint or a
 * version string.
 */
export class OperatorMetrics {
  readonly registry = new client.Registry();
  readonly reconciles = new client.Counter({
    name: 'keyroll_reconcile_total',
    help: 'Reconciles run, by result (success, error).',
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly reconcileErrors = new client.Counter({
    name: 'keyroll_reconcile_errors_total',
    help: 'Reconciles that failed and were requeued with backoff.',
    registers: [this.registry],
  });
  readonly reconcileDuration = new client.Histogram({
    name: 'keyroll_reconcile_time_seconds',
    help: 'Duration of one reconcile.',
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });
  readonly targets = new GatewayKeyGauge(
    this.registry,
    'keyroll_gatewaykey_targets',
    'Targets of each GatewayKey by state (converged, failed, pending) after the last pass.',
    ['namespace', 'name', 'state'],
  );
  readonly conditions = new GatewayKeyGauge(
    this.registry,
    'keyroll_gatewaykey_condition',
    'Status conditions of each GatewayKey: 1 for the status the condition has, 0 for the others.',
    ['namespace', 'name', 'type', 'status'],
  );
  /** One series per condition, for its current reason (an alert on KeyRejected needs the reason). */
  readonly conditionReasons = new GatewayKeyGauge(
    this.registry,
    'keyroll_gatewaykey_condition_reason',
    'The reason of each status condition of each GatewayKey: 1 for the current reason (one series per type).',
    ['namespace', 'name', 'type', 'reason'],
  );
  readonly lastRotation = new GatewayKeyGauge(
    this.registry,
    'keyroll_gatewaykey_last_rotation_timestamp_seconds',
    'When every target of the GatewayKey last proved a newly delivered key version (status.lastRotationTime).',
    ['namespace', 'name'],
  );
  readonly rotationDuration = new client.Histogram({
    name: 'keyroll_rotation_duration_seconds',
    help: 'From the operator first seeing a new key version to every target proving it.',
    buckets: [1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800],
    registers: [this.registry],
  });
  readonly rotations = new client.Counter({
    name: 'keyroll_rotations_total',
    help: 'Key versions delivered to and proven by every target.',
    registers: [this.registry],
  });
  readonly statusWrites = new client.Counter({
    name: 'keyroll_status_writes_total',
    help: 'GatewayKey status writes, by result (written, conflict, error).',
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly informerRestarts = new client.Counter({
    name: 'keyroll_informer_restarts_total',
    help: 'Informer relists and restarts, by resource and reason.',
    labelNames: ['resource', 'reason'],
    registers: [this.registry],
  });
  readonly leader = new client.Gauge({
    name: 'keyroll_leader_election_master_status',
    help: '1 while this replica holds the leader Lease.',
    registers: [this.registry],
  });
  readonly queueDepth = new client.Gauge({
    name: 'keyroll_workqueue_depth',
    help: 'Keys waiting in the work queue.',
    registers: [this.registry],
  });

  constructor() {
    client.collectDefaultMetrics({ register: this.registry });
  }

  /** The per-GatewayKey series that follow its status: conditions and the last rotation time. */
  reportStatus(namespace: string, name: string, status: GatewayKeyStatus): void {
    for (const type of CONDITION_TYPES) {
      const c = status.conditions?.find((x) => x.type === type);
      for (const s of CONDITION_STATUSES) {
        if (c) this.conditions.set({ namespace, name, type, status: s }, c.status === s ? 1 : 0);
        else this.conditions.deleteMatching({ namespace, name, type });
      }
      // The reason changes with the condition: drop the old reason's series, keep one.
      this.conditionReasons.deleteMatching({ namespace, name, type });
      if (c?.reason) this.conditionReasons.set({ namespace, name, type, reason: c.reason }, 1);
    }
    const t = status.lastRotationTime ? Date.parse(status.lastRotationTime) : Number.NaN;
    if (Number.isFinite(t)) this.lastRotation.set({ namespace, name }, t / 1000);
  }

  /** Drops every series of a GatewayKey that is gone. */
  forget(namespace: string, name: string): void {
    for (const g of [this.targets, this.conditions, this.conditionReasons, this.lastRotation]) {
      g.deleteMatching({ namespace, name });
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }
}
