// The controller's own /metrics: Prometheus text 0.0.4 written by hand. A strict parser reads every
// scrape; the documented names and types are all there (and in docs/controller.md); rotations,
// proxied answers, held requests and refused keys move the counters; no secret appears.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type MetricsSnapshot, RequestCounter, renderMetrics } from '../../src/controller/metrics.ts';
import { REPO_ROOT } from '../support/sandbox.ts';
import { startTestController, suiteCapture, TOKEN, waitFor } from './helpers.ts';

const KEY_A = 'test-key-A-metrics-aaaaaaaa';
const KEY_B = 'test-key-B-metrics-bbbbbbbb';
const CONTROLLER_TOKEN = 'test-controller-token-metrics-0123456789';

/** Every series the controller documents, with its type (docs/controller.md, "Metrics"). */
const DOCUMENTED: Record<string, 'counter' | 'gauge'> = {
  keyroll_controller_requests_total: 'counter',
  keyroll_controller_proxy_in_flight: 'gauge',
  keyroll_controller_websockets: 'gauge',
  keyroll_controller_hold_queue_depth: 'gauge',
  keyroll_controller_held_requests_total: 'counter',
  keyroll_controller_hold_refused_total: 'counter',
  keyroll_controller_upstream_key_rejected_total: 'counter',
  keyroll_controller_upstream_accepted_total: 'counter',
  keyroll_controller_restarts_total: 'counter',
  keyroll_controller_surge_fallbacks_total: 'counter',
  keyroll_controller_gateway_crashes_total: 'counter',
  keyroll_controller_gateway_up: 'gauge',
  keyroll_controller_last_rotation_timestamp_seconds: 'gauge',
  keyroll_controller_last_restart_timestamp_seconds: 'gauge',
  keyroll_controller_last_restart_duration_seconds: 'gauge',
  process_cpu_user_seconds_total: 'counter',
  process_cpu_system_seconds_total: 'counter',
  process_cpu_seconds_total: 'counter',
  process_start_time_seconds: 'gauge',
  process_resident_memory_bytes: 'gauge',
  process_virtual_memory_bytes: 'gauge',
  process_heap_bytes: 'gauge',
  process_open_fds: 'gauge',
  process_max_fds: 'gauge',
  nodejs_heap_size_total_bytes: 'gauge',
  nodejs_heap_size_used_bytes: 'gauge',
  nodejs_external_memory_bytes: 'gauge',
  nodejs_array_buffers_bytes: 'gauge',
  nodejs_version_info: 'gauge',
};
/** Present only once there was a rotation / a restart. */
const AFTER_ROTATION = [
  'keyroll_controller_last_rotation_timestamp_seconds',
  'keyroll_controller_last_restart_timestamp_seconds',
  'keyroll_controller_last_restart_duration_seconds',
];

interface Scrape {
  types: Map<string, string>;
  /** `name{a="x",b="y"}` (labels sorted) → value. */
  series: Map<string, number>;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/y;

/**
 * A strict reader of the text format 0.0.4: every line is HELP, TYPE or a sample; a family's HELP
 * and TYPE come once, before its samples, and its samples are contiguous; label values use only
 * the three escapes; a series appears once; values are Go floats. Anything else throws.
 */
function parseStrict(text: string): Scrape {
  if (!text.endsWith('\n')) throw new Error('the scrape must end with a newline');
  const types = new Map<string, string>();
  const helped = new Set<string>();
  const series = new Map<string, number>();
  const closed = new Set<string>();
  let current: string | null = null;
  for (const line of text.slice(0, -1).split('\n')) {
    const help = new RegExp(`^# HELP (${NAME}) (.*)$`).exec(line);
    const type = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`).exec(line);
    if (help || type) {
      const name = (help ?? type)![1]!;
      if (closed.has(name) || (current !== null && current !== name)) {
        if (current !== null) closed.add(current);
      }
      if (closed.has(name)) throw new Error(`family ${name} split: ${line}`);
      if (help) {
        if (helped.has(name) || types.has(name)) throw new Error(`HELP after TYPE or twice: ${line}`);
        if (/\\[^\\n]/.test(help[2]!)) throw new Error(`bad HELP escape: ${line}`);
        helped.add(name);
      } else {
        if (types.has(name)) throw new Error(`TYPE twice: ${line}`);
        types.set(name, type![2]!);
      }
      current = name;
      continue;
    }
    if (line.startsWith('#')) throw new Error(`unknown comment: ${line}`);
    const m = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)$`).exec(line);
    if (!m) throw new Error(`not a sample: ${line}`);
    const name = m[1]!;
    if (name !== current || !types.has(name)) throw new Error(`sample outside its family: ${line}`);
    const labels: [string, string][] = [];
    if (m[2] !== undefined && m[2] !== '') {
      LABEL.lastIndex = 0;
      let at = 0;
      while (at < m[2].length) {
        LABEL.lastIndex = at;
        const l = LABEL.exec(m[2]);
        if (!l) throw new Error(`bad labels: ${line}`);
        labels.push([l[1]!, l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))]);
        at = LABEL.lastIndex;
      }
      if (new Set(labels.map(([k]) => k)).size !== labels.length) throw new Error(`label twice: ${line}`);
    }
    const raw = m[3]!;
    if (!/^([+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)|NaN|[+-]Inf)$/.test(raw))
      throw new Error(`bad value: ${line}`);
    const value =
      raw === 'NaN' ? Number.NaN : raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
    const key = seriesKey(name, Object.fromEntries(labels));
    if (series.has(key)) throw new Error(`series twice: ${line}`);
    series.set(key, value);
  }
  return { types, series };
}

function seriesKey(name: string, labels: Record<string, string> = {}): string {
  const keys = Object.keys(labels).sort();
  return keys.length === 0
    ? name
    : `${name}{${keys.map((k) => `${k}=${JSON.stringify(labels[k])}`).join(',')}}`;
}

function value(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  return s.series.get(seriesKey(name, labels)) ?? 0;
}

describe('renderMetrics', () => {
  const base: MetricsSnapshot = {
    requests: [],
    inFlight: 0,
    websockets: 0,
    holdQueueDepth: 0,
    heldTotal: 0,
    holdRefusedTotal: 0,
    keyRejectedTotal: 0,
    acceptedTotal: 0,
    restarts: [],
    surgeFallbacksTotal: 0,
    gatewayCrashesTotal: 0,
    gatewayUp: false,
    lastRotationMs: null,
    lastRestartAtMs: null,
    lastRestartDurationMs: null,
  };

  it('writes strict text: one family per name, escaped labels, every documented name', async () => {
    const counter = new RequestCounter();
    counter.count('proxy', 200);
    counter.count('proxy', 200);
    counter.count('proxy', 'none');
    counter.count('odd "route"\\\n', 503);
    const text = await renderMetrics({
      ...base,
      requests: counter.entries(),
      restarts: [
        ['hold', 'ok', 2],
        ['surge', 'failed', 1],
      ],
      gatewayUp: true,
      lastRotationMs: 1_700_000_000_123,
      lastRestartAtMs: 1_700_000_000_000,
      lastRestartDurationMs: 1234,
    });
    const s = parseStrict(text);
    for (const [name, type] of Object.entries(DOCUMENTED)) expect(s.types.get(name), name).toBe(type);
    expect(value(s, 'keyroll_controller_requests_total', { route: 'proxy', code: '200' })).toBe(2);
    expect(value(s, 'keyroll_controller_requests_total', { route: 'proxy', code: 'none' })).toBe(1);
    expect(value(s, 'keyroll_controller_requests_total', { route: 'odd "route"\\\n', code: '503' })).toBe(1);
    expect(value(s, 'keyroll_controller_restarts_total', { strategy: 'hold', outcome: 'ok' })).toBe(2);
    expect(value(s, 'keyroll_controller_restarts_total', { strategy: 'surge', outcome: 'failed' })).toBe(1);
    expect(value(s, 'keyroll_controller_gateway_up')).toBe(1);
    expect(value(s, 'keyroll_controller_last_rotation_timestamp_seconds')).toBe(1_700_000_000.123);
    expect(value(s, 'keyroll_controller_last_restart_duration_seconds')).toBe(1.234);
    const rss = value(s, 'process_resident_memory_bytes');
    expect(rss).toBeGreaterThan(10e6);
    expect(value(s, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(1e6);
    expect(value(s, 'process_cpu_seconds_total')).toBeGreaterThan(0);
  });

  it('leaves out the rotation gauges until there was one', async () => {
    const s = parseStrict(await renderMetrics(base));
    for (const name of AFTER_ROTATION) expect(s.types.has(name), name).toBe(false);
    expect(value(s, 'keyroll_controller_gateway_up')).toBe(0);
  });

  it('the strict parser refuses what Prometheus would refuse', () => {
    const ok = '# HELP a_total x\n# TYPE a_total counter\na_total 1\n';
    expect(() => parseStrict(ok)).not.toThrow();
    for (const bad of [
      'a_total 1\n', // no TYPE
      '# TYPE a counter\na{b="x} 1\n', // unterminated label
      '# TYPE a gauge\na 1\na 2\n', // series twice
      '# TYPE a gauge\na one\n', // value
      '# TYPE a gauge\na{b="\\t"} 1\n', // escape
      '# TYPE a gauge\n# TYPE b gauge\na 1\n', // sample outside its family
      '# TYPE a gauge\na 1', // no final newline
    ])
      expect(() => parseStrict(bad), bad).toThrow();
  });

  it('every documented name is in docs/controller.md', () => {
    const doc = readFileSync(join(REPO_ROOT, 'docs', 'controller.md'), 'utf8');
    for (const name of Object.keys(DOCUMENTED)) expect(doc.includes(`\`${name}\``), name).toBe(true);
  });
});

const { captured, cleanups } = suiteCapture([TOKEN, CONTROLLER_TOKEN, KEY_A, KEY_B]);

async function setup(strategy: 'hold' | 'surge', readyDelayMs = 300) {
  const t = await startTestController({
    prefix: 'keyroll-metrics-',
    env: {
      OPENCLAW_GATEWAY_TOKEN: TOKEN,
      KEYROLL_CONTROLLER_TOKEN: CONTROLLER_TOKEN,
      KILOCODE_API_KEY: KEY_A,
      STANDIN_READY_DELAY_MS: String(readyDelayMs),
    },
    flags: ['--admin-port', '0', '--restart-strategy', strategy],
    surge: true,
    upstreamKeys: [KEY_A, KEY_B],
    expectGatewayGone: true,
    captured,
  });
  cleanups.push(() => t.stop());
  const { ctl } = t;
  const upstream = t.upstream!;
  const pub = `http://127.0.0.1:${ctl.port}`;
  const adm = `http://127.0.0.1:${ctl.adminPort}`;
  const get = async (url: string, token: string | null = CONTROLLER_TOKEN) => {
    const res = await fetch(url, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    captured.push(text);
    return { status: res.status, type: res.headers.get('content-type'), text };
  };
  const scrape = async (path = '/metrics') => {
    const r = await get(adm + path);
    expect(r.status).toBe(200);
    expect(r.type).toBe('text/plain; version=0.0.4; charset=utf-8');
    return parseStrict(r.text);
  };
  const chat = () =>
    fetch(`${pub}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'hi' }] }),
      signal: AbortSignal.timeout(15_000),
    }).then(async (r) => ({ status: r.status, text: await r.text() }));
  const patch = async (key: string) => {
    const res = await fetch(`${adm}/_kilo/env/patch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${CONTROLLER_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ KILOCODE_API_KEY: key }),
    });
    captured.push(await res.text());
    expect(res.status).toBe(200);
  };
  const serving = () =>
    waitFor(
      () => ctl.supervisor.getState() === 'running' && ctl.frontDoor.stats().state === 'routing',
      60_000,
      'gateway serving',
    );
  return { ctl, upstream, pub, adm, get, scrape, chat, patch, serving };
}

describe('GET /metrics on the admin port (stand-in gateway)', () => {
  it('bearer auth like /_kilo/*; /_kilo/metrics too; on the public port /metrics is the gateway’s', async () => {
    const { ctl, pub, adm, get } = await setup('hold');
    expect((await get(`${adm}/metrics`, null)).status).toBe(401);
    expect((await get(`${adm}/metrics`, 'wrong-token-0000000000000000')).status).toBe(401);
    // Available while the controller is still starting (the gateway is not up yet: worth scraping).
    const early = await get(`${adm}/metrics`);
    expect(early.status).toBe(200);
    await ctl.bootstrapped;
    const s = parseStrict((await get(`${adm}/_kilo/metrics`)).text);
    expect(s.types.get('keyroll_controller_requests_total')).toBe('counter');
    // The public port proxies /metrics to the gateway (the stand-in has no such route) and never
    // serves the controller's own; /_kilo/* is not served there at all.
    const proxied = await get(`${pub}/metrics`);
    expect(proxied.text).not.toContain('keyroll_controller_');
    expect((await get(`${pub}/_kilo/metrics`)).status).toBe(404);
  }, 120_000);

  for (const strategy of ['hold', 'surge'] as const) {
    it(`${strategy}: proxied answers, a rotation, a refused key and held requests move the counters`, async () => {
      const { ctl, upstream, scrape, chat, patch, serving } = await setup(strategy);
      await ctl.bootstrapped;
      await serving();
      const s0 = await scrape();
      for (const [name, type] of Object.entries(DOCUMENTED)) {
        if (AFTER_ROTATION.includes(name)) continue;
        expect(s0.types.get(name), name).toBe(type);
      }
      expect(value(s0, 'keyroll_controller_gateway_up')).toBe(1);
      expect(value(s0, 'keyroll_controller_restarts_total', { strategy, outcome: 'ok' })).toBe(0);

      for (let i = 0; i < 3; i++) expect((await chat()).status).toBe(200);
      upstream.setKeys([KEY_B]);
      expect((await chat()).status).toBe(401); // the provider refuses key A
      const s1 = await scrape();
      const proxied = (s: Scrape, code: string) =>
        value(s, 'keyroll_controller_requests_total', { route: 'proxy', code });
      expect(proxied(s1, '200') - proxied(s0, '200')).toBe(3);
      expect(proxied(s1, '401') - proxied(s0, '401')).toBe(1);
      expect(value(s1, 'keyroll_controller_upstream_accepted_total')).toBe(
        value(s0, 'keyroll_controller_upstream_accepted_total') + 3,
      );
      expect(value(s1, 'keyroll_controller_upstream_key_rejected_total')).toBe(
        value(s0, 'keyroll_controller_upstream_key_rejected_total') + 1,
      );
      // The scrapes count themselves on the admin side.
      expect(
        value(s1, 'keyroll_controller_requests_total', { route: '/metrics', code: '200' }),
      ).toBeGreaterThan(0);

      const oldPid = ctl.supervisor.getStats().pid;
      const before = Date.now();
      await patch(KEY_B);
      await waitFor(
        () =>
          ctl.supervisor.getStats().pid !== oldPid &&
          ctl.supervisor.getStats().lastRestart?.durationMs != null,
        60_000,
        'the new gateway taking requests',
      );
      await serving();
      expect((await chat()).status).toBe(200);
      const s2 = await scrape();
      expect(value(s2, 'keyroll_controller_restarts_total', { strategy, outcome: 'ok' })).toBe(1);
      expect(value(s2, 'keyroll_controller_surge_fallbacks_total')).toBe(0);
      expect(value(s2, 'keyroll_controller_gateway_crashes_total')).toBe(0);
      expect(value(s2, 'keyroll_controller_gateway_up')).toBe(1);
      const rotatedAt = value(s2, 'keyroll_controller_last_rotation_timestamp_seconds') * 1000;
      expect(rotatedAt).toBeGreaterThanOrEqual(before - 1);
      expect(rotatedAt).toBeLessThanOrEqual(Date.now());
      const duration = value(s2, 'keyroll_controller_last_restart_duration_seconds');
      expect(duration).toBeGreaterThan(0.2); // at least the stand-in's 300 ms to ready
      expect(duration).toBeLessThan(60);
      expect(proxied(s2, '200') - proxied(s1, '200')).toBe(1);
      expect(value(s2, 'keyroll_controller_hold_queue_depth')).toBe(0);
      expect(value(s2, 'keyroll_controller_proxy_in_flight')).toBe(0);
      expect(value(s2, 'process_resident_memory_bytes')).toBeGreaterThan(10e6);
      if (strategy === 'hold') {
        // Requests that arrive during a hold wait, and are counted as held.
        const held = value(s2, 'keyroll_controller_held_requests_total');
        const pid = ctl.supervisor.getStats().pid;
        // Both keys from here on: the held chat goes upstream whenever the next gateway is ready.
        upstream.setKeys([KEY_A, KEY_B]);
        await patch(KEY_A);
        await waitFor(() => ctl.frontDoor.stats().state === 'holding', 30_000, 'a hold');
        const waiting = chat();
        await waitFor(() => ctl.frontDoor.stats().held === 1, 30_000, 'a held request');
        const during = await scrape();
        expect(value(during, 'keyroll_controller_hold_queue_depth')).toBe(1);
        expect((await waiting).status).toBe(200);
        await waitFor(() => ctl.supervisor.getStats().pid !== pid, 60_000, 'the next gateway');
        const s3 = await scrape();
        expect(value(s3, 'keyroll_controller_held_requests_total')).toBe(held + 1);
        expect(value(s3, 'keyroll_controller_hold_queue_depth')).toBe(0);
        expect(value(s3, 'keyroll_controller_restarts_total', { strategy, outcome: 'ok' })).toBe(2);
      }
    }, 180_000);
  }
});
