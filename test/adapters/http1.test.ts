// The small HTTP/1.1 client (src/adapters/http1.ts) against servers that write their answers byte
// by byte: framing (content-length, chunked, close-delimited), interim answers, keep-alive reuse
// and its limits, a stale reused connection, malformed and oversized answers, timeouts, aborts;
// TLS: verification, session reuse and its bounded cache; a pair of requests in one write
// (requestPair, pipelined). Proxies: test/adapters/http1-proxy.test.ts.
// The controller client's behaviour over it (against node:http) is test/reconcile/controller-client.test.ts.
import { createServer, type Server, type Socket } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  assertHeaderValue,
  Http1Client,
  Http1Error,
  MAX_IDLE,
  MAX_TLS_SESSIONS,
  TlsSessions,
  tlsSessions,
} from '../../src/adapters/http1.ts';
import { selfSignedCert, type TestCert, type TlsServer, tlsServer, withTrusted } from './support/tls.ts';

interface Request {
  head: string;
  body: string;
}

interface RawServer {
  port: number;
  requests: Request[];
  /** Connections accepted, and whether each has closed. */
  connections: { socket: Socket; closed: boolean }[];
}

const servers: Server[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) await new Promise<void>((r) => s.close(() => r()));
});

/** A server that reads each request (head and content-length body) and lets `answer` write bytes. */
async function rawServer(answer: (socket: Socket, req: Request, n: number) => void): Promise<RawServer> {
  const requests: Request[] = [];
  const connections: RawServer['connections'] = [];
  const server = createServer((socket) => {
    const c = { socket, closed: false };
    connections.push(c);
    sockets.push(socket);
    socket.on('close', () => {
      c.closed = true;
    });
    socket.on('error', () => undefined);
    let buf = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      buf += chunk;
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end);
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        const req = { head, body: buf.slice(end + 4, end + 4 + length) };
        buf = buf.slice(end + 4 + length);
        requests.push(req);
        answer(socket, req, requests.length);
      }
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return { port, requests, connections };
}

const never = new AbortController().signal;
const opts = { signal: never, timeoutMs: 5_000, maxBytes: 1024 };
const client = (port: number) => new Http1Client({ protocol: 'http:', hostname: '127.0.0.1', port });
const ok = (body: string, extra = '') =>
  `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;
const text = (r: { body: string }) => r.body;

describe('Http1Client', () => {
  it('sends the request head and body as given, with host and content-length', async () => {
    const s = await rawServer((socket) => socket.write(ok('{"ok":true}')));
    const c = client(s.port);
    const r = await c.request('POST', '/x/_kilo/env/patch', 'authorization: Bearer t\r\n', '{"K":"é"}', opts);
    expect(r.status).toBe(200);
    expect(text(r)).toBe('{"ok":true}');
    expect(s.requests[0]!.head.split('\r\n')).toEqual([
      'POST /x/_kilo/env/patch HTTP/1.1',
      `host: 127.0.0.1:${s.port}`,
      'authorization: Bearer t',
      'content-length: 10',
    ]);
    expect(Buffer.from(s.requests[0]!.body, 'latin1').toString('utf8')).toBe('{"K":"é"}');
  });

  it('a GET sent again, with another path or other header lines, carries its own head each time', async () => {
    const s = await rawServer((socket) => socket.write(ok('{}')));
    const c = client(s.port);
    const calls: [string, string][] = [
      ['/a', 'x-one: 1\r\n'],
      ['/a', 'x-one: 1\r\n'],
      ['/b', 'x-one: 1\r\n'],
      ['/b', 'x-one: 2\r\n'],
      ['/b', ''],
      ['/a', 'x-one: 1\r\n'],
    ];
    for (const [path, lines] of calls) await c.request('GET', path, lines, undefined, opts);
    await c.request('POST', '/a', 'x-one: 1\r\n', undefined, opts);
    expect(s.requests.map((r) => r.head)).toEqual([
      ...calls.map(([path, lines]) =>
        `GET ${path} HTTP/1.1\r\nhost: 127.0.0.1:${s.port}\r\n${lines}`.replace(/\r\n$/, ''),
      ),
      `POST /a HTTP/1.1\r\nhost: 127.0.0.1:${s.port}\r\nx-one: 1`,
    ]);
  });

  it('reuses one connection for calls in sequence, and opens another for a call in parallel', async () => {
    const s = await rawServer((socket, _r, n) => socket.write(ok(`{"n":${n}}`)));
    const c = client(s.port);
    for (let i = 0; i < 3; i++) await c.request('GET', '/s', '', undefined, opts);
    expect(s.connections).toHaveLength(1);
    await Promise.all([
      c.request('GET', '/s', '', undefined, opts),
      c.request('GET', '/s', '', undefined, opts),
    ]);
    expect(s.connections).toHaveLength(2);
    expect(s.requests).toHaveLength(5);
  });

  it('decodes a chunked body (extensions and trailers dropped), split across writes', async () => {
    const s = await rawServer((socket) => {
      socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;x=1\r\n{"a"\r\n4\r\n:1');
      setTimeout(() => socket.write('2}\r\n0\r\ntrailer: 1\r\n\r\n'), 20);
    });
    const c = client(s.port);
    expect(text(await c.request('GET', '/s', '', undefined, opts))).toBe('{"a":12}');
    // Framed completely: the connection is kept and reused.
    await c.request('GET', '/s', '', undefined, opts);
    expect(s.connections).toHaveLength(1);
  });

  it('reads a close-delimited body to the end and does not reuse the connection', async () => {
    const s = await rawServer((socket) => {
      socket.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"x":');
      setTimeout(() => socket.end('1}'), 20);
    });
    const c = client(s.port);
    expect(text(await c.request('GET', '/s', '', undefined, opts))).toBe('{"x":1}');
    await c.request('GET', '/s', '', undefined, opts);
    expect(s.connections).toHaveLength(2);
  });

  it('`connection: close` and HTTP/1.0 answers are not reused; an interim 100 is skipped', async () => {
    const s = await rawServer((socket, _r, n) =>
      socket.write(
        n === 1
          ? ok('{}', 'connection: keep-alive, close\r\n')
          : n === 2
            ? 'HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}'
            : `HTTP/1.1 100 Continue\r\n\r\n${ok('{"n":3}')}`,
      ),
    );
    const c = client(s.port);
    await c.request('GET', '/s', '', undefined, opts);
    await c.request('GET', '/s', '', undefined, opts);
    expect(text(await c.request('GET', '/s', '', undefined, opts))).toBe('{"n":3}');
    expect(s.connections).toHaveLength(3);
  });

  it('a GET on a kept connection the server closed as it was reused is sent again on a new one', async () => {
    const s = await rawServer((socket, _req, n) => {
      if (n === 2) return void socket.destroy(); // the server drops the kept connection
      socket.write(ok(`{"n":${n}}`));
    });
    const c = client(s.port);
    await c.request('GET', '/s', '', undefined, opts);
    expect(text(await c.request('GET', '/s', '', undefined, opts))).toBe('{"n":3}');
    expect(s.connections).toHaveLength(2);
  });

  it('a POST on a kept connection the server dropped fails as a network error, not sent twice', async () => {
    const s = await rawServer((socket, _req, n) => {
      if (n > 1) return void socket.destroy();
      socket.write(ok('{}'));
    });
    const c = client(s.port);
    await c.request('GET', '/s', '', undefined, opts);
    const err = (await c.request('POST', '/p', '', '{}', opts).catch((e: unknown) => e)) as Http1Error;
    expect(err).toBeInstanceOf(Http1Error);
    expect(err.kind).toBe('network');
    expect(s.requests.map((r) => r.head.split(' ')[0])).toEqual(['GET', 'POST']);
  });

  it('refuses malformed answers: status line, header lines, content-length, transfer-encoding, chunk framing', async () => {
    const answers = [
      'HTTP/2 200 OK\r\n\r\n',
      'HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}',
      'HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n',
      'HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n',
      'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n',
      'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nno colon here\r\n\r\n',
      'HTTP/1.2 200 OK\r\ncontent-length: 0\r\n\r\n',
      'http/1.1 200 OK\r\ncontent-length: 0\r\n\r\n',
      'HTTP/1.1 20x OK\r\ncontent-length: 0\r\n\r\n',
      'HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n',
      'HTTP/1.1 200 OK\r\n: no name\r\ncontent-length: 0\r\n\r\n',
      'HTTP/1.1 200 OK\r\ncontent-length: 1 2\r\n\r\n{}',
      'HTTP/1.1 200 OK\r\ncontent-length: 0x2\r\n\r\n{}',
      'HTTP/1.1 200 OK\r\ncontent-length:\r\n\r\n',
      'HTTP/1.1 200 OK\r\ncontent-length: 1234567890123456\r\n\r\n',
      // The same length twice is one length (below); the same number written otherwise is not.
      'HTTP/1.1 200 OK\r\ncontent-length: 2\r\nContent-Length: 02\r\n\r\n{}',
    ];
    const s = await rawServer((socket, _r, n) => socket.write(answers[n - 1]!));
    const c = client(s.port);
    for (const answer of answers) {
      const err = (await c.request('GET', '/s', '', undefined, opts).catch((e: unknown) => e)) as Http1Error;
      expect(err, answer).toBeInstanceOf(Http1Error);
      expect(err.kind, answer).toBe('malformed');
    }
    expect(s.connections).toHaveLength(answers.length);
    const same = await rawServer((socket) =>
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nContent-Length:\t2\r\n\r\n{}'),
    );
    expect(text(await client(same.port).request('GET', '/s', '', undefined, opts))).toBe('{}');
  });

  it('refuses a body over maxBytes without keeping it: by content-length, chunked, or until close', async () => {
    const big = 'x'.repeat(2000);
    const answers = [
      ok(big),
      `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7d0\r\n${big}\r\n0\r\n\r\n`,
      `HTTP/1.1 200 OK\r\n\r\n${big}`,
    ];
    const s = await rawServer((socket, _r, n) => socket.write(answers[n - 1]!));
    const c = client(s.port);
    for (const _ of answers) {
      const err = (await c.request('GET', '/s', '', undefined, opts).catch((e: unknown) => e)) as Http1Error;
      expect(err.kind).toBe('too-large');
      expect(err.message).toBe('response larger than 1024 bytes');
    }
  });

  it('times out with one timer for many calls, closing their connections', async () => {
    const s = await rawServer(() => undefined);
    const c = client(s.port);
    const t0 = Date.now();
    const errs = await Promise.all(
      Array.from({ length: 20 }, () =>
        c
          .request('GET', '/s', '', undefined, { ...opts, timeoutMs: 100 })
          .catch((e: unknown) => e as Http1Error),
      ),
    );
    expect(Date.now() - t0).toBeGreaterThanOrEqual(95);
    expect(errs.map((e) => (e as Http1Error).kind)).toEqual(Array(20).fill('timeout'));
    await new Promise((r) => setTimeout(r, 50));
    expect(s.connections.every((x) => x.closed)).toBe(true);
  });

  it('an abort rejects with the signal’s reason and closes the connection; an aborted signal sends nothing', async () => {
    const s = await rawServer(() => undefined);
    const c = client(s.port);
    const ac = new AbortController();
    const pending = c
      .request('GET', '/s', '', undefined, { ...opts, signal: ac.signal })
      .catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 30));
    const reason = new Error('stop');
    ac.abort(reason);
    expect(await pending).toBe(reason);
    await expect(c.request('GET', '/s', '', undefined, { ...opts, signal: ac.signal })).rejects.toBe(reason);
    await new Promise((r) => setTimeout(r, 30));
    expect(s.requests).toHaveLength(1);
    expect(s.connections[0]!.closed).toBe(true);
  });

  it('a refused connection is a network error with its code', async () => {
    const s = await rawServer(() => undefined);
    const port = s.port;
    await new Promise<void>((r) => servers.pop()!.close(() => r()));
    const err = (await client(port)
      .request('GET', '/s', '', undefined, opts)
      .catch((e: unknown) => e)) as Http1Error;
    expect([err.kind, err.code]).toEqual(['network', 'ECONNREFUSED']);
  });

  it('reads a head that comes byte by byte, its header names and values in any case', async () => {
    const answers = [
      'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCONTENT-LENGTH:  7 \r\nKeep-Alive: Timeout=5\r\n\r\n{"n":1}',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n7\r\n{"n":2}\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: Keep-Alive,  CLOSE \r\n\r\n{"n":3}',
    ];
    const s = await rawServer((socket, _r, n) => {
      socket.setNoDelay(true);
      const bytes = Buffer.from(answers[(n - 1) % answers.length]!, 'latin1');
      let i = 0;
      const next = () => {
        if (socket.destroyed) return;
        socket.write(bytes.subarray(i, i + 1));
        if (++i < bytes.length) setTimeout(next, 1);
      };
      next();
    });
    const c = client(s.port);
    expect(text(await c.request('GET', '/s', '', undefined, opts))).toBe('{"n":1}');
    expect(text(await c.request('GET', '/s', '', undefined, opts))).toBe('{"n":2}');
    expect(s.connections).toHaveLength(1); // both framed, kept
    expect(text(await c.request('GET', '/s', '', undefined, opts))).toBe('{"n":3}');
    await c.request('GET', '/s', '', undefined, opts);
    expect(s.connections).toHaveLength(2); // `CLOSE` among the connection options: not reused
  });

  it('past MAX_IDLE idle connections across origins the longest idle is closed; each origin reuses its newest', async () => {
    const s = await rawServer((socket) => socket.write(ok('{}')));
    const a = client(s.port);
    const b = client(s.port);
    await a.request('GET', '/s', '', undefined, opts); // connection 0: the longest idle
    const parallel = () =>
      Promise.all(Array.from({ length: MAX_IDLE }, () => b.request('GET', '/s', '', undefined, opts)));
    await parallel(); // MAX_IDLE more: one too many
    await new Promise((r) => setTimeout(r, 30));
    expect(s.connections).toHaveLength(MAX_IDLE + 1);
    expect(s.connections.map((c) => c.closed).filter(Boolean)).toHaveLength(1);
    expect(s.connections[0]!.closed).toBe(true);
    // b's connections are all idle and reused; a needs a new one.
    await parallel();
    await a.request('GET', '/s', '', undefined, opts);
    expect(s.connections).toHaveLength(MAX_IDLE + 2);
    a.closeIdle();
    b.closeIdle();
    await new Promise((r) => setTimeout(r, 30));
    expect(s.connections.every((c) => c.closed)).toBe(true);
  });

  it('`Keep-Alive: TIMEOUT=1` in capitals is honoured too', async () => {
    const s = await rawServer((socket) => socket.write(ok('{}', 'Keep-Alive: max=5, TIMEOUT=1\r\n')));
    await client(s.port).request('GET', '/s', '', undefined, opts);
    await new Promise((r) => setTimeout(r, 30));
    expect(s.connections[0]!.closed).toBe(true);
  });

  it('decodes UTF-8 split across reads, and a body many times the size of one read', async () => {
    const big = `{"a":"${'é'.repeat(150_000)}"}`; // 300 KB: several reads
    const s = await rawServer((socket, _r, n) => {
      const bytes = Buffer.from(n === 1 ? ok('{"k":"é"}') : ok(big), 'utf8');
      // The first answer cut inside the two bytes of é.
      const cut = n === 1 ? bytes.length - 3 : 1000;
      socket.write(bytes.subarray(0, cut));
      setTimeout(() => socket.write(bytes.subarray(cut)), 20);
    });
    const c = client(s.port);
    expect(text(await c.request('GET', '/s', '', undefined, opts))).toBe('{"k":"é"}');
    const r = await c.request('GET', '/s', '', undefined, { ...opts, maxBytes: 1 << 20 });
    expect(r.body === big).toBe(true);
  });

  it('answers that arrive interleaved on many connections each get their own bytes', async () => {
    const s = await rawServer((socket, req) => {
      const n = req.head.split(' ')[1]!.slice(1);
      const bytes = Buffer.from(ok(`{"n":"${n.repeat(50)}"}`), 'latin1');
      const cut = 20 + (Number(n) % 40);
      socket.write(bytes.subarray(0, cut));
      setTimeout(() => socket.write(bytes.subarray(cut)), 5 + (Number(n) % 7));
    });
    const c = client(s.port);
    const got = await Promise.all(
      Array.from({ length: 40 }, (_, n) => c.request('GET', `/${n}`, '', undefined, opts)),
    );
    expect(got.map((r) => JSON.parse(r.body).n)).toEqual(
      Array.from({ length: 40 }, (_, n) => String(n).repeat(50)),
    );
  });

  it('a keep-alive hint shorter than the idle limit is honoured: the connection is closed before it', async () => {
    const s = await rawServer((socket) => socket.write(ok('{}', 'keep-alive: timeout=1\r\n')));
    const c = client(s.port);
    await c.request('GET', '/s', '', undefined, opts);
    // timeout=1 leaves no time to keep it (a second is kept in hand): closed at once.
    await new Promise((r) => setTimeout(r, 30));
    expect(s.connections[0]!.closed).toBe(true);
  });
});

describe('Http1Client.requestPair (the second request pipelined behind the first)', () => {
  const POST = { method: 'POST' as const, path: '/p', headers: 'x-a: 1\r\n', body: '{"K":"v"}' };
  const GET = { path: '/s', headers: 'x-wait: 1\r\n' };

  it('writes both at once on one connection: the server has the second before it answers the first', async () => {
    // Answers only once both requests are in, both answers in one write: a client that waited
    // for the first answer before sending the second would time out here.
    const s = await rawServer((socket, _r, n) => {
      if (n === 2) socket.write(ok('{"p":1}') + ok('{"s":2}'));
      if (n > 2) socket.write(ok('{}'));
    });
    const c = client(s.port);
    const [one, two] = c.requestPair(POST, GET, opts);
    expect(text(await one)).toBe('{"p":1}');
    expect(text(await two)).toBe('{"s":2}');
    expect(s.requests.map((r) => r.head.split('\r\n')[0])).toEqual(['POST /p HTTP/1.1', 'GET /s HTTP/1.1']);
    expect(s.requests[0]!.head).toContain('x-a: 1');
    expect(s.requests[0]!.body).toBe('{"K":"v"}');
    expect(s.requests[1]!.head).toContain('x-wait: 1');
    // The connection is kept after the pair and reused by the next call.
    await c.request('GET', '/s', '', undefined, opts);
    expect(s.connections).toHaveLength(1);
  });

  it('the second answer split across reads, the first of its bytes with the first answer', async () => {
    const second = ok('{"s":"later"}');
    const s = await rawServer((socket, _r, n) => {
      if (n === 1) socket.write(ok('{"p":1}') + second.slice(0, 9));
      else setTimeout(() => socket.write(second.slice(9)), 50);
    });
    const [one, two] = client(s.port).requestPair(POST, GET, opts);
    expect(text(await one)).toBe('{"p":1}');
    expect(text(await two)).toBe('{"s":"later"}');
    expect(s.connections).toHaveLength(1);
  });

  it('the first answered with anything but a 2xx: the second is dropped unanswered and the connection closed', async () => {
    const s = await rawServer((socket, _r, n) => {
      if (n === 1) socket.write('HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}');
    });
    const [one, two] = client(s.port).requestPair(POST, GET, opts);
    expect((await one).status).toBe(400);
    const err = await two.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Http1Error);
    expect(err).toMatchObject({
      kind: 'cancelled',
      message: 'not sent: the request before it was answered HTTP 400',
    });
    await expect.poll(() => s.connections[0]!.closed).toBe(true);
    expect(s.connections).toHaveLength(1);
  });

  it('the server closes after the first answer: the second (a GET) goes again on a new connection', async () => {
    let first: Socket | null = null;
    const s = await rawServer((socket, r) => {
      first ??= socket;
      if (socket === first) {
        if (r.head.startsWith('POST')) socket.end(ok('{"p":1}', 'connection: close\r\n'));
        return;
      }
      socket.write(ok('{"s":"again"}'));
    });
    const [one, two] = client(s.port).requestPair(POST, GET, opts);
    expect(text(await one)).toBe('{"p":1}');
    expect(text(await two)).toBe('{"s":"again"}');
    expect(s.connections).toHaveLength(2);
    expect(s.requests.filter((r) => r.head.startsWith('POST'))).toHaveLength(1);
  });

  it('a failure of the first is the second’s too: a timeout, an abort', async () => {
    const s = await rawServer(() => undefined);
    const [one, two] = client(s.port).requestPair(POST, GET, { ...opts, timeoutMs: 200 });
    await expect(one).rejects.toMatchObject({ kind: 'timeout' });
    await expect(two).rejects.toMatchObject({ kind: 'timeout' });
    const ac = new AbortController();
    const [three, four] = client(s.port).requestPair(POST, GET, { ...opts, signal: ac.signal });
    const reason = new Error('stop');
    setTimeout(() => ac.abort(reason), 50);
    await expect(three).rejects.toBe(reason);
    await expect(four).rejects.toBe(reason);
    await expect.poll(() => s.connections.every((c) => c.closed)).toBe(true);
  });

  it('through a forward proxy the second is sent only after the first is answered (no pipelining)', async () => {
    let answeredFirstAt = 0;
    const seen: { line: string; at: number }[] = [];
    const s = await rawServer((socket, r) => {
      seen.push({ line: r.head.split('\r\n')[0]!, at: performance.now() });
      if (r.head.startsWith('POST')) {
        setTimeout(() => {
          answeredFirstAt = performance.now();
          socket.write(ok('{"p":1}'));
        }, 100);
      } else socket.write(ok('{"s":2}'));
    });
    const c = new Http1Client(
      { protocol: 'http:', hostname: 'origin.test', port: 8080 },
      { proxyEnv: { HTTP_PROXY: `http://127.0.0.1:${s.port}` } },
    );
    const [one, two] = c.requestPair(POST, GET, opts);
    expect(text(await one)).toBe('{"p":1}');
    expect(text(await two)).toBe('{"s":2}');
    expect(seen.map((x) => x.line)).toEqual([
      'POST http://origin.test:8080/p HTTP/1.1',
      'GET http://origin.test:8080/s HTTP/1.1',
    ]);
    expect(seen[1]!.at).toBeGreaterThanOrEqual(answeredFirstAt);
  });
});

describe('assertHeaderValue', () => {
  it('refuses CR, LF and other control characters, naming the header and not the value', () => {
    expect(() => assertHeaderValue('authorization', 'Bearer ok-token')).not.toThrow();
    for (const v of ['a\r\nx-evil: 1', 'a\nb', 'a\u0000b', 'a\u0100b']) {
      expect(() => assertHeaderValue('authorization', v)).toThrow(
        /^Invalid character in header authorization$/,
      );
    }
  });
});

describe('Http1Client over TLS', () => {
  let cert: TestCert;
  let other: TestCert;
  beforeAll(() => {
    cert = selfSignedCert();
    other = selfSignedCert();
  });
  const started: TlsServer[] = [];
  afterEach(async () => {
    for (const s of started.splice(0)) await s.close();
  });
  async function server(): Promise<TlsServer> {
    const s = await tlsServer(cert);
    started.push(s);
    return s;
  }
  const https = (port: number, hostname = 'localhost') =>
    new Http1Client({ protocol: 'https:', hostname, port });

  it('verifies the server: a certificate nobody trusts is a network error naming why', async () => {
    const s = await server();
    const err = (await https(s.port)
      .request('GET', '/s', '', undefined, opts)
      .catch((e: unknown) => e)) as Http1Error;
    expect(err.kind).toBe('network');
    expect(err.code).toMatch(/SELF_SIGNED/);
    expect(err.message).toMatch(/^failed: \S*SELF_SIGNED\S* \(self[- ]signed certificate/);
  });

  it('a certificate from another CA than the trusted one fails the same way, and leaves no session', async () => {
    const s = await server();
    const err = (await withTrusted([other.cert], () =>
      https(s.port).request('GET', '/s', '', undefined, opts),
    ).catch((e: unknown) => e)) as Http1Error;
    expect([err.kind, err.code]).toEqual(['network', 'DEPTH_ZERO_SELF_SIGNED_CERT']);
    expect(s.hosts).toEqual([]);
    expect(tlsSessions.has(`localhost:${s.port}`)).toBe(false);
  });

  it('talks HTTPS to a trusted server by name, keeping the connection', async () => {
    const s = await server();
    await withTrusted([cert.cert], async () => {
      const c = https(s.port);
      for (let i = 0; i < 2; i++)
        expect(text(await c.request('GET', '/s', '', undefined, opts))).toBe('{"tls":true}');
    });
    expect(s.resumed).toEqual([false]);
    expect(s.hosts).toEqual([`localhost:${s.port}`, `localhost:${s.port}`]);
  });

  it('offers the last TLS session of an origin on its next connection, by name and by address', async () => {
    const s = await server();
    await withTrusted([cert.cert], async () => {
      for (const host of ['localhost', '127.0.0.1']) {
        // A new client per call and its connection closed, as a pass does per target.
        for (let i = 0; i < 2; i++) {
          const c = https(s.port, host);
          expect(text(await c.request('GET', '/s', '', undefined, opts))).toBe('{"tls":true}');
          c.closeIdle();
        }
        expect(tlsSessions.has(`${host}:${s.port}`)).toBe(true);
      }
    });
    // Each origin resumes its own session: 127.0.0.1 is not given localhost's.
    expect(s.resumed).toEqual([false, true, false, true]);
  });
});

describe('TlsSessions', () => {
  it('keeps the last session per origin, evicting the least recently used past its cap', () => {
    const cache = new TlsSessions(2);
    const session = (n: number) => Buffer.from([n]);
    cache.set('a:443', session(1));
    cache.set('b:443', session(2));
    cache.set('a:443', session(3)); // replaced, not added
    expect(cache.size).toBe(2);
    expect(cache.get('b:443')).toEqual(session(2)); // b is now the most recently used
    cache.set('c:443', session(4));
    expect([cache.has('a:443'), cache.has('b:443'), cache.has('c:443')]).toEqual([false, true, true]);
    cache.delete('b:443');
    expect(cache.get('b:443')).toBeUndefined();
    expect(cache.size).toBe(1);
  });

  it('the shared cache is bounded by MAX_TLS_SESSIONS', () => {
    expect(tlsSessions.max).toBe(MAX_TLS_SESSIONS);
  });
});
