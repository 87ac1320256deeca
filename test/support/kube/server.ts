// The in-memory Kubernetes API test server: HTTP routing on node:http, discovery and openapi,
// a kubeconfig for kubectl and client-node, and the test hooks (see docs/kube-test-server.md).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { KubeApi, type Outcome, type RequestTarget } from './api.ts';
import {
  AGGREGATED_V2,
  AGGREGATED_V2BETA1,
  aggregatedDiscovery,
  aggregatedVersion,
  apiGroupDoc,
  apiGroupList,
  apiResourceList,
  apiVersions,
  openapiGroupVersion,
  openapiIndex,
} from './discovery.ts';
import { badRequest, injected, KubeError, methodNotSupported, pageNotFound } from './errors.ts';
import { groupVersion, resourceKey } from './resources.ts';
import { isObject, type Json, type JsonObject } from './schema.ts';
import { Store } from './store.ts';
import { TABLE_ACCEPT, toTable } from './table.ts';
import { WatchHub } from './watch.ts';

export interface KubeApiServerOptions {
  /** CRD YAML files created at start (multi-document files allowed). */
  crdPaths?: string[];
  /** What `/version` reports; its minor picks the kubectl the dispatcher runs (default 1.32). */
  version?: { major: string | number; minor: string | number };
  /** Legacy discovery only (as kubectl 1.28 sees a server without aggregated discovery). */
  discovery?: 'aggregated' | 'legacy';
  /** Events kept for watch replay before automatic compaction (default 10,000). */
  historyLimit?: number;
  /** Interval of BOOKMARK events on watches that allow them (default 5 s; 0 disables). */
  bookmarkIntervalMs?: number;
  /** The server clock (timestamps, ages); replace it later with hooks.setClock. */
  now?: () => Date;
  /** Extra namespaces besides default, kube-system, kube-public and kube-node-lease. */
  namespaces?: string[];
}

export interface RequestLogEntry {
  method: string;
  path: string;
  query: Record<string, string>;
  verb: string;
  group: string;
  version: string;
  resource: string;
  subresource: string;
  namespace: string;
  name: string;
  contentType: string;
  userAgent: string;
  /** The response status, once sent. */
  code: number;
}

export interface FailureRule {
  verb?: string;
  /** Plural (`secrets`, `gatewaykeys`) or `plural.group`. */
  resource?: string;
  /** `status`, or '' for the main resource only; absent matches both. */
  subresource?: string;
  namespace?: string;
  name?: string;
  /** HTTP status to answer with (409, 429, 500, 503, ...), as a Status of the matching reason. */
  code: number;
  /** How many matching requests fail (default: all until removed). */
  count?: number;
  retryAfterSeconds?: number;
  message?: string;
  /** Destroy the connection instead of answering. */
  drop?: boolean;
}

export interface KubeHooks {
  /** Forget watch history and bump the resourceVersion: every held RV now gets 410 Expired. */
  compactHistory(): void;
  /** Fail matching requests; returns a function that removes the rule. */
  injectFailure(rule: FailureRule): () => void;
  clearFailures(): void;
  /** End all open watches (clients see a normal end of stream); returns how many. */
  dropWatches(): number;
  /** Send a BOOKMARK now on every watch that allows bookmarks. */
  sendBookmarks(): void;
  activeWatches(): number;
  requestLog(): RequestLogEntry[];
  clearRequestLog(): void;
  /** Stored objects (copies) of a resource: `secrets`, `gatewaykeys`, `leases.coordination.k8s.io`. */
  objects(resource: string, namespace?: string): JsonObject[];
  get(resource: string, namespace: string | undefined, name: string): JsonObject | undefined;
  /** Store an object as given (status included) with server metadata; emits watch events. */
  upsert(obj: JsonObject): JsonObject;
  /** Every stored object of every resource, for greps. */
  dump(): JsonObject[];
  resourceVersion(): string;
  setClock(now: () => Date): void;
}

export interface KubeApiServer {
  url: string;
  kubeconfigPath: string;
  hooks: KubeHooks;
  close(): Promise<void>;
}

const MAX_BODY = 3 * 1024 * 1024;

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new KubeError(413, 'RequestEntityTooLarge', 'Request entity too large: limit is 3145728'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function warningHeader(w: string): string {
  return `299 - "${w.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function send(
  res: ServerResponse,
  code: number,
  body: Json,
  headers: Record<string, string | string[]> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(code, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function sendError(res: ServerResponse, e: KubeError): void {
  send(res, e.code, e.toStatus(), e.headers);
}

function kubeconfig(url: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: fake',
    '  cluster:',
    `    server: ${url}`,
    '    insecure-skip-tls-verify: true',
    'contexts:',
    '- name: fake',
    '  context:',
    '    cluster: fake',
    '    user: fake',
    '    namespace: default',
    'current-context: fake',
    'users:',
    '- name: fake',
    '  user:',
    '    token: fake-token',
    '',
  ].join('\n');
}

function verbOf(method: string, name: string | undefined, query: URLSearchParams): string {
  switch (method) {
    case 'GET':
      if (name) return 'get';
      return query.get('watch') === 'true' || query.get('watch') === '1' ? 'watch' : 'list';
    case 'POST':
      return 'create';
    case 'PUT':
      return 'update';
    case 'PATCH':
      return 'patch';
    case 'DELETE':
      return name ? 'delete' : 'deletecollection';
    default:
      return method.toLowerCase();
  }
}

function ruleMatches(rule: FailureRule, e: RequestLogEntry): boolean {
  if (rule.verb !== undefined && rule.verb !== e.verb) return false;
  if (rule.resource !== undefined) {
    const full = e.group ? `${e.resource}.${e.group}` : e.resource;
    if (rule.resource !== e.resource && rule.resource !== full) return false;
  }
  if (rule.subresource !== undefined && rule.subresource !== e.subresource) return false;
  if (rule.namespace !== undefined && rule.namespace !== e.namespace) return false;
  if (rule.name !== undefined && rule.name !== e.name) return false;
  return true;
}

export async function startKubeApiServer(options: KubeApiServerOptions = {}): Promise<KubeApiServer> {
  let now = options.now ?? (() => new Date());
  const store = new Store(options.historyLimit ?? 10_000);
  const api = new KubeApi(store, () => now());
  const watches = new WatchHub();
  const failures: { rule: FailureRule; left: number }[] = [];
  const log: RequestLogEntry[] = [];
  const version = options.version ?? { major: '1', minor: '32' };
  const bookmarkIntervalMs = options.bookmarkIntervalMs ?? 5000;

  const sys = (plural: string): RequestTarget => ({
    def: api.find(plural === 'namespaces' ? '' : 'apiextensions.k8s.io', 'v1', plural)!,
    namespace: undefined,
    name: undefined,
    subresource: undefined,
    query: new URLSearchParams(),
    userAgent: 'kube-test-server',
  });
  for (const ns of [
    'default',
    'kube-system',
    'kube-public',
    'kube-node-lease',
    ...(options.namespaces ?? []),
  ]) {
    api.create(sys('namespaces'), { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  }
  for (const path of options.crdPaths ?? []) {
    for (const doc of parseAllDocuments(await readFile(path, 'utf8'))) {
      const obj: unknown = doc.toJS();
      if (isObject(obj) && obj.kind === 'CustomResourceDefinition')
        api.create(sys('customresourcedefinitions'), obj);
    }
  }

  let host = '';
  const handle = async (req: IncomingMessage, res: ServerResponse, entry: RequestLogEntry): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const accept = req.headers.accept ?? '';
    const method = req.method ?? 'GET';
    const defs = api.resources();
    const aggregated = options.discovery === 'legacy' ? undefined : aggregatedVersion(accept);

    if (method === 'GET') {
      const p = parts.join('/');
      if (p === 'version') {
        send(res, 200, {
          major: String(version.major),
          minor: String(version.minor),
          gitVersion: `v${version.major}.${version.minor}.0`,
          gitCommit: 'keyroll-kube-test-server',
          gitTreeState: 'clean',
          buildDate: '2025-01-01T00:00:00Z',
          goVersion: 'go1.23.4',
          compiler: 'gc',
          platform: 'linux/amd64',
        });
        return;
      }
      if (p === 'healthz' || p === 'readyz' || p === 'livez') {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.end('ok');
        return;
      }
      if (p === 'api' || p === 'apis') {
        if (aggregated) {
          const body = aggregatedDiscovery(defs, p === 'api', aggregated);
          send(res, 200, body, { 'Content-Type': aggregated === 'v2' ? AGGREGATED_V2 : AGGREGATED_V2BETA1 });
        } else send(res, 200, p === 'api' ? apiVersions(host) : apiGroupList(defs));
        return;
      }
      if (p === 'api/v1') {
        send(res, 200, apiResourceList(defs, '', 'v1')!);
        return;
      }
      if (parts[0] === 'apis' && parts.length === 2) {
        const doc = apiGroupDoc(defs, parts[1]!);
        if (doc) send(res, 200, doc);
        else sendError(res, pageNotFound());
        return;
      }
      if (parts[0] === 'apis' && parts.length === 3) {
        const doc = apiResourceList(defs, parts[1]!, parts[2]!);
        if (doc) send(res, 200, doc);
        else sendError(res, pageNotFound());
        return;
      }
      if (p === 'openapi/v3') {
        send(res, 200, openapiIndex(defs));
        return;
      }
      if (parts[0] === 'openapi' && parts[1] === 'v3') {
        const doc = openapiGroupVersion(defs, parts.slice(2).join('/'));
        if (doc) send(res, 200, doc);
        else sendError(res, pageNotFound());
        return;
      }
    }

    // Resource paths: /api/v1/... and /apis/<group>/<version>/...
    let group: string;
    let ver: string;
    let rest: string[];
    if (parts[0] === 'api' && parts[1] === 'v1') {
      group = '';
      ver = 'v1';
      rest = parts.slice(2);
    } else if (parts[0] === 'apis' && parts.length >= 4) {
      group = parts[1]!;
      ver = parts[2]!;
      rest = parts.slice(3);
    } else {
      sendError(res, pageNotFound());
      return;
    }
    let namespace: string | undefined;
    let plural: string | undefined;
    let name: string | undefined;
    let subresource: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3 && api.find(group, ver, rest[2]!)) {
      [, namespace, plural, name, subresource] = rest;
      if (rest.length > 5) plural = undefined;
    } else {
      [plural, name, subresource] = rest;
      if (rest.length > 3) plural = undefined;
    }
    const def = plural ? api.find(group, ver, plural) : undefined;
    if (!def || (name === undefined && namespace !== undefined && !def.namespaced)) {
      sendError(res, pageNotFound());
      return;
    }
    if (!def.namespaced && namespace !== undefined) {
      sendError(res, pageNotFound());
      return;
    }
    if (subresource !== undefined && !def.subresources.includes(subresource)) {
      sendError(res, pageNotFound());
      return;
    }
    const query = url.searchParams;
    const verb = verbOf(method, name, query);
    Object.assign(entry, {
      verb,
      group,
      version: ver,
      resource: def.plural,
      subresource: subresource ?? '',
      namespace: namespace ?? '',
      name: name ?? '',
    });
    for (const f of failures) {
      if (f.left === 0 || !ruleMatches(f.rule, entry)) continue;
      f.left--;
      if (f.rule.drop) {
        req.socket.destroy();
        return;
      }
      sendError(res, injected(f.rule.code, f.rule.message, f.rule.retryAfterSeconds));
      return;
    }
    if (
      name === undefined &&
      def.namespaced &&
      namespace === undefined &&
      verb !== 'list' &&
      verb !== 'watch'
    ) {
      sendError(res, methodNotSupported(group, def.plural, verb));
      return;
    }
    const target: RequestTarget = {
      def,
      namespace,
      name,
      subresource,
      query,
      userAgent: String(req.headers['user-agent'] ?? ''),
    };
    const raw = method === 'GET' ? '' : await readBody(req);
    const parseJson = (): Json => {
      if (raw.trim() === '') return null;
      try {
        return JSON.parse(raw);
      } catch (e) {
        throw badRequest(
          `couldn't get version/kind; json parse error: ${e instanceof Error ? e.message : String(e)}`,
        );
      }
    };
    const asTable = TABLE_ACCEPT.test(accept);
    const includeObject = query.get('includeObject') ?? 'Metadata';
    let outcome: Outcome;
    switch (verb) {
      case 'watch':
        watches.serve(api, target, accept, res, { bookmarkIntervalMs, now });
        return;
      case 'list': {
        const r = api.list(target);
        if (asTable) {
          outcome = {
            code: 200,
            body: toTable(r.items, def.printerColumns, {
              now: now().getTime(),
              resourceVersion: r.resourceVersion,
              includeObject,
              ...(r.continueToken ? { continueToken: r.continueToken } : {}),
            }),
            warnings: [],
          };
          break;
        }
        const metadata: JsonObject = { resourceVersion: r.resourceVersion };
        if (r.continueToken) metadata.continue = r.continueToken;
        if (r.remaining !== undefined) metadata.remainingItemCount = r.remaining;
        outcome = {
          code: 200,
          body: { kind: def.listKind, apiVersion: groupVersion(def), metadata, items: r.items },
          warnings: [],
        };
        break;
      }
      case 'get': {
        const obj = api.get(target);
        const body = asTable
          ? toTable([obj], def.printerColumns, {
              now: now().getTime(),
              resourceVersion: String((obj.metadata as JsonObject).resourceVersion),
              includeObject,
            })
          : obj;
        outcome = { code: 200, body, warnings: [] };
        break;
      }
      case 'create':
        outcome = api.create(target, parseJson());
        break;
      case 'update':
        outcome = api.update(target, parseJson());
        break;
      case 'patch':
        outcome = api.patch(target, String(req.headers['content-type'] ?? ''), raw);
        break;
      case 'delete':
        outcome = api.delete(target, parseJson());
        break;
      case 'deletecollection':
        outcome = api.deleteCollection(target, parseJson());
        break;
      default:
        throw methodNotSupported(group, def.plural, verb);
    }
    const headers: Record<string, string | string[]> = {};
    if (outcome.warnings.length > 0) headers.Warning = outcome.warnings.map(warningHeader);
    send(res, outcome.code, outcome.body, headers);
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const entry: RequestLogEntry = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      verb: '',
      group: '',
      version: '',
      resource: '',
      subresource: '',
      namespace: '',
      name: '',
      contentType: String(req.headers['content-type'] ?? ''),
      userAgent: String(req.headers['user-agent'] ?? ''),
      code: 0,
    };
    log.push(entry);
    res.on('finish', () => {
      entry.code = res.statusCode;
    });
    handle(req, res, entry).catch((e: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (e instanceof KubeError) sendError(res, e);
      else
        sendError(
          res,
          new KubeError(
            500,
            'InternalError',
            `Internal error occurred: ${e instanceof Error ? e.message : String(e)}`,
          ),
        );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  host = `127.0.0.1:${port}`;
  const url = `http://${host}`;
  const dir = await mkdtemp(join(tmpdir(), 'keyroll-kube-'));
  const kubeconfigPath = join(dir, 'kubeconfig');
  await writeFile(kubeconfigPath, kubeconfig(url), { mode: 0o600 });

  const hooks: KubeHooks = {
    compactHistory: () => store.compact(),
    injectFailure: (rule) => {
      const f = { rule, left: rule.count ?? -1 };
      failures.push(f);
      return () => {
        const i = failures.indexOf(f);
        if (i >= 0) failures.splice(i, 1);
      };
    },
    clearFailures: () => {
      failures.length = 0;
    },
    dropWatches: () => watches.dropAll(),
    sendBookmarks: () => watches.bookmarkAll(),
    activeWatches: () => watches.count(),
    requestLog: () => log.map((e) => ({ ...e, query: { ...e.query } })),
    clearRequestLog: () => {
      log.length = 0;
    },
    objects: (resource, namespace) => {
      const def = api.lookup(resource);
      return def ? store.list(resourceKey(def), namespace) : [];
    },
    get: (resource, namespace, name) => {
      const def = api.lookup(resource);
      return def ? store.get(resourceKey(def), namespace, name) : undefined;
    },
    upsert: (obj) => api.upsert(obj),
    dump: () => store.resources().flatMap((r) => store.list(r)),
    resourceVersion: () => String(store.rv),
    setClock: (fn) => {
      now = fn;
    },
  };

  return {
    url,
    kubeconfigPath,
    hooks,
    close: async () => {
      watches.dropAll();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
