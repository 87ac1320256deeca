// Retiring previous versions against the fake key API: exactly one successful revoke per version
// whatever point a crash hits, oldest first, retries on 5xx, a final refusal recorded; the webhook
// once per retirable version; no key or token in any request the retirement makes.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import {
  advance,
  EMPTY_LIFECYCLE,
  type KeyLifecycle,
  summarize,
  type TargetProof,
} from '../../src/lifecycle/lifecycle.ts';
import {
  type CallPolicy,
  httpAnnouncer,
  httpRevoker,
  type RetirableNotice,
  type Revoker,
  retire,
} from '../../src/lifecycle/retire.ts';
import { silentLogger } from '../../src/log.ts';
import { type FakeKeyApi, startFakeKeyApi } from '../support/fake-key-api.ts';

const TOKEN = 'source-token-0123456789abcdef';
const fast: CallPolicy = { retries: 3, minTimeoutMs: 5, maxTimeoutMs: 20, timeoutMs: 2_000 };
const policy = { retireAfterMs: 60_000, keepRetired: 5 };
const proving = (...names: string[]): TargetProof[] =>
  names.map((name) => ({ name, observed: true, proves: true }));

let api: FakeKeyApi;
beforeEach(async () => {
  api = await startFakeKeyApi({ token: TOKEN });
});
afterEach(async () => {
  await api.close();
});

/** A lifecycle in which every version but the newest is retirable: A → … → newest, proven, grace passed. */
function retirableUpTo(versions: string[]): KeyLifecycle {
  let lc = EMPTY_LIFECYCLE;
  let t = 0;
  for (const v of versions) {
    t += 1_000;
    lc = advance(lc, summarize(v, proving('p1', 'p2'), false), t, policy).lifecycle;
  }
  return advance(lc, summarize(versions.at(-1)!, proving('p1', 'p2'), false), t + 61_000, policy).lifecycle;
}

class Crash extends Error {}

/** A durable store that "crashes" (throws) on its n-th write, the write not taken. */
function store(initial: KeyLifecycle, crashAtWrite: number | null) {
  let durable = initial;
  let writes = 0;
  return {
    get: () => durable,
    persist: async (lc: KeyLifecycle) => {
      writes++;
      if (writes === crashAtWrite) throw new Crash(`crash at write ${writes}`);
      durable = structuredClone(lc);
    },
  };
}

/** A revoker whose call reaches the API but whose answer is lost (the crash lands mid-call). */
function losingAnswer(inner: Revoker, lose: Set<number>): Revoker {
  let n = 0;
  return {
    describe: inner.describe,
    async revoke(version, signal) {
      n++;
      const r = await inner.revoke(version, signal);
      if (lose.has(n)) throw new Crash(`answer ${n} lost`);
      return r;
    },
  };
}

function deps(persist: (lc: KeyLifecycle) => Promise<void>, revoker?: Revoker) {
  return {
    persist,
    revoker,
    clock: new ManualClock(5_000_000),
    log: silentLogger(),
    signal: new AbortController().signal,
  };
}

describe('retire with a revoke URL', () => {
  it('revokes the previous version once, records Retired, and never sends a key or the token in the body', async () => {
    const a = api.current();
    const b = api.mint();
    const s = store(retirableUpTo([a.version, b.version]), null);
    const out = await retire(
      s.get(),
      { gatewayKey: 'gk', provenTargets: ['p1', 'p2'] },
      deps(s.persist, httpRevoker(api.revokeUrl, TOKEN, fast)),
    );
    expect(out.revoked).toEqual([a.version]);
    expect(s.get().previous[0]).toMatchObject({ version: a.version, state: 'Retired', revokeAttempts: 1 });
    expect(api.revokedCount(a.version)).toBe(1);
    expect(api.activeKeys()).toEqual([b.key]);
    const revokeRequests = api.requestLog.filter((l) => l.startsWith('POST /keys/revoke'));
    expect(revokeRequests).toHaveLength(1);
    expect(revokeRequests[0]).not.toContain(a.key);
    expect(revokeRequests[0]).not.toContain(b.key);
    expect(revokeRequests[0]!.split(' ').at(-1)).toBe(JSON.stringify({ version: a.version }));
  });

  it('a crash at every point (each write, a lost answer) ends with exactly one successful revoke per version, oldest first', async () => {
    const versions = [api.current().version, api.mint().version, api.mint().version];
    for (let crashAt = 1; crashAt <= 4; crashAt++) {
      for (const lose of [new Set<number>(), new Set([1]), new Set([2])]) {
        await api.close();
        api = await startFakeKeyApi({ token: TOKEN });
        const vs = [api.current().version, api.mint().version, api.mint().version];
        expect(vs).toEqual(versions);
        const s = store(retirableUpTo(vs), crashAt);
        const revoker = losingAnswer(httpRevoker(api.revokeUrl, TOKEN, fast), lose);
        // Run passes until nothing is left to retire, as a restarted process would.
        for (let pass = 0; pass < 6; pass++) {
          await retire(s.get(), { gatewayKey: 'gk', provenTargets: ['p1'] }, deps(s.persist, revoker)).catch(
            (e) => {
              if (!(e instanceof Crash)) throw e;
            },
          );
        }
        const label = `crash at write ${crashAt}, lost answers ${[...lose].join(',') || 'none'}`;
        expect({
          label,
          a: api.revokedCount(vs[0]!),
          b: api.revokedCount(vs[1]!),
          c: api.revokedCount(vs[2]!),
        }).toEqual({
          label,
          a: 1,
          b: 1,
          c: 0,
        });
        const okOrder = api.revokeCalls.filter((c) => c.status === 200).map((c) => c.version);
        expect(okOrder).toEqual([vs[0], vs[1]]);
        expect(s.get().previous.map((p) => p.state)).toEqual(['Retired', 'Retired']);
      }
    }
  });

  it('retries a 503, and records a refusal (400) without marking the version retired', async () => {
    const [a, b] = [api.current(), api.mint()];
    api.failNext('revoke', 2, 503);
    const s = store(retirableUpTo([a.version, b.version]), null);
    const out = await retire(
      s.get(),
      { gatewayKey: 'gk', provenTargets: [] },
      deps(s.persist, httpRevoker(api.revokeUrl, TOKEN, fast)),
    );
    expect(out.revoked).toEqual([a.version]);
    expect(api.revokeCalls.map((c) => c.status)).toEqual([503, 503, 200]);

    const c = api.mint();
    api.failNext('revoke', 1, 400);
    const s2 = store(
      advance(s.get(), summarize(c.version, proving('p1'), false), 9_000_000, {
        ...policy,
        retireAfterMs: 0,
      }).lifecycle,
      null,
    );
    const refused = await retire(
      s2.get(),
      { gatewayKey: 'gk', provenTargets: [] },
      deps(s2.persist, httpRevoker(api.revokeUrl, TOKEN, fast)),
    );
    expect(refused.error).toMatch(/^revoke http:\/\/127\.0\.0\.1:\d+\/keys\/revoke: HTTP 400$/);
    expect(s2.get().previous.find((p) => p.version === b.version)).toMatchObject({
      state: 'Retiring',
      reason: 'RevokeFailed',
    });
    expect(api.revokedCount(b.version)).toBe(0);
    const again = await retire(
      s2.get(),
      { gatewayKey: 'gk', provenTargets: [] },
      deps(s2.persist, httpRevoker(api.revokeUrl, TOKEN, fast)),
    );
    expect(again.revoked).toEqual([b.version]);
  });

  it('never revokes what advance did not make retirable', async () => {
    const [a, b] = [api.current(), api.mint()];
    const lc = advance(
      advance(EMPTY_LIFECYCLE, summarize(a.version, proving('p1'), false), 0, policy).lifecycle,
      summarize(b.version, [{ name: 'p1', observed: false, proves: false }], false),
      100_000,
      policy,
    ).lifecycle;
    const s = store(lc, null);
    const out = await retire(
      lc,
      { gatewayKey: 'gk', provenTargets: [] },
      deps(s.persist, httpRevoker(api.revokeUrl, TOKEN, fast)),
    );
    expect(out.revoked).toEqual([]);
    expect(api.revokeCalls).toEqual([]);
  });
});

describe('retirable-key webhook', () => {
  let server: Server;
  let bodies: string[];
  let failures: number;
  beforeEach(async () => {
    bodies = [];
    failures = 0;
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (failures > 0) {
          failures--;
          res.writeHead(502).end();
          return;
        }
        bodies.push(`${JSON.stringify(req.headers)} ${Buffer.concat(chunks).toString('utf8')}`);
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  });
  afterEach(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it('is delivered once per retirable version, with retries, and carries versions and targets only', async () => {
    const [a, b] = [api.current(), api.mint()];
    failures = 2;
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    const s = store(retirableUpTo([a.version, b.version]), null);
    const d = { ...deps(s.persist), announcer: httpAnnouncer(url, fast) };
    const ctx = { gatewayKey: 'gk', namespace: 'gateways', provenTargets: ['p1', 'p2'] };
    await retire(s.get(), ctx, d);
    await retire(s.get(), ctx, d);
    expect(bodies).toHaveLength(1);
    const notice = JSON.parse(bodies[0]!.slice(bodies[0]!.indexOf('} ') + 2)) as RetirableNotice;
    expect(notice).toEqual({
      gatewayKey: 'gk',
      namespace: 'gateways',
      previousVersion: a.version,
      currentVersion: b.version,
      provenTargets: ['p1', 'p2'],
    });
    for (const secret of [a.key, b.key, TOKEN]) expect(bodies[0]).not.toContain(secret);
    expect(s.get().previous[0]).toMatchObject({ state: 'Retirable' });
    expect(s.get().previous[0]!.announcedAt).toBeDefined();
  });
});
