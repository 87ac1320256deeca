// A small in-process stand-in for `keyroll controller` at the HTTP boundary, with injectable faults.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fingerprintEnv, fingerprintValue } from '../../../src/fingerprint.ts';
import { WAIT_HEADER, WAIT_PID_HEADER, waitOver } from '../../../src/kilo-state.ts';

export interface FakeProfile {
  agentId: string;
  profileId: string;
  store: string;
  form: string;
}

export interface Faults {
  /** Answer the first `count` requests of `method` with `status` (default 500), then behave. */
  failFirst?: { method: 'GET' | 'POST'; count: number; status?: number };
  /** Never answer requests of this method (the socket stays open until close()). */
  hang?: 'GET' | 'POST';
  /** Answer `signaled:true` to a patch but never change the state (the "cosmetic success"). */
  ignorePatch?: boolean;
  /** After a patch the gateway never becomes ready again: it crashes and backs off forever. */
  crashLoop?: boolean;
  /** Answer every patch with this status and error. */
  rejectPatch?: { status: number; error: string };
}

export interface FakeControllerOptions {
  token: string;
  envVar?: string;
  delivery?: 'restart' | 'file';
  /** The key the gateway runs with at start; null = none. */
  key?: string | null;
  profiles?: FakeProfile[];
  /** How long a restart keeps the gateway not ready. */
  restartMs?: number;
  faults?: Faults;
  /** `traffic` (and `proxy`) objects to report in `/_kilo/state`, as a proxying controller does; absent by default. */
  traffic?: unknown;
  proxy?: unknown;
  /**
   * Hold a state read that asks to wait (src/kilo-state.ts) up to this long, and advertise it as
   * keyroll's controller does; absent: every read is answered at once (an older keyroll controller).
   */
  waitMaxMs?: number;
}

export interface RecordedRequest {
  method: string;
  path: string;
  /** A state read's wait headers, when it sent them. */
  wait?: { ms: string; pid: string | null };
}

let nextPid = 40_000;

export interface FakeController {
  url: string;
  requests: RecordedRequest[];
  /** The key values the controller was sent (to check what reached it; tests only). */
  patches: string[];
  /** [start, end] wall-clock ms of every restart, from the patch until the gateway is back. */
  restartWindows: Array<[number, number | null]>;
  snapshot(): { pid: number | null; restarts: number; envHash: string | null; ready: boolean; state: string };
  setFaults(f: Faults): void;
  /** What `/_kilo/state` reports as `traffic` from now on (undefined: no field, as older controllers). */
  setTraffic(t: unknown): void;
  close(): Promise<void>;
}

export async function startFakeController(opts: FakeControllerOptions): Promise<FakeController> {
  const envVar = opts.envVar ?? 'KILOCODE_API_KEY';
  const delivery = opts.delivery ?? 'restart';
  let faults: Faults = opts.faults ?? {};
  let traffic: unknown = opts.traffic;
  const counts = { GET: 0, POST: 0 };
  const requests: RecordedRequest[] = [];
  const patches: string[] = [];
  const restartWindows: Array<[number, number | null]> = [];
  const timers = new Set<NodeJS.Timeout>();
  /** Held state reads: each is answered once `over()` holds (checked on every change) or at its time. */
  const held = new Set<{ over: () => boolean; answer: () => void }>();
  const changed = () => {
    for (const h of held) if (h.over()) h.answer();
  };
  const hash = (key: string | null) => ({
    envHash: key === null ? null : fingerprintEnv(opts.token, { [envVar]: key }),
    fileHash: key === null || delivery !== 'file' ? null : fingerprintValue(opts.token, key),
  });
  const gw = {
    state: 'running',
    pid: nextPid++ as number | null,
    restarts: 0,
    ready: true,
    startedAt: new Date().toISOString(),
    lastExit: null as null | { code: number | null; signal: string | null },
  };
  let keyState = { ...hash(opts.key ?? null), version: opts.key ? 'v-initial' : null };
  const profiles = (
    opts.profiles ?? [{ agentId: 'main', profileId: 'kilocode:default', store: 'sqlite', form: 'keyRef-env' }]
  ).map((p) => ({ ...p }));

  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  // Like a proxying controller: counters start afresh at a key delivery (and at a new spawn).
  const restartTraffic = () => {
    if (traffic === undefined) return;
    traffic = {
      since: new Date().toISOString(),
      responses: 0,
      accepted: 0,
      keyRejected: 0,
      lastAcceptedAt: null,
      lastKeyRejectedAt: null,
    };
  };

  const crash = () => {
    gw.state = 'backoff';
    gw.pid = null;
    gw.ready = false;
    gw.restarts++;
    gw.lastExit = { code: 1, signal: null };
    changed();
    later(50, crash);
  };

  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const method = req.method ?? 'GET';
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const waitMs = req.headers[WAIT_HEADER];
    const waitPid = req.headers[WAIT_PID_HEADER];
    requests.push({
      method,
      path,
      ...(typeof waitMs === 'string'
        ? { wait: { ms: waitMs, pid: typeof waitPid === 'string' ? waitPid : null } }
        : {}),
    });
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (faults.hang === method) return; // never answer
    if (req.headers.authorization !== `Bearer ${opts.token}`)
      return send(res, 401, { error: 'Unauthorized' });
    if (method === 'GET' || method === 'POST') {
      counts[method]++;
      const f = faults.failFirst;
      if (f && f.method === method && counts[method] <= f.count) {
        return send(res, f.status ?? 500, { error: 'Injected failure' });
      }
    }
    if (method === 'GET' && path === '/_kilo/state') {
      if (opts.waitMaxMs && typeof waitMs === 'string') {
        const pid = typeof waitPid === 'string' ? Number(waitPid) : null;
        const over = () => waitOver({ gateway: gw }, pid);
        if (!over()) {
          await new Promise<void>((resolve) => {
            const h = {
              over,
              answer: () => {
                held.delete(h);
                clearTimeout(t);
                timers.delete(t);
                resolve();
              },
            };
            const t = setTimeout(h.answer, Math.min(Number(waitMs), opts.waitMaxMs ?? 0));
            timers.add(t);
            held.add(h);
          });
        }
      }
      return send(res, 200, {
        controller: {
          version: '0.0.0-fake',
          state: 'ready',
          delivery,
          extra: 'ignored',
          ...(opts.waitMaxMs ? { waitMaxMs: opts.waitMaxMs } : {}),
        },
        gateway: { ...gw },
        key: keyState,
        profiles,
        ...(traffic !== undefined ? { traffic } : {}),
        ...(opts.proxy !== undefined ? { proxy: opts.proxy } : {}),
        futureField: { tolerated: true },
      });
    }
    if (method === 'POST' && path === '/_kilo/env/patch') {
      if (faults.rejectPatch)
        return send(res, faults.rejectPatch.status, { error: faults.rejectPatch.error });
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return send(res, 400, { error: 'Invalid JSON body' });
      }
      const value = (body as Record<string, unknown>)[envVar];
      if (typeof value !== 'string')
        return send(res, 400, { error: `Value for '${envVar}' must be a string` });
      patches.push(value);
      if (faults.ignorePatch) return send(res, 200, { ok: true, signaled: true, migratedProfiles: 0 });
      let migrated = 0;
      const form = delivery === 'file' ? 'keyRef-file' : 'keyRef-env';
      for (const p of profiles) {
        if (p.form === 'plaintext' || p.form === 'keyRef-env' || p.form === 'keyRef-file') {
          if (p.form !== form) migrated++;
          p.form = form;
        }
      }
      const version = String(req.headers['x-keyroll-key-version'] ?? '');
      if (delivery === 'file') {
        keyState = { ...keyState, fileHash: hash(value).fileHash, version };
        restartTraffic();
        return send(res, 200, { ok: true, signaled: gw.state === 'running', migratedProfiles: migrated });
      }
      const signaled = gw.state === 'running';
      const window: [number, number | null] = [Date.now(), null];
      restartWindows.push(window);
      gw.state = 'restarting';
      gw.ready = false;
      changed();
      later(opts.restartMs ?? 100, () => {
        // Like the real supervisor, `restarts` counts crash respawns, not requested restarts.
        gw.startedAt = new Date().toISOString();
        keyState = { ...hash(value), version };
        restartTraffic();
        if (faults.crashLoop) return crash();
        gw.state = 'running';
        gw.pid = nextPid++;
        gw.ready = true;
        window[1] = Date.now();
        changed();
      });
      return send(res, 200, { ok: true, signaled, migratedProfiles: migrated });
    }
    return send(res, 401, { error: 'Unauthorized', code: 'controller_route_unavailable' });
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    patches,
    restartWindows,
    snapshot: () => ({
      pid: gw.pid,
      restarts: gw.restarts,
      envHash: keyState.envHash,
      ready: gw.ready,
      state: gw.state,
    }),
    setFaults: (f) => {
      faults = f;
    },
    setTraffic: (t) => {
      traffic = t;
    },
    close: async () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const h of held) h.answer();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A loopback URL where nothing listens (a port that was just freed). */
export async function unreachableUrl(): Promise<string> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}
