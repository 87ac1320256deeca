// Owns one watched resource's cache: list, then watch; relist on 410; restart on any error with capped backoff.

import type { Clock } from '../clock.ts';
import type { Logger } from '../log.ts';
import { isKubeError, type KubeClient, type WatchedResource } from './kube-port.ts';

export interface Cached {
  namespace: string;
  name: string;
  resourceVersion: string;
}

export interface InformerOptions<T extends Cached> {
  resource: WatchedResource;
  namespace: string;
  labelSelector?: string;
  kube: KubeClient;
  /** Reduces a raw object to what the operator keeps (memory), or null when it is not usable. */
  parse: (raw: unknown) => T | null;
  clock: Clock;
  log: Logger;
  backoff: { baseMs: number; maxMs: number };
  /** Server-side end of each watch; the informer re-watches from the last version it saw. */
  watchTimeoutSeconds: number;
  /** Called for every change, from watch events and from relist diffs. */
  onChange: (previous: T | undefined, current: T | undefined) => void;
  /** Called whenever the informer restarts after an error (for metrics). */
  onRestart?: (reason: string) => void;
}

/** What a reader of a cache needs: the informer, or a one-shot snapshot of a single list. */
export type CacheReader<T extends Cached> = Pick<Informer<T>, 'get' | 'list'>;

type Index<T> = { fn: (obj: T) => string[]; map: Map<string, Set<string>> };

/**
 * A list-watch cache that never dies: every failure is logged, counted and retried with capped
 * exponential backoff (never dropped). A 410 Expired after a working watch relists at once; 410s
 * in a row (a watch that expires again right after every relist) count as failures and back off,
 * so a server that keeps answering 410 is not hammered with lists. Cached objects are frozen;
 * nothing may mutate them.
 */
export class Informer<T extends Cached> {
  readonly #o: InformerOptions<T>;
  readonly #store = new Map<string, T>();
  readonly #indexes = new Map<string, Index<T>>();
  #synced = false;
  #syncWaiters: Array<() => void> = [];
  #abort = new AbortController();
  #running: Promise<void> | null = null;
  #rv: string | null = null;

  constructor(opts: InformerOptions<T>) {
    this.#o = opts;
  }

  get resource(): WatchedResource {
    return this.#o.resource;
  }

  get hasSynced(): boolean {
    return this.#synced;
  }

  get size(): number {
    return this.#store.size;
  }

  /** Adds an index (before start): object → index values, for `byIndex`. */
  addIndex(name: string, fn: (obj: T) => string[]): void {
    this.#indexes.set(name, { fn, map: new Map() });
  }

  get(namespace: string, name: string): T | undefined {
    return this.#store.get(`${namespace}/${name}`);
  }

  list(): T[] {
    return [...this.#store.values()];
  }

  /** Keys (`namespace/name`) of the objects whose index `name` yields `value`. */
  byIndex(name: string, value: string): string[] {
    return [...(this.#indexes.get(name)?.map.get(value) ?? [])];
  }

  start(): void {
    if (this.#running) return;
    this.#running = this.#loop();
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#running;
    this.#running = null;
    const waiters = this.#syncWaiters;
    this.#syncWaiters = [];
    for (const w of waiters) w();
  }

  /** Resolves once the first list has filled the cache (or the informer was stopped). */
  whenSynced(): Promise<void> {
    if (this.#synced || this.#abort.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => this.#syncWaiters.push(resolve));
  }

  async #loop(): Promise<void> {
    const signal = this.#abort.signal;
    const log = this.#o.log.child({ component: 'informer', resource: this.#o.resource });
    let failures = 0;
    while (!signal.aborted) {
      const started = this.#o.clock.now();
      let events = 0;
      try {
        if (this.#rv === null) {
          // In its own frame: this loop's frame stays suspended for the whole watch that follows,
          // and a local here would keep the listed Map (10,000 entries for Secrets) alive with it.
          this.#rv = await this.#relist(signal);
          if (!this.#synced) {
            this.#synced = true;
            log.info({ objects: this.#store.size }, 'Cache synced');
            const waiters = this.#syncWaiters;
            this.#syncWaiters = [];
            for (const w of waiters) w();
          }
        }
        await this.#o.kube.watch(
          this.#o.resource,
          this.#o.namespace,
          {
            ...this.#labelOpts(),
            resourceVersion: this.#rv,
            timeoutSeconds: this.#o.watchTimeoutSeconds,
          },
          {
            onEvent: (type, raw) => {
              events++;
              this.#apply(type, raw);
            },
            onBookmark: (rv) => {
              events++;
              this.#rv = rv;
            },
          },
          signal,
        );
        // A normal end of the stream: re-watch from the last version. A stream that ends at once
        // and empty, again and again, is treated as a failure so it cannot spin.
        if (events > 0 || this.#o.clock.now() - started >= 1000) failures = 0;
        else failures = Math.min(failures + 1, 30);
        if (failures > 0) await this.#sleep(this.#delay(failures), signal);
      } catch (err) {
        if (signal.aborted) break;
        if (isKubeError(err, 410)) {
          // The version we hold is older than the server's history: start over from a fresh list.
          // The first 410 after a watch that delivered something relists at once; each further
          // one in a row waits like any failure (the server may keep expiring what it just listed).
          if (events > 0 || this.#o.clock.now() - started >= 1000) failures = 0;
          failures = Math.min(failures + 1, 30);
          this.#rv = null;
          this.#o.onRestart?.('expired');
          const retryInMs = failures > 1 ? this.#delay(failures - 1) : 0;
          log.info({ error: (err as Error).message, failures, retryInMs }, 'Watch expired; relisting');
          if (retryInMs > 0) await this.#sleep(retryInMs, signal);
          continue;
        }
        failures = Math.min(failures + 1, 30);
        const retryInMs = this.#delay(failures);
        this.#rv = null;
        this.#o.onRestart?.('error');
        log.warn(
          { error: (err as Error).message, failures, retryInMs },
          'Informer failed; restarting after backoff',
        );
        await this.#sleep(retryInMs, signal);
      }
    }
  }

  #labelOpts(): { labelSelector?: string } {
    return this.#o.labelSelector ? { labelSelector: this.#o.labelSelector } : {};
  }

  #delay(failures: number): number {
    const base = Math.min(this.#o.backoff.maxMs, this.#o.backoff.baseMs * 2 ** (failures - 1));
    // Jitter in [50 %, 100 %]: replicas that failed together do not retry together.
    return Math.round(base * (0.5 + Math.random() * 0.5));
  }

  #sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const cancel = this.#o.clock.setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        cancel();
        resolve();
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  #apply(type: 'ADDED' | 'MODIFIED' | 'DELETED', raw: unknown): void {
    const obj = this.#o.parse(raw);
    if (!obj) return;
    if (obj.resourceVersion) this.#rv = obj.resourceVersion;
    const key = `${obj.namespace}/${obj.name}`;
    const previous = this.#store.get(key);
    if (type === 'DELETED') {
      if (!previous) return;
      this.#remove(key, previous);
      this.#o.onChange(previous, undefined);
      return;
    }
    this.#put(key, obj, previous);
    this.#o.onChange(previous, obj);
  }

  /** Lists, replaces the cache with the result, and returns the list's resourceVersion. */
  async #relist(signal: AbortSignal): Promise<string> {
    const listed = await this.#list(signal);
    this.#replace(listed.next);
    return listed.resourceVersion;
  }

  /**
   * Lists and reduces every object as its page arrives (`listEach`), so only one page of raw
   * objects is alive at a time rather than the whole namespace's.
   */
  async #list(signal: AbortSignal): Promise<{ next: Map<string, T>; resourceVersion: string }> {
    const next = new Map<string, T>();
    const keep = (raw: unknown) => {
      const obj = this.#o.parse(raw);
      if (obj) next.set(`${obj.namespace}/${obj.name}`, obj);
    };
    const { kube, resource, namespace } = this.#o;
    if (kube.listEach) {
      const { resourceVersion } = await kube.listEach(resource, namespace, this.#labelOpts(), keep, signal);
      return { next, resourceVersion };
    }
    const listed = await kube.list(resource, namespace, this.#labelOpts(), signal);
    for (const raw of listed.items) keep(raw);
    return { next, resourceVersion: listed.resourceVersion };
  }

  /** A relist: replace the cache and report the difference as changes. */
  #replace(next: Map<string, T>): void {
    for (const [key, previous] of [...this.#store]) {
      if (!next.has(key)) {
        this.#remove(key, previous);
        this.#o.onChange(previous, undefined);
      }
    }
    for (const [key, obj] of next) {
      const previous = this.#store.get(key);
      if (previous && previous.resourceVersion === obj.resourceVersion) continue;
      this.#put(key, obj, previous);
      this.#o.onChange(previous, obj);
    }
  }

  #put(key: string, obj: T, previous: T | undefined): void {
    if (previous) this.#unindex(key, previous);
    Object.freeze(obj);
    this.#store.set(key, obj);
    for (const idx of this.#indexes.values()) {
      for (const v of idx.fn(obj)) {
        const set = idx.map.get(v) ?? new Set<string>();
        set.add(key);
        idx.map.set(v, set);
      }
    }
  }

  #remove(key: string, previous: T): void {
    this.#unindex(key, previous);
    this.#store.delete(key);
  }

  #unindex(key: string, obj: T): void {
    for (const idx of this.#indexes.values()) {
      for (const v of idx.fn(obj)) {
        const set = idx.map.get(v);
        set?.delete(key);
        if (set && set.size === 0) idx.map.delete(v);
      }
    }
  }
}
