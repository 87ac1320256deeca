// Owns the operator's Prometheus metrics: a tiny registry rendered in the text exposition format.

type Labels = Record<string, string>;

function labelKey(labels: Labels): string {
  return Object.keys(labels)
    .sort()
    .map(
      (k) => `${k}="${String(labels[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`,
    )
    .join(',');
}

function fmt(name: string, key: string, value: number): string {
  return `${name}${key ? `{${key}}` : ''} ${Number.isFinite(value) ? value : 0}`;
}

class Counter {
  readonly values = new Map<string, number>();
  readonly name: string;
  readonly help: string;
  constructor(name: string, help: string) {
    this.name = name;
    this.help = help;
  }
  inc(labels: Labels = {}, by = 1): void {
    const k = labelKey(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + by);
  }
  render(): string[] {
    return [
      `# HELP ${this.name} ${this.help}`,
      `# TYPE ${this.name} counter`,
      ...[...this.values].map(([k, v]) => fmt(this.name, k, v)),
    ];
  }
}

class Gauge {
  readonly values = new Map<string, number>();
  readonly name: string;
  readonly help: string;
  constructor(name: string, help: string) {
    this.name = name;
    this.help = help;
  }
  set(labels: Labels, value: number): void {
    this.values.set(labelKey(labels), value);
  }
  delete(labels: Labels): void {
    this.values.delete(labelKey(labels));
  }
  /** Removes every series whose labels include these. */
  deleteMatching(labels: Labels): void {
    const parts = labelKey(labels).split(',');
    for (const k of [...this.values.keys()]) {
      const have = k.split(',');
      if (parts.every((p) => have.includes(p))) this.values.delete(k);
    }
  }
  render(): string[] {
    return [
      `# HELP ${this.name} ${this.help}`,
      `# TYPE ${this.name} gauge`,
      ...[...this.values].map(([k, v]) => fmt(this.name, k, v)),
    ];
  }
}

class Histogram {
  readonly series = new Map<string, { buckets: number[]; sum: number; count: number }>();
  readonly name: string;
  readonly help: string;
  readonly bounds: number[];
  constructor(name: string, help: string, bounds: number[]) {
    this.name = name;
    this.help = help;
    this.bounds = bounds;
  }
  observe(labels: Labels, value: number): void {
    const k = labelKey(labels);
    const s = this.series.get(k) ?? { buckets: this.bounds.map(() => 0), sum: 0, count: 0 };
    this.series.set(k, s);
    this.bounds.forEach((b, i) => {
      if (value <= b) s.buckets[i] = (s.buckets[i] ?? 0) + 1;
    });
    s.sum += value;
    s.count += 1;
  }
  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const [k, s] of this.series) {
      const sep = k ? `${k},` : '';
      this.bounds.forEach((b, i) => {
        out.push(`${this.name}_bucket{${sep}le="${b}"} ${s.buckets[i] ?? 0}`);
      });
      out.push(`${this.name}_bucket{${sep}le="+Inf"} ${s.count}`);
      out.push(fmt(`${this.name}_sum`, k, s.sum));
      out.push(fmt(`${this.name}_count`, k, s.count));
    }
    return out;
  }
}

/**
 * Every series the operator exports. Labels carry resource names and outcomes only — never a
 * key, a token, a fingerprint or a version string.
 */
export class OperatorMetrics {
  readonly reconciles = new Counter('keyroll_operator_reconciles_total', 'Reconciles run, by result.');
  readonly reconcileErrors = new Counter(
    'keyroll_operator_reconcile_errors_total',
    'Reconciles that failed and were requeued with backoff.',
  );
  readonly reconcileDuration = new Histogram(
    'keyroll_operator_reconcile_duration_seconds',
    'Duration of one reconcile.',
    [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  );
  readonly targets = new Gauge(
    'keyroll_operator_targets',
    'Targets of each GatewayKey by state after the last pass.',
  );
  readonly rotationLatency = new Histogram(
    'keyroll_operator_rotation_latency_seconds',
    'From the operator first seeing a new key version to every target proving it.',
    [1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600],
  );
  readonly rotations = new Counter(
    'keyroll_operator_rotations_total',
    'Key versions delivered to every target.',
  );
  readonly statusWrites = new Counter(
    'keyroll_operator_status_writes_total',
    'GatewayKey status writes, by result.',
  );
  readonly informerRestarts = new Counter(
    'keyroll_operator_informer_restarts_total',
    'Informer relists and restarts, by resource and reason.',
  );
  readonly leader = new Gauge('keyroll_operator_leader', '1 while this replica holds the leader Lease.');
  readonly queueDepth = new Gauge('keyroll_operator_queue_depth', 'Keys waiting in the work queue.');

  render(): string {
    const all = [
      this.reconciles,
      this.reconcileErrors,
      this.reconcileDuration,
      this.targets,
      this.rotationLatency,
      this.rotations,
      this.statusWrites,
      this.informerRestarts,
      this.leader,
      this.queueDepth,
    ];
    return `${all.flatMap((m) => m.render()).join('\n')}\n`;
  }
}
