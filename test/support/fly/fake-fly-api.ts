// Owns the fake Fly Machines API for tests: a loopback HTTP server with the documented routes and
// shapes (apps → machines, leases with the `fly-machine-lease-nonce` header), Fly's per-action,
// per-machine rate limits enforced and counted, injectable failures, and a request log.
//
// In a test:
//   const fly = await startFakeFlyApi({ token: 'test-fly-token-…' });
//   fly.addMachine('app', { env: { KILOCODE_API_KEY: 'test-key-A-…' } });
//   const client = new FlyClient({ token: 'test-fly-token-…', baseUrl: fly.baseUrl });
//   …; expect(fly.storedEnv('app', id)).toEqual(…); expect(fly.totals().rateLimited).toBe(0);
//   await fly.close();
//
// App secrets (`/v1/apps/{app}/secrets`, fly-go flaps_secrets.go): list (names and opaque digests,
// never values), set one (`POST …/secrets/{name}` `{value}` → `{name, digest, version}`), set/unset
// many (`POST …/secrets` `{values: {NAME: value|null}}`), delete one. Every change bumps the app's
// secrets version and restarts nothing; a machine gets the secrets at its next boot (its booted env
// is the app secrets overlaid by `config.env`: a name in the config shadows the secret).
// `deploy(app, base)` simulates `fly deploy`: every machine's config is rebuilt from a fly.toml-like
// base (its `[env]`, no secrets) and the machine reboots.
//
// How a deploy shows: `startDeploy(app)` moves one machine to state `replacing` and leases it to
// "flyctl deploy" (as flyctl does while it replaces a machine), and stamps a new
// `config.metadata.fly_release_version` on the machines already rolled; `finishDeploy(app)` rolls
// the rest, releases the lease and returns every machine to `started`.
//
// Nothing here logs; env values live in memory only and are returned only by `storedEnv`/`bootedEnv`.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type FakeFlyAction =
  | 'list'
  | 'get'
  | 'update'
  | 'lease_acquire'
  | 'lease_get'
  | 'lease_release'
  | 'secrets_list'
  | 'secrets_update'
  | 'secret_set'
  | 'secret_delete';

interface FakeSecret {
  value: string;
  digest: string;
  createdAt: string;
  updatedAt: string;
}

export interface FakeBudget {
  ratePerSec: number;
  burst: number;
}

/** Fly's published budgets (working-with-machines-api, "Rate Limits"). */
export const FAKE_DOCUMENTED_BUDGETS: { get: FakeBudget; other: FakeBudget } = {
  get: { ratePerSec: 5, burst: 10 },
  other: { ratePerSec: 1, burst: 3 },
};

export interface FakeMachine {
  id: string;
  name: string;
  state: string;
  region: string;
  instance_id: string;
  private_ip: string;
  config: Record<string, unknown> & { env?: Record<string, string>; metadata?: Record<string, string> };
  created_at: string;
  updated_at: string;
  events: Array<Record<string, unknown>>;
  /** Not part of Fly's response: bumped on every update, for asserts. */
  version: number;
  /** Not part of Fly's response: the env the running instance booted with. */
  bootedEnv: Record<string, string>;
  /** Not part of Fly's response: how many times an update booted the machine's new version. */
  restarts: number;
  minSecretsVersion: number | null;
}

interface FakeLease {
  nonce: string;
  owner: string;
  description: string;
  expiresAtMs: number;
  version: string;
}

interface FakeApp {
  name: string;
  machines: Map<string, FakeMachine>;
  secretsVersion: number;
  secrets: Map<string, FakeSecret>;
  release: number;
}

/** A fly.toml-like base `fly deploy` rebuilds every machine's config from. */
export interface DeployBase {
  /** fly.toml `[env]`. */
  env?: Record<string, string>;
  /** Other config fields (image, services, …). */
  config?: Record<string, unknown>;
}

export interface FailureRule {
  action: FakeFlyAction;
  /** Only for this machine (or, for `list`, app); any when omitted. */
  scope?: string;
  /** HTTP status to answer with; omit with `hang` or `delayMs` alone to slow a real answer. */
  status?: number;
  /** How many requests it applies to (default 1; Infinity for all). */
  count?: number;
  /** Delay before answering (or before the real handling). */
  delayMs?: number;
  /** Never answer (until the server closes). */
  hang?: boolean;
  /** Retry-After header (seconds) for the injected answer. */
  retryAfterSec?: number;
  /** Body for the injected answer (default `{error: "injected failure"}`). */
  body?: unknown;
  /** Raw text body instead of JSON (malformed responses). */
  rawBody?: string;
}

export interface RequestRecord {
  method: string;
  path: string;
  action: FakeFlyAction | null;
  app: string | null;
  machineId: string | null;
  /** True for GET. Dry-run asserts: every request was a read. */
  read: boolean;
  status: number;
  /** True when the answer came from an injected failure. */
  injected: boolean;
  at: number;
  /** Whether a lease nonce header was sent (never the nonce itself). */
  hadNonce: boolean;
}

export interface Counter {
  requests: number;
  /** 429s the fake's own rate limiter answered (the client exceeded the budget). */
  rateLimited: number;
  /** Injected failures answered (any status). */
  injected: number;
}

export interface FakeFlyOptions {
  /** Bearer token the fake accepts (default `test-fly-token-0000`). */
  token?: string;
  /** Clock for lease expiry and rate limiting (default `Date.now`). */
  now?: () => number;
  /** Enforce Fly's rate limits (default true). */
  rateLimit?: boolean;
  budgets?: { get: FakeBudget; other: FakeBudget };
  /** Owner recorded on leases the API's own callers take. */
  owner?: string;
}

export interface AddMachineInit {
  id?: string;
  name?: string;
  state?: string;
  region?: string;
  private_ip?: string;
  env?: Record<string, string>;
  metadata?: Record<string, string>;
  /** Extra config fields (image, guest, services, …) kept verbatim. */
  config?: Record<string, unknown>;
}

export interface FakeFlyApi {
  baseUrl: string;
  port: number;
  token: string;
  close(): Promise<void>;
  addApp(name: string): void;
  addMachine(app: string, init?: AddMachineInit): FakeMachine;
  /** A deep copy of the stored machine (including the fake-only fields). */
  machine(app: string, id: string): FakeMachine;
  machineIds(app: string): string[];
  setMachineState(app: string, id: string, state: string): void;
  /** Replace the stored config's extra fields, as an outside writer would. */
  setMachineConfig(app: string, id: string, config: FakeMachine['config']): void;
  /** The env in the stored config (durable delivery). */
  storedEnv(app: string, id: string): Record<string, string>;
  /** The env the running instance booted with (what a restart-less update did not change). */
  bootedEnv(app: string, id: string): Record<string, string>;
  setSecretsVersion(app: string, version: number): void;
  /** The app's secrets version (bumped by every secret change). */
  secretsVersion(app: string): number;
  /** Secret names, sorted. */
  secretNames(app: string): string[];
  /** A secret's value (tests only: the API never returns it). */
  secretValue(app: string, name: string): string | undefined;
  /** Set a secret as `fly secrets set --stage` would (an outside writer). */
  putSecret(app: string, name: string, value: string): void;
  /** `fly deploy`: every machine's config rebuilt from `base` (no secrets in it), rebooted. */
  deploy(app: string, base: DeployBase): void;
  /** Someone else takes the machine's lease; returns its nonce. */
  holdLease(
    app: string,
    id: string,
    opts?: { owner?: string; ttlSeconds?: number; description?: string },
  ): string;
  /** Current (unexpired) lease, for asserts; the nonce is returned only here. */
  leaseOf(app: string, id: string): FakeLease | null;
  startDeploy(app: string, opts?: { rolled?: number; state?: string }): void;
  finishDeploy(app: string): void;
  /** Adds a failure rule; rules are consumed in insertion order. */
  inject(rule: FailureRule): void;
  clearFailures(): void;
  readonly requests: readonly RequestRecord[];
  /** Counter per `${action}:${machineId|app}`. */
  counters(): Map<string, Counter>;
  totals(): Counter;
  /** Requests that were not reads. */
  writes(): RequestRecord[];
  resetLog(): void;
}

const DEPLOY_OWNER = 'flyctl-deploy@fake.fly';
const MAX_BODY = 1024 * 1024;

function newId(): string {
  return randomBytes(7).toString('hex');
}

function newInstanceId(): string {
  // 26 upper-case alphanumerics, shaped like Fly's ULID instance ids.
  const alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
  const bytes = randomBytes(26);
  let out = '';
  for (const b of bytes) out += alphabet[b % alphabet.length];
  return out;
}

function isStringRecord(v: unknown): v is Record<string, string> {
  return (
    typeof v === 'object' &&
    v !== null &&
    !Array.isArray(v) &&
    Object.values(v).every((x) => typeof x === 'string')
  );
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Environment-variable names: what a secret becomes inside a machine. */
const SECRET_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export async function startFakeFlyApi(opts: FakeFlyOptions = {}): Promise<FakeFlyApi> {
  // Digests are opaque, as Fly's: keyed with a per-server salt, so no test can compute one from a value.
  const digestSalt = randomBytes(16);
  const digestOf = (value: string) =>
    createHash('sha256').update(digestSalt).update(value, 'utf8').digest('hex').slice(0, 16);
  const token = opts.token ?? 'test-fly-token-0000';
  const now = opts.now ?? (() => Date.now());
  const rateLimit = opts.rateLimit ?? true;
  const budgets = opts.budgets ?? FAKE_DOCUMENTED_BUDGETS;
  const owner = opts.owner ?? 'keyroll@fake.fly';
  const apps = new Map<string, FakeApp>();
  const leases = new Map<string, FakeLease>(); // key app/id
  const buckets = new Map<string, { tokens: number; at: number }>();
  const counters = new Map<string, Counter>();
  const requests: RequestRecord[] = [];
  let failures: Array<FailureRule & { left: number }> = [];
  let ipCounter = 1;

  function app(name: string): FakeApp {
    const a = apps.get(name);
    if (!a) throw new Error(`fake fly: no app ${name}`);
    return a;
  }
  function machineOf(appName: string, id: string): FakeMachine {
    const m = app(appName).machines.get(id);
    if (!m) throw new Error(`fake fly: no machine ${appName}/${id}`);
    return m;
  }
  /** What a machine boots with: the app secrets, then its config env (a config name shadows a secret). */
  function bootEnv(a: FakeApp, m: FakeMachine): Record<string, string> {
    const env: Record<string, string> = {};
    for (const [name, secret] of a.secrets) env[name] = secret.value;
    return { ...env, ...(m.config.env ?? {}) };
  }
  function setSecret(a: FakeApp, name: string, value: string): FakeSecret {
    const at = new Date(now()).toISOString();
    const prev = a.secrets.get(name);
    const secret = { value, digest: digestOf(value), createdAt: prev?.createdAt ?? at, updatedAt: at };
    a.secrets.set(name, secret);
    return secret;
  }
  function publicSecret(name: string, s: FakeSecret): Record<string, unknown> {
    return { name, digest: s.digest, created_at: s.createdAt, updated_at: s.updatedAt };
  }
  function liveLease(appName: string, id: string): FakeLease | null {
    const key = `${appName}/${id}`;
    const l = leases.get(key);
    if (!l) return null;
    if (l.expiresAtMs <= now()) {
      leases.delete(key);
      return null;
    }
    return l;
  }
  function counter(key: string): Counter {
    let c = counters.get(key);
    if (!c) {
      c = { requests: 0, rateLimited: 0, injected: 0 };
      counters.set(key, c);
    }
    return c;
  }
  /** Classic refill token bucket, written independently of the client's GCRA on purpose. */
  function takeToken(action: FakeFlyAction, key: string): number | null {
    const b = action === 'get' ? budgets.get : budgets.other;
    const t = now();
    const bucket = buckets.get(key) ?? { tokens: b.burst, at: t };
    bucket.tokens = Math.min(b.burst, bucket.tokens + ((t - bucket.at) / 1000) * b.ratePerSec);
    bucket.at = t;
    buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return null;
    }
    return Math.max(1, Math.ceil((1 - bucket.tokens) / b.ratePerSec));
  }
  function publicMachine(m: FakeMachine): Record<string, unknown> {
    return {
      id: m.id,
      name: m.name,
      state: m.state,
      region: m.region,
      instance_id: m.instance_id,
      private_ip: m.private_ip,
      config: structuredClone(m.config),
      image_ref: {
        registry: 'registry.fly.io',
        repository: 'keyroll-fake',
        tag: 'latest',
        digest: 'sha256:0',
      },
      created_at: m.created_at,
      updated_at: m.updated_at,
      events: structuredClone(m.events),
      checks: [],
    };
  }
  function leaseBody(l: FakeLease): Record<string, unknown> {
    return {
      status: 'success',
      data: {
        nonce: l.nonce,
        expires_at: Math.floor(l.expiresAtMs / 1000),
        owner: l.owner,
        description: l.description,
        version: l.version,
      },
    };
  }
  function heldMessage(l: FakeLease, machineId: string): string {
    return `machine ID ${machineId} lease currently held by ${l.owner}, expires at ${new Date(l.expiresAtMs).toISOString()}`;
  }

  function route(
    method: string,
    path: string,
  ): { action: FakeFlyAction; app: string; machineId: string | null; secret?: string } | null {
    const sec = /^\/v1\/apps\/([^/]+)\/secrets(?:\/([^/]+))?\/?$/.exec(path);
    if (sec) {
      const appName = decodeURIComponent(sec[1]!);
      if (!sec[2]) {
        if (method === 'GET') return { action: 'secrets_list', app: appName, machineId: null };
        if (method === 'POST') return { action: 'secrets_update', app: appName, machineId: null };
        return null;
      }
      const secret = decodeURIComponent(sec[2]);
      if (method === 'POST') return { action: 'secret_set', app: appName, machineId: null, secret };
      if (method === 'DELETE') return { action: 'secret_delete', app: appName, machineId: null, secret };
      return null;
    }
    const m = /^\/v1\/apps\/([^/]+)\/machines(?:\/([^/]+)(\/lease)?)?\/?$/.exec(path);
    if (!m) return null;
    const appName = decodeURIComponent(m[1]!);
    const id = m[2] ? decodeURIComponent(m[2]) : null;
    if (id === null) return method === 'GET' ? { action: 'list', app: appName, machineId: null } : null;
    if (m[3]) {
      if (method === 'POST') return { action: 'lease_acquire', app: appName, machineId: id };
      if (method === 'GET') return { action: 'lease_get', app: appName, machineId: id };
      if (method === 'DELETE') return { action: 'lease_release', app: appName, machineId: id };
      return null;
    }
    if (method === 'GET') return { action: 'get', app: appName, machineId: id };
    if (method === 'POST') return { action: 'update', app: appName, machineId: id };
    return null;
  }

  async function readBody(req: IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      const buf = chunk as Buffer;
      size += buf.length;
      if (size > MAX_BODY) throw new Error('body too large');
      chunks.push(buf);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://fake.fly');
    const r = route(method, url.pathname);
    const nonceHeader = req.headers['fly-machine-lease-nonce'];
    const nonce = typeof nonceHeader === 'string' && nonceHeader.length > 0 ? nonceHeader : null;
    const record: RequestRecord = {
      method,
      path: url.pathname,
      action: r?.action ?? null,
      app: r?.app ?? null,
      machineId: r?.machineId ?? null,
      read: method === 'GET',
      status: 0,
      injected: false,
      at: now(),
      hadNonce: nonce !== null,
    };
    requests.push(record);
    const send = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
      record.status = status;
      const text = typeof body === 'string' ? body : JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(text);
    };

    const auth = req.headers.authorization;
    if (auth !== `Bearer ${token}`) return send(401, { error: 'unauthorized' });
    if (!r) return send(404, { error: 'not found' });

    const scope = r.machineId ?? r.app;
    const key = `${r.action}:${scope}`;
    const c = counter(key);
    c.requests += 1;

    const rule = failures.find((f) => f.left > 0 && f.action === r.action && (!f.scope || f.scope === scope));
    if (rule) {
      rule.left -= 1;
      if (rule.hang) return; // the socket stays open until close()
      if (rule.delayMs) await new Promise((resolve) => setTimeout(resolve, rule.delayMs));
      if (rule.status !== undefined) {
        c.injected += 1;
        record.injected = true;
        const headers: Record<string, string> =
          rule.retryAfterSec !== undefined ? { 'retry-after': String(rule.retryAfterSec) } : {};
        return send(rule.status, rule.rawBody ?? rule.body ?? { error: 'injected failure' }, headers);
      }
    }

    if (rateLimit) {
      const retryAfter = takeToken(r.action, key);
      if (retryAfter !== null) {
        c.rateLimited += 1;
        return send(429, { error: 'rate limit exceeded' }, { 'retry-after': String(retryAfter) });
      }
    }

    const a = apps.get(r.app);
    if (!a) return send(404, { error: `app ${r.app} not found` });
    if (r.action === 'list') {
      const region = url.searchParams.get('region');
      const list = [...a.machines.values()].filter((m) => !region || m.region === region).map(publicMachine);
      return send(200, list);
    }
    if (r.action === 'secrets_list') {
      // Values only ever reach the app's own machines: never in an API answer to a client outside.
      const secrets = [...a.secrets].sort(([x], [y]) => (x < y ? -1 : 1)).map(([n, v]) => publicSecret(n, v));
      return send(200, { secrets });
    }
    if (r.action === 'secret_set' || r.action === 'secret_delete' || r.action === 'secrets_update') {
      if (r.action === 'secret_delete') {
        const name = r.secret!;
        if (!a.secrets.has(name)) return send(404, { error: `secret ${name} not found` });
        a.secrets.delete(name);
        a.secretsVersion += 1;
        return send(200, { version: a.secretsVersion });
      }
      let body: unknown;
      try {
        body = JSON.parse(await readBody(req));
      } catch {
        return send(400, { error: 'invalid JSON body' });
      }
      if (!isObject(body)) return send(400, { error: 'body must be an object' });
      if (r.action === 'secret_set') {
        const name = r.secret!;
        if (!SECRET_NAME.test(name))
          return send(400, { error: `invalid secret name ${JSON.stringify(name)}` });
        if (typeof body.value !== 'string') return send(400, { error: 'value must be a string' });
        const secret = setSecret(a, name, body.value);
        a.secretsVersion += 1;
        return send(200, { ...publicSecret(name, secret), version: a.secretsVersion });
      }
      const values = body.values;
      if (!isObject(values) || Object.keys(values).length === 0) {
        return send(400, { error: 'values must map secret names to values' });
      }
      for (const [name, v] of Object.entries(values)) {
        if (!SECRET_NAME.test(name))
          return send(400, { error: `invalid secret name ${JSON.stringify(name)}` });
        if (v !== null && typeof v !== 'string')
          return send(400, { error: `value of ${name} must be a string or null` });
      }
      // All or nothing: validated above, applied together, one new version.
      for (const [name, v] of Object.entries(values)) {
        if (v === null) a.secrets.delete(name);
        else setSecret(a, name, v as string);
      }
      a.secretsVersion += 1;
      const secrets = [...a.secrets].map(([n, v]) => publicSecret(n, v));
      return send(200, { secrets, version: a.secretsVersion });
    }
    const m = r.machineId ? a.machines.get(r.machineId) : undefined;
    if (!m) return send(404, { error: 'machine not found' });

    switch (r.action) {
      case 'get':
        return send(200, publicMachine(m));
      case 'lease_get': {
        const l = liveLease(a.name, m.id);
        return l ? send(200, leaseBody(l)) : send(404, { error: 'lease not found' });
      }
      case 'lease_release': {
        const l = liveLease(a.name, m.id);
        if (!l) return send(404, { error: 'lease not found' });
        if (nonce !== l.nonce) return send(400, { error: 'lease nonce does not match' });
        leases.delete(`${a.name}/${m.id}`);
        return send(200, { status: 'success', data: { ok: true } });
      }
      case 'lease_acquire': {
        let body: unknown = {};
        const text = await readBody(req);
        if (text.trim() !== '') {
          try {
            body = JSON.parse(text);
          } catch {
            return send(400, { error: 'invalid JSON body' });
          }
        }
        if (!isObject(body)) return send(400, { error: 'body must be an object' });
        const ttl = body.ttl === undefined ? 30 : body.ttl;
        if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1) {
          return send(400, { error: 'ttl must be a positive integer' });
        }
        const held = liveLease(a.name, m.id);
        if (held && nonce !== held.nonce) return send(409, { error: heldMessage(held, m.id) });
        const lease: FakeLease = held
          ? { ...held, expiresAtMs: now() + ttl * 1000 }
          : {
              nonce: randomBytes(6).toString('hex'),
              owner,
              description: typeof body.description === 'string' ? body.description : '',
              expiresAtMs: now() + ttl * 1000,
              version: newInstanceId(),
            };
        leases.set(`${a.name}/${m.id}`, lease);
        return send(201, leaseBody(lease));
      }
      case 'update': {
        let body: unknown;
        try {
          body = JSON.parse(await readBody(req));
        } catch {
          return send(400, { error: 'invalid JSON body' });
        }
        if (!isObject(body) || !isObject(body.config)) return send(400, { error: 'config is required' });
        const config = body.config;
        if (config.env !== undefined && !isStringRecord(config.env)) {
          return send(400, { error: 'config.env must map names to strings' });
        }
        if (config.metadata !== undefined && !isStringRecord(config.metadata)) {
          return send(400, { error: 'config.metadata must map names to strings' });
        }
        const held = liveLease(a.name, m.id);
        if (held && nonce !== held.nonce) return send(409, { error: heldMessage(held, m.id) });
        if (body.current_version !== undefined && body.current_version !== m.instance_id) {
          return send(412, { error: 'current_version does not match the machine version' });
        }
        const minSecrets = body.min_secrets_version;
        if (minSecrets !== undefined) {
          if (typeof minSecrets !== 'number' || !Number.isInteger(minSecrets) || minSecrets < 0) {
            return send(400, { error: 'min_secrets_version must be a non-negative integer' });
          }
          if (minSecrets > a.secretsVersion) {
            return send(412, { error: `min_secrets_version ${minSecrets} is not available yet` });
          }
        }
        const skipLaunch = body.skip_launch === true;
        m.config = structuredClone(config) as FakeMachine['config'];
        m.version += 1;
        m.instance_id = newInstanceId();
        m.updated_at = new Date(now()).toISOString();
        m.minSecretsVersion = typeof minSecrets === 'number' ? minSecrets : null;
        m.events.unshift({ type: 'update', status: 'replaced', source: 'user', timestamp: now() });
        // An update replaces the machine's version. Without skip_launch the new version boots (a
        // running machine reboots into the new env); with it the new version is not launched, so a
        // running machine ends up stopped — flyctl waits for "stop" after `update --skip-launch`.
        if (!skipLaunch) {
          m.bootedEnv = bootEnv(a, m);
          m.restarts += 1;
          m.state = 'started';
          m.events.unshift({ type: 'start', status: 'started', source: 'flyd', timestamp: now() });
        } else if (m.state === 'started') {
          m.state = 'stopped';
          m.events.unshift({ type: 'exit', status: 'stopped', source: 'flyd', timestamp: now() });
        }
        return send(200, publicMachine(m));
      }
      default:
        return send(404, { error: 'not found' });
    }
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'fake fly internal error' }));
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  const api: FakeFlyApi = {
    baseUrl: `http://127.0.0.1:${port}`,
    port,
    token,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
    addApp(name) {
      if (!apps.has(name)) {
        apps.set(name, { name, machines: new Map(), secretsVersion: 0, secrets: new Map(), release: 1 });
      }
    },
    addMachine(appName, init = {}) {
      api.addApp(appName);
      const a = app(appName);
      const id = init.id ?? newId();
      const n = ipCounter++;
      const createdAt = new Date(now()).toISOString();
      const env = { ...(init.env ?? {}) };
      const m: FakeMachine = {
        id,
        name: init.name ?? `machine-${n}`,
        state: init.state ?? 'started',
        region: init.region ?? 'ord',
        instance_id: newInstanceId(),
        private_ip: init.private_ip ?? `fdaa:0:18:a7b:196:e274:9ce1:${n.toString(16)}`,
        config: {
          image: 'registry.fly.io/keyroll-fake:latest',
          guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 1024 },
          ...structuredClone(init.config ?? {}),
          env,
          metadata: {
            fly_process_group: 'app',
            fly_release_version: String(a.release),
            ...(init.metadata ?? {}),
          },
        },
        created_at: createdAt,
        updated_at: createdAt,
        events: [{ type: 'launch', status: 'created', source: 'user', timestamp: now() }],
        version: 1,
        bootedEnv: {},
        restarts: 0,
        minSecretsVersion: null,
      };
      // As if it had booted once (a stopped machine keeps what it last ran with).
      m.bootedEnv = bootEnv(a, m);
      a.machines.set(id, m);
      return structuredClone(m);
    },
    machine(appName, id) {
      return structuredClone(machineOf(appName, id));
    },
    machineIds(appName) {
      return [...app(appName).machines.keys()];
    },
    setMachineState(appName, id, state) {
      const m = machineOf(appName, id);
      m.state = state;
      m.updated_at = new Date(now()).toISOString();
      // A machine that boots again picks up its stored config and the app's current secrets.
      if (state === 'started') m.bootedEnv = bootEnv(app(appName), m);
    },
    setMachineConfig(appName, id, config) {
      const m = machineOf(appName, id);
      m.config = structuredClone(config);
      m.version += 1;
      m.instance_id = newInstanceId();
    },
    storedEnv(appName, id) {
      return { ...(machineOf(appName, id).config.env ?? {}) };
    },
    bootedEnv(appName, id) {
      return { ...machineOf(appName, id).bootedEnv };
    },
    setSecretsVersion(appName, version) {
      api.addApp(appName);
      app(appName).secretsVersion = version;
    },
    secretsVersion(appName) {
      return app(appName).secretsVersion;
    },
    secretNames(appName) {
      return [...app(appName).secrets.keys()].sort();
    },
    secretValue(appName, name) {
      return app(appName).secrets.get(name)?.value;
    },
    putSecret(appName, name, value) {
      api.addApp(appName);
      const a = app(appName);
      setSecret(a, name, value);
      a.secretsVersion += 1;
    },
    deploy(appName, base) {
      const a = app(appName);
      a.release += 1;
      for (const m of a.machines.values()) {
        const group = m.config.metadata?.fly_process_group ?? 'app';
        m.config = {
          image: 'registry.fly.io/keyroll-fake:latest',
          guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 1024 },
          ...structuredClone(base.config ?? {}),
          env: { ...(base.env ?? {}) },
          // Machine metadata survives (flyctl carries it over); the release is the new one.
          metadata: {
            ...(m.config.metadata ?? {}),
            fly_process_group: group,
            fly_release_version: String(a.release),
          },
        };
        m.version += 1;
        m.instance_id = newInstanceId();
        m.updated_at = new Date(now()).toISOString();
        m.events.unshift({ type: 'update', status: 'replaced', source: 'user', timestamp: now() });
        m.state = 'started';
        m.bootedEnv = bootEnv(a, m);
        m.restarts += 1;
      }
    },
    holdLease(appName, id, o = {}) {
      machineOf(appName, id);
      const lease: FakeLease = {
        nonce: randomBytes(6).toString('hex'),
        owner: o.owner ?? 'someone-else@fake.fly',
        description: o.description ?? 'held by another operator',
        expiresAtMs: now() + (o.ttlSeconds ?? 300) * 1000,
        version: newInstanceId(),
      };
      leases.set(`${appName}/${id}`, lease);
      return lease.nonce;
    },
    leaseOf(appName, id) {
      const l = liveLease(appName, id);
      return l ? { ...l } : null;
    },
    startDeploy(appName, o = {}) {
      const a = app(appName);
      a.release += 1;
      const ms = [...a.machines.values()];
      const rolled = Math.min(o.rolled ?? 0, ms.length);
      for (const m of ms.slice(0, rolled)) {
        m.config.metadata = { ...(m.config.metadata ?? {}), fly_release_version: String(a.release) };
      }
      const current = ms[rolled];
      if (current) {
        current.state = o.state ?? 'replacing';
        api.holdLease(appName, current.id, {
          owner: DEPLOY_OWNER,
          description: 'fly deploy',
          ttlSeconds: 600,
        });
      }
    },
    finishDeploy(appName) {
      const a = app(appName);
      for (const m of a.machines.values()) {
        m.config.metadata = { ...(m.config.metadata ?? {}), fly_release_version: String(a.release) };
        if (m.state === 'replacing' || m.state === 'updating') m.state = 'started';
        const l = liveLease(appName, m.id);
        if (l && l.owner === DEPLOY_OWNER) leases.delete(`${appName}/${m.id}`);
      }
    },
    inject(rule) {
      failures.push({ ...rule, left: rule.count ?? 1 });
    },
    clearFailures() {
      failures = [];
    },
    requests,
    counters() {
      return new Map([...counters].map(([k, v]) => [k, { ...v }]));
    },
    totals() {
      const t: Counter = { requests: 0, rateLimited: 0, injected: 0 };
      for (const c of counters.values()) {
        t.requests += c.requests;
        t.rateLimited += c.rateLimited;
        t.injected += c.injected;
      }
      return t;
    },
    writes() {
      return requests.filter((r) => !r.read);
    },
    resetLog() {
      requests.length = 0;
      counters.clear();
    },
  };
  return api;
}
