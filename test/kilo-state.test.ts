// The `/_kilo/state` contract (src/kilo-state.ts): what a reader accepts from an answer, what it
// keeps, and the fields it names when it refuses one.
import { describe, expect, it } from 'vitest';
import { describeLastExit, type KiloState, parseObservedState, waitOver } from '../src/kilo-state.ts';
import { STATE_ANSWER, STATE_KEPT } from './support/observed.ts';

const STATE = STATE_ANSWER;
const KEPT = STATE_KEPT;

describe('parseObservedState: accepted answers', () => {
  const accepted: [string, unknown, unknown][] = [
    ['the full answer (unknown fields dropped at every level)', STATE, KEPT],
    ['no profiles (defaulted to [])', { ...STATE, profiles: undefined }, { ...KEPT, profiles: [] }],
    [
      'minimal',
      { controller: { state: 'ready' }, gateway: { state: 'stopped' }, key: {} },
      { controller: { state: 'ready' }, gateway: { state: 'stopped' }, key: {}, profiles: [] },
    ],
    [
      'nulls',
      { ...STATE, key: { envHash: null, fileHash: null, version: null }, gateway: { state: 's', pid: null } },
      { ...KEPT, key: { envHash: null, fileHash: null, version: null }, gateway: { state: 's', pid: null } },
    ],
    [
      'traffic, proxy and backups (unknown fields dropped)',
      {
        ...STATE,
        traffic: { since: 't', responses: 3, accepted: 2, keyRejected: 0, lastAcceptedAt: null, x: 1 },
        proxy: { strategy: 'hold', inFlight: 0, held: 1, websockets: 2, lastRestart: null },
        backups: { total: 1, plaintext: 0 },
      },
      {
        ...KEPT,
        traffic: { since: 't', responses: 3, accepted: 2, keyRejected: 0, lastAcceptedAt: null },
        proxy: { strategy: 'hold', inFlight: 0, held: 1, websockets: 2 },
        backups: { total: 1, plaintext: 0 },
      },
    ],
    [
      'evidence null stays null',
      { ...STATE, traffic: null, proxy: null, backups: null },
      { ...KEPT, traffic: null, proxy: null, backups: null },
    ],
    [
      'malformed evidence is dropped to null, never fails the answer',
      { ...STATE, traffic: { responses: -1 }, proxy: 'fast', backups: { plaintext: 'many' } },
      { ...KEPT, traffic: null, proxy: null, backups: null },
    ],
    ['a proxy array is malformed evidence', { ...STATE, proxy: [] }, { ...KEPT, proxy: null }],
    [
      'lastExit kept as sent',
      { ...STATE, gateway: { ...STATE.gateway, lastExit: { code: 1, signal: null, at: 'x' } } },
      { ...KEPT, gateway: { ...STATE.gateway, lastExit: { code: 1, signal: null, at: 'x' } } },
    ],
  ];
  it.each(accepted)('%s', (_name, body, kept) => {
    const parsed = parseObservedState(body);
    expect(parsed).toStrictEqual({ ok: true, state: kept });
  });

  it('takes every answer this controller version sends (KiloState)', () => {
    const sent: KiloState = {
      controller: { version: '0.1.0', state: 'degraded', delivery: 'file' },
      gateway: {
        state: 'backoff',
        pid: null,
        startedAt: null,
        restarts: 3,
        ready: false,
        lastExit: { code: null, signal: 'SIGKILL', at: '2026-12-02T00:00:00Z' },
        version: '2026.6.8',
        keyResolution: 'file-per-request',
      },
      key: { envHash: null, fileHash: 'hmac-sha256:00', version: null },
      profiles: [{ agentId: '*', store: 'state-sqlite', profileId: 'kilocode:default', form: 'unreadable' }],
      backups: { total: 2, plaintext: 1 },
      proxy: {
        strategy: 'surge',
        state: 'holding',
        target: 3001,
        inFlight: 1,
        held: 4,
        websockets: 0,
        lastHold: { heldRequests: 4, longestWaitMs: 900, refused: 0, endedAt: 'x' },
        lastRestart: { strategy: 'hold', fallback: 'no port', at: 'x', durationMs: null },
      },
      traffic: {
        since: null,
        responses: 0,
        accepted: 0,
        keyRejected: 0,
        lastAcceptedAt: null,
        lastKeyRejectedAt: null,
      },
    };
    const parsed = parseObservedState(JSON.parse(JSON.stringify(sent)));
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(parsed.state.gateway).toStrictEqual({
      state: 'backoff',
      pid: null,
      startedAt: null,
      restarts: 3,
      ready: false,
      lastExit: sent.gateway.lastExit,
    });
    expect(parsed.state.proxy).toStrictEqual({ strategy: 'surge', inFlight: 1, held: 4, websockets: 0 });
    expect(parsed.state.traffic).toStrictEqual(sent.traffic);
    expect(describeLastExit(parsed.state.gateway.lastExit)).toBe('signal SIGKILL');
  });
});

describe('parseObservedState: refused answers name every field at fault', () => {
  const refused: [string, unknown, string[]][] = [
    ['a non-integer pid', { ...STATE, gateway: { ...STATE.gateway, pid: 1.5 } }, ['gateway.pid']],
    [
      'a pid past the safe integers',
      { ...STATE, gateway: { ...STATE.gateway, pid: 2 ** 60 } },
      ['gateway.pid'],
    ],
    ['a missing key object', { ...STATE, key: undefined }, ['key']],
    [
      'a negative waitMaxMs',
      { ...STATE, controller: { ...STATE.controller, waitMaxMs: -1 } },
      ['controller.waitMaxMs'],
    ],
    [
      'a profile without a form',
      { ...STATE, profiles: [{ agentId: 'a', profileId: 'p' }] },
      ['profiles.0.form'],
    ],
    [
      'bad profiles among good ones',
      { ...STATE, profiles: [STATE.profiles[0], 'x', { agentId: 1, profileId: 'p', form: 'f', store: 3 }] },
      ['profiles.1', 'profiles.2.agentId', 'profiles.2.store'],
    ],
    ['profiles not an array', { ...STATE, profiles: {} }, ['profiles']],
    ['profiles null', { ...STATE, profiles: null }, ['profiles']],
    [
      'several at once, in field order',
      { controller: { state: 1, version: 2 }, gateway: 'x', key: { envHash: 1 }, profiles: 'p' },
      ['controller.version', 'controller.state', 'gateway', 'key.envHash', 'profiles'],
    ],
    ['an empty object', {}, ['controller', 'gateway', 'key']],
    ['an array body', [STATE], ['(body)']],
    ['null', null, ['(body)']],
    ['a string', 'ready', ['(body)']],
  ];
  it.each(refused)('%s', (_name, body, fields) => {
    expect(parseObservedState(body)).toStrictEqual({ ok: false, fields });
  });
});

describe('a read that waits', () => {
  it('keeps the waitMaxMs a controller advertises; its absence stays absent', () => {
    const advertised = parseObservedState({
      ...STATE,
      controller: { ...STATE.controller, waitMaxMs: 20_000 },
    });
    expect(advertised.ok && advertised.state.controller.waitMaxMs).toBe(20_000);
    const older = parseObservedState(STATE);
    expect(older.ok && 'waitMaxMs' in older.state.controller).toBe(false);
  });

  it('waitOver: a ready gateway ends the wait, unless it is the one the caller had seen', () => {
    const gw = (ready: boolean | null, pid: number | null) => ({ gateway: { state: 'running', ready, pid } });
    expect(waitOver(gw(true, 5), null)).toBe(true);
    expect(waitOver(gw(true, 5), 4)).toBe(true);
    expect(waitOver(gw(true, 5), 5)).toBe(false);
    expect(waitOver(gw(false, 6), 5)).toBe(false);
    expect(waitOver(gw(null, 6), null)).toBe(false);
    expect(waitOver(gw(true, null), 5)).toBe(true);
  });
});

describe('describeLastExit', () => {
  it.each([
    [{ code: 1, signal: null }, 'exit 1'],
    [{ code: null, signal: 'SIGTERM' }, 'signal SIGTERM'],
    [{ code: 0 }, 'exit 0'],
    [{ code: null, signal: null }, null],
    [{ code: 'one' }, null],
    [{ code: Number.NaN }, null],
    ['exit 1', null],
    [null, null],
  ])('%j → %s', (lastExit, text) => {
    expect(describeLastExit(lastExit)).toBe(text);
  });
});
