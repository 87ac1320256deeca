// Structural-schema handling for custom resources: defaulting, pruning of unknown fields and
// validation with the apiserver's field-error messages (apiextensions-apiserver + kube-openapi).
import * as z from 'zod';
import { type FieldError, goValue, invalidValue, notSupported, requiredValue } from './errors.ts';

export interface Schema {
  type?: string | undefined;
  format?: string | undefined;
  properties?: Record<string, Schema> | undefined;
  additionalProperties?: boolean | Schema | undefined;
  items?: Schema | undefined;
  required?: string[] | undefined;
  enum?: unknown[] | undefined;
  minimum?: number | undefined;
  maximum?: number | undefined;
  exclusiveMinimum?: boolean | undefined;
  exclusiveMaximum?: boolean | undefined;
  multipleOf?: number | undefined;
  minLength?: number | undefined;
  maxLength?: number | undefined;
  pattern?: string | undefined;
  minItems?: number | undefined;
  maxItems?: number | undefined;
  uniqueItems?: boolean | undefined;
  minProperties?: number | undefined;
  maxProperties?: number | undefined;
  oneOf?: Schema[] | undefined;
  anyOf?: Schema[] | undefined;
  allOf?: Schema[] | undefined;
  not?: Schema | undefined;
  nullable?: boolean | undefined;
  default?: unknown;
  'x-kubernetes-preserve-unknown-fields'?: boolean | undefined;
  'x-kubernetes-int-or-string'?: boolean | undefined;
  'x-kubernetes-embedded-resource'?: boolean | undefined;
}

export const SchemaZ: z.ZodType<Schema> = z.lazy(() =>
  z.looseObject({
    type: z.string().optional(),
    format: z.string().optional(),
    properties: z.record(z.string(), SchemaZ).optional(),
    additionalProperties: z.union([z.boolean(), SchemaZ]).optional(),
    items: SchemaZ.optional(),
    required: z.array(z.string()).optional(),
    enum: z.array(z.unknown()).optional(),
    minimum: z.number().optional(),
    maximum: z.number().optional(),
    exclusiveMinimum: z.boolean().optional(),
    exclusiveMaximum: z.boolean().optional(),
    multipleOf: z.number().optional(),
    minLength: z.number().optional(),
    maxLength: z.number().optional(),
    pattern: z.string().optional(),
    minItems: z.number().optional(),
    maxItems: z.number().optional(),
    uniqueItems: z.boolean().optional(),
    minProperties: z.number().optional(),
    maxProperties: z.number().optional(),
    oneOf: z.array(SchemaZ).optional(),
    anyOf: z.array(SchemaZ).optional(),
    allOf: z.array(SchemaZ).optional(),
    not: SchemaZ.optional(),
    nullable: z.boolean().optional(),
    default: z.unknown().optional(),
    'x-kubernetes-preserve-unknown-fields': z.boolean().optional(),
    'x-kubernetes-int-or-string': z.boolean().optional(),
    'x-kubernetes-embedded-resource': z.boolean().optional(),
  }),
);

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function child(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

const ROOT_IMPLICIT = new Set(['apiVersion', 'kind', 'metadata']);

/**
 * Applies defaults and removes fields the schema does not know, in place. Returns the paths of
 * removed fields (`spec.x`), which the caller reports per `fieldValidation`.
 */
export function pruneAndDefault(root: JsonObject, schema: Schema): string[] {
  const unknown: string[] = [];
  walkObject(root, schema, '', unknown, true);
  return unknown;
}

function walk(value: Json, schema: Schema, path: string, unknown: string[]): void {
  if (Array.isArray(value)) {
    if (schema.items) {
      for (const [i, item] of value.entries()) walk(item, schema.items, `${path}[${i}]`, unknown);
    }
    return;
  }
  if (isObject(value)) walkObject(value, schema, path, unknown, false);
}

function walkObject(obj: JsonObject, schema: Schema, path: string, unknown: string[], root: boolean): void {
  const preserve = schema['x-kubernetes-preserve-unknown-fields'] === true;
  const embedded = schema['x-kubernetes-embedded-resource'] === true;
  const props = schema.properties;
  const additional =
    typeof schema.additionalProperties === 'object' ? schema.additionalProperties : undefined;
  for (const key of Object.keys(obj)) {
    if ((root || embedded) && ROOT_IMPLICIT.has(key)) continue;
    const value = obj[key]!;
    const sub = props?.[key] ?? additional;
    if (!sub) {
      if (!preserve && schema.additionalProperties !== true) {
        unknown.push(child(path, key));
        delete obj[key];
      }
      continue;
    }
    if (value === null && sub.nullable !== true) {
      // Structural schemas prune nulls of non-nullable fields before defaulting.
      delete obj[key];
      continue;
    }
    walk(value, sub, props?.[key] ? child(path, key) : `${path}[${key}]`, unknown);
  }
  if (props) {
    for (const [key, sub] of Object.entries(props)) {
      if (obj[key] === undefined && sub.default !== undefined) {
        obj[key] = structuredClone(sub.default as Json);
        walk(obj[key]!, sub, child(path, key), unknown);
      }
    }
  }
}

function typeName(v: Json): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function typeMatches(v: Json, type: string): boolean {
  switch (type) {
    case 'object':
      return isObject(v);
    case 'array':
      return Array.isArray(v);
    case 'string':
      return typeof v === 'string';
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    case 'number':
      return typeof v === 'number';
    case 'boolean':
      return typeof v === 'boolean';
    default:
      return true;
  }
}

/** Validates a (pruned) custom resource; field paths are rooted at the object (`spec.size`). */
export function validateSchema(root: JsonObject, schema: Schema): FieldError[] {
  const errors: FieldError[] = [];
  validateNode(root, schema, '', errors, true);
  return errors;
}

function validateNode(v: Json, s: Schema, path: string, errors: FieldError[], root = false): void {
  const p = path || '<root>';
  if (v === null) {
    if (s.nullable !== true && s.type) {
      errors.push(invalidValue(p, 'null', `${p} in body must be of type ${s.type}: "null"`));
    }
    return;
  }
  if (s['x-kubernetes-int-or-string']) {
    if (!(typeof v === 'string' || (typeof v === 'number' && Number.isInteger(v)))) {
      errors.push(
        invalidValue(p, typeName(v), `${p} in body must be of type integer,string: "${typeName(v)}"`),
      );
      return;
    }
  } else if (s.type && !typeMatches(v, s.type)) {
    errors.push(invalidValue(p, typeName(v), `${p} in body must be of type ${s.type}: "${typeName(v)}"`));
    return;
  }
  if (s.enum && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v))) {
    errors.push(notSupported(p, v, s.enum));
  }
  if (typeof v === 'string') validateString(v, s, p, errors);
  if (typeof v === 'number') validateNumber(v, s, p, errors);
  if (Array.isArray(v)) {
    if (s.minItems !== undefined && v.length < s.minItems) {
      errors.push(invalidValue(p, v, `${p} in body should have at least ${s.minItems} items`));
    }
    if (s.maxItems !== undefined && v.length > s.maxItems) {
      errors.push({
        type: 'FieldValueTooMany',
        field: p,
        message: `Too many: ${v.length}: must have at most ${s.maxItems} items`,
      });
    }
    if (s.uniqueItems) {
      const seen = new Set<string>();
      v.forEach((item, i) => {
        const k = JSON.stringify(item);
        if (seen.has(k))
          errors.push({
            type: 'FieldValueDuplicate',
            field: `${path}[${i}]`,
            message: `Duplicate value: ${goValue(item)}`,
          });
        seen.add(k);
      });
    }
    if (s.items) {
      for (const [i, item] of v.entries()) validateNode(item, s.items, `${path}[${i}]`, errors);
    }
  }
  if (isObject(v)) {
    for (const key of s.required ?? []) {
      if (v[key] === undefined) errors.push(requiredValue(child(path, key)));
    }
    const count = Object.keys(v).length;
    if (s.minProperties !== undefined && count < s.minProperties) {
      errors.push(invalidValue(p, v, `${p} in body should have at least ${s.minProperties} properties`));
    }
    if (s.maxProperties !== undefined && count > s.maxProperties) {
      errors.push(invalidValue(p, v, `${p} in body should have at most ${s.maxProperties} properties`));
    }
    const additional = typeof s.additionalProperties === 'object' ? s.additionalProperties : undefined;
    for (const [key, value] of Object.entries(v)) {
      if (root && ROOT_IMPLICIT.has(key)) continue;
      const sub = s.properties?.[key];
      if (sub) validateNode(value, sub, child(path, key), errors);
      else if (additional) validateNode(value, additional, `${path}[${key}]`, errors);
    }
  }
  validateJunctors(v, s, path, p, errors);
}

function validateString(v: string, s: Schema, p: string, errors: FieldError[]): void {
  if (s.maxLength !== undefined && [...v].length > s.maxLength) {
    errors.push({
      type: 'FieldValueTooLong',
      field: p,
      message: `Too long: may not be more than ${s.maxLength} bytes`,
    });
  }
  if (s.minLength !== undefined && [...v].length < s.minLength) {
    errors.push(invalidValue(p, v, `${p} in body should be at least ${s.minLength} chars long`));
  }
  if (s.pattern !== undefined && !new RegExp(s.pattern, 'u').test(v)) {
    errors.push(invalidValue(p, v, `${p} in body should match '${s.pattern}'`));
  }
  if (s.format === 'date-time' && Number.isNaN(Date.parse(v))) {
    errors.push(invalidValue(p, v, `${p} in body must be of type date-time: ${JSON.stringify(v)}`));
  }
}

function validateNumber(v: number, s: Schema, p: string, errors: FieldError[]): void {
  if (s.minimum !== undefined) {
    if (s.exclusiveMinimum ? v <= s.minimum : v < s.minimum) {
      const rel = s.exclusiveMinimum ? 'greater than' : 'greater than or equal to';
      errors.push(invalidValue(p, v, `${p} in body should be ${rel} ${s.minimum}`));
    }
  }
  if (s.maximum !== undefined) {
    if (s.exclusiveMaximum ? v >= s.maximum : v > s.maximum) {
      const rel = s.exclusiveMaximum ? 'less than' : 'less than or equal to';
      errors.push(invalidValue(p, v, `${p} in body should be ${rel} ${s.maximum}`));
    }
  }
  if (s.multipleOf !== undefined && v % s.multipleOf !== 0) {
    errors.push(invalidValue(p, v, `${p} in body should be a multiple of ${s.multipleOf}`));
  }
}

function validateJunctors(v: Json, s: Schema, path: string, p: string, errors: FieldError[]): void {
  const run = (sub: Schema): FieldError[] => {
    const e: FieldError[] = [];
    validateNode(v, sub, path, e);
    return e;
  };
  if (s.oneOf) {
    const results = s.oneOf.map(run);
    const valid = results.filter((r) => r.length === 0).length;
    if (valid === 0) {
      errors.push(
        invalidValue(p, v, `${p} in body must validate one and only one schema (oneOf). Found none valid`),
      );
      for (const r of results) errors.push(...r);
    } else if (valid > 1) {
      errors.push(
        invalidValue(
          p,
          v,
          `${p} in body must validate one and only one schema (oneOf). Found ${valid} valid alternatives`,
        ),
      );
    }
  }
  if (s.anyOf) {
    const results = s.anyOf.map(run);
    if (!results.some((r) => r.length === 0)) {
      errors.push(invalidValue(p, v, `${p} in body must validate at least one schema (anyOf)`));
      for (const r of results) errors.push(...r);
    }
  }
  for (const sub of s.allOf ?? []) errors.push(...run(sub));
  if (s.not && run(s.not).length === 0) {
    errors.push(invalidValue(p, v, `${p} in body must not validate the schema (not)`));
  }
}
