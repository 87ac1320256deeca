// Watch streams: replay from a resourceVersion (410 Expired when compacted), synthetic ADDED for
// "" / "0", selector transitions, bookmarks, timeoutSeconds, and one JSON event per line.
import type { ServerResponse } from 'node:http';
import type { KubeApi, RequestTarget } from './api.ts';
import { groupVersion, resourceKey } from './resources.ts';
import type { JsonObject } from './schema.ts';
import type { StoreEvent } from './store.ts';
import { TABLE_ACCEPT, toTable } from './table.ts';

export interface WatchOptions {
  bookmarkIntervalMs: number;
  now: () => Date;
}

export class WatchHub {
  private readonly streams = new Set<{ end: () => void; bookmark: () => void }>();

  count(): number {
    return this.streams.size;
  }

  /** Ends every open watch stream cleanly (clients see a normal end of stream). */
  dropAll(): number {
    const n = this.streams.size;
    for (const s of [...this.streams]) s.end();
    return n;
  }

  bookmarkAll(): void {
    for (const s of this.streams) s.bookmark();
  }

  serve(api: KubeApi, t: RequestTarget, accept: string, res: ServerResponse, opts: WatchOptions): void {
    const match = api.matcher(t);
    const rk = resourceKey(t.def);
    const asTable = TABLE_ACCEPT.test(accept);
    const includeObject = t.query.get('includeObject') ?? 'Metadata';
    const bookmarks = t.query.get('allowWatchBookmarks') === 'true';
    const rvParam = t.query.get('resourceVersion') ?? '';
    const sendInitial = t.query.get('sendInitialEvents') === 'true';

    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    const write = (type: string, object: JsonObject): void => {
      let o = object;
      if (asTable && type !== 'BOOKMARK' && type !== 'ERROR') {
        o = toTable([object], t.def.printerColumns, {
          now: opts.now().getTime(),
          includeObject,
          resourceVersion: String((object.metadata as JsonObject).resourceVersion ?? ''),
        });
      }
      res.write(`${JSON.stringify({ type, object: o })}\n`);
    };
    const bookmark = (annotations?: Record<string, string>): void => {
      const metadata: JsonObject = { resourceVersion: String(api.store.rv) };
      if (annotations) metadata.annotations = annotations;
      write('BOOKMARK', { kind: t.def.kind, apiVersion: groupVersion(t.def), metadata });
    };
    const toEvent = (e: StoreEvent): void => {
      const now = match(e.object);
      const before = e.prev ? match(e.prev) : false;
      const obj = api.present(t.def, e.object);
      if (e.type === 'DELETED') {
        if (before || now) write('DELETED', obj);
      } else if (e.type === 'ADDED') {
        if (now) write('ADDED', obj);
      } else if (now && before) write('MODIFIED', obj);
      else if (now) write('ADDED', obj);
      else if (before) write('DELETED', obj);
    };

    let replay: StoreEvent[];
    if (rvParam === '' || rvParam === '0' || sendInitial) {
      for (const o of api.store.list(rk, t.namespace)) if (match(o)) write('ADDED', api.present(t.def, o));
      if (sendInitial && bookmarks) bookmark({ 'k8s.io/initial-events-end': 'true' });
      replay = [];
    } else {
      const from = Number(rvParam);
      const events = Number.isFinite(from) ? api.store.since(rk, from) : undefined;
      if (!events) {
        write('ERROR', {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: `too old resource version: ${rvParam} (${api.store.compactedRv})`,
          reason: 'Expired',
          code: 410,
        });
        res.end();
        return;
      }
      replay = events;
    }
    for (const e of replay) toEvent(e);

    const unsubscribe = api.store.subscribe((e) => {
      if (e.resource === rk) toEvent(e);
    });
    const timers: NodeJS.Timeout[] = [];
    const stream = {
      end: () => {
        cleanup();
        res.end();
      },
      bookmark: () => {
        if (bookmarks) bookmark();
      },
    };
    const cleanup = (): void => {
      unsubscribe();
      for (const tm of timers) clearTimeout(tm);
      this.streams.delete(stream);
    };
    this.streams.add(stream);
    const timeout = Number(t.query.get('timeoutSeconds') ?? '0');
    if (timeout > 0) timers.push(setTimeout(() => stream.end(), timeout * 1000));
    if (bookmarks && opts.bookmarkIntervalMs > 0) {
      const tick = setInterval(() => bookmark(), opts.bookmarkIntervalMs);
      timers.push(tick);
    }
    res.on('close', cleanup);
  }
}
