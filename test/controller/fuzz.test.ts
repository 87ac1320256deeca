// Fuzz, bounded and repeatable from a seed: generated requests (methods, paths, auth, headers,
// bodies with whitespace, control characters and multi-line values; chunked, slow, truncated,
// pipelined and malformed ones) against the real controller binary with a stand-in gateway that
// records the key of every spawn. Asserted: the controller never dies and never answers 500 to a
// well-formed request; no response and no log line carries a token, a key or a sent value; the
// only keys any gateway was ever spawned with are the initial one and the valid patches; the
// final envHash is the last valid patch's.
//
//   FUZZ_REQUESTS (default 5,000, ≈15 s; the run recorded in BENCHMARKS.md: 10,000) and FUZZ_SEED
//   (default 13).
import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { controllerFlags } from '../support/controller-process.ts';
import { freePort } from '../support/http.ts';
import { killAllTracked, spawnTracked, type Tracked } from '../support/processes.ts';
import { node24, REPO_ROOT } from '../support/sandbox.ts';
import { FIXTURE, readStarts, tempDir, waitFor } from './helpers.ts';

const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 5_000);
const SEED = Number(process.env.FUZZ_SEED ?? 13);
const CONCURRENCY = 24;

const TOKEN = 'test-token-fuzz-controller-0123456789';
const GATEWAY_TOKEN = 'test-token-fuzz-gateway-9876543210';
const INITIAL = 'test-key-fuzz-initial-0000000000';
/** What must never come back or be logged: tokens, any generated key, marked values, injected lines. */
const LEAK = new RegExp([TOKEN, GATEWAY_TOKEN, 'test-key-fuzz-', 'FZV', 'X-Injected'].join('|'));

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Kind =
  | 'valid'
  | 'bad-value'
  | 'bad-body'
  | 'bad-auth'
  | 'bad-version'
  | 'route'
  | 'malformed'
  | 'truncated'
  | 'pipelined'
  | 'large';

interface FuzzRequest {
  kind: Kind;
  /** Raw bytes to write, in pieces (a delay before each piece after the first). */
  pieces: Buffer[];
  delayMs: number;
  /** Half-close after writing (a body shorter than declared). */
  endEarly: boolean;
  /** Values sent that must never come back or be applied (besides the valid key, if any). */
  sent: string[];
  /** The key this request applies when it is a valid patch. */
  validKey: string | null;
}

function generator(seed: number) {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const chance = (p: number) => rnd() < p;
  let seq = 0;

  const CONTROL = Array.from({ length: 32 }, (_, i) => String.fromCharCode(i)).concat(['\x7f', '\u0085']);
  /** A value that is not one printable token; most carry a marker so an echo can be found. */
  const badValue = (m: string): string =>
    pick([
      () => ' ',
      () => '\t',
      () => 'a b',
      () => 'key\nX-Injected: 1',
      () => `${m}-key\nX-Injected: 1`,
      () => `${m}-key\r\nX-Injected: 1`,
      () => `${m} with spaces`,
      () => ` ${m}-leading-space`,
      () => `${m}-trailing-newline\n`,
      () => `${m}-tab\there`,
      () => `${m}-${pick(CONTROL)}-control`,
      () => `${m}-nul\u0000-inside`,
      () => `${m}-ключ-non-ascii`,
      () => `${m}-🔑-emoji`,
      () => `${m}\u2028line-separator`,
      () => `\ufeff${m}-bom`,
      () => 'short',
      () => '',
      () => `${m}-${'x'.repeat(4_100)}`,
      () => `${m}-multi\nline\nvalue\n`,
    ])();
  const goodKey = (n: number) => `test-key-fuzz-${seed}-${String(n).padStart(6, '0')}-ok`;
  const keyName = () =>
    pick([
      'KILOCODE_API_KEY',
      'KILOCODE_API_KEY',
      'PATH',
      'kilocode_api_key',
      'OPENCLAW_GATEWAY_TOKEN',
      'KEYROLL_CONTROLLER_TOKEN',
      'LD_PRELOAD',
      'NODE_OPTIONS',
      '__proto__',
      'constructor',
      '',
      'A'.repeat(200),
      'KILOCODE API KEY',
      'KILOCODE_API_KEY\n',
    ]);
  const auth = (): string | null =>
    pick([
      `Bearer ${TOKEN}`,
      `bearer ${TOKEN}`,
      `Bearer  ${TOKEN} `,
      `Bearer ${GATEWAY_TOKEN}`,
      `Bearer ${TOKEN}x`,
      `Bearer ${TOKEN.slice(0, -1)}`,
      `Basic ${Buffer.from(`u:${TOKEN}`).toString('base64')}`,
      'Bearer',
      '',
      null,
    ]);
  /** What the controller accepts: `Bearer <token>`, scheme in any case, whitespace around. */
  const accepted = (a: string | null) => a !== null && /^\s*bearer\s+(\S+)\s*$/i.exec(a)?.[1] === TOKEN;
  /** The path the controller routes on (WHATWG URL normalisation, as server.ts pathOf does). */
  const routed = (path: string) => {
    try {
      return new URL(path, 'http://controller').pathname;
    } catch {
      return '/';
    }
  };
  const validAuth = () =>
    pick([`Bearer ${TOKEN}`, `bearer ${TOKEN}`, `BEARER ${TOKEN}`, `Bearer  ${TOKEN} `]);

  function head(
    method: string,
    path: string,
    headers: [string, string][],
    body: Buffer | null,
    chunked: boolean,
  ) {
    const lines = [`${method} ${path} HTTP/1.1`, 'host: controller', 'connection: close'];
    for (const [k, v] of headers) lines.push(`${k}: ${v}`);
    if (body !== null) lines.push(chunked ? 'transfer-encoding: chunked' : `content-length: ${body.length}`);
    return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  }

  /** A request as pieces: whole, or chunked and split, with a delay between pieces. */
  function request(
    kind: Kind,
    method: string,
    path: string,
    headers: [string, string][],
    body: Buffer | null,
    sent: string[],
    validKey: string | null = null,
  ): FuzzRequest {
    const chunked = body !== null && chance(0.2);
    const slow = chance(0.04);
    const pieces: Buffer[] = [head(method, path, headers, body, chunked)];
    if (body !== null) {
      if (chunked) {
        const parts = Math.max(1, Math.min(body.length, 1 + Math.floor(rnd() * 5)));
        const size = Math.ceil(body.length / parts);
        for (let at = 0; at < body.length; at += size) {
          const part = body.subarray(at, at + size);
          pieces.push(
            Buffer.concat([Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from('\r\n')]),
          );
        }
        pieces.push(Buffer.from('0\r\n\r\n'));
      } else if (slow && body.length > 1) {
        const cut = 1 + Math.floor(rnd() * (body.length - 1));
        pieces.push(body.subarray(0, cut), body.subarray(cut));
      } else {
        pieces.push(body);
      }
    }
    const merged = slow || chunked ? pieces : [Buffer.concat(pieces)];
    return {
      kind,
      pieces: merged,
      delayMs: slow ? 5 + Math.floor(rnd() * 40) : 0,
      endEarly: false,
      sent,
      validKey,
    };
  }

  const json = (o: unknown) => Buffer.from(JSON.stringify(o));
  const authHeader = (a: string | null): [string, string][] => (a === null ? [] : [['authorization', a]]);

  return function next(): FuzzRequest {
    const n = ++seq;
    const m = `FZV${seed}x${n}`;
    const r = rnd();
    if (r < 0.006) {
      // A valid patch: a new key, a fine label, any accepted spelling of the bearer.
      const key = goodKey(n);
      const headers: [string, string][] = [
        ['authorization', validAuth()],
        ['content-type', 'application/json'],
      ];
      if (chance(0.5)) headers.push(['x-keyroll-key-version', `v${n}`]);
      return request('valid', 'POST', '/_kilo/env/patch', headers, json({ KILOCODE_API_KEY: key }), [], key);
    }
    if (r < 0.4) {
      const value = badValue(m);
      const body = chance(0.15)
        ? // The last duplicate wins in JSON.parse: make sure it is the bad one.
          Buffer.from(
            `{"KILOCODE_API_KEY":${JSON.stringify(goodKey(n))},"KILOCODE_API_KEY":${JSON.stringify(value)}}`,
          )
        : json({ [chance(0.85) ? 'KILOCODE_API_KEY' : keyName()]: value });
      return request(
        'bad-value',
        'POST',
        '/_kilo/env/patch',
        [
          ['authorization', validAuth()],
          ['content-type', 'application/json'],
        ],
        body,
        [value, goodKey(n)],
      );
    }
    if (r < 0.5) {
      const body = pick([
        () => Buffer.from(`{"KILOCODE_API_KEY":"${m}-unterminated`),
        () => Buffer.from(`[${JSON.stringify(goodKey(n))}]`),
        () => Buffer.from('null'),
        () => Buffer.from('{}'),
        () => json({ KILOCODE_API_KEY: { nested: goodKey(n) } }),
        () => json({ KILOCODE_API_KEY: [goodKey(n)] }),
        () => json({ KILOCODE_API_KEY: 12345678901 }),
        () => Buffer.from(`{"__proto__":{"KILOCODE_API_KEY":${JSON.stringify(goodKey(n))}}}`),
        () => json({ [`sk-${m}-in-key-position`]: goodKey(n) }),
        () => json({ KILOCODE_API_KEY: goodKey(n), PATH: '/tmp/evil' }),
        () => Buffer.from(`\ufeff${JSON.stringify({ KILOCODE_API_KEY: goodKey(n) })}`),
        () => Buffer.from(`KILOCODE_API_KEY=${goodKey(n)}`),
        () => Buffer.from([0xff, 0xfe, 0x00, 0x41, 0x0a, 0x0d]),
      ])();
      return request(
        'bad-body',
        'POST',
        '/_kilo/env/patch',
        [
          ['authorization', validAuth()],
          ['content-type', pick(['application/json', 'text/plain', ''])],
        ],
        body,
        [m, goodKey(n)],
      );
    }
    if (r < 0.6) {
      const a = auth();
      const key = goodKey(n);
      // `post` and PUT are other methods: no route, never applied.
      const method = pick(['POST', 'POST', 'post', 'PUT']);
      const applies = accepted(a) && method === 'POST';
      return request(
        applies ? 'valid' : 'bad-auth',
        method,
        '/_kilo/env/patch',
        [...authHeader(a), ['content-type', 'application/json']],
        json({ KILOCODE_API_KEY: key }),
        applies ? [] : [key],
        applies ? key : null,
      );
    }
    if (r < 0.66) {
      const label = pick([`v ${n}`, `v${n}\tx`, `vé${n}`, `v${n}${'x'.repeat(130)}`, ' ', `v${n}\u00a0`]);
      return request(
        'bad-version',
        'POST',
        '/_kilo/env/patch',
        [
          ['authorization', validAuth()],
          ['content-type', 'application/json'],
          ['x-keyroll-key-version', label],
        ],
        json({ KILOCODE_API_KEY: goodKey(n) }),
        [goodKey(n)],
      );
    }
    if (r < 0.84) {
      const path = pick([
        '/_kilo/state',
        '/_kilo/health',
        '/_kilo/gateway/status',
        '/_kilo/gateway/ready',
        '/_kilo/version',
        '/_kilo/nope',
        '/_kilo',
        '/_kilo/../_kilo/env/patch',
        '/_kilo/env/patch/../patch',
        '//_kilo/env/patch',
        '/_kilo/env/patch?x=1',
        '/_kilo/env%2Fpatch',
        '/%5Fkilo/env/patch',
        '/health',
        '/readyz',
        '/v1/chat/completions',
        '/nothing-here',
        `/${'a'.repeat(2_000)}`,
        '*',
        'http://evil.example/_kilo/state',
      ]);
      const method = pick(['GET', 'GET', 'POST', 'HEAD', 'OPTIONS', 'DELETE', 'PATCH', 'TRACE', 'PROPFIND']);
      const body = method === 'GET' || method === 'HEAD' ? null : json({ KILOCODE_API_KEY: goodKey(n) });
      // Stop, start and restart only without the token: a stopped gateway would end the run.
      const a = chance(0.7) && !path.includes('gateway/') ? `Bearer ${TOKEN}` : auth();
      // Dot segments and a query still route to the patch: those are valid patches.
      const applies = method === 'POST' && routed(path) === '/_kilo/env/patch' && accepted(a);
      return request(
        applies ? 'valid' : 'route',
        method,
        path,
        authHeader(a),
        body,
        applies ? [] : [goodKey(n)],
        applies ? goodKey(n) : null,
      );
    }
    if (r < 0.92) {
      // Malformed on the wire: Node's parser answers 400/431 (clientError) and nothing runs.
      const raw = pick([
        () =>
          `POST /_kilo/env/patch HTTP/1.1\r\nauthorization: Bearer ${TOKEN}\r\nx-keyroll-key-version: v1\r\nX-Injected: 1\r\ncontent-length: 5\r\n\r\n{"a":`,
        () =>
          `POST /_kilo/env/patch HTTP/1.1\r\nauthorization: Bearer ${TOKEN}\r\ncontent-length: 10\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n`,
        () =>
          `POST /_kilo/env/patch HTTP/1.1\r\nauthorization: Bearer ${TOKEN}\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n${goodKey(n)}\r\n0\r\n\r\n`,
        () =>
          `GET /_kilo/state HTTP/1.1\r\nauthorization: Bearer ${TOKEN}\r\nx-big: ${'b'.repeat(20_000)}\r\n\r\n`,
        () => `GET /_kilo/state HTTP/1.1\r\nauthor ization: Bearer ${TOKEN}\r\n\r\n`,
        () =>
          `POST /_kilo/env/patch HTTP/1.1\r\nauthorization: Bearer ${TOKEN}\r\ncontent-length: -1\r\n\r\n`,
        () =>
          `POST /_kilo/env/patch HTTP/1.1\r\nauthorization: Bearer ${TOKEN}\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab`,
        () => `GARBAGE\r\n\r\n`,
        () => `GET /_kilo/state HTTP/9.9\r\n\r\n`,
        () => `\x00\x01\x02 / HTTP/1.1\r\n\r\n`,
        () =>
          `POST /_kilo/env/patch HTTP/1.1\r\nauthorization: Bearer ${TOKEN}\nX-Folded:\r\n continued\r\ncontent-length: 2\r\n\r\n{}`,
      ])();
      return {
        kind: 'malformed',
        pieces: [Buffer.from(raw, 'latin1')],
        delayMs: 0,
        endEarly: chance(0.5),
        sent: [goodKey(n)],
        validKey: null,
      };
    }
    if (r < 0.95) {
      // Declares more body than it sends, then half-closes: never applied.
      const body = json({ KILOCODE_API_KEY: goodKey(n) });
      const h = `POST /_kilo/env/patch HTTP/1.1\r\nhost: c\r\nauthorization: Bearer ${TOKEN}\r\ncontent-length: ${body.length + 10}\r\n\r\n`;
      return {
        kind: 'truncated',
        pieces: [Buffer.concat([Buffer.from(h), body])],
        delayMs: 0,
        endEarly: true,
        sent: [goodKey(n)],
        validKey: null,
      };
    }
    if (r < 0.98) {
      // Two requests on one connection: a state read, then a patch with the wrong token.
      const body = JSON.stringify({ KILOCODE_API_KEY: goodKey(n) });
      const raw =
        `GET /_kilo/state HTTP/1.1\r\nhost: c\r\nauthorization: Bearer ${TOKEN}\r\n\r\n` +
        `POST /_kilo/env/patch HTTP/1.1\r\nhost: c\r\nauthorization: Bearer ${GATEWAY_TOKEN}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`;
      return {
        kind: 'pipelined',
        pieces: [Buffer.from(raw)],
        delayMs: 0,
        endEarly: false,
        sent: [goodKey(n)],
        validKey: null,
      };
    }
    // Over the 64 KiB cap, in one piece or chunked: 413, nothing applied.
    const big = json({ KILOCODE_API_KEY: `${goodKey(n)}${'k'.repeat(70_000)}` });
    return request('large', 'POST', '/_kilo/env/patch', [['authorization', `Bearer ${TOKEN}`]], big, [
      goodKey(n),
    ]);
  };
}

interface Outcome {
  req: FuzzRequest;
  /** The first response's status (null: the connection closed without one). */
  status: number | null;
  /** Every response's status (pipelined requests get two). */
  statuses: number[];
  raw: string;
}

function send(port: number, req: FuzzRequest): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const raw = Buffer.concat(chunks).toString('latin1');
      const statuses = [...raw.matchAll(/HTTP\/1\.1 (\d{3}) [A-Z]/g)].map((m) => Number(m[1]));
      resolve({ req, status: statuses[0] ?? null, statuses, raw });
    };
    const timer = setTimeout(finish, 40_000);
    socket.on('data', (d) => chunks.push(d));
    socket.on('error', finish);
    socket.on('close', finish);
    socket.on('connect', async () => {
      try {
        for (const [i, piece] of req.pieces.entries()) {
          if (i > 0 && req.delayMs > 0) await new Promise((r) => setTimeout(r, req.delayMs));
          if (socket.destroyed) return;
          socket.write(piece);
        }
        if (req.endEarly) socket.end();
      } catch {
        finish();
      }
    });
  });
}

const tracked: Tracked[] = [];
afterAll(async () => {
  await killAllTracked();
});

describe('controller fuzz', () => {
  it(`${REQUESTS} generated requests (seed ${SEED}): no crash, nothing echoed, nothing applied but valid patches`, async () => {
    const { dir, cleanup } = tempDir('keyroll-fuzz-');
    const fixLog = join(dir, 'starts.jsonl');
    const [port, gatewayPort] = [await freePort(), await freePort()];
    const controller = spawnTracked(
      node24(),
      [
        join(REPO_ROOT, 'bin', 'keyroll.mjs'),
        'controller',
        ...controllerFlags({
          stateDir: join(dir, 'state'),
          port,
          gatewayPort,
          gatewayCmd: `'${node24()}' '${FIXTURE}'`,
        }),
        '--stop-timeout',
        '2000ms',
      ],
      {
        name: 'controller-fuzz',
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: dir,
          TMPDIR: dir,
          KEYROLL_CONTROLLER_TOKEN: TOKEN,
          OPENCLAW_GATEWAY_TOKEN: GATEWAY_TOKEN,
          KILOCODE_API_KEY: INITIAL,
          FIX_LOG: fixLog,
          KEYROLL_LOG_LEVEL: 'info',
        },
      },
    );
    tracked.push(controller);
    const base = `http://127.0.0.1:${port}`;
    const state = async () => {
      const r = await fetch(`${base}/_kilo/state`, {
        headers: { authorization: `Bearer ${TOKEN}` },
        signal: AbortSignal.timeout(10_000),
      });
      return (await r.json()) as {
        gateway: { state: string; ready: boolean; pid: number };
        key: { envHash: string };
      };
    };
    try {
      await waitFor(
        async () => {
          if (controller.exitInfo()) throw new Error('controller exited');
          return (await state().catch(() => null))?.gateway?.ready;
        },
        30_000,
        'controller and gateway ready',
      );

      const next = generator(SEED);
      const outcomes: Outcome[] = [];
      const started = performance.now();
      let issued = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (issued < REQUESTS) {
            issued++;
            outcomes.push(await send(port, next()));
          }
        }),
      );
      const seconds = (performance.now() - started) / 1000;

      // The controller is alive and answers.
      expect(controller.exitInfo()).toBeNull();
      const byKind = new Map<string, Map<string, number>>();
      for (const o of outcomes) {
        const k = byKind.get(o.req.kind) ?? new Map<string, number>();
        k.set(String(o.status), (k.get(String(o.status)) ?? 0) + 1);
        byKind.set(o.req.kind, k);
      }
      const summary = [...byKind].map(([k, s]) => `${k}: ${[...s].map(([c, n]) => `${c}×${n}`).join(' ')}`);
      console.log(
        `fuzz seed ${SEED}: ${outcomes.length} requests in ${seconds.toFixed(1)} s\n  ${summary.join('\n  ')}`,
      );

      const valid = outcomes.filter((o) => o.req.validKey !== null);
      for (const o of valid) expect(o.status, `valid patch answered ${o.raw.slice(0, 200)}`).toBe(200);
      const validKeys = new Set(valid.map((o) => o.req.validKey!));
      expect(validKeys.size).toBeGreaterThan(0);

      for (const o of outcomes) {
        // A well-formed request never makes the controller fail (truncated bodies may).
        if (o.req.kind !== 'truncated' && o.req.kind !== 'malformed')
          expect(o.status, o.raw.slice(0, 300)).not.toBe(500);
        if (o.req.kind === 'pipelined') expect(o.statuses).toEqual([200, 401]);
        else if (o.req.kind !== 'valid' && o.req.kind !== 'route') expect(o.status).not.toBe(200);
        // Every generated key starts `test-key-fuzz-`, every marked bad value holds `FZV`.
        expect(
          LEAK.exec(o.raw)?.[0],
          `response echoed a secret or a sent value (${o.req.kind})`,
        ).toBeUndefined();
      }

      // What the gateway was spawned with: only the initial key and valid patches.
      await waitFor(async () => (await state()).gateway?.ready, 30_000, 'gateway ready after the run');
      const spawned = readStarts(fixLog).map((s) => s.key);
      expect(spawned[0]).toBe(INITIAL);
      console.log(
        `fuzz seed ${SEED}: ${validKeys.size} valid patches, ${spawned.length} gateway spawns, all with the initial key or a valid patch's`,
      );
      for (const key of spawned)
        expect(
          key === INITIAL || validKeys.has(key!),
          'a gateway was spawned with a key no valid patch sent',
        ).toBe(true);

      // And it still delivers: one more valid patch reaches a new gateway, envHash proves it.
      const last = `test-key-fuzz-${SEED}-final-000000-ok`;
      const res = await fetch(`${base}/_kilo/env/patch`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ KILOCODE_API_KEY: last }),
      });
      expect(res.status).toBe(200);
      const want = fingerprintEnv(TOKEN, { KILOCODE_API_KEY: last });
      await waitFor(
        async () => {
          const s = await state();
          return s.gateway.ready && s.key.envHash === want;
        },
        30_000,
        'the final key in a ready gateway',
      );
      expect(readStarts(fixLog).at(-1)?.key).toBe(last);

      await controller.stop('SIGTERM', 10_000);
      const logs = controller.lines.join('\n');
      expect(logs).toContain('Controller ready');
      expect(LEAK.exec(logs)?.[0], 'a secret or a sent value reached a log line').toBeUndefined();
      expect(existsSync(fixLog) && readFileSync(fixLog, 'utf8').length > 0).toBe(true);
    } finally {
      await controller.stop('SIGKILL').catch(() => {});
      cleanup();
    }
  }, 300_000);
});
