// Owns the shapes of Fly Machines API responses as keyroll reads them: zod schemas that keep
// unknown fields (a full config must round-trip through an update untouched) and reject
// responses missing what the loop relies on.
import * as z from 'zod';

/** Machine states from Fly's "Machine states and lifecycle" page (docs/machines/machine-states). */
export const KNOWN_MACHINE_STATES = [
  'created',
  'started',
  'stopped',
  'suspended',
  'failed',
  'creating',
  'starting',
  'stopping',
  'restarting',
  'suspending',
  'destroying',
  'launch_failed',
  'updating',
  'replacing',
  'destroyed',
  'replaced',
  'migrated',
] as const;

export type KnownMachineState = (typeof KNOWN_MACHINE_STATES)[number];

/**
 * The machine config. Only `env` and `metadata` are read; every other field (image, guest,
 * services, mounts, …) is kept as received because an update must send the entire config.
 */
export const MachineConfigSchema = z.looseObject({
  env: z.record(z.string(), z.string()).optional(),
  metadata: z.record(z.string(), z.string()).optional(),
  image: z.string().optional(),
});

export type MachineConfig = z.infer<typeof MachineConfigSchema>;

export const MachineSchema = z.looseObject({
  id: z.string().min(1),
  name: z.string().optional(),
  /** A string, not an enum: a state Fly adds later must not make the whole listing unreadable. */
  state: z.string().min(1),
  region: z.string().optional(),
  /** The current version of the machine; every update changes it. */
  instance_id: z.string().optional(),
  /** The machine's 6PN IPv6 address on the organisation's private network. */
  private_ip: z.string().optional(),
  config: MachineConfigSchema.optional(),
  created_at: z.string().optional(),
  updated_at: z.string().optional(),
  events: z.array(z.looseObject({})).optional(),
});

export type Machine = z.infer<typeof MachineSchema>;

export const MachineListSchema = z.array(MachineSchema);

/** Lease payload: `expires_at` is Unix seconds in the documented example. */
export const LeaseDataSchema = z.looseObject({
  nonce: z.string().min(1),
  expires_at: z.union([z.number(), z.string()]).optional(),
  owner: z.string().optional(),
  description: z.string().optional(),
  version: z.string().optional(),
});

/** Lease responses come wrapped: `{status: "success", data: {…}}`. */
export const LeaseEnvelopeSchema = z.looseObject({
  status: z.string().optional(),
  data: LeaseDataSchema,
});

export type LeaseData = z.infer<typeof LeaseDataSchema>;

/** Error bodies: `{error: "…", status?: "…"}` (the shape fly-go's FlapsError decodes). */
export const ErrorBodySchema = z.looseObject({
  error: z.string().optional(),
  message: z.string().optional(),
  status: z.string().optional(),
});

/** A lease as the client returns it, with the expiry normalised to epoch milliseconds. */
export interface Lease {
  nonce: string;
  expiresAtMs: number | null;
  owner: string | null;
  description: string | null;
  version: string | null;
}

export function toLease(data: LeaseData): Lease {
  return {
    nonce: data.nonce,
    expiresAtMs: expiresAtMs(data.expires_at),
    owner: data.owner ?? null,
    description: data.description ?? null,
    version: data.version ?? null,
  };
}

function expiresAtMs(v: number | string | undefined): number | null {
  if (v === undefined) return null;
  if (typeof v === 'number') return Number.isFinite(v) ? v * 1000 : null;
  const asNumber = Number(v);
  if (v.trim() !== '' && Number.isFinite(asNumber)) return asNumber * 1000;
  const parsed = Date.parse(v);
  return Number.isNaN(parsed) ? null : parsed;
}

/** Describes a zod failure by paths and issue codes only, never by the offending values. */
export function describeSchemaError(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${i.code}`)
    .join('; ');
}

/**
 * One app secret as listed: never a value from outside the app's machines (fly-go `AppSecret`:
 * name, digest, value omitted). `digest` is opaque: it changes when the value does, and cannot be
 * computed from a value on our side.
 */
export const AppSecretSchema = z.looseObject({
  name: z.string().min(1),
  digest: z.string().optional(),
  created_at: z.string().optional(),
  updated_at: z.string().optional(),
});
export type AppSecret = z.infer<typeof AppSecretSchema>;

/** `GET /v1/apps/{app}/secrets` → `{secrets: [...]}` (fly-go `ListAppSecretsResp`). */
export const AppSecretListSchema = z.looseObject({ secrets: z.array(AppSecretSchema).nullish() });

/**
 * `POST /v1/apps/{app}/secrets/{name}` → the secret plus the app's new secrets `version` (fly-go
 * `SetAppSecretResp`), the number a machine's `min_secrets_version` refers to.
 */
export const SetAppSecretResponseSchema = z.looseObject({
  name: z.string().optional(),
  digest: z.string().optional(),
  version: z.number().int().min(0),
});
export type SetAppSecretResponse = z.infer<typeof SetAppSecretResponseSchema>;
