// Kubernetes `Status` error bodies with the apiserver's exact reasons and messages.
import type { JsonObject } from './schema.ts';

export interface StatusCause {
  reason: string;
  field?: string;
  message: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: StatusCause[];
  retryAfterSeconds?: number;
}

/** Thrown anywhere in request handling; the router turns it into a `Status` response. */
export class KubeError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly details: StatusDetails | undefined;
  readonly headers: Record<string, string>;

  constructor(
    code: number,
    reason: string,
    message: string,
    details?: StatusDetails,
    headers: Record<string, string> = {},
  ) {
    super(message);
    this.code = code;
    this.reason = reason;
    this.details = details;
    this.headers = headers;
  }

  toStatus(): JsonObject {
    const status: JsonObject = {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: this.message,
      reason: this.reason,
    };
    if (this.details) status.details = JSON.parse(JSON.stringify(this.details));
    status.code = this.code;
    return status;
  }
}

/** `group.resource` as the apiserver prints it: `secrets`, `gatewaykeys.keyroll.dev`. */
export function qualifiedResource(group: string, plural: string): string {
  return group ? `${plural}.${group}` : plural;
}

/** `Kind.group` as used in Invalid messages: `Secret`, `GatewayKey.keyroll.dev`. */
export function qualifiedKind(group: string, kind: string): string {
  return group ? `${kind}.${group}` : kind;
}

function details(group: string, kind: string, name: string | undefined): StatusDetails {
  const d: StatusDetails = {};
  if (name !== undefined) d.name = name;
  if (group) d.group = group;
  d.kind = kind;
  return d;
}

export function notFound(group: string, plural: string, name: string): KubeError {
  return new KubeError(
    404,
    'NotFound',
    `${qualifiedResource(group, plural)} "${name}" not found`,
    details(group, plural, name),
  );
}

export function alreadyExists(group: string, plural: string, name: string): KubeError {
  return new KubeError(
    409,
    'AlreadyExists',
    `${qualifiedResource(group, plural)} "${name}" already exists`,
    details(group, plural, name),
  );
}

export function conflict(group: string, plural: string, name: string, why: string): KubeError {
  return new KubeError(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${qualifiedResource(group, plural)} "${name}": ${why}`,
    details(group, plural, name),
  );
}

export const MODIFIED_CONFLICT =
  'the object has been modified; please apply your changes to the latest version and try again';

export function staleConflict(group: string, plural: string, name: string): KubeError {
  return conflict(group, plural, name, MODIFIED_CONFLICT);
}

/** One field error, formatted as k8s.io/apimachinery `field.Error`. */
export interface FieldError {
  type:
    | 'FieldValueInvalid'
    | 'FieldValueRequired'
    | 'FieldValueNotSupported'
    | 'FieldValueTooLong'
    | 'FieldValueTooMany'
    | 'FieldValueForbidden'
    | 'FieldValueDuplicate';
  field: string;
  message: string;
}

/** Go's `%v`/`%q` rendering of a value inside a field error. */
export function goValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (value === null || value === undefined) return 'null';
  if (Array.isArray(value)) return '"array"';
  return '"object"';
}

export function invalidValue(field: string, value: unknown, detail: string): FieldError {
  return { type: 'FieldValueInvalid', field, message: `Invalid value: ${goValue(value)}: ${detail}` };
}

export function requiredValue(field: string, detail = ''): FieldError {
  return {
    type: 'FieldValueRequired',
    field,
    message: detail ? `Required value: ${detail}` : 'Required value',
  };
}

export function notSupported(field: string, value: unknown, allowed: unknown[]): FieldError {
  const list = allowed.map((v) => (typeof v === 'string' ? JSON.stringify(v) : String(v))).join(', ');
  return {
    type: 'FieldValueNotSupported',
    field,
    message: `Unsupported value: ${goValue(value)}: supported values: ${list}`,
  };
}

export function forbidden(field: string, detail: string): FieldError {
  return { type: 'FieldValueForbidden', field, message: `Forbidden: ${detail}` };
}

/** 422 Invalid: `Kind.group "name" is invalid: field: detail` (a list in brackets when several). */
export function invalid(group: string, kind: string, name: string, errors: FieldError[]): KubeError {
  const rendered = errors.map((e) => `${e.field}: ${e.message}`);
  const body = rendered.length === 1 ? rendered[0] : `[${rendered.join(', ')}]`;
  return new KubeError(422, 'Invalid', `${qualifiedKind(group, kind)} "${name}" is invalid: ${body}`, {
    ...details(group, kind, name),
    causes: errors.map((e) => ({ reason: e.type, message: e.message, field: e.field })),
  });
}

export function badRequest(message: string): KubeError {
  return new KubeError(400, 'BadRequest', message);
}

export function methodNotSupported(group: string, plural: string, verb: string): KubeError {
  return new KubeError(
    405,
    'MethodNotAllowed',
    `${verb} is not supported on resources of kind "${qualifiedResource(group, plural)}"`,
    details(group, plural, undefined),
  );
}

export function unsupportedPatch(): KubeError {
  return new KubeError(
    415,
    'UnsupportedMediaType',
    'the body of the request was in an unknown format - accepted media types include: ' +
      'application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml',
  );
}

export function expired(message: string): KubeError {
  return new KubeError(410, 'Expired', message);
}

export function pageNotFound(): KubeError {
  return new KubeError(404, 'NotFound', 'the server could not find the requested resource', {});
}

/** Statuses a test can inject: the reason the apiserver uses for each code. */
export function injected(code: number, message: string | undefined, retryAfterSeconds?: number): KubeError {
  const reasons: Record<number, string> = {
    400: 'BadRequest',
    401: 'Unauthorized',
    403: 'Forbidden',
    404: 'NotFound',
    409: 'Conflict',
    410: 'Expired',
    422: 'Invalid',
    429: 'TooManyRequests',
    500: 'InternalError',
    503: 'ServiceUnavailable',
    504: 'Timeout',
  };
  const headers: Record<string, string> = {};
  const d: StatusDetails = {};
  if (retryAfterSeconds !== undefined) {
    headers['Retry-After'] = String(retryAfterSeconds);
    d.retryAfterSeconds = retryAfterSeconds;
  }
  return new KubeError(
    code,
    reasons[code] ?? 'Unknown',
    message ?? `injected failure (${code})`,
    retryAfterSeconds !== undefined ? d : undefined,
    headers,
  );
}
