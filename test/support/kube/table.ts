// meta.k8s.io/v1 Table rendering for human `kubectl get`: CRD additionalPrinterColumns via a
// small JSONPath evaluator, and Name/Age for everything else.
import { isObject, type Json, type JsonObject } from './schema.ts';

export interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  format?: string | undefined;
  description?: string | undefined;
  priority?: number | undefined;
}

export const TABLE_ACCEPT = /as=Table/;

/** k8s.io/apimachinery/pkg/util/duration.HumanDuration. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) {
    const s = seconds % 60;
    return s === 0 ? `${minutes}m` : `${minutes}m${s}s`;
  }
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) {
    const m = minutes % 60;
    return m === 0 ? `${hours}h` : `${hours}h${m}m`;
  }
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) {
    const h = hours % 24;
    return h === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${h}h`;
  }
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  return `${Math.floor(hours / 24 / 365)}y`;
}

/** Evaluates the JSONPath subset printer columns use: `.a.b`, `[0]`, `[*]`, `[?(@.k=="v")]`. */
export function jsonPath(obj: Json, path: string): Json[] {
  let current: Json[] = [obj];
  let rest = path.trim().replace(/^\{(.*)\}$/, '$1');
  while (rest.length > 0) {
    let m = /^\.([A-Za-z0-9_-]+)/.exec(rest);
    if (m) {
      const key = m[1]!;
      current = current.flatMap((v) => (isObject(v) && v[key] !== undefined ? [v[key]!] : []));
      rest = rest.slice(m[0].length);
      continue;
    }
    m = /^\[(\d+)\]/.exec(rest);
    if (m) {
      const i = Number(m[1]);
      current = current.flatMap((v) => (Array.isArray(v) && v[i] !== undefined ? [v[i]!] : []));
      rest = rest.slice(m[0].length);
      continue;
    }
    m = /^\[\*\]/.exec(rest);
    if (m) {
      current = current.flatMap((v) => (Array.isArray(v) ? v : isObject(v) ? Object.values(v) : []));
      rest = rest.slice(m[0].length);
      continue;
    }
    m = /^\[\?\(@((?:\.[A-Za-z0-9_-]+)+)\s*==\s*(?:"([^"]*)"|'([^']*)'|([^)\s]+))\)\]/.exec(rest);
    if (m) {
      const sub = m[1]!;
      const want = m[2] ?? m[3] ?? m[4] ?? '';
      current = current.flatMap((v) =>
        Array.isArray(v) ? v.filter((item) => jsonPath(item, sub).some((x) => String(x) === want)) : [],
      );
      rest = rest.slice(m[0].length);
      continue;
    }
    return [];
  }
  return current;
}

const NAME_COLUMN = {
  name: 'Name',
  type: 'string',
  format: 'name',
  description: 'Name must be unique within a namespace.',
  priority: 0,
};

const AGE_COLUMN: PrinterColumn = {
  name: 'Age',
  type: 'date',
  jsonPath: '.metadata.creationTimestamp',
  description: 'CreationTimestamp is a timestamp representing the server time when this object was created.',
};

function cell(value: Json | undefined, type: string, now: number): Json {
  if (value === undefined) return null;
  if (type === 'date' && typeof value === 'string') return humanDuration(now - Date.parse(value));
  if (type === 'integer' || type === 'number') return typeof value === 'number' ? value : Number(value);
  if (type === 'boolean') return typeof value === 'boolean' ? value : value === 'true';
  if (typeof value === 'string') return value;
  return JSON.stringify(value);
}

export function toTable(
  objects: JsonObject[],
  columns: PrinterColumn[] | undefined,
  opts: { now: number; resourceVersion?: string; includeObject: string; continueToken?: string },
): JsonObject {
  const cols = columns && columns.length > 0 ? columns : [AGE_COLUMN];
  const metadata: JsonObject = {};
  if (opts.resourceVersion !== undefined) metadata.resourceVersion = opts.resourceVersion;
  if (opts.continueToken) metadata.continue = opts.continueToken;
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata,
    columnDefinitions: [
      NAME_COLUMN,
      ...cols.map((c) => ({
        name: c.name,
        type: c.type,
        format: c.format ?? '',
        description: c.description ?? '',
        priority: c.priority ?? 0,
      })),
    ],
    rows: objects.map((o) => {
      const meta = isObject(o.metadata) ? o.metadata : {};
      const row: JsonObject = {
        cells: [meta.name ?? '', ...cols.map((c) => cell(jsonPath(o, c.jsonPath)[0], c.type, opts.now))],
      };
      if (opts.includeObject === 'Object') row.object = o;
      else if (opts.includeObject !== 'None') {
        row.object = { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: meta };
      }
      return row;
    }),
  };
}
