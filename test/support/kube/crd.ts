// CustomResourceDefinitions: validation of the CRD object, its status (acceptedNames, Established),
// and the resource definitions its served versions create.
import * as z from 'zod';
import { type FieldError, invalidValue, requiredValue } from './errors.ts';
import { ALL_VERBS, type ResourceDef } from './resources.ts';
import { type JsonObject, SchemaZ } from './schema.ts';

const PrinterColumnZ = z.object({
  name: z.string(),
  type: z.string(),
  jsonPath: z.string(),
  format: z.string().optional(),
  description: z.string().optional(),
  priority: z.number().optional(),
});

const CrdVersionZ = z.object({
  name: z.string(),
  served: z.boolean(),
  storage: z.boolean(),
  schema: z.object({ openAPIV3Schema: SchemaZ }).optional(),
  subresources: z
    .object({ status: z.object({}).loose().optional(), scale: z.object({}).loose().optional() })
    .optional(),
  additionalPrinterColumns: z.array(PrinterColumnZ).optional(),
  selectableFields: z.array(z.object({ jsonPath: z.string() })).optional(),
});

const CrdSpecZ = z.object({
  group: z.string().min(1),
  scope: z.enum(['Namespaced', 'Cluster']),
  names: z.object({
    plural: z.string().min(1),
    singular: z.string().optional(),
    kind: z.string().min(1),
    listKind: z.string().optional(),
    shortNames: z.array(z.string()).optional(),
    categories: z.array(z.string()).optional(),
  }),
  versions: z.array(CrdVersionZ).min(1),
});

export type CrdSpec = z.infer<typeof CrdSpecZ>;

/** Parses and checks a CRD: field errors for a 422, or the spec. */
export function parseCrd(obj: JsonObject, name: string): { errors: FieldError[]; spec?: CrdSpec } {
  const parsed = CrdSpecZ.safeParse(obj.spec);
  if (!parsed.success) {
    return {
      errors: parsed.error.issues.map((i) => {
        const field = ['spec', ...i.path.map(String)].join('.');
        return i.code === 'invalid_type' && i.input === undefined
          ? requiredValue(field)
          : invalidValue(field, i.input ?? null, i.message);
      }),
    };
  }
  const spec = parsed.data;
  const errors: FieldError[] = [];
  const expected = `${spec.names.plural}.${spec.group}`;
  if (name !== expected) {
    errors.push(invalidValue('metadata.name', name, 'must be spec.names.plural+"."+spec.group'));
  }
  const storage = spec.versions.filter((v) => v.storage);
  if (storage.length !== 1) {
    errors.push(
      invalidValue(
        'spec.versions',
        storage.length,
        'must have exactly one version marked as storage version',
      ),
    );
  }
  spec.versions.forEach((v, i) => {
    if (!v.schema)
      errors.push(requiredValue(`spec.versions[${i}].schema.openAPIV3Schema`, 'schemas are required'));
  });
  return { errors, spec };
}

export function crdStatus(spec: CrdSpec, now: string): JsonObject {
  const names: JsonObject = {
    plural: spec.names.plural,
    singular: spec.names.singular ?? spec.names.kind.toLowerCase(),
    kind: spec.names.kind,
    listKind: spec.names.listKind ?? `${spec.names.kind}List`,
  };
  if (spec.names.shortNames) names.shortNames = spec.names.shortNames;
  if (spec.names.categories) names.categories = spec.names.categories;
  const condition = (type: string, reason: string, message: string) => ({
    type,
    status: 'True',
    lastTransitionTime: now,
    reason,
    message,
  });
  return {
    acceptedNames: names,
    conditions: [
      condition('NamesAccepted', 'NoConflicts', 'no conflicts found'),
      condition('Established', 'InitialNamesAccepted', 'the initial names have been accepted'),
    ],
    storedVersions: spec.versions.filter((v) => v.storage).map((v) => v.name),
  };
}

export function crdResources(spec: CrdSpec, crdName: string): ResourceDef[] {
  return spec.versions
    .filter((v) => v.served)
    .map((v) => ({
      group: spec.group,
      version: v.name,
      kind: spec.names.kind,
      listKind: spec.names.listKind ?? `${spec.names.kind}List`,
      plural: spec.names.plural,
      singular: spec.names.singular ?? spec.names.kind.toLowerCase(),
      namespaced: spec.scope === 'Namespaced',
      shortNames: spec.names.shortNames ?? [],
      categories: spec.names.categories ?? [],
      verbs: ALL_VERBS,
      subresources: v.subresources?.status ? ['status'] : [],
      custom: true,
      tracksGeneration: true,
      allowUnconditionalUpdate: false,
      allowCreateOnUpdate: false,
      returnDeletedObject: true,
      selectableFields: (v.selectableFields ?? []).map((f) => f.jsonPath.replace(/^\./, '')),
      schema: v.schema?.openAPIV3Schema,
      printerColumns: v.additionalPrinterColumns,
      crdName,
    }));
}
