import { describe, expect, it } from 'vitest';
import { parseObservedState } from '../../src/kilo-state.ts';
import { classify, plan } from '../../src/reconcile/plan.ts';
import { flat, keyRejection, reasonOf, status } from '../../src/reconcile/status.ts';
import { observedOrThrow } from '../support/observed.ts';
import { KEY_NEW, KEY_OLD, observed, TOKEN, traffic, want } from './support/fixtures.ts';

const plaintext = [{ agentId: 'main', store: 'sqlite', profileId: 'kilocode:default', form: 'plaintext' }];

describe('plan()', () => {
  const cases: Array<{
    name: string;
    delivery?: 'restart' | 'file';
    obs: ReturnType<typeof observed>;
    actions: string[];
  }> = [
    { name: 'in sync', obs: observed({}, KEY_NEW), actions: ['none'] },
    { name: 'old key, restart mode', obs: observed(), actions: ['deliver-key', 'wait-for-ready'] },
    {
      name: 'old key and plaintext profile',
      obs: observed({ profiles: plaintext }),
      actions: ['migrate-profiles', 'deliver-key', 'wait-for-ready'],
    },
    {
      name: 'right key, plaintext profile',
      obs: observed({ profiles: plaintext }, KEY_NEW),
      actions: ['migrate-profiles', 'wait-for-ready'],
    },
    { name: 'no profiles at all', obs: observed({ profiles: [] }, KEY_NEW), actions: ['none'] },
    {
      name: 'right key, gateway not ready',
      obs: observed({ gateway: { ready: false } }, KEY_NEW),
      actions: ['wait-for-ready'],
    },
    {
      name: 'right key, gateway crash-looping',
      obs: observed({ gateway: { state: 'backoff', pid: null, ready: false } }, KEY_NEW),
      actions: ['wait-for-ready'],
    },
    {
      name: 'unreadable profile cannot be fixed by a patch',
      obs: observed(
        { profiles: [{ agentId: 'main', store: 'json', profileId: 'kilocode:default', form: 'unreadable' }] },
        KEY_NEW,
      ),
      actions: ['none'],
    },
    {
      name: 'delivery mismatch plans nothing',
      obs: observed({ controller: { delivery: 'file' } }),
      actions: ['none'],
    },
    {
      name: 'file mode, old key: no restart',
      delivery: 'file',
      obs: observed({}, undefined, 'file'),
      actions: ['deliver-key'],
    },
    { name: 'file mode in sync', delivery: 'file', obs: observed({}, KEY_NEW, 'file'), actions: ['none'] },
    {
      name: 'no key yet (envHash null)',
      obs: observed({ key: { envHash: null, version: null } }),
      actions: ['deliver-key', 'wait-for-ready'],
    },
    {
      name: 'right key, traffic all accepted',
      obs: observed({ traffic: traffic() }, KEY_NEW),
      actions: ['none'],
    },
    {
      name: 'right key rejected, nothing ever accepted: no re-delivery',
      obs: observed({ traffic: traffic({ accepted: 0, rejected: 3 }) }, KEY_NEW),
      actions: ['none'],
    },
    {
      name: 'right key rejected after the last accepted response: no re-delivery',
      obs: observed({ traffic: traffic({ rejected: 3 }) }, KEY_NEW),
      actions: ['none'],
    },
    {
      name: 'right key, accepted after the last rejection',
      obs: observed({ traffic: traffic({ rejected: 3, acceptedAt: '2026-12-02T11:06:00.000Z' }) }, KEY_NEW),
      actions: ['none'],
    },
    {
      name: 'old key rejected: deliver the desired one',
      obs: observed({ traffic: traffic({ accepted: 0, rejected: 9 }) }),
      actions: ['deliver-key', 'wait-for-ready'],
    },
    {
      name: 'right key rejected, plaintext profile: migrate only',
      obs: observed({ profiles: plaintext, traffic: traffic({ rejected: 3 }) }, KEY_NEW),
      actions: ['migrate-profiles', 'wait-for-ready', 'none'],
    },
    {
      name: 'right key rejected, gateway not ready',
      obs: observed({ gateway: { ready: false }, traffic: traffic({ rejected: 3 }) }, KEY_NEW),
      actions: ['wait-for-ready', 'none'],
    },
    {
      name: 'file mode, right key rejected: no re-delivery',
      delivery: 'file',
      obs: observed({ traffic: traffic({ accepted: 0, rejected: 1 }) }, KEY_NEW, 'file'),
      actions: ['none'],
    },
  ];
  it.each(cases)('$name → $actions', ({ delivery, obs, actions }) => {
    expect(plan(want(delivery), obs).map((a) => a.type)).toEqual(actions);
  });

  // The verdict every driver acts on, and its agreement with the convergence rule: in-sync exactly
  // when status() finds no drift, whatever the observation.
  const verdicts: Record<string, string> = {
    'in sync': 'in-sync',
    'old key, restart mode': 'deliverable',
    'old key and plaintext profile': 'deliverable',
    'right key, plaintext profile': 'deliverable',
    'no profiles at all': 'in-sync',
    'right key, gateway not ready': 'waiting',
    'right key, gateway crash-looping': 'waiting',
    'unreadable profile cannot be fixed by a patch': 'unfixable',
    'delivery mismatch plans nothing': 'unfixable',
    'file mode, old key: no restart': 'deliverable',
    'file mode in sync': 'in-sync',
    'no key yet (envHash null)': 'deliverable',
    'right key, traffic all accepted': 'in-sync',
    'right key rejected, nothing ever accepted: no re-delivery': 'unfixable',
    'right key rejected after the last accepted response: no re-delivery': 'unfixable',
    'right key, accepted after the last rejection': 'in-sync',
    'old key rejected: deliver the desired one': 'deliverable',
    'right key rejected, plaintext profile: migrate only': 'deliverable',
    'right key rejected, gateway not ready': 'unfixable',
    'file mode, right key rejected: no re-delivery': 'unfixable',
  };
  it.each(cases)('classify: $name', ({ name, delivery, obs }) => {
    const verdict = classify(plan(want(delivery), obs));
    expect(verdict).toBe(verdicts[name]);
    expect(verdict === 'in-sync').toBe(status(want(delivery), obs).converged);
  });

  it('gives a reason for every action, with short hashes and never the key', () => {
    const actions = plan(want(), observed({ profiles: plaintext }));
    for (const a of actions) expect(a.reason.length).toBeGreaterThan(5);
    expect(actions[1]!.reason).toMatch(
      /envHash [0-9a-f]{12} differs from desired [0-9a-f]{12} \(version v1 → v2\)/,
    );
    expect(actions[2]!.reason).toContain('not 4242');
    expect(JSON.stringify(actions)).not.toContain(KEY_NEW);
  });

  it('a rejected desired key plans a none with the KeyRejected code, counts and since, never a secret', () => {
    const actions = plan(want(), observed({ traffic: traffic({ accepted: 0, rejected: 3 }) }, KEY_NEW));
    expect(actions).toEqual([
      {
        type: 'none',
        code: 'KeyRejected',
        reason:
          'the provider rejected the desired key on 3 responses since 2026-12-02T11:00:00.000Z, none accepted after; ' +
          'delivering the same key again cannot fix that: put a key the provider accepts in the key source',
      },
    ]);
    for (const secret of [KEY_NEW, KEY_OLD, TOKEN]) expect(JSON.stringify(actions)).not.toContain(secret);
  });

  it('a rejected old key gets a deliver-key and no KeyRejected code', () => {
    const actions = plan(want(), observed({ traffic: traffic({ rejected: 3 }) }));
    expect(actions.some((a) => a.code)).toBe(false);
  });
});

describe('flat', () => {
  it('renders as the template literal does (null, undefined, numbers, no value, empty pieces)', () => {
    const v = { n: null, u: undefined, pid: 4242, s: 'v1 → v2' };
    expect(flat`a ${v.n} b ${v.u} c ${v.pid}${v.s}`).toBe(`a ${v.n} b ${v.u} c ${v.pid}${v.s}`);
    expect(flat`${v.s}`).toBe(v.s);
    expect(flat`no value`).toBe('no value');
    expect(flat``).toBe('');
  });
});

describe('status()', () => {
  const cases: Array<{
    name: string;
    delivery?: 'restart' | 'file';
    obs: ReturnType<typeof observed>;
    ctx?: { patched: boolean; pidBefore?: number | null };
    drift: string[];
  }> = [
    { name: 'in sync', obs: observed({}, KEY_NEW), drift: [] },
    { name: 'empty profile list is fine', obs: observed({ profiles: [] }, KEY_NEW), drift: [] },
    { name: 'old key', obs: observed(), drift: ['fingerprint-differs'] },
    {
      name: 'not ready',
      obs: observed({ gateway: { ready: false } }, KEY_NEW),
      drift: ['gateway-not-ready'],
    },
    {
      name: 'stopped',
      obs: observed({ gateway: { state: 'stopped', ready: false } }, KEY_NEW),
      drift: ['gateway-not-running'],
    },
    { name: 'plaintext', obs: observed({ profiles: plaintext }, KEY_NEW), drift: ['profile-form'] },
    {
      name: 'restart mode, patched, same pid',
      obs: observed({}, KEY_NEW),
      ctx: { patched: true, pidBefore: 4242 },
      drift: ['pid-unchanged'],
    },
    {
      name: 'restart mode, patched, new pid',
      obs: observed({ gateway: { pid: 5000 } }, KEY_NEW),
      ctx: { patched: true, pidBefore: 4242 },
      drift: [],
    },
    {
      name: 'restart mode, patched while the gateway was down',
      obs: observed({}, KEY_NEW),
      ctx: { patched: true, pidBefore: null },
      drift: [],
    },
    {
      name: 'file mode keeps its pid',
      delivery: 'file',
      obs: observed({}, KEY_NEW, 'file'),
      ctx: { patched: true, pidBefore: 4242 },
      drift: [],
    },
    {
      name: 'file mode with env profiles',
      delivery: 'file',
      obs: observed(
        {
          profiles: [{ agentId: 'main', store: 'sqlite', profileId: 'kilocode:default', form: 'keyRef-env' }],
        },
        KEY_NEW,
        'file',
      ),
      drift: ['profile-form'],
    },
    {
      name: 'delivery mismatch',
      obs: observed({ controller: { delivery: 'file' } }, KEY_NEW),
      drift: ['delivery-mismatch'],
    },
    { name: 'no traffic reported (older controller)', obs: observed({ traffic: null }, KEY_NEW), drift: [] },
    { name: 'traffic, all accepted', obs: observed({ traffic: traffic() }, KEY_NEW), drift: [] },
    {
      name: 'rejected, nothing accepted',
      obs: observed({ traffic: traffic({ accepted: 0, rejected: 3 }) }, KEY_NEW),
      drift: ['key-rejected'],
    },
    {
      name: 'rejected after the last accepted',
      obs: observed({ traffic: traffic({ rejected: 3 }) }, KEY_NEW),
      drift: ['key-rejected'],
    },
    {
      name: 'accepted after the last rejection',
      obs: observed({ traffic: traffic({ rejected: 3, acceptedAt: '2026-12-02T11:06:00.000Z' }) }, KEY_NEW),
      drift: [],
    },
    {
      name: 'accepted at the same instant as the last rejection (cannot order: not evidence)',
      obs: observed(
        {
          traffic: traffic({
            rejected: 1,
            acceptedAt: '2026-12-02T11:05:00.000Z',
            rejectedAt: '2026-12-02T11:05:00.000Z',
          }),
        },
        KEY_NEW,
      ),
      drift: [],
    },
    {
      name: 'rejections without a time and nothing accepted',
      obs: observed({ traffic: traffic({ accepted: 0, rejected: 2, rejectedAt: null }) }, KEY_NEW),
      drift: ['key-rejected'],
    },
    {
      name: 'rejections without a time, something accepted (cannot order)',
      obs: observed({ traffic: traffic({ rejected: 2, rejectedAt: null }) }, KEY_NEW),
      drift: [],
    },
    {
      name: 'unparseable accepted time (cannot order)',
      obs: observed({ traffic: traffic({ rejected: 2, acceptedAt: 'yesterday' }) }, KEY_NEW),
      drift: [],
    },
    {
      name: 'a rejection time but a zero count',
      obs: observed({ traffic: traffic({ accepted: 0, rejectedAt: '2026-12-02T11:05:00.000Z' }) }, KEY_NEW),
      drift: [],
    },
    {
      name: 'old key rejected',
      obs: observed({ traffic: traffic({ rejected: 3 }) }),
      drift: ['fingerprint-differs', 'key-rejected'],
    },
    {
      name: 'file mode, rejected',
      delivery: 'file',
      obs: observed({ traffic: traffic({ accepted: 0, rejected: 1 }) }, KEY_NEW, 'file'),
      drift: ['key-rejected'],
    },
    {
      name: 'restart mode, patched, new pid, rejected',
      obs: observed({ gateway: { pid: 5000 }, traffic: traffic({ accepted: 0, rejected: 1 }) }, KEY_NEW),
      ctx: { patched: true, pidBefore: 4242 },
      drift: ['key-rejected'],
    },
  ];
  it.each(cases)('$name → $drift', ({ delivery, obs, ctx, drift }) => {
    const st = status(want(delivery), obs, ctx);
    expect(st.drift.map((d) => d.code)).toEqual(drift);
    expect(st.converged).toBe(drift.length === 0);
  });

  it('names the cosmetic success: patched, signaled, fingerprint unchanged', () => {
    const st = status(want(), observed(), { patched: true, pidBefore: 4242 });
    expect(st.converged).toBe(false);
    expect(st.drift[0]!.message).toMatch(
      /state still shows envHash [0-9a-f]{12} after the patch, desired [0-9a-f]{12}/,
    );
  });

  it('describes a crash loop with restarts and the last exit', () => {
    const st = status(
      want(),
      observed({
        gateway: {
          state: 'backoff',
          pid: null,
          ready: false,
          restarts: 7,
          lastExit: { code: 1, signal: null },
        },
      }),
    );
    expect(st.drift[0]!.message).toBe('gateway is backoff after 7 restarts (last exit 1)');
  });
});

describe('the KeyRejected rule', () => {
  it('names counts and since, never a secret', () => {
    const three = status(want(), observed({ traffic: traffic({ accepted: 0, rejected: 3 }) }, KEY_NEW));
    expect(three.drift).toEqual([
      {
        code: 'key-rejected',
        message:
          'the provider rejected the key on 3 responses since 2026-12-02T11:00:00.000Z, none accepted after',
      },
    ]);
    const one = status(want(), observed({ traffic: { keyRejected: 1 } }, KEY_NEW));
    expect(one.drift[0]?.message).toBe(
      'the provider rejected the key on 1 response since the gateway started or the key was delivered, none accepted after',
    );
    const old = status(want(), observed({ traffic: traffic({ rejected: 2 }) }));
    expect(old.drift[1]?.message).toMatch(/^the provider rejected the old key on 2 responses/);
    for (const st of [three, one, old])
      for (const secret of [KEY_NEW, KEY_OLD, TOKEN]) expect(JSON.stringify(st)).not.toContain(secret);
  });

  it('keyRejection() returns the evidence, or null without it', () => {
    expect(keyRejection(observed({ traffic: traffic({ rejected: 3 }) }, KEY_NEW))).toEqual({
      rejected: 3,
      since: '2026-12-02T11:00:00.000Z',
      lastKeyRejectedAt: '2026-12-02T11:05:00.000Z',
      lastAcceptedAt: '2026-12-02T11:04:00.000Z',
    });
    expect(keyRejection(observed({}, KEY_NEW))).toBeNull();
    expect(keyRejection(observed({ traffic: {} }, KEY_NEW))).toBeNull();
  });

  it('reasonOf(): KeyRejected only when the gateway runs the desired key', () => {
    const rejected = { code: 'key-rejected' as const, message: 'x' };
    const stale = { code: 'fingerprint-differs' as const, message: 'y' };
    const notReady = { code: 'gateway-not-ready' as const, message: 'z' };
    expect(reasonOf([rejected])).toBe('KeyRejected');
    expect(reasonOf([notReady, rejected])).toBe('KeyRejected');
    expect(reasonOf([stale, rejected])).toBeUndefined();
    expect(reasonOf([notReady])).toBeUndefined();
    expect(reasonOf([])).toBeUndefined();
  });
});

describe('parseObservedState: traffic and proxy', () => {
  const raw = (extra: Record<string, unknown>) => ({
    controller: { state: 'ready', delivery: 'restart' },
    gateway: { state: 'running', pid: 1, ready: true },
    key: { envHash: want().envHash },
    profiles: [],
    ...extra,
  });

  it('an older controller (no traffic, no proxy) parses and converges', () => {
    const o = observedOrThrow(raw({}));
    expect(o.traffic).toBeUndefined();
    expect(o.proxy).toBeUndefined();
    expect(status(want(), o).converged).toBe(true);
  });

  it('parses traffic and proxy, dropping unknown fields', () => {
    const o = observedOrThrow(
      raw({
        traffic: { ...traffic({ accepted: 0, rejected: 3 }), future: 1 },
        proxy: { strategy: 'hold', inFlight: 2, held: 0, websockets: 1, drainMs: 5 },
      }),
    );
    expect(o.traffic).toEqual(traffic({ accepted: 0, rejected: 3 }));
    expect(o.proxy).toEqual({ strategy: 'hold', inFlight: 2, held: 0, websockets: 1 });
    expect(status(want(), o).drift.map((d) => d.code)).toEqual(['key-rejected']);
  });

  it('a malformed traffic or proxy object is dropped, never fails the observation', () => {
    for (const extra of [
      { traffic: { keyRejected: 'three' } },
      { traffic: { keyRejected: -1 } },
      { traffic: 'busy' },
      { proxy: { strategy: 7 } },
      { proxy: [] },
    ]) {
      const parsed = parseObservedState(raw(extra));
      expect(parsed.ok, JSON.stringify(extra)).toBe(true);
      if (!parsed.ok) continue;
      expect(status(want(), parsed.state).converged).toBe(true);
    }
  });
});
