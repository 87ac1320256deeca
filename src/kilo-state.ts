// Owns the `GET /_kilo/state` contract between the in-pod controller and everything that reads it:
// what a controller sends (`KiloState`), what a reader accepts from any controller version
// (`ObservedState`), and the hand-written check from an answer to the other. It imports nothing:
// the controller's bundle loads it, and that bundle has no room for zod (BENCHMARKS.md).

/** How a managed profile holds the key (`keyRef-*` is the goal; `plaintext` is what keyroll migrates). */
export type ProfileForm = 'keyRef-env' | 'keyRef-file' | 'plaintext' | 'missing' | 'unreadable';

/** How the running gateway gets the key, and so how a rotation reaches it. */
export type KeyResolution = 'env-per-spawn' | 'file-per-request' | 'file-on-reload';

export type RestartStrategy = 'hold' | 'surge';

/** Live answers since the current gateway took requests or the key changed. */
export interface KiloTraffic {
  /** Counting starts at the later of: the current gateway became the target, the key changed. */
  since: string | null;
  responses: number;
  /** 2xx answers to POST requests (the calls that reach the provider). */
  accepted: number;
  /** 401 answers (or event streams) whose body says the provider refused the key. */
  keyRejected: number;
  lastAcceptedAt: string | null;
  lastKeyRejectedAt: string | null;
}

/** What waits and what flows through the front door now, and how the last hold went. */
export interface KiloProxyFlow {
  state: 'routing' | 'holding' | 'unavailable';
  target: number | null;
  inFlight: number;
  held: number;
  websockets: number;
  /** The last hold: how many requests waited, the longest wait, and how many were refused. */
  lastHold: { heldRequests: number; longestWaitMs: number; refused: number; endedAt: string } | null;
}

/**
 * `GET /_kilo/state` as this version of the controller sends it (src/controller/controller.ts
 * builds it). Never a secret: the key appears only as fingerprints (HMAC-SHA256 keyed with the
 * caller's token). docs/controller.md describes every field.
 */
export interface KiloState {
  controller: {
    version: string;
    state: 'bootstrapping' | 'starting' | 'ready' | 'degraded';
    delivery: 'restart' | 'file';
    /**
     * The longest this controller holds a read that asks to wait (`WAIT_HEADER`). Always sent;
     * absent from older keyroll controllers, which answer every read at once.
     */
    waitMaxMs?: number;
  };
  gateway: {
    state: string;
    pid: number | null;
    startedAt: string | null;
    restarts: number;
    ready: boolean;
    lastExit: { code: number | null; signal: string | null; at: string } | null;
    /**
     * The OpenClaw version installed where the controller runs it (its package.json), or null
     * (a `--gateway-cmd` gateway, or a binary without one). Always sent; optional for readers
     * of older controllers.
     */
    version?: string | null;
    /** Always sent. */
    keyResolution?: KeyResolution;
  };
  key: { envHash: string | null; fileHash: string | null; version: string | null };
  /** Managed profiles; `agentId` is '*' for a gateway-wide store (OpenClaw 2026.9.x). */
  profiles: { agentId: string; store: string; profileId: string; form: ProfileForm }[];
  /** Credential backups; `plaintext`: those still holding a plaintext key of the provider. */
  backups: { total: number; plaintext: number } | null;
  /** The front door: strategy, what waits and what flows, and how the last restart went. */
  proxy: KiloProxyFlow & {
    /** The strategy restarts use now (`hold` once the gateway refused a surge). */
    strategy: RestartStrategy;
    /** `--restart-strategy`. Always sent; optional for readers of older controllers. */
    configuredStrategy?: RestartStrategy;
    /** Why `strategy` is not `configuredStrategy`, or null. Always sent. */
    strategyReason?: string | null;
    lastRestart: {
      strategy: RestartStrategy;
      fallback: string | null;
      at: string;
      durationMs: number | null;
    } | null;
  };
  traffic: KiloTraffic;
}

type Nullish<T> = T | null | undefined;

/** Live-traffic evidence as read; `accepted`/`keyRejected` count since `since`. */
export interface ObservedTraffic {
  since?: Nullish<string>;
  responses?: Nullish<number>;
  accepted?: Nullish<number>;
  keyRejected?: Nullish<number>;
  lastAcceptedAt?: Nullish<string>;
  lastKeyRejectedAt?: Nullish<string>;
}

export interface ObservedProfile {
  agentId: string;
  store?: Nullish<string>;
  profileId: string;
  form: string;
}

/**
 * `GET /_kilo/state` as a reader takes it from any controller version: the fields the engine
 * reads, most of them optional (older controllers omit them). Unknown fields are dropped, so a
 * newer controller that adds fields never looks broken to an older reader. `proxy` and `backups`
 * are informational (no rule reads them).
 */
export interface ObservedState {
  controller: {
    version?: Nullish<string>;
    state: string;
    delivery?: Nullish<string>;
    waitMaxMs?: Nullish<number>;
  };
  gateway: {
    state: string;
    pid?: Nullish<number>;
    startedAt?: Nullish<string>;
    restarts?: Nullish<number>;
    ready?: Nullish<boolean>;
    /** Kept as sent; `describeLastExit` reads it. */
    lastExit?: unknown;
  };
  key: { envHash?: Nullish<string>; fileHash?: Nullish<string>; version?: Nullish<string> };
  profiles: ObservedProfile[];
  traffic?: Nullish<ObservedTraffic>;
  proxy?: Nullish<{
    strategy?: Nullish<string>;
    inFlight?: Nullish<number>;
    held?: Nullish<number>;
    websockets?: Nullish<number>;
  }>;
  backups?: Nullish<{ total?: Nullish<number>; plaintext?: Nullish<number> }>;
}

/** Compile-time check that what a controller sends is what a reader accepts (true, or a type error). */
export type SentIsAccepted = Check<KiloState extends ObservedState ? true : false>;
type Check<T extends true> = T;

export type ObservedParse = { ok: true; state: ObservedState } | { ok: false; fields: string[] };

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isString = (v: unknown) => typeof v === 'string';
const isInt = (v: unknown) => Number.isSafeInteger(v);
const isCount = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
const isBool = (v: unknown) => typeof v === 'boolean';

/** A field: its name, whether it may be null or absent, and the check of a present value. */
type Field = readonly [name: string, nullish: boolean, check: (v: unknown) => boolean];

const CONTROLLER: readonly Field[] = [
  ['version', true, isString],
  ['state', false, isString],
  ['delivery', true, isString],
  ['waitMaxMs', true, isCount],
];
const GATEWAY: readonly Field[] = [
  ['state', false, isString],
  ['pid', true, isInt],
  ['startedAt', true, isString],
  ['restarts', true, isInt],
  ['ready', true, isBool],
  ['lastExit', true, () => true],
];
const KEY: readonly Field[] = [
  ['envHash', true, isString],
  ['fileHash', true, isString],
  ['version', true, isString],
];
const PROFILE: readonly Field[] = [
  ['agentId', false, isString],
  ['store', true, isString],
  ['profileId', false, isString],
  ['form', false, isString],
];
const TRAFFIC: readonly Field[] = [
  ['since', true, isString],
  ['responses', true, isCount],
  ['accepted', true, isCount],
  ['keyRejected', true, isCount],
  ['lastAcceptedAt', true, isString],
  ['lastKeyRejectedAt', true, isString],
];
const PROXY: readonly Field[] = [
  ['strategy', true, isString],
  ['inFlight', true, isCount],
  ['held', true, isCount],
  ['websockets', true, isCount],
];
const BACKUPS: readonly Field[] = [
  ['total', true, isCount],
  ['plaintext', true, isCount],
];

/**
 * The known fields of `value` (a field absent stays absent; unknown ones are dropped), or
 * undefined with each failing path pushed to `bad` (`at` + name; `at` alone when not an object).
 */
function object(value: unknown, fields: readonly Field[], at: string, bad: string[]): Obj | undefined {
  if (!isObj(value)) {
    bad.push(at || '(body)');
    return undefined;
  }
  const out: Obj = {};
  let ok = true;
  for (const [name, nullish, check] of fields) {
    const v = value[name];
    if (v === undefined || v === null ? nullish : check(v)) {
      if (name in value) out[name] = v;
    } else {
      bad.push(at ? `${at}.${name}` : name);
      ok = false;
    }
  }
  return ok ? out : undefined;
}

/** Optional evidence: absent stays absent, null stays null, malformed becomes null (never fails the answer). */
function evidence(body: Obj, name: string, fields: readonly Field[], out: Obj): void {
  if (!(name in body)) return;
  const v = body[name];
  out[name] = v === undefined || v === null ? v : (object(v, fields, name, []) ?? null);
}

/**
 * Checks an answer of `GET /_kilo/state` and keeps what a reader uses: the known fields only,
 * `profiles` defaulted to `[]`, a malformed `traffic`/`proxy`/`backups` dropped to null (missing
 * evidence must never make a target look broken or unreachable). Anything else that does not fit
 * `ObservedState` fails with the path of every field at fault (`gateway.state`, `profiles.1.form`,
 * `(body)`). Hand-written rather than a schema walk: a pass reads `/_kilo/state` once or more per
 * target, and a generic walk cost more than the rest of handling the answer (BENCHMARKS.md).
 */
export function parseObservedState(body: unknown): ObservedParse {
  if (!isObj(body)) return { ok: false, fields: ['(body)'] };
  const bad: string[] = [];
  const controller = object(body.controller, CONTROLLER, 'controller', bad);
  const gateway = object(body.gateway, GATEWAY, 'gateway', bad);
  const key = object(body.key, KEY, 'key', bad);
  const ps = body.profiles;
  // Made at its length, not grown by push (which leaves room for 17): a target's observed state
  // lives as long as the target is in flight. A profile at fault fails the whole answer.
  const profiles = new Array<Obj | undefined>(Array.isArray(ps) ? ps.length : 0);
  if (Array.isArray(ps)) {
    for (let i = 0; i < ps.length; i++) profiles[i] = object(ps[i], PROFILE, `profiles.${i}`, bad);
  } else if (ps !== undefined) bad.push('profiles');
  if (bad.length > 0 || !controller || !gateway || !key) return { ok: false, fields: bad };
  const out: Obj = { controller, gateway, key, profiles };
  evidence(body, 'traffic', TRAFFIC, out);
  evidence(body, 'proxy', PROXY, out);
  evidence(body, 'backups', BACKUPS, out);
  return { ok: true, state: out as unknown as ObservedState };
}

// ---- a read that waits -------------------------------------------------------------------------
//
// A keyroll controller can hold `GET /_kilo/state` until its gateway is ready:
// the reconciler asks so right after a restart-mode patch instead of polling, and gets the answer
// the moment the new gateway serves. The request names how long it may be held (WAIT_HEADER, at
// most the `controller.waitMaxMs` the controller advertises; more is held that long) and,
// optionally, the gateway it has already seen (WAIT_PID_HEADER: a ready gateway with that PID
// does not end the wait). The answer is the usual state, sent when `waitOver` holds or the time
// is up. A controller that does not know the headers answers at once, which a reader handles as
// any early look. docs/controller.md, "A read that waits".

/** Request header: hold this `GET /_kilo/state` up to this many milliseconds (a whole number). */
export const WAIT_HEADER = 'x-keyroll-wait-ms';
/** Request header: a ready gateway with this PID (the one seen before a restart) does not end the wait. */
export const WAIT_PID_HEADER = 'x-keyroll-wait-pid';

/**
 * What a read that waits asks: hold it up to `ms`; a ready gateway with PID `pid` (the one the
 * caller saw before a restart) does not end the wait. The reconciler sends it, the controller holds it.
 */
export interface StateWait {
  ms: number;
  pid: number | null;
}

/** Whether a held read is answered now: the gateway is ready, and is not the one the caller had seen. */
export function waitOver(state: Pick<ObservedState, 'gateway'>, pid: number | null): boolean {
  return state.gateway.ready === true && (pid === null || state.gateway.pid !== pid);
}

/** The profile form each delivery mode requires. */
export function requiredForm(delivery: 'restart' | 'file'): 'keyRef-env' | 'keyRef-file' {
  return delivery === 'file' ? 'keyRef-file' : 'keyRef-env';
}

/** "exit 1", "signal SIGKILL" or null, from whatever shape the controller reports `lastExit` in. */
export function describeLastExit(lastExit: unknown): string | null {
  if (!isObj(lastExit)) return null;
  const { code, signal } = lastExit;
  if (!(code === undefined || code === null || Number.isFinite(code))) return null;
  if (!(signal === undefined || signal === null || typeof signal === 'string')) return null;
  if (signal) return `signal ${signal}`;
  if (code !== null && code !== undefined) return `exit ${code}`;
  return null;
}
