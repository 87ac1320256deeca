// Discovery documents (legacy and aggregated v2/v2beta1) and the minimal openapi v3 documents
// that make kubectl send fieldValidation=Strict (cli-runtime query_param_verifier_v3.go).
import { createHash } from 'node:crypto';
import { groupVersion, type ResourceDef } from './resources.ts';
import type { JsonObject } from './schema.ts';

export const AGGREGATED_V2 = 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList';
export const AGGREGATED_V2BETA1 = 'application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList';

/** Which aggregated discovery version the Accept header asks for, if any. */
export function aggregatedVersion(accept: string): 'v2' | 'v2beta1' | undefined {
  const types = accept.split(',').map((t) => t.replace(/\s+/g, ''));
  if (
    types.some(
      (t) =>
        t.includes('g=apidiscovery.k8s.io') && t.includes('v=v2;') && t.includes('as=APIGroupDiscoveryList'),
    )
  ) {
    return 'v2';
  }
  if (
    types.some(
      (t) =>
        t.includes('g=apidiscovery.k8s.io') &&
        t.includes('v=v2beta1') &&
        t.includes('as=APIGroupDiscoveryList'),
    )
  ) {
    return 'v2beta1';
  }
  return undefined;
}

interface GroupInfo {
  name: string;
  versions: string[];
}

export function groupsOf(defs: ResourceDef[]): GroupInfo[] {
  const groups = new Map<string, string[]>();
  for (const d of defs) {
    if (!d.group) continue;
    const vs = groups.get(d.group) ?? [];
    if (!vs.includes(d.version)) vs.push(d.version);
    groups.set(d.group, vs);
  }
  return [...groups.entries()].map(([name, versions]) => ({
    name,
    versions: versions.sort(compareVersions),
  }));
}

/** Kubernetes version priority: GA > beta > alpha, higher numbers first. */
function compareVersions(a: string, b: string): number {
  const rank = (v: string): [number, number, number] => {
    const m = /^v(\d+)(?:(alpha|beta)(\d+))?$/.exec(v);
    if (!m) return [0, 0, 0];
    const level = m[2] === undefined ? 3 : m[2] === 'beta' ? 2 : 1;
    return [level, Number(m[1]), Number(m[3] ?? 0)];
  };
  const [la, ma, na] = rank(a);
  const [lb, mb, nb] = rank(b);
  return lb - la || mb - ma || nb - na;
}

export function apiVersions(host: string): JsonObject {
  return {
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: host }],
  };
}

export function apiGroupList(defs: ResourceDef[]): JsonObject {
  return {
    kind: 'APIGroupList',
    apiVersion: 'v1',
    groups: groupsOf(defs).map((g) => apiGroup(g)),
  };
}

function apiGroup(g: GroupInfo): JsonObject {
  const versions = g.versions.map((v) => ({ groupVersion: `${g.name}/${v}`, version: v }));
  return { name: g.name, versions, preferredVersion: versions[0]! };
}

export function apiGroupDoc(defs: ResourceDef[], group: string): JsonObject | undefined {
  const g = groupsOf(defs).find((x) => x.name === group);
  return g ? { kind: 'APIGroup', apiVersion: 'v1', ...apiGroup(g) } : undefined;
}

export function apiResourceList(defs: ResourceDef[], group: string, version: string): JsonObject | undefined {
  const mine = defs.filter((d) => d.group === group && d.version === version);
  if (mine.length === 0) return undefined;
  const resources: JsonObject[] = [];
  for (const d of mine) {
    const r: JsonObject = {
      name: d.plural,
      singularName: d.singular,
      namespaced: d.namespaced,
      kind: d.kind,
      verbs: d.verbs,
    };
    if (d.shortNames.length > 0) r.shortNames = d.shortNames;
    if (d.categories.length > 0) r.categories = d.categories;
    resources.push(r);
    for (const sub of d.subresources) {
      resources.push({
        name: `${d.plural}/${sub}`,
        singularName: '',
        namespaced: d.namespaced,
        kind: d.kind,
        verbs: ['get', 'patch', 'update'],
      });
    }
  }
  return {
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion: groupVersion({ group, version }),
    resources,
  };
}

/** APIGroupDiscoveryList for `/api` (core) or `/apis` (groups). */
export function aggregatedDiscovery(
  defs: ResourceDef[],
  core: boolean,
  version: 'v2' | 'v2beta1',
): JsonObject {
  const groups: GroupInfo[] = core ? [{ name: '', versions: ['v1'] }] : groupsOf(defs);
  return {
    kind: 'APIGroupDiscoveryList',
    apiVersion: `apidiscovery.k8s.io/${version}`,
    metadata: {},
    items: groups.map((g) => ({
      metadata: { name: g.name, creationTimestamp: null },
      versions: g.versions.map((v) => ({
        version: v,
        resources: defs
          .filter((d) => d.group === g.name && d.version === v)
          .map((d) => {
            const responseKind = { group: d.group, version: d.version, kind: d.kind };
            const r: JsonObject = {
              resource: d.plural,
              responseKind,
              scope: d.namespaced ? 'Namespaced' : 'Cluster',
              singularResource: d.singular,
              verbs: d.verbs,
            };
            if (d.shortNames.length > 0) r.shortNames = d.shortNames;
            if (d.categories.length > 0) r.categories = d.categories;
            if (d.subresources.length > 0) {
              r.subresources = d.subresources.map((s) => ({
                subresource: s,
                responseKind,
                verbs: ['get', 'patch', 'update'],
              }));
            }
            return r;
          }),
        freshness: 'Current',
      })),
    })),
  };
}

function gvPathKey(group: string, version: string): string {
  return group ? `apis/${group}/${version}` : `api/${version}`;
}

/** The per-group-version document: a PATCH operation per kind with the fieldValidation param. */
export function openapiGroupVersion(defs: ResourceDef[], key: string): JsonObject | undefined {
  const mine = defs.filter((d) => gvPathKey(d.group, d.version) === key);
  if (mine.length === 0) return undefined;
  const paths: JsonObject = {};
  for (const d of mine) {
    const base = `/${key}/${d.namespaced ? 'namespaces/{namespace}/' : ''}${d.plural}/{name}`;
    const gvk = { group: d.group, version: d.version, kind: d.kind };
    const op = (action: string) => ({
      'x-kubernetes-action': action,
      'x-kubernetes-group-version-kind': gvk,
      parameters: [
        { name: 'dryRun', in: 'query', schema: { type: 'string', uniqueItems: true } },
        { name: 'fieldManager', in: 'query', schema: { type: 'string', uniqueItems: true } },
        { name: 'fieldValidation', in: 'query', schema: { type: 'string', uniqueItems: true } },
      ],
      responses: { '200': { description: 'OK' } },
    });
    paths[base] = { patch: op('patch'), put: op('put') };
  }
  return {
    openapi: '3.0.0',
    info: { title: 'Kubernetes', version: 'v1.32.0' },
    paths,
    components: { schemas: {} },
  };
}

export function openapiIndex(defs: ResourceDef[]): JsonObject {
  const keys = new Set(defs.map((d) => gvPathKey(d.group, d.version)));
  const paths: JsonObject = {};
  for (const key of [...keys].sort()) {
    const doc = openapiGroupVersion(defs, key);
    const hash = createHash('sha512').update(JSON.stringify(doc)).digest('hex').toUpperCase().slice(0, 128);
    paths[key] = { serverRelativeURL: `/openapi/v3/${key}?hash=${hash}` };
  }
  return { paths };
}
