// Owns the fake key-issuing API (the seed's KiloClaw worker, generalised): mint, current, list and
// revoke on loopback, bearer-authenticated. Every key minted and not yet revoked is valid; feed
// `activeKeys()` to the fake upstream (`onChange`) so the provider accepts exactly those. Counts
// every revoke call and every successful one, so tests can assert "exactly once".
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeKey {
  version: string;
  key: string;
  mintedAt: number;
  expiresAt: number;
  revokedAt: number | null;
}

export interface RevokeCall {
  version: string;
  status: number;
  at: number;
}

export interface FakeKeyApiOptions {
  token: string;
  /** Lifetime of a minted key. */
  ttlMs?: number;
  /** Called with the keys not yet revoked whenever that set changes. */
  onChange?: (active: string[]) => void;
}

export interface FakeKeyApi {
  url: string;
  currentUrl: string;
  mintUrl: string;
  revokeUrl: string;
  /** Mints a key as POST /keys/mint does and makes it current. */
  mint(): FakeKey;
  current(): FakeKey;
  keys(): FakeKey[];
  activeKeys(): string[];
  revokeCalls: RevokeCall[];
  /** Successful revokes (200) per version. */
  revokedCount(version: string): number;
  /** The next `n` calls to `route` answer `status` (503, 500, 400, …) without doing anything. */
  failNext(route: 'mint' | 'revoke' | 'current', n: number, status: number): void;
  /** Makes the current key expire `ms` from now. */
  expireIn(ms: number): void;
  /** Every request body and header seen, for secret greps (keys appear only in mint/current answers). */
  requestLog: string[];
  /** Called at the moment a version is revoked; the answer waits for what it returns (crash tests hold it). */
  onRevoked: ((version: string) => void | Promise<void>) | null;
  /**
   * Awaited when a revoke request arrives, before anything is done: a crash test kills the caller
   * meanwhile. A request whose caller is gone by then is dropped unacted (recorded as status 499).
   */
  holdRevoke: ((version: string) => Promise<void>) | null;
  close(): Promise<void>;
}

export async function startFakeKeyApi(opts: FakeKeyApiOptions): Promise<FakeKeyApi> {
  const ttl = opts.ttlMs ?? 30 * 24 * 3_600_000;
  const keys: FakeKey[] = [];
  const revokeCalls: RevokeCall[] = [];
  const requestLog: string[] = [];
  const faults = new Map<string, { n: number; status: number }>();
  let seq = 0;

  const active = () => keys.filter((k) => k.revokedAt === null).map((k) => k.key);
  const changed = () => opts.onChange?.(active());
  const mint = (): FakeKey => {
    seq++;
    const k: FakeKey = {
      version: `v${seq}`,
      key: `sk-fake-${randomBytes(18).toString('hex')}`,
      mintedAt: Date.now(),
      expiresAt: Date.now() + ttl,
      revokedAt: null,
    };
    keys.push(k);
    changed();
    return k;
  };
  const current = () => keys.at(-1)!;
  mint();

  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const answerKey = (res: ServerResponse, k: FakeKey) =>
    send(res, 200, { key: k.key, version: k.version, expiresAt: new Date(k.expiresAt).toISOString() });
  const fault = (route: string): number | null => {
    const f = faults.get(route);
    if (!f || f.n <= 0) return null;
    f.n--;
    return f.status;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    requestLog.push(`${req.method} ${req.url} ${JSON.stringify(req.headers)} ${text}`);
    if (req.headers.authorization !== `Bearer ${opts.token}`)
      return send(res, 401, { error: 'unauthorized' });
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method === 'GET' && path === '/keys/current') {
      const f = fault('current');
      return f ? send(res, f, { error: 'injected' }) : answerKey(res, current());
    }
    if (req.method === 'POST' && path === '/keys/mint') {
      const f = fault('mint');
      return f ? send(res, f, { error: 'injected' }) : answerKey(res, mint());
    }
    if (req.method === 'GET' && path === '/keys') {
      return send(res, 200, {
        keys: keys.map((k) => ({
          version: k.version,
          revoked: k.revokedAt !== null,
          expiresAt: new Date(k.expiresAt).toISOString(),
        })),
      });
    }
    if (req.method === 'POST' && path === '/keys/revoke') {
      const at = Date.now();
      let version: unknown;
      try {
        version = (JSON.parse(text) as { version?: unknown }).version;
      } catch {
        version = undefined;
      }
      const record = (status: number, body: unknown) => {
        revokeCalls.push({ version: typeof version === 'string' ? version : '', status, at });
        send(res, status, body);
      };
      if (api.holdRevoke) {
        await api.holdRevoke(typeof version === 'string' ? version : '');
        if (req.socket.destroyed || res.destroyed) {
          revokeCalls.push({ version: typeof version === 'string' ? version : '', status: 499, at });
          return;
        }
      }
      const f = fault('revoke');
      if (f) return record(f, { error: 'injected' });
      if (typeof version !== 'string') return record(400, { error: 'version required' });
      const k = keys.find((x) => x.version === version);
      if (!k) return record(404, { error: 'unknown version' });
      if (k.revokedAt !== null) return record(409, { error: 'already revoked' });
      if (k === current()) return record(422, { error: 'the current key cannot be revoked' });
      k.revokedAt = Date.now();
      changed();
      await api.onRevoked?.(k.version);
      return record(200, { ok: true, version });
    }
    send(res, 404, { error: 'not found' });
  };

  const server = createServer((req, res) => {
    handle(req, res).catch(() => send(res, 500, { error: 'internal' }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const api: FakeKeyApi = {
    url,
    currentUrl: `${url}/keys/current`,
    mintUrl: `${url}/keys/mint`,
    revokeUrl: `${url}/keys/revoke`,
    mint,
    current,
    keys: () => keys.map((k) => ({ ...k })),
    activeKeys: active,
    revokeCalls,
    revokedCount: (version) => revokeCalls.filter((c) => c.version === version && c.status === 200).length,
    failNext(route, n, status) {
      faults.set(route, { n, status });
    },
    expireIn(ms) {
      current().expiresAt = Date.now() + ms;
    },
    requestLog,
    onRevoked: null,
    holdRevoke: null,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return api;
}

/** Where a crash test kills the process that retires a key, relative to its revoke call. */
export type KillPoint = 'before' | 'during' | 'after';

/**
 * Runs `kill` at `point` and resolves once it ran: `before` — as soon as `started()` (e.g. the
 * first delivery reached a target), before any revoke; `during` — the revoke request arrived and is
 * held unacted (the API then drops it: its caller is gone); `after` — the API revoked and holds its
 * answer (the caller never learns of it). Rejects when nothing happens within `timeoutMs`.
 */
export async function killAt(
  api: FakeKeyApi,
  point: KillPoint,
  started: () => boolean,
  kill: () => Promise<unknown>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  if (point === 'before') {
    while (!started()) {
      if (Date.now() > deadline) throw new Error('killAt(before): the pass never started delivering');
      await new Promise((r) => setTimeout(r, 5));
    }
    await kill();
    return;
  }
  let release!: () => void;
  const held = new Promise<void>((r) => {
    release = r;
  });
  let arrived = false;
  const previous = api.onRevoked;
  const hold = async () => {
    arrived = true;
    await held;
  };
  if (point === 'during') api.holdRevoke = hold;
  else
    api.onRevoked = async (v) => {
      await previous?.(v);
      await hold();
    };
  try {
    while (!arrived) {
      if (Date.now() > deadline) throw new Error(`killAt(${point}): no revoke call arrived`);
      await new Promise((r) => setTimeout(r, 5));
    }
    await kill();
    // Let the API see the dead caller's socket close before the held request goes on.
    await new Promise((r) => setTimeout(r, 50));
  } finally {
    api.holdRevoke = null;
    api.onRevoked = previous;
    release();
  }
}
