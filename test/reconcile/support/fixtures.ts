// Builders for pure reconciler tests: a desired state and observed states around it.

import type { ObservedState } from '../../../src/kilo-state.ts';
import { type Desired, desired } from '../../../src/reconcile/desired.ts';

export const TOKEN = 'test-token-fixture-0001';
export const KEY_OLD = 'test-key-A-old-0000000001';
export const KEY_NEW = 'test-key-B-new-0000000002';

export function want(delivery: 'restart' | 'file' = 'restart', key = KEY_NEW): Desired {
  return desired({ envVar: 'KILOCODE_API_KEY', delivery }, { key, version: 'v2' }, TOKEN);
}

type Patch = {
  controller?: Partial<ObservedState['controller']>;
  gateway?: Partial<ObservedState['gateway']>;
  key?: Partial<ObservedState['key']>;
  profiles?: ObservedState['profiles'];
  traffic?: ObservedState['traffic'];
  proxy?: ObservedState['proxy'];
};

const SINCE = '2026-12-02T11:00:00.000Z';

/** Live traffic as a proxying controller reports it: `rejected` 401s, the last at `at(rejectedAt)`. */
export function traffic(
  p: { accepted?: number; rejected?: number; acceptedAt?: string | null; rejectedAt?: string | null } = {},
): NonNullable<ObservedState['traffic']> {
  const accepted = p.accepted ?? 100;
  const rejected = p.rejected ?? 0;
  return {
    since: SINCE,
    responses: accepted + rejected + 17,
    accepted,
    keyRejected: rejected,
    lastAcceptedAt:
      p.acceptedAt === undefined ? (accepted ? '2026-12-02T11:04:00.000Z' : null) : p.acceptedAt,
    lastKeyRejectedAt:
      p.rejectedAt === undefined ? (rejected ? '2026-12-02T11:05:00.000Z' : null) : p.rejectedAt,
  };
}

/** An observation of a target that runs `key` (default: the old one) in `delivery` mode, ready. */
export function observed(
  p: Patch = {},
  key = KEY_OLD,
  delivery: 'restart' | 'file' = 'restart',
): ObservedState {
  const d = want(delivery, key);
  return {
    controller: { version: '0.1.0', state: 'ready', delivery, ...p.controller },
    gateway: {
      state: 'running',
      pid: 4242,
      startedAt: '2026-01-01T00:00:00.000Z',
      restarts: 0,
      ready: true,
      lastExit: null,
      ...p.gateway,
    },
    key: {
      envHash: d.envHash,
      fileHash: delivery === 'file' ? d.fileHash : null,
      version: key === KEY_OLD ? 'v1' : 'v2',
      ...p.key,
    },
    ...(p.traffic !== undefined ? { traffic: p.traffic } : {}),
    ...(p.proxy !== undefined ? { proxy: p.proxy } : {}),
    profiles: p.profiles ?? [
      {
        agentId: 'main',
        store: 'sqlite',
        profileId: 'kilocode:default',
        form: delivery === 'file' ? 'keyRef-file' : 'keyRef-env',
      },
    ],
  };
}
