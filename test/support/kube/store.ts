// In-memory object storage: one global resourceVersion counter, per-resource object maps, an
// event history for watch replay, and compaction (the source of 410 Expired).
import type { JsonObject } from './schema.ts';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  rv: number;
  type: EventType;
  /** resourceKey(): `gatewaykeys.keyroll.dev`, `secrets`. */
  resource: string;
  object: JsonObject;
  /** The state before this event (MODIFIED/DELETED), for selector transitions. */
  prev: JsonObject | undefined;
}

function nsName(obj: JsonObject): string {
  const m = obj.metadata as JsonObject;
  return `${typeof m.namespace === 'string' ? m.namespace : ''}/${String(m.name)}`;
}

export class Store {
  rv = 1;
  /** Watches and continue tokens older than this are expired. */
  compactedRv = 0;
  private readonly data = new Map<string, Map<string, JsonObject>>();
  private history: StoreEvent[] = [];
  private readonly listeners = new Set<(e: StoreEvent) => void>();
  private readonly historyLimit: number;

  constructor(historyLimit: number) {
    this.historyLimit = historyLimit;
  }

  private bucket(resource: string): Map<string, JsonObject> {
    let b = this.data.get(resource);
    if (!b) {
      b = new Map();
      this.data.set(resource, b);
    }
    return b;
  }

  get(resource: string, namespace: string | undefined, name: string): JsonObject | undefined {
    const o = this.data.get(resource)?.get(`${namespace ?? ''}/${name}`);
    return o ? structuredClone(o) : undefined;
  }

  /** Objects sorted by namespace/name, optionally in one namespace; copies. */
  list(resource: string, namespace?: string): JsonObject[] {
    const b = this.data.get(resource);
    if (!b) return [];
    return [...b.entries()]
      .filter(([k]) => namespace === undefined || k.startsWith(`${namespace}/`))
      .sort(([a], [b2]) => (a < b2 ? -1 : a > b2 ? 1 : 0))
      .map(([, o]) => structuredClone(o));
  }

  resources(): string[] {
    return [...this.data.keys()];
  }

  /** Stores `obj` with a fresh resourceVersion and records the event; returns the stored copy. */
  write(resource: string, obj: JsonObject, type: 'ADDED' | 'MODIFIED'): JsonObject {
    const key = nsName(obj);
    const b = this.bucket(resource);
    const prev = b.get(key);
    this.rv++;
    const stored = structuredClone(obj);
    (stored.metadata as JsonObject).resourceVersion = String(this.rv);
    b.set(key, stored);
    this.emit({ rv: this.rv, type, resource, object: stored, prev });
    return structuredClone(stored);
  }

  remove(resource: string, obj: JsonObject): JsonObject | undefined {
    const key = nsName(obj);
    const b = this.bucket(resource);
    const prev = b.get(key);
    if (!prev) return undefined;
    b.delete(key);
    this.rv++;
    const last = structuredClone(prev);
    (last.metadata as JsonObject).resourceVersion = String(this.rv);
    this.emit({ rv: this.rv, type: 'DELETED', resource, object: last, prev });
    return structuredClone(last);
  }

  private emit(e: StoreEvent): void {
    this.history.push(e);
    if (this.history.length > this.historyLimit) {
      const dropped = this.history.splice(0, this.history.length - this.historyLimit);
      this.compactedRv = dropped[dropped.length - 1]!.rv;
    }
    for (const l of this.listeners) l(e);
  }

  /** Events after `rv` for `resource`, or undefined when `rv` is older than the kept history. */
  since(resource: string, rv: number): StoreEvent[] | undefined {
    if (rv < this.compactedRv) return undefined;
    return this.history.filter((e) => e.rv > rv && e.resource === resource);
  }

  subscribe(fn: (e: StoreEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * Forgets the history and bumps the resourceVersion, so every resourceVersion a client holds
   * is now too old: the next watch from it gets 410 Expired, as after an etcd compaction.
   */
  compact(): void {
    this.rv++;
    this.compactedRv = this.rv;
    this.history = [];
  }
}
