// Owns what the operator's integration tests share: a kube test server seeded with Secrets, Pods and
// GatewayKeys pointing at real controllers, in-process operators with captured logs, and waits.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { parseAllDocuments } from 'yaml';
import { type ManualClock, systemClock } from '../../src/clock.ts';
import type { Logger } from '../../src/log.ts';
import { createLogger, SecretRegistry } from '../../src/log.ts';
import { parseOperatorConfig } from '../../src/operator/config.ts';
import { kubeAdapter, loadKubeConfig } from '../../src/operator/kube.ts';
import { type RunningOperator, startOperator } from '../../src/operator/operator.ts';
import {
  type FleetMember,
  readState,
  startReadyMember,
  startStandInMember,
  stopMember,
  waitGatewayReady,
} from '../reconcile/support/fleet.ts';
import { type RecordingProxy, startRecordingProxy } from '../reconcile/support/recording-proxy.ts';
import { type FakeUpstream, startFakeUpstream } from '../support/fake-upstream.ts';
import type { KubeApiServer } from '../support/kube/index.ts';
import { killAllTracked, spawnTracked } from '../support/processes.ts';
import { node24, REPO_ROOT } from '../support/sandbox.ts';
import { bundledKeyroll } from '../support/shared-bundle.ts';

export const NS = 'default';
export const TOKEN = 'test-token-operator-0123456789abcdef';
export const KEY_A = 'test-key-A-operator-0000000000000001';
export const KEY_B = 'test-key-B-operator-0000000000000002';
export const KEY_C = 'test-key-C-operator-0000000000000003';

export function b64(s: string): string {
  return Buffer.from(s, 'utf8').toString('base64');
}

export function putSecret(
  server: KubeApiServer,
  name: string,
  data: Record<string, string>,
  annotations: Record<string, string> = {},
  labelled = true,
): void {
  server.hooks.upsert({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name,
      namespace: NS,
      labels: labelled ? { 'keyroll.dev/key-source': 'true' } : {},
      annotations,
    },
    type: 'Opaque',
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, b64(v)])),
  });
}

/** A Running, Ready pod at 127.0.0.1 whose controller listens on `port` (annotation). */
export function putPod(
  server: KubeApiServer,
  name: string,
  labels: Record<string, string>,
  port: number,
  ready = true,
): void {
  server.hooks.upsert({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: NS, labels, annotations: { 'keyroll.dev/port': String(port) } },
    spec: { containers: [{ name: 'gateway', image: 'keyroll/gateway' }] },
    status: {
      phase: 'Running',
      podIP: '127.0.0.1',
      conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
    },
  });
}

/** The token Secret (`gateway-token`: TOKEN) and the key Secret (`kilocode-key`: `key` at `version`). */
export function putKeySecrets(server: KubeApiServer, key: string, version: string): void {
  putSecret(server, 'gateway-token', { OPENCLAW_GATEWAY_TOKEN: TOKEN });
  putSecret(server, 'kilocode-key', { KILOCODE_API_KEY: key }, { 'keyroll.dev/version': version });
}

export interface StandInPods {
  upstream: FakeUpstream;
  members: FleetMember[];
  /** Stops every controller (and what they started) and the upstream. */
  close(): Promise<void>;
}

/**
 * `n` real controllers (`<prefix>-<i>`) with stand-in gateways running `key` against a fake
 * upstream that accepts `upstreamKeys`, each gateway ready, as Running, Ready pods `gw-<i>` of `app`.
 */
export async function startStandInPods(
  server: KubeApiServer,
  o: { prefix: string; app: string; n: number; key: string; upstreamKeys: string[]; readyTimeoutMs?: number },
): Promise<StandInPods> {
  const upstream = await startFakeUpstream({ keys: o.upstreamKeys });
  const members = await Promise.all(
    Array.from({ length: o.n }, (_, i) =>
      startStandInMember({
        name: `${o.prefix}-${i}`,
        token: TOKEN,
        key: o.key,
        upstreamBaseUrl: upstream.baseUrl,
      }),
    ),
  );
  await Promise.all(members.map((m) => waitGatewayReady(m, o.readyTimeoutMs ?? 30_000)));
  members.forEach((m, i) => {
    putPod(server, `gw-${i}`, { app: o.app }, Number(new URL(m.url).port));
  });
  return {
    upstream,
    members,
    async close() {
      await Promise.all(members.map((m) => stopMember(m).catch(() => {})));
      await killAllTracked();
      await upstream.close();
    },
  };
}

export function gatewayKeySpec(opts: { secret?: string; key?: string; app: string; tokenSecret?: string }) {
  return {
    source: { secretRef: { name: opts.secret ?? 'kilocode-key', key: opts.key ?? 'KILOCODE_API_KEY' } },
    envVar: 'KILOCODE_API_KEY',
    provider: 'kilocode',
    delivery: 'restart',
    targets: { selector: { matchLabels: { app: opts.app } }, port: 1 },
    controllerTokenSecretRef: { name: opts.tokenSecret ?? 'gateway-token', key: 'OPENCLAW_GATEWAY_TOKEN' },
    rollout: { maxUnavailable: 2, paused: false, failureBudget: 1 },
  };
}

/** POST through the real API path, so the CRD schema (validation, defaults) applies. */
export async function kubeRequest(
  server: KubeApiServer,
  method: string,
  path: string,
  body?: unknown,
  contentType = 'application/json',
): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: {
      authorization: 'Bearer fake-token',
      'content-type': contentType,
      accept: 'application/json',
      'user-agent': 'keyroll-test',
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(5_000),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

export async function createGatewayKey(server: KubeApiServer, name: string, spec: unknown): Promise<void> {
  const r = await kubeRequest(server, 'POST', `/apis/keyroll.dev/v1alpha1/namespaces/${NS}/gatewaykeys`, {
    apiVersion: 'keyroll.dev/v1alpha1',
    kind: 'GatewayKey',
    metadata: { name, namespace: NS },
    spec,
  });
  if (r.status !== 201)
    throw new Error(`create GatewayKey ${name}: HTTP ${r.status} ${JSON.stringify(r.json)}`);
}

export interface StoredStatus {
  observedGeneration?: number;
  desiredVersion?: string;
  lastRotationTime?: string;
  targets?: { total: number; converged: number; progressing: number; failed: number };
  targetStatuses?: Array<{ name: string; converged: boolean; message?: string; pid?: number }>;
  conditions?: Array<{
    type: string;
    status: string;
    reason: string;
    message: string;
    lastTransitionTime: string;
  }>;
}

export function gkStatus(server: KubeApiServer, name: string): StoredStatus {
  const o =
    server.hooks.get('gatewaykeys.keyroll.dev', NS, name) ?? server.hooks.get('gatewaykeys', NS, name);
  return ((o as { status?: StoredStatus } | undefined)?.status ?? {}) as StoredStatus;
}

export function condition(s: StoredStatus, type: string) {
  return s.conditions?.find((c) => c.type === type);
}

export async function waitFor<T>(
  what: string,
  fn: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs = 30_000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`,
      );
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Drives code that sleeps on a manual clock between real requests to the test server: whenever
 * `parked` timers are pending (every actor the test runs has finished its I/O and sleeps), moves
 * the clock by `stepMs`, until `done()` holds; returns how far the clock moved. Waiting for the
 * I/O is a wait on state (polled), never a sleep that stands in for the code's time.
 */
export async function advanceUntil(
  clock: ManualClock,
  done: () => unknown,
  o: { stepMs: number; parked?: number; maxMs?: number; timeoutMs?: number },
): Promise<number> {
  const start = clock.now();
  const parked = o.parked ?? 1;
  const maxMs = o.maxMs ?? 60_000;
  for (;;) {
    await waitFor(
      `the condition, or ${parked} pending timer(s) at +${clock.now() - start} ms of the manual clock`,
      () => done() || clock.pending >= parked,
      o.timeoutMs ?? 10_000,
      5,
    );
    if (done()) return clock.now() - start;
    if (clock.now() - start >= maxMs) throw new Error(`not done after ${maxMs} ms of the manual clock`);
    await clock.advance(o.stepMs);
  }
}

/** A promise with its outcome readable synchronously, for `advanceUntil(clock, () => p.settled)`. */
export function track<T>(promise: Promise<T>): { settled: boolean; readonly promise: Promise<T> } {
  const t = { settled: false, promise };
  promise.then(
    () => {
      t.settled = true;
    },
    () => {
      t.settled = true;
    },
  );
  return t;
}

export interface TestOperator {
  op: RunningOperator;
  lines: string[];
  identity: string;
  userAgent: string;
  stop(): Promise<void>;
}

/** An operator in this process, against the test server, with fast timings and captured JSON logs. */
export async function startTestOperator(
  server: KubeApiServer,
  identity: string,
  overrides: Record<string, string> = {},
  lines: string[] = [],
): Promise<TestOperator> {
  const secretValues = new SecretRegistry();
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(l);
      cb();
    },
  });
  const log: Logger = createLogger({ secrets: secretValues, level: 'debug', destination: sink });
  const config = parseOperatorConfig(
    {
      namespace: NS,
      kubeconfig: server.kubeconfigPath,
      identity,
      metricsPort: '0',
      resync: '30s',
      leaseDuration: '3s',
      renewDeadline: '2s',
      retryPeriod: '250ms',
      requestTimeout: '5s',
      targetDeadline: '30s',
      ...overrides,
    },
    {},
  );
  const userAgent = `keyroll-operator-test/${identity}`;
  const kube = kubeAdapter(loadKubeConfig(server.kubeconfigPath), {
    requestTimeoutMs: config.requestTimeout,
    userAgent,
  });
  const op = await startOperator({
    kube,
    config: { ...config, namespace: overrides.namespace ?? NS },
    log,
    clock: systemClock,
    secretValues,
    pass: { pollIntervalMs: 100, retry: { retries: 2, minTimeoutMs: 100, maxTimeoutMs: 500 } },
  });
  return { op, lines, identity, userAgent, stop: () => op.stop() };
}

/**
 * Flags of an operator run as its own process in tests: the test server, metrics on a port of its
 * own choosing (read back from its start-up line), a fast Lease, no periodic resync.
 */
export function processOperatorFlags(kubeconfig: string, namespace: string, identity: string): string[] {
  return [
    '--kubeconfig',
    kubeconfig,
    '--namespace',
    namespace,
    '--identity',
    identity,
    '--metrics-port',
    '0',
    '--metrics-bind',
    '127.0.0.1',
    '--lease-duration',
    '3s',
    '--renew-deadline',
    '2s',
    '--retry-period',
    '250ms',
    '--resync',
    '1h',
  ];
}

/** What the Role `name` in manifests/base/rbac.yaml allows, as `group|resource|verb`. */
export function roleAllows(name: string): Set<string> {
  const docs = parseAllDocuments(readFileSync(join(REPO_ROOT, 'manifests/base/rbac.yaml'), 'utf8')).map((d) =>
    d.toJSON(),
  );
  const role = docs.find((d) => d?.kind === 'Role' && d?.metadata?.name === name) as {
    rules: Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }>;
  };
  const allowed = new Set<string>();
  for (const r of role.rules)
    for (const g of r.apiGroups)
      for (const res of r.resources) for (const v of r.verbs) allowed.add(`${g}|${res}|${v}`);
  return allowed;
}

/** What the test server saw the clients `from` picks (by User-Agent) send, as `group|resource[/subresource]|verb`. */
export function requestsSent(server: KubeApiServer, from: (userAgent: string) => boolean): Set<string> {
  const sent = new Set<string>();
  for (const e of server.hooks.requestLog()) {
    if (!from(e.userAgent) || !e.resource) continue;
    sent.add(`${e.group}|${e.subresource ? `${e.resource}/${e.subresource}` : e.resource}|${e.verb}`);
  }
  return sent;
}

export async function metricsText(op: RunningOperator): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${op.port}/metrics`, { signal: AbortSignal.timeout(2_000) });
  return res.text();
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/gy;

/**
 * A small parser of the Prometheus text format (0.0.4): HELP/TYPE comments, samples with escaped
 * label values. Throws on a line that is neither, or a sample of a family with no TYPE line.
 */
export function parsePrometheus(text: string): { types: Map<string, string>; samples: Sample[] } {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const t = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (t) {
      types.set(t[1]!, t[2]!);
      continue;
    }
    if (/^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*$/.test(line)) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      LABEL.lastIndex = 0;
      let consumed = 0;
      for (let l = LABEL.exec(m[2]); l; l = LABEL.exec(m[2])) {
        labels[l[1]!] = l[2]!.replace(/\\n/g, '\n').replace(/\\(.)/g, '$1');
        consumed = LABEL.lastIndex;
      }
      if (consumed !== m[2].length) throw new Error(`bad labels: ${line}`);
    }
    // As Go's ParseFloat, which Prometheus uses: NaN and Inf in any case.
    const raw = m[3]!.toLowerCase();
    const value =
      raw === 'nan'
        ? Number.NaN
        : /^[+-]?inf$/.test(raw)
          ? raw.startsWith('-')
            ? -Infinity
            : Infinity
          : Number(raw);
    if (Number.isNaN(value) && raw !== 'nan') throw new Error(`bad value: ${line}`);
    const family = [...types.keys()].find(
      (f) => m[1] === f || (/_(bucket|sum|count|total|created)$/.test(m[1]!) && m[1]!.startsWith(`${f}_`)),
    );
    if (!family) throw new Error(`sample without a TYPE: ${line}`);
    samples.push({ name: m[1]!, labels, value });
  }
  return { types, samples };
}

/**
 * The sum of the samples of `series`: `name` (no labels), `name{a="x",b="y"}` (exactly these
 * labels, in any order) or `name{` (every series of the name).
 */
export function metricValue(text: string, series: string): number {
  const { samples } = parsePrometheus(text);
  const brace = series.indexOf('{');
  const name = brace === -1 ? series : series.slice(0, brace);
  const any = series.endsWith('{');
  const want =
    brace === -1 || any ? {} : parsePrometheus(`# TYPE ${name} untyped\n${series} 0`).samples[0]!.labels;
  let sum = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (any || canonicalLabels(s.labels) === canonicalLabels(want)) sum += s.value;
  }
  return sum;
}

function canonicalLabels(l: Record<string, string>): string {
  return JSON.stringify(Object.entries(l).sort(([a], [b]) => a.localeCompare(b)));
}

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the real `keyroll` CLI once, bounded, as the operator image runs it (the run's shared
 * bundle); `KUBECONFIG` is cleared so only explicit flags count.
 */
export async function runKeyroll(args: string[], name: string, timeoutMs: number): Promise<CliRun> {
  const p = spawnTracked(node24(), [...(await bundledKeyroll()), ...args], {
    name,
    env: { ...process.env, KEYROLL_LOG_LEVEL: 'debug', KUBECONFIG: '' },
  });
  let timer: NodeJS.Timeout | undefined;
  const exit = await Promise.race([
    p.exited,
    new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (!exit) {
    await p.stop('SIGKILL', 5_000);
    throw new Error(`${name} did not exit within ${timeoutMs / 1000} s:\n${p.lines.slice(-20).join('\n')}`);
  }
  return { code: exit.code, stdout: p.stdoutLines.join('\n'), stderr: p.stderrLines.join('\n') };
}

export interface ProxiedFleet {
  upstream: FakeUpstream;
  members: FleetMember[];
  /** One recording proxy in front of each controller: proves which requests a command sent. */
  proxies: RecordingProxy[];
  pids(): Promise<Array<number | null | undefined>>;
  /** Every non-GET request the controllers received, as `METHOD path`. */
  nonGets(): string[];
  close(): Promise<void>;
}

/**
 * Two real controllers with stand-in gateways running KEY_A, behind recording proxies, as Ready
 * pods of `app`; the token Secret, a key Secret holding `key` at `version`, and a GatewayKey
 * named `rotate` selecting them.
 */
export async function startProxiedFleet(
  server: KubeApiServer,
  o: { prefix: string; app: string; key: string; version: string },
): Promise<ProxiedFleet> {
  const upstream = await startFakeUpstream({ keys: [KEY_A, KEY_B] });
  const members = await Promise.all(
    [0, 1].map((i) =>
      startReadyMember(
        'stand-in',
        { name: `${o.prefix}-${i}`, token: TOKEN, key: KEY_A, upstreamBaseUrl: upstream.baseUrl },
        30_000,
      ),
    ),
  );
  const proxies = await Promise.all(members.map((m) => startRecordingProxy(m.url)));
  putKeySecrets(server, o.key, o.version);
  proxies.forEach((p, i) => {
    putPod(server, `gw-${i}`, { app: o.app }, Number(new URL(p.url).port));
  });
  await createGatewayKey(server, 'rotate', gatewayKeySpec({ app: o.app }));
  return {
    upstream,
    members,
    proxies,
    pids: () => Promise.all(members.map(async (m) => (await readState(m))?.gateway.pid)),
    nonGets: () =>
      proxies.flatMap((p) =>
        p.requests.filter((r) => r.method !== 'GET').map((r) => `${r.method} ${r.path}`),
      ),
    async close() {
      await Promise.all(members.map((m) => stopMember(m).catch(() => {})));
      await killAllTracked();
      await Promise.all(proxies.map((p) => p.close().catch(() => {})));
      await upstream.close();
    },
  };
}
