// Owns the GatewayKey resource as the operator reads it: zod schemas of spec and status, pure.
import * as z from 'zod';
import { KeyLifecycleSchema } from '../lifecycle/lifecycle.ts';

export const GROUP = 'keyroll.dev';
export const VERSION = 'v1alpha1';
export const PLURAL = 'gatewaykeys';
export const KIND = 'GatewayKey';
export const API_VERSION = `${GROUP}/${VERSION}`;

/** Pod annotation that overrides `spec.targets.port` for one pod. */
export const PORT_ANNOTATION = 'keyroll.dev/port';
/** The label the operator's Secret informer is restricted to (least privilege). */
export const KEY_SOURCE_LABEL = 'keyroll.dev/key-source';

// Every constraint here has its twin in manifests/crd/gatewaykey.yaml (a pattern, a bound or a CEL
// rule); test/operator/crd-schema.test.ts checks that both accept and reject the same specs.
const Name = z
  .string()
  .min(1)
  .max(253)
  .regex(
    /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
    'expected a DNS-1123 subdomain',
  );
const DataKey = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[-._a-zA-Z0-9]+$/, 'expected a Secret data key (letters, digits, "-", "_", ".")');

export const SecretKeyRefSchema = z.object({ name: Name, key: DataKey });
export type SecretKeyRef = z.infer<typeof SecretKeyRefSchema>;

const LabelSelectorRequirementSchema = z.object({
  key: z.string().min(1),
  operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']),
  values: z.array(z.string()).optional(),
});

export const LabelSelectorSchema = z
  .object({
    matchLabels: z.record(z.string(), z.string()).optional(),
    matchExpressions: z.array(LabelSelectorRequirementSchema).optional(),
  })
  .superRefine((s, ctx) => {
    for (const [i, e] of (s.matchExpressions ?? []).entries()) {
      const needsValues = e.operator === 'In' || e.operator === 'NotIn';
      if (needsValues && !(e.values && e.values.length > 0)) {
        ctx.addIssue({
          code: 'custom',
          path: ['matchExpressions', i, 'values'],
          message: `operator ${e.operator} needs at least one value`,
        });
      }
      if (!needsValues && e.values && e.values.length > 0) {
        ctx.addIssue({
          code: 'custom',
          path: ['matchExpressions', i, 'values'],
          message: `operator ${e.operator} takes no values`,
        });
      }
    }
  });
export type LabelSelector = z.infer<typeof LabelSelectorSchema>;

const GoDuration = z.string().regex(/^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$/, 'expected a Go duration');
const HttpUrl = z
  .string()
  .max(2048)
  .regex(/^https?:\/\//, 'expected an http(s) URL');

export const GatewayKeySpecSchema = z
  .object({
    source: z
      .object({
        secretRef: SecretKeyRefSchema.optional(),
        api: z
          .object({
            url: HttpUrl,
            /** POSTed when the current key is within `refreshBefore` of its expiry; its answer is the new key. */
            mintUrl: HttpUrl.optional(),
            tokenSecretRef: SecretKeyRefSchema,
            refreshBefore: GoDuration.optional(),
          })
          .optional(),
      })
      .superRefine((s, ctx) => {
        const n = Number(s.secretRef !== undefined) + Number(s.api !== undefined);
        if (n !== 1) ctx.addIssue({ code: 'custom', message: 'expected exactly one of secretRef or api' });
      }),
    /** Retiring the previous key once every target proved the current one (docs/operator.md). */
    retire: z
      .object({
        after: GoDuration.default('60s'),
        revokeUrl: HttpUrl.optional(),
        webhook: HttpUrl.optional(),
      })
      .default({ after: '60s' }),
    envVar: z
      .string()
      .max(128)
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name')
      .default('KILOCODE_API_KEY'),
    provider: z.string().min(1).max(128).default('kilocode'),
    delivery: z.enum(['restart', 'file']).default('restart'),
    targets: z.object({
      selector: LabelSelectorSchema.refine(
        (s) => Object.keys(s.matchLabels ?? {}).length > 0 || (s.matchExpressions ?? []).length > 0,
        'must not be empty (it would select every pod)',
      ),
      port: z.number().int().min(1).max(65535).default(18789),
    }),
    controllerTokenSecretRef: SecretKeyRefSchema,
    rollout: z
      .object({
        maxUnavailable: z.number().int().min(1).default(1),
        paused: z.boolean().default(false),
        failureBudget: z.number().int().min(1).default(1),
      })
      .default({ maxUnavailable: 1, paused: false, failureBudget: 1 }),
  })
  .superRefine((s, ctx) => {
    if (s.retire.revokeUrl !== undefined && s.source.api === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['retire', 'revokeUrl'],
        message: 'needs source.api (the revoke call carries the source token)',
      });
    }
  });
export type GatewayKeySpec = z.infer<typeof GatewayKeySpecSchema>;

export const ConditionSchema = z.object({
  type: z.string(),
  status: z.enum(['True', 'False', 'Unknown']),
  reason: z.string(),
  message: z.string(),
  lastTransitionTime: z.string(),
  observedGeneration: z.number().int().optional(),
});

export const TargetStatusSchema = z.object({
  name: z.string(),
  pid: z.number().int().optional(),
  form: z.string().optional(),
  converged: z.boolean(),
  message: z.string(),
});
export type TargetStatus = z.infer<typeof TargetStatusSchema>;

export const GatewayKeyStatusSchema = z.object({
  observedGeneration: z.number().int().optional(),
  desiredVersion: z.string().optional(),
  /** RFC 3339: when every target last proved a new desired version (the LAST-ROTATED column). */
  lastRotationTime: z.string().optional(),
  targets: z
    .object({
      total: z.number().int(),
      converged: z.number().int(),
      progressing: z.number().int(),
      failed: z.number().int(),
      /** Pods the selector matches that could not be observed (not ready, no IP, unreachable). */
      unobserved: z.number().int().optional(),
    })
    .optional(),
  targetStatuses: z.array(TargetStatusSchema).optional(),
  conditions: z.array(ConditionSchema).optional(),
  /** The key lifecycle (src/lifecycle): current version and previous ones until retired. */
  lifecycle: KeyLifecycleSchema.optional(),
});
export type GatewayKeyStatus = z.infer<typeof GatewayKeyStatusSchema>;

/**
 * The object as the operator caches it. `spec` stays unparsed here: an invalid spec must still be
 * cached, so the reconciler can report it in a Degraded condition instead of never seeing it.
 */
export const GatewayKeyObjectSchema = z.object({
  apiVersion: z.string().optional(),
  kind: z.string().optional(),
  metadata: z.object({
    name: z.string(),
    namespace: z.string(),
    uid: z.string().optional(),
    resourceVersion: z.string().optional(),
    generation: z.number().int().optional(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
    deletionTimestamp: z.string().optional(),
  }),
  spec: z.unknown(),
  status: z.unknown().optional(),
});
export type GatewayKeyObject = z.infer<typeof GatewayKeyObjectSchema>;

export type SpecResult = { ok: true; spec: GatewayKeySpec } | { ok: false; reason: string };

/** Pure: the spec, or one line naming every bad field and what was expected. */
export function parseSpec(raw: unknown): SpecResult {
  const parsed = GatewayKeySpecSchema.safeParse(raw);
  if (parsed.success) return { ok: true, spec: parsed.data };
  const fields = parsed.error.issues.map((i) => {
    const path = ['spec', ...i.path.map(String)].join('.');
    return `${path}: ${i.message}`;
  });
  return { ok: false, reason: fields.join('; ') };
}

/** Pure: the stored status, or an empty one when it is missing or not in our shape. */
export function parseStatus(raw: unknown): GatewayKeyStatus {
  const parsed = GatewayKeyStatusSchema.safeParse(raw ?? {});
  return parsed.success ? parsed.data : {};
}

/** What `referencedSecrets` reads of a spec (built once: a zod schema is costly to construct). */
const SecretNamesSchema = z.object({
  source: z
    .object({
      secretRef: z.object({ name: z.string() }).optional(),
      api: z.object({ tokenSecretRef: z.object({ name: z.string() }).optional() }).optional(),
    })
    .optional(),
  controllerTokenSecretRef: z.object({ name: z.string() }).optional(),
});

/** The Secrets a spec reads, by name (for the Secret → GatewayKey index). */
export function referencedSecrets(raw: unknown): string[] {
  const names = new Set<string>();
  const spec = SecretNamesSchema.safeParse(raw);
  if (!spec.success) return [];
  if (spec.data.source?.secretRef?.name) names.add(spec.data.source.secretRef.name);
  if (spec.data.source?.api?.tokenSecretRef?.name) names.add(spec.data.source.api.tokenSecretRef.name);
  if (spec.data.controllerTokenSecretRef?.name) names.add(spec.data.controllerTokenSecretRef.name);
  return [...names];
}

export function objectKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

export function splitKey(key: string): { namespace: string; name: string } {
  const i = key.indexOf('/');
  return { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

/** A GatewayKey as cached: identity, generation, the raw spec (parsed per reconcile) and the parsed status. */
export interface CachedGatewayKey {
  namespace: string;
  name: string;
  resourceVersion: string;
  uid: string;
  generation: number;
  deleting: boolean;
  spec: unknown;
  /** The stored status as it was read (raw), so "changed?" compares what the server holds. */
  rawStatus: unknown;
  status: GatewayKeyStatus;
  /** Secret names the spec references (for the Secret → GatewayKey index). */
  secretNames: string[];
}

export function parseGatewayKey(raw: unknown): CachedGatewayKey | null {
  const p = GatewayKeyObjectSchema.safeParse(raw);
  if (!p.success) return null;
  const m = p.data.metadata;
  return {
    namespace: m.namespace,
    name: m.name,
    resourceVersion: m.resourceVersion ?? '',
    uid: m.uid ?? '',
    generation: m.generation ?? 0,
    deleting: m.deletionTimestamp !== undefined,
    spec: p.data.spec,
    rawStatus: p.data.status ?? null,
    status: parseStatus(p.data.status),
    secretNames: referencedSecrets(p.data.spec),
  };
}
