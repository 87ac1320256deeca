// Owns `/_kilo/state` answers in tests: a full one with unknown fields (and what a reader keeps of
// it), live-traffic evidence, and the contract's check, failing the test with the fields at fault
// when an answer does not fit.
import { type ObservedState, parseObservedState } from '../../src/kilo-state.ts';

export function observedOrThrow(body: unknown): ObservedState {
  const parsed = parseObservedState(body);
  if (!parsed.ok) throw new Error(`/_kilo/state answer refused (fields: ${parsed.fields.join(', ')})`);
  return parsed.state;
}

/** A full answer, with fields a reader does not know (`extra`, `futureField`). */
export const STATE_ANSWER = {
  controller: { version: '1.0.0', state: 'ready', delivery: 'restart', extra: 'ignored' },
  gateway: { state: 'running', pid: 4242, startedAt: '2026-12-02T00:00:00Z', restarts: 0, ready: true },
  key: { envHash: 'a'.repeat(64), fileHash: null, version: 'v1' },
  profiles: [{ agentId: 'main', profileId: 'kilocode:default', store: 'sqlite', form: 'keyRef-env' }],
  futureField: { tolerated: true },
};

/** STATE_ANSWER as a reader keeps it: the known fields only. */
export const STATE_KEPT = {
  controller: { version: '1.0.0', state: 'ready', delivery: 'restart' },
  gateway: STATE_ANSWER.gateway,
  key: STATE_ANSWER.key,
  profiles: STATE_ANSWER.profiles,
};

/** Live traffic (`traffic`) where the provider refused the key: 3 of 120 answers, none accepted after. */
export const TRAFFIC_REJECTED = {
  since: '2026-12-02T11:00:00.000Z',
  responses: 120,
  accepted: 100,
  keyRejected: 3,
  lastAcceptedAt: '2026-12-02T11:04:00.000Z',
  lastKeyRejectedAt: '2026-12-02T11:05:00.000Z',
};

/** The same gateway one answer later: accepted after the refusals. */
export const TRAFFIC_ACCEPTED_LATER = {
  ...TRAFFIC_REJECTED,
  responses: 121,
  accepted: 101,
  lastAcceptedAt: '2026-12-02T11:06:00.000Z',
};

/** Nothing refused. */
export const TRAFFIC_HEALTHY = { ...TRAFFIC_ACCEPTED_LATER, keyRejected: 0, lastKeyRejectedAt: null };
