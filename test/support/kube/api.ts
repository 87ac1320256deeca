// Request semantics of the fake apiserver: create, read, update, patch and delete with the
// registry strategies (status subresource, generation, preconditions, finalizers, dryRun),
// CRD registration, schema pruning/validation and field ownership.
import { randomUUID } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import { crdResources, crdStatus, parseCrd } from './crd.ts';
import {
  alreadyExists,
  badRequest,
  conflict,
  expired,
  type FieldError,
  forbidden,
  invalid,
  invalidValue,
  KubeError,
  notFound,
  requiredValue,
  staleConflict,
  unsupportedPatch,
} from './errors.ts';
import {
  jsonPatch,
  type ManagedEntry,
  mergePatch,
  parseManagedFields,
  renderManagedFields,
  serverSideApply,
  strategicMergePatch,
  trackUpdate,
} from './patch.ts';
import {
  builtinResources,
  groupVersion,
  type ResourceDef,
  resourceKey,
  validateMetadata,
  validateName,
} from './resources.ts';
import { isObject, type Json, type JsonObject, pruneAndDefault, validateSchema } from './schema.ts';
import { matchesFields, matchesLabels, parseFieldSelector, parseLabelSelector } from './selectors.ts';
import type { Store } from './store.ts';

export interface RequestTarget {
  def: ResourceDef;
  namespace: string | undefined;
  name: string | undefined;
  subresource: string | undefined;
  query: URLSearchParams;
  userAgent: string;
}

export interface Outcome {
  code: number;
  body: JsonObject;
  warnings: string[];
}

function meta(obj: JsonObject): JsonObject {
  if (!isObject(obj.metadata)) obj.metadata = {};
  return obj.metadata as JsonObject;
}

function str(v: Json | undefined): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** JSON with sorted keys, for change detection independent of key order. */
export function canonical(v: Json | undefined): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (isObject(v)) {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v ?? null);
}

function withoutMetaAndStatus(o: JsonObject): JsonObject {
  const { metadata: _m, status: _s, apiVersion: _a, kind: _k, ...rest } = o;
  return rest;
}

const GENERATE_CHARS = 'bcdfghjklmnpqrstvwxz2456789';

function fieldManagerFrom(target: RequestTarget): string {
  const q = target.query.get('fieldManager');
  if (q) return q;
  return (target.userAgent.split('/')[0] ?? 'unknown').slice(0, 128) || 'unknown';
}

export class KubeApi {
  readonly store: Store;
  private defs: ResourceDef[];
  private readonly now: () => Date;

  constructor(store: Store, now: () => Date) {
    this.store = store;
    this.now = now;
    this.defs = builtinResources();
  }

  resources(): ResourceDef[] {
    return this.defs;
  }

  find(group: string, version: string, plural: string): ResourceDef | undefined {
    return this.defs.find((d) => d.group === group && d.version === version && d.plural === plural);
  }

  /** Finds by plural (`secrets`), `plural.group` or kind, for test hooks. */
  lookup(resource: string): ResourceDef | undefined {
    return this.defs.find((d) => resourceKey(d) === resource || d.plural === resource || d.kind === resource);
  }

  private timestamp(): string {
    return this.now()
      .toISOString()
      .replace(/\.\d{3}Z$/, 'Z');
  }

  /** The object as served at the requested version. */
  present(def: ResourceDef, obj: JsonObject): JsonObject {
    return { ...obj, apiVersion: groupVersion(def), kind: def.kind };
  }

  // ---- reads ---------------------------------------------------------------------------------

  get(t: RequestTarget): JsonObject {
    const obj = this.store.get(resourceKey(t.def), t.namespace, t.name!);
    if (!obj) throw notFound(t.def.group, t.def.plural, t.name!);
    return this.present(t.def, obj);
  }

  /** A predicate for list/watch filtering: namespace, label selector, field selector. */
  matcher(t: RequestTarget): (obj: JsonObject) => boolean {
    const labels = parseLabelSelector(t.query.get('labelSelector'));
    const fields = parseFieldSelector(t.query.get('fieldSelector'), [
      'metadata.name',
      'metadata.namespace',
      ...t.def.selectableFields,
    ]);
    return (obj) => {
      const m = meta(obj);
      if (t.namespace !== undefined && m.namespace !== t.namespace) return false;
      if (!matchesLabels(labels, isObject(m.labels) ? m.labels : undefined)) return false;
      return matchesFields(fields, (field) => {
        let cur: Json | undefined = obj;
        for (const k of field.split('.')) cur = isObject(cur) ? cur[k] : undefined;
        return cur === undefined || cur === null ? '' : String(cur);
      });
    };
  }

  list(t: RequestTarget): {
    items: JsonObject[];
    resourceVersion: string;
    continueToken?: string;
    remaining?: number;
  } {
    const match = this.matcher(t);
    let items = this.store.list(resourceKey(t.def), t.namespace).filter(match);
    const cont = t.query.get('continue');
    let listRv = this.store.rv;
    if (cont) {
      let token: { rv: number; start: string };
      try {
        token = JSON.parse(Buffer.from(cont, 'base64url').toString('utf8'));
      } catch {
        throw badRequest('continue key is not valid: illegal base64 data');
      }
      if (token.rv < this.store.compactedRv) {
        throw expired(
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.',
        );
      }
      listRv = token.rv;
      items = items.filter((o) => `${String(meta(o).namespace ?? '')}/${String(meta(o).name)}` > token.start);
    }
    const limit = Number(t.query.get('limit') ?? '0');
    if (limit > 0 && items.length > limit) {
      const page = items.slice(0, limit);
      const last = meta(page[page.length - 1]!);
      const start = `${String(last.namespace ?? '')}/${String(last.name)}`;
      const continueToken = Buffer.from(JSON.stringify({ rv: listRv, start })).toString('base64url');
      return {
        items: page.map((o) => this.present(t.def, o)),
        resourceVersion: String(listRv),
        continueToken,
        remaining: items.length - limit,
      };
    }
    return { items: items.map((o) => this.present(t.def, o)), resourceVersion: String(listRv) };
  }

  // ---- writes --------------------------------------------------------------------------------

  private requireNamespace(t: RequestTarget): void {
    if (!t.def.namespaced || t.namespace === undefined) return;
    if (!this.store.get('namespaces', undefined, t.namespace)) throw notFound('', 'namespaces', t.namespace);
  }

  private checkIdentity(t: RequestTarget, obj: JsonObject): void {
    const m = meta(obj);
    if (obj.kind !== undefined && obj.kind !== t.def.kind) {
      throw badRequest(
        `the kind in the data (${String(obj.kind)}) does not match the expected kind (${t.def.kind})`,
      );
    }
    if (t.def.namespaced) {
      const ns = str(m.namespace);
      if (ns === undefined) m.namespace = t.namespace ?? null;
      else if (ns !== t.namespace) {
        throw badRequest(
          'the namespace of the provided object does not match the namespace sent on the request',
        );
      }
    } else {
      delete m.namespace;
    }
    if (t.name !== undefined && str(m.name) !== undefined && m.name !== t.name) {
      throw badRequest(
        `the name of the object (${String(m.name)}) does not match the name on the URL (${t.name})`,
      );
    }
  }

  /**
   * Decoding, defaulting, pruning and validation shared by every write; mutates `obj`. Throws a
   * 400 for decoding/strict errors and a 422 with causes for invalid values.
   */
  private admit(t: RequestTarget, obj: JsonObject, old: JsonObject | undefined, warnings: string[]): void {
    const m = meta(obj);
    const name = String(m.name ?? '');
    t.def.decode?.(obj);
    const errors: FieldError[] = [];
    if (t.def.custom && t.def.schema) {
      const unknown = pruneAndDefault(obj, t.def.schema);
      const mode = t.query.get('fieldValidation') ?? 'Warn';
      if (unknown.length > 0 && mode === 'Strict') {
        throw badRequest(`strict decoding error: ${unknown.map((u) => `unknown field "${u}"`).join(', ')}`);
      }
      if (unknown.length > 0 && mode !== 'Ignore') {
        for (const u of unknown) warnings.push(`unknown field "${u}"`);
      }
      errors.push(...validateSchema(obj, t.def.schema));
    }
    errors.push(...validateMetadata(m));
    errors.push(...(t.def.validate?.(obj, t.namespace) ?? []));
    if (old && isObject(old.metadata) && old.metadata.deletionTimestamp) {
      const before = new Set(
        Array.isArray(old.metadata.finalizers) ? old.metadata.finalizers.map(String) : [],
      );
      const after = Array.isArray(m.finalizers) ? m.finalizers.map(String) : [];
      if (after.some((f) => !before.has(f))) {
        errors.push(
          forbidden('metadata.finalizers', 'no new finalizers can be added if the object is being deleted'),
        );
      }
    }
    if (t.def.plural === 'customresourcedefinitions' && t.def.group === 'apiextensions.k8s.io') {
      const parsed = parseCrd(obj, name);
      errors.push(...parsed.errors);
      if (parsed.spec && parsed.errors.length === 0) {
        const status = crdStatus(parsed.spec, this.timestamp());
        if (old && isObject(old.status) && Array.isArray(old.status.conditions)) {
          status.conditions = old.status.conditions;
        }
        obj.status = status;
      }
    }
    if (errors.length > 0) throw invalid(t.def.group, t.def.kind, name, errors);
  }

  private managed(
    t: RequestTarget,
    old: JsonObject | undefined,
    next: JsonObject,
    supplied: Json | undefined,
  ): void {
    const m = meta(next);
    const oldEntries = old ? parseManagedFields(meta(old)) : [];
    if (old && supplied !== undefined && canonical(supplied) !== canonical(meta(old).managedFields)) {
      // A client that writes managedFields explicitly (kubectl's client-side-apply upgrade) owns them.
      if (Array.isArray(supplied)) m.managedFields = supplied;
      else delete m.managedFields;
      return;
    }
    const entries = trackUpdate(
      oldEntries,
      old,
      next,
      fieldManagerFrom(t),
      groupVersion(t.def),
      this.timestamp(),
      t.subresource,
    );
    this.setManaged(next, entries, oldEntries, old);
  }

  private setManaged(
    next: JsonObject,
    entries: ManagedEntry[],
    oldEntries: ManagedEntry[],
    old: JsonObject | undefined,
  ): void {
    const m = meta(next);
    const key = (e: ManagedEntry) =>
      `${e.manager}|${e.operation}|${e.subresource ?? ''}|${[...e.fields].sort().join(';')}`;
    const same =
      entries.length === oldEntries.length &&
      entries.map(key).sort().join('\n') === oldEntries.map(key).sort().join('\n');
    if (same && old) {
      if (meta(old).managedFields !== undefined) m.managedFields = meta(old).managedFields!;
      else delete m.managedFields;
      return;
    }
    const rendered = renderManagedFields(entries);
    if (rendered.length > 0) m.managedFields = rendered;
    else delete m.managedFields;
  }

  private dryRun(t: RequestTarget): boolean {
    const d = t.query.getAll('dryRun');
    if (d.some((x) => x !== 'All')) throw badRequest(`Invalid dry run value: ${d.join(',')}`);
    return d.length > 0;
  }

  create(t: RequestTarget, body: Json, applied?: ManagedEntry[]): Outcome {
    if (!isObject(body)) throw badRequest("Object 'Kind' is missing in the request body");
    if (t.subresource)
      throw new KubeError(405, 'MethodNotAllowed', `create is not supported on ${t.subresource}`);
    const obj = structuredClone(body);
    this.checkIdentity(t, obj);
    const m = meta(obj);
    if (!str(m.name) && str(m.generateName)) {
      let suffix = '';
      for (let i = 0; i < 5; i++) suffix += GENERATE_CHARS[Math.floor(Math.random() * GENERATE_CHARS.length)];
      m.name = `${String(m.generateName)}${suffix}`;
    }
    const name = str(m.name);
    if (name === undefined) {
      throw invalid(t.def.group, t.def.kind, '', [
        requiredValue('metadata.name', 'name or generateName is required'),
      ]);
    }
    const nameError = validateName(t.def, name);
    if (nameError)
      throw invalid(t.def.group, t.def.kind, name, [invalidValue('metadata.name', name, nameError)]);
    this.requireNamespace({ ...t, namespace: t.def.namespaced ? str(m.namespace) : undefined });
    obj.apiVersion = groupVersion(t.def);
    obj.kind = t.def.kind;
    if (t.def.subresources.includes('status')) delete obj.status;
    t.def.prepareForCreate?.(obj);
    const warnings: string[] = [];
    this.admit({ ...t, name }, obj, undefined, warnings);
    for (const k of ['resourceVersion', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'selfLink'])
      delete m[k];
    m.uid = randomUUID();
    m.creationTimestamp = this.timestamp();
    if (t.def.tracksGeneration) m.generation = 1;
    else delete m.generation;
    if (applied) this.setManaged(obj, applied, [], undefined);
    else this.managed(t, undefined, obj, undefined);
    const rk = resourceKey(t.def);
    if (this.store.get(rk, str(m.namespace), name)) throw alreadyExists(t.def.group, t.def.plural, name);
    if (this.dryRun(t)) return { code: 201, body: this.present(t.def, obj), warnings };
    const stored = this.store.write(rk, obj, 'ADDED');
    this.afterWrite(t.def, stored);
    return { code: 201, body: this.present(t.def, stored), warnings };
  }

  /** PUT: preconditions, status-subresource merge, then the shared commit path. */
  update(t: RequestTarget, body: Json): Outcome {
    if (!isObject(body)) throw badRequest("Object 'Kind' is missing in the request body");
    const old = this.store.get(resourceKey(t.def), t.namespace, t.name!);
    if (!old) {
      if (t.def.allowCreateOnUpdate && !t.subresource) {
        const created = this.create(
          { ...t, name: undefined },
          { ...body, metadata: { ...meta(structuredClone(body)), name: t.name! } },
        );
        return created;
      }
      throw notFound(t.def.group, t.def.plural, t.name!);
    }
    const next = structuredClone(body);
    this.checkIdentity(t, next);
    const rv = str(meta(next).resourceVersion);
    if (rv === undefined) {
      if (!t.def.allowUnconditionalUpdate) {
        throw invalid(t.def.group, t.def.kind, t.name!, [
          {
            type: 'FieldValueInvalid',
            field: 'metadata.resourceVersion',
            message: 'Invalid value: 0x0: must be specified for an update',
          },
        ]);
      }
    } else if (rv !== meta(old).resourceVersion) {
      throw staleConflict(t.def.group, t.def.plural, t.name!);
    }
    return this.commit(t, old, next, meta(next).managedFields);
  }

  patch(t: RequestTarget, contentType: string, raw: string): Outcome {
    const type = contentType.split(';')[0]!.trim();
    const known = [
      'application/merge-patch+json',
      'application/json-patch+json',
      'application/apply-patch+yaml',
      'application/strategic-merge-patch+json',
    ];
    if (
      !known.includes(type) ||
      (type === 'application/strategic-merge-patch+json' &&
        (t.def.custom || t.def.group === 'apiextensions.k8s.io'))
    ) {
      throw unsupportedPatch();
    }
    let patch: Json;
    try {
      patch = type === 'application/apply-patch+yaml' ? parseYaml(raw) : JSON.parse(raw);
    } catch (e) {
      throw badRequest(`error decoding patch: ${e instanceof Error ? e.message : String(e)}`);
    }
    const rk = resourceKey(t.def);
    const old = this.store.get(rk, t.namespace, t.name!);
    if (type === 'application/apply-patch+yaml') return this.apply(t, old, patch);
    if (!old) throw notFound(t.def.group, t.def.plural, t.name!);
    const current = this.present(t.def, old);
    let next: Json;
    if (type === 'application/merge-patch+json') {
      if (!isObject(patch))
        throw badRequest('json: cannot unmarshal into Go value of type map[string]interface {}');
      next = mergePatch(current, patch);
    } else if (type === 'application/json-patch+json') next = jsonPatch(current, patch);
    else next = strategicMergePatch(current, patch);
    if (!isObject(next)) throw badRequest('the patched object is not an object');
    const rv = str(meta(next).resourceVersion);
    if (rv !== undefined && rv !== meta(old).resourceVersion)
      throw staleConflict(t.def.group, t.def.plural, t.name!);
    const supplied = meta(next).managedFields;
    meta(next).resourceVersion = meta(old).resourceVersion!;
    this.checkIdentity(t, next);
    return this.commit(t, old, next, supplied);
  }

  private apply(t: RequestTarget, old: JsonObject | undefined, patch: Json): Outcome {
    const manager = t.query.get('fieldManager');
    if (!manager)
      throw badRequest('PATCH, application/apply-patch+yaml requests must specify a fieldManager');
    if (!isObject(patch))
      throw badRequest('error decoding YAML: the applied configuration must be an object');
    const force = t.query.get('force') === 'true';
    const applied = structuredClone(patch);
    if (applied.apiVersion !== undefined && applied.apiVersion !== groupVersion(t.def)) {
      throw badRequest(
        `the API version in the data (${String(applied.apiVersion)}) does not match the expected API version (${groupVersion(t.def)})`,
      );
    }
    if (applied.kind !== undefined && applied.kind !== t.def.kind) {
      throw badRequest(
        `the kind in the data (${String(applied.kind)}) does not match the expected kind (${t.def.kind})`,
      );
    }
    this.checkIdentity(t, applied);
    const opts = {
      manager,
      force,
      apiVersion: groupVersion(t.def),
      time: this.timestamp(),
      subresource: t.subresource,
    };
    if (!old) {
      if (t.subresource) throw notFound(t.def.group, t.def.plural, t.name!);
      const base: JsonObject = {
        apiVersion: groupVersion(t.def),
        kind: t.def.kind,
        metadata: { name: t.name! },
      };
      if (t.def.namespaced) meta(base).namespace = t.namespace ?? null;
      const result = serverSideApply(base, applied, [], opts);
      meta(result.object).name = t.name!;
      return this.create({ ...t, name: undefined }, result.object, result.managed);
    }
    const rv = str(meta(applied).resourceVersion);
    if (rv !== undefined && rv !== meta(old).resourceVersion)
      throw staleConflict(t.def.group, t.def.plural, t.name!);
    const current = this.present(t.def, old);
    const result = serverSideApply(current, applied, parseManagedFields(meta(old)), opts);
    meta(result.object).resourceVersion = meta(old).resourceVersion!;
    return this.commit(t, old, result.object, undefined, result.managed);
  }

  /** The common update path: subresource rules, admission, generation, no-op detection, store. */
  private commit(
    t: RequestTarget,
    old: JsonObject,
    incoming: JsonObject,
    suppliedManaged: Json | undefined,
    applied?: ManagedEntry[],
  ): Outcome {
    let next: JsonObject;
    const hasStatus = t.def.subresources.includes('status');
    if (t.subresource === 'status') {
      next = structuredClone(old);
      if (incoming.status === undefined) delete next.status;
      else next.status = incoming.status;
    } else {
      next = structuredClone(incoming);
      if (hasStatus) {
        if (old.status === undefined) delete next.status;
        else next.status = structuredClone(old.status);
      }
    }
    next.apiVersion = groupVersion(t.def);
    next.kind = t.def.kind;
    const m = meta(next);
    const om = meta(old);
    for (const k of [
      'uid',
      'creationTimestamp',
      'deletionTimestamp',
      'deletionGracePeriodSeconds',
      'generation',
      'name',
      'namespace',
    ]) {
      if (om[k] === undefined) delete m[k];
      else m[k] = om[k]!;
    }
    m.resourceVersion = om.resourceVersion!;
    const warnings: string[] = [];
    this.admit(t, next, old, warnings);
    // A /status write never moves the generation (the status strategy keeps the old object but
    // its status), even when admission just defaulted a spec stored without its defaults.
    if (
      t.def.tracksGeneration &&
      t.subresource !== 'status' &&
      canonical(withoutMetaAndStatus(next)) !== canonical(withoutMetaAndStatus(old))
    ) {
      m.generation = (typeof om.generation === 'number' ? om.generation : 0) + 1;
    }
    if (applied) this.setManaged(next, applied, parseManagedFields(om), old);
    else this.managed(t, old, next, suppliedManaged);
    if (this.dryRun(t)) return { code: 200, body: this.present(t.def, next), warnings };
    const rk = resourceKey(t.def);
    if (om.deletionTimestamp && (!Array.isArray(m.finalizers) || m.finalizers.length === 0)) {
      // The last finalizer is gone: the update completes the pending deletion.
      this.store.remove(rk, old);
      this.afterDelete(t.def, old);
      return { code: 200, body: this.present(t.def, next), warnings };
    }
    if (canonical(next) === canonical(old)) return { code: 200, body: this.present(t.def, old), warnings };
    const stored = this.store.write(rk, next, 'MODIFIED');
    this.afterWrite(t.def, stored);
    return { code: 200, body: this.present(t.def, stored), warnings };
  }

  delete(t: RequestTarget, body: Json): Outcome {
    if (t.subresource)
      throw new KubeError(405, 'MethodNotAllowed', `delete is not supported on ${t.subresource}`);
    const rk = resourceKey(t.def);
    const old = this.store.get(rk, t.namespace, t.name!);
    if (!old) throw notFound(t.def.group, t.def.plural, t.name!);
    const om = meta(old);
    const pre = isObject(body) && isObject(body.preconditions) ? body.preconditions : {};
    if (str(pre.resourceVersion) !== undefined && pre.resourceVersion !== om.resourceVersion) {
      throw conflict(
        t.def.group,
        t.def.plural,
        t.name!,
        `the ResourceVersion in the precondition (${String(pre.resourceVersion)}) does not match the ResourceVersion in record (${String(om.resourceVersion)}). The object might have been modified`,
      );
    }
    if (str(pre.uid) !== undefined && pre.uid !== om.uid) {
      throw conflict(
        t.def.group,
        t.def.plural,
        t.name!,
        `the UID in the precondition (${String(pre.uid)}) does not match the UID in record (${String(om.uid)}). The object might have been deleted and then recreated`,
      );
    }
    const dry = this.dryRun(t);
    const finalizers = Array.isArray(om.finalizers) ? om.finalizers : [];
    if (finalizers.length > 0) {
      if (om.deletionTimestamp) return { code: 202, body: this.present(t.def, old), warnings: [] };
      const next = structuredClone(old);
      const nm = meta(next);
      nm.deletionTimestamp = this.timestamp();
      nm.deletionGracePeriodSeconds = 0;
      if (typeof nm.generation === 'number') nm.generation += 1;
      if (dry) return { code: 202, body: this.present(t.def, next), warnings: [] };
      const stored = this.store.write(rk, next, 'MODIFIED');
      return { code: 202, body: this.present(t.def, stored), warnings: [] };
    }
    if (dry) return { code: 200, body: this.present(t.def, old), warnings: [] };
    const last = this.store.remove(rk, old)!;
    this.afterDelete(t.def, old);
    if (t.def.returnDeletedObject || t.def.custom)
      return { code: 200, body: this.present(t.def, last), warnings: [] };
    const details: JsonObject = { name: t.name!, kind: t.def.plural, uid: String(om.uid) };
    if (t.def.group) details.group = t.def.group;
    return {
      code: 200,
      body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details },
      warnings: [],
    };
  }

  deleteCollection(t: RequestTarget, body: Json): Outcome {
    const { items } = this.list({
      ...t,
      query: new URLSearchParams([...t.query].filter(([k]) => k !== 'limit' && k !== 'continue')),
    });
    const deleted: JsonObject[] = [];
    for (const o of items) {
      const ns = str(meta(o).namespace);
      const r = this.delete({ ...t, namespace: ns, name: String(meta(o).name) }, body);
      if (r.body.kind !== 'Status') deleted.push(r.body);
    }
    return {
      code: 200,
      body: {
        kind: t.def.listKind,
        apiVersion: groupVersion(t.def),
        metadata: { resourceVersion: String(this.store.rv) },
        items: deleted,
      },
      warnings: [],
    };
  }

  // ---- cascades ------------------------------------------------------------------------------

  private afterWrite(def: ResourceDef, stored: JsonObject): void {
    if (def.group !== 'apiextensions.k8s.io' || def.plural !== 'customresourcedefinitions') return;
    const name = String(meta(stored).name);
    const parsed = parseCrd(stored, name);
    if (!parsed.spec) return;
    this.defs = [...this.defs.filter((d) => d.crdName !== name), ...crdResources(parsed.spec, name)];
  }

  private afterDelete(def: ResourceDef, old: JsonObject): void {
    const name = String(meta(old).name);
    if (def.group === 'apiextensions.k8s.io' && def.plural === 'customresourcedefinitions') {
      const mine = this.defs.filter((d) => d.crdName === name);
      for (const d of mine.slice(0, 1)) {
        for (const o of this.store.list(resourceKey(d))) this.store.remove(resourceKey(d), o);
      }
      this.defs = this.defs.filter((d) => d.crdName !== name);
    }
    if (def.group === '' && def.plural === 'namespaces') {
      for (const d of this.defs.filter((x) => x.namespaced)) {
        for (const o of this.store.list(resourceKey(d), name)) this.store.remove(resourceKey(d), o);
      }
    }
  }

  /** Test hook: stores an object as given (status included), assigning server metadata. */
  upsert(obj: JsonObject): JsonObject {
    const apiVersion = String(obj.apiVersion ?? '');
    const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
    const def = this.defs.find((d) => d.group === group && d.version === version && d.kind === obj.kind);
    if (!def) throw new Error(`upsert: unknown kind ${apiVersion} ${String(obj.kind)}`);
    const copy = structuredClone(obj);
    def.decode?.(copy);
    const m = meta(copy);
    const rk = resourceKey(def);
    const old = this.store.get(
      rk,
      def.namespaced ? String(m.namespace ?? 'default') : undefined,
      String(m.name),
    );
    if (def.namespaced && m.namespace === undefined) m.namespace = 'default';
    m.uid = old ? meta(old).uid! : randomUUID();
    m.creationTimestamp = old ? meta(old).creationTimestamp! : this.timestamp();
    if (def.tracksGeneration) m.generation = old ? Number(meta(old).generation ?? 0) + 1 : 1;
    const stored = this.store.write(rk, copy, old ? 'MODIFIED' : 'ADDED');
    this.afterWrite(def, stored);
    return stored;
  }
}
