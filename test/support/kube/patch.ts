// Patch semantics: RFC 7386 merge patch, RFC 6902 JSON patch, a strategic-merge subset for
// built-ins, and server-side apply with field ownership (managedFields, FieldsV1).
import { badRequest, KubeError } from './errors.ts';
import { isObject, type Json, type JsonObject } from './schema.ts';

export function mergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return structuredClone(patch);
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k] ?? null, v);
  }
  return out;
}

/**
 * Strategic merge patch for built-ins, reduced to what kubectl sends: a merge patch whose lists
 * of named objects (containers, env, volumes, ...) merge by `name` when the patch carries a
 * `$setElementOrder/<field>` directive, with `$patch: delete` entries removed. Directives never
 * reach storage.
 */
export function strategicMergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return structuredClone(patch);
  if (patch.$patch === 'replace') {
    const { $patch: _drop, ...rest } = patch;
    return stripDirectives(rest);
  }
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$')) continue;
    if (v === null) {
      delete out[k];
      continue;
    }
    const order = patch[`$setElementOrder/${k}`];
    const current = out[k];
    if (Array.isArray(v) && Array.isArray(current) && Array.isArray(order)) {
      out[k] = mergeNamedList(current, v, order);
    } else {
      out[k] = strategicMergePatch(current ?? null, v);
    }
  }
  return out;
}

function nameOf(v: Json): string | undefined {
  return isObject(v) && typeof v.name === 'string' ? v.name : undefined;
}

function mergeNamedList(current: Json[], patch: Json[], order: Json[]): Json[] {
  const byName = new Map<string, Json>();
  for (const item of current) {
    const n = nameOf(item);
    if (n !== undefined) byName.set(n, item);
  }
  for (const item of patch) {
    const n = nameOf(item);
    if (n === undefined) continue;
    if (isObject(item) && item.$patch === 'delete') byName.delete(n);
    else byName.set(n, strategicMergePatch(byName.get(n) ?? null, item));
  }
  const out: Json[] = [];
  for (const o of order) {
    const n = nameOf(o);
    if (n !== undefined && byName.has(n)) out.push(byName.get(n)!);
  }
  return out;
}

function stripDirectives(v: Json): Json {
  if (Array.isArray(v)) return v.map(stripDirectives);
  if (!isObject(v)) return v;
  const out: JsonObject = {};
  for (const [k, x] of Object.entries(v)) if (!k.startsWith('$')) out[k] = stripDirectives(x);
  return out;
}

function unescapePointer(token: string): string {
  return token.replace(/~1/g, '/').replace(/~0/g, '~');
}

function parsePointer(ptr: string): string[] {
  if (ptr === '') return [];
  if (!ptr.startsWith('/')) throw jsonPatchError(`invalid JSON pointer: ${ptr}`);
  return ptr.slice(1).split('/').map(unescapePointer);
}

function jsonPatchError(message: string): KubeError {
  return new KubeError(422, 'Invalid', message);
}

function getAt(doc: Json, tokens: string[]): Json | undefined {
  let cur: Json | undefined = doc;
  for (const t of tokens) {
    if (Array.isArray(cur)) cur = cur[Number(t)];
    else if (isObject(cur)) cur = cur[t];
    else return undefined;
  }
  return cur;
}

function containerOf(doc: Json, tokens: string[], op: string, ptr: string): Json {
  const parent = getAt(doc, tokens.slice(0, -1));
  if (parent === undefined || (!Array.isArray(parent) && !isObject(parent))) {
    throw jsonPatchError(`${op} operation does not apply: doc is missing path: "${ptr}": missing value`);
  }
  return parent;
}

/** RFC 6902 on a copy; a failed `test` or a missing path is a 422. */
export function jsonPatch(target: Json, ops: unknown): Json {
  if (!Array.isArray(ops))
    throw badRequest('json: cannot unmarshal object into Go value of type jsonpatch.Patch');
  let doc: Json = structuredClone(target);
  for (const raw of ops) {
    if (!isObject(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string') {
      throw badRequest('invalid JSON patch operation');
    }
    const op = raw.op;
    const path = raw.path;
    const tokens = parsePointer(path);
    const last = tokens[tokens.length - 1] ?? '';
    const remove = (): Json => {
      const parent = containerOf(doc, tokens, op, path);
      if (Array.isArray(parent)) {
        const i = Number(last);
        if (!Number.isInteger(i) || i < 0 || i >= parent.length) {
          throw jsonPatchError(
            `${op} operation does not apply: doc is missing path: "${path}": missing value`,
          );
        }
        return parent.splice(i, 1)[0]!;
      }
      const obj = parent as JsonObject;
      if (!(last in obj))
        throw jsonPatchError(`${op} operation does not apply: doc is missing path: "${path}": missing value`);
      const old = obj[last]!;
      delete obj[last];
      return old;
    };
    const add = (value: Json, replace: boolean): void => {
      if (tokens.length === 0) {
        doc = structuredClone(value);
        return;
      }
      const parent = containerOf(doc, tokens, op, path);
      if (Array.isArray(parent)) {
        const i = last === '-' ? parent.length : Number(last);
        if (!Number.isInteger(i) || i < 0 || i > parent.length || (replace && i >= parent.length)) {
          throw jsonPatchError(
            `${op} operation does not apply: doc is missing path: "${path}": missing value`,
          );
        }
        parent.splice(i, replace ? 1 : 0, structuredClone(value));
        return;
      }
      const obj = parent as JsonObject;
      if (replace && !(last in obj)) {
        throw jsonPatchError(`replace operation does not apply: doc is missing key: ${path}: missing value`);
      }
      obj[last] = structuredClone(value);
    };
    switch (op) {
      case 'add':
        add((raw.value ?? null) as Json, false);
        break;
      case 'replace':
        add((raw.value ?? null) as Json, true);
        break;
      case 'remove':
        remove();
        break;
      case 'test': {
        const cur = getAt(doc, tokens);
        if (JSON.stringify(cur) !== JSON.stringify(raw.value ?? null)) {
          throw jsonPatchError(`testing value ${path} failed: test failed`);
        }
        break;
      }
      case 'move':
      case 'copy': {
        if (typeof raw.from !== 'string') throw badRequest(`${op} operation needs "from"`);
        const fromTokens = parsePointer(raw.from);
        const value = getAt(doc, fromTokens);
        if (value === undefined) {
          throw jsonPatchError(`${op} operation does not apply: doc is missing from path: "${raw.from}"`);
        }
        if (op === 'move') {
          const saved = tokens.slice();
          tokens.splice(0, tokens.length, ...fromTokens);
          remove();
          tokens.splice(0, tokens.length, ...saved);
        }
        add(value, false);
        break;
      }
      default:
        throw badRequest(`Unexpected kind: ${op}`);
    }
  }
  return doc;
}

// ---- Server-side apply -----------------------------------------------------------------------

/** A field path as its keys; a set of them is keyed by the JSON of the path. */
export type FieldSet = Set<string>;

const UNTRACKED_META = new Set([
  'name',
  'namespace',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'managedFields',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'selfLink',
]);

/** Leaf paths of an object (maps recurse; scalars, lists and empty maps are leaves). */
export function leafPaths(obj: JsonObject, scope: 'main' | 'status'): FieldSet {
  const out: FieldSet = new Set();
  const rec = (v: Json, path: string[]): void => {
    if (isObject(v) && Object.keys(v).length > 0) {
      for (const [k, x] of Object.entries(v)) rec(x, [...path, k]);
    } else {
      out.add(JSON.stringify(path));
    }
  };
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'apiVersion' || k === 'kind') continue;
    if ((k === 'status') !== (scope === 'status')) continue;
    if (k === 'metadata' && isObject(v)) {
      for (const [mk, mv] of Object.entries(v)) if (!UNTRACKED_META.has(mk)) rec(mv, ['metadata', mk]);
      continue;
    }
    rec(v, [k]);
  }
  return out;
}

export function valueAt(obj: Json, path: string[]): Json | undefined {
  let cur: Json | undefined = obj;
  for (const k of path) {
    if (!isObject(cur)) return undefined;
    cur = cur[k];
  }
  return cur;
}

function deleteAt(obj: JsonObject, path: string[]): void {
  let cur: Json | undefined = obj;
  for (const k of path.slice(0, -1)) {
    if (!isObject(cur)) return;
    cur = cur[k];
  }
  if (isObject(cur)) delete cur[path[path.length - 1]!];
}

function overlaps(a: string[], b: string[]): boolean {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}

export interface ManagedEntry {
  manager: string;
  operation: 'Apply' | 'Update';
  apiVersion: string;
  time: string;
  subresource?: string;
  fields: FieldSet;
}

export function toFieldsV1(fields: FieldSet): JsonObject {
  const root: JsonObject = {};
  for (const key of fields) {
    const path: string[] = JSON.parse(key);
    let cur = root;
    path.forEach((k, i) => {
      const f = `f:${k}`;
      if (!isObject(cur[f])) cur[f] = {};
      const next = cur[f] as JsonObject;
      if (i < path.length - 1 && !(i === 0 && k === 'metadata')) next['.'] = {};
      cur = next;
    });
  }
  return root;
}

export function fromFieldsV1(v: Json | undefined): FieldSet {
  const out: FieldSet = new Set();
  const rec = (node: Json, path: string[]): void => {
    if (!isObject(node)) return;
    const keys = Object.keys(node).filter((k) => k !== '.');
    const fieldKeys = keys.filter((k) => k.startsWith('f:'));
    if (keys.length > 0 && fieldKeys.length === 0) {
      // k:/v:/i: entries mean ownership inside a list; lists are atomic here.
      out.add(JSON.stringify(path));
      return;
    }
    if (fieldKeys.length === 0 && path.length > 0) out.add(JSON.stringify(path));
    for (const k of fieldKeys) rec(node[k]!, [...path, k.slice(2)]);
  };
  rec(v ?? null, []);
  return out;
}

export function parseManagedFields(meta: JsonObject): ManagedEntry[] {
  const list = meta.managedFields;
  if (!Array.isArray(list)) return [];
  const out: ManagedEntry[] = [];
  for (const e of list) {
    if (!isObject(e) || typeof e.manager !== 'string') continue;
    const entry: ManagedEntry = {
      manager: e.manager,
      operation: e.operation === 'Apply' ? 'Apply' : 'Update',
      apiVersion: typeof e.apiVersion === 'string' ? e.apiVersion : '',
      time: typeof e.time === 'string' ? e.time : '',
      fields: fromFieldsV1(e.fieldsV1),
    };
    if (typeof e.subresource === 'string' && e.subresource) entry.subresource = e.subresource;
    out.push(entry);
  }
  return out;
}

export function renderManagedFields(entries: ManagedEntry[]): Json[] {
  return entries
    .filter((e) => e.fields.size > 0)
    .map((e) => {
      const out: JsonObject = {
        manager: e.manager,
        operation: e.operation,
        apiVersion: e.apiVersion,
        time: e.time,
        fieldsType: 'FieldsV1',
        fieldsV1: toFieldsV1(e.fields),
      };
      if (e.subresource) out.subresource = e.subresource;
      return out;
    });
}

/** Records an Update by `manager`: it takes every leaf it changed; removed leaves lose owners. */
export function trackUpdate(
  entries: ManagedEntry[],
  oldObj: JsonObject | undefined,
  newObj: JsonObject,
  manager: string,
  apiVersion: string,
  time: string,
  subresource: string | undefined,
): ManagedEntry[] {
  const scope = subresource === 'status' ? 'status' : 'main';
  const newLeaves = leafPaths(newObj, scope);
  const oldLeaves = oldObj ? leafPaths(oldObj, scope) : new Set<string>();
  const changed = [...newLeaves].filter((k) => {
    if (!oldLeaves.has(k)) return true;
    const p: string[] = JSON.parse(k);
    return JSON.stringify(valueAt(oldObj!, p)) !== JSON.stringify(valueAt(newObj, p));
  });
  const out = entries.map((e) => ({ ...e, fields: new Set(e.fields) }));
  for (const e of out) {
    for (const k of [...e.fields]) {
      const p: string[] = JSON.parse(k);
      if (valueAt(newObj, p) === undefined) e.fields.delete(k);
    }
  }
  if (changed.length === 0) return out.filter((e) => e.fields.size > 0);
  for (const e of out) for (const k of changed) e.fields.delete(k);
  let mine = out.find(
    (e) => e.manager === manager && e.operation === 'Update' && e.subresource === subresource,
  );
  if (!mine) {
    mine = { manager, operation: 'Update', apiVersion, time, fields: new Set() };
    if (subresource) mine.subresource = subresource;
    out.push(mine);
  }
  mine.time = time;
  mine.apiVersion = apiVersion;
  for (const k of changed) mine.fields.add(k);
  return out.filter((e) => e.fields.size > 0);
}

export interface ApplyResult {
  object: JsonObject;
  managed: ManagedEntry[];
}

function fieldPathString(p: string[]): string {
  return p.map((k) => `.${k}`).join('');
}

/**
 * Server-side apply of `applied` by `manager` onto `current`: conflicts with other managers
 * owning a field with a different value (409 unless `force`), removal of fields this manager
 * stopped applying and nobody else owns, then a merge of the applied configuration.
 */
export function serverSideApply(
  current: JsonObject,
  applied: JsonObject,
  entries: ManagedEntry[],
  opts: {
    manager: string;
    force: boolean;
    apiVersion: string;
    time: string;
    subresource: string | undefined;
  },
): ApplyResult {
  const scope = opts.subresource === 'status' ? 'status' : 'main';
  const appliedSet = leafPaths(applied, scope);
  const sameScope = (e: ManagedEntry): boolean => e.subresource === opts.subresource;
  const isMine = (e: ManagedEntry): boolean =>
    e.manager === opts.manager && e.operation === 'Apply' && sameScope(e);
  const conflicts: { manager: string; path: string[] }[] = [];
  for (const e of entries) {
    if (isMine(e) || !sameScope(e)) continue;
    for (const owned of e.fields) {
      const op: string[] = JSON.parse(owned);
      for (const a of appliedSet) {
        const ap: string[] = JSON.parse(a);
        if (!overlaps(op, ap)) continue;
        const shorter = op.length <= ap.length ? op : ap;
        if (JSON.stringify(valueAt(current, shorter)) !== JSON.stringify(valueAt(applied, shorter))) {
          conflicts.push({ manager: e.manager, path: op });
          break;
        }
      }
    }
  }
  if (conflicts.length > 0 && !opts.force) {
    const lines = conflicts.map((c) => `conflict with "${c.manager}": ${fieldPathString(c.path)}`);
    const head = `Apply failed with ${conflicts.length} conflict${conflicts.length === 1 ? '' : 's'}: `;
    throw new KubeError(409, 'Conflict', head + lines.join('\n'), {
      causes: conflicts.map((c) => ({
        reason: 'FieldManagerConflict',
        message: `conflict with "${c.manager}"`,
        field: fieldPathString(c.path),
      })),
    });
  }
  const out = structuredClone(current);
  const previous = entries.find(isMine);
  if (previous) {
    for (const k of previous.fields) {
      if (appliedSet.has(k)) continue;
      const owners = entries.filter((e) => !isMine(e) && e.fields.has(k));
      if (owners.length === 0) deleteAt(out, JSON.parse(k));
    }
  }
  const merged = applyMerge(out, applied) as JsonObject;
  const next = entries.filter((e) => !isMine(e)).map((e) => ({ ...e, fields: new Set(e.fields) }));
  if (opts.force) {
    for (const e of next) {
      if (!sameScope(e)) continue;
      for (const k of [...e.fields]) {
        const op: string[] = JSON.parse(k);
        for (const a of appliedSet) if (overlaps(op, JSON.parse(a))) e.fields.delete(k);
      }
    }
  }
  const mine: ManagedEntry = {
    manager: opts.manager,
    operation: 'Apply',
    apiVersion: opts.apiVersion,
    time: opts.time,
    fields: appliedSet,
  };
  if (opts.subresource) mine.subresource = opts.subresource;
  next.push(mine);
  return { object: merged, managed: next.filter((e) => e.fields.size > 0) };
}

/** Apply merges maps and replaces scalars and lists (lists are atomic here); null removes. */
function applyMerge(target: Json, applied: Json): Json {
  if (!isObject(applied) || !isObject(target)) return structuredClone(applied);
  const out: JsonObject = { ...target };
  for (const [k, v] of Object.entries(applied)) {
    if (v === null) delete out[k];
    else out[k] = applyMerge(out[k] ?? null, v);
  }
  return out;
}
