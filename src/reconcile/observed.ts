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
