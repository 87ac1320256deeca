// Owns the operator's only use of @kubernetes/client-node: kubeconfig, authenticated bounded requests, watches.
import { readFileSync } from 'node:fs';
import { IsomorphicFetchHttpLibrary, KubeConfig, RequestContext, Watch } from '@kubernetes/client-node';
import * as z from 'zod';
import { API_VERSION, GROUP, PLURAL, VERSION } from './gateway-key.ts';
import {
  type KubeClient,
  KubeError,
  type ListOptions,
  type ListResult,
  StatusBodySchema,
  type WatchedResource,
  type WatchHandlers,
} from './kube-port.ts';

const IN_CLUSTER_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';
const PAGE_SIZE = 500;

const ListBodySchema = z.object({
  items: z
    .array(z.unknown())
    .nullish()
    .transform((v) => v ?? []),
  metadata: z.object({ resourceVersion: z.string().optional(), continue: z.string().optional() }).default({}),
});
const BookmarkSchema = z.object({ metadata: z.object({ resourceVersion: z.string() }) });

export interface KubeAdapterOptions {
  /** A kubeconfig file; default: $KUBECONFIG, ~/.kube/config, then the in-cluster service account. */
  kubeconfigPath?: string | undefined;
  /** Upper bound of every non-watch request. */
  requestTimeoutMs: number;
  /** Sent as the User-Agent, so the API server's audit log names the operator. */
  userAgent?: string;
}

export function loadKubeConfig(path: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new Error('kubeconfig: no current cluster');
  return kc;
}

/** The namespace to use when none is given: the context's, else the pod's own, else "default". */
export function defaultNamespace(kc: KubeConfig, env: NodeJS.ProcessEnv): string {
  const fromContext = kc.getContextObject(kc.getCurrentContext())?.namespace;
  if (fromContext) return fromContext;
  if (env.POD_NAMESPACE) return env.POD_NAMESPACE;
  try {
    return readFileSync(IN_CLUSTER_NAMESPACE_FILE, 'utf8').trim() || 'default';
  } catch {
    return 'default';
  }
}

function collectionPath(resource: WatchedResource | 'events' | 'leases', namespace: string): string {
  const ns = encodeURIComponent(namespace);
  switch (resource) {
    case 'gatewaykeys':
      return `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${PLURAL}`;
    case 'leases':
      return `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`;
    default:
      return `/api/v1/namespaces/${ns}/${resource}`;
  }
}

export function kubeAdapter(kc: KubeConfig, opts: KubeAdapterOptions): KubeClient {
  const http = new IsomorphicFetchHttpLibrary();
  let dispatcher: ReturnType<RequestContext['getDispatcher']>;
  const server = kc.getCurrentCluster()?.server ?? '';

  async function request(
    method: 'GET' | 'POST' | 'PUT' | 'PATCH',
    path: string,
    query: Record<string, string | undefined>,
    body: unknown,
    what: string,
    signal: AbortSignal,
  ): Promise<{ status: number; json: unknown }> {
    const url = new URL(server.replace(/\/$/, '') + path);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
    const ctx = new RequestContext(url.toString(), method);
    await kc.applySecurityAuthentication(ctx);
    // client-node builds a new undici Agent (its own connection pool) on every call; thousands of
    // them kept sockets and hundreds of MB alive. Keep the first, close the fresh ones unused.
    const fresh = ctx.getDispatcher();
    if (!dispatcher) dispatcher = fresh;
    else if (fresh && fresh !== dispatcher) {
      ctx.setDispatcher(dispatcher);
      fresh.close().catch(() => undefined);
    }
    ctx.setHeaderParam('Accept', 'application/json');
    if (opts.userAgent) ctx.setHeaderParam('User-Agent', opts.userAgent);
    if (body !== undefined) {
      ctx.setHeaderParam(
        'Content-Type',
        method === 'PATCH' ? 'application/merge-patch+json' : 'application/json',
      );
      ctx.setBody(JSON.stringify(body));
    }
    ctx.setSignal(AbortSignal.any([signal, AbortSignal.timeout(opts.requestTimeoutMs)]));
    let status: number;
    let text: string;
    let retryAfter: string | undefined;
    try {
      const res = await http.send(ctx).toPromise();
      status = res.httpStatusCode;
      retryAfter = res.headers['retry-after'];
      text = await res.body.text();
    } catch (err) {
      signal.throwIfAborted();
      const e = err as Error & { cause?: { code?: string } };
      if (e.name === 'TimeoutError') {
        throw new KubeError(0, 'Timeout', `${method} ${what} timed out after ${opts.requestTimeoutMs} ms`);
      }
      throw new KubeError(0, 'NetworkError', `${method} ${what} failed: ${e.cause?.code ?? e.message}`);
    }
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (status >= 200 && status < 300) return { status, json };
    const s = StatusBodySchema.safeParse(json);
    const reason = (s.success && s.data.reason) || `HTTP${status}`;
    const message = (s.success && s.data.message?.slice(0, 300)) || `HTTP ${status}`;
    const seconds = retryAfter !== undefined ? Number(retryAfter) : Number.NaN;
    throw new KubeError(
      status,
      reason,
      `${method} ${what}: ${message}`,
      Number.isFinite(seconds) ? seconds * 1000 : undefined,
    );
  }

  async function getOrNull(path: string, what: string, signal: AbortSignal): Promise<unknown | null> {
    try {
      return (await request('GET', path, {}, undefined, what, signal)).json;
    } catch (err) {
      if (err instanceof KubeError && err.code === 404) return null;
      throw err;
    }
  }

  // Paged, so a namespace with 10,000 Secrets is never one giant response, and each page can be
  // dropped once its items are handed on.
  async function listEach(
    resource: WatchedResource,
    namespace: string,
    listOpts: ListOptions,
    each: (item: unknown) => void,
    signal: AbortSignal,
  ): Promise<{ resourceVersion: string }> {
    let cont: string | undefined;
    let resourceVersion = '';
    for (let page = 0; page < 10_000; page++) {
      const { json } = await request(
        'GET',
        collectionPath(resource, namespace),
        { labelSelector: listOpts.labelSelector, limit: String(PAGE_SIZE), continue: cont },
        undefined,
        `list ${resource}`,
        signal,
      );
      const body = ListBodySchema.safeParse(json);
      if (!body.success) throw new KubeError(0, 'InvalidResponse', `list ${resource}: unexpected response`);
      for (const item of body.data.items) each(item);
      resourceVersion = body.data.metadata.resourceVersion ?? '';
      cont = body.data.metadata.continue || undefined;
      if (!cont) break;
    }
    return { resourceVersion };
  }

  return {
    async list(resource, namespace, listOpts: ListOptions, signal): Promise<ListResult> {
      const items: unknown[] = [];
      const { resourceVersion } = await listEach(resource, namespace, listOpts, (i) => items.push(i), signal);
      return { items, resourceVersion };
    },

    listEach,

    watch(resource, namespace, watchOpts, handlers: WatchHandlers, signal): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        let failure: KubeError | null = null;
        let controller: AbortController | undefined;
        const onAbort = () => controller?.abort();
        signal.addEventListener('abort', onAbort, { once: true });
        const query: Record<string, string> = {
          resourceVersion: watchOpts.resourceVersion,
          allowWatchBookmarks: 'true',
          timeoutSeconds: String(watchOpts.timeoutSeconds),
        };
        if (watchOpts.labelSelector) query.labelSelector = watchOpts.labelSelector;
        const w = new Watch(kc);
        w.watch(
          collectionPath(resource, namespace),
          query,
          (type: string, object: unknown) => {
            if (failure || signal.aborted) return;
            try {
              if (type === 'ERROR') {
                const s = StatusBodySchema.safeParse(object);
                const code = (s.success && s.data.code) || 500;
                failure = new KubeError(
                  code,
                  (s.success && s.data.reason) || 'WatchError',
                  `watch ${resource}: ${(s.success && s.data.message?.slice(0, 300)) || 'error event'}`,
                );
                controller?.abort();
              } else if (type === 'BOOKMARK') {
                const b = BookmarkSchema.safeParse(object);
                if (b.success) handlers.onBookmark(b.data.metadata.resourceVersion);
              } else if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') {
                handlers.onEvent(type, object);
              }
            } catch (err) {
              failure = new KubeError(0, 'HandlerError', `watch ${resource}: ${(err as Error).message}`);
              controller?.abort();
            }
          },
          (err: unknown) => {
            signal.removeEventListener('abort', onAbort);
            if (failure) return reject(failure);
            if (signal.aborted) return reject(signal.reason);
            if (!err) return resolve();
            const e = err as Error & { statusCode?: number };
            // client-node ends an idle watch after 30 s; the caller re-watches from the same version.
            if (e.name === 'TimeoutError') return resolve();
            if (typeof e.statusCode === 'number') {
              return reject(
                new KubeError(
                  e.statusCode,
                  e.statusCode === 410 ? 'Expired' : `HTTP${e.statusCode}`,
                  `watch ${resource}: HTTP ${e.statusCode}`,
                ),
              );
            }
            reject(new KubeError(0, 'NetworkError', `watch ${resource}: ${e.message}`));
          },
        ).then(
          (c) => {
            controller = c;
            if (signal.aborted || failure) c.abort();
          },
          (err: unknown) => {
            signal.removeEventListener('abort', onAbort);
            reject(new KubeError(0, 'NetworkError', `watch ${resource}: ${(err as Error).message}`));
          },
        );
      });
    },

    getGatewayKey(namespace, name, signal) {
      return getOrNull(
        `${collectionPath('gatewaykeys', namespace)}/${encodeURIComponent(name)}`,
        `gatewaykey ${namespace}/${name}`,
        signal,
      );
    },

    async replaceGatewayKeyStatus(object, signal) {
      const meta = (object.metadata ?? {}) as { name?: string; namespace?: string };
      const name = meta.name ?? '';
      const namespace = meta.namespace ?? '';
      const { json } = await request(
        'PUT',
        `${collectionPath('gatewaykeys', namespace)}/${encodeURIComponent(name)}/status`,
        {},
        { apiVersion: API_VERSION, kind: 'GatewayKey', ...object },
        `gatewaykey ${namespace}/${name} status`,
        signal,
      );
      return json;
    },

    async createEvent(namespace, event, signal) {
      await request('POST', collectionPath('events', namespace), {}, event, 'event', signal);
    },

    async patchEvent(namespace, name, patch, signal) {
      await request(
        'PATCH',
        `${collectionPath('events', namespace)}/${encodeURIComponent(name)}`,
        {},
        patch,
        `event ${name}`,
        signal,
      );
    },

    getLease(namespace, name, signal) {
      return getOrNull(
        `${collectionPath('leases', namespace)}/${encodeURIComponent(name)}`,
        `lease ${name}`,
        signal,
      );
    },

    async createLease(namespace, lease, signal) {
      return (await request('POST', collectionPath('leases', namespace), {}, lease, 'lease', signal)).json;
    },

    async replaceLease(namespace, name, lease, signal) {
      return (
        await request(
          'PUT',
          `${collectionPath('leases', namespace)}/${encodeURIComponent(name)}`,
          {},
          lease,
          `lease ${name}`,
          signal,
        )
      ).json;
    },
  };
}
