// The resource registry: built-in kinds keyroll and its manifests use, with the apiserver
// strategy rules that matter to clients (create-on-update, unconditional update, generation,
// Secret stringData, Lease MicroTime, Event namespaces).
import { badRequest, type FieldError, invalidValue } from './errors.ts';
import { isObject, type JsonObject, type Schema } from './schema.ts';
import type { PrinterColumn } from './table.ts';

export const ALL_VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

export interface ResourceDef {
  group: string;
  version: string;
  kind: string;
  listKind: string;
  plural: string;
  singular: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  verbs: string[];
  /** Subresources served: `status` has the status-subresource semantics. */
  subresources: string[];
  /** A custom resource: 415 on strategic merge, generation, Delete returns the object. */
  custom: boolean;
  tracksGeneration: boolean;
  /** registry `AllowUnconditionalUpdate()`: false for CRs, CRDs and Leases. */
  allowUnconditionalUpdate: boolean;
  /** registry `AllowCreateOnUpdate()`: true for Leases. */
  allowCreateOnUpdate: boolean;
  returnDeletedObject: boolean;
  /** Field selector labels besides metadata.name / metadata.namespace. */
  selectableFields: string[];
  schema?: Schema | undefined;
  printerColumns?: PrinterColumn[] | undefined;
  /** The CRD that defines this resource. */
  crdName?: string | undefined;
  /** Normalises a decoded body (may throw a 400 decoding error). */
  decode?: ((obj: JsonObject) => void) | undefined;
  /** Strategy hook on create: e.g. a Pod starts Pending. */
  prepareForCreate?: ((obj: JsonObject) => void) | undefined;
  /** Built-in validation beyond names: returns field errors (a 422). */
  validate?: ((obj: JsonObject, namespace: string | undefined) => FieldError[]) | undefined;
}

export function resourceKey(def: Pick<ResourceDef, 'group' | 'plural'>): string {
  return def.group ? `${def.plural}.${def.group}` : def.plural;
}

export function groupVersion(def: Pick<ResourceDef, 'group' | 'version'>): string {
  return def.group ? `${def.group}/${def.version}` : def.version;
}

const MICRO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$/;
const MICRO_LAYOUT = '2006-01-02T15:04:05.000000Z07:00';

/** Go's time.Parse error for metav1.MicroTime, as the JSON decoder reports it. */
export function microTimeError(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') return `json: cannot unmarshal ${typeof value} into Go value of type string`;
  if (MICRO_TIME.test(value)) return undefined;
  const prefix = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/.exec(value);
  if (!prefix)
    return `parsing time ${JSON.stringify(value)} as "${MICRO_LAYOUT}": cannot parse ${JSON.stringify(value)} as "2006"`;
  const rest = value.slice(prefix[0].length);
  const frac = /^\.\d{6}/.exec(rest);
  if (!frac)
    return `parsing time ${JSON.stringify(value)} as "${MICRO_LAYOUT}": cannot parse ${JSON.stringify(rest)} as ".000000"`;
  return `parsing time ${JSON.stringify(value)} as "${MICRO_LAYOUT}": cannot parse ${JSON.stringify(rest.slice(7))} as "Z07:00"`;
}

function decodeError(kind: string, version: string, detail: string): never {
  throw badRequest(`${kind} in version "${version}" cannot be handled as a ${kind}: ${detail}`);
}

function checkMicroTimes(kind: string, version: string, holder: unknown, fields: string[]): void {
  if (!isObject(holder)) return;
  for (const f of fields) {
    const err = microTimeError(holder[f]);
    if (err) decodeError(kind, version, err);
  }
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function base64Error(value: string): string | undefined {
  if (BASE64.test(value) && value.length % 4 === 0) return undefined;
  const bad = [...value].findIndex((c) => !/[A-Za-z0-9+/=]/.test(c));
  return `illegal base64 data at input byte ${bad >= 0 ? bad : Math.floor(value.length / 4) * 4}`;
}

const SECRET_KEY = /^[-._a-zA-Z0-9]+$/;

function decodeSecret(obj: JsonObject): void {
  const data: JsonObject = isObject(obj.data) ? { ...obj.data } : {};
  for (const v of Object.values(data)) {
    if (typeof v !== 'string')
      decodeError(
        'Secret',
        'v1',
        `json: cannot unmarshal ${typeof v} into Go struct field Secret.data of type []uint8`,
      );
    const err = base64Error(v);
    if (err) decodeError('Secret', 'v1', err);
  }
  if (isObject(obj.stringData)) {
    for (const [k, v] of Object.entries(obj.stringData)) {
      if (typeof v !== 'string')
        decodeError(
          'Secret',
          'v1',
          'json: cannot unmarshal into Go struct field Secret.stringData of type string',
        );
      data[k] = Buffer.from(v, 'utf8').toString('base64');
    }
  }
  delete obj.stringData;
  if (Object.keys(data).length > 0) obj.data = data;
  else delete obj.data;
  if (obj.type === undefined || obj.type === '') obj.type = 'Opaque';
}

function validateSecret(obj: JsonObject): FieldError[] {
  const errors: FieldError[] = [];
  if (isObject(obj.data)) {
    for (const k of Object.keys(obj.data)) {
      if (!SECRET_KEY.test(k)) {
        errors.push(
          invalidValue(
            `data[${k}]`,
            k,
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
          ),
        );
      }
    }
  }
  return errors;
}

function validateCoreEvent(obj: JsonObject, namespace: string | undefined): FieldError[] {
  const involved = isObject(obj.involvedObject) ? obj.involvedObject : {};
  const ns = typeof involved.namespace === 'string' ? involved.namespace : '';
  if (ns !== '' && namespace !== undefined && ns !== namespace) {
    return [invalidValue('involvedObject.namespace', ns, 'does not match event.namespace')];
  }
  return [];
}

interface BuiltinSpec {
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
  shortNames?: string[];
  status?: boolean;
  generation?: boolean;
  conditional?: boolean;
  createOnUpdate?: boolean;
  returnDeleted?: boolean;
  selectable?: string[];
  decode?: (obj: JsonObject) => void;
  prepareForCreate?: (obj: JsonObject) => void;
  validate?: (obj: JsonObject, namespace: string | undefined) => FieldError[];
}

function builtin(s: BuiltinSpec): ResourceDef {
  return {
    group: s.group,
    version: s.version,
    kind: s.kind,
    listKind: `${s.kind}List`,
    plural: s.plural,
    singular: s.kind.toLowerCase(),
    namespaced: s.namespaced,
    shortNames: s.shortNames ?? [],
    categories: [],
    verbs: ALL_VERBS,
    subresources: s.status ? ['status'] : [],
    custom: false,
    tracksGeneration: s.generation ?? false,
    allowUnconditionalUpdate: !s.conditional,
    allowCreateOnUpdate: s.createOnUpdate ?? false,
    returnDeletedObject: s.returnDeleted ?? false,
    selectableFields: s.selectable ?? [],
    decode: s.decode,
    prepareForCreate: s.prepareForCreate,
    validate: s.validate,
  };
}

export function builtinResources(): ResourceDef[] {
  const core = (x: Omit<BuiltinSpec, 'group' | 'version'>): ResourceDef =>
    builtin({ group: '', version: 'v1', ...x });
  const opaqueWorkload = (
    group: string,
    version: string,
    kind: string,
    plural: string,
    shortNames: string[],
  ) =>
    builtin({ group, version, kind, plural, namespaced: true, shortNames, status: true, generation: true });
  return [
    core({
      kind: 'Namespace',
      plural: 'namespaces',
      namespaced: false,
      shortNames: ['ns'],
      status: true,
      returnDeleted: true,
      selectable: ['status.phase'],
      prepareForCreate: (o) => {
        o.status = { phase: 'Active' };
      },
    }),
    core({
      kind: 'Secret',
      plural: 'secrets',
      namespaced: true,
      selectable: ['type'],
      decode: decodeSecret,
      validate: validateSecret,
    }),
    core({ kind: 'ConfigMap', plural: 'configmaps', namespaced: true, shortNames: ['cm'] }),
    core({ kind: 'ServiceAccount', plural: 'serviceaccounts', namespaced: true, shortNames: ['sa'] }),
    core({ kind: 'Service', plural: 'services', namespaced: true, shortNames: ['svc'], status: true }),
    core({
      kind: 'Pod',
      plural: 'pods',
      namespaced: true,
      shortNames: ['po'],
      status: true,
      returnDeleted: true,
      selectable: [
        'spec.nodeName',
        'spec.restartPolicy',
        'spec.schedulerName',
        'spec.serviceAccountName',
        'status.phase',
        'status.podIP',
        'status.nominatedNodeName',
      ],
      prepareForCreate: (o) => {
        // podStrategy.PrepareForCreate: a new pod is Pending until a kubelet reports on it.
        o.status = { phase: 'Pending', qosClass: 'BestEffort' };
      },
    }),
    core({
      kind: 'Event',
      plural: 'events',
      namespaced: true,
      shortNames: ['ev'],
      selectable: [
        'involvedObject.kind',
        'involvedObject.namespace',
        'involvedObject.name',
        'involvedObject.uid',
        'involvedObject.apiVersion',
        'involvedObject.resourceVersion',
        'involvedObject.fieldPath',
        'reason',
        'reportingComponent',
        'source',
        'type',
      ],
      decode: (o) => checkMicroTimes('Event', 'v1', o, ['eventTime']),
      validate: validateCoreEvent,
    }),
    builtin({
      group: 'events.k8s.io',
      version: 'v1',
      kind: 'Event',
      plural: 'events',
      namespaced: true,
      shortNames: ['ev'],
      decode: (o) => {
        checkMicroTimes('Event', 'v1', o, ['eventTime']);
        if (isObject(o.series)) checkMicroTimes('Event', 'v1', o.series, ['lastObservedTime']);
      },
      validate: (o) =>
        o.eventTime === undefined || o.eventTime === null
          ? [{ type: 'FieldValueRequired', field: 'eventTime', message: 'Required value' }]
          : [],
    }),
    builtin({
      group: 'coordination.k8s.io',
      version: 'v1',
      kind: 'Lease',
      plural: 'leases',
      namespaced: true,
      conditional: true,
      createOnUpdate: true,
      decode: (o) => checkMicroTimes('Lease', 'v1', o.spec, ['acquireTime', 'renewTime']),
    }),
    builtin({
      group: 'rbac.authorization.k8s.io',
      version: 'v1',
      kind: 'Role',
      plural: 'roles',
      namespaced: true,
    }),
    builtin({
      group: 'rbac.authorization.k8s.io',
      version: 'v1',
      kind: 'RoleBinding',
      plural: 'rolebindings',
      namespaced: true,
    }),
    builtin({
      group: 'rbac.authorization.k8s.io',
      version: 'v1',
      kind: 'ClusterRole',
      plural: 'clusterroles',
      namespaced: false,
    }),
    builtin({
      group: 'rbac.authorization.k8s.io',
      version: 'v1',
      kind: 'ClusterRoleBinding',
      plural: 'clusterrolebindings',
      namespaced: false,
    }),
    opaqueWorkload('apps', 'v1', 'Deployment', 'deployments', ['deploy']),
    opaqueWorkload('apps', 'v1', 'StatefulSet', 'statefulsets', ['sts']),
    opaqueWorkload('apps', 'v1', 'DaemonSet', 'daemonsets', ['ds']),
    opaqueWorkload('batch', 'v1', 'Job', 'jobs', []),
    opaqueWorkload('batch', 'v1', 'CronJob', 'cronjobs', ['cj']),
    opaqueWorkload('policy', 'v1', 'PodDisruptionBudget', 'poddisruptionbudgets', ['pdb']),
    builtin({
      group: 'networking.k8s.io',
      version: 'v1',
      kind: 'NetworkPolicy',
      plural: 'networkpolicies',
      namespaced: true,
      shortNames: ['netpol'],
      generation: true,
    }),
    builtin({
      group: 'apiextensions.k8s.io',
      version: 'v1',
      kind: 'CustomResourceDefinition',
      plural: 'customresourcedefinitions',
      namespaced: false,
      shortNames: ['crd', 'crds'],
      status: true,
      generation: true,
      conditional: true,
      returnDeleted: true,
    }),
  ];
}

/** Name rules: DNS-1123 label for namespaces, path segments for RBAC, DNS subdomain otherwise. */
export function validateName(def: ResourceDef, name: string): string | undefined {
  if (def.group === 'rbac.authorization.k8s.io') {
    if (name === '.' || name === '..') return `may not be '${name}'`;
    if (/[/%]/.test(name)) return "may not contain '/' or '%'";
    return undefined;
  }
  if (def.plural === 'namespaces' && def.group === '') {
    if (name.length > 63) return 'must be no more than 63 characters';
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name)) {
      return "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    }
    return undefined;
  }
  if (name.length > 253) return 'must be no more than 253 characters';
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(name)) {
    return "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
  }
  return undefined;
}

const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_NAME =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;

export function validateMetadata(meta: JsonObject): FieldError[] {
  const errors: FieldError[] = [];
  const labels = meta.labels;
  if (labels !== undefined && labels !== null) {
    if (!isObject(labels))
      errors.push(invalidValue('metadata.labels', labels, 'must be a map of string to string'));
    else {
      for (const [k, v] of Object.entries(labels)) {
        if (!LABEL_NAME.test(k))
          errors.push(
            invalidValue(
              'metadata.labels',
              k,
              "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            ),
          );
        if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE.test(v)) {
          errors.push(
            invalidValue(
              `metadata.labels`,
              v,
              "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            ),
          );
        }
      }
    }
  }
  const annotations = meta.annotations;
  if (annotations !== undefined && annotations !== null && isObject(annotations)) {
    for (const [k, v] of Object.entries(annotations)) {
      if (typeof v !== 'string')
        errors.push(invalidValue(`metadata.annotations[${k}]`, v, 'must be a string'));
    }
  }
  const finalizers = meta.finalizers;
  if (finalizers !== undefined && finalizers !== null && !Array.isArray(finalizers)) {
    errors.push(invalidValue('metadata.finalizers', finalizers, 'must be a list of strings'));
  }
  return errors;
}
