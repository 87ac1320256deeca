// Owns the operator's port to the Kubernetes API: the calls it makes, the objects it caches, and how calls fail.
import * as z from 'zod';
import { KEY_SOURCE_LABEL, PORT_ANNOTATION } from './gateway-key.ts';

/** The resources the operator lists and watches. */
export type WatchedResource = 'gatewaykeys' | 'secrets' | 'pods';

export interface ListOptions {
  labelSelector?: string;
}

export interface ListResult {
  items: unknown[];
  resourceVersion: string;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface WatchHandlers {
  onEvent(type: WatchEventType, object: unknown): void;
  onBookmark(resourceVersion: string): void;
}

/**
 * Everything the operator asks of the API server. Only `kube.ts` implements it against the real
 * client; every call is bounded by a timeout inside the adapter and by the caller's signal.
 */
export interface KubeClient {
  list(
    resource: WatchedResource,
    namespace: string,
    opts: ListOptions,
    signal: AbortSignal,
  ): Promise<ListResult>;
  /**
   * `list`, handing each item to `each` as its page arrives instead of collecting them, so a
   * cache that keeps a reduced copy never holds every raw object at once. Optional: the informer
   * falls back to `list`.
   */
  listEach?(
    resource: WatchedResource,
    namespace: string,
    opts: ListOptions,
    each: (item: unknown) => void,
    signal: AbortSignal,
  ): Promise<{ resourceVersion: string }>;
  /**
   * Streams events after `resourceVersion`. Resolves when the server ends the stream normally;
   * rejects with a KubeError (code 410 when the version is too old, from the HTTP status or an
   * ERROR event) or when `signal` aborts.
   */
  watch(
    resource: WatchedResource,
    namespace: string,
    opts: ListOptions & { resourceVersion: string; timeoutSeconds: number },
    handlers: WatchHandlers,
    signal: AbortSignal,
  ): Promise<void>;
  getGatewayKey(namespace: string, name: string, signal: AbortSignal): Promise<unknown | null>;
  /** PUT to the `/status` subresource; the object's `metadata.resourceVersion` is the precondition. */
  replaceGatewayKeyStatus(object: Record<string, unknown>, signal: AbortSignal): Promise<unknown>;
  createEvent(namespace: string, event: Record<string, unknown>, signal: AbortSignal): Promise<void>;
  /** Merge patch of an Event (aggregation: count and lastTimestamp). Optional: without it every Event is new. */
  patchEvent?(
    namespace: string,
    name: string,
    patch: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<void>;
  getLease(namespace: string, name: string, signal: AbortSignal): Promise<unknown | null>;
  createLease(namespace: string, lease: Record<string, unknown>, signal: AbortSignal): Promise<unknown>;
  replaceLease(
    namespace: string,
    name: string,
    lease: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<unknown>;
}

/** A failed API call, with the HTTP code (0 for network errors and timeouts) and the Status reason. */
export class KubeError extends Error {
  override name = 'KubeError';
  readonly code: number;
  readonly reason: string;
  readonly retryAfterMs: number | undefined;
  constructor(code: number, reason: string, message: string, retryAfterMs?: number) {
    super(message);
    this.code = code;
    this.reason = reason;
    this.retryAfterMs = retryAfterMs;
  }
}

export function isKubeError(err: unknown, code?: number): err is KubeError {
  return err instanceof KubeError && (code === undefined || err.code === code);
}

/** The parts of an API Status body the operator reads (messages never carry Secret data). */
export const StatusBodySchema = z.object({
  kind: z.literal('Status').optional(),
  message: z.string().optional(),
  reason: z.string().optional(),
  code: z.number().int().optional(),
});

const MetaSchema = z.object({
  name: z.string(),
  namespace: z.string().default(''),
  resourceVersion: z.string().default(''),
  labels: z.record(z.string(), z.string()).nullish(),
  annotations: z.record(z.string(), z.string()).nullish(),
  deletionTimestamp: z.unknown().optional(),
});

/** A Secret as cached: only what a key source reads. */
export interface CachedSecret {
  namespace: string;
  name: string;
  resourceVersion: string;
  /** keyroll's own annotations (`keyroll.dev/…`) only; see parseSecret. */
  annotations: Record<string, string>;
  /** base64 values, as the API returns them. */
  data: Record<string, string>;
}

const SecretSchema = z.object({
  metadata: MetaSchema,
  data: z.record(z.string(), z.string()).nullish(),
});

export function parseSecret(raw: unknown): CachedSecret | null {
  const p = SecretSchema.safeParse(raw);
  if (!p.success) return null;
  return {
    namespace: p.data.metadata.namespace,
    name: p.data.metadata.name,
    resourceVersion: p.data.metadata.resourceVersion,
    annotations: keyrollAnnotations(p.data.metadata.annotations),
    data: p.data.data ?? {},
  };
}

/**
 * A Secret's `keyroll.dev/…` annotations. The others are dropped from the cache: a key source
 * reads only `keyroll.dev/version`, and `kubectl apply` leaves the whole manifest, data included,
 * in `kubectl.kubernetes.io/last-applied-configuration`, a second copy of every key for each
 * cached Secret (memory, and one more place a key would sit for nothing).
 */
function keyrollAnnotations(all: Record<string, string> | null | undefined): Record<string, string> {
  const kept: Record<string, string> = {};
  if (!all) return kept;
  for (const [k, v] of Object.entries(all)) if (k.startsWith(KEYROLL_ANNOTATION_PREFIX)) kept[k] = v;
  return kept;
}

const KEYROLL_ANNOTATION_PREFIX = 'keyroll.dev/';

/** A Pod as cached: only what target discovery reads. */
/** A Secret's value as keyroll reads it: base64-decoded, trailing whitespace dropped, empty = absent. */
export function decodeSecretValue(secret: CachedSecret, dataKey: string): string | null {
  const b64 = secret.data[dataKey];
  if (b64 === undefined) return null;
  const v = Buffer.from(b64, 'base64').toString('utf8').replace(/\s+$/, '');
  return v.length > 0 ? v : null;
}

export interface CachedPod {
  namespace: string;
  name: string;
  resourceVersion: string;
  labels: Record<string, string>;
  /** The `keyroll.dev/port` annotation, when present and a valid port. */
  portOverride: number | null;
  podIP: string | null;
  ready: boolean;
}

const PodSchema = z.object({
  metadata: MetaSchema,
  status: z
    .object({
      phase: z.string().optional(),
      podIP: z.string().optional(),
      conditions: z.array(z.object({ type: z.string(), status: z.string() })).nullish(),
    })
    .optional(),
});

export function parsePod(raw: unknown): CachedPod | null {
  const p = PodSchema.safeParse(raw);
  if (!p.success) return null;
  const { metadata, status } = p.data;
  const portText = metadata.annotations?.[PORT_ANNOTATION];
  const port = portText !== undefined && /^\d{1,5}$/.test(portText) ? Number(portText) : null;
  const readyCondition = status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
  return {
    namespace: metadata.namespace,
    name: metadata.name,
    resourceVersion: metadata.resourceVersion,
    labels: metadata.labels ?? {},
    portOverride: port !== null && port >= 1 && port <= 65535 ? port : null,
    podIP: status?.podIP || null,
    // A terminating pod is on its way out: delivering a key to it proves nothing.
    ready:
      readyCondition &&
      status?.phase === 'Running' &&
      (metadata.deletionTimestamp === undefined || metadata.deletionTimestamp === null),
  };
}

export const SECRET_LABEL_SELECTOR = `${KEY_SOURCE_LABEL}=true`;

export const LeaseSchema = z.object({
  metadata: z.object({ name: z.string(), resourceVersion: z.string().optional() }),
  spec: z
    .object({
      holderIdentity: z.string().nullish(),
      leaseDurationSeconds: z.number().int().nullish(),
      acquireTime: z.string().nullish(),
      renewTime: z.string().nullish(),
      leaseTransitions: z.number().int().nullish(),
    })
    .default({}),
});
export type Lease = z.infer<typeof LeaseSchema>;
