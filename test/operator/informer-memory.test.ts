// What the operator's caches hold at scale: the Secret informer lists page by page and reduces
// each object as its page arrives (never every raw Secret at once), against the Kubernetes API
// test server with more Secrets than one page; and a cached Secret keeps only keyroll's own
// annotations, not kubectl's last-applied copy of the whole manifest (data included).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.ts';
import { silentLogger } from '../../src/log.ts';
import { Informer } from '../../src/operator/informer.ts';
import { kubeAdapter, loadKubeConfig } from '../../src/operator/kube.ts';
import {
  type CachedSecret,
  type KubeClient,
  parseSecret,
  SECRET_LABEL_SELECTOR,
} from '../../src/operator/kube-port.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { NS, putSecret } from './support.ts';

const COUNT = 1_234; // three pages of 500

let server: KubeApiServer;
beforeAll(async () => {
  server = await startKubeApiServer({});
  for (let i = 0; i < COUNT; i++) {
    putSecret(
      server,
      `key-${i}`,
      { KILOCODE_API_KEY: `test-key-informer-memory-${i}` },
      {
        'keyroll.dev/version': `v${i}`,
      },
    );
  }
  putSecret(server, 'not-a-key-source', { OTHER: 'x' }, {}, false);
});
afterAll(async () => {
  await server?.close();
});

function informerOver(kube: KubeClient): Informer<CachedSecret> {
  return new Informer<CachedSecret>({
    resource: 'secrets',
    namespace: NS,
    labelSelector: SECRET_LABEL_SELECTOR,
    kube,
    parse: parseSecret,
    clock: systemClock,
    log: silentLogger(),
    backoff: { baseMs: 100, maxMs: 1_000 },
    watchTimeoutSeconds: 60,
    onChange: () => {},
  });
}

describe('informer: paged relist', () => {
  it('reduces each Secret as its page arrives, and caches the same as a whole list would', async () => {
    const real = kubeAdapter(loadKubeConfig(server.kubeconfigPath), { requestTimeoutMs: 10_000 });
    // Counts the raw objects alive at once: an item is alive from its page's arrival until the
    // informer has reduced it (the next item, or the end of the list).
    let pages = 0;
    let maxRawAlive = 0;
    const counting: KubeClient = {
      ...real,
      list: () => Promise.reject(new Error('the informer must not collect the whole list')),
      listEach: async (resource, namespace, opts, each, signal) => {
        let rawAlive = 0;
        return real.listEach!(
          resource,
          namespace,
          opts,
          (item) => {
            rawAlive++;
            maxRawAlive = Math.max(maxRawAlive, rawAlive);
            each(item);
            rawAlive--;
          },
          signal,
        );
      },
    };
    // Pages as the API sends them: count them through the real list.
    const whole = await real.list(
      'secrets',
      NS,
      { labelSelector: SECRET_LABEL_SELECTOR },
      AbortSignal.timeout(10_000),
    );
    expect(whole.items).toHaveLength(COUNT);
    pages = server.hooks.requestLog().filter((e) => e.verb === 'list' && e.resource === 'secrets').length;
    expect(pages).toBeGreaterThanOrEqual(3);

    const inf = informerOver(counting);
    inf.start();
    try {
      await inf.whenSynced();
      expect(inf.size).toBe(COUNT);
      expect(maxRawAlive).toBe(1);
      const byList = whole.items.map((raw) => parseSecret(raw)!).sort((a, b) => a.name.localeCompare(b.name));
      const cached = inf.list().sort((a, b) => a.name.localeCompare(b.name));
      expect(cached).toEqual(byList);
      expect(inf.get(NS, 'key-1233')?.annotations).toEqual({ 'keyroll.dev/version': 'v1233' });
      expect(inf.get(NS, 'not-a-key-source')).toBeUndefined();
    } finally {
      await inf.stop();
    }
  });

  it('a client without listEach still works through list', async () => {
    const real = kubeAdapter(loadKubeConfig(server.kubeconfigPath), { requestTimeoutMs: 10_000 });
    const { listEach: _omitted, ...plain } = real;
    const inf = informerOver(plain);
    inf.start();
    try {
      await inf.whenSynced();
      expect(inf.size).toBe(COUNT);
    } finally {
      await inf.stop();
    }
  });
});

describe('parseSecret', () => {
  it('keeps keyroll.dev/ annotations only, not kubectl’s last-applied copy of the data', () => {
    const data = { KILOCODE_API_KEY: Buffer.from('test-key-last-applied-0001').toString('base64') };
    const s = parseSecret({
      metadata: {
        name: 'k',
        namespace: NS,
        resourceVersion: '7',
        annotations: {
          'keyroll.dev/version': 'v7',
          'keyroll.dev/other': 'x',
          'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify({ kind: 'Secret', data }),
          'example.com/owner': 'team-a',
        },
      },
      data,
    });
    expect(s?.annotations).toEqual({ 'keyroll.dev/version': 'v7', 'keyroll.dev/other': 'x' });
    expect(JSON.stringify(s)).not.toContain('last-applied');
    expect(s?.data).toEqual(data);
  });
});
