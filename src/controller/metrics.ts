// Owns the controller's own Prometheus metrics (`GET /metrics` on the admin port, `/_kilo/metrics`
// wherever `/_kilo/*` is served): the text format 0.0.4 written by hand, since a metrics library
// would cost the controller more resident memory than everything it reports. Counters are plain
// numbers kept by the parts that see the events (the HTTP handler, the front door, the
// supervisor); this module only names, labels and formats them. No label value ever comes from a
// request: routes are a fixed set and codes are HTTP status numbers, so nothing secret can appear.

/** One series: its labels (in order) and its value. */
type Sample = [labels: Record<string, string>, value: number];

export interface MetricsSnapshot {
  /** Answers by route class and status (`RequestCounter`). */
  requests: Iterable<[route: string, code: string, count: number]>;
  /** Requests and upgrades in flight to a gateway, WebSockets open, requests waiting in a hold. */
  inFlight: number;
  websockets: number;
  holdQueueDepth: number;
  /** Cumulative front-door counts (they survive the per-gateway traffic window). */
  heldTotal: number;
  holdRefusedTotal: number;
  keyRejectedTotal: number;
  acceptedTotal: number;
  /** Requested restarts by the strategy used and their outcome. */
  restarts: Iterable<[strategy: string, outcome: string, count: number]>;
  surgeFallbacksTotal: number;
  /** Unexpected gateway exits. */
  gatewayCrashesTotal: number;
  /** 1 while the gateway runs and answered its readiness probe. */
  gatewayUp: boolean;
  /** The last accepted `/_kilo/env/patch` (ms since the epoch), or null. */
  lastRotationMs: number | null;
  /** The last requested restart: when it began and how long until the new gateway took requests. */
  lastRestartAtMs: number | null;
  lastRestartDurationMs: number | null;
}

/** Counts answers by a fixed route label and the status code; a Map keyed by both. */
export class RequestCounter {
  readonly #counts = new Map<string, [string, string, number]>();

  count(route: string, code: number | string): void {
    const c = String(code);
    const key = `${route}\u0000${c}`;
    const entry = this.#counts.get(key);
    if (entry) entry[2]++;
    else this.#counts.set(key, [route, c, 1]);
  }

  *entries(): IterableIterator<[string, string, number]> {
    for (const [route, code, n] of this.#counts.values()) yield [route, code, n];
  }
}

/** Label values as the text format wants them: backslash, double quote and newline escaped. */
function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

class TextWriter {
  #out = '';

  family(name: string, type: 'counter' | 'gauge', help: string, samples: Sample[]): void {
    this.#out += `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
    for (const [labels, value] of samples) {
      const keys = Object.keys(labels);
      const l =
        keys.length === 0 ? '' : `{${keys.map((k) => `${k}="${escapeLabel(labels[k]!)}"`).join(',')}}`;
      this.#out += `${name}${l} ${formatValue(value)}\n`;
    }
  }

  one(name: string, type: 'counter' | 'gauge', help: string, value: number): void {
    this.family(name, type, help, [[{}, value]]);
  }

  text(): string {
    return this.#out;
  }
}

/** VmRSS, VmSize and VmData in bytes from /proc/self/status (Linux), or null elsewhere. */
async function procStatus(): Promise<{ rss: number; vsize: number; data: number } | null> {
  if (process.platform !== 'linux') return null;
  try {
    const fs = process.getBuiltinModule('node:fs/promises');
    const text = await fs.readFile('/proc/self/status', 'latin1');
    const kb = (field: string) =>
      Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN);
    return { rss: kb('VmRSS') * 1024, vsize: kb('VmSize') * 1024, data: kb('VmData') * 1024 };
  } catch {
    return null;
  }
}

/** Open file descriptors (Linux: /proc/self/fd) and the soft limit, or null. */
async function fds(): Promise<{ open: number; max: number | null } | null> {
  if (process.platform !== 'linux') return null;
  try {
    const fs = process.getBuiltinModule('node:fs/promises');
    const open = (await fs.readdir('/proc/self/fd')).length - 1; // the readdir's own fd
    const limits = await fs.readFile('/proc/self/limits', 'latin1');
    const m = /^Max open files\s+(\d+)/m.exec(limits);
    return { open, max: m ? Number(m[1]) : null };
  } catch {
    return null;
  }
}

const startTimeSeconds = Math.round((Date.now() - performance.now()) / 1000);

/** The whole scrape: the controller's own series, then the process's, in prom-client's names. */
export async function renderMetrics(s: MetricsSnapshot): Promise<string> {
  const w = new TextWriter();
  w.family(
    'keyroll_controller_requests_total',
    'counter',
    'Answers of the controller by route (proxy, websocket, or its own route) and HTTP status code.',
    [...s.requests].map(([route, code, n]) => [{ route, code }, n]),
  );
  w.one(
    'keyroll_controller_proxy_in_flight',
    'gauge',
    'Proxied requests waiting for or receiving a gateway answer.',
    s.inFlight,
  );
  w.one('keyroll_controller_websockets', 'gauge', 'Proxied WebSocket connections open.', s.websockets);
  w.one(
    'keyroll_controller_hold_queue_depth',
    'gauge',
    'Requests and upgrades held now, waiting for the next gateway.',
    s.holdQueueDepth,
  );
  w.one(
    'keyroll_controller_held_requests_total',
    'counter',
    'Requests and upgrades that waited in a hold.',
    s.heldTotal,
  );
  w.one(
    'keyroll_controller_hold_refused_total',
    'counter',
    'Requests and upgrades refused during a hold (queue full, hold timeout, or no gateway became ready).',
    s.holdRefusedTotal,
  );
  w.one(
    'keyroll_controller_upstream_key_rejected_total',
    'counter',
    'Gateway answers that say the provider refused the key (authentication_error).',
    s.keyRejectedTotal,
  );
  w.one(
    'keyroll_controller_upstream_accepted_total',
    'counter',
    '2xx gateway answers to POST requests.',
    s.acceptedTotal,
  );
  w.family(
    'keyroll_controller_restarts_total',
    'counter',
    'Requested gateway restarts (rotations, /_kilo/gateway/restart) by the strategy used and outcome (ok: the new gateway took requests; failed: it did not).',
    [...s.restarts].map(([strategy, outcome, n]) => [{ strategy, outcome }, n]),
  );
  w.one(
    'keyroll_controller_surge_fallbacks_total',
    'counter',
    'Surge restarts that held instead.',
    s.surgeFallbacksTotal,
  );
  w.one(
    'keyroll_controller_gateway_crashes_total',
    'counter',
    'Unexpected gateway exits.',
    s.gatewayCrashesTotal,
  );
  w.one(
    'keyroll_controller_gateway_up',
    'gauge',
    '1 while the gateway runs and answered its readiness probe.',
    s.gatewayUp ? 1 : 0,
  );
  if (s.lastRotationMs !== null)
    w.one(
      'keyroll_controller_last_rotation_timestamp_seconds',
      'gauge',
      'When the last key patch was accepted (Unix time).',
      s.lastRotationMs / 1000,
    );
  if (s.lastRestartAtMs !== null)
    w.one(
      'keyroll_controller_last_restart_timestamp_seconds',
      'gauge',
      'When the last requested restart began (Unix time).',
      s.lastRestartAtMs / 1000,
    );
  if (s.lastRestartDurationMs !== null)
    w.one(
      'keyroll_controller_last_restart_duration_seconds',
      'gauge',
      'From the last requested restart to the new gateway taking requests.',
      s.lastRestartDurationMs / 1000,
    );

  // The process, as prom-client's default metrics name it.
  const cpu = process.cpuUsage();
  w.one('process_cpu_user_seconds_total', 'counter', 'Total user CPU time spent in seconds.', cpu.user / 1e6);
  w.one(
    'process_cpu_system_seconds_total',
    'counter',
    'Total system CPU time spent in seconds.',
    cpu.system / 1e6,
  );
  w.one(
    'process_cpu_seconds_total',
    'counter',
    'Total user and system CPU time spent in seconds.',
    (cpu.user + cpu.system) / 1e6,
  );
  w.one(
    'process_start_time_seconds',
    'gauge',
    'Start time of the process since unix epoch in seconds.',
    startTimeSeconds,
  );
  const st = await procStatus();
  w.one(
    'process_resident_memory_bytes',
    'gauge',
    'Resident memory size in bytes.',
    st?.rss ?? process.memoryUsage.rss(),
  );
  if (st) {
    w.one('process_virtual_memory_bytes', 'gauge', 'Virtual memory size in bytes.', st.vsize);
    w.one('process_heap_bytes', 'gauge', 'Process heap size in bytes.', st.data);
  }
  const f = await fds();
  if (f) {
    w.one('process_open_fds', 'gauge', 'Number of open file descriptors.', f.open);
    if (f.max !== null) w.one('process_max_fds', 'gauge', 'Maximum number of open file descriptors.', f.max);
  }
  const mem = process.memoryUsage();
  w.one('nodejs_heap_size_total_bytes', 'gauge', 'Process heap size from Node.js in bytes.', mem.heapTotal);
  w.one(
    'nodejs_heap_size_used_bytes',
    'gauge',
    'Process heap size used from Node.js in bytes.',
    mem.heapUsed,
  );
  w.one('nodejs_external_memory_bytes', 'gauge', 'Node.js external memory size in bytes.', mem.external);
  w.one(
    'nodejs_array_buffers_bytes',
    'gauge',
    'Memory allocated for ArrayBuffers and SharedArrayBuffers in bytes (part of external).',
    mem.arrayBuffers,
  );
  const [major = '', minor = '', patch = ''] = process.versions.node.split('.');
  w.family('nodejs_version_info', 'gauge', 'Node.js version info.', [
    [{ version: process.version, major, minor, patch }, 1],
  ]);
  return w.text();
}

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
