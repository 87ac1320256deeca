// Owns the observed state of one target: the zod schema of `GET /_kilo/state` and its summary.
import * as z from 'zod';

const count = z.number().int().nonnegative().nullish();

/**
 * Live-traffic evidence from the controller's proxy, counted since `since` (the later of the
 * current gateway spawn and the last key delivery). `accepted`: 2xx answers to POSTs (calls that
 * reach the provider); `keyRejected`: 401s whose body says the provider refused the key.
 */
export const TrafficSchema = z.object({
  since: z.string().nullish(),
  responses: count,
  accepted: count,
  keyRejected: count,
  lastAcceptedAt: z.string().nullish(),
  lastKeyRejectedAt: z.string().nullish(),
});

/**
 * Credential backups next to the profile stores (informational: no rule reads it); `plaintext`
 * counts those still holding a plaintext key of the managed provider (`--purge-plaintext-backups`).
 */
export const BackupsSchema = z.object({ total: count, plaintext: count });

/** The proxy's own report (informational: no rule reads it). */
export const ProxySchema = z.object({
  strategy: z.string().nullish(),
  inFlight: count,
  held: count,
  websockets: count,
});

/**
 * `GET /_kilo/state` as the controller reports it. Unknown fields are tolerated (zod strips them),
 * so a newer controller that adds fields never looks broken to an older reconciler.
 */
export const ObservedStateSchema = z.object({
  controller: z.object({
    version: z.string().nullish(),
    state: z.string(),
    delivery: z.string().nullish(),
  }),
  gateway: z.object({
    state: z.string(),
    pid: z.number().int().nullish(),
    startedAt: z.string().nullish(),
    restarts: z.number().int().nullish(),
    ready: z.boolean().nullish(),
    lastExit: z.unknown().optional(),
  }),
  key: z.object({
    envHash: z.string().nullish(),
    fileHash: z.string().nullish(),
    version: z.string().nullish(),
  }),
  profiles: z
    .array(
      z.object({
        agentId: z.string(),
        store: z.string().nullish(),
        profileId: z.string(),
        form: z.string(),
      }),
    )
    .default([]),
  // Older controllers send neither; a malformed one is dropped rather than failing the whole
  // observation: missing evidence must never make a target look broken or unreachable.
  traffic: TrafficSchema.nullish().catch(null),
  proxy: ProxySchema.nullish().catch(null),
  backups: BackupsSchema.nullish().catch(null),
});

export type ObservedState = z.infer<typeof ObservedStateSchema>;
export type ObservedProfile = ObservedState['profiles'][number];
export type ObservedTraffic = z.infer<typeof TrafficSchema>;

export type ObservedParse = { ok: true; state: ObservedState } | { ok: false; fields: string[] };

/**
 * `ObservedStateSchema.safeParse`, fast: a pass reads `/_kilo/state` once or more per target, and
 * zod's generic walk cost more than the rest of handling the answer (BENCHMARKS.md, reconcile
 * fleet). A hand-written check takes every answer that is valid as it stands, and builds what the
 * schema builds from it (the known fields only, `profiles` defaulted); anything else (a missing
 * or mistyped field, a malformed `traffic`/`proxy`/`backups` the schema drops to null) goes to
 * the schema itself, so the schema stays the one definition of what is accepted and how.
 * test/reconcile/observed.test.ts holds the two to the same answers.
 */
export function parseObservedState(body: unknown): ObservedParse {
  const fast = fastObserved(body);
  if (fast) return { ok: true, state: fast };
  const parsed = ObservedStateSchema.safeParse(body);
  if (parsed.success) return { ok: true, state: parsed.data };
  return { ok: false, fields: parsed.error.issues.map((i) => i.path.join('.') || '(body)') };
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const nullishString = (v: unknown) => v === undefined || v === null || typeof v === 'string';
const nullishInt = (v: unknown) => v === undefined || v === null || Number.isSafeInteger(v);
const nullishCount = (v: unknown) =>
  v === undefined || v === null || (Number.isSafeInteger(v) && (v as number) >= 0);
const nullishBool = (v: unknown) => v === undefined || v === null || typeof v === 'boolean';

/** Copies the named fields that are present (zod leaves an absent optional field absent). */
function pick(o: Obj, keys: readonly string[]): Obj {
  const out: Obj = {};
  for (const k of keys) if (k in o) out[k] = o[k];
  return out;
}

const CONTROLLER_KEYS = ['version', 'state', 'delivery'] as const;
const GATEWAY_KEYS = ['state', 'pid', 'startedAt', 'restarts', 'ready', 'lastExit'] as const;
const KEY_KEYS = ['envHash', 'fileHash', 'version'] as const;
const PROFILE_KEYS = ['agentId', 'store', 'profileId', 'form'] as const;
const TRAFFIC_KEYS = [
  'since',
  'responses',
  'accepted',
  'keyRejected',
  'lastAcceptedAt',
  'lastKeyRejectedAt',
] as const;
const PROXY_KEYS = ['strategy', 'inFlight', 'held', 'websockets'] as const;
const BACKUPS_KEYS = ['total', 'plaintext'] as const;

/** `undefined`: not valid as it stands, or one of the optional evidence objects needs the schema's catch. */
function fastObserved(body: unknown): ObservedState | undefined {
  if (!isObj(body)) return undefined;
  const { controller: c, gateway: g, key: k, profiles: ps, traffic: t, proxy: p, backups: b } = body;
  if (!isObj(c) || typeof c.state !== 'string' || !nullishString(c.version) || !nullishString(c.delivery))
    return undefined;
  if (
    !isObj(g) ||
    typeof g.state !== 'string' ||
    !nullishInt(g.pid) ||
    !nullishString(g.startedAt) ||
    !nullishInt(g.restarts) ||
    !nullishBool(g.ready)
  )
    return undefined;
  if (!isObj(k) || !nullishString(k.envHash) || !nullishString(k.fileHash) || !nullishString(k.version))
    return undefined;
  const profiles: Obj[] = [];
  if (ps !== undefined) {
    if (!Array.isArray(ps)) return undefined;
    for (const x of ps) {
      if (
        !isObj(x) ||
        typeof x.agentId !== 'string' ||
        !nullishString(x.store) ||
        typeof x.profileId !== 'string' ||
        typeof x.form !== 'string'
      )
        return undefined;
      profiles.push(pick(x, PROFILE_KEYS));
    }
  }
  const out: Obj = {
    controller: pick(c, CONTROLLER_KEYS),
    gateway: pick(g, GATEWAY_KEYS),
    key: pick(k, KEY_KEYS),
    profiles,
  };
  if ('traffic' in body) {
    if (t === undefined || t === null) out.traffic = t;
    else if (
      isObj(t) &&
      nullishString(t.since) &&
      nullishCount(t.responses) &&
      nullishCount(t.accepted) &&
      nullishCount(t.keyRejected) &&
      nullishString(t.lastAcceptedAt) &&
      nullishString(t.lastKeyRejectedAt)
    )
      out.traffic = pick(t, TRAFFIC_KEYS);
    else return undefined;
  }
  if ('proxy' in body) {
    if (p === undefined || p === null) out.proxy = p;
    else if (
      isObj(p) &&
      nullishString(p.strategy) &&
      nullishCount(p.inFlight) &&
      nullishCount(p.held) &&
      nullishCount(p.websockets)
    )
      out.proxy = pick(p, PROXY_KEYS);
    else return undefined;
  }
  if ('backups' in body) {
    if (b === undefined || b === null) out.backups = b;
    else if (isObj(b) && nullishCount(b.total) && nullishCount(b.plaintext))
      out.backups = pick(b, BACKUPS_KEYS);
    else return undefined;
  }
  return out as ObservedState;
}

/** The profile form each delivery mode requires. */
export function requiredForm(delivery: 'restart' | 'file'): 'keyRef-env' | 'keyRef-file' {
  return delivery === 'file' ? 'keyRef-file' : 'keyRef-env';
}

const LastExitSchema = z.object({
  code: z.number().nullish(),
  signal: z.string().nullish(),
});

/** "exit 1", "signal SIGKILL" or null, from whatever shape the controller reports `lastExit` in. */
export function describeLastExit(lastExit: unknown): string | null {
  const parsed = LastExitSchema.safeParse(lastExit);
  if (!parsed.success) return null;
  if (parsed.data.signal) return `signal ${parsed.data.signal}`;
  if (parsed.data.code !== null && parsed.data.code !== undefined) return `exit ${parsed.data.code}`;
  return null;
}
