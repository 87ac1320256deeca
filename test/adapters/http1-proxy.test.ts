// The HTTP/1.1 client (src/adapters/http1.ts) through HTTP_PROXY / HTTPS_PROXY / NO_PROXY as
// Node 24 reads them under NODE_USE_ENV_PROXY=1 (src/adapters/proxy-env.ts): the variables and
// NO_PROXY matching as tables; then a local forward/CONNECT proxy on 127.0.0.1 counting what it
// relays: absolute-form requests for http origins, CONNECT and end-to-end TLS for https ones, the
// NO_PROXY bypass, a 407, an unreachable proxy; credentials never in an error; the process switch.
import { once } from 'node:events';
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Http1Client, type Http1Error, type Http1Origin, tlsSessions } from '../../src/adapters/http1.ts';
import {
  bypassed,
  envProxySwitch,
  type ProxyEnv,
  proxyFor,
  proxySettings,
} from '../../src/adapters/proxy-env.ts';
import { ControllerError, httpControllerClient } from '../../src/reconcile/controller-client.ts';
import { spawnTracked } from '../support/processes.ts';
import { node24, REPO_ROOT } from '../support/sandbox.ts';
import { selfSignedCert, type TestCert, type TlsServer, tlsServer, withTrusted } from './support/tls.ts';

const opts = { signal: new AbortController().signal, timeoutMs: 5_000, maxBytes: 4096 };
const SECRET = 'pr0xy-s3cret-7f3a';
const USER = 'puser-9c1e';

describe('proxy variables, as Node reads them', () => {
  const via = (env: ProxyEnv, protocol: 'http:' | 'https:', host: string, port: number) => {
    const settings = proxySettings(env);
    return settings && proxyFor(settings, protocol, host, port);
  };

  it('NO_PROXY: `*`, exact hosts, host:port, .domain and *.domain suffixes, IPv4 ranges; loopback not special', () => {
    const cases: [string, string, number, boolean][] = [
      ['*', 'anything.example', 443, true],
      ['example.com', 'example.com', 443, true],
      ['example.com', 'sub.example.com', 443, false],
      ['EXAMPLE.com', 'Example.COM', 80, true],
      ['example.com:8080', 'example.com', 8080, true],
      ['example.com:8080', 'example.com', 443, false],
      ['.example.com', 'example.com', 443, true],
      ['.example.com', 'a.b.example.com', 443, true],
      ['.example.com', 'badexample.com', 443, false],
      ['*.example.com', 'a.example.com', 443, true],
      ['*.example.com', 'example.com', 443, false],
      ['10.0.0.1-10.0.0.9', '10.0.0.5', 80, true],
      ['10.0.0.1-10.0.0.9', '10.0.0.10', 80, false],
      ['localhost', '127.0.0.1', 80, false],
      ['', 'localhost', 80, false],
      ['', '127.0.0.1', 80, false],
      ['foo.test, 127.0.0.1 ,bar.test', '127.0.0.1', 8080, true],
      ['::1', '::1', 443, true],
    ];
    for (const [noProxy, host, port, bypass] of cases) {
      const proxy = via({ HTTPS_PROXY: 'http://proxy.test:3128', NO_PROXY: noProxy }, 'https:', host, port);
      expect([noProxy, host, port, proxy === null]).toEqual([noProxy, host, port, bypass]);
    }
    expect(bypassed(['*.example.com'], 'x.example.com', 1)).toBe(true);
  });

  it('lower case wins, each protocol has its own variable, other schemes are ignored', () => {
    expect(
      via({ HTTP_PROXY: 'http://upper:1', http_proxy: 'http://lower:2' }, 'http:', 'a', 80),
    ).toMatchObject({
      name: 'lower:2',
    });
    expect(via({ HTTP_PROXY: 'http://p:1' }, 'https:', 'a', 443)).toBeNull();
    expect(via({ HTTPS_PROXY: 'https://p' }, 'https:', 'a', 443)).toMatchObject({
      protocol: 'https:',
      hostname: 'p',
      port: 443,
      name: 'p:443',
    });
    expect(via({ HTTP_PROXY: 'http://[::1]' }, 'http:', 'a', 80)).toMatchObject({
      hostname: '::1',
      port: 80,
      name: '[::1]:80',
    });
    expect(proxySettings({ HTTP_PROXY: 'socks5://p:1080', HTTPS_PROXY: '' })).toBeNull();
    expect(proxySettings({})).toBeNull();
    expect(
      via({ HTTPS_PROXY: 'http://p:1', NO_PROXY: '*', no_proxy: 'other' }, 'https:', 'a', 443),
    ).not.toBeNull();
  });

  it('credentials become a Basic proxy-authorization; a bad URL is named by its variable, never its value', () => {
    const proxy = via({ HTTP_PROXY: `http://us%3Aer:${SECRET}%40@p:1` }, 'http:', 'a', 80);
    const line = proxy && 'authLine' in proxy ? proxy.authLine : '';
    expect(line).toMatch(/^proxy-authorization: Basic [A-Za-z0-9+/=]+\r\n$/);
    expect(Buffer.from(line.slice(27, -2), 'base64').toString()).toBe(`us:er:${SECRET}@`);
    for (const bad of [
      `http://u:${SECRET}@[p:1`,
      `http://u:${SECRET}%zz@p:1`,
      `http://u:${SECRET}@p:1\r\nx: y`,
    ]) {
      expect(via({ https_proxy: bad }, 'https:', 'a', 443)).toEqual({
        invalid: 'invalid proxy URL in https_proxy',
      });
    }
  });

  it('the switch: NODE_USE_ENV_PROXY=1, or --use-env-proxy in NODE_OPTIONS or on the command line, the flag winning', () => {
    expect(envProxySwitch({}, [])).toBe(false);
    expect(envProxySwitch({ NODE_USE_ENV_PROXY: '1' }, [])).toBe(true);
    expect(envProxySwitch({ NODE_USE_ENV_PROXY: 'true' }, [])).toBe(false);
    expect(envProxySwitch({}, ['--use-env-proxy'])).toBe(true);
    expect(envProxySwitch({ NODE_OPTIONS: '--max-old-space-size=100 --use-env-proxy' }, [])).toBe(true);
    expect(envProxySwitch({ NODE_USE_ENV_PROXY: '1' }, ['--no-use-env-proxy'])).toBe(false);
    expect(envProxySwitch({ NODE_OPTIONS: '--use-env-proxy' }, ['--no-use-env-proxy'])).toBe(false);
  });
});

// ---- a local proxy and origins -----------------------------------------------------------------

interface ProxyLog {
  /** Connections the proxy accepted. */
  connections: number;
  /** Requests it forwarded: method, request target, host, proxy-authorization. */
  forwarded: { method: string; url: string; host: string; auth: string | undefined }[];
  /** CONNECT tunnels asked for: target and proxy-authorization. */
  tunnels: { target: string; auth: string | undefined }[];
}

const servers: Server[] = [];
const sockets: Socket[] = [];
const tlsServers: TlsServer[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of tlsServers.splice(0)) await s.close();
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
});

async function listen(server: Server): Promise<number> {
  servers.push(server);
  server.on('connection', (s: Socket) => sockets.push(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as { port: number }).port;
}

/**
 * A forward and CONNECT proxy, a few lines of node:http (node:https with `cert`). With `auth`,
 * requests and CONNECTs without that proxy-authorization get a 407.
 */
async function startProxy(auth?: string, cert?: TestCert): Promise<{ port: number; log: ProxyLog }> {
  const log: ProxyLog = { connections: 0, forwarded: [], tunnels: [] };
  const forward = (req: IncomingMessage, res: ServerResponse) => {
    const pa = req.headers['proxy-authorization'];
    log.forwarded.push({ method: req.method!, url: req.url!, host: req.headers.host!, auth: pa });
    if (auth && pa !== auth) {
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="test"' }).end();
      return;
    }
    const u = new URL(req.url!);
    const { 'proxy-authorization': _, ...headers } = req.headers;
    const up = request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        method: req.method,
        headers,
        agent: false,
      },
      (r) => {
        // Hop-by-hop headers stay on their hop: the client's connection to the proxy is kept.
        const { connection: _c, 'keep-alive': _k, ...answer } = r.headers;
        res.writeHead(r.statusCode!, answer);
        r.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  };
  const server: Server = cert ? createHttpsServer(cert, forward) : createServer(forward);
  server.on(cert ? 'secureConnection' : 'connection', () => log.connections++);
  server.on('connect', (req, client: Socket, head: Buffer) => {
    sockets.push(client);
    const pa = req.headers['proxy-authorization'];
    log.tunnels.push({ target: req.url!, auth: pa });
    if (auth && pa !== auth) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    const at = req.url!.lastIndexOf(':');
    const host = req.url!.slice(0, at);
    // The origins listen on 127.0.0.1 only.
    const upstream = connect(
      Number(req.url!.slice(at + 1)),
      host === 'localhost' ? '127.0.0.1' : host,
      () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.write(head);
        upstream.pipe(client).pipe(upstream);
      },
    );
    sockets.push(upstream);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  return { port: await listen(server), log };
}

/** A plain HTTP origin recording each request's target and headers. */
async function startOrigin(): Promise<{
  port: number;
  seen: { url: string; headers: Record<string, unknown> }[];
}> {
  const seen: { url: string; headers: Record<string, unknown> }[] = [];
  const server = createServer((req, res) => {
    seen.push({ url: req.url!, headers: { ...req.headers } });
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"origin":true}');
  });
  return { port: await listen(server), seen };
}

const basic = (userPass: string) => `Basic ${Buffer.from(userPass).toString('base64')}`;
const text = (r: { body: string }) => r.body;
const fail = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected a failure');
    },
    (e: unknown) => e as Http1Error,
  );
const httpOrigin = (port: number): Http1Origin => ({ protocol: 'http:', hostname: '127.0.0.1', port });
/** Every credential form that must never appear in an error: the value, the user, the header. */
const credentialForms = (user: string, password: string) => [
  password,
  user,
  basic(`${user}:${password}`).slice(6),
];

describe('Http1Client through a proxy', () => {
  let cert: TestCert;
  beforeAll(() => {
    cert = selfSignedCert();
  });
  async function httpsOrigin(): Promise<TlsServer> {
    const s = await tlsServer(cert);
    tlsServers.push(s);
    return s;
  }

  it('an http origin: absolute-form requests to the proxy with its credentials, on one kept connection', async () => {
    const proxy = await startProxy(basic(`${USER}:${SECRET}@`));
    const origin = await startOrigin();
    const c = new Http1Client(httpOrigin(origin.port), {
      proxyEnv: { HTTP_PROXY: `http://${USER}:${encodeURIComponent(`${SECRET}@`)}@127.0.0.1:${proxy.port}` },
    });
    for (let i = 0; i < 2; i++) {
      const r = await c.request('GET', '/_kilo/state?x=1', 'authorization: Bearer t\r\n', undefined, opts);
      expect([r.status, text(r)]).toEqual([200, '{"origin":true}']);
    }
    const target = `127.0.0.1:${origin.port}`;
    expect(proxy.log.forwarded).toEqual(
      Array(2).fill({
        method: 'GET',
        url: `http://${target}/_kilo/state?x=1`,
        host: target,
        auth: basic(`${USER}:${SECRET}@`),
      }),
    );
    expect(proxy.log.connections).toBe(1);
    expect(
      origin.seen.map((s) => [s.url, s.headers.authorization, s.headers['proxy-authorization']]),
    ).toEqual(Array(2).fill(['/_kilo/state?x=1', 'Bearer t', undefined]));
  });

  it('an https origin: CONNECT host:port, then TLS to the origin verified end to end, its session resumed', async () => {
    const proxy = await startProxy(basic(`${USER}:${SECRET}`));
    const origin = await httpsOrigin();
    const proxyEnv = { HTTPS_PROXY: `http://${USER}:${SECRET}@127.0.0.1:${proxy.port}` };
    const url = { protocol: 'https:', hostname: 'localhost', port: origin.port } as const;
    await withTrusted([cert.cert], async () => {
      for (let i = 0; i < 2; i++) {
        const c = new Http1Client(url, { proxyEnv });
        expect(text(await c.request('GET', '/s', '', undefined, opts))).toBe('{"tls":true}');
        c.closeIdle();
      }
    });
    expect(proxy.log.tunnels).toEqual(
      Array(2).fill({ target: `localhost:${origin.port}`, auth: basic(`${USER}:${SECRET}`) }),
    );
    expect(proxy.log.forwarded).toEqual([]);
    expect(origin.hosts).toEqual(Array(2).fill(`localhost:${origin.port}`));
    expect(origin.resumed).toEqual([false, true]);
  });

  it('through a tunnel the origin’s certificate is still checked: an untrusted one fails, naming the proxy only', async () => {
    const proxy = await startProxy();
    const origin = await httpsOrigin();
    const c = new Http1Client(
      { protocol: 'https:', hostname: 'localhost', port: origin.port },
      { proxyEnv: { https_proxy: `http://${USER}:${SECRET}@127.0.0.1:${proxy.port}` } },
    );
    const err = await fail(c.request('GET', '/s', '', undefined, opts));
    expect([err.kind, err.code]).toEqual(['network', 'DEPTH_ZERO_SELF_SIGNED_CERT']);
    expect(err.message).toContain(`via proxy 127.0.0.1:${proxy.port}`);
    expect(origin.hosts).toEqual([]);
    expect(tlsSessions.has(`localhost:${origin.port}`)).toBe(false);
    for (const s of credentialForms(USER, SECRET)) expect(err.message).not.toContain(s);
  });

  it('an https:// proxy: TLS to the proxy, verified, for forwarded requests and under tunnels (TLS in TLS)', async () => {
    const proxy = await startProxy(undefined, cert);
    const plain = await startOrigin();
    const secure = await httpsOrigin();
    const proxyUrl = `https://127.0.0.1:${proxy.port}`;
    const proxyEnv = { HTTP_PROXY: proxyUrl, HTTPS_PROXY: proxyUrl };
    const viaHttp = () => new Http1Client(httpOrigin(plain.port), { proxyEnv });
    // The proxy's own certificate is checked (before it is trusted: a session made once it is
    // trusted would be resumed without a new check, as node:https resumes it).
    const err = await fail(viaHttp().request('GET', '/f', '', undefined, opts));
    expect([err.kind, err.code]).toEqual(['network', 'DEPTH_ZERO_SELF_SIGNED_CERT']);
    expect(err.message).toMatch(new RegExp(`via proxy 127\\.0\\.0\\.1:${proxy.port}$`));
    expect(proxy.log.forwarded).toEqual([]);
    await withTrusted([cert.cert], async () => {
      const tunnelled = new Http1Client(
        { protocol: 'https:', hostname: 'localhost', port: secure.port },
        { proxyEnv },
      );
      expect(text(await viaHttp().request('GET', '/f', '', undefined, opts))).toBe('{"origin":true}');
      for (let i = 0; i < 2; i++)
        expect(text(await tunnelled.request('GET', '/t', '', undefined, opts))).toBe('{"tls":true}');
    });
    expect(proxy.log.forwarded.map((f) => f.url)).toEqual([`http://127.0.0.1:${plain.port}/f`]);
    expect(proxy.log.tunnels.map((t) => t.target)).toEqual([`localhost:${secure.port}`]);
    expect(secure.hosts).toEqual(Array(2).fill(`localhost:${secure.port}`));
  });

  it('NO_PROXY naming the origin (host, or host:port) connects directly; another port still goes through', async () => {
    const proxy = await startProxy();
    const origin = await startOrigin();
    const env = (noProxy: string) => ({ HTTP_PROXY: `http://127.0.0.1:${proxy.port}`, NO_PROXY: noProxy });
    for (const noProxy of ['127.0.0.1', `other.test,127.0.0.1:${origin.port}`, '*']) {
      const r = await new Http1Client(httpOrigin(origin.port), { proxyEnv: env(noProxy) }).request(
        'GET',
        '/d',
        '',
        undefined,
        opts,
      );
      expect(r.status).toBe(200);
    }
    expect(proxy.log.connections).toBe(0);
    await new Http1Client(httpOrigin(origin.port), { proxyEnv: env('127.0.0.1:1, localhost') }).request(
      'GET',
      '/p',
      '',
      undefined,
      opts,
    );
    expect(proxy.log.forwarded.map((f) => f.url)).toEqual([`http://127.0.0.1:${origin.port}/p`]);
    expect(origin.seen.map((s) => s.url)).toEqual(['/d', '/d', '/d', '/p']);
  });

  it('a 407 is a clear proxy error without the credentials, for a tunnel and a forwarded request', async () => {
    const proxy = await startProxy(basic(`${USER}:the-right-one`));
    const origin = await startOrigin();
    const proxyUrl = `http://${USER}:${SECRET}@127.0.0.1:${proxy.port}`;
    const tunnel = await fail(
      new Http1Client(
        { protocol: 'https:', hostname: 'localhost', port: origin.port },
        { proxyEnv: { HTTPS_PROXY: proxyUrl } },
      ).request('GET', '/s', '', undefined, opts),
    );
    expect([tunnel.kind, tunnel.message]).toEqual([
      'proxy',
      `proxy 127.0.0.1:${proxy.port} answered CONNECT localhost:${origin.port} with HTTP 407: proxy authentication required (credentials missing from the proxy URL, or refused)`,
    ]);
    const forward = await fail(
      new Http1Client(httpOrigin(origin.port), { proxyEnv: { HTTP_PROXY: proxyUrl } }).request(
        'GET',
        '/s',
        '',
        undefined,
        opts,
      ),
    );
    expect(forward.kind).toBe('proxy');
    expect(forward.message).toMatch(
      new RegExp(`^proxy 127\\.0\\.0\\.1:${proxy.port} answered HTTP 407: proxy authentication required`),
    );
    // The controller client says which call failed, and that it may be retried like a network error.
    const controller = httpControllerClient({
      url: `http://127.0.0.1:${origin.port}`,
      token: 'controller-token-0123456789',
      timeoutMs: 5_000,
      proxyEnv: { HTTP_PROXY: proxyUrl },
    });
    const err = (await controller.getState(opts.signal).catch((e: unknown) => e)) as ControllerError;
    expect(err).toBeInstanceOf(ControllerError);
    expect([err.kind, err.retryable]).toEqual(['network', true]);
    expect(err.message).toMatch(
      new RegExp(`^GET _kilo/state failed: proxy 127\\.0\\.0\\.1:${proxy.port} answered HTTP 407`),
    );
    expect(origin.seen).toEqual([]);
    for (const e of [tunnel, forward, err]) {
      for (const s of credentialForms(USER, SECRET)) {
        expect(e.message).not.toContain(s);
        expect(String(e.stack)).not.toContain(s);
      }
    }
  });

  it('an unreachable proxy is a network error naming the proxy, not its credentials; a bad URL fails every request', async () => {
    const proxy = await startProxy();
    const port = proxy.port;
    const last = servers.pop()!;
    last.closeAllConnections();
    await new Promise<void>((r) => last.close(() => r()));
    const origin = await startOrigin();
    for (const [protocol, variable] of [
      ['http:', 'HTTP_PROXY'],
      ['https:', 'HTTPS_PROXY'],
    ] as const) {
      const err = await fail(
        new Http1Client(
          { protocol, hostname: 'localhost', port: origin.port },
          { proxyEnv: { [variable]: `http://${USER}:${SECRET}@127.0.0.1:${port}` } },
        ).request('GET', '/s', '', undefined, opts),
      );
      expect([err.kind, err.code, err.message]).toEqual([
        'network',
        'ECONNREFUSED',
        `failed: ECONNREFUSED via proxy 127.0.0.1:${port}`,
      ]);
    }
    const bad = await fail(
      new Http1Client(httpOrigin(origin.port), {
        proxyEnv: { HTTP_PROXY: `http://${USER}:${SECRET}@[oops` },
      }).request('GET', '/s', '', undefined, opts),
    );
    expect([bad.kind, bad.code, bad.message]).toEqual([
      'proxy',
      'ERR_PROXY_INVALID_CONFIG',
      'invalid proxy URL in HTTP_PROXY',
    ]);
    expect(origin.seen).toEqual([]);
  });

  it('without proxyEnv the process’s variables are used only when Node’s switch is on', async () => {
    const proxy = await startProxy();
    const origin = await startOrigin();
    const script = `
      const { Http1Client } = await import(${JSON.stringify(join(REPO_ROOT, 'src/adapters/http1.ts'))});
      const c = new Http1Client({ protocol: 'http:', hostname: '127.0.0.1', port: ${origin.port} });
      const r = await c.request('GET', '/child', '', undefined, { signal: new AbortController().signal, timeoutMs: 5000, maxBytes: 4096 });
      console.log('status', r.status);
      c.closeIdle();`;
    const run = async (env: Record<string, string>, args: string[] = []) => {
      const child = spawnTracked(node24(), [...args, '--input-type=module', '-e', script], {
        env: { PATH: process.env.PATH ?? '', HTTP_PROXY: `http://127.0.0.1:${proxy.port}`, ...env },
        name: 'proxy-switch',
      });
      try {
        const exit = await child.exited;
        expect([exit.code, child.stdoutLines]).toEqual([0, ['status 200']]);
      } finally {
        await child.stop('SIGKILL', 1_000);
      }
      return proxy.log.forwarded.length;
    };
    expect(await run({})).toBe(0);
    expect(await run({ NODE_USE_ENV_PROXY: '1' })).toBe(1);
    expect(await run({}, ['--use-env-proxy'])).toBe(2);
    expect(await run({ NODE_USE_ENV_PROXY: '1', NO_PROXY: '127.0.0.1' })).toBe(2);
    expect(origin.seen).toHaveLength(4);
  });
});
