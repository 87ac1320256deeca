// What one new controller connection costs keyroll per transport: connect, `GET /_kilo/state`,
// read the answer, close, against the fleet simulator (bench/support/simulated-fleet.ts), one
// origin per target, as a converged pass talks to each target once. Each transport runs in a
// fresh process with the operator image's Node flags; its CPU (process.cpuUsage around the loop)
// and wall time are printed per target, the simulator's CPU beside them.
//   node bench/support/transport-floor.ts [targets=10000] [concurrency=1000] [transports,...]
// Transports: client (keyroll's httpControllerClient), http (bare http.request, no agent: the
// socket closed after the answer), undici-request (a Client per origin, request(), body.text()),
// undici-dispatch (a Client per origin, dispatch() with a raw handler), undici-agent (one Agent,
// request()), http1 (src/adapters/http1.ts), net (node:net, the request written and the answer
// read by hand: the floor). FLOOR_NODE_FLAGS replaces the image's flags; FLOOR_CLIENT names
// another controller-client module for `client`.
import { spawn } from 'node:child_process';
import type * as Http from 'node:http';
import type * as Net from 'node:net';
import { createInterface } from 'node:readline';
import { imageCommand } from '../../test/support/image-command.ts';

const TOKEN = 'bench-token-floor-0123456789abcdef';
const HEADERS = { authorization: `Bearer ${TOKEN}`, accept: 'application/json' };

type Run = (urls: string[], concurrency: number) => Promise<void>;

async function eachLimit(urls: string[], limit: number, fn: (url: string) => Promise<void>) {
  let next = 0;
  const worker = async () => {
    while (next < urls.length) await fn(urls[next++]!);
  };
  await Promise.all(Array.from({ length: limit }, worker));
}

/** `eachLimit` over callback-style exchanges: `fn` gets the parsed URL and settles its target. */
function eachExchange(
  urls: string[],
  limit: number,
  fn: (u: URL, resolve: () => void, reject: (e: unknown) => void) => void,
) {
  return eachLimit(
    urls,
    limit,
    (url) => new Promise<void>((resolve, reject) => fn(new URL(url), resolve, reject)),
  );
}

function check(status: number, text: string): void {
  if (status !== 200 || !text.startsWith('{"controller"'))
    throw new Error(`bad answer ${status}: ${text.slice(0, 80)}`);
}

const transports: Record<string, () => Promise<Run>> = {
  async client() {
    // FLOOR_CLIENT: another controller-client module (an older copy, for a before/after).
    const { httpControllerClient } = (await import(
      process.env.FLOOR_CLIENT ?? '../../src/reconcile/controller-client.ts'
    )) as typeof import('../../src/reconcile/controller-client.ts');
    return (urls, c) =>
      eachLimit(urls, c, async (url) => {
        await httpControllerClient({ url, token: TOKEN, timeoutMs: 10_000 }).getState(never);
      });
  },
  async http() {
    const http: typeof Http = process.getBuiltinModule('node:http');
    return (urls, c) =>
      eachExchange(urls, c, (u, resolve, reject) => {
        const req = http.request(
          { hostname: u.hostname, port: u.port, path: '/_kilo/state', headers: HEADERS, agent: false },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (b: Buffer) => chunks.push(b));
            res.on('end', () => {
              check(res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'));
              resolve();
            });
          },
        );
        req.on('error', reject);
        req.end();
      });
  },
  async 'undici-request'() {
    const { Client } = await import('undici');
    return (urls, c) =>
      eachLimit(urls, c, async (url) => {
        const client = new Client(url, { pipelining: 1 });
        const res = await client.request({ method: 'GET', path: '/_kilo/state', headers: HEADERS });
        check(res.statusCode, await res.body.text());
        await client.destroy();
      });
  },
  async 'undici-dispatch'() {
    const { Client } = await import('undici');
    return (urls, c) =>
      eachLimit(urls, c, async (url) => {
        const client = new Client(url, { pipelining: 1 });
        await new Promise<void>((resolve, reject) => {
          let status = 0;
          const chunks: Buffer[] = [];
          client.dispatch(
            { method: 'GET', path: '/_kilo/state', headers: HEADERS },
            {
              onRequestStart() {},
              onResponseStart(_c, s) {
                status = s;
              },
              onResponseData(_c, b) {
                chunks.push(b);
              },
              onResponseEnd() {
                check(status, Buffer.concat(chunks).toString('utf8'));
                resolve();
              },
              onResponseError(_c, e) {
                reject(e);
              },
            },
          );
        });
        await client.destroy();
      });
  },
  async 'undici-agent'() {
    const { Agent } = await import('undici');
    const agent = new Agent({ pipelining: 1, connections: 1 });
    return (urls, c) =>
      eachLimit(urls, c, async (url) => {
        const res = await agent.request({
          origin: url,
          method: 'GET',
          path: '/_kilo/state',
          headers: HEADERS,
        });
        check(res.statusCode, await res.body.text());
      });
  },
  async http1() {
    const { Http1Client } = await import('../../src/adapters/http1.ts');
    const lines = `authorization: ${HEADERS.authorization}\r\naccept: application/json\r\n`;
    return (urls, c) =>
      eachLimit(urls, c, async (url) => {
        const u = new URL(url);
        const client = new Http1Client({ protocol: 'http:', hostname: u.hostname, port: Number(u.port) });
        const res = await client.request('GET', '/_kilo/state', lines, undefined, {
          signal: never,
          timeoutMs: 10_000,
          maxBytes: 1 << 20,
        });
        check(res.status, res.body);
      });
  },
  async net() {
    const net: typeof Net = process.getBuiltinModule('node:net');
    return (urls, c) =>
      eachExchange(urls, c, (u, resolve, reject) => {
        const socket = net.connect({ host: u.hostname, port: Number(u.port), noDelay: true });
        let buf = '';
        socket.setEncoding('latin1');
        socket.on('connect', () =>
          socket.write(
            `GET /_kilo/state HTTP/1.1\r\nhost: ${u.host}\r\nauthorization: ${HEADERS.authorization}\r\naccept: application/json\r\n\r\n`,
          ),
        );
        socket.on('data', (s: string) => {
          buf += s;
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          const m = /content-length: (\d+)/i.exec(buf.slice(0, end));
          if (!m || buf.length < end + 4 + Number(m[1])) return;
          check(Number(buf.slice(9, 12)), Buffer.from(buf.slice(end + 4), 'latin1').toString('utf8'));
          socket.destroy();
          resolve();
        });
        socket.on('error', reject);
      });
  },
};
const never = new AbortController().signal;

if (process.argv[2] === '--child') {
  const [name, c] = [process.argv[3]!, Number(process.argv[4])];
  const urls = JSON.parse(
    await new Promise<string>((r) => {
      let s = '';
      process.stdin.on('data', (b) => (s += b));
      process.stdin.on('end', () => r(s));
    }),
  ) as string[];
  const run = await transports[name]!();
  await run(urls.slice(0, 200), Math.min(c, 50)); // warm-up: code paths compiled, not measured
  const work = urls.slice(200);
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  await run(work, c);
  const ms = performance.now() - t0;
  const used = process.cpuUsage(cpu);
  process.stdout.write(
    `${JSON.stringify({ n: work.length, ms, cpuMs: (used.user + used.system) / 1000, userMs: used.user / 1000, rssMb: process.resourceUsage().maxRSS / 1024 })}\n`,
  );
  process.exit(0);
}

const count = Number(process.argv[2] ?? 10_000);
const concurrency = Number(process.argv[3] ?? 1000);
const names = (process.argv[4] ?? Object.keys(transports).join(',')).split(',');
const flags =
  process.env.FLOOR_NODE_FLAGS?.split(' ').filter(Boolean) ?? imageCommand('operator', '/app').nodeFlags;
const sim = spawn(
  process.execPath,
  [new URL('./simulated-fleet.ts', import.meta.url).pathname, String(count)],
  {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, FLEET_TOKEN: TOKEN, FLEET_KEY: 'bench-key-0', RESTART_MS: '200' },
  },
);
process.on('exit', () => sim.kill('SIGKILL'));
const lines = createInterface({ input: sim.stdout! })[Symbol.asyncIterator]();
const nextLine = async () => (await lines.next()).value as string;
const { urls } = JSON.parse(await nextLine()) as { urls: string[] };
const simStats = async () => {
  sim.stdin!.write('stats\n');
  return JSON.parse(await nextLine()) as { get: number; cpuMs: number };
};
console.log(
  `transport floor: ${count} origins, concurrency ${concurrency}, flags ${flags.join(' ')}, Node ${process.version}`,
);
for (const name of names) {
  await simStats();
  const child = spawn(
    process.execPath,
    [...flags, new URL(import.meta.url).pathname, '--child', name, String(concurrency)],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b));
  child.stdin!.end(JSON.stringify(urls));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  const s = await simStats();
  if (code !== 0) {
    console.log(`${name}: exited ${code} ${out}`);
    continue;
  }
  const r = JSON.parse(out) as { n: number; ms: number; cpuMs: number; userMs: number; rssMb: number };
  console.log(
    `${name.padEnd(16)} ${(r.cpuMs / r.n).toFixed(3)} ms CPU/target (user ${(r.userMs / r.n).toFixed(3)}), wall ${(r.ms / 1000).toFixed(2)} s, ` +
      `peak RSS ${r.rssMb.toFixed(0)} MB; simulator ${(s.cpuMs / s.get).toFixed(3)} ms/request (${s.get} GETs)`,
  );
}
sim.kill('SIGTERM');
