import { describe, expect, it } from 'vitest';
import { plan } from '../../src/reconcile/plan.ts';
import { status } from '../../src/reconcile/status.ts';
import { KEY_NEW, observed, want } from './support/fixtures.ts';

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
  ];
  it.each(cases)('$name → $actions', ({ delivery, obs, actions }) => {
    expect(plan(want(delivery), obs).map((a) => a.type)).toEqual(actions);
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
